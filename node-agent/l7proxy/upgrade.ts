// WebSocket through the HTTP/1.1 proxy: an Upgrade request the rules allowed goes to the destination, and only once it answers 101 are the two connections joined byte for byte.
import http from "node:http";
import type net from "node:net";

/**
 * Whether an Upgrade field asks to switch to WebSocket (RFC 6455), the one upgrade the proxy passes on:
 * others (h2c's included) are answered as plain HTTP/1.1 requests, which RFC 9110 §7.8 allows.
 */
export function asksForWebSocket(upgrade: string): boolean {
  return upgrade.split(",").some((t) => t.trim().toLowerCase() === "websocket");
}

/** A whole response written on a raw client socket, which then closes (after an upgrade request the socket is no longer Node's to frame). */
export function answerAndClose(socket: net.Socket, status: number, body: string): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

// The destination's framing and connection fields: the proxy closes the connection after a refused upgrade.
const NOT_RELAYED = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);

function headLines(rawHeaders: readonly string[], skip: ReadonlySet<string> = new Set()): string {
  let out = "";
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (!skip.has(rawHeaders[i]!.toLowerCase())) out += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return out;
}

export interface UpgradeRequest {
  /** The client's connection (Node handed it over with the request's head read). */
  readonly client: net.Socket;
  /** What the client sent after the head (already the new protocol's bytes). */
  readonly head: Buffer;
  readonly method: string;
  readonly path: string;
  /** The request's fields to send, flat (name, value, …), Connection and Upgrade included. */
  readonly headers: readonly string[];
  /** Opens the connection to the destination (marked as the client). */
  readonly connect: () => net.Socket;
  readonly idleTimeoutMs: number;
  /** Once: the status the destination answered (101: the connections are joined), or why it did not answer. */
  readonly done: (r: { readonly status: number } | { readonly error: Error }) => void;
}

/**
 * Connections the HTTP server does not track, per proxy port (joined WebSockets, connections whose
 * first bytes have not come yet), so that a port that closes, or the proxy stopping, takes them along.
 */
export class HeldSockets {
  private readonly byPort = new Map<number, Set<net.Socket>>();

  add(port: number, ...sockets: net.Socket[]): void {
    const set = this.byPort.get(port) ?? new Set<net.Socket>();
    this.byPort.set(port, set);
    for (const s of sockets) {
      set.add(s);
      s.once("close", () => set.delete(s));
    }
  }

  closePort(port: number): void {
    for (const s of this.byPort.get(port) ?? []) s.destroy();
    this.byPort.delete(port);
  }

  closeAll(): void {
    for (const port of [...this.byPort.keys()]) this.closePort(port);
  }
}

/**
 * Sends the upgrade request to the destination. On 101 the answer goes to the client and the two
 * connections are joined (each closing or idle for `idleTimeoutMs` closes both); on any other
 * answer it goes to the client and the connection closes: it never becomes a tunnel through which
 * later requests would pass unjudged.
 */
export function proxyUpgrade(u: UpgradeRequest, held: HeldSockets, port: number): void {
  const { client } = u;
  let settled = false;
  const done = (r: Parameters<UpgradeRequest["done"]>[0]): void => {
    if (settled) return;
    settled = true;
    u.done(r);
  };
  const up = http.request({ method: u.method, path: u.path, headers: [...u.headers], setHost: false, createConnection: u.connect });
  up.on("upgrade", (res: http.IncomingMessage, upstream: net.Socket, upHead: Buffer) => {
    if (client.destroyed) return void upstream.destroy();
    client.write(`HTTP/1.1 101 ${res.statusMessage || "Switching Protocols"}\r\n${headLines(res.rawHeaders)}\r\n`);
    if (upHead.length) client.write(upHead);
    if (u.head.length) upstream.write(u.head);
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.pipe(b);
      a.on("error", () => b.destroy());
      a.once("close", () => b.destroy());
      a.setTimeout(u.idleTimeoutMs, () => a.destroy());
    }
    held.add(port, client, upstream);
    done({ status: 101 });
  });
  up.on("response", (res: http.IncomingMessage) => {
    client.write(`HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n${headLines(res.rawHeaders, NOT_RELAYED)}connection: close\r\n\r\n`);
    res.pipe(client);
    done({ status: res.statusCode ?? 0 });
  });
  up.on("error", (error) => done({ error }));
  // The client leaving before the destination answered abandons the request.
  client.once("close", () => {
    if (!settled) up.destroy();
  });
  up.end();
}
