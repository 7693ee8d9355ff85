// HTTP/1.1 messages as the L7 proxy reads them off the wire (RFC 9112), strictly: a request or response head parsed from raw bytes with each field line's byte range kept (so an allowed request goes on as sent), and a body's framing (Content-Length, chunked) followed byte by byte without decoding it. Anything ambiguous (request smuggling's raw material) is an error, never passed on.

import type { HttpHeader } from "./http-request.ts";

/** How a message's body is delimited. */
export type BodyFraming = { readonly kind: "none" } | { readonly kind: "length"; readonly length: number } | { readonly kind: "chunked" } | { readonly kind: "close" };

/** What a request head and a response head both carry. */
interface MessageHead {
  /** The field lines: names lowercased, values without their surrounding whitespace. */
  readonly fields: readonly HttpHeader[];
  /** Where each field line starts in the buffer; one more entry: where the head's empty line starts (so line i is lineStarts[i] to lineStarts[i + 1]). */
  readonly lineStarts: readonly number[];
  /** Where the head starts in the buffer (after any empty lines before the start line) and ends (after its empty line). */
  readonly start: number;
  readonly end: number;
  /** Where the start line ends (CRLF included): the fields follow. */
  readonly lineEnd: number;
  readonly body: BodyFraming;
  /** The connection stays open after this message (RFC 9112 §9.3). */
  readonly keepAlive: boolean;
  /** The field names the Connection field lists, and the fields that are hop-by-hop anyway (RFC 9110 §7.6.1). */
  readonly hopByHop: ReadonlySet<string>;
}

export interface RequestHead extends MessageHead {
  readonly method: string;
  /** The request target as sent: origin-form (path and query), or `*` for OPTIONS (another form is refused). */
  readonly target: string;
  readonly version: "HTTP/1.1" | "HTTP/1.0";
  /** The Upgrade field's value when the Connection field lists `upgrade`. */
  readonly upgrade?: string;
  /** `Expect: 100-continue`: the client may wait for an interim answer before sending the body. */
  readonly expectContinue: boolean;
}

export interface ResponseHead extends MessageHead {
  readonly status: number;
}

/** Why a head was refused: the status the client gets (the connection then closes) and a reason for the log. */
export interface HeadError {
  readonly status: 400 | 431 | 501 | 505;
  readonly reason: string;
}

export type HeadParse<T> = { readonly ok: true; readonly head: T } | { readonly ok: false; readonly error: HeadError };

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

// RFC 9110 §5.6.2 tchar: the bytes a method or a field name may hold.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;
// A field value's bytes (RFC 9110 §5.5): visible ASCII, space, tab and obs-text; no other control.
const VALUE = new Uint8Array(256);
for (let b = 0; b < 256; b++) VALUE[b] = b === HTAB || (b >= 0x20 && b !== 0x7f) ? 1 : 0;

/** Connection-specific fields: they end at this hop (Transfer-Encoding stays: the body's framing passes through as sent). */
export const HOP_BY_HOP_FIELDS: ReadonlySet<string> = new Set(["connection", "keep-alive", "proxy-connection", "te", "upgrade"]);

const bad = (reason: string, status: HeadError["status"] = 400): { ok: false; error: HeadError } => ({ ok: false, error: { status, reason } });

/**
 * Finds the end of a head arriving in pieces: call `scan` with the whole buffer so far after each piece (only the new
 * bytes are looked at). Empty lines before a request line are skipped (RFC 9112 §2.2); a LF without its CR is an error.
 */
export class HeadScanner {
  /** Where the head starts (after skipped empty lines). */
  start = 0;
  private pos = 0;
  private lineStart = 0;

  reset(from = 0): void {
    this.start = from;
    this.pos = from;
    this.lineStart = from;
  }

  /** The offset just past the head's empty line, "more" while it has not come, or an error for a bare LF. */
  scan(buf: Uint8Array, length = buf.length): number | "more" | HeadError {
    let p = this.pos;
    for (;;) {
      p = buf.indexOf(LF, p);
      if (p < 0 || p >= length) {
        this.pos = length;
        return "more";
      }
      if (p === 0 || buf[p - 1] !== CR || p - 1 < this.lineStart) return { status: 400, reason: "a line ends in LF without CR" };
      if (p - 1 === this.lineStart) {
        // An empty line: before any request line it is skipped; after one it ends the head.
        if (this.lineStart === this.start) {
          this.start = p + 1;
          this.lineStart = p + 1;
          p++;
          continue;
        }
        this.pos = p + 1;
        return p + 1;
      }
      this.lineStart = p + 1;
      p++;
    }
  }

