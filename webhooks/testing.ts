// Test and benchmark helpers: a webhook server on a free loopback port with fresh certificates, and a client that trusts them.
import { Agent, request } from "node:https";
import { connect } from "node:tls";
import { pino } from "pino";
import type { AdmissionMode } from "./admission.ts";
import { DEFAULT_CERT_OPTIONS, issueBundle, type CertBundle } from "./certs.ts";
import { VALIDATE_PATH, WebhookServer, type WebhookServerOptions } from "./server.ts";

export interface TestServer {
  readonly server: WebhookServer;
  readonly bundle: CertBundle;
  readonly port: number;
  readonly agent: Agent;
  /** POSTs a raw body to /validate; resolves with the status code and the body text. */
  post(body: string | Buffer, path?: string): Promise<{ status: number; body: string }>;
  close(): Promise<void>;
}

export async function startTestServer(
  opts: { mode?: AdmissionMode; maxBodyBytes?: number; requestTimeoutMs?: number; maxSockets?: number } & Partial<Pick<WebhookServerOptions, "logger" | "parseOptions">> = {},
): Promise<TestServer> {
  const bundle = await issueBundle(DEFAULT_CERT_OPTIONS);
  const server = new WebhookServer({
    host: "127.0.0.1",
    port: 0,
    cert: bundle.cert,
    key: bundle.key,
    logger: opts.logger ?? pino({ level: "silent" }),
    ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
    ...(opts.parseOptions !== undefined ? { parseOptions: opts.parseOptions } : {}),
    ...(opts.maxBodyBytes !== undefined ? { maxBodyBytes: opts.maxBodyBytes } : {}),
    ...(opts.requestTimeoutMs !== undefined ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
  });
  const { port } = await server.start();
  const agent = new Agent({ keepAlive: true, ca: bundle.caBundle, maxSockets: opts.maxSockets ?? 4 });
  const post = (body: string | Buffer, path = VALIDATE_PATH): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      // Without this, Nagle's algorithm holds small writes back for the peer's delayed ACK.
      req.setNoDelay(true);
      req.end(body);
    });
  return {
    server,
    bundle,
    port,
    agent,
    post,
    async close() {
      agent.destroy();
      await server.stop();
    },
  };
}

/** The serial number of the certificate a fresh TLS connection to the server is given. */
export function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, ca, servername: "localhost" }, () => {
      const serial = socket.getPeerX509Certificate()?.serialNumber ?? "";
      socket.end();
      resolve(serial);
    });
    socket.on("error", reject);
  });
}
