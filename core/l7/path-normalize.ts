// The request path the L7 rules judge and the destination gets, as Cilium's Envoy makes it (normalize_path, merge_slashes, path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT): one reading for both, so `/public/../admin` is never judged as /public/… and served as /admin.

/** A path holding an escaped slash (`%2F`, `%5C`): answered with a redirect to `location` (unescaped, normalized; the query kept), never judged nor forwarded. */
export interface EscapedSlash {
  readonly location: string;
}

import { GRPC_INVALID_ARGUMENT, grpcStatusHeaders, isGrpc } from "./grpc.ts";
import { h2RequestFault, requestFromH2Raw } from "./http-request.ts";

const PERCENT = 0x25;
const SLASH = 0x2f;
const DOT = 0x2e;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/** RFC 3986 §2.3's unreserved characters: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function unreserved(c: number): boolean {
  const l = c | 0x20;
  return (l >= 0x61 && l <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === DOT || c === 0x5f || c === 0x7e;
}

/** Whether the path part (`target` up to `end`) is already what normalization would make it: no `%`, no `//`, no `.` or `..` segment. */
function alreadyNormal(target: string, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const c = target.charCodeAt(i);
    if (c === PERCENT) return false;
    if (c !== SLASH) continue;
    const n1 = i + 1 < end ? target.charCodeAt(i + 1) : -1;
    if (n1 === SLASH) return false;
    if (n1 !== DOT) continue;
    const n2 = i + 2 < end ? target.charCodeAt(i + 2) : -1;
    if (n2 === -1 || n2 === SLASH) return false;
    if (n2 === DOT) {
      const n3 = i + 3 < end ? target.charCodeAt(i + 3) : -1;
      if (n3 === -1 || n3 === SLASH) return false;
    }
  }
  return true;
}

/** RFC 3986 §5.2.4 remove_dot_segments on an absolute path. */
function removeDotSegments(path: string): string {
  const segments = path.split("/");
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === "." || s === "..") {
      if (s === "..") out.pop();
      // A path ending in a dot segment keeps its trailing slash (`/a/b/..` is `/a/`).
      if (last) out.push("");
    } else out.push(s);
  }
  return `/${out.join("/")}`;
}

/**
 * An origin-form request target (`/path?query`) normalized: percent-encoded unreserved characters decoded (RFC 3986
 * §6.2.2.2, so `%2e%2e` is a dot segment), dot segments removed (§5.2.4), adjacent slashes merged; the query as sent.
 * Other escapes and backslashes stay as sent (Envoy's normalize_path does not make `\` a separator). `target` itself
 * (no allocation) when it is already normal or not origin-form (`*`, absolute-form: left as the proxy takes them).
 * An escaped slash (`%2F`, `%5C`, either case) is unescaped and the result is a redirect, as Envoy's
 * UNESCAPE_AND_REDIRECT answers it.
 */
export function normalizeTarget(target: string): string | EscapedSlash {
  if (target.charCodeAt(0) !== SLASH) return target;
  let end = target.indexOf("?");
  if (end < 0) end = target.length;
  if (alreadyNormal(target, end)) return target;
  let decoded = "";
  let from = 0;
  let escapedSlash = false;
  for (let i = 0; i + 2 < end; i++) {
    if (target.charCodeAt(i) !== PERCENT) continue;
    const hi = hexValue(target.charCodeAt(i + 1));
    const lo = hexValue(target.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) continue;
    const c = hi * 16 + lo;
    const slash = c === SLASH || c === 0x5c;
    if (!slash && !unreserved(c)) continue;
    if (slash) escapedSlash = true;
    decoded += target.slice(from, i) + String.fromCharCode(c);
    from = i + 3;
    i += 2;
  }
  decoded += target.slice(from, end);
  const path = removeDotSegments(decoded).replace(/\/{2,}/g, "/");
  const normalized = path + target.slice(end);
  if (escapedSlash) return { location: normalized };
  return normalized === target ? target : normalized;
}

/**
 * An HTTP/2 request's raw header list with its `:path` normalized (normalizeTarget): `raw` itself when nothing
 * changes, a copy with the new `:path` otherwise, or the redirect an escaped slash gets.
 */
export function normalizeH2Path(raw: string[]): string[] | EscapedSlash {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i] !== ":path") continue;
    const n = normalizeTarget(raw[i + 1]!);
    if (typeof n !== "string") return n;
    if (n === raw[i + 1]) return raw;
    const out = raw.slice();
    out[i + 1] = n;
    return out;
  }
  return raw;
}

/**
 * The HTTP/2 answer to an escaped slash: 307 to the unescaped path; a gRPC call (no redirects in gRPC) ends with
 * INVALID_ARGUMENT, trailers-only (Envoy refuses it too; its code is INTERNAL, a client's retry would not help either).
 */
export function escapedSlashH2Answer(grpc: boolean, e: EscapedSlash): Record<string, string> {
  if (grpc) return grpcStatusHeaders(GRPC_INVALID_ARGUMENT, "request path with an escaped slash");
  return { ":status": "307", location: e.location, "content-length": "0" };
}

/**
 * What an HTTP/2 request's header block becomes before it is judged, the same on both HTTP/2 paths (h2-proxy.ts,
 * h2-relay.ts): malformed (RFC 9113 §8.1–8.3: reset, never judged), an escaped slash (answered here, never forwarded),
 * or the header list to judge and forward, its `:path` normalized.
 */
export type H2RequestAdmission =
  | { readonly malformed: string }
  | { readonly redirect: string; readonly answer: Record<string, string> }
  | { readonly raw: string[] };

export function admitH2Request(raw: string[]): H2RequestAdmission {
  const fault = h2RequestFault(raw);
  if (fault !== undefined) return { malformed: fault };
  const normalized = normalizeH2Path(raw);
  if (Array.isArray(normalized)) return { raw: normalized };
  return { redirect: normalized.location, answer: escapedSlashH2Answer(isGrpc(requestFromH2Raw(raw)), normalized) };
}
