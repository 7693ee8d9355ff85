// The observer API: GET /flows?<filters>[&follow=1] as JSON lines (chunked, streaming when following), GET /counters.
import http from "node:http";
import fs from "node:fs";
import net, { type AddressInfo } from "node:net";
import type { FlowBuffer } from "./buffer.ts";
import { filterFromQuery, flowPredicate } from "../../flowapi/filter.ts";

/** Where the API listens: a unix socket path, or a port on 127.0.0.1 (0 picks a free one). */
export type ObserverListen = { readonly socketPath: string } | { readonly port: number };

export const FLOWS_CONTENT_TYPE = "application/x-ndjson";

/** Bytes a following client may fall behind before it is disconnected. */
export const MAX_CLIENT_BACKLOG = 8 * 1024 * 1024;

export class ObserverServer {
  private server: http.Server | null = null;
  private readonly streams = new Set<http.ServerResponse>();

  constructor(private readonly buffer: FlowBuffer) {}

  /** Starts listening; resolves to the address clients use (`unix:/path` or `http://127.0.0.1:PORT`). */
  async start(listen: ObserverListen): Promise<string> {
    const server = http.createServer((req, res) => this.handle(req, res));
    this.server = server;
    if ("socketPath" in listen) {
      // A socket left by a previous run is replaced; one that answers belongs to a running observer (another agent).
      if (await socketAnswers(listen.socketPath)) throw new Error(`${listen.socketPath}: in use by a running observer`);
      fs.rmSync(listen.socketPath, { force: true });
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(listen.socketPath, resolve));
      return `unix:${listen.socketPath}`;
    }
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(listen.port, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.end();
    this.streams.clear();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://observer");
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body) + "\n");
    };
    if (req.method !== "GET") return json(405, { error: `${req.method} is not allowed; use GET` });
    if (url.pathname === "/counters") return json(200, { ...this.buffer.counters(), kept: this.buffer.length, capacity: this.buffer.capacity });
    if (url.pathname !== "/flows") return json(404, { error: `no such path ${url.pathname}; try /flows or /counters` });
    const parsed = filterFromQuery(url.searchParams);
    if (!parsed.ok) return json(400, { error: parsed.error });
    const follow = url.searchParams.get("follow");
    if (follow !== null && follow !== "1" && follow !== "true" && follow !== "0" && follow !== "false") {
      return json(400, { error: `follow: "${follow}" is not 1 or 0` });
    }
    const match = flowPredicate(parsed.filter);
    res.writeHead(200, { "content-type": FLOWS_CONTENT_TYPE });
    res.flushHeaders();
    const following = follow === "1" || follow === "true";
    // Replay and subscribe run in one synchronous step, so no flow falls between them.
    res.write(this.buffer.query(match, parsed.filter.last).map((f) => JSON.stringify(f) + "\n").join(""));
    if (!following) {
      res.end();
      return;
    }
    const unsubscribe = this.buffer.subscribe((f) => {
      if (!match(f)) return;
      // A client that stops reading must not grow the agent's memory: cut it off.
      if (res.writableLength > MAX_CLIENT_BACKLOG) res.destroy();
      else res.write(JSON.stringify(f) + "\n");
    });
    this.streams.add(res);
    const done = (): void => {
      unsubscribe();
      this.streams.delete(res);
    };
    res.on("close", done);
    req.on("close", done);
  }
}

/** Whether something accepts connections on a unix socket (a running server, not a file left behind). */
export function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}
