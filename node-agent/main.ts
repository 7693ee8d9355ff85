// `membrane agent`: parses the flags, loads the datapath and runs the node agent until SIGTERM/SIGINT.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { Datapath } from "./bpf/datapath.ts";
import { NodeAgent } from "./agent.ts";
import { AgentMetrics, DEFAULT_METRICS_ADDRESS, parseListenAddress } from "./metrics.ts";

const USAGE = `usage: membrane agent --node-name NAME --operator HOST:PORT --tls-cert FILE --tls-key FILE --tls-ca FILE
                      [--bpf-scope SCOPE] [--cni-socket PATH] [--state-dir DIR] [--netns NAME] [--node-ip IP] [--log-level LEVEL]
                      [--observer-socket PATH] [--flow-export PATH [--flow-export-max-bytes N] [--flow-export-files K]]
                      [--metrics-address HOST:PORT]

  --node-name   this node's name (the CN of its client certificate)
  --operator    the operator's distribution server, host:port
  --tls-cert, --tls-key, --tls-ca   the agent's client certificate, its key, and the CA of the operator
  --bpf-scope   maps are pinned under /sys/fs/bpf/membrane/SCOPE (default: the node name)
  --cni-socket  the endpoint socket the CNI plugin calls (default /run/membrane/agent.sock)
  --state-dir   where the agent keeps its registered endpoints across restarts (default /var/lib/membrane/agent)
  --node-ip     this node's underlay address (reserved:host in the ipcache, never a tunnel endpoint)
  --netns       the network namespace (name) holding the pods' host-side veths (default: the agent's own)
  --observer-socket  the observer API's unix socket, for membrane observe (default /run/membrane/observer.sock)
  --flow-export      also write every flow as JSON lines to this file (node-agent/observer/README.md)
  --flow-export-max-bytes  rotate the export file before it grows past this (default 10485760)
  --flow-export-files      rotated export files kept besides the live one (default 5)
  --metrics-address  Prometheus /metrics, /healthz and /readyz (default ${DEFAULT_METRICS_ADDRESS})
`;

export interface AgentFlags {
  readonly nodeName: string;
  readonly operator: string;
  readonly tlsCert: string;
  readonly tlsKey: string;
  readonly tlsCa: string;
  readonly bpfScope: string;
  readonly cniSocket: string;
  readonly stateDir: string;
  readonly netns?: string;
  readonly nodeIP?: string;
  readonly logLevel: string;
  readonly observerSocket: string;
  readonly flowExport?: { readonly path: string; readonly maxBytes: number; readonly keep: number };
  readonly metricsAddress: string;
}

