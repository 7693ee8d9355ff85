// The HTTP/2 side of the L7 proxy (h2c with prior knowledge, HTTP/2 inside TLS the proxy terminated (ALPN h2), gRPC over either): every stream judged by its port's HTTP rules, allowed ones streamed to the original destination over one upstream HTTP/2 connection per client connection.
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { Readable, Writable } from "node:stream";
import type tls from "node:tls";
import pino from "pino";
import { grpcDeniedHeaders, grpcStatusHeaders, grpcStatusOfHttp, isGrpc } from "../../core/l7/grpc.ts";
import { applyHeaderActions, HTTP_DENIED, type CompiledHttpRuleRef, type HttpDecision } from "../../core/l7/http-decision.ts";
import { decideSides, sideFlows, sidesOf } from "./both-ends.ts";
import { requestFromH2Raw, type HttpHeader, type HttpRequest } from "../../core/l7/http-request.ts";
import { admitH2Request } from "../../core/l7/path-normalize.ts";
import type { OriginalDestination } from "../bpf/redirect.ts";
import type { ProxyLimits } from "./config.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { forwardAsHttp1 } from "./h2-to-http1.ts";
import { ResetBudget, warnRapidReset } from "./rapid-reset.ts";
import { DENIED_HEADERS, REFUSAL_REASON, requestFlow, withoutHeaders, type ArrivedRequest } from "./request-flow.ts";
import { upstreamFailure } from "./upstream.ts";

const log = pino({ name: "l7-proxy-h2", level: process.env.LOG_LEVEL ?? "info" });
const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR } = http2.constants;

/** HTTP/2's client connection preface (RFC 9113 §3.4): what an h2c client with prior knowledge sends first. */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/**
 * Streams one client connection may have open at once: with nghttp2's per-session memory cap and
 * flow control this bounds what one connection can hold (Node's default is no limit).
 */
export const MAX_CONCURRENT_STREAMS = 128;

/** The fields of the proxy's gRPC PERMISSION_DENIED answer, as its flows record them. */
const GRPC_DENIED_FIELDS: readonly HttpHeader[] = fieldPairs(Object.entries(grpcDeniedHeaders()).flatMap(([k, v]) => [k, String(v)]));

/**
 * Reads a new connection's first bytes until they are, or cannot be, HTTP/2's preface, then puts
 * them back for whoever serves it: "h2", "http1" (anything else), or "none" (the client closed, or
 * sent nothing decisive within `timeoutMs`: the socket is destroyed).
 */
export function sniffPreface(socket: net.Socket, timeoutMs: number): Promise<"h2" | "http1" | "none"> {
  return new Promise((resolve) => {
    let got: Buffer = Buffer.alloc(0);
    const finish = (kind: "h2" | "http1" | "none"): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      if (kind !== "none") {
        socket.pause();
        if (got.length) socket.unshift(got);
      }
      resolve(kind);
    };
    const onData = (d: Buffer): void => {
      got = got.length ? Buffer.concat([got, d]) : d;
      const n = Math.min(got.length, H2_PREFACE.length);
      if (!got.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) finish("http1");
      else if (got.length >= H2_PREFACE.length) finish("h2");
    };
    const onClose = (): void => finish("none");
    const timer = setTimeout(() => {
      socket.destroy();
      finish("none");
    }, timeoutMs);
    socket.on("data", onData);
    socket.once("close", onClose);
  });
}

/** One client connection as the proxy accepted it (the datapath's record of where it was going). */
export interface H2Client {
  /** The proxy port it arrived on: whose rules judge its streams. */
  readonly port: number;
  readonly orig: OriginalDestination;
  readonly source: { readonly ip: string; readonly port: number };
  /** The port's rules are the destination's ingress rules. */
  readonly ingress: boolean;
  /**
   * Opens the upstream connection as this client (marked with its identity), the connect timeout applied; with
   * originatingTLS, TLS inside it offering `protocols` by ALPN, verified for the client's SNI or else `host` (the first stream's).
   */
  readonly connect: (host: string | undefined, protocols: readonly UpstreamProtocol[]) => net.Socket;
  /** The destination is spoken to over TLS (originatingTLS): its ALPN answer says which HTTP version. */
  readonly originating: boolean;
  /** The client's TLS was terminated by the proxy (the SNI it named): its flows say so. */
  readonly tls?: { readonly serverName?: string };
}