  /** Bytes of the head seen so far (skipped empty lines not counted). */
  seen(length: number): number {
    return length - this.start;
  }
}

/** The field lines between `from` and the head's empty line at `end - 2`, each validated; an obs-fold, whitespace before a colon or a control byte is an error. */
function parseFields(buf: Uint8Array, from: number, end: number, text: (a: number, b: number) => string): { fields: HttpHeader[]; lineStarts: number[] } | HeadError {
  const fields: HttpHeader[] = [];
  const lineStarts: number[] = [];
  let p = from;
  while (p < end - 2) {
    const lineEnd = buf.indexOf(LF, p) + 1; // the scanner found every LF with its CR before it
    const eol = lineEnd - 2;
    const first = buf[p]!;
    if (first === SP || first === HTAB) return { status: 400, reason: "obsolete line folding (a field line starting with whitespace)" };
    let q = p;
    let upper = false;
    for (let b = buf[q]!; q < eol && TCHAR[b]; b = buf[++q]!) if (b <= 0x5a && b >= 0x41) upper = true;
    if (q === p || q === eol || buf[q] !== COLON) return { status: 400, reason: buf[q] === SP || buf[q] === HTAB ? "whitespace between a field name and its colon" : "a field line without a valid name and colon" };
    const nameEnd = q;
    q++;
    for (let i = q; i < eol; i++) if (!VALUE[buf[i]!]) return { status: 400, reason: `a control byte (0x${buf[i]!.toString(16).padStart(2, "0")}) in a field value` };
    let vs = q;
    let ve = eol;
    while (vs < ve && (buf[vs] === SP || buf[vs] === HTAB)) vs++;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
    // A name already in lowercase (as many peers send them) is taken as it is.
    const name = text(p, nameEnd);
    fields.push({ name: upper ? name.toLowerCase() : name, value: text(vs, ve) });
    lineStarts.push(p);
    p = lineEnd;
  }
  lineStarts.push(p);
  return { fields, lineStarts };
}

/** A comma-separated list's tokens, lowercased (Connection, Transfer-Encoding). */
function tokens(value: string): string[] {
  const out: string[] = [];
  for (const t of value.split(",")) {
    const s = t.trim().toLowerCase();
    if (s !== "") out.push(s);
  }
  return out;
}

interface Framing {
  readonly contentLength: number | undefined;
  readonly chunked: boolean;
  /** Transfer-Encoding present (chunked or not). */
  readonly transferEncoding: string[] | undefined;
  readonly connection: Set<string>;
  readonly hosts: number;
  readonly upgrade: string | undefined;
  readonly expect: string | undefined;
}

/** What the fields say about framing and the connection; duplicate or malformed Content-Length is an error. */
function framingOf(fields: readonly HttpHeader[]): Framing | HeadError {
  let contentLength: number | undefined;
  let transferEncoding: string[] | undefined;
  const connection = new Set<string>();
  let hosts = 0;
  let upgrade: string | undefined;
  let expect: string | undefined;
  for (const f of fields) {
    switch (f.name) {
      case "content-length":
        if (contentLength !== undefined) return { status: 400, reason: "more than one Content-Length" };
        if (!/^\d{1,15}$/.test(f.value)) return { status: 400, reason: `Content-Length ${JSON.stringify(f.value)} is not a decimal length` };
        contentLength = Number(f.value);
        break;
      case "transfer-encoding":
        (transferEncoding ??= []).push(...tokens(f.value));
        break;
      case "connection":
        for (const t of tokens(f.value)) connection.add(t);
        break;
      case "host":
        hosts++;
        break;
      case "upgrade":
        upgrade = upgrade === undefined ? f.value : `${upgrade}, ${f.value}`;
        break;
      case "expect":
        expect = f.value.toLowerCase();
        break;
    }
  }
  const chunked = transferEncoding !== undefined && transferEncoding.at(-1) === "chunked";
  return { contentLength, chunked, transferEncoding, connection, hosts, upgrade, expect };
}

