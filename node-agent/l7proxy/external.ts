// The L7 proxy as a process the agent does not own (`--external-l7-proxy`, the chart's membrane-l7proxy DaemonSet, as Cilium's cilium-envoy): the agent listens on a unix socket in a directory both share, the proxy connects, is sent each configuration and reports what it applied.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import readline from "node:readline";
import type { Logger } from "pino";
import { parseProxyConfig, type ProxyConfig } from "./config.ts";
import { listenUnixSocket } from "./flow-socket.ts";
import { ReconnectingUnixSocket } from "./reconnecting-socket.ts";
import type { ProxyProcess, ProxyReport } from "./supervisor.ts";

/** Where the agent and an external proxy meet by default (a hostPath both pods mount). */
export const DEFAULT_L7_PROXY_SOCKET_DIR = "/var/run/membrane/l7proxy";
/** The agent listens here; the proxy connects, reads configurations and writes its reports. */
export const CONFIG_SOCKET_NAME = "config.sock";
/** The agent listens here for the proxy's flows (flow-socket.ts). */
export const EXTERNAL_FLOW_SOCKET_NAME = "flows.sock";

/** How often a proxy without an agent tries the socket again. */
const RECONNECT_MS = 500;
/** A line longer than this is not a configuration (a node's rules are far smaller). */
const MAX_LINE_BYTES = 16 << 20;

/** A report line from the proxy, or the field that is wrong (it crossed a process boundary). */
export function parseReport(line: string): { ok: true; value: ProxyReport } | { ok: false; error: string } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    return { ok: false, error: `not JSON: ${(err as Error).message}` };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { ok: false, error: "not an object" };
  const r = v as Record<string, unknown>;
  const int = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if (!int(r.pid) || r.pid === 0) return { ok: false, error: "pid: must be a positive integer" };
  if (!Array.isArray(r.ports) || !r.ports.every((p) => int(p) && p > 0 && p < 65536)) return { ok: false, error: "ports: must be a list of port numbers" };
  if (r.generation !== undefined && !int(r.generation)) return { ok: false, error: "generation: must be a non-negative integer" };
  return { ok: true, value: { pid: r.pid, ports: r.ports as number[], ...(r.generation !== undefined ? { generation: r.generation } : {}) } };
}

export interface ExternalProxyOptions {
  /** The directory shared with the proxy (hostPath): the config and flow sockets live there. */
  readonly socketDir: string;
  readonly log: Logger;
  /** How long the agent's start waits for a running proxy to connect (default 3 s); it goes on without it (fail closed). */
  readonly connectWaitMs?: number;
}

/**
 * The agent's side: listens on the config socket; the proxy that connects is sent the last configuration at once
 * (so an agent restart, or a proxy restart, re-sends it) and every later one. A newer connection replaces an older
 * one (a proxy pod replaced). While no proxy is connected, `pid()` is undefined: the proxy is down for status, and
 * the ports stay served (their connections fail, never bypass).
 */
export class ExternalProxy implements ProxyProcess {
  readonly socket: string;
  private server: net.Server | undefined;
  private listening: Promise<void> | undefined;
  private conn: { socket: net.Socket; report?: ProxyReport } | undefined;
  private latest: ProxyConfig | undefined;

  constructor(private readonly opts: ExternalProxyOptions) {
    this.socket = path.join(opts.socketDir, CONFIG_SOCKET_NAME);
  }

  /** Listens (once); there is nothing to start: the proxy is a pod of its own. */
  ensureRunning(): Promise<void> {
    this.listening ??= this.listen().catch((err: unknown) => {
      this.listening = undefined;
      throw err;
    });
    return this.listening;
  }

  configure(config: ProxyConfig): void {
    this.latest = config;
    if (this.conn) this.send(this.conn.socket, config);
  }

  pid(): number | undefined {
    return this.conn?.report?.pid;
  }

  report(): ProxyReport | undefined {
    return this.conn?.report;
  }

  downReason(): string {
    return `no L7 proxy connected on ${this.socket} (the node's membrane-l7proxy pod, --external-l7-proxy)`;
  }

  stop(): void {
    this.conn?.socket.destroy();
    this.conn = undefined;
    const server = this.server;
    this.server = undefined;
    this.listening = undefined;
    if (!server) return;
    server.close();
    // Now: a new agent may listen on the same path next.
    fs.rmSync(this.socket, { force: true });
  }

  /** The proxy is not the agent's to end: the connection closes, the proxy keeps its configuration. */
  shutdown(): Promise<void> {
    this.stop();
    return Promise.resolve();
  }

