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
