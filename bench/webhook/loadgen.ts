// A lean closed-loop HTTPS load generator: raw HTTP/1.1 over keep-alive TLS sockets, so that it takes little of the CPU the server needs.
import { connect, type TLSSocket } from "node:tls";

export interface LoadOptions {
  readonly host: string;
  readonly port: number;
  /** PEM CA bundle the server's certificate chains to. */
  readonly ca: string;
  readonly path: string;
  readonly connections: number;
  readonly seconds: number;
  /** The request body for a uid; every request carries its own uid, as the API server's do. */
  readonly body: (uid: string) => string;
  /** Keep each request's latency (off for warm-up). */
  readonly record: boolean;
}

export interface LoadResult {
  readonly requests: number;
  readonly denied: number;
  readonly elapsedSeconds: number;
  /** Latency of every request in ms, sorted ascending (empty when not recorded). */
  readonly latenciesMs: Float64Array;
}

const HEADER_END = Buffer.from("\r\n\r\n");

interface Answer {
  readonly status: number;
  readonly body: string;
}

/**
 * Reads HTTP/1.1 responses with a Content-Length off one socket, one at a time. The server under
 * test always sends Content-Length; anything else is a failure of the benchmark, not something to
 * tolerate.
 */
class ResponseReader {
  private buffered: Buffer = Buffer.alloc(0);
  private waiting: ((a: Answer) => void) | undefined;
  private failed: ((e: Error) => void) | undefined;

  constructor(private readonly socket: TLSSocket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.drain();
    });
    const fail = (err: Error): void => {
      const f = this.failed;
      this.waiting = this.failed = undefined;
      f?.(err);
    };
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("the server closed the connection")));
  }

  next(): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failed = reject;
      this.drain();
    });
  }

  private drain(): void {
    if (this.waiting === undefined) return;
    const end = this.buffered.indexOf(HEADER_END);
    if (end < 0) return;
    const head = this.buffered.subarray(0, end).toString("latin1");
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!m) {
      this.failed?.(new Error(`answer without Content-Length: ${head.split("\r\n")[0] ?? ""}`));
      return;
    }
    const total = end + HEADER_END.length + Number(m[1]);
    if (this.buffered.length < total) return;
    const body = this.buffered.subarray(end + HEADER_END.length, total).toString("utf8");
    this.buffered = this.buffered.subarray(total);
    const resolve = this.waiting;
    this.waiting = this.failed = undefined;
    resolve({ status, body });
  }
}

function open(opts: LoadOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: opts.host, port: opts.port, ca: opts.ca }, () => {
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** Runs `connections` loops for `seconds`, each sending its next request as soon as its last answer is in. */
export async function closedLoop(opts: LoadOptions): Promise<LoadResult> {
  const sockets = await Promise.all(Array.from({ length: opts.connections }, () => open(opts)));
  const latencies: number[] = [];
  let requests = 0;
  let denied = 0;
  const started = performance.now();
  const end = started + opts.seconds * 1000;
  const loop = async (socket: TLSSocket, w: number): Promise<void> => {
    const reader = new ResponseReader(socket);
    for (let i = 0; performance.now() < end; i++) {
      const uid = `bench-${w}-${i}`;
      const body = opts.body(uid);
      const t0 = performance.now();
      socket.write(
        `POST ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
      const answer = await reader.next();
      const ms = performance.now() - t0;
      if (answer.status !== 200) throw new Error(`HTTP ${answer.status}: ${answer.body.slice(0, 200)}`);
      const review = JSON.parse(answer.body) as { response?: { uid?: string; allowed?: boolean } };
      if (review.response?.uid !== uid) throw new Error(`answer for ${String(review.response?.uid)}, expected ${uid}`);
      if (review.response.allowed !== true) denied++;
      if (opts.record) latencies.push(ms);
      requests++;
    }
  };
  try {
    await Promise.all(sockets.map((s, w) => loop(s, w)));
  } finally {
    for (const s of sockets) s.destroy();
  }
  const elapsedSeconds = (performance.now() - started) / 1000;
  return { requests, denied, elapsedSeconds, latenciesMs: Float64Array.from(latencies).sort() };
}

/** The value below which `p` percent of the sorted samples lie (nearest rank). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}
