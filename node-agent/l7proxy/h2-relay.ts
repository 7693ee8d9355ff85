// The L7 proxy's frame-level HTTP/2 relay for plaintext h2c clients (prior knowledge, as gRPC connects) to an h2c destination: one upstream TCP connection per client connection, frames passed on as bytes, only request header blocks decoded, judged and re-encoded; everything else (TLS, HTTP/1 destinations) is h2-proxy.ts's.
import type net from "node:net";
import pino from "pino";
import { grpcDeniedHeaders, grpcStatusHeaders, grpcStatusOfHttp } from "../../core/l7/grpc.ts";
import { applyHeaderActions, HTTP_DENIED, type CompiledHttpRuleRef } from "../../core/l7/http-decision.ts";
import { h2RequestFault, type HttpHeader } from "../../core/l7/http-request.ts";
import { admitH2Request } from "../../core/l7/path-normalize.ts";
import { DEFAULT_TABLE_SIZE, encodeBlock, HpackDecoder, HpackError, MAX_TABLE_SIZE } from "../../core/l7/hpack.ts";
import {
  blockFragment,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  ErrorCode,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FRAME_HEADER,
  frame,
  FrameType,
  goaway,
  headerFrames,
  PREFACE_LENGTH,
  rstStream,
  Setting,
  settingsFrame,
  settingsOf,
  windowUpdate,
} from "../../core/l7/h2-frame.ts";
import type { ProxyLimits } from "./config.ts";
import {
  fieldPairs,
  H2_PREFACE,
  judgeStream,
  MAX_CONCURRENT_STREAMS,
  reportRefusal,
  upstreamRequestHeaders,
  type H2Client,
} from "./h2-proxy.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { ResetBudget, warnRapidReset } from "./rapid-reset.ts";
import { DENIED_HEADERS, REFUSAL_REASON } from "./request-flow.ts";
import { upstreamFailure } from "./upstream.ts";

const log = pino({ name: "l7-proxy-h2relay", level: process.env.LOG_LEVEL ?? "info" });

/**
 * The largest frame either peer is told it may send (each side's SETTINGS_MAX_FRAME_SIZE is lowered to it on the way):
 * the relay holds at most one incomplete frame per direction, so this bounds what a connection buffers.
 */
const FRAME_CAP = 65536;

/** CONTINUATION frames one header block may take, as nghttp2 (h2-proxy.ts's sessions) allows since CVE-2024-27316: zero-length ones otherwise cost nothing to send and a frame each to gather. */
const MAX_CONTINUATIONS = 8;

/** Client SETTINGS the destination has not yet acknowledged (each an entry of clientTableSizes): more is a flood (CVE-2019-9515's shape), not a client's need. */
const MAX_UNACKED_SETTINGS = 32;

/** Octets of the proxy's own frames held while a header block of the destination's is half sent (see toClient): room for some 1,000 answers. */
const HELD_LIMIT = 65536;

/** The answers the proxy makes itself, as header lists: encoded without the dynamic table (the client's decoder stays in step with the destination's encoder). */
const GRPC_DENIED_RAW = Object.entries(grpcDeniedHeaders()).flatMap(([k, v]) => [k, String(v)]);
const GRPC_DENIED_FIELDS: readonly HttpHeader[] = fieldPairs(GRPC_DENIED_RAW);
const HTTP_DENIED_BODY = Buffer.from(HTTP_DENIED.body);
const HTTP_DENIED_RAW = [
  ":status",
  String(HTTP_DENIED.status),
  ...DENIED_HEADERS.flatMap((h) => [h.name, h.value]),
];

const UPSTREAM_RESET = upstreamFailure(new Error("reset"));
const UPSTREAM_RESET_BODY = Buffer.from(UPSTREAM_RESET.body);
const UPSTREAM_RESET_RAW = [
  ":status",
  String(UPSTREAM_RESET.status),
  "content-type",
  "text/plain",
  "content-length",
  String(UPSTREAM_RESET_BODY.length),
];
const GRPC_UNAVAILABLE_RAW = Object.entries(grpcStatusHeaders(grpcStatusOfHttp(UPSTREAM_RESET.status), UPSTREAM_RESET.body)).flatMap(
  ([k, v]) => [k, String(v)],
);

/** What the relay opens an upstream connection with: the client preface's magic and a SETTINGS with push disabled (the rest defaults); the client's own preface is then not sent again, and the ACK of this SETTINGS not passed on. */
const RELAY_PREFACE = Buffer.concat([H2_PREFACE, settingsFrame(Buffer.alloc(0), [[Setting.ENABLE_PUSH, 0]])]);

export interface H2RelayOptions {
  readonly rules: (port: number) => readonly CompiledHttpRuleRef[];
  readonly limits: ProxyLimits;
  readonly onFlow?: (flow: HttpFlow) => void;
  /** Whether request paths are normalized before they are judged and forwarded (the agent's --http-normalize-path), now; absent: they are. */
  readonly normalizePath?: () => boolean;
}

/** A forwarded stream: what its flow needs once the destination has answered it. */
interface RelayedStream {
  readonly grpc: boolean;
  requestEnded: boolean;
  responseEnded: boolean;
  status: number;
  responseHeaders: HttpHeader[];
  readonly flow: (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void;
}

/** A header block being gathered from HEADERS and its CONTINUATION frames. */
interface PendingBlock {
  readonly stream: number;
  readonly endStream: boolean;
  readonly parts: Buffer[];
  /** Octets in `parts`. */
  bytes: number;
  /** PUSH_PROMISE's block (decoded only to keep the table). */
  readonly promise: boolean;
}

export class H2Relay {
  private readonly connections = new Set<RelayConnection>();