export interface H2ProxyOptions {
  /** The port's rules in force now: a stream is judged by the rules in force when its headers arrived. */
  readonly rules: (port: number) => readonly CompiledHttpRuleRef[];
  readonly limits: ProxyLimits;
  readonly onFlow?: (flow: HttpFlow) => void;
  /** Whether request paths are normalized before they are judged and forwarded (the agent's --http-normalize-path), now; absent: they are. */
  readonly normalizePath?: () => boolean;
}

/** What the destination is spoken to in: ALPN's names. */
export type UpstreamProtocol = "h2" | "http/1.1";

interface Connection {
  readonly client: H2Client;
  upstream?: http2.ClientHttp2Session;
  /** The HTTP/1.1 connections to the destination, for streams it gets as HTTP/1.1 requests (h2-to-http1.ts). */
  http1?: http.Agent;
  /** An originatingTLS destination's choice (ALPN h2 or http/1.1), asked at the first allowed stream. */
  negotiated?: Promise<UpstreamProtocol>;
  /** The connection that asked, handed to the first upstream of the chosen kind. */
  probe?: net.Socket;
  readonly session: http2.ServerHttp2Session;
  /** Streams the client may still cancel before their answer (rapid-reset.ts); `rapidReset` once it went past them. */
  readonly resets: ResetBudget;
  rapidReset?: true;
}

// RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2; TE only as "trailers" (which gRPC sends).
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings"]);

function forwardable(name: string, value: string): boolean {
  return !CONNECTION_SPECIFIC.has(name) && (name !== "te" || value.trim().toLowerCase() === "trailers");
}

/** The request's header block to send upstream: its pseudo-headers as sent, its other fields with the rule's header actions applied. */
export function upstreamRequestHeaders(raw: readonly string[], headers: readonly HttpHeader[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.startsWith(":")) out.push(raw[i]!, raw[i + 1]!);
  for (const h of headers) if (forwardable(h.name, h.value)) out.push(h.name, h.value);
  return out;
}

