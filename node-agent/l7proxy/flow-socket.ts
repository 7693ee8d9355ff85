// The L7 proxy's flows to the agent: JSON lines over a unix socket the agent listens on (the proxy is a process of its own and outlives agents).
import fs from "node:fs";
import net from "node:net";
import readline from "node:readline";
import type { Logger } from "pino";
import type { HttpFlow } from "./http-proxy.ts";
import { ReconnectingUnixSocket } from "./reconnecting-socket.ts";

/** The socket in the agent's state directory (beside the proxy's configuration). */
export const FLOW_SOCKET_NAME = "l7proxy.flows.sock";

/** Unsent flows the proxy holds for a slow agent before it drops new ones (a few thousand flows). */
const MAX_PENDING_BYTES = 1 << 20;
const RECONNECT_MS = 1000;
/** How long a flow waits to leave with the others of its batch. */
const FLUSH_MS = 20;

/**
 * The proxy's side: every flow as one line, while an agent listens. Without an agent (restarting, or none), or with
 * one that does not keep up, flows are dropped and counted: the proxy never waits on the agent, never buffers more
 * than MAX_PENDING_BYTES.
 */
export class FlowSocketWriter {
  private readonly conn: ReconnectingUnixSocket;
  /** Flows not delivered (no agent listening, or its socket full). */
  lost = 0;
  /** Lines written since the last flush. */
  private batch: string[] = [];
  private batchBytes = 0;
  /** Cancels the flush scheduled for the batch, when one is. */
  private cancelFlush: (() => void) | undefined;
  private lastFlush = 0;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {
    this.conn = new ReconnectingUnixSocket({
      path,
      retryMs: RECONNECT_MS,
      keepAlive: false,
      // The agent never writes: a read keeps the socket from holding data nobody asked for.
      onSocket: (s) => s.resume(),
      onConnect: () => this.log.info({ socket: this.path, lostSoFar: this.lost }, "sending flows to the agent"),
      onClose: (was) => {
        if (was) this.log.info({ socket: this.path }, "the agent's flow socket closed; reconnecting");
      },
    });
  }

  /** An agent listens and the socket is open. */
  get connected(): boolean {
    return this.conn.connected;
  }

  start(): void {
    this.conn.start();
  }

  write(flow: HttpFlow): void {
    const s = this.conn.socket;
    if (!this.connected || !s || s.writableLength + this.batchBytes > MAX_PENDING_BYTES) {
      this.lost++;
      return;
    }
    const line = `${JSON.stringify(flow)}\n`;
    this.batch.push(line);
    this.batchBytes += line.length;
    // At most one write per FLUSH_MS: a write to the agent's socket costs a syscall and a wake-up of the agent, on
    // the proxy's one thread. A flow after a quiet spell leaves at once (with those of the same event-loop turn);
    // under load, the flows of FLUSH_MS leave together.
    if (this.cancelFlush) return;
    const wait = this.lastFlush + FLUSH_MS - Date.now();
    if (wait > 0) {
      const t = setTimeout(() => this.flush(), wait);
      this.cancelFlush = () => clearTimeout(t);
    } else {
      const i = setImmediate(() => this.flush());
      this.cancelFlush = () => clearImmediate(i);
    }
  }

  private flush(): void {
    this.cancelFlush = undefined;
    this.lastFlush = Date.now();
    const lines = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    const s = this.conn.socket;
    if (!this.connected || !s) {
      this.lost += lines.length;
      return;
    }
    s.write(lines.join(""));
  }

  stop(): void {
    this.cancelFlush?.();
    this.conn.stop();
  }
}

/** A server on the unix socket `file` for root only (0600), replacing the socket an earlier process left (killed, never closed). */
export async function listenUnixSocket(file: string, onConnection: (s: net.Socket) => void): Promise<net.Server> {
  fs.rmSync(file, { force: true });
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(file, () => {
      server.off("error", reject);
      resolve();
    });
  });
  fs.chmodSync(file, 0o600);
  return server;
}

type Parsed = { readonly ok: true; readonly flow: HttpFlow } | { readonly ok: false; readonly error: string };

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === "string";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const VERDICTS = new Set(["forwarded", "denied", "error"]);

/** One line from the proxy as an HttpFlow, or the first field that is wrong (the line is not trusted: it crossed a process boundary). */
export function parseFlowLine(line: string): Parsed {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    return { ok: false, error: `not JSON: ${(err as Error).message}` };
  }
  if (!isObj(v)) return { ok: false, error: "not an object" };
  const bad = (field: string, want: string): Parsed => ({ ok: false, error: `${field}: must be ${want}` });
  if (!isStr(v.time) || Number.isNaN(Date.parse(v.time))) return bad("time", "an RFC 3339 time");
  const src = v.source;
  if (!isObj(src) || !isStr(src.ip) || !isNum(src.port) || !isNum(src.identity)) return bad("source", "{ip, port, identity}");
  const dst = v.destination;
  if (!isObj(dst) || !isStr(dst.ip) || !isNum(dst.port)) return bad("destination", "{ip, port}");
  for (const f of ["proxyPort", "ruleId", "status", "latencyMs"] as const) if (!isNum(v[f])) return bad(f, "a number");
  for (const f of ["protocol", "method", "path", "host"] as const) if (!isStr(v[f])) return bad(f, "a string");
  if (typeof v.ingress !== "boolean") return bad("ingress", "a boolean");
  if (!isStr(v.verdict) || !VERDICTS.has(v.verdict)) return bad("verdict", "forwarded, denied or error");
  if (v.reason !== undefined && !isStr(v.reason)) return bad("reason", "a string");
  if (v.traceId !== undefined && (!isStr(v.traceId) || !/^[0-9a-f]{32}$/.test(v.traceId))) return bad("traceId", "32 lowercase hex digits");
  for (const f of ["headers", "responseHeaders"] as const) {
    const list = v[f];
    if (list !== undefined && (!Array.isArray(list) || !list.every((h) => isObj(h) && isStr(h.name) && isStr(h.value)))) return bad(f, "a list of {name, value}");
  }
  return { ok: true, flow: v as unknown as HttpFlow };
}

/**
 * The agent's side: listens on `path` (a stale socket of an earlier agent is replaced) and hands every valid line to
 * `onFlow`. A malformed line is logged (once per connection) and skipped.
 */
export class FlowSocketServer {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  /** Lines refused as malformed. */
  refused = 0;

  constructor(
    private readonly path: string,
    private readonly onFlow: (f: HttpFlow) => void,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.server = await listenUnixSocket(this.path, (s) => this.accept(s));
  }

  private accept(s: net.Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => undefined);
    let warned = false;
    readline.createInterface({ input: s, crlfDelay: Infinity }).on("line", (line) => {
      const r = parseFlowLine(line);
      if (r.ok) return this.onFlow(r.flow);
      this.refused++;
      if (!warned) this.log.warn({ socket: this.path, error: r.error }, "malformed flow line from the L7 proxy: skipped");
      warned = true;
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    // Now, not after the close completes: a new agent may already listen on the same path by then.
    fs.rmSync(this.path, { force: true });
    await closed;
  }
}
