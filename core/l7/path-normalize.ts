// The request path the L7 rules judge and the destination gets, as Cilium's Envoy makes it (normalize_path, merge_slashes, path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT; off with the agent's --http-normalize-path=false): one reading for both, so `/public/../admin` is never judged as /public/… and served as /admin.

/** A path holding an escaped slash (`%2F`, `%5C`): answered with a redirect to `location` (unescaped, normalized; the query kept), never judged nor forwarded. */
export interface EscapedSlash {
  readonly location: string;
}

/** A target Envoy refuses with 400 (never judged nor forwarded): a fragment, or a NUL in the path. */
export interface InvalidPath {
  readonly invalid: string;
}

import { grpcStatusHeaders, grpcStatusOfHttp, isGrpc } from "./grpc.ts";
import { h2RequestFault, requestFromH2Raw } from "./http-request.ts";

const PERCENT = 0x25;
const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const DOT = 0x2e;
const SEMICOLON = 0x3b;
const HEX = "0123456789ABCDEF";

/**
 * The characters a path may not hold as they are (the path table of Chromium's URL library, which Envoy's normalize_path
 * runs): percent-encoded in the normalized path. Control characters, space, `"` `<` `>` `^` `` ` `` `{` `|` `}`, DEL
 * and every octet over 0x7F (targets are latin1 strings: one character per octet). `#` never gets here (a fragment is refused).
 */
const ESCAPED = new Uint8Array(256);
for (let c = 0x01; c <= 0x20; c++) ESCAPED[c] = 1;
for (const ch of "\"<>^`{|}") ESCAPED[ch.charCodeAt(0)] = 1;
for (let c = 0x7f; c <= 0xff; c++) ESCAPED[c] = 1;

/** What sends a path to the slow path: an escape, a backslash, a fragment, a character to escape (NUL among them). */
const SPECIAL = new Uint8Array(256);
SPECIAL.set(ESCAPED);
SPECIAL[0] = 1;
SPECIAL[PERCENT] = 1;
SPECIAL[BACKSLASH] = 1;
SPECIAL[0x23] = 1;

const FRAGMENT: InvalidPath = { invalid: "a fragment (#) in the request target" };
const NUL: InvalidPath = { invalid: "a NUL (%00) in the request path" };
/**
 * A `.` or `..` segment with path parameters (`/public/..;/admin`, `/public/.;/../admin`). Envoy's canonicalizer keeps
 * it as a segment like any other, but Tomcat, Jetty and Spring strip `;…` before they remove dot segments: the rules
 * would judge /public/… and such a destination serve /admin. Refused (400), stricter than Envoy: no client needs it.
 */
const DOT_PARAMETERS: InvalidPath = { invalid: "a dot segment with parameters (..;) in the request path" };

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/** RFC 3986 §2.3's unreserved characters: ALPHA / DIGIT / "-" / "." / "_" / "~" (the only escapes decoded). */
function unreserved(c: number): boolean {
  const l = c | 0x20;
  return (l >= 0x61 && l <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === DOT || c === 0x5f || c === 0x7e;
}

/** Whether the path part (`target` up to `end`) is already what normalization would make it: no escape, backslash, `#` or character to escape, no `//`, no `.` or `..` segment (with parameters or not). */
function alreadyNormal(target: string, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const c = target.charCodeAt(i);
    if (c > 0xff || SPECIAL[c]) return false;
    if (c !== SLASH) continue;
    const n1 = i + 1 < end ? target.charCodeAt(i + 1) : -1;
    if (n1 === SLASH) return false;
    if (n1 !== DOT) continue;
    const n2 = i + 2 < end ? target.charCodeAt(i + 2) : -1;
    if (n2 === -1 || n2 === SLASH || n2 === SEMICOLON) return false;
    if (n2 === DOT) {
      const n3 = i + 3 < end ? target.charCodeAt(i + 3) : -1;
      if (n3 === -1 || n3 === SLASH || n3 === SEMICOLON) return false;
    }
  }
  return true;
}

/** A separator to the path's dot segments: `/`, and `\` (Chromium's, for IIS: a backend that splits on it must not see `\..\` the rules did not). */
const separator = (c: number): boolean => c === SLASH || c === BACKSLASH;

/** The length of a dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, 0 for anything else. */
function dotAt(p: string, i: number): number {
  const c = p.charCodeAt(i);
  if (c === DOT) return 1;
  return c === PERCENT && p.charCodeAt(i + 1) === 0x32 && (p.charCodeAt(i + 2) | 0x20) === 0x65 ? 3 : 0;
}

/**
 * After an unreserved escape was decoded into `out` (`n` octets) within two octets of a `%` at `percent` that began no
 * escape: when that `%` and what follows it (with the next input octet `next`) now read as an escape (`%%32e` -> `%2e`),
 * the `%` becomes `%25`, so a destination that decodes the path once never reads the escape the rules were not shown
 * (Chromium's CheckForNestedEscapes). The new length of `out`.
 */
