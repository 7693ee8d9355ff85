// The operator's HTTP endpoints on loopback: /healthz (the process runs), /readyz (caches synced or
// standing by) and /metrics (Prometheus text); an agent adds read-only JSON endpoints of its own (`routes`).
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** A read-only JSON endpoint: its status and body, computed per request. */
export type JsonRoute = () => { readonly status: number; readonly body: unknown };

export class HealthServer {
  private readonly server: http.Server;

  constructor(
    private readonly registry: Registry,
    private readonly ready: () => boolean,
    private readonly routes: ReadonlyMap<string, JsonRoute> = new Map(),
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") return text(res, 200, "ok\n");
    if (path === "/readyz") return this.ready() ? text(res, 200, "ok\n") : text(res, 503, "not ready\n");
    if (path === "/metrics") {
      try {
        res.writeHead(200, { "content-type": this.registry.contentType });
        res.end(await this.registry.metrics());
      } catch (e) {
        text(res, 500, `${String(e)}\n`);
      }
      return;
    }
    const route = this.routes.get(path ?? "");
    if (route && (req.method === "GET" || req.method === "HEAD")) {
      try {
        const r = route();
        res.writeHead(r.status, { "content-type": "application/json" });
        res.end(JSON.stringify(r.body) + "\n");
      } catch (e) {
        text(res, 500, `${String(e)}\n`);
      }
      return;
    }
    text(res, 404, "not found\n");
  }

  /** Listens on 127.0.0.1:`port` (0 picks one); returns the bound port. */
  listen(port: number, host = "127.0.0.1"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => resolve((this.server.address() as AddressInfo).port));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "content-type": "text/plain" });
  res.end(body);
}