  constructor(private readonly opts: H2RelayOptions) {}

  /**
   * Relays a client connection whose first bytes (put back on the paused socket) are HTTP/2's preface, once the
   * destination has shown it speaks h2c. The relay opens the upstream connection with a preface of its own (the magic
   * and an empty SETTINGS) and waits for the destination's SETTINGS before it reads a byte of the client's; if the
   * destination cannot be reached, `fallback` gets the untouched socket and the error, and if it answers with anything
   * else (an HTTP/1 server) or nothing within the connect timeout, `fallback` gets it without one: h2-proxy.ts then
   * serves the connection as it did before the relay (the client's first bytes still on the socket).
   */
  serve(socket: net.Socket, client: H2Client, fallback: (err?: Error) => void): void {
    let upstream: net.Socket;
    try {
      upstream = client.connect(undefined, ["h2"]);
    } catch (err) {
      return fallback(err instanceof Error ? err : new Error(String(err)));
    }
    let early: Buffer = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    const settle = (outcome: "h2" | "other" | Error): void => {
      clearTimeout(timer);
      upstream.off("connect", onConnect);
      upstream.off("error", onError);
      upstream.off("data", onData);
      upstream.off("close", onUpstreamClose);
      socket.off("close", onClientClose);
      if (outcome !== "h2") {
        upstream.destroy();
        if (!socket.destroyed) fallback(outcome instanceof Error ? outcome : undefined);
        return;
      }
      const c = new RelayConnection(socket, upstream, client, this.opts, () => this.connections.delete(c));
      this.connections.add(c);
      c.start(early);
    };
    const onError = (err: Error): void => settle(err);
    const onUpstreamClose = (): void => settle("other");
    const onClientClose = (): void => {
      settle("other");
    };
    const onConnect = (): void => {
      upstream.write(RELAY_PREFACE);
      timer = setTimeout(() => settle("other"), this.opts.limits.connectTimeoutMs);
    };
    // The destination's first frame decides: a SETTINGS (not an ACK) on stream 0 is an HTTP/2 server's preface.
    const onData = (d: Buffer): void => {
      early = early.length ? Buffer.concat([early, d]) : d;
      if (early.length < FRAME_HEADER) return;
      const h2 =
        early[3] === FrameType.SETTINGS && (early[4]! & FLAG_ACK) === 0 && early.readUInt32BE(5) === 0;
      settle(h2 ? "h2" : "other");
    };
    upstream.once("error", onError);
    upstream.once("connect", onConnect);
    upstream.on("data", onData);
    upstream.once("close", onUpstreamClose);
    socket.once("close", onClientClose);
  }

  closePort(port: number): void {
    for (const c of this.connections) if (c.client.port === port) c.destroy();
  }

  stop(): void {
    for (const c of this.connections) c.destroy();
  }
}

class RelayConnection {
  private readonly streams = new Map<number, RelayedStream>();
  /** Streams the proxy answered itself whose request body is still coming: their DATA is dropped and its window given back. */
  private readonly dropping = new Set<number>();
  /** Decodes the client's request blocks (its encoder's table), and mirrors the client's decoding of the destination's blocks. */
  private readonly requests = new HpackDecoder(DEFAULT_TABLE_SIZE, DEFAULT_TABLE_SIZE);
  private readonly responses = new HpackDecoder(DEFAULT_TABLE_SIZE, DEFAULT_TABLE_SIZE);
  private clientLeft: Buffer | undefined;
  private upstreamLeft: Buffer | undefined;
  private prefaceLeft = PREFACE_LENGTH;
  private clientBlock: PendingBlock | undefined;
  private upstreamBlock: PendingBlock | undefined;
  /** The proxy's own frames to the client, held while a block of the destination's is half sent (a block is never interleaved); at most HELD_LIMIT octets. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  /**
   * The client's connection window as the relay has used it: what the client granted, less every DATA it got (the
   * destination's and the proxy's own). The destination's DATA is passed on only as far as it goes (see fromUpstream).
   */
  private clientWindow = DEFAULT_WINDOW;
  /** The client's SETTINGS_INITIAL_WINDOW_SIZE: a stream's window at its start. */
  private clientInitialWindow = DEFAULT_WINDOW;
  /** Bodies of the proxy's own answers the client's windows have had no room for yet, by stream (see ownBody); one per stream the client may have open. */
  private readonly unsent = new Map<number, { window: number; rest: Buffer }>();
  /** Streams the client may still cancel before their answer (rapid-reset.ts). */
  private readonly resets = new ResetBudget();
  /**
   * DATA the proxy sent the client itself: taken off the client's next connection WINDOW_UPDATEs, which the destination
   * did not earn. Until they come, the destination may send this much more than the client's window holds: it waits here.
   */
  private owed = 0;
  /** The destination's frames from a DATA the client's connection window had no room for (in upstreamLeft, the socket paused): on at its next WINDOW_UPDATE. */
  private upstreamWaits = false;
  /** The destination's connection closed while its frames waited: its close is handled once they are on. */
  private upstreamGone = false;
  private lastClientStream = 0;
  /** Per client SETTINGS not yet acknowledged by the destination: the header table size it set, if it set one. */
  private readonly clientTableSizes: (number | undefined)[] = [];
  /** A size update the client's decoder expects at the start of its next header block (see ownBlock). */
  private tableUpdateDue: number | undefined;
  private maxFrameToClient = DEFAULT_MAX_FRAME;
  private maxFrameToUpstream = DEFAULT_MAX_FRAME;
  private upstreamSettingsSeen = false;
  private relayAckDue = true;
  private headTimer: NodeJS.Timeout | undefined;
  private done = false;
  /** A connection error was sent to the client: nothing more of its is read. */
  private failed = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly upstream: net.Socket,
    readonly client: H2Client,
    private readonly opts: H2RelayOptions,
    private readonly onClose: () => void,
  ) {
    socket.setNoDelay(true);
    upstream.setNoDelay(true);
    // No frame either way for this long: closed, as an idle HTTP/1 keep-alive connection is.
    socket.setTimeout(opts.limits.idleTimeoutMs, () => this.destroy());
    socket.on("data", (d: Buffer) => this.fromClient(d));
    upstream.on("data", (d: Buffer) => this.fromUpstream(d));
    socket.on("error", (err) => log.debug({ err: err.message }, "client connection error"));
    upstream.on("error", (err) =>
      log.info(
        { destination: `${client.orig.ip}:${client.orig.port}`, err: err.message },
        "upstream connection failed",
      ),
    );
    // The client gone, the destination connection goes (its streams cancelled, no flow: no one has an answer).
    socket.once("close", () => {
      this.closed();
      upstream.destroy();
    });
    upstream.once("close", () => this.upstreamClosed());
  }

