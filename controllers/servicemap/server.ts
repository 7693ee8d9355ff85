// The service map's HTTP endpoints on loopback: GET /servicemap (the page) and GET /servicemap/graph.json (ETag, 304 while unchanged).
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { ServiceGraph } from "./graph.ts";
import { renderPage } from "./page.ts";

export const PAGE_PATH = "/servicemap";
export const GRAPH_PATH = "/servicemap/graph.json";

export class ServiceMapServer {
  private readonly server: http.Server;

  constructor(private readonly graph: () => ServiceGraph) {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end(`${req.method} is not allowed; use GET\n`);
      return;
    }
    if (path === "/" || path === `${PAGE_PATH}/`) {
      res.writeHead(302, { location: PAGE_PATH }).end();
      return;
    }
    if (path === PAGE_PATH) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(renderPage(this.graph(), GRAPH_PATH));
      return;
    }
    if (path === GRAPH_PATH) {
      const g = this.graph();
      const etag = `"${g.version}"`;
      if (req.headers["if-none-match"] === etag) {
        res.writeHead(304, { etag }).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store", etag }).end(JSON.stringify(g));
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end(`no such path ${path}; the map is at ${PAGE_PATH}\n`);
  }

  /** Listens on 127.0.0.1:`port` (0 picks one); returns the bound port. */
  async listen(port: number, host = "127.0.0.1"): Promise<number> {
    await once(this.server.listen(port, host), "listening"); // rejects on "error" (e.g. the port is taken)
    return (this.server.address() as AddressInfo).port;
  }

  /** Stops listening and ends open connections (a page's keep-alive poll) at once. */
  async close(): Promise<void> {
    const closed = once(this.server.close(), "close");
    this.server.closeAllConnections();
    await closed;
  }
}
