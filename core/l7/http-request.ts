// One HTTP request as the L7 rules see it, the same for HTTP/1.1 and HTTP/2 (gRPC included).

/** A header as received: the name lowercased, the value as sent. Repeated headers stay separate entries, in order. */
export interface HttpHeader {
  readonly name: string;
  readonly value: string;
}

export interface HttpRequest {
  /** As sent, case kept (methods are case-sensitive). */
  readonly method: string;
  /** The request target as sent: path and query (HTTP/2's `:path`). */
  readonly path: string;
  /** The Host header (HTTP/2's `:authority`), port included when the client sent one; "" when absent. */
  readonly host: string;
  readonly headers: readonly HttpHeader[];
}

/** The values of a header (case-insensitive name), joined with "," as one field value (RFC 9110 §5.3), or undefined when absent. */
export function headerValue(req: HttpRequest, name: string): string | undefined {
  const want = name.toLowerCase();
  let out: string | undefined;
  for (const h of req.headers) if (h.name === want) out = out === undefined ? h.value : `${out},${h.value}`;
  return out;
}

/** A request from Node's raw header list (name, value, name, value, …). */
export function requestFromRaw(method: string, path: string, rawHeaders: readonly string[]): HttpRequest {
  const headers: HttpHeader[] = [];
  let host = "";
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    if (name === "host" || name === ":authority") host = value;
    headers.push({ name, value });
  }
  return { method, path, host, headers };
}

/**
 * A request from an HTTP/2 header block (Node's raw list): method, path and host from the
 * pseudo-headers `:method`, `:path` and `:authority` (a Host header when `:authority` is absent, as
 * RFC 9113 §8.3.1 allows); the pseudo-headers are not headers to the rules.
 */
export function requestFromH2Raw(rawHeaders: readonly string[]): HttpRequest {
  const headers: HttpHeader[] = [];
  let method = "";
  let path = "";
  let authority: string | undefined;
  let host = "";
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    if (name === ":method") method = value;
    else if (name === ":path") path = value;
    else if (name === ":authority") authority = value;
    else if (!name.startsWith(":")) {
      if (name === "host") host = value;
      headers.push({ name, value });
    }
  }
  return { method, path, host: authority ?? host, headers };
}

/** Request pseudo-headers (RFC 9113 §8.3.1); `:protocol` (RFC 8441) is not offered, as h2-proxy.ts's server does not offer it. */
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path"]);
/** Fields that make an HTTP/2 message malformed (RFC 9113 §8.2.2), as nghttp2 (h2-proxy.ts's server) refuses them. */
const H2_CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);
/** A field name as RFC 9110's token, lowercase (RFC 9113 §8.2.1), optionally a pseudo-header's. */
const FIELD_NAME = /^:?[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const BAD_VALUE = /[\0\r\n]/;

/**
 * Why an HTTP/2 request's header list (Node's raw list), or with `trailers` its trailer list, is malformed (RFC 9113
 * §8.1-8.3), or undefined when it is not. A relay that judges one reading of a block must not pass on a block another
 * reading would take otherwise: a `:path` twice (the rules see one, the destination may act on the other), a Host that
 * names another authority than `:authority`, pseudo-headers among the fields or in trailers.
 */
export function h2RequestFault(raw: readonly string[], trailers = false): string | undefined {
  const pseudo = new Map<string, string>();
  let fields = false;
  let host: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (!FIELD_NAME.test(name)) return `invalid field name ${JSON.stringify(name)}`;
    if (BAD_VALUE.test(value)) return `invalid value of ${name}`;
    if (name.startsWith(":")) {
      if (trailers) return `pseudo-header ${name} in trailers`;
      if (fields) return `pseudo-header ${name} after a field`;
      if (!REQUEST_PSEUDO.has(name)) return `pseudo-header ${name} in a request`;
      if (pseudo.has(name)) return `${name} twice`;
      pseudo.set(name, value);
      continue;
    }
    fields = true;
    if (H2_CONNECTION_SPECIFIC.has(name) || (name === "te" && value.toLowerCase() !== "trailers"))
      return `connection-specific field ${name}`;
    if (name === "host") {
      if (host !== undefined) return "host twice";
      host = value;
    }
  }
  if (trailers) return undefined;
  const method = pseudo.get(":method");
  const authority = pseudo.get(":authority");
  if (method === undefined) return "no :method";
  if (method === "CONNECT") {
    if (authority === undefined || pseudo.has(":scheme") || pseudo.has(":path")) return "malformed CONNECT";
  } else {
    const path = pseudo.get(":path");
    if (!pseudo.has(":scheme") || path === undefined) return "no :scheme or :path";
    // Origin-form, or "*" for OPTIONS (RFC 9113 §8.3.1): no absolute-form a destination might route by.
    if (!path.startsWith("/") && !(path === "*" && method === "OPTIONS")) return "a :path not in origin-form";
  }
  if (host !== undefined && authority !== undefined && host.toLowerCase() !== authority.toLowerCase())
    return "host and :authority differ";
  return undefined;
}
