// An allowed HTTP/2 stream sent on as an HTTP/1.1 request: for a client that chose h2 with the proxy when its destination speaks HTTP/1.1 (a TLS destination whose ALPN chose http/1.1, a plaintext one behind terminatingTLS).
import http from "node:http";
import type http2 from "node:http2";
import type { HttpHeader } from "../../core/l7/http-request.ts";
import { pairs } from "./request-flow.ts";

// RFC 9110 §7.6.1 / RFC 9113 §8.2.2: connection-specific fields are not carried between the two versions.
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "http2-settings", "host"]);

export interface Http1Request {
  readonly agent: http.Agent;
  readonly method: string;
  readonly path: string;
  /** The stream's :authority (HTTP/1.1's Host). */
  readonly authority: string;
  /** The request's fields after the rule's header actions (names lowercased). */
  readonly headers: readonly HttpHeader[];
  readonly hasBody: boolean;
}

export interface Http1Outcome {
  /** The destination answered with `status` (headers sent to the client). */
  readonly answered: (status: number, headers: HttpHeader[]) => void;
  /** The client has the whole response. */
  readonly finished: () => void;
  /** The request failed before (or after) the destination answered. */
  readonly failed: (err: Error) => void;
}

/** Sends the stream's request over the agent's HTTP/1.1 connections and streams the answer back to the client as HTTP/2. */
export function forwardAsHttp1(stream: http2.ServerHttp2Stream, r: Http1Request, out: Http1Outcome): void {
  const headers: string[] = ["host", r.authority];
  for (const h of r.headers) if (!h.name.startsWith(":") && !CONNECTION_SPECIFIC.has(h.name)) headers.push(h.name, h.value);
  const upstream = http.request({ agent: r.agent, method: r.method, path: r.path, headers, setHost: false });
  let complete = false;
  upstream.on("error", out.failed);
  upstream.on("response", (res) => {
    if (stream.destroyed || stream.closed) return void upstream.destroy();
    const status = res.statusCode ?? 502;
    const answer: http2.OutgoingHttpHeaders = { ":status": status };
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
      const name = res.rawHeaders[i]!.toLowerCase();
      if (CONNECTION_SPECIFIC.has(name)) continue;
      const prev = answer[name];
      answer[name] = prev === undefined ? res.rawHeaders[i + 1]! : [...(Array.isArray(prev) ? prev : [String(prev)]), res.rawHeaders[i + 1]!];
    }
    stream.respond(answer, { waitForTrailers: true });
    stream.on("wantTrailers", () => {
      const trailers: http2.OutgoingHttpHeaders = {};
      for (let i = 0; i + 1 < res.rawTrailers.length; i += 2) trailers[res.rawTrailers[i]!.toLowerCase()] = res.rawTrailers[i + 1]!;
      stream.sendTrailers(trailers);
    });
    out.answered(status, pairs(res.rawHeaders));
    res.once("end", () => (complete = true));
    res.pipe(stream);
    stream.once("finish", out.finished);
    res.on("error", (err) => out.failed(err));
  });
  // The client cancelling the stream ends the upstream request too.
  stream.on("close", () => {
    if (!complete) upstream.destroy();
  });
  if (r.hasBody) stream.pipe(upstream);
  else upstream.end();
}