/** Parses the flags; errors name the flag. */
export function parseAgentFlags(args: readonly string[]): { ok: true; flags: AgentFlags } | { ok: false; error: string } {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...args],
      options: {
        "node-name": { type: "string" },
        operator: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-ca": { type: "string" },
        "bpf-scope": { type: "string" },
        "cni-socket": { type: "string" },
        "state-dir": { type: "string" },
        netns: { type: "string" },
        "node-ip": { type: "string" },
        "log-level": { type: "string" },
        "observer-socket": { type: "string" },
        "flow-export": { type: "string" },
        "flow-export-max-bytes": { type: "string" },
        "flow-export-files": { type: "string" },
        "metrics-address": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  if (values.help) return { ok: false, error: "" };
  for (const f of ["node-name", "operator", "tls-cert", "tls-key", "tls-ca"]) {
    if (typeof values[f] !== "string" || values[f] === "") return { ok: false, error: `--${f}: required` };
  }
  const str = (f: string): string | undefined => (typeof values[f] === "string" ? (values[f] as string) : undefined);
  const operator = str("operator")!;
  if (!/^[^\s:]+:\d{1,5}$/.test(operator) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(operator)) return { ok: false, error: `--operator: must be HOST:PORT, got ${JSON.stringify(operator)}` };
  const nodeName = str("node-name")!;
  const scope = str("bpf-scope") ?? nodeName;
  if (!/^[A-Za-z0-9._-]+$/.test(scope)) return { ok: false, error: `--bpf-scope: must be letters, digits, '.', '_' or '-', got ${JSON.stringify(scope)}` };
  const netns = str("netns");
  const nodeIP = str("node-ip");
  if (nodeIP !== undefined && net.isIP(nodeIP) === 0) return { ok: false, error: `--node-ip: must be an IP address, got ${JSON.stringify(nodeIP)}` };
  const observerSocket = str("observer-socket") ?? "/run/membrane/observer.sock";
  if (observerSocket === "") return { ok: false, error: "--observer-socket: must be a path" };
  const exportPath = str("flow-export");
  const integer = (f: string, dflt: number, min: number): number | string => {
    const v = str(f);
    if (v === undefined) return dflt;
    if (exportPath === undefined) return `--${f}: only with --flow-export`;
    return /^\d+$/.test(v) && Number(v) >= min && Number.isSafeInteger(Number(v)) ? Number(v) : `--${f}: must be an integer >= ${min}, got ${JSON.stringify(v)}`;
  };
  const maxBytes = integer("flow-export-max-bytes", 10 * 1024 * 1024, 1);
  if (typeof maxBytes === "string") return { ok: false, error: maxBytes };
  const keep = integer("flow-export-files", 5, 0);
  if (typeof keep === "string") return { ok: false, error: keep };
  if (exportPath === "") return { ok: false, error: "--flow-export: must be a path" };
  const metricsAddress = str("metrics-address") ?? DEFAULT_METRICS_ADDRESS;
  if (!parseListenAddress(metricsAddress)) return { ok: false, error: `--metrics-address: must be HOST:PORT, got ${JSON.stringify(metricsAddress)}` };
  return {
    ok: true,
    flags: {
      nodeName,
      operator,
      tlsCert: str("tls-cert")!,
      tlsKey: str("tls-key")!,
      tlsCa: str("tls-ca")!,
      bpfScope: scope,
      cniSocket: str("cni-socket") ?? "/run/membrane/agent.sock",
      stateDir: str("state-dir") ?? "/var/lib/membrane/agent",
      ...(netns ? { netns } : {}),
      ...(nodeIP ? { nodeIP } : {}),
      logLevel: str("log-level") ?? "info",
      observerSocket,
      ...(exportPath !== undefined ? { flowExport: { path: exportPath, maxBytes, keep } } : {}),
      metricsAddress,
    },
  };
}

export async function run(args: string[]): Promise<number> {
  const parsed = parseAgentFlags(args);
  if (!parsed.ok) {
    process.stderr.write(parsed.error ? `membrane agent: ${parsed.error}\n\n${USAGE}` : USAGE);
    return parsed.error ? 2 : 0;
  }
  const f = parsed.flags;
  const log = pino({ level: f.logLevel, base: { component: "agent" } });
  let tls: { ca: Buffer; cert: Buffer; key: Buffer };
  try {
    tls = { ca: fs.readFileSync(f.tlsCa), cert: fs.readFileSync(f.tlsCert), key: fs.readFileSync(f.tlsKey) };
  } catch (err) {
    process.stderr.write(`membrane agent: reading the TLS files: ${(err as Error).message}\n`);
    return 1;
  }
  let datapath: Datapath;
  try {
    datapath = Datapath.load(f.bpfScope);
  } catch (err) {
    log.error({ scope: f.bpfScope, error: (err as Error).message }, "loading the datapath failed");
    return 1;
  }
  const agent = new NodeAgent({ nodeName: f.nodeName, operator: f.operator, tls, datapath, cniSocket: f.cniSocket, endpointsFile: path.join(f.stateDir, "endpoints.json"), ...(f.netns ? { netns: f.netns } : {}), ...(f.nodeIP ? { nodeIP: f.nodeIP } : {}), observer: { listen: { socketPath: f.observerSocket }, ...(f.flowExport ? { export: f.flowExport } : {}) }, log });
  const metrics = new AgentMetrics({ agent, datapath, log });
  try {
    fs.mkdirSync(path.dirname(f.observerSocket), { recursive: true });
    await agent.start();
  } catch (err) {
    log.error({ socket: f.cniSocket, observer: f.observerSocket, metrics: f.metricsAddress, error: (err as Error).message }, "starting the agent failed");
    await metrics.stop();
    await agent.stop();
    datapath.close();
    return 1;
  }
  // Like the observer, metrics are not enforcement: a taken port is logged, and the agent keeps enforcing.
  await metrics.start(f.metricsAddress).catch((err: Error) => log.error({ address: f.metricsAddress, error: err.message }, "metrics not served"));
  log.info({ operator: f.operator, scope: f.bpfScope, socket: f.cniSocket, netns: f.netns }, "agent started");
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  log.info({ signal }, "agent stopping");
  await metrics.stop();
  await agent.stop();
  datapath.close(); // closes our fds only: the maps stay pinned and the programs attached
  return 0;
}