function hopByHopOf(connection: ReadonlySet<string>): ReadonlySet<string> {
  // `Connection: keep-alive` (or `upgrade`) names nothing beyond the fixed set: the shared set, not a copy per message.
  let more = false;
  for (const t of connection) if (!HOP_BY_HOP_FIELDS.has(t)) more = true;
  if (!more) return HOP_BY_HOP_FIELDS;
  const out = new Set(HOP_BY_HOP_FIELDS);
  for (const t of connection) out.add(t);
  return out;
}

/**
 * V8 copies a slice shorter than this; a longer one is a view of the whole string, which JSON.stringify's fast path
 * does not take (every flow record carries the fields: about 1 µs more per flow).
 */
const SHORT_SLICE = 13;

/**
 * The head's text (one character per octet) between offsets `a` and `b` of the buffer: the head from `start` to `end`
 * decoded once, its short names and values sliced from it (most are), longer ones decoded on their own.
 */
function latin1(buf: Buffer, start: number, end: number): (a: number, b: number) => string {
  const s = buf.toString("latin1", start, end);
  return (a, b) => (b - a < SHORT_SLICE ? s.slice(a - start, b - start) : buf.toString("latin1", a, b));
}

/**
 * A request head from `start` (the scanner's) to `end` (just past its empty line). Refused (the connection then
 * closes): a request line that is not `method SP target SP HTTP/1.x`, another HTTP version (505), a field line that
 * is folded, has whitespace before its colon or a control byte, Transfer-Encoding with Content-Length, more than one
 * Content-Length or a malformed one, a Transfer-Encoding other than `chunked` alone (501; 400 in HTTP/1.0), more than
 * one Host, CONNECT (the proxy judges requests, it does not open tunnels), and a target not in origin-form (other
 * than OPTIONS `*`).
 */
export function parseRequestHead(buf: Buffer, start: number, end: number): HeadParse<RequestHead> {
  const text = latin1(buf, start, end);
  const lineEnd = buf.indexOf(LF, start) + 1;
  const eol = lineEnd - 2;
  let p = start;
  while (p < eol && TCHAR[buf[p]!]) p++;
  if (p === start || buf[p] !== SP) return bad("the request line does not start with a method and one space");
  const method = text(start, p);
  const ts = ++p;
  while (p < eol && buf[p]! > SP && buf[p]! < 0x7f) p++;
  if (p === ts || buf[p] !== SP) return bad("the request target is empty or holds a byte it may not");
  const target = text(ts, p);
  p++;
  const v = text(p, eol);
  if (v !== "HTTP/1.1" && v !== "HTTP/1.0") return /^HTTP\/\d\.\d$/.test(v) ? bad(`${v} is not spoken here`, 505) : bad("the request line does not end with an HTTP version");
  if (method === "CONNECT") return bad("CONNECT is not proxied");
  // Origin-form, or `*` for OPTIONS, as HTTP/2's :path (http-request.ts): a destination reads an absolute-form target's
  // authority and path (RFC 9112 §3.2.2: the Host field ignored), which the rules, judging the Host field and the
  // target as one string, would not see as such: `GET http://admin.internal/ HTTP/1.1` with `Host: allowed`.
  if (!target.startsWith("/") && !(method === "OPTIONS" && target === "*")) return bad("the request target is not in origin-form");
  const parsed = parseFields(buf, lineEnd, end, text);
  if ("status" in parsed) return { ok: false, error: parsed };
  const { fields, lineStarts } = parsed;
  const f = framingOf(fields);
  if ("status" in f) return { ok: false, error: f };
  if (f.hosts > 1) return bad("more than one Host");
  let body: BodyFraming = { kind: "none" };
  if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return bad("both Transfer-Encoding and Content-Length");
    if (v === "HTTP/1.0") return bad("Transfer-Encoding in an HTTP/1.0 request");
    if (f.transferEncoding.length !== 1 || !f.chunked) return bad(`Transfer-Encoding ${JSON.stringify(f.transferEncoding.join(", "))} is not supported (only chunked)`, 501);
    body = { kind: "chunked" };
  } else if (f.contentLength !== undefined && f.contentLength > 0) body = { kind: "length", length: f.contentLength };
  const keepAlive = v === "HTTP/1.1" ? !f.connection.has("close") : f.connection.has("keep-alive");
  return {
    ok: true,
    head: {
      method,
      target,
      version: v,
      fields,
      lineStarts,
      start,
      end,
      lineEnd,
      body,
      keepAlive,
      ...(f.connection.has("upgrade") && f.upgrade !== undefined ? { upgrade: f.upgrade } : {}),
      expectContinue: f.expect === "100-continue",
      hopByHop: hopByHopOf(f.connection),
    },
  };
}

