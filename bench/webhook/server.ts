// The benchmark's server process: WebhookServer in the given mode, in 1..n node:cluster workers sharing one port; prints {"port","ca"} once listening, {"cpu_us","sys_us"} on "cpu".
import cluster from "node:cluster";
import { createInterface } from "node:readline";
import { pino } from "pino";
import type { AdmissionMode } from "../../webhooks/admission.ts";
import { DEFAULT_CERT_OPTIONS, issueBundle } from "../../webhooks/certs.ts";
import { WebhookServer } from "../../webhooks/server.ts";

interface Setup {
  mode: AdmissionMode;
  workers: number;
  port: number;
  cert: string;
  key: string;
}

/** What a worker tells the primary: its port once listening, its CPU time (µs) when asked. */
type WorkerMessage = { listening: number } | { cpu_us: number; sys_us: number };

/** One WebhookServer as production runs it, stopped on SIGTERM. */
async function serve(setup: Setup): Promise<number> {
  // Same one-line-per-request logging as in production, written where it costs nothing to keep.
  const logger = pino({ name: "membrane-webhook" }, pino.destination({ dest: "/dev/null", sync: false }));
  const server = new WebhookServer({ host: "127.0.0.1", port: setup.port, cert: setup.cert, key: setup.key, mode: setup.mode, logger });
  const { port } = await server.start();
  process.on("SIGTERM", () => void server.stop().then(() => process.exit(0)));
  return port;
}

async function worker(setup: Setup): Promise<void> {
  const port = await serve(setup);
  process.send?.({ listening: port } satisfies WorkerMessage);
  process.on("message", (m) => {
    if (m === "cpu") {
      const { user, system } = process.cpuUsage();
      process.send?.({ cpu_us: user + system, sys_us: system } satisfies WorkerMessage);
    }
  });
}

async function primary(): Promise<void> {
  const mode = (process.argv[2] ?? "validate") as AdmissionMode;
  const workers = Math.max(1, Number(process.argv[3] ?? 1));
  const bundle = await issueBundle(DEFAULT_CERT_OPTIONS);
  const setup: Setup = { mode, workers, port: 0, cert: bundle.cert, key: bundle.key };
  if (workers === 1) {
    // One process, no cluster plumbing: the figure to compare with production's single server.
    const port = await serve(setup);
    process.stdout.write(`${JSON.stringify({ port, ca: bundle.caBundle })}\n`);
    createInterface({ input: process.stdin }).on("line", (line) => {
      if (line.trim() !== "cpu") return;
      const { user, system } = process.cpuUsage();
      process.stdout.write(`${JSON.stringify({ cpu_us: user + system, sys_us: system })}\n`);
    });
    return;
  }
  // Round-robin in the primary spreads connections evenly; the OS's choice can put most on one worker.
  cluster.schedulingPolicy = cluster.SCHED_RR;
  cluster.setupPrimary({ execArgv: process.execArgv, args: [] });
  const forks = Array.from({ length: workers }, () => cluster.fork({ MEMBRANE_BENCH_SETUP: JSON.stringify({ ...setup }) }));
  const ports = await Promise.all(
    forks.map(
      (w) =>
        new Promise<number>((resolve, reject) => {
          w.once("exit", (code) => reject(new Error(`bench worker exited with ${code}`)));
          w.on("message", (m: WorkerMessage) => {
            if ("listening" in m) resolve(m.listening);
          });
        }),
    ),
  );
  process.stdout.write(`${JSON.stringify({ port: ports[0], ca: bundle.caBundle })}\n`);
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() !== "cpu") return;
    void Promise.all(
      forks.map(
        (w) =>
          new Promise<{ cpu_us: number; sys_us: number }>((resolve) => {
            const onMessage = (m: WorkerMessage): void => {
              if (!("cpu_us" in m)) return;
              w.off("message", onMessage);
              resolve(m);
            };
            w.on("message", onMessage);
            w.send("cpu");
          }),
      ),
    ).then((cpus) => {
      const own = process.cpuUsage();
      const total = cpus.reduce((a, b) => a + b.cpu_us, own.user + own.system);
      const sys = cpus.reduce((a, b) => a + b.sys_us, own.system);
      process.stdout.write(`${JSON.stringify({ cpu_us: total, sys_us: sys })}\n`);
    });
  });
  process.on("SIGTERM", () => {
    let left = forks.length;
    for (const w of forks) {
      w.once("exit", () => {
        if (--left === 0) process.exit(0);
      });
      w.process.kill("SIGTERM");
    }
  });
}

if (cluster.isPrimary) await primary();
else await worker(JSON.parse(process.env.MEMBRANE_BENCH_SETUP ?? "{}") as Setup);