function nestedEscape(out: Uint8Array, n: number, percent: number, next: number): number {
  const a = out[percent + 1]!;
  const b = percent + 2 < n ? out[percent + 2]! : next;
  if (hexValue(a) < 0 || hexValue(b) < 0) return n;
  out.copyWithin(percent + 3, percent + 1, n);
  out[percent + 1] = 0x32;
  out[percent + 2] = 0x35;
  return n + 2;
}

/** `out`'s first `n` octets cut back to the slash before their last segment (`out` ends with a slash), never above the root (Chromium's BackUpToPreviousSlash). */
function backUp(out: Uint8Array, n: number): number {
  let j = n - 2;
  while (j > 0 && out[j] !== SLASH) j--;
  return Math.max(j, 0) + 1;
}

/**
 * The path (no query) as Envoy's normalize_path makes it: Chromium's URL path canonicalization, whose rules these are:
 * dot segments (`.`, `..`, `%2e` either case) removed, `\` made `/`, escapes of unreserved characters decoded, other
 * escapes kept as sent (their hex digits' case too: Envoy does not change it), characters a path may not hold escaped
 * (upper-case hex). Refused: a NUL, raw or escaped (Envoy's 400), and a dot segment with parameters (`..;`, stricter
 * than Envoy: see DOT_PARAMETERS). Written into an octet array: linear in the path's length, whatever it holds.
 */
function canonicalPath(p: string): string | InvalidPath {
  const end = p.length;
  // Each input character makes at most three octets (an escape); a stray `%` made `%25` by nestedEscape adds two more.
  if (scratch.length < 3 * end + 2) scratch = new Uint8Array(3 * end + 2);
  const out = scratch;
  let n = 0;
  let badPercent = -1;
  for (let i = 0; i < end; i++) {
    const c = p.charCodeAt(i);
    const dot = dotAt(p, i);
    if (dot > 0) {
      if (out[n - 1] !== SLASH) {
        out[n++] = DOT;
        i += dot - 1;
        continue;
      }
      // A segment that starts with a dot: `.` or `..` when a separator or the end follows.
      const after = i + dot;
      const dot2 = after < end && !separator(p.charCodeAt(after)) ? dotAt(p, after) : 0;
      const next = after + dot2;
      if (p.charCodeAt(after) === SEMICOLON || (dot2 > 0 && p.charCodeAt(next) === SEMICOLON)) return DOT_PARAMETERS;
      if (after === end || separator(p.charCodeAt(after))) i = after; // `.`: skipped with its separator
      else if (dot2 > 0 && (next === end || separator(p.charCodeAt(next)))) {
        n = backUp(out, n);
        i = next;
      } else {
        out[n++] = DOT;
        i += dot - 1;
      }
      continue;
    }
    if (c === BACKSLASH) out[n++] = SLASH;
    else if (c === PERCENT) {
      const hi = i + 2 < end ? hexValue(p.charCodeAt(i + 1)) : -1;
      const lo = i + 2 < end ? hexValue(p.charCodeAt(i + 2)) : -1;
      if (hi < 0 || lo < 0) {
        badPercent = n;
        out[n++] = PERCENT;
        continue;
      }
      const v = hi * 16 + lo;
      if (v === 0) return NUL;
      if (unreserved(v)) {
        out[n++] = v;
        if (badPercent >= 0 && badPercent >= n - 3) n = nestedEscape(out, n, badPercent, i + 3 < end ? p.charCodeAt(i + 3) : -1);
      } else {
        out[n++] = PERCENT;
        out[n++] = p.charCodeAt(i + 1);
        out[n++] = p.charCodeAt(i + 2);
      }
      i += 2;
    } else if (c === 0 || c > 0xff) return NUL;
    else if (ESCAPED[c]) {
      out[n++] = PERCENT;
      out[n++] = HEX.charCodeAt(c >> 4);
      out[n++] = HEX.charCodeAt(c & 15);
    } else out[n++] = c;
  }
  return ascii(out, n);
}

/** The octets canonicalPath writes into, kept between calls (it is synchronous): a normal request allocates nothing here. */
let scratch = new Uint8Array(1024);

/** `out`'s first `n` octets as a string: all ASCII (canonicalPath escapes every other octet). */
function ascii(out: Uint8Array, n: number): string {
  let s = "";
  // In pieces: an argument list has a bound.
  for (let i = 0; i < n; i += 8192) s += String.fromCharCode.apply(null, out.subarray(i, Math.min(n, i + 8192)) as unknown as number[]);
  return s;
}