const HTTP_1 = Buffer.from("HTTP/1.", "latin1");
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;

/** `HTTP/1.x SP 3DIGIT [ SP reason ]` (RFC 9112 §4; the reason's bytes as a field value's) from `p` to `eol`: its minor version and status, or undefined. */
function statusLine(buf: Buffer, p: number, eol: number): { readonly minor: number; readonly status: number } | undefined {
  if (eol - p < 12) return undefined;
  for (let i = 0; i < HTTP_1.length; i++) if (buf[p + i] !== HTTP_1[i]) return undefined;
  const minor = buf[p + 7]! - 0x30;
  if ((minor !== 0 && minor !== 1) || buf[p + 8] !== SP) return undefined;
  const a = buf[p + 9]!;
  const b = buf[p + 10]!;
  const c = buf[p + 11]!;
  if (!isDigit(a) || !isDigit(b) || !isDigit(c)) return undefined;
  if (eol > p + 12) {
    if (buf[p + 12] !== SP) return undefined;
    for (let i = p + 13; i < eol; i++) if (!VALUE[buf[i]!]) return undefined;
  }
  return { minor, status: (a - 0x30) * 100 + (b - 0x30) * 10 + (c - 0x30) };
}

/**
 * A response head (status line and fields) answering a request with `method`. Its body's framing (RFC 9112 §6.3): none
 * for HEAD, 1xx, 204 and 304; chunked when Transfer-Encoding ends in chunked; until the connection closes for another
 * Transfer-Encoding or neither field; else the Content-Length. Both fields, or more than one Content-Length, are an
 * error: the proxy would have to choose a framing the client might not.
 */
export function parseResponseHead(buf: Buffer, start: number, end: number, method: string): HeadParse<ResponseHead> {
  const text = latin1(buf, start, end);
  const lineEnd = buf.indexOf(LF, start) + 1;
  const eol = lineEnd - 2;
  const line = statusLine(buf, start, eol);
  if (!line) return bad("the status line is not HTTP/1.x with a three-digit status");
  const { minor, status } = line;
  const parsed = parseFields(buf, lineEnd, end, text);
  if ("status" in parsed) return { ok: false, error: parsed };
  const { fields, lineStarts } = parsed;
  const f = framingOf(fields);
  if ("status" in f) return { ok: false, error: f };
  let body: BodyFraming;
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) body = { kind: "none" };
  else if (f.transferEncoding !== undefined) {
    if (f.contentLength !== undefined) return bad("both Transfer-Encoding and Content-Length");
    body = f.chunked ? { kind: "chunked" } : { kind: "close" };
  } else if (f.contentLength !== undefined) body = f.contentLength > 0 ? { kind: "length", length: f.contentLength } : { kind: "none" };
  else body = { kind: "close" };
  const keepAlive = body.kind !== "close" && (minor === 1 ? !f.connection.has("close") : f.connection.has("keep-alive"));
  return { ok: true, head: { status, fields, lineStarts, start, end, lineEnd, body, keepAlive, hopByHop: hopByHopOf(f.connection) } };
}

/** The largest chunk size taken (13 hex digits: below 2^52, exact as a number). */
const MAX_CHUNK_SIZE_DIGITS = 13;

// The chunked framing's states (numbers, not an enum: the code base uses only erasable TypeScript).
const Chunk = { Size: 0, Ext: 1, SizeLf: 2, Data: 3, DataCr: 4, DataLf: 5, TrailerStart: 6, Trailer: 7, TrailerLf: 8, EndLf: 9, Done: 10 } as const;
type ChunkState = (typeof Chunk)[keyof typeof Chunk];
const SEMICOLON = 59;

/**
 * Follows one body's framing over the bytes as they arrive, without copying or decoding them: `take(buf, from)` says
 * how many bytes from `from` belong to the body (the rest is the next message's). Chunked framing is checked strictly
 * (hex size, CRLF after the size line and after each chunk's data, trailer field lines, bounded extensions and
 * trailers): a framing the proxy would read differently from the destination is an error, never forwarded.
 */
