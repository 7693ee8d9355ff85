// The agent's endpoint socket, both sides: the CNI plugin's client and the server the agent runs.
import fs from "node:fs";
import net from "node:net";

/**
 * Protocol: the plugin connects to the unix socket, writes one request as a JSON line and reads
 * one reply line, `{"ok":true}` or `{"ok":false,"error":"why"}`. Both operations must be
 * idempotent on the agent's side (the runtime may repeat them).
 */
export interface EndpointAddRequest {
  op: "endpoint-add";
  containerId: string;
  namespace?: string;
  pod?: string;
  /** The interface name inside the pod (CNI_IFNAME). */
  ifname: string;
  /** The pod's network namespace path (CNI_NETNS). */
  netns: string;
  /** The host-side veth, where the agent attaches the tc programs. */
  hostIfname: string;
  hostIfindex: number;
  /** The pod's addresses, without prefix length. */
  ips: string[];
  /** The MTU the plugin gave both ends (its network config's); absent from plugins that predate it. */
  mtu?: number;
}

export interface EndpointDelRequest {
  op: "endpoint-del";
  containerId: string;
  ifname: string;
  hostIfname: string;
}

export type AgentRequest = EndpointAddRequest | EndpointDelRequest;

/** The default of the agent's --cni-identity-wait: how long an endpoint-add may wait for the pod's identity and policy before it answers. */
export const DEFAULT_IDENTITY_WAIT_MS = 5_000;
/** Its bound: the plugin waits for the agent's answer longer than that (ADD_TIMEOUT_MS). */
export const MAX_IDENTITY_WAIT_MS = 20_000;
/** How long the plugin waits for the agent's answer to an endpoint-add: past the longest identity wait, with room for a busy node. */
export const ADD_TIMEOUT_MS = MAX_IDENTITY_WAIT_MS + 10_000;
export type AgentReply = { ok: true } | { ok: false; error: string };

/** The agent could not be asked (no socket, connection refused, timeout, unreadable reply). */
export class AgentUnreachable extends Error {}

function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

export function parseAgentReply(line: string): AgentReply | undefined {
  const r = parseLine(line);
  if (r?.ok === true) return { ok: true };
  if (r?.ok === false) return { ok: false, error: typeof r.error === "string" ? r.error : "no reason given" };
  return undefined;
}

/** Validates a request line; the error names the field. */
export function parseAgentRequest(
  line: string,
): { ok: true; request: AgentRequest } | { ok: false; error: string } {
  const r = parseLine(line);
  if (r === undefined) return { ok: false, error: "request is not a JSON object" };
  const str = (field: string, optional = false): string | undefined => {
    const v = r[field];
    if (v === undefined && optional) return undefined;
    if (typeof v !== "string" || v === "") throw new Error(`${field}: must be a non-empty string`);
    return v;
  };
  try {
    if (r.op === "endpoint-add") {
      if (!Number.isInteger(r.hostIfindex) || (r.hostIfindex as number) <= 0)
        throw new Error("hostIfindex: must be a positive integer");
      if (!Array.isArray(r.ips) || r.ips.length === 0 || !r.ips.every((ip) => typeof ip === "string")) {
        throw new Error("ips: must be a non-empty list of addresses");
      }
      if (r.mtu !== undefined && (!Number.isInteger(r.mtu) || (r.mtu as number) < 576 || (r.mtu as number) > 65535))
        throw new Error("mtu: must be an integer from 576 to 65535");
      const namespace = str("namespace", true);
      const pod = str("pod", true);
      return {
        ok: true,
        request: {
          op: "endpoint-add",
          containerId: str("containerId")!,
          ...(namespace !== undefined ? { namespace } : {}),
          ...(pod !== undefined ? { pod } : {}),
          ifname: str("ifname")!,
          netns: str("netns")!,
          hostIfname: str("hostIfname")!,
          hostIfindex: r.hostIfindex as number,
          ips: r.ips as string[],
          ...(r.mtu !== undefined ? { mtu: r.mtu as number } : {}),
        },
      };
    }
    if (r.op === "endpoint-del") {
      return {
        ok: true,
        request: {
          op: "endpoint-del",
          containerId: str("containerId")!,
          ifname: str("ifname")!,
          hostIfname: str("hostIfname")!,
        },
      };
    }
    return { ok: false, error: `op: must be "endpoint-add" or "endpoint-del", got ${JSON.stringify(r.op)}` };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Sends one request and waits for its reply; throws AgentUnreachable when there is no answer. */
export function callAgent(
  socketPath: string,
  request: AgentRequest,
  timeoutMs = 10_000,
): Promise<AgentReply> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: socketPath });
    let buf = "";
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      fn();
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(
            new AgentUnreachable(
              `agent at ${socketPath} did not answer ${request.op} within ${timeoutMs} ms`,
            ),
          ),
        ),
      timeoutMs,
    );
    sock.on("connect", () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      const reply = parseAgentReply(buf.slice(0, nl));
      finish(() =>
        reply === undefined
          ? reject(
              new AgentUnreachable(
                `agent at ${socketPath} sent an unreadable reply: ${JSON.stringify(buf.slice(0, 200))}`,
              ),
            )
          : resolve(reply),
      );
    });
    sock.on("error", (err) =>
      finish(() => reject(new AgentUnreachable(`agent at ${socketPath} is unreachable: ${err.message}`))),
    );
    sock.on("close", () =>
      finish(() =>
        reject(new AgentUnreachable(`agent at ${socketPath} closed the connection without a reply`)),
      ),
    );
  });
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createConnection({ path: socketPath });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

export type EndpointHandler = (request: AgentRequest) => Promise<AgentReply> | AgentReply;

/** The agent's side: answers each connection's one request with the handler's reply. */
export class EndpointSocketServer {
  private server: net.Server | undefined;

  constructor(
    readonly socketPath: string,
    private readonly handler: EndpointHandler,
  ) {}

  async start(): Promise<void> {
    // A socket file left by a dead agent blocks listen(): remove it, but only if it is a socket
    // and nobody answers on it (never take the socket from a live agent).
    let stale = false;
    try {
      stale = fs.lstatSync(this.socketPath).isSocket();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (stale) {
      if (await answers(this.socketPath)) throw new Error(`another process is serving ${this.socketPath}`);
      fs.unlinkSync(this.socketPath);
    }
    const server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.socketPath, () => resolve());
    });
    fs.chmodSync(this.socketPath, 0o600); // only root (the runtime running the plugin) may register endpoints
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private serve(sock: net.Socket): void {
    let buf = "";
    sock.on("error", () => sock.destroy());
    sock.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      sock.pause();
      const parsed = parseAgentRequest(buf.slice(0, nl));
      const reply: Promise<AgentReply> = parsed.ok
        ? Promise.resolve()
            .then(() => this.handler(parsed.request))
            .catch((err: unknown) => ({
              ok: false as const,
              error: err instanceof Error ? err.message : String(err),
            }))
        : Promise.resolve({ ok: false, error: `invalid request: ${parsed.error}` });
      void reply.then((r) => sock.end(`${JSON.stringify(r)}\n`));
    });
  }
}