  /** The destination gone: the client gets what is queued for it (what waits for its window first), and its unanswered streams the destination's failure. */
  private upstreamClosed(): void {
    const socket = this.socket;
    if (this.upstreamWaits && !socket.destroyed && !this.failed) return void (this.upstreamGone = true);
    this.closed();
    if (socket.destroyed || socket.writableEnded) return;
    // A block of the destination's cut short leaves the client's decoder nothing more to read: the connection just ends.
    if (!this.upstreamBlock)
      for (const [id, s] of this.streams) if (s.status === 0) this.answerFailure(id, s);
    this.streams.clear();
    // Bodies still waiting for the client's windows are not sent after the end.
    this.unsent.clear();
    socket.end();
    setTimeout(() => socket.destroy(), this.opts.limits.idleTimeoutMs).unref();
  }

  /** Starts relaying: the destination's first bytes (its SETTINGS, read while the relay decided), then both sockets as they come. */
  start(upstreamEarly: Buffer): void {
    this.fromUpstream(upstreamEarly);
    this.socket.resume();
  }

  destroy(): void {
    this.socket.destroy();
    this.upstream.destroy();
  }

  private closed(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.headTimer);
    this.onClose();
  }

  /** Fatal to the connection (a malformed frame or header block): GOAWAY to the client, both sides closed. */
  private fail(code: number, why: string): false {
    log.info(
      { port: this.client.port, client: `${this.client.source.ip}:${this.client.source.port}`, why },
      "HTTP/2 connection closed",
    );
    this.failed = true;
    this.clientLeft = undefined;
    this.held = [];
    this.unsent.clear();
    if (!this.socket.destroyed) this.socket.end(goaway(this.lastClientStream, code));
    this.upstream.destroy();
    return false;
  }

  // ---- client → destination ----

  private fromClient(chunk: Buffer): void {
    if (this.failed) return;
    const buf = this.clientLeft ? Buffer.concat([this.clientLeft, chunk]) : chunk;
    this.clientLeft = undefined;
    let p = 0;
    if (this.prefaceLeft > 0) {
      // The client's magic (checked before the connection came here) is not sent again: RELAY_PREFACE was.
      const n = Math.min(this.prefaceLeft, buf.length);
      this.prefaceLeft -= n;
      p = n;
    }
    // Frames passed on as bytes are written in runs: [run, p) is what has not been written yet.
    let run = p;
    while (buf.length - p >= FRAME_HEADER) {
      const length = buf.readUIntBE(p, 3);
      if (length > FRAME_CAP) return void this.fail(ErrorCode.PROTOCOL_ERROR, "frame over the size limit");
      const end = p + FRAME_HEADER + length;
      if (end > buf.length) break;
      const type = buf[p + 3]!;
      const flags = buf[p + 4]!;
      const id = buf.readUInt32BE(p + 5) & 0x7fffffff;
      if (this.clientBlock && type !== FrameType.CONTINUATION)
        return void this.fail(ErrorCode.PROTOCOL_ERROR, "frame inside a header block");
      let pass: boolean;
      switch (type) {
        case FrameType.DATA:
          // A forwarded stream's until its END_STREAM; after it (or on any other stream) dropped, its window given back.
          pass = this.streams.get(id)?.requestEnded === false;
          if (pass) {
            if (flags & FLAG_END_STREAM) this.requestEnded(id);
          } else this.dropData(id, length, (flags & FLAG_END_STREAM) !== 0);
          break;
        case FrameType.HEADERS:
        case FrameType.CONTINUATION:
        case FrameType.SETTINGS:
        case FrameType.WINDOW_UPDATE:
        case FrameType.RST_STREAM:
          pass = false;
          break;
        case FrameType.PING:
        case FrameType.GOAWAY:
          pass = true;
          break;
        default:
          // Advisory (PRIORITY), not a client's to send (PUSH_PROMISE), or of a type the proxy does not know (RFC 9113
          // §5.5: ignored): not passed on, so no extension the destination may speak carries what was not judged.
          pass = false;
      }
      if (!pass) {
        if (run < p) this.upstream.write(buf.subarray(run, p));
        run = end;
        if (!this.clientFrame(type, flags, id, buf.subarray(p + FRAME_HEADER, end)) || this.failed) return;
      }
      p = end;
    }
    if (run < p) this.upstream.write(buf.subarray(run, p));
    if (p < buf.length) this.clientLeft = buf.subarray(p);
    // A header block (or its first frame) still coming: the head timeout runs (slowloris).
    this.head(
      this.clientBlock !== undefined ||
        (this.clientLeft !== undefined &&
          (this.clientLeft.length < 4 ||
            this.clientLeft[3] === FrameType.HEADERS ||
            this.clientLeft[3] === FrameType.CONTINUATION)),
    );
    this.backpressure(this.socket, this.upstream);
  }

  /** A client frame that is not passed on as it is; false when the connection failed. */
  private clientFrame(type: number, flags: number, id: number, payload: Buffer): boolean {
    switch (type) {
      case FrameType.HEADERS: {
        const fragment = blockFragment(type, flags, payload);
        if (id === 0 || !fragment) return this.fail(ErrorCode.PROTOCOL_ERROR, "malformed HEADERS");
        const block: PendingBlock = {
          stream: id,
          endStream: (flags & FLAG_END_STREAM) !== 0,
          parts: [fragment],
          bytes: fragment.length,
          promise: false,
        };
        if (flags & FLAG_END_HEADERS) return this.requestBlock(block);
        this.clientBlock = block;
        return true;
      }
      case FrameType.CONTINUATION: {
        const block = this.clientBlock;
        if (!block || block.stream !== id)
          return this.fail(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without its HEADERS");
        if (!this.grow(block, payload))
          return this.fail(ErrorCode.ENHANCE_YOUR_CALM, "header block over the size or CONTINUATION limit");
        if (!(flags & FLAG_END_HEADERS)) return true;
        this.clientBlock = undefined;
        return this.requestBlock(block);
      }
      case FrameType.SETTINGS:
        if (id !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
        if (payload.length % 6 !== 0 || (flags & FLAG_ACK && payload.length > 0))
          return this.fail(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of a wrong length");
        if (flags & FLAG_ACK) this.upstream.write(frame(type, flags, id, payload));
        else {
          if (this.clientTableSizes.length >= MAX_UNACKED_SETTINGS)
            return this.fail(ErrorCode.ENHANCE_YOUR_CALM, "SETTINGS the destination has not acknowledged over the limit");
          const extra: [number, number][] = [[Setting.ENABLE_PUSH, 0]];
          let tableSize: number | undefined;
          for (const [s, v] of settingsOf(payload)) {
            if (s === Setting.MAX_FRAME_SIZE) {
              this.maxFrameToClient = v;
              extra.push([s, Math.min(v, FRAME_CAP)]);
            } else if (s === Setting.HEADER_TABLE_SIZE) tableSize = Math.min(v, MAX_TABLE_SIZE);
            else if (s === Setting.INITIAL_WINDOW_SIZE) this.initialWindowChanged(v);
          }
          if (tableSize !== undefined) this.responses.limit = Math.max(tableSize, this.responses.tableSize);
          this.clientTableSizes.push(tableSize);
          this.upstream.write(settingsFrame(payload, extra));
        }
        return true;
      case FrameType.WINDOW_UPDATE: {
        let increment = payload.length >= 4 ? payload.readUInt32BE(0) & 0x7fffffff : 0;
        if (id !== 0) {
          if (this.streams.has(id)) this.upstream.write(frame(type, flags, id, payload));
          else {
            const u = this.unsent.get(id);
            if (u) {
              u.window += increment;
              this.sendOwn(id, u);
            }
          }
          return true;
        }
        this.clientWindow += increment;
        if (this.upstreamWaits) this.resumeUpstream();
        for (const [unsentId, u] of this.unsent) this.sendOwn(unsentId, u);
        if (this.failed) return false;
        const taken = Math.min(this.owed, increment);
        this.owed -= taken;
        increment -= taken;
        if (increment > 0) this.upstream.write(windowUpdate(0, increment));
        return true;
      }
      case FrameType.RST_STREAM: {
        // The client cancelling a forwarded stream cancels it at the destination; no flow (it has no answer), unless
        // it was one too many cancelled before the answer.
        const s = this.streams.get(id);
        if (s) {
          this.streams.delete(id);
          this.upstream.write(frame(type, flags, id, payload));
          if (!s.responseEnded && !this.resets.take()) return this.rapidReset(id, s);
        } else {
          this.dropping.delete(id);
          this.unsent.delete(id);
        }
        return true;
      }
      default:
        return true;
    }
  }

  /** A request's header block (or its trailers): judged, answered or re-encoded for the destination; false when the connection failed. */
  private requestBlock(block: PendingBlock): boolean {
    const started = process.hrtime.bigint();
    const buf = block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts);
    let decoded;
    try {
      decoded = this.requests.decode(buf);
    } catch (err) {
      if (err instanceof HpackError) return this.fail(ErrorCode.COMPRESSION_ERROR, err.message);
      throw err;
    }
    const id = block.stream;
    const open = this.streams.get(id);
    if (open) {
      // The request's trailers: on as sent, through the proxy's encoder. Any other block on a forwarded stream (one
      // without END_STREAM, with pseudo-headers, after the request ended) is not trailers to the destination either.
      const fault = open.requestEnded
        ? "HEADERS after the request ended"
        : !block.endStream
          ? "trailers without END_STREAM"
          : h2RequestFault(decoded.raw, true);
      if (fault !== undefined) {
        this.streams.delete(id);
        this.upstream.write(rstStream(id, ErrorCode.CANCEL));
        this.malformed(id, fault);
        open.flow("error", 0, { reason: REFUSAL_REASON.trailers });
        return true;
      }
      this.upstream.write(
        headerFrames(id, encodeBlock(decoded.raw), block.endStream, this.maxFrameToUpstream),
      );
      if (block.endStream) this.requestEnded(id);
      return true;
    }
    if (id <= this.lastClientStream || id % 2 === 0) {
      // Trailers of a stream the proxy answered itself (or already closed): read (the table) and dropped.
      if (block.endStream) this.dropping.delete(id);
      return true;
    }
    this.lastClientStream = id;
    const limits = this.opts.limits;
    if (decoded.listSize > limits.maxHeaderBytes || this.streams.size + this.unsent.size >= MAX_CONCURRENT_STREAMS) {
      // Over SETTINGS_MAX_HEADER_LIST_SIZE or SETTINGS_MAX_CONCURRENT_STREAMS (both the proxy's, as the client was told): that stream only.
      this.toClient(
        rstStream(
          id,
          decoded.listSize > limits.maxHeaderBytes ? ErrorCode.PROTOCOL_ERROR : ErrorCode.REFUSED_STREAM,
        ),
      );
      return true;
    }
    const admitted = admitH2Request(decoded.raw, this.opts.normalizePath?.() ?? true);
    if ("malformed" in admitted) {
      this.malformed(id, admitted.malformed);
      reportRefusal(this.client, decoded.raw, started, this.opts, REFUSAL_REASON.malformedH2, 0);
    } else if ("answer" in admitted) {
      log.info({ port: this.client.port, stream: id, why: admitted.detail }, "request path answered by the proxy: not forwarded");
      const answer = Object.entries(admitted.answer).flat();
      this.toClient(headerFrames(id, this.ownBlock(answer), true, this.maxFrameToClient));
      if (!block.endStream) this.dropBody(id);
      reportRefusal(this.client, decoded.raw, started, this.opts, REFUSAL_REASON[admitted.answered], Number(admitted.answer[":status"]), fieldPairs(answer));
    } else this.judge(id, admitted.raw, block.endStream, started);
    return true;
  }

  /** A malformed request (RFC 9113 §8.1.1): a stream error, as nghttp2 resets it for h2-proxy.ts; not judged, never passed on. */
  private malformed(id: number, why: string): void {
    log.info(
      { port: this.client.port, client: `${this.client.source.ip}:${this.client.source.port}`, stream: id, why },
      "malformed HTTP/2 request reset",
    );
    this.toClient(rstStream(id, ErrorCode.PROTOCOL_ERROR));
  }

  /** `payload` added to a header block being gathered; false past the size a block may have or MAX_CONTINUATIONS. */
  private grow(block: PendingBlock, payload: Buffer): boolean {
    block.parts.push(payload);
    block.bytes += payload.length;
    return block.bytes <= 2 * this.opts.limits.maxHeaderBytes + FRAME_CAP && block.parts.length <= MAX_CONTINUATIONS + 1;
  }

  /** `raw` as admitH2Request left it (well-formed, its path normalized): judged, then answered or forwarded. */
  private judge(id: number, raw: string[], endStream: boolean, started: bigint): void {
    const { request, grpc, decision, flow } = judgeStream(this.client, raw, started, this.opts);

    if (decision.verdict === "deny") {
      // A gRPC client reads the call's status: PERMISSION_DENIED, trailers-only, HTTP 200; anything else 403.
      if (grpc) this.toClient(headerFrames(id, this.ownBlock(GRPC_DENIED_RAW), true, this.maxFrameToClient));
      else {
        this.toClient(headerFrames(id, this.ownBlock(HTTP_DENIED_RAW), false, this.maxFrameToClient));
        this.ownBody(id, HTTP_DENIED_BODY);
      }
      // The request's body, if any, is read and dropped; the connection's other streams go on.
      if (!endStream) this.dropBody(id);
      flow("denied", grpc ? 200 : HTTP_DENIED.status, {
        responseHeaders: grpc ? GRPC_DENIED_FIELDS : DENIED_HEADERS,
      });
      return;
    }
    const actioned = decision.actions.length
      ? applyHeaderActions(request.headers, decision.actions)
      : request.headers;
    const decidedBy: Partial<HttpFlow> = {
      rule: { ruleId: decision.ruleId, index: decision.index },
      ...(decision.mismatches.length ? { mismatches: decision.mismatches } : {}),
    };
    this.streams.set(id, {
      grpc,
      requestEnded: endStream,
      responseEnded: false,
      status: 0,
      responseHeaders: [],
      flow: (verdict, status, extra = {}) => flow(verdict, status, { ...decidedBy, ...extra }),
    });
    this.upstream.write(
      headerFrames(
        id,
        encodeBlock(upstreamRequestHeaders(raw, actioned)),
        endStream,
        this.maxFrameToUpstream,
      ),
    );
  }

  /**
   * A header block of the proxy's own for the client: it leaves the client's table as it is, but when the client has
   * just lowered its table size (its SETTINGS acknowledged) and the destination has not yet said so in a block, the
   * client expects that size update at the start of the next block it gets: this one then carries it.
   */
  private ownBlock(raw: readonly string[]): Buffer {
    const size = this.tableUpdateDue;
    if (size === undefined || this.responses.tableSize <= size) return encodeBlock(raw);
    this.tableUpdateDue = undefined;
    this.responses.resize(size);
    return encodeBlock(raw, size);
  }

  /** The destination acknowledged the client's oldest unacknowledged SETTINGS: a lower header table size is in force for the client's decoder. */
  private clientTableAcked(): void {
    const size = this.clientTableSizes.shift();
    if (size !== undefined && size < this.responses.tableSize) this.tableUpdateDue = size;
  }

  /** A stream the destination reset before it answered: the client gets the proxy's own failure answer. */
  private answerFailure(id: number, s: RelayedStream): void {
    if (s.grpc) {
      this.toClient(headerFrames(id, this.ownBlock(GRPC_UNAVAILABLE_RAW), true, this.maxFrameToClient));
      s.flow("error", 200);
    } else {
      this.toClient(headerFrames(id, this.ownBlock(UPSTREAM_RESET_RAW), false, this.maxFrameToClient));
      this.ownBody(id, UPSTREAM_RESET_BODY);
      s.flow("error", UPSTREAM_RESET.status);
    }
    if (!s.requestEnded) this.dropBody(id);
  }

  /**
   * The body of one of the proxy's own answers: sent as far as the client's stream and connection windows allow (RFC
   * 9113 §6.9.1), the rest when they grow. The stream's window is the client's initial one (a stream the destination
   * reset unanswered may have been given more, never less: the body may only wait longer than it had to).
   */
  private ownBody(id: number, body: Buffer): void {
    const u = { window: this.clientInitialWindow, rest: body };
    this.unsent.set(id, u);
    this.sendOwn(id, u);
  }

  private sendOwn(id: number, u: { window: number; rest: Buffer }): void {
    for (;;) {
      const n = Math.min(u.rest.length, u.window, this.clientWindow, this.maxFrameToClient);
      const last = n === u.rest.length;
      if (!last && n <= 0) return;
      this.toClient(frame(FrameType.DATA, last ? FLAG_END_STREAM : 0, id, u.rest.subarray(0, n)));
      u.window -= n;
      this.clientWindow -= n;
      // The destination did not earn the connection window this takes: it comes off the client's next WINDOW_UPDATEs.
      this.owed += n;
      u.rest = u.rest.subarray(n);
      if (last) return void this.unsent.delete(id);
    }
  }

  /** The client's SETTINGS_INITIAL_WINDOW_SIZE changed: every stream's window moves by as much (RFC 9113 §6.9.2), the proxy's unsent bodies' too. */
  private initialWindowChanged(size: number): void {
    const delta = size - this.clientInitialWindow;
    this.clientInitialWindow = size;
    for (const [id, u] of this.unsent) {
      u.window += delta;
      if (delta > 0) this.sendOwn(id, u);
    }
  }

  /** Rapid reset (CVE-2023-44487): the connection closed, the flow of the stream that was one too many saying why (an error: it was allowed and forwarded). */
  private rapidReset(id: number, s: RelayedStream): false {
    warnRapidReset(log, this.client, id);
    s.flow("error", 0, { reason: REFUSAL_REASON.rapidReset });
    return this.fail(ErrorCode.ENHANCE_YOUR_CALM, "rapid reset");
  }

  private requestEnded(id: number): void {
    const s = this.streams.get(id);
    if (!s) return;
    s.requestEnded = true;
    if (s.responseEnded) this.streams.delete(id);
  }

  /**
   * A stream the proxy answered whose request body is still coming: its DATA is read and dropped, and its window given
   * back; past as many such streams as the client may have open, the stream is reset instead (RFC 9113 §8.1 lets a server
   * that has answered ask the client to stop sending with NO_ERROR).
   */
  private dropBody(id: number): void {
    if (this.dropping.size < MAX_CONCURRENT_STREAMS) this.dropping.add(id);
    else this.toClient(rstStream(id, ErrorCode.NO_ERROR));
  }

  /** DATA of a stream the proxy does not forward: dropped, its flow-control window given back so the connection (and the stream) go on. */
  private dropData(id: number, length: number, endStream: boolean): void {
    if (length > 0) {
      this.toClient(windowUpdate(0, length));
      if (!endStream && this.dropping.has(id)) this.toClient(windowUpdate(id, length));
    }
    if (endStream) this.dropping.delete(id);
  }

  /**
   * One of the proxy's own frames to the client: held until the destination's SETTINGS (the server's preface, the
   * first frame the client may get) has gone on, and while a header block of the destination's is half sent.
   */
  private toClient(b: Buffer): void {
    if (!this.upstreamBlock && this.upstreamSettingsSeen) return void this.socket.write(b);
    this.held.push(b);
    this.heldBytes += b.length;
    // A destination that leaves its block half sent while the client asks on: the connection, not the proxy's memory.
    if (this.heldBytes > HELD_LIMIT && !this.failed)
      this.fail(ErrorCode.ENHANCE_YOUR_CALM, "answers held behind the destination's unfinished header block over the limit");
  }

  private flushHeld(): void {
    for (const b of this.held) this.socket.write(b);
    this.held = [];
    this.heldBytes = 0;
  }

  // ---- destination → client ----

  private fromUpstream(chunk: Buffer): void {
    let buf = this.upstreamLeft ? Buffer.concat([this.upstreamLeft, chunk]) : chunk;
    this.upstreamLeft = undefined;
    if (this.upstreamWaits) return void (this.upstreamLeft = buf);
    let p = 0;
    let run = 0;
    // Flows to report once the frames that end their streams are written.
    let done: RelayedStream[] | undefined;
    while (buf.length - p >= FRAME_HEADER) {
      const length = buf.readUIntBE(p, 3);
      if (length > FRAME_CAP) return void this.upstream.destroy();
      const end = p + FRAME_HEADER + length;
      if (end > buf.length) break;
      const type = buf[p + 3]!;
      const flags = buf[p + 4]!;
      const id = buf.readUInt32BE(p + 5) & 0x7fffffff;
      const payload = buf.subarray(p + FRAME_HEADER, end);
      switch (type) {
        case FrameType.DATA:
          if (length > this.clientWindow) {
            // More than the client's connection window holds (the destination was granted the window the proxy's own
            // bodies took, `owed`): as much as it holds goes on, the rest (and every frame after it) waits for the
            // client's WINDOW_UPDATE. The client never gets more than it granted, and gets all it granted.
            const fits = this.splitData(buf, p, end);
            if (fits === null) return void this.upstream.destroy();
            if (run < p) this.socket.write(buf.subarray(run, p));
            if (fits) {
              this.socket.write(fits.first);
              this.clientWindow -= fits.first.length - FRAME_HEADER;
              buf = Buffer.concat([fits.rest, buf.subarray(end)]);
            } else buf = buf.subarray(p);
            p = run = 0;
            this.upstreamWaits = true;
            this.upstream.pause();
            break;
          }
          this.clientWindow -= length;
          if (flags & FLAG_END_STREAM) {
            const s = this.responseEnded(id);
            if (s) (done ??= []).push(s);
          }
          break;
        case FrameType.HEADERS:
        case FrameType.PUSH_PROMISE: {
          const fragment = blockFragment(type, flags, payload);
          if (!fragment) return void this.upstream.destroy();
          const block: PendingBlock = {
            stream: id,
            endStream: (flags & FLAG_END_STREAM) !== 0,
            parts: [fragment],
            bytes: fragment.length,
            promise: type === FrameType.PUSH_PROMISE,
          };
          if (flags & FLAG_END_HEADERS) {
            const s = this.responseBlock(block);
            if (s === null) return;
            if (s) (done ??= []).push(s);
          } else this.upstreamBlock = block;
          break;
        }
        case FrameType.CONTINUATION: {
          const block = this.upstreamBlock;
          if (!block || !this.grow(block, payload)) return void this.upstream.destroy();
          if (flags & FLAG_END_HEADERS) {
            this.upstreamBlock = undefined;
            const s = this.responseBlock(block);
            if (s === null) return;
            if (s) (done ??= []).push(s);
            // The block is whole: the proxy's own frames held meanwhile follow it.
            if (this.held.length) {
              this.socket.write(buf.subarray(run, end));
              run = end;
              this.flushHeld();
            }
          }
          break;
        }
        case FrameType.SETTINGS:
          if (flags & FLAG_ACK) {
            if (this.relayAckDue) {
              // The ACK of the relay's own SETTINGS (RELAY_PREFACE): the client sent none for it.
              this.relayAckDue = false;
              if (run < p) this.socket.write(buf.subarray(run, p));
              run = end;
            } else this.clientTableAcked();
          } else {
            if (run < p) this.socket.write(buf.subarray(run, p));
            run = end;
            this.socket.write(this.upstreamSettings(payload));
            if (this.held.length && !this.upstreamBlock) this.flushHeld();
          }
          break;
        case FrameType.RST_STREAM: {
          // The destination reset a stream after it answered: so is the client's. Before: the proxy answers it as the
          // destination's failure (503, gRPC UNAVAILABLE), as for a destination that cannot be reached.
          const s = this.streams.get(id);
          if (!s) break;
          this.streams.delete(id);
          if (s.status !== 0) break;
          if (run < p) this.socket.write(buf.subarray(run, p));
          run = end;
          this.answerFailure(id, s);
          if (this.failed) return;
          break;
        }
        default:
      }
      if (this.upstreamWaits) break;
      p = end;
    }
    if (run < p) this.socket.write(buf.subarray(run, p));
    if (p < buf.length) this.upstreamLeft = buf.subarray(p);
    if (done) for (const s of done) s.flow("forwarded", s.status, { responseHeaders: s.responseHeaders });
    if (!this.upstreamWaits) this.backpressure(this.upstream, this.socket);
  }

  /**
   * The DATA frame at buf[p, end) cut where the client's connection window ends: `first`, the octets it has room for (no
   * END_STREAM, no padding), and `rest`, the frame of the others (its flags; padded as it was, so the two count against
   * flow control as the one did); undefined when it has room for none; null when its padding is longer than the frame.
   */
  private splitData(buf: Buffer, p: number, end: number): { first: Buffer; rest: Buffer } | undefined | null {
    const flags = buf[p + 4]!;
    const id = buf.readUInt32BE(p + 5) & 0x7fffffff;
    let from = p + FRAME_HEADER;
    let dataEnd = end;
    if (flags & FLAG_PADDED) {
      const pad = buf[from];
      if (pad === undefined || 1 + pad > end - from) return null;
      from += 1;
      dataEnd = end - pad;
    }
    const n = Math.min(this.clientWindow, dataEnd - from);
    if (n <= 0) return undefined;
    const first = frame(FrameType.DATA, 0, id, buf.subarray(from, from + n));
    const rest =
      flags & FLAG_PADDED
        ? frame(FrameType.DATA, flags, id, Buffer.concat([buf.subarray(p + FRAME_HEADER, p + FRAME_HEADER + 1), buf.subarray(from + n, end)]))
        : frame(FrameType.DATA, flags, id, buf.subarray(from + n, end));
    return { first, rest };
  }

  /** The client's connection window grew: the destination's frames that waited for it go on (as far as it goes), then its socket is read again. */
  private resumeUpstream(): void {
    this.upstreamWaits = false;
    this.fromUpstream(Buffer.alloc(0));
    if (this.upstreamWaits || this.failed) return;
    if (this.upstreamGone) return this.upstreamClosed();
    if (this.upstream.destroyed) return;
    this.upstream.resume();
    this.backpressure(this.upstream, this.socket);
  }

  /**
   * The destination's SETTINGS as the client gets them: what the proxy enforces lowers them (concurrent streams,
   * header list size, frame size); its header table size bounds the request decoder's.
   */
  private upstreamSettings(payload: Buffer): Buffer {
    const limits = this.opts.limits;
    const extra: [number, number][] = [];
    let streams = this.upstreamSettingsSeen ? undefined : MAX_CONCURRENT_STREAMS;
    let headerList = this.upstreamSettingsSeen ? undefined : limits.maxHeaderBytes;
    this.upstreamSettingsSeen = true;
    for (const [s, v] of settingsOf(payload)) {
      if (s === Setting.MAX_CONCURRENT_STREAMS) streams = Math.min(v, MAX_CONCURRENT_STREAMS);
      else if (s === Setting.MAX_HEADER_LIST_SIZE) headerList = Math.min(v, limits.maxHeaderBytes);
      else if (s === Setting.MAX_FRAME_SIZE) {
        this.maxFrameToUpstream = v;
        extra.push([s, Math.min(v, FRAME_CAP)]);
      } else if (s === Setting.HEADER_TABLE_SIZE) this.requests.limit = Math.min(v, MAX_TABLE_SIZE);
      // Extended CONNECT (RFC 8441's :protocol) is not offered: h2RequestFault refuses it, as h2-proxy.ts's server does.
      else if (s === Setting.ENABLE_CONNECT_PROTOCOL) extra.push([s, 0]);
    }
    if (streams !== undefined) extra.push([Setting.MAX_CONCURRENT_STREAMS, streams]);
    if (headerList !== undefined) extra.push([Setting.MAX_HEADER_LIST_SIZE, headerList]);
    return settingsFrame(payload, extra);
  }

  /**
   * A response header block, passed on as sent and read through the mirror of the client's decoder: the stream's
   * status and headers (or trailers) for its flow. The stream when this block ended it; null when the block is malformed.
   */
  private responseBlock(block: PendingBlock): RelayedStream | undefined | null {
    let raw: string[];
    try {
      raw = this.responses.decode(
        block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts),
      ).raw;
    } catch (err) {
      if (!(err instanceof HpackError)) throw err;
      log.info(
        { destination: `${this.client.orig.ip}:${this.client.orig.port}`, err: err.message },
        "upstream header block malformed",
      );
      this.destroy();
      return null;
    }
    if (this.tableUpdateDue !== undefined && this.responses.tableSize <= this.tableUpdateDue)
      this.tableUpdateDue = undefined;
    if (block.promise) return undefined;
    const s = this.streams.get(block.stream);
    if (!s) return undefined;
    if (s.status === 0) {
      const status = Number(raw[1] === undefined || raw[0] !== ":status" ? statusOf(raw) : raw[1]);
      // An informational answer (100 Continue) is not the response.
      if (status >= 200) {
        s.status = status;
        s.responseHeaders = fieldPairs(raw);
      }
    }
    return block.endStream ? this.responseEnded(block.stream) : undefined;
  }

  /** The destination ended a stream's response: the stream, whose flow is due. */
  private responseEnded(id: number): RelayedStream | undefined {
    const s = this.streams.get(id);
    if (!s || s.responseEnded) return undefined;
    s.responseEnded = true;
    // Closed both ways: it no longer counts against the concurrent streams. A request still sending goes on to the destination.
    if (s.requestEnded) this.streams.delete(id);
    return s;
  }

  // ---- both ----

  /** `from` is paused while `to` (or `from` itself, for the proxy's own answers) has more queued than its high-water mark. */
  private backpressure(from: net.Socket, to: net.Socket): void {
    const full = to.writableNeedDrain ? to : from.writableNeedDrain ? from : undefined;
    if (!full || from.isPaused()) return;
    from.pause();
    full.once("drain", () => {
      // The destination's frames waiting for the client's window keep its socket paused (resumeUpstream reads it again).
      if (from === this.upstream && this.upstreamWaits) return;
      this.backpressure(from.resume(), to);
    });
  }

  private head(pending: boolean): void {
    if (!pending) {
      if (this.headTimer) clearTimeout(this.headTimer);
      this.headTimer = undefined;
    } else
      this.headTimer ??= setTimeout(() => {
        log.info(
          { port: this.client.port, client: `${this.client.source.ip}:${this.client.source.port}` },
          "header block not complete within the head timeout",
        );
        this.destroy();
      }, this.opts.limits.headersTimeoutMs);
  }
}

function statusOf(raw: readonly string[]): string {
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i] === ":status") return raw[i + 1]!;
  return "0";
}