export class BodyFramer {
  /** The body is complete. */
  done: boolean;
  /** Why the framing is invalid (then no further bytes are taken). */
  error: string | undefined;
  private remaining: number;
  private state: ChunkState = Chunk.Size;
  private digits = 0;
  /** Bytes of the current chunk extension or trailer section (bounded by `maxLineBytes`). */
  private lineBytes = 0;
  private trailerBytes = 0;

  constructor(
    readonly framing: BodyFraming,
    private readonly maxLineBytes = 16384,
  ) {
    this.done = framing.kind === "none";
    this.remaining = framing.kind === "length" ? framing.length : 0;
  }

  /** How many bytes of `buf` from `from` (to `length`) belong to the body. */
  take(buf: Uint8Array, from = 0, length = buf.length): number {
    if (this.done || this.error !== undefined) return 0;
    const avail = length - from;
    switch (this.framing.kind) {
      case "close":
        return avail;
      case "length": {
        const n = Math.min(avail, this.remaining);
        this.remaining -= n;
        if (this.remaining === 0) this.done = true;
        return n;
      }
      case "chunked":
        return this.chunked(buf, from, length);
      default:
        return 0;
    }
  }

  /** A close-delimited body ends with the connection. */
  ended(): void {
    if (this.framing.kind === "close") this.done = true;
  }

  private fail(reason: string, taken: number): number {
    this.error = reason;
    return taken;
  }

  private chunked(buf: Uint8Array, from: number, length: number): number {
    let p = from;
    while (p < length) {
      const b = buf[p]!;
      switch (this.state) {
        case Chunk.Size: {
          const h = hexValue(b);
          if (h >= 0) {
            if (++this.digits > MAX_CHUNK_SIZE_DIGITS) return this.fail("a chunk size too large", p - from);
            this.remaining = this.remaining * 16 + h;
          } else if (this.digits === 0) return this.fail("a chunk without a hexadecimal size", p - from);
          else if (b === CR) this.state = Chunk.SizeLf;
          else if (b === SEMICOLON) this.state = Chunk.Ext;
          else return this.fail(`a byte (0x${b.toString(16)}) after a chunk size`, p - from);
          break;
        }
        case Chunk.Ext:
          if (b === CR) this.state = Chunk.SizeLf;
          else if (b === LF || !VALUE[b]) return this.fail("a chunk extension with a control byte", p - from);
          else if (++this.lineBytes > this.maxLineBytes) return this.fail("a chunk extension too long", p - from);
          break;
        case Chunk.SizeLf:
          if (b !== LF) return this.fail("a chunk size line not ended by CRLF", p - from);
          this.digits = 0;
          this.lineBytes = 0;
          this.state = this.remaining === 0 ? Chunk.TrailerStart : Chunk.Data;
          break;
        case Chunk.Data: {
          const n = Math.min(length - p, this.remaining);
          this.remaining -= n;
          p += n;
          if (this.remaining === 0) this.state = Chunk.DataCr;
          continue;
        }
        case Chunk.DataCr:
          if (b !== CR) return this.fail("chunk data not followed by CRLF", p - from);
          this.state = Chunk.DataLf;
          break;
        case Chunk.DataLf:
          if (b !== LF) return this.fail("chunk data not followed by CRLF", p - from);
          this.state = Chunk.Size;
          break;
        case Chunk.TrailerStart:
          if (b === CR) this.state = Chunk.EndLf;
          else if (b === SP || b === HTAB || !TCHAR[b]) return this.fail("a trailer field line without a name", p - from);
          else this.state = Chunk.Trailer;
          break;
        case Chunk.Trailer:
          if (b === CR) this.state = Chunk.TrailerLf;
          else if (b === LF || !VALUE[b]) return this.fail("a trailer field with a control byte", p - from);
          break;
        case Chunk.TrailerLf:
          if (b !== LF) return this.fail("a trailer field line not ended by CRLF", p - from);
          this.state = Chunk.TrailerStart;
          break;
        case Chunk.EndLf:
          if (b !== LF) return this.fail("the chunked body not ended by CRLF", p - from);
          this.state = Chunk.Done;
          this.done = true;
          return p + 1 - from;
      }
      if (this.state >= Chunk.TrailerStart && ++this.trailerBytes > this.maxLineBytes) return this.fail("trailers too long", p - from);
      p++;
    }
    return p - from;
  }
}

function hexValue(b: number): number {
  if (b >= 48 && b <= 57) return b - 48;
  const l = b | 0x20;
  return l >= 97 && l <= 102 ? l - 87 : -1;
}