/** `%2F` and `%5C` (either case) unescaped, once, left to right (Envoy's unescapeSlashes, before normalize_path). */
function unescapeSlashes(path: string): string {
  return path.indexOf("%") < 0 ? path : path.replace(/%2f|%5c/gi, (e) => ((e.charCodeAt(2) | 0x20) === 0x66 ? "/" : "\\"));
}

/**
 * An origin-form request target (`/path?query`) as Cilium's Envoy judges and forwards it, in its order: escaped
 * slashes (`%2F`, `%5C`, either case) unescaped, and then the answer is a redirect to the normalized result
 * (UNESCAPE_AND_REDIRECT); the path canonicalized (canonicalPath: dot segments, `\`, unreserved escapes); adjacent
 * slashes merged (merge_slashes); the query as sent. A fragment (`#`) is refused whatever `normalize` says (Envoy's
 * http_reject_path_with_fragment), and so is a NUL in the path. `target` itself (no allocation) when it is already
 * normal, when `normalize` is false (--http-normalize-path=false: judged and forwarded as sent), or when it is not
 * origin-form (`*`, absolute-form: left as the proxy takes them).
 */
export function normalizeTarget(target: string, normalize = true): string | EscapedSlash | InvalidPath {
  if (!normalize || target.charCodeAt(0) !== SLASH) return target.indexOf("#") < 0 ? target : FRAGMENT;
  let end = target.indexOf("?");
  if (end < 0) end = target.length;
  // The common case in one scan: a normal path (no `#` either) and a query without one.
  if (alreadyNormal(target, end)) return end === target.length || target.indexOf("#", end) < 0 ? target : FRAGMENT;
  if (target.indexOf("#") >= 0) return FRAGMENT;
  const path = target.slice(0, end);
  const unescaped = unescapeSlashes(path);
  const canonical = canonicalPath(unescaped);
  if (typeof canonical !== "string") return canonical;
  const normalized = (canonical.indexOf("//") >= 0 ? canonical.replace(/\/{2,}/g, "/") : canonical) + target.slice(end);
  if (unescaped !== path) return { location: normalized };
  return normalized === target ? target : normalized;
}

/**
 * An HTTP/2 request's raw header list with its `:path` normalized (normalizeTarget): `raw` itself when nothing
 * changes, a copy with the new `:path` otherwise, or the answer an escaped slash or an invalid path gets.
 */
export function normalizeH2Path(raw: string[], normalize = true): string[] | EscapedSlash | InvalidPath {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i] !== ":path") continue;
    const n = normalizeTarget(raw[i + 1]!, normalize);
    if (typeof n !== "string") return n;
    if (n === raw[i + 1]) return raw;
    const out = raw.slice();
    out[i + 1] = n;
    return out;
  }
  return raw;
}

/**
 * The HTTP/2 answer to a path the proxy does not forward: 307 to an escaped slash's unescaped path, 400 to an invalid
 * one. A gRPC call gets 400's status either way, trailers-only: INTERNAL, as from Envoy, which answers an escaped
 * slash in a gRPC call with 400 instead of its redirect ("gRPC clients do not support redirect").
 */
export function unforwardedPathH2Answer(grpc: boolean, e: EscapedSlash | InvalidPath): Record<string, string> {
  if (grpc) return grpcStatusHeaders(grpcStatusOfHttp(400), "location" in e ? "request path with an escaped slash" : e.invalid);
  return "location" in e ? { ":status": "307", location: e.location, "content-length": "0" } : { ":status": "400", "content-length": "0" };
}

/**
 * What an HTTP/2 request's header block becomes before it is judged, the same on both HTTP/2 paths (h2-proxy.ts,
 * h2-relay.ts): malformed (RFC 9113 §8.1–8.3: reset, never judged), answered here and never forwarded (`answered`
 * says which: an escaped slash's redirect, an invalid path's 400; `detail` for the log), or the header list to judge
 * and forward, its `:path` normalized unless `normalize` is false (--http-normalize-path=false).
 */
export type H2RequestAdmission =
  | { readonly malformed: string }
  | { readonly answered: "escapedSlash" | "invalidPath"; readonly detail: string; readonly answer: Record<string, string> }
  | { readonly raw: string[] };

export function admitH2Request(raw: string[], normalize = true): H2RequestAdmission {
  const fault = h2RequestFault(raw);
  if (fault !== undefined) return { malformed: fault };
  const normalized = normalizeH2Path(raw, normalize);
  if (Array.isArray(normalized)) return { raw: normalized };
  const answer = unforwardedPathH2Answer(isGrpc(requestFromH2Raw(raw)), normalized);
  if ("location" in normalized) return { answered: "escapedSlash", detail: `redirected to ${normalized.location}`, answer };
  return { answered: "invalidPath", detail: normalized.invalid, answer };
}
