// The benchmark's server process: one WebhookServer in the given mode; prints {"port","ca"} once listening, {"cpu_us"} on "cpu".
import { createInterface } from "node:readline";
import { pino } from "pino";
import type { AdmissionMode } from "../../webhooks/admission.ts";
import { DEFAULT_CERT_OPTIONS, issueBundle } from "../../webhooks/certs.ts";
import { WebhookServer } from "../../webhooks/server.ts";

const mode = (process.argv[2] ?? "validate") as AdmissionMode;
const bundle = await issueBundle(DEFAULT_CERT_OPTIONS);
// Same one-line-per-request logging as in production, written where it costs nothing to keep.
const logger = pino({ name: "membrane-webhook" }, pino.destination({ dest: "/dev/null", sync: false }));
const server = new WebhookServer({ host: "127.0.0.1", port: 0, cert: bundle.cert, key: bundle.key, mode, logger });
const { port } = await server.start();
process.stdout.write(`${JSON.stringify({ port, ca: bundle.caBundle })}\n`);
// "cpu" on stdin → this process's CPU time so far (µs), so the bench can price a request in server CPU.
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "cpu") {
    const { user, system } = process.cpuUsage();
    process.stdout.write(`${JSON.stringify({ cpu_us: user + system })}\n`);
  }
});
process.on("SIGTERM", () => void server.stop().then(() => process.exit(0)));
