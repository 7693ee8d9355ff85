// `membrane runtime`: process visibility as a process of its own on the node (issue
// #18 allows the agent or a process it manages): exec/exit events to an export file, metrics on /metrics.
import http from "node:http";
import os from "node:os";
import { pino } from "pino";
import { Registry } from "prom-client";
import { parseFlags } from "../../kube/flags.ts";
import { ProcessVisibility } from "./visibility.ts";

const USAGE = `usage: membrane runtime --export-file FILE [--node-name NAME] [--metrics-address HOST:PORT]

  --export-file FILE         append every process_exec/process_exit event (Tetragon's JSON) to FILE
  --node-name NAME           node_name of the events (default: the host name)
  --metrics-address ADDR     serve Prometheus metrics on http://ADDR/metrics (default 127.0.0.1:9964)`;

export interface RuntimeConfig {
  readonly exportFile: string;
  readonly nodeName: string;
  readonly metricsHost: string;
  readonly metricsPort: number;
}

export function parseRuntimeArgs(args: readonly string[]): { ok: true; value: RuntimeConfig } | { ok: false; error: string } {
  const flags = parseFlags({ args: [...args], options: { "export-file": { type: "string" }, "node-name": { type: "string" }, "metrics-address": { type: "string" } } });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  if (v["export-file"] === undefined || v["export-file"] === "") return { ok: false, error: "--export-file: required (where the events go)" };
  const address = v["metrics-address"] ?? "127.0.0.1:9964";
  const m = /^(.+):(\d{1,5})$/.exec(address);
  const port = Number(m?.[2]);
  if (!m || port > 65535) return { ok: false, error: `--metrics-address: "${address}" is not HOST:PORT` };
  return { ok: true, value: { exportFile: v["export-file"], nodeName: v["node-name"] || os.hostname(), metricsHost: m[1]!, metricsPort: port } };
}

/** `membrane runtime …`: runs until SIGTERM or SIGINT; the exit code. */
export async function run(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const parsed = parseRuntimeArgs(args);
  if (!parsed.ok) {
    process.stderr.write(`membrane runtime: ${parsed.error}\n${USAGE}\n`);
    return 2;
  }
  const cfg = parsed.value;
  const log = pino({ name: "runtime" });
  const registry = new Registry();
  const visibility = new ProcessVisibility({ nodeName: cfg.nodeName, exportFile: cfg.exportFile, registry });
  try {
    visibility.start();
  } catch (err) {
    process.stderr.write(`membrane runtime: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const server = http.createServer((req, res) => {
    if (req.url !== "/metrics") return void res.writeHead(404).end();
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  server.listen(cfg.metricsPort, cfg.metricsHost);
  log.info({ exportFile: cfg.exportFile, node: cfg.nodeName, metrics: `${cfg.metricsHost}:${cfg.metricsPort}` }, "process visibility running");
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  visibility.stop();
  server.close();
  log.info("process visibility stopped");
  return 0;
}

if (process.argv[1] === new URL(import.meta.url).pathname) void run(process.argv.slice(2)).then((code) => (process.exitCode = code));
