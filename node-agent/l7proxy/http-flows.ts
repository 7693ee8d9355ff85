// The L7 proxy's records of HTTP requests as L7 flows (Hubble's HTTP request and response), enriched as the datapath's flows are.
import { L7_DROP_REASON, type Flow, type FlowEndpoint } from "../../flowapi/flow.ts";
import { endpoint, observedAt, peerEndpoint, ruleDecision, type EnrichLookups } from "../observer/enrich.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { redactHeaders, redactUrl, type HttpRedaction } from "../../core/l7/redaction.ts";

/** The URL as Hubble shows it: the request's Host (else the original destination) and its path. */
function urlOf(f: HttpFlow): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(f.path)) return f.path; // absolute-form request target
  const host = f.host !== "" ? f.host : f.destination.ip.includes(":") ? `[${f.destination.ip}]:${f.destination.port}` : `${f.destination.ip}:${f.destination.port}`;
  // A request read from TLS the proxy terminated was an https one for the client.
  return `${f.tls ? "https" : "http"}://${host}${f.path}`;
}

/**
 * One proxied request as two flows: the request from the client to the destination (DROPPED when no HTTP rule allowed
 * it), and the response the client got (the destination's, or the proxy's own 403 / 503 / 504) with the time it took.
 * Both name the deciding policy rule. A 503/504 the proxy made because the destination failed is Hubble's ERROR on the
 * response (the request stays FORWARDED: the policy allowed it and the proxy sent it on); a refusal stays DROPPED.
 * Both carry the request's headers (Hubble's `http.headers`, as Cilium's response records do) and its URL; the response
 * flow adds the response's headers after them (the destination's, or the proxy's own 403's). Everything is redacted as
 * `redaction` says (Set-Cookie among the credentials): what leaves the node through the Observer API, the relay and the export.
 * A request the proxy refused without a rule's say (malformed, an escaped slash, a rapid reset: the record's `reason`)
 * is DROPPED with that reason, or, allowed and forwarded before, its response an ERROR with it; a stream reset without
 * an answer (status 0) has no response flow unless it is that ERROR.
 */
export function httpFlows(f: HttpFlow, lookups: EnrichLookups, redaction: HttpRedaction): Flow[] {
  const client = endpoint(f.source.identity, f.source.ip, f.source.port, lookups);
  const server = peerEndpoint(f.destination.ip, f.destination.port, lookups);
  // The rule whose HTTP rule let the request through; for a refused one, the rule of the entry that sent it here.
  const decidedBy = ruleDecision(f.rule?.ruleId ?? f.ruleId, lookups);
  const denied = f.verdict === "denied";
  const reason = f.protocol !== "TLS" ? f.reason : undefined;
  const headers = redactHeaders(f.headers ?? [], redaction);
  const http = { method: f.method, url: redactUrl(urlOf(f), redaction), protocol: f.protocol, ...(headers.length ? { headers } : {}) };
  // The request's headers, then the response's (each sorted by name), so an http_header filter on a request header still selects its response.
  const both = [...headers, ...redactHeaders(f.responseHeaders ?? [], redaction)];
  const responseHeaders = both.length ? { headers: both } : {};
  const base = (source: FlowEndpoint, destination: FlowEndpoint) => ({
    direction: f.ingress ? ("ingress" as const) : ("egress" as const),
    type: "l7" as const,
    source,
    destination,
    protocol: "TCP",
    ...(decidedBy !== undefined ? { decidedBy } : {}),
    ...(f.traceId !== undefined ? { traceId: f.traceId } : {}),
    ...observedAt(lookups),
  });
  const end = Date.parse(f.time);
  // A serverNames-only port: one record of the connection, passed or refused by its SNI (no HTTP request was read).
  if (f.protocol === "TLS")
    return [
      {
        ...base(client, server),
        time: f.time,
        verdict: denied ? "DROPPED" : "FORWARDED",
        ...(denied ? { dropReason: L7_DROP_REASON } : {}),
        l7: { type: "REQUEST", tls: { ...(f.tls?.serverName !== undefined ? { serverName: f.tls.serverName } : {}), ...(f.reason !== undefined ? { reason: f.reason } : {}) } },
      },
    ];
  const request: Flow = {
    ...base(client, server),
    time: new Date(end - f.latencyMs).toISOString(),
    verdict: denied ? "DROPPED" : "FORWARDED",
    ...(denied ? { dropReason: reason ?? L7_DROP_REASON } : {}),
    l7: { type: "REQUEST", http },
  };
  if (denied && f.status === 0) return [request];
  return [
    request,
    {
      ...base(server, client),
      time: f.time,
      verdict: f.verdict === "error" ? "ERROR" : "FORWARDED",
      ...(f.verdict === "error" && reason !== undefined ? { dropReason: reason } : {}),
      l7: { type: "RESPONSE", latencyNs: Math.round(f.latencyMs * 1e6), http: { ...http, ...responseHeaders, code: f.status } },
    },
  ];
}
