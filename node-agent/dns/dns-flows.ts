// The DNS proxy's records as L7 flows (Hubble's DNS request and response), enriched as the datapath's flows are, for the observer's ring, API and metrics.
import { L7_DROP_REASON, type Flow, type FlowEndpoint } from "../../flowapi/flow.ts";
import { endpoint, observedAt, peerEndpoint, ruleDecision, type EnrichLookups } from "../observer/enrich.ts";
import type { DnsFlow } from "./proxy.ts";

const RCODES: Readonly<Record<string, number>> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };

/**
 * One proxied query as flows: the request from the pod to the server it asked (DROPPED when no DNS rule allowed it:
 * the proxy answered it itself), then, for an answered allowed query, the response from the server to the pod with
 * its rcode, addresses and the time it took. A query that got no answer has its request only.
 */
export function dnsFlows(f: DnsFlow, lookups: EnrichLookups): Flow[] {
  const pod = endpoint(f.source.identity, f.source.ip, f.source.port, lookups);
  const server = peerEndpoint(f.server.ip, f.server.port, lookups);
  const decidedBy = ruleDecision(f.ruleId, lookups);
  const qtypes = f.qtype ? [f.qtype] : [];
  // Hubble shows a query as the fully qualified name, with its root dot.
  const query = f.query.endsWith(".") ? f.query : `${f.query}.`;
  const denied = f.verdict === "denied";
  const base = (source: FlowEndpoint, destination: FlowEndpoint) => ({
    direction: "egress" as const,
    type: "l7" as const,
    source,
    destination,
    protocol: f.protocol === "tcp" ? "TCP" : "UDP",
    ...(decidedBy !== undefined ? { decidedBy } : {}),
    ...observedAt(lookups),
  });
  const request: Flow = {
    ...base(pod, server),
    time: new Date(f.time.getTime() - f.latencyMs).toISOString(),
    verdict: denied ? "DROPPED" : "FORWARDED",
    ...(denied ? { dropReason: L7_DROP_REASON } : {}),
    l7: { type: "REQUEST", dns: { query, qtypes, observationSource: "proxy" } },
  };
  if (f.verdict !== "allowed" || f.rcode === undefined) return [request];
  const response: Flow = {
    ...base(server, pod),
    time: f.time.toISOString(),
    verdict: "FORWARDED",
    l7: {
      type: "RESPONSE",
      latencyNs: Math.round(f.latencyMs * 1e6),
      dns: {
        query,
        qtypes,
        ips: f.addresses,
        ...(f.ttl !== undefined ? { ttl: f.ttl } : {}),
        ...(f.cnames?.length ? { cnames: f.cnames.map((n) => (n.endsWith(".") ? n : `${n}.`)) } : {}),
        rcode: RCODES[f.rcode] ?? 0,
        rrtypes: [...(f.cnames ?? []).map(() => "CNAME"), ...f.addresses.map((ip) => (ip.includes(":") ? "AAAA" : "A"))],
        observationSource: "proxy",
      },
    },
  };
  return [request, response];
}
