// The DNS proxy's flows as Hubble's L7 records (a request, and the response of an answered query): what Hubble's dns metrics count.
import type { HubbleEndpoint, HubbleFlow } from "../../flowapi/hubble/types.ts";
import type { EnrichLookups } from "../observer/enrich.ts";
import type { DnsFlow } from "./proxy.ts";

const RCODES: Readonly<Record<string, number>> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };

/** Cilium's monitor message type of an L7 record (MessageTypeAccessLog). */
const ACCESS_LOG = 129;

/**
 * Hubble's records of one proxied query: the request (DROPPED when the DNS rules denied it, which
 * Hubble's metrics count as "Policy denied"), then, for an answered query, the response from the
 * server to the pod with its rcode and addresses. A query that got no answer has its request only.
 */
export function dnsHubbleRecords(f: DnsFlow, lookups: Pick<EnrichLookups, "node" | "identityLabels" | "endpointByIp">): HubbleFlow[] {
  const ms = f.time.getTime();
  const time = { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
  const pod: HubbleEndpoint = endpoint(f.source.ip, f.source.identity, lookups);
  const server: HubbleEndpoint = endpoint(f.server.ip, undefined, lookups);
  const ipVersion = f.source.ip.includes(":") ? "IPv6" : "IPv4";
  const ports = { source_port: f.source.port, destination_port: f.server.port };
  const l4 = f.protocol === "tcp" ? { TCP: ports } : { UDP: ports };
  const back = { source_port: f.server.port, destination_port: f.source.port };
  const base = { time, node_name: lookups.node, event_type: { type: ACCESS_LOG, sub_type: 0 }, traffic_direction: "EGRESS" as const, Type: "L7" as const };
  const qtypes = f.qtype ? [f.qtype] : [];
  const request: HubbleFlow = {
    ...base,
    verdict: f.verdict === "denied" ? "DROPPED" : "FORWARDED",
    IP: { source: f.source.ip, destination: f.server.ip, ipVersion },
    l4,
    source: pod,
    destination: server,
    is_reply: { value: false },
    l7: { type: "REQUEST", dns: { query: f.query, qtypes } },
  };
  if (f.verdict !== "allowed" || f.rcode === undefined) return [request];
  const response: HubbleFlow = {
    ...base,
    verdict: "FORWARDED",
    IP: { source: f.server.ip, destination: f.source.ip, ipVersion },
    l4: f.protocol === "tcp" ? { TCP: back } : { UDP: back },
    source: server,
    destination: pod,
    is_reply: { value: true },
    l7: {
      type: "RESPONSE",
      latency_ns: Math.round(f.latencyMs * 1e6),
      dns: { query: f.query, ips: f.addresses, rcode: RCODES[f.rcode] ?? 0, qtypes, rrtypes: f.addresses.map((ip) => (ip.includes(":") ? "AAAA" : "A")) },
    },
  };
  return [request, response];
}

function endpoint(ip: string, identity: number | undefined, lookups: Pick<EnrichLookups, "identityLabels" | "endpointByIp">): HubbleEndpoint {
  const ep = lookups.endpointByIp(ip);
  const labels = identity === undefined ? undefined : lookups.identityLabels(identity);
  return {
    ...(identity !== undefined ? { identity } : {}),
    ...(ep ? { namespace: ep.namespace, pod_name: ep.pod } : {}),
    ...(labels ? { labels } : {}),
  };
}
