// What of an HTTP request an L7 flow may carry off the node: Hubble's redaction (hubble-redact-*), with credentials held back by default.

/** The value Hubble shows in place of a redacted one. */
export const REDACTED = "HUBBLE_REDACTED";

/**
 * Headers that carry credentials: redacted whatever else is set, unless `headers.allow` names them with redaction on.
 * Cilium shows every header by default (redaction off); a flow read by anyone with access to the relay or the export
 * must not hand them a session, so here they stay on the node unless a user lets them out by name.
 */
export const CREDENTIAL_HEADERS: readonly string[] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];

export interface HttpRedaction {
  /** hubble-redact-enabled: the options below apply only when on. */
  readonly enabled: boolean;
  /** hubble-redact-http-urlquery: the URL's query (and fragment) removed. */
  readonly urlQuery: boolean;
  /** hubble-redact-http-userinfo: the password of a URL's user info replaced. */
  readonly userInfo: boolean;
  /**
   * hubble-redact-http-headers-allow / -deny (lowercase names; at most one of them non-empty): with `allow`, every
   * header it does not name is redacted; with `deny`, those it names (and the credential headers).
   */
  readonly headers: { readonly allow: readonly string[]; readonly deny: readonly string[] };
}

/** Membrane's default: redaction on, URL passwords and the credential headers redacted, everything else shown (Cilium's other defaults). */
export const DEFAULT_HTTP_REDACTION: HttpRedaction = { enabled: true, urlQuery: false, userInfo: true, headers: { allow: [], deny: [] } };

export interface FlowHeader {
  readonly key: string;
  readonly value: string;
}

/** Whether a header's value may leave the node as it is. */
function shown(name: string, r: HttpRedaction): boolean {
  const key = name.toLowerCase();
  if (r.enabled && r.headers.allow.length > 0) return r.headers.allow.includes(key);
  if (CREDENTIAL_HEADERS.includes(key)) return false;
  return !(r.enabled && r.headers.deny.includes(key));
}

/** A request's headers as Hubble's `http.headers`: sorted by name (repeated ones in order), the redacted values replaced. */
export function redactHeaders(headers: readonly { readonly name: string; readonly value: string }[], r: HttpRedaction): FlowHeader[] {
  return headers
    .map((h, i) => ({ h, i }))
    .sort((a, b) => (a.h.name < b.h.name ? -1 : a.h.name > b.h.name ? 1 : a.i - b.i))
    .map(({ h }) => ({ key: h.name, value: shown(h.name, r) ? h.value : REDACTED }));
}

/**
 * A flow's URL as Hubble writes it: with urlQuery, no query or fragment; a user-info password is replaced (with
 * userInfo, and always when redaction is off: a password is a credential).
 */
export function redactUrl(url: string, r: HttpRedaction): string {
  let out = url;
  if (r.enabled && r.urlQuery) out = out.replace(/[?#].*$/s, "");
  if (!r.enabled || r.userInfo) out = out.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#@]*@/i, `$1:${REDACTED}@`);
  return out;
}

export type RedactionResult = { readonly ok: true; readonly value: HttpRedaction } | { readonly ok: false; readonly error: string };

/** Header names as given to a flag or a chart value: comma-separated, trimmed, lowercased; a bad one names the flag. */
export function parseHeaderNames(flag: string, value: string): { readonly ok: true; readonly value: string[] } | { readonly ok: false; readonly error: string } {
  const names = value
    .split(",")
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== "");
  // RFC 9110 §5.1: a field name is a token.
  const bad = names.find((n) => !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(n));
  if (bad !== undefined) return { ok: false, error: `${flag}: ${JSON.stringify(bad)} is not a header name` };
  return { ok: true, value: names };
}

/** The settings, checked as Cilium checks them: allow and deny are not given together. */
export function httpRedaction(r: HttpRedaction): RedactionResult {
  if (r.headers.allow.length > 0 && r.headers.deny.length > 0)
    return { ok: false, error: "--hubble-redact-http-headers-deny: not together with --hubble-redact-http-headers-allow (one list decides which headers are shown)" };
  return { ok: true, value: r };
}
