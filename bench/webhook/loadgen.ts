// A lean HTTPS load generator, closed loop or open loop: raw HTTP/1.1 over keep-alive TLS sockets, so that it takes little of the CPU the server needs.
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

function open(opts: { readonly host: string; readonly port: number; readonly ca: string }): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: opts.host, port: opts.port, ca: opts.ca }, () => {
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

function requestText(opts: { host: string; port: number; path: string }, body: string): string {
  return (
    `POST ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/** Whether the answer is a 200 AdmissionReview for `uid`, and allowed; throws on anything else. */
function readAnswer(answer: Answer, uid: string): boolean {
  if (answer.status !== 200) throw new Error(`HTTP ${answer.status}: ${answer.body.slice(0, 200)}`);
  const review = JSON.parse(answer.body) as { response?: { uid?: string; allowed?: boolean } };
  if (review.response?.uid !== uid) throw new Error(`answer for ${String(review.response?.uid)}, expected ${uid}`);
  return review.response.allowed === true;
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
      socket.write(requestText(opts, body));
      const answer = await reader.next();
      const ms = performance.now() - t0;
      if (!readAnswer(answer, uid)) denied++;
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

export interface OpenLoopOptions {
  readonly host: string;
  readonly port: number;
  readonly ca: string;
  readonly path: string;
  /** Requests per second, sent on a fixed schedule whether or not earlier ones were answered. */
  readonly rate: number;
  readonly seconds: number;
  /**
   * Keep-alive connections to send on (the API server also keeps a pool); a request due while all
   * are busy waits for the first free one, and that wait counts in its latency.
   */
  readonly connections: number;
  readonly body: (uid: string) => string;
  /** How long to wait for the last answers after the last request was due; later ones count as unanswered. */
  readonly drainSeconds?: number;
}

export interface OpenLoopResult {
  /** Requests scheduled. */
  readonly scheduled: number;
  /** Requests answered; the rest were still unanswered (or unsent) when the drain time ran out. */
  readonly requests: number;
  readonly unanswered: number;
  readonly denied: number;
  readonly elapsedSeconds: number;
  /**
   * Latency of every scheduled request in ms from the time it was scheduled to be sent to its
   * answer, sorted ascending: a slow answer delays the requests behind it, and that delay is counted,
   * not omitted. An unanswered request counts with the time it had waited at the end (a lower bound).
   */
  readonly latenciesMs: Float64Array;
  /** How late each request left the generator (no free connection, or the timer itself late), ms, sorted; unsent ones with their wait at the end. */
  readonly sendDelaysMs: Float64Array;
}

/**
 * Sends `rate` requests per second for `seconds` on a schedule fixed in advance (request i at
 * start + i / rate), over a pool of keep-alive connections, and measures each latency from its
 * scheduled time, so a server that falls behind cannot hide it by slowing the generator down.
 * Fails on a wrong answer (status, uid) or a broken connection.
 */
export async function openLoop(opts: OpenLoopOptions): Promise<OpenLoopResult> {
  if (!(opts.rate > 0) || !(opts.seconds > 0) || !(opts.connections >= 1)) {
    throw new Error(`open loop needs rate > 0, seconds > 0 and connections >= 1 (got ${opts.rate}, ${opts.seconds}, ${opts.connections})`);
  }
  const sockets = await Promise.all(Array.from({ length: opts.connections }, () => open(opts)));
  const readers = sockets.map((s) => new ResponseReader(s));
  const total = Math.max(1, Math.round(opts.rate * opts.seconds));
  const intervalMs = 1000 / opts.rate;
  const latencies = new Float64Array(total);
  const sendDelays = new Float64Array(total);
  const sent = new Uint8Array(total);
  const answeredFlags = new Uint8Array(total);
  const idle: number[] = sockets.map((_, i) => sockets.length - 1 - i);
  const waiting: number[] = []; // indices of due requests with no free connection, oldest first
  let waitingHead = 0;
  let next = 0;
  let answered = 0;
  let denied = 0;
  const started = performance.now();
  const scheduledAt = (i: number): number => started + i * intervalMs;
  try {
    await new Promise<void>((resolve, reject) => {
      let finished = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err?: unknown): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        if (err === undefined) resolve();
        else reject(err instanceof Error ? err : new Error(String(err)));
      };
      const send = (conn: number, i: number): void => {
        const uid = `open-${i}`;
        sent[i] = 1;
        sendDelays[i] = performance.now() - scheduledAt(i);
        (sockets[conn] as TLSSocket).write(requestText(opts, opts.body(uid)));
        (readers[conn] as ResponseReader)
          .next()
          .then((answer) => {
            if (finished) return;
            latencies[i] = performance.now() - scheduledAt(i);
            answeredFlags[i] = 1;
            if (!readAnswer(answer, uid)) denied++;
            answered++;
            if (waitingHead < waiting.length) send(conn, waiting[waitingHead++] as number);
            else idle.push(conn);
            if (answered === total) finish();
          })
          .catch(finish);
      };
      const tick = (): void => {
        if (finished) return;
        const due = Math.min(total, Math.floor((performance.now() - started) / intervalMs) + 1);
        for (; next < due; next++) {
          const conn = idle.pop();
          if (conn === undefined) waiting.push(next);
          else send(conn, next);
        }
        if (next < total) timer = setTimeout(tick, Math.max(0, scheduledAt(next) - performance.now()));
        else timer = setTimeout(() => finish(), (opts.drainSeconds ?? 5) * 1000);
      };
      tick();
    });
  } finally {
    for (const s of sockets) s.destroy();
  }
  const ended = performance.now();
  for (let i = 0; i < total; i++) {
    if (answeredFlags[i] === 0) latencies[i] = ended - scheduledAt(i);
    if (sent[i] === 0) sendDelays[i] = ended - scheduledAt(i);
  }
  return {
    scheduled: total,
    requests: answered,
    unanswered: total - answered,
    denied,
    elapsedSeconds: (ended - started) / 1000,
    latenciesMs: latencies.sort(),
    sendDelaysMs: sendDelays.sort(),
  };
}

/** The value below which `p` percent of the sorted samples lie (nearest rank). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}
