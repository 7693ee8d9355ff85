// One proxied request as the proxy's flow record (HttpFlow), the same for its HTTP/1.1 and HTTP/2 sides.
import { HTTP_DENIED } from "../../core/l7/http-decision.ts";
import type { HttpHeader, HttpRequest } from "../../core/l7/http-request.ts";
import { traceIdOf } from "../../core/l7/trace-context.ts";
import type { OriginalDestination } from "../bpf/redirect.ts";
import type { HttpFlow } from "./http-proxy.ts";

/** A request as it arrived: its client, the datapath's record of where it was going, the proxy port and when its head came. */
export interface ArrivedRequest {
  readonly source: { readonly ip: string; readonly port: number };
  readonly orig: OriginalDestination;
  readonly proxyPort: number;
  /** The port's rules are the destination's ingress rules. */
  readonly ingress: boolean;
  /** "HTTP/1.1", "HTTP/2", … */
  readonly protocol: string;
  readonly request: HttpRequest;
  /** process.hrtime.bigint() when the head arrived: the flow's latency runs from there to now. */
  readonly started: bigint;
  /** The client's TLS was terminated by the proxy. */
  readonly tls?: HttpFlow["tls"];
}

let lastMs = -1;
let lastTime = "";

/** Now as a flow's time (ISO 8601 to the millisecond): formatted once per millisecond, a busy proxy writes many flows in each. */
function flowTime(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastTime = new Date(ms).toISOString();
  }
  return lastTime;
}

export function requestFlow(a: ArrivedRequest, verdict: HttpFlow["verdict"], status: number, extra: Partial<HttpFlow> = {}): HttpFlow {
  const traceId = traceIdOf(a.request.headers);
  return {
    time: flowTime(),
    source: { ip: a.source.ip, port: a.source.port, identity: a.orig.subject },
    destination: { ip: a.orig.ip, port: a.orig.port },
    proxyPort: a.proxyPort,
    ruleId: a.orig.ruleId,
    ingress: a.ingress,
    protocol: a.protocol,
    method: a.request.method,
    path: a.request.path,
    host: a.request.host,
    verdict,
    status,
    latencyMs: Number(process.hrtime.bigint() - a.started) / 1e6,
    ...(a.tls ? { tls: a.tls } : {}),
    ...(traceId !== undefined ? { traceId } : {}),
    headers: a.request.headers,
    ...extra,
  };
}

/** A flow for the proxy's own log: never the request's or the response's headers (credentials); the agent redacts them for flows. */
export function withoutHeaders(f: HttpFlow): Omit<HttpFlow, "headers" | "responseHeaders"> {
  const { headers: _headers, responseHeaders: _responseHeaders, ...rest } = f;
  return rest;
}

/**
 * Why a flow says the proxy refused a request itself, before or without a rule's say (HttpFlow.reason): a few fixed
 * texts, since the agent counts drops by reason (the detail, which may quote what the client sent, is in the proxy's log).
 */
export const REFUSAL_REASON = {
  malformedH2: "malformed HTTP/2 request",
  trailers: "malformed HTTP/2 trailers",
  malformedHttp1: "malformed HTTP/1.1 request",
  escapedSlash: "escaped slash in the path: redirected to its unescaped path",
  invalidPath: "invalid request path (a fragment, a NUL or a dot segment with parameters): 400",
  rapidReset: "rapid reset: streams cancelled before their answer past the connection's budget (CVE-2023-44487)",
} as const;

/** The headers of the proxy's own 403 (HTTP/1.1 and HTTP/2 alike), as its flow records them. */
export const DENIED_HEADERS: readonly HttpHeader[] = [
  { name: "content-type", value: "text/plain" },
  { name: "content-length", value: String(Buffer.byteLength(HTTP_DENIED.body)) },
];

/** Node's flat raw header list as name/value pairs, names lowercased (pseudo-headers too). */
export function pairs(raw: readonly string[]): HttpHeader[] {
  const out: HttpHeader[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push({ name: raw[i]!.toLowerCase(), value: raw[i + 1]! });
  return out;
}