  private async listen(): Promise<void> {
    fs.mkdirSync(this.opts.socketDir, { recursive: true, mode: 0o700 });
    this.server = await listenUnixSocket(this.socket, (s) => this.accept(s));
    this.opts.log.info({ socket: this.socket }, "waiting for the external L7 proxy");
    // A running proxy reconnects within its retry period: the agent's first look at it should find it there.
    const until = Date.now() + (this.opts.connectWaitMs ?? 3000);
    while (this.conn?.report === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
  }

  private accept(socket: net.Socket): void {
    const previous = this.conn;
    const conn: { socket: net.Socket; report?: ProxyReport } = { socket };
    this.conn = conn;
    previous?.socket.destroy();
    socket.on("error", () => undefined); // followed by close
    socket.on("close", () => {
      if (this.conn !== conn) return;
      this.conn = undefined;
      this.opts.log.error({ socket: this.socket, pid: conn.report?.pid }, "the external L7 proxy disconnected");
    });
    let warned = false;
    const lines = readline.createInterface({ input: socket, crlfDelay: Infinity });
    lines.on("error", () => undefined); // the socket's own error, handled by its close
    lines.on("line", (line) => {
      const r = parseReport(line);
      if (!r.ok) {
        if (!warned) this.opts.log.warn({ socket: this.socket, error: r.error }, "malformed report from the external L7 proxy: skipped");
        warned = true;
        return;
      }
      if (conn.report === undefined) this.opts.log.info({ socket: this.socket, pid: r.value.pid, ports: r.value.ports, generation: r.value.generation }, "the external L7 proxy connected");
      conn.report = r.value;
    });
    if (this.latest) this.send(socket, this.latest);
  }

  private send(socket: net.Socket, config: ProxyConfig): void {
    socket.write(`${JSON.stringify(config)}\n`);
  }
}

/** What the proxy does with a configuration the agent sent: apply it, then the report to send back. */
export type ApplyConfig = (config: ProxyConfig) => Promise<ProxyReport>;

/**
 * The proxy's side: connects to the agent's config socket (again and again while no agent listens: the proxy keeps
 * serving its last configuration meanwhile), reports what it has applied on connect, applies each configuration
 * line in order and reports again. A configuration that does not parse is refused with one error line and the last
 * good one stays (the agent then reports it not applied).
 */
export class AgentConfigClient {
  private readonly conn: ReconnectingUnixSocket;
  /** Configurations applied one after the other. */
  private applying: Promise<void> = Promise.resolve();

  constructor(
    private readonly path: string,
    private readonly apply: ApplyConfig,
    private readonly current: () => ProxyReport,
    private readonly log: Logger,
  ) {
    this.conn = new ReconnectingUnixSocket({
      path,
      retryMs: RECONNECT_MS,
      // Waiting for an agent is what keeps a proxy with nothing to listen on alive.
      keepAlive: true,
      onSocket: (s) => this.readConfigs(s),
      onConnect: (s) => {
        this.log.info({ socket: this.path }, "connected to the agent");
        // After what is being applied: the report says where the proxy stands.
        this.applying = this.applying.then(() => this.report(s));
      },
      onClose: (was) => {
        if (was) this.log.warn({ socket: this.path }, "the agent's config socket closed: serving the last configuration, reconnecting");
      },
    });
  }

  start(): void {
    this.conn.start();
  }

  stop(): void {
    this.conn.stop();
  }

  /** Every line from the agent is a configuration, applied in order, each answered by a report. */
  private readConfigs(s: net.Socket): void {
    let buffered = 0;
    s.on("data", (d: Buffer) => {
      buffered = d.includes(10) ? 0 : buffered + d.length;
      if (buffered > MAX_LINE_BYTES) s.destroy(new Error("configuration line too long"));
    });
    const lines = readline.createInterface({ input: s, crlfDelay: Infinity });
    lines.on("error", () => undefined); // the socket's own error, handled by its close
    lines.on("line", (line) => {
      this.applying = this.applying.then(async () => {
        const r = parseProxyConfig(line);
        if (!r.ok) {
          this.log.error({ errors: r.errors.map((e) => `${e.path ? `${e.path}: ` : ""}${e.message}`) }, "configuration from the agent refused: the last good one stays");
          return;
        }
        try {
          const report = await this.apply(r.value);
          this.log.info({ ports: report.ports, generation: report.generation }, "configuration applied");
        } catch (err) {
          this.log.error({ error: (err as Error).message }, "configuration not applied");
        }
        this.report(s);
      });
    });
  }

  private report(s: net.Socket): void {
    if (!s.destroyed) s.write(`${JSON.stringify(this.current())}\n`);
  }
}
