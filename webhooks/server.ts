// The HTTPS admission server: POST /validate answers AdmissionReviews, with a body limit, a per-request timeout and one log line per request.
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createSecureContext } from "node:tls";
import { pino, type Logger } from "pino";
import type { ValidateOptions } from "../core/validate.ts";
import { admit, rejectBody, type AdmissionMode, type AdmissionOutcome } from "./admission.ts";

export interface WebhookServerOptions {
  readonly host: string;
  readonly port: number; // 0 = any free port
  readonly cert: string;
  readonly key: string;
  readonly mode?: AdmissionMode;
  /**
   * How policies are parsed (must match the operator's so admission and enforcement agree) and the
   * policy secrets namespace the operator reads TLS Secrets from (a Secret named elsewhere is warned about).
   */
  readonly parseOptions?: ValidateOptions;
  /** The apiserver sends at most ~3 MiB objects, twice (object and oldObject) for an UPDATE. */
  readonly maxBodyBytes?: number;
  /** Time to receive the whole request; must stay below the webhook's timeoutSeconds. */
  readonly requestTimeoutMs?: number;
  readonly logger?: Logger;
}

export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
export const VALIDATE_PATH = "/validate";

export class WebhookServer {
  private readonly server: Server;
  private readonly mode: AdmissionMode;
  private readonly maxBodyBytes: number;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(private readonly opts: WebhookServerOptions) {
    this.mode = opts.mode ?? "validate";
    this.maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.log = opts.logger ?? pino({ name: "membrane-webhook" });
    this.server = createServer({ cert: opts.cert, key: opts.key, minVersion: "TLSv1.2" }, (req, res) => this.handle(req, res));
    // Slow senders are cut off by the per-request timer below; these bound the headers phase as well.
    this.server.headersTimeout = this.timeoutMs;
    this.server.requestTimeout = this.timeoutMs + 1_000;
    // Answers are one small write each: do not let Nagle's algorithm wait for the client's delayed ACK.
    this.server.on("secureConnection", (socket) => socket.setNoDelay(true));
    this.server.on("tlsClientError", (err) => this.log.debug({ err: err.message }, "TLS handshake failed"));
  }

  async start(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const addr = this.address();
    this.log.info({ host: addr.address, port: addr.port, mode: this.mode }, "webhook listening");
    return addr;
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Swaps the serving certificate for new connections; open connections finish on the old one. */
  setCertificate(cert: string, key: string): void {
    this.server.setSecureContext({ cert, key, minVersion: "TLSv1.2" });
    // Validate eagerly so a bad pair fails here, not in the next handshake.
    createSecureContext({ cert, key });
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    if (req.url === "/healthz" && req.method === "GET") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (req.url?.split("?")[0] !== VALIDATE_PATH || req.method !== "POST") {
      res.writeHead(404, { "content-type": "text/plain" }).end(`POST ${VALIDATE_PATH} with an AdmissionReview\n`);
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (outcome: AdmissionOutcome, closeAfter: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const headers: Record<string, string | number> = {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(outcome.body),
      };
      if (closeAfter) headers.connection = "close";
      res.writeHead(200, headers).end(outcome.body);
      if (closeAfter) res.once("finish", () => req.destroy());
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      this.log.info(
        {
          uid: outcome.uid,
          kind: outcome.kind,
          object: outcome.namespace ? `${outcome.namespace}/${outcome.name}` : outcome.name,
          operation: outcome.operation,
          dryRun: outcome.dryRun,
          allowed: outcome.allowed,
          errors: outcome.errorCount,
          warnings: outcome.warningCount,
          ms: Math.round(ms * 1000) / 1000,
        },
        "admission review",
      );
    };
    const head = (): string => Buffer.concat(chunks).subarray(0, 65_536).toString("utf8");
    const timer = setTimeout(() => {
      finish(rejectBody(head(), `timed out after ${this.timeoutMs} ms reading the request`), true);
    }, this.timeoutMs);
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > this.maxBodyBytes) {
        finish(rejectBody(head(), `the request body is larger than ${this.maxBodyBytes} bytes`), true);
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (done) return;
      let outcome: AdmissionOutcome;
      try {
        outcome = admit(Buffer.concat(chunks).toString("utf8"), this.mode, this.opts.parseOptions);
      } catch (err) {
        outcome = rejectBody(head(), `internal error: ${err instanceof Error ? err.message : "unknown"}`);
      }
      finish(outcome, false);
    });
    req.on("error", () => clearTimeout(timer));
    req.on("close", () => clearTimeout(timer));
  }
}
