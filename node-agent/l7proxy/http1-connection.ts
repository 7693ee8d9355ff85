// One client connection of the HTTP/1.1 proxy on its raw socket: each request head parsed here (core/l7/http1-message.ts) and judged; an allowed request's bytes go on to the connection's own upstream as they came (hop-by-hop field lines left out; re-serialized only when headerMatches change its fields) and the response comes back by its framing alone. One request at a time: a pipelined one waits (bounded) for the answer before it. A message the parser does not accept is answered 400 (431, 501, 505; 408 for a slow head) and the connection closes: nothing passes unparsed.
import http from "node:http";
import type net from "node:net";
import type { Logger } from "pino";
import { applyHeaderActions, HTTP_DENIED, type HttpDecision } from "../../core/l7/http-decision.ts";
import type { HttpHeader, HttpRequest } from "../../core/l7/http-request.ts";
import { BodyFramer, HeadScanner, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from "../../core/l7/http1-message.ts";
import { normalizeTarget, type EscapedSlash, type InvalidPath } from "../../core/l7/path-normalize.ts";
import type { ProxyLimits } from "./config.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { DENIED_HEADERS, REFUSAL_REASON } from "./request-flow.ts";
import { asksForWebSocket } from "./upgrade.ts";
import { upstreamFailure } from "./upstream.ts";

export type FlowReport = (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void;

/** What the proxy port gives each of its connections. */
export interface Http1Port {
  readonly port: number;
  readonly limits: ProxyLimits;
  readonly log: Logger;
  /** Whether request paths are normalized before they are judged and forwarded (the agent's --http-normalize-path), now. */
  normalizePath(): boolean;
  /** The request judged by the rules in force now (both ends' when the record names both), and its flow reporter. */
  judge(request: HttpRequest, protocol: string, started: bigint): { readonly decision: HttpDecision; readonly report: FlowReport };
  /** The flow of a request the proxy refused before any rule judged it: `status` what the client got, `reason` one of a few fixed texts. */
  refused(request: HttpRequest, protocol: string, started: bigint, status: number, reason: string, responseHeaders?: readonly HttpHeader[]): void;
  /** The upstream connection for a request whose host is `host` (marked as the client; with originatingTLS, verified for that name). */
  connect(host: string): net.Socket;
  /** Whether a connection opened for a request to `previous` may carry one to `host` (with originatingTLS: the same name). */
  sameUpstream(previous: string, host: string): boolean;
  /** An allowed WebSocket upgrade: the client socket (paused, no listeners of ours) is the caller's from here. */
  upgrade(client: net.Socket, head: Buffer, request: HttpRequest, upgrade: string, decision: HttpDecision & { verdict: "allow" }, report: FlowReport): void;
}

/** Bytes read ahead of the request in flight (a pipelined request) before the client is paused. */
const READ_AHEAD_LIMIT = 65536;
/** The largest response head taken from a destination. */
const RESPONSE_HEAD_LIMIT = 65536;
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from("\r\n");
const CONNECTION_CLOSE = Buffer.from("connection: close\r\n");
const CONNECTION_KEEP_ALIVE = Buffer.from("connection: keep-alive\r\n");
const FRAMING = new Set(["content-length", "transfer-encoding"]);

/** What a refused message's flow names when no request head was read whole. */
const NO_REQUEST: HttpRequest = { method: "", path: "", host: "", headers: [] };

function requestOf(head: RequestHead): HttpRequest {
  let host = "";
  for (const f of head.fields) if (f.name === "host") host = f.value;
  return { method: head.method, path: head.target, host, headers: head.fields };
}

/** The proxy's own 403, as Cilium's proxy answers a denied request. */
function deniedResponse(connection: "close" | "keep-alive" | undefined): Buffer {
  return Buffer.from(
    `HTTP/1.1 ${HTTP_DENIED.status} Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(HTTP_DENIED.body)}\r\n${connection ? `connection: ${connection}\r\n` : ""}\r\n${HTTP_DENIED.body}`,
  );
}
const DENIED = { keep: deniedResponse(undefined), close: deniedResponse("close"), keep10: deniedResponse("keep-alive") };

/**
 * Envoy's answer to a path it does not forward: to an escaped slash (UNESCAPE_AND_REDIRECT) a redirect, after which the
 * client asks again for the unescaped path, which is then judged; to an invalid one (a fragment, a NUL) 400.
 */
function unforwardedPathAnswer(e: EscapedSlash | InvalidPath, version: RequestHead["version"]): { keep: Buffer; close: Buffer; keep10: Buffer } {
  const status = "location" in e ? `307 Temporary Redirect\r\nlocation: ${e.location}` : "400 Bad Request";
  const answer = (connection: string): Buffer => Buffer.from(`HTTP/1.1 ${status}\r\ncontent-length: 0\r\n${connection}\r\n`, "latin1");
  const keep = answer("");
  return { keep, close: answer("connection: close\r\n"), keep10: version === "HTTP/1.0" ? answer("connection: keep-alive\r\n") : keep };
}

function plainResponse(status: number, body: string, close: boolean): Buffer {
  return Buffer.from(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${close ? "connection: close\r\n" : ""}\r\n${body}`);
}

/** The head's bytes without the field lines `drop` names (hop-by-hop), plus `extra` before the empty line; the raw bytes themselves when nothing changes. */
function keptLines(buf: Buffer, head: { readonly start: number; readonly end: number; readonly lineEnd: number; readonly fields: readonly HttpHeader[]; readonly lineStarts: readonly number[] }, drop: ReadonlySet<string>, extra?: Buffer): Buffer[] {
  let dropping = false;
  for (const f of head.fields) if (drop.has(f.name)) dropping = true;
  if (!dropping) return extra ? [buf.subarray(head.start, head.end - 2), extra, CRLF] : [buf.subarray(head.start, head.end)];
  const parts: Buffer[] = [];
  let from = head.start;
  for (let i = 0; i < head.fields.length; i++) {
    if (!drop.has(head.fields[i]!.name)) continue;
    if (head.lineStarts[i]! > from) parts.push(buf.subarray(from, head.lineStarts[i]));
    from = head.lineStarts[i + 1]!;
  }
  parts.push(buf.subarray(from, head.end - 2));
  if (extra) parts.push(extra);
  parts.push(CRLF);
  return parts;
}

const VALID_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const VALID_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The request head with headerMatches' actions applied: the request line as sent, the fields the actions leave (the
 * hop-by-hop ones dropped), the body's framing fields as the client sent them whatever the actions say (an action
 * must not reframe the body), or undefined when an action's name or value cannot be a field.
 */
function rewrittenHead(buf: Buffer, head: RequestHead, actions: Parameters<typeof applyHeaderActions>[1]): Buffer | undefined {
  const kept = head.fields.filter((f) => !head.hopByHop.has(f.name) && !FRAMING.has(f.name));
  const framing = head.fields.filter((f) => FRAMING.has(f.name));
  let out = buf.toString("latin1", head.start, head.lineEnd);
  for (const f of [...applyHeaderActions(kept, actions).filter((f) => !FRAMING.has(f.name)), ...framing]) {
    if (!VALID_NAME.test(f.name) || !VALID_VALUE.test(f.value)) return undefined;
    out += `${f.name}: ${f.value}\r\n`;
  }
  return Buffer.from(`${out}\r\n`, "latin1");
}

/** The head with its request line's target replaced (the normalized path), in a buffer of its own: the field lines' offsets moved with it. */
function withTarget(buf: Buffer, head: RequestHead, target: string): { buf: Buffer; head: RequestHead } {
  const line = Buffer.from(`${head.method} ${target} ${head.version}\r\n`, "latin1");
  const shift = line.length - head.lineEnd;
  return {
    buf: Buffer.concat([line, buf.subarray(head.lineEnd, head.end)]),
    head: { ...head, target, start: 0, lineEnd: line.length, end: head.end + shift, lineStarts: head.lineStarts.map((s) => s + shift) },
  };
}

function write(socket: net.Socket, parts: Buffer[]): boolean {
  if (parts.length === 1) return socket.write(parts[0]!);
  // One write (one syscall, one segment) for a head and the body bytes that came with it.
  return socket.write(Buffer.concat(parts));
}

/** The request in flight: its judgement and how far its response came. */
interface Exchange {
  readonly method: string;
  readonly keepAlive: boolean;
  readonly version: RequestHead["version"];
  readonly report: FlowReport;
  readonly decided: Partial<HttpFlow>;
  /** The request's body has been forwarded whole. */
  requestDone: boolean;
  /** Response bytes while its head is incomplete. */
  rbuf: Buffer;
  readonly scanner: HeadScanner;
  response?: ResponseHead;
  body?: BodyFramer;
  responseHeaders?: readonly HttpHeader[];
  /** Bytes of the response reached the client. */
  responded: boolean;
  /** The client connection closes after this response. */
  closing: boolean;
}

export class Http1Connection {
  /** Client bytes not consumed yet: a head arriving, or what came after the request in flight. */
  private buf: Buffer = EMPTY;
  private readonly scanner = new HeadScanner();
  /** When the head being read began (performance.now()); 0 between requests. */
  private headSince: number;
  private lastActive: number;
  private state: "head" | "body" | "wait" | "closed" = "head";
  /** The body of the request being read: forwarded, or after a denial read and dropped. */
  private body: BodyFramer | undefined;
  private discarding = false;
  private exchange: Exchange | undefined;
  private upstream: net.Socket | undefined;
  private upstreamHost = "";
  private upstreamError: Error | undefined;
  private clientEnded = false;
  /** Paused because the upstream's buffer is full (a request body) or the read-ahead is. */
  private waitingForUpstream = false;

  constructor(
    private readonly client: net.Socket,
    private readonly p: Http1Port,
    private readonly onDone: (c: Http1Connection) => void,
    acceptedAt = performance.now(),
  ) {
    this.headSince = acceptedAt;
    this.lastActive = acceptedAt;
    client.on("data", this.onData);
    client.on("end", this.onEnd);
    client.on("drain", this.onClientDrain);
    client.on("error", () => undefined);
    client.once("close", this.onClose);
    client.resume();
  }

  /** The head timeout (slowloris) and the idle timeout, checked by the proxy's sweep. */
  check(now: number): void {
    if (this.state === "head" && this.headSince > 0 && now - this.headSince > this.p.limits.headersTimeoutMs) return this.reject({ status: 408, reason: "request head not complete within the head timeout" });
    // Idle: no request, or no bytes moving either way (also a closing connection whose last bytes never leave).
    if (now - this.lastActive > this.p.limits.idleTimeoutMs) this.destroy();
  }

  destroy(): void {
    this.client.destroy();
    this.dropUpstream();
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastActive = performance.now();
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.pump();
  };

  private readonly onEnd = (): void => {
    this.clientEnded = true;
    if (this.state === "head" && !this.exchange) this.close();
    else if (this.state === "body") {
      // The client stopped in the middle of a request body: nothing more can be served.
      this.destroy();
    }
  };

  private readonly onClose = (): void => {
    this.state = "closed";
    this.dropUpstream();
    this.onDone(this);
  };

  private readonly onClientDrain = (): void => {
    this.lastActive = performance.now();
    this.upstream?.resume();
  };

  /** Serves what the buffer holds: heads, body bytes; stops while a response is awaited. */
  private pump(): void {
    while (this.buf.length > 0) {
      if (this.state === "head") {
        if (this.headSince === 0) this.headSince = performance.now();
        const end = this.scanner.scan(this.buf);
        if (end === "more") {
          if (this.scanner.seen(this.buf.length) > this.p.limits.maxHeaderBytes) return this.reject({ status: 431, reason: "request head larger than the limit" });
          return;
        }
        if (typeof end !== "number") return this.reject(end);
        if (end - this.scanner.start > this.p.limits.maxHeaderBytes) return this.reject({ status: 431, reason: "request head larger than the limit" });
        const parsed = parseRequestHead(this.buf, this.scanner.start, end);
        if (!parsed.ok) return this.reject(parsed.error);
        const buf = this.buf;
        this.buf = buf.subarray(end);
        this.scanner.reset();
        this.headSince = 0;
        this.request(buf, parsed.head);
      } else if (this.state === "body") {
        const body = this.body!;
        const n = body.take(this.buf);
        const part = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        if (body.error !== undefined) return this.reject({ status: 400, reason: body.error });
        if (!this.discarding && n > 0 && this.upstream && !this.upstream.write(part)) {
          this.waitingForUpstream = true;
          this.client.pause();
        }
        if (body.done) this.bodyDone();
      } else break;
    }
    if (this.state === "wait" && this.buf.length > READ_AHEAD_LIMIT) {
      this.waitingForUpstream = true;
      this.client.pause();
    }
  }

  private bodyDone(): void {
    this.body = undefined;
    if (this.discarding) {
      this.discarding = false;
      this.state = "head";
      return;
    }
    const ex = this.exchange;
    if (!ex) {
      // The response came before the request's body was whole: the connection cannot carry another request.
      return this.close();
    }
    ex.requestDone = true;
    this.state = "wait";
  }

  /** A complete request head (at `head.start` in `buf`): judged, then denied here or sent on. */
  private request(sent: Buffer, sentHead: RequestHead): void {
    const started = process.hrtime.bigint();
    // Judged and forwarded as the destination will read it (core/l7/path-normalize.ts): the request line rewritten only when normalizing changed it.
    const target = normalizeTarget(sentHead.target, this.p.normalizePath());
    if (typeof target !== "string") {
      const redirect = "location" in target;
      this.p.log.info({ port: this.p.port, ...target }, redirect ? "request path with an escaped slash: redirected to its unescaped path" : "invalid request path: 400");
      const close = this.answerWithoutForwarding(sentHead, unforwardedPathAnswer(target, sentHead.version));
      const answered = redirect ? [{ name: "location", value: target.location }, { name: "content-length", value: "0" }] : [{ name: "content-length", value: "0" }];
      this.p.refused(requestOf(sentHead), sentHead.version, started, redirect ? 307 : 400, redirect ? REFUSAL_REASON.escapedSlash : REFUSAL_REASON.invalidPath, answered);
      if (close) this.close();
      return;
    }
    const { buf, head } = target === sentHead.target ? { buf: sent, head: sentHead } : withTarget(sent, sentHead, target);
    const request = requestOf(head);
    const host = request.host;
    const { decision, report } = this.p.judge(request, head.version, started);
    const websocket = head.upgrade !== undefined && asksForWebSocket(head.upgrade) ? head.upgrade : undefined;
    if (websocket !== undefined) return this.upgrade(request, websocket, decision, report);
    if (decision.verdict === "deny") {
      const close = this.answerWithoutForwarding(head, DENIED);
      report("denied", HTTP_DENIED.status, { responseHeaders: DENIED_HEADERS });
      if (close) this.close();
      return;
    }
    const decided: Partial<HttpFlow> = { rule: { ruleId: decision.ruleId, index: decision.index }, ...(decision.mismatches.length ? { mismatches: decision.mismatches } : {}) };
    let out: Buffer[];
    if (decision.actions.length === 0) out = keptLines(buf, head, head.hopByHop);
    else {
      const rewritten = rewrittenHead(buf, head, decision.actions);
      if (!rewritten) {
        this.p.log.warn({ port: this.p.port }, "a headerMatches action's field is not a valid HTTP field: request refused");
        this.client.write(plainResponse(500, "invalid header action", true));
        report("error", 500, decided);
        return this.close();
      }
      out = [rewritten];
    }
    const ex: Exchange = {
      method: head.method,
      keepAlive: head.keepAlive,
      version: head.version,
      report,
      decided,
      requestDone: head.body.kind === "none",
      rbuf: EMPTY,
      scanner: new HeadScanner(),
      responded: false,
      closing: false,
    };
    this.exchange = ex;
    let up: net.Socket;
    try {
      up = this.upstreamFor(host);
    } catch (err) {
      // The socket could not even be made (the mark refused: no CAP_NET_ADMIN): the request fails, nothing is sent unmarked.
      return this.failExchange(ex, err instanceof Error ? err : new Error(String(err)));
    }
    if (head.body.kind === "none") this.state = "wait";
    else {
      this.body = new BodyFramer(head.body, this.p.limits.maxHeaderBytes);
      this.state = "body";
      // The body bytes that came with the head leave in the same write.
      const n = this.body.take(this.buf);
      if (this.body.error !== undefined) return this.reject({ status: 400, reason: this.body.error });
      if (n > 0) out.push(this.buf.subarray(0, n));
      this.buf = this.buf.subarray(n);
      if (this.body.done) this.bodyDone();
    }
    if (!write(up, out) && this.state === "body") {
      this.waitingForUpstream = true;
      this.client.pause();
    }
  }

  /**
   * The proxy's own answer to a request it does not forward (403, or 307 to an escaped slash's normalized path). The
   * connection stays usable: the request's body, if any, is read and dropped; a client waiting for 100-continue would
   * not send it: closed instead. True when the connection closes (the caller closes it after reporting the flow).
   */
  private answerWithoutForwarding(head: RequestHead, answer: { readonly keep: Buffer; readonly close: Buffer; readonly keep10: Buffer }): boolean {
    const close = !head.keepAlive || this.clientEnded || (head.expectContinue && head.body.kind !== "none");
    this.client.write(close ? answer.close : head.version === "HTTP/1.0" ? answer.keep10 : answer.keep);
    if (close) return true;
    if (head.body.kind !== "none") {
      this.body = new BodyFramer(head.body, this.p.limits.maxHeaderBytes);
      this.discarding = true;
      this.state = "body";
    }
    return false;
  }

  /** The connection's upstream (opened on its first allowed request, kept while the destination keeps it). */
  private upstreamFor(host: string): net.Socket {
    if (this.upstream && !this.upstream.destroyed && this.p.sameUpstream(this.upstreamHost, host)) return this.upstream;
    this.dropUpstream();
    const up = this.p.connect(host);
    this.upstream = up;
    this.upstreamHost = host;
    this.upstreamError = undefined;
    up.on("data", (d: Buffer) => this.onUpstreamData(up, d));
    up.on("drain", () => {
      this.lastActive = performance.now();
      if (this.waitingForUpstream && this.buf.length <= READ_AHEAD_LIMIT) {
        this.waitingForUpstream = false;
        this.client.resume();
      }
    });
    up.on("error", (err: Error) => {
      if (up === this.upstream) this.upstreamError = err;
    });
    up.once("end", () => this.onUpstreamEnd(up));
    up.once("close", () => this.onUpstreamClose(up));
    return up;
  }

  private dropUpstream(): void {
    const up = this.upstream;
    this.upstream = undefined;
    up?.destroy();
  }

  private onUpstreamData(up: net.Socket, chunk: Buffer): void {
    if (up !== this.upstream) return;
    this.lastActive = performance.now();
    const ex = this.exchange;
    // Bytes nobody asked for: the destination is not speaking HTTP/1.1 as the proxy reads it; never relayed.
    if (!ex) return this.dropUpstream();
    let data = chunk;
    while (data.length > 0) {
      if (!ex.body) {
        ex.rbuf = ex.rbuf.length === 0 ? data : Buffer.concat([ex.rbuf, data]);
        const end = ex.scanner.scan(ex.rbuf);
        if (end === "more") {
          if (ex.rbuf.length > RESPONSE_HEAD_LIMIT) return this.upstreamBroken("response head larger than the limit");
          return;
        }
        if (typeof end !== "number") return this.upstreamBroken(end.reason);
        const parsed = parseResponseHead(ex.rbuf, ex.scanner.start, end, ex.method);
        if (!parsed.ok) return this.upstreamBroken(parsed.error.reason);
        const head = parsed.head;
        const rbuf = ex.rbuf;
        data = rbuf.subarray(end);
        ex.rbuf = EMPTY;
        ex.scanner.reset();
        if (head.status === 101) return this.upstreamBroken("101 to a request that asked for no upgrade");
        if (head.status < 200) {
          // An interim answer (100 Continue, 103 Early Hints): relayed; the final one follows.
          ex.responded = true;
          write(this.client, keptLines(rbuf, head, head.hopByHop));
          continue;
        }
        ex.closing = !ex.keepAlive || this.clientEnded || head.body.kind === "close";
        const extra = ex.closing ? CONNECTION_CLOSE : ex.version === "HTTP/1.0" ? CONNECTION_KEEP_ALIVE : undefined;
        const out = keptLines(rbuf, head, head.hopByHop, extra);
        ex.response = head;
        ex.body = new BodyFramer(head.body, RESPONSE_HEAD_LIMIT);
        ex.responseHeaders = head.fields.filter((f) => !head.hopByHop.has(f.name));
        const n = ex.body.take(data);
        if (n > 0) out.push(data.subarray(0, n));
        data = data.subarray(n);
        ex.responded = true;
        if (!write(this.client, out)) up.pause();
      } else {
        const n = ex.body.take(data);
        if (n > 0 && !this.client.write(n === data.length ? data : data.subarray(0, n))) up.pause();
        data = data.subarray(n);
      }
      if (ex.body.error !== undefined) return this.upstreamBroken(ex.body.error);
      if (ex.body.done) {
        // Bytes past the response's end: the upstream cannot be trusted with another request.
        const reusable = data.length === 0 && ex.response!.keepAlive;
        this.responseDone(ex, reusable);
        return;
      }
    }
  }

  private responseDone(ex: Exchange, reusable: boolean): void {
    this.exchange = undefined;
    ex.report("forwarded", ex.response!.status, { ...ex.decided, responseHeaders: ex.responseHeaders ?? [] });
    if (!reusable || !ex.requestDone) this.dropUpstream();
    if (ex.closing || !ex.requestDone) return this.close();
    this.state = "head";
    if (this.waitingForUpstream) {
      this.waitingForUpstream = false;
      this.client.resume();
    }
    this.pump();
    if (this.clientEnded && this.state === "head" && this.buf.length === 0) this.close();
  }

  private onUpstreamEnd(up: net.Socket): void {
    if (up !== this.upstream) return;
    const ex = this.exchange;
    if (ex?.body && ex.body.framing.kind === "close") {
      ex.body.ended();
      this.upstream = undefined;
      this.responseDone(ex, false);
    }
  }

  private onUpstreamClose(up: net.Socket): void {
    if (up !== this.upstream) return;
    this.upstream = undefined;
    const ex = this.exchange;
    if (!ex) return;
    this.failExchange(ex, this.upstreamError ?? new Error("the destination closed the connection before its response was complete"));
  }

  /** The destination broke the protocol: its connection is dropped and the request fails. */
  private upstreamBroken(reason: string): void {
    const ex = this.exchange;
    this.p.log.info({ port: this.p.port, reason }, "destination's response refused");
    this.dropUpstream();
    if (ex) this.failExchange(ex, new Error(reason));
  }

  /** The request in flight failed at the destination: the client gets 503/504 when nothing of the response reached it yet, else the connection ends. */
  private failExchange(ex: Exchange, err: Error): void {
    this.exchange = undefined;
    if (ex.responded || this.state === "closed") return this.destroy();
    this.p.log.info({ port: this.p.port, err: err.message }, "upstream failed");
    const { status, body } = upstreamFailure(err);
    // A request whose body was not read whole cannot be followed by another on this connection.
    const close = !ex.keepAlive || this.clientEnded || !ex.requestDone;
    this.client.write(plainResponse(status, body, close));
    ex.report("error", status, ex.decided);
    if (close) return this.close();
    this.state = "head";
    this.pump();
  }

  /** A WebSocket upgrade: denied, 403 and the connection closes; allowed, the socket goes to the proxy's upgrade (upgrade.ts). */
  private upgrade(request: HttpRequest, upgrade: string, decision: HttpDecision, report: FlowReport): void {
    if (decision.verdict === "deny") {
      this.client.write(DENIED.close);
      report("denied", HTTP_DENIED.status);
      return this.close();
    }
    this.state = "closed";
    this.dropUpstream();
    const head = this.buf;
    this.buf = EMPTY;
    this.client.pause();
    this.client.off("data", this.onData);
    this.client.off("end", this.onEnd);
    this.client.off("drain", this.onClientDrain);
    this.client.off("close", this.onClose);
    this.onDone(this);
    this.p.upgrade(this.client, head, request, upgrade, decision, report);
  }

  /** A malformed or too slow request: its status, and the connection closes. */
  private reject(e: { status: number; reason: string }): void {
    this.p.log.info({ port: this.p.port, client: `${this.client.remoteAddress ?? ""}:${this.client.remotePort ?? 0}`, status: e.status, reason: e.reason }, "request refused: connection closed");
    // The flow says what the client got, by a fixed reason: the parser's may quote what the client sent (the log has it).
    const reason = e.status === 408 || e.status === 431 ? e.reason : REFUSAL_REASON.malformedHttp1;
    this.p.refused(NO_REQUEST, "HTTP/1.1", process.hrtime.bigint(), e.status, reason);
    if (this.client.writable && !this.client.writableEnded) this.client.write(`HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? ""}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    this.dropUpstream();
    this.close();
  }

  /** Ends the client connection once what was written has left (it is destroyed then; the idle sweep catches one that never drains). */
  private close(): void {
    if (this.state === "closed" && this.client.writableEnded) return;
    this.state = "closed";
    this.client.end(() => this.client.destroy());
  }
}