function forwardableRaw(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (forwardable(raw[i]!.toLowerCase(), raw[i + 1]!)) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

export class H2Proxy {
  private readonly server: http2.Http2Server;
  private readonly connections = new Map<http2.Http2Session, Connection>();
  /** The client whose socket is being handed to the server (its "session" event comes synchronously). */
  private accepting: H2Client | undefined;

  constructor(private readonly opts: H2ProxyOptions) {
    this.server = http2.createServer({
      // A header block larger than the HTTP/1 head limit is refused (the stream is reset), as a head is with 431.
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: opts.limits.maxHeaderBytes, enablePush: false },
    });
    this.server.on("session", (session: http2.ServerHttp2Session) => this.open(session));
  }

  /** Serves a client connection whose first bytes were HTTP/2's preface (put back on the socket). */
  serve(socket: net.Socket, client: H2Client): void {
    this.accepting = client;
    try {
      this.server.emit("connection", socket);
    } finally {
      this.accepting = undefined;
    }
  }

  /** Closes the connections that arrived on `port` (the port is no longer served). */
  closePort(port: number): void {
    for (const [session, c] of this.connections) if (c.client.port === port) session.destroy();
  }

  stop(): void {
    for (const session of this.connections.keys()) session.destroy();
  }

  private open(session: http2.ServerHttp2Session): void {
    const client = this.accepting;
    if (!client) {
      session.destroy();
      return;
    }
    const conn: Connection = { client, session, resets: new ResetBudget() };
    this.connections.set(session, conn);
    // No stream and no frame for this long: closed, as an idle HTTP/1 keep-alive connection is.
    session.setTimeout(this.opts.limits.idleTimeoutMs, () => session.close());
    session.on("stream", (stream: http2.ServerHttp2Stream, _headers: http2.IncomingHttpHeaders, flags: number, raw: string[]) => this.handle(conn, stream, raw, flags));
    session.on("error", (err) => log.info({ port: client.port, client: `${client.source.ip}:${client.source.port}`, err: err.message }, "client connection error"));
    session.once("close", () => {
      this.connections.delete(session);
      conn.upstream?.destroy();
      conn.http1?.destroy();
      conn.probe?.destroy();
    });
  }

  /**
   * What a stream's destination is spoken to in. An originatingTLS destination is asked once a connection by ALPN
   * (h2 preferred); behind terminatingTLS alone the destination is plaintext and cannot be asked, so gRPC goes as h2c
   * (gRPC servers speak it) and anything else as HTTP/1.1 (what a plaintext server speaks, whatever the client chose
   * with the proxy); an h2c client's streams stay h2c, as it chose. Known at once (no promise, no later turn) unless
   * the destination has to be asked.
   */
  private protocolFor(conn: Connection, host: string, grpc: boolean): UpstreamProtocol | Promise<UpstreamProtocol> {
    const { client } = conn;
    if (!client.originating) return client.tls === undefined || grpc ? "h2" : "http/1.1";
    conn.negotiated ??= new Promise<UpstreamProtocol>((resolve, reject) => {
      const socket = client.connect(hostName(host), ["h2", "http/1.1"]) as tls.TLSSocket;
      const onError = (err: Error): void => {
        conn.negotiated = undefined;
        reject(err);
      };
      socket.once("error", onError);
      socket.once("secureConnect", () => {
        socket.off("error", onError);
        conn.probe = socket;
        resolve(socket.alpnProtocol === "h2" ? "h2" : "http/1.1");
      });
    });
    return conn.negotiated;
  }

  /** The probe connection if it is still unused and open, else a new one offering `protocol` only. */
  private takeConnection(conn: Connection, host: string, protocol: UpstreamProtocol): net.Socket {
    const probe = conn.probe;
    conn.probe = undefined;
    if (probe && !probe.destroyed) return probe;
    return conn.client.connect(hostName(host), [protocol]);
  }

  /** The client connection's HTTP/1.1 agent: keep-alive connections to the destination, opened as the client (marked), a few at once for its concurrent streams. */
  private http1Agent(conn: Connection, host: string): http.Agent {
    if (conn.http1) return conn.http1;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    (agent as unknown as { createConnection: () => net.Socket }).createConnection = () => this.takeConnection(conn, host, "http/1.1");
    conn.http1 = agent;
    return agent;
  }

  /** The client connection's upstream HTTP/2 connection, opened at its first allowed stream (and again after it went away). */
  private upstream(conn: Connection, host: string): http2.ClientHttp2Session {
    if (conn.upstream && !conn.upstream.closed && !conn.upstream.destroyed) return conn.upstream;
    const { orig } = conn.client;
    const authority = orig.ip.includes(":") ? `[${orig.ip}]:${orig.port}` : `${orig.ip}:${orig.port}`;
    const session = http2.connect(`http://${authority}`, { createConnection: () => this.takeConnection(conn, host, "h2"), settings: { enablePush: false } });
    // Its streams report the failure to their clients; the session's own error is only logged.
    session.on("error", (err) => log.info({ destination: authority, err: err.message }, "upstream connection failed"));
    session.once("close", () => {
      if (conn.upstream === session) conn.upstream = undefined;
    });
    conn.upstream = session;
    return session;
  }

  private handle(conn: Connection, stream: http2.ServerHttp2Stream, raw: string[], flags: number): void {
    const started = process.hrtime.bigint();
    // Cancelled before this turn came (its HEADERS and RST_STREAM in one read, as a rapid-reset flood sends them, or
    // the connection gone): never judged nor forwarded, but one of the connection's resets.
    if (stream.destroyed) {
      // Its error (a reset's code) comes on a later turn: without a listener that would be the process's.
      stream.on("error", () => {});
      return this.cancelled(conn, stream.id ?? 0, () => reportRefusal(conn.client, raw, started, this.opts, REFUSAL_REASON.rapidReset, 0));
    }
    // nghttp2 refuses most malformed requests before here, not a Host that names another authority than :authority.
    const admitted = admitH2Request(raw, this.opts.normalizePath?.() ?? true);
    if ("malformed" in admitted) {
      log.info({ port: conn.client.port, why: admitted.malformed }, "HTTP/2 request reset");
      // Closed with an error code, a stream emits "error": without a listener that would be the process's.
      stream.on("error", () => {});
      stream.close(NGHTTP2_PROTOCOL_ERROR);
      reportRefusal(conn.client, raw, started, this.opts, REFUSAL_REASON.malformedH2, 0);
      return;
    }
    if ("answer" in admitted) {
      log.info({ port: conn.client.port, why: admitted.detail }, "request path answered by the proxy: not forwarded");
      stream.on("error", () => {});
      stream.respond(admitted.answer, { endStream: true });
      stream.resume();
      const answer = Object.entries(admitted.answer).flat();
      return reportRefusal(conn.client, raw, started, this.opts, REFUSAL_REASON[admitted.answered], Number(admitted.answer[":status"]), fieldPairs(answer));
    }
    // Judged and forwarded as the destination will read it (core/l7/path-normalize.ts).
    raw = admitted.raw;
    const { request, grpc, decision, flow } = judgeStream(conn.client, raw, started, this.opts);
    // A stream's failure (a reset from either side) ends that stream only.
    stream.on("error", (err) => log.debug({ path: request.path, err: err.message }, "client stream error"));

    if (decision.verdict === "deny") {
      // A gRPC client reads the call's status, not the HTTP one: PERMISSION_DENIED, trailers-only, HTTP 200.
      if (grpc) stream.respond(grpcDeniedHeaders(), { endStream: true });
      else {
        stream.respond({ ":status": HTTP_DENIED.status, "content-type": "text/plain", "content-length": Buffer.byteLength(HTTP_DENIED.body) });
        stream.end(HTTP_DENIED.body);
      }
      // The request's body, if any, is read and dropped; the connection's other streams go on.
      stream.resume();
      flow("denied", grpc ? 200 : HTTP_DENIED.status, { responseHeaders: grpc ? GRPC_DENIED_FIELDS : DENIED_HEADERS });
      return;
    }

    const rule = { ruleId: decision.ruleId, index: decision.index };
    const mismatches = decision.mismatches.length ? { mismatches: decision.mismatches } : {};
    // Cancelled by the client before its answer began ("aborted": the proxy resets streams only after an answer began):
    // one of the connection's resets (see cancelled).
    stream.once("aborted", () => {
      // Not the client's: the session going away aborts its streams too.
      if (!stream.headersSent && !conn.session.destroyed) this.cancelled(conn, stream.id ?? 0, () => flow("error", 0, { rule, ...mismatches, reason: REFUSAL_REASON.rapidReset }));
    });
    const noBody = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const actioned = applyHeaderActions(request.headers, decision.actions);
    const fail = (err: unknown): void => this.failed(stream, grpc, err, (status) => flow("error", status, { rule, ...mismatches }));
    const forward = (protocol: UpstreamProtocol): void => {
      if (stream.destroyed || stream.closed) return;
      if (protocol === "h2") return this.forwardH2(conn, stream, raw, actioned, noBody, request.host, flow, fail, { rule, ...mismatches });
      let status = 0;
      let responseHeaders: HttpHeader[] = [];
      forwardAsHttp1(
        stream,
        { agent: this.http1Agent(conn, request.host), method: request.method, path: request.path, authority: request.host, headers: actioned, hasBody: !noBody },
        { answered: (s, headers) => ((status = s), (responseHeaders = headers)), finished: () => flow("forwarded", status, { rule, ...mismatches, responseHeaders }), failed: fail },
      );
    };
    const protocol = this.protocolFor(conn, request.host, grpc);
    if (typeof protocol === "string") forward(protocol);
    else protocol.then(forward, fail);
  }

  /**
   * An allowed stream sent on as an HTTP/2 stream over the client connection's upstream HTTP/2 connection. A gRPC call
   * is the proxy's busiest path: its listeners are the fewest that keep trailers, resets and the flow, each added only
   * where it can fire (no request trailers without a request body, no response trailers for a trailers-only answer).
   */
  private forwardH2(
    conn: Connection,
    stream: http2.ServerHttp2Stream,
    raw: readonly string[],
    actioned: readonly HttpHeader[],
    noBody: boolean,
    host: string,
    flow: (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void,
    fail: (err: unknown) => void,
    decidedBy: Partial<HttpFlow>,
  ): void {
    const headers = upstreamRequestHeaders(raw, actioned);
    let up: http2.ClientHttp2Stream;
    try {
      up = this.upstream(conn, host).request(headers, noBody ? { endStream: true } : { waitForTrailers: true });
    } catch (err) {
      return fail(err);
    }

    if (!noBody) {
      // A client's request trailers (rare) go on as sent; without them Node ends the stream with an empty DATA frame.
      let requestTrailers: http2.OutgoingHttpHeaders | undefined;
      stream.on("trailers", (t: http2.IncomingHttpHeaders) => (requestTrailers = t));
      up.on("wantTrailers", () => up.sendTrailers(requestTrailers ?? {}));
      relay(stream, up);
    }

    let status = 0;
    let responseHeaders: HttpHeader[] = [];
    up.on("response", (upHeaders: http2.IncomingHttpHeaders, upFlags: number, upRaw: string[]) => {
      if (stream.destroyed || stream.closed) return void up.close(NGHTTP2_CANCEL);
      status = Number(upHeaders[":status"] ?? 0);
      responseHeaders = fieldPairs(upRaw);
      if ((upFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        // Trailers-only (a gRPC status without a message): the client has its answer now.
        stream.respond(forwardableRaw(upRaw), { endStream: true });
        return flow("forwarded", status, { ...decidedBy, responseHeaders });
      }
      // The destination's response trailers (gRPC's status) go on as sent.
      let responseTrailers: http2.OutgoingHttpHeaders | undefined;
      up.on("trailers", (t: http2.IncomingHttpHeaders) => (responseTrailers = t));
      stream.on("wantTrailers", () => stream.sendTrailers(responseTrailers ?? {}));
      stream.respond(forwardableRaw(upRaw), { waitForTrailers: true });
      relay(up, stream);
    });
    up.on("error", fail);
    up.on("close", () => {
      // The destination reset the stream after it answered: so is the client's (before it answered, `failed` says why).
      if (status !== 0 && !stream.closed && !stream.destroyed && up.rstCode !== undefined && up.rstCode !== NGHTTP2_NO_ERROR) stream.close(up.rstCode);
    });
    // The client has the whole answer (its trailers included): one flow. ("finish" comes once: no `once` wrapper.)
    stream.on("finish", () => {
      if (status !== 0) flow("forwarded", status, { ...decidedBy, responseHeaders });
    });
    // The client going away (or cancelling) mid-call cancels the upstream stream too.
    stream.on("close", () => {
      if (!up.closed && !up.destroyed) up.close(NGHTTP2_CANCEL);
    });
  }

  /**
   * One more stream the client cancelled before its answer. Past the connection's budget (rapid-reset.ts, below
   * nghttp2's own limit, which closes the connection with no word of why), the proxy's warning, `report` (the stream's
   * flow with the reason) and GOAWAY ENHANCE_YOUR_CALM, once a connection. A flood read whole in one read reaches
   * nghttp2's limit before its streams reach here (their "stream" events come on the next turn): its GOAWAY
   * (INTERNAL_ERROR) leaves first, the warning and the flow are still these.
   */
  private cancelled(conn: Connection, id: number, report: () => void): void {
    if (conn.rapidReset || conn.resets.take()) return;
    conn.rapidReset = true;
    warnRapidReset(log, conn.client, id);
    report();
    if (conn.session.destroyed) return;
    conn.session.goaway(NGHTTP2_ENHANCE_YOUR_CALM, id);
    conn.session.destroy();
  }

  /** An allowed stream whose destination failed before it answered: 503/504 (gRPC: UNAVAILABLE); after it answered, the stream is reset. */
  private failed(stream: http2.ServerHttp2Stream, grpc: boolean, err: unknown, flow: (status: number) => void): void {
    const message = err instanceof Error ? err.message : String(err);
    log.info({ err: message }, "upstream failed");
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) return void stream.close(NGHTTP2_INTERNAL_ERROR);
    const { status, body } = upstreamFailure(err);
    if (grpc) {
      stream.respond(grpcStatusHeaders(grpcStatusOfHttp(status), body), { endStream: true });
      flow(200);
    } else {
      stream.respond({ ":status": status, "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
      stream.end(body);
      flow(status);
    }
    stream.resume();
  }
}

/** A stream's flow reporter: one flow a stream (one a rule set that judged it), the first call's; later calls are ignored. */
export type StreamFlow = (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void;

/**
 * An HTTP/2 stream's request (its header block as a raw list) judged by every rule set its connection must pass, and
 * the reporter of its flow, for h2-proxy.ts's streams and the relay's (h2-relay.ts) alike.
 */
export function judgeStream(
  client: H2Client,
  raw: readonly string[],
  started: bigint,
  opts: Pick<H2ProxyOptions, "rules" | "onFlow">,
): { request: HttpRequest; grpc: boolean; decision: HttpDecision; flow: StreamFlow } {
  const { orig } = client;
  const request = requestFromH2Raw(raw);
  const { decision, judged } = decideSides(request, sidesOf(client.port, client.ingress, orig, opts.rules), (headers, d) => applyHeaderActions(headers, d.actions));
  const arrived = arrivedStream(client, request, started);
  let reported = false;
  const report = sideFlows(judged, (verdict, status, extra = {}) => {
    const f = requestFlow(arrived, verdict, status, extra);
    // Built only when logged: a debug line per stream is not paid for at info.
    if (log.isLevelEnabled("debug")) log.debug(withoutHeaders(f), "http request");
    opts.onFlow?.(f);
  });
  const flow: StreamFlow = (verdict, status, extra = {}) => {
    if (reported) return;
    reported = true;
    report(verdict, status, extra);
  };
  return { request, grpc: isGrpc(request), decision, flow };
}

function arrivedStream(client: H2Client, request: HttpRequest, started: bigint): ArrivedRequest {
  return { source: client.source, orig: client.orig, proxyPort: client.port, ingress: client.ingress, protocol: "HTTP/2", request, started, ...(client.tls ? { tls: client.tls } : {}) };
}

/**
 * The flow of a stream the proxy refused before any rule set judged it (malformed: reset; an escaped slash: its
 * redirect), for h2-proxy.ts's streams and the relay's: "denied" with the reason, as Hubble shows a refusal (DROPPED),
 * `status` what the client got (0: the stream was reset), decided by the policy entry that sent the connection here.
 */
export function reportRefusal(
  client: H2Client,
  raw: readonly string[],
  started: bigint,
  opts: Pick<H2ProxyOptions, "onFlow">,
  reason: string,
  status: number,
  responseHeaders?: readonly HttpHeader[],
): void {
  opts.onFlow?.(requestFlow(arrivedStream(client, requestFromH2Raw(raw), started), "denied", status, { reason, ...(responseHeaders ? { responseHeaders } : {}) }));
}

/**
 * `from`'s bytes written to `to` as they come and `to` ended when `from` ends, `from` paused while `to` is full: what
 * `pipe` does for one stream's body, without its per-stream bookkeeping (a gRPC call pays it twice). A destroyed `to`
 * takes no more (the stream's close and error handlers above end both sides).
 */
function relay(from: Readable, to: Writable): void {
  const resume = (): void => void from.resume();
  from.on("data", (chunk: Buffer) => {
    if (to.destroyed) return;
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", resume);
    }
  });
  from.once("end", () => {
    if (!to.destroyed) to.end();
  });
}

/** A request's host without its port: the name originatingTLS verifies when the client sent no SNI. */
function hostName(host: string): string | undefined {
  const name = host.replace(/:\d+$/, "");
  return name !== "" ? name : undefined;
}

/** Node's flat raw header list as name/value pairs without HTTP/2's pseudo-headers (`:status`: the flow's code carries it). */
export function fieldPairs(raw: readonly string[]): HttpHeader[] {
  const out: HttpHeader[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (!raw[i]!.startsWith(":")) out.push({ name: raw[i]!.toLowerCase(), value: raw[i + 1]! });
  return out;
}
