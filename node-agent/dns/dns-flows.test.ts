// The DNS proxy's records as L7 flows (request, response; a refused query DROPPED), and Hubble's dns metrics counted from them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { HubbleMetrics } from "../observer/hubble-metrics.ts";
import { parseHubbleMetrics } from "../observer/hubble-context.ts";
import type { EnrichLookups } from "../observer/enrich.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import { dnsFlows } from "./dns-flows.ts";
import type { DnsFlow } from "./proxy.ts";

const lookups: EnrichLookups = {
  node: "node-a",
  identityLabels: (id: number) => (id === 256 ? ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"] : id === 300 ? ["k8s:k8s-app=kube-dns"] : undefined),
  endpointByIp: (ip: string) => (ip === "10.0.0.1" ? { namespace: "default", pod: "client-1" } : ip === "10.0.1.5" ? { namespace: "kube-system", pod: "dnsmasq-0" } : undefined),
  ruleOrigin: (id) => (id === 7 ? { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "dns-only", ruleIndex: 0, path: "spec.egress[0]" } : undefined),
  identityByIp: (ip) => (ip === "10.0.1.5" ? 300 : undefined),
  wallClock: () => new Date(),
};

const flow = (over: Partial<DnsFlow>): DnsFlow => ({
  time: new Date(1_700_000_000_123),
  protocol: "udp",
  source: { ip: "10.0.0.1", port: 40000, identity: 256 },
  server: { ip: "10.0.1.5", port: 53 },
  query: "api.allowed.test.",
  qtype: "A",
  verdict: "allowed",
  ruleId: 7,
  rcode: "NOERROR",
  addresses: ["10.205.0.10"],
  latencyMs: 1.5,
  ...over,
});

test("an answered query is a request and a response (server to pod, rcode, addresses, latency), both naming the policy rule; a denied one a DROPPED request", () => {
  const [req, res] = dnsFlows(flow({}), lookups);
  assert.equal(req?.type, "l7");
  assert.equal(req?.verdict, "FORWARDED");
  assert.deepEqual(req?.l7, { type: "REQUEST", dns: { query: "api.allowed.test.", qtypes: ["A"], observationSource: "proxy" } });
  assert.deepEqual([req?.source.pod, req?.source.identity, req?.destination.pod, req?.destination.identity], ["client-1", 256, "dnsmasq-0", 300]);
  assert.deepEqual(req?.destination.labels, ["k8s:k8s-app=kube-dns"]);
  assert.equal(req?.time, new Date(1_700_000_000_123 - 1.5).toISOString(), "the request at its arrival");
  assert.deepEqual(req?.decidedBy, { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "dns-only", rule: "spec.egress[0]" });
  assert.deepEqual([res?.source.ip, res?.source.port, res?.destination.ip, res?.destination.port], ["10.0.1.5", 53, "10.0.0.1", 40000]);
  assert.deepEqual(res?.l7, { type: "RESPONSE", latencyNs: 1_500_000, dns: { query: "api.allowed.test.", qtypes: ["A"], ips: ["10.205.0.10"], rcode: 0, rrtypes: ["A"], observationSource: "proxy" } });
  const h = toHubbleFlow(res!);
  assert.deepEqual(h.l4, { UDP: { source_port: 53, destination_port: 40000 } });
  assert.deepEqual(h.is_reply, { value: true });
  assert.deepEqual(h.l7, { type: "RESPONSE", latency_ns: 1_500_000, dns: { query: "api.allowed.test.", ips: ["10.205.0.10"], observation_source: "proxy", rcode: 0, qtypes: ["A"], rrtypes: ["A"] } });
  const denied = dnsFlows(flow({ verdict: "denied", rcode: "REFUSED", addresses: [], query: "evil.denied.test.", protocol: "tcp" }), lookups);
  assert.equal(denied.length, 1);
  assert.equal(denied[0]?.verdict, "DROPPED");
  assert.equal(denied[0]?.protocol, "TCP");
  const dh = toHubbleFlow(denied[0]!);
  assert.deepEqual([dh.verdict, dh.drop_reason_desc, dh.egress_denied_by?.[0]?.name], ["DROPPED", "POLICY_DENIED", "dns-only"]);
  assert.equal(dnsFlows(flow({ verdict: "error", rcode: undefined, error: "timeout" }), lookups).length, 1, "no answer: the request only");
  const chained = dnsFlows(flow({ query: "www.allowed.test", ttl: 30, cnames: ["edge.cdn.test"], addresses: ["10.205.0.11"] }), lookups)[1]!;
  assert.deepEqual(chained.l7?.dns, { query: "www.allowed.test.", qtypes: ["A"], ips: ["10.205.0.11"], ttl: 30, cnames: ["edge.cdn.test."], rcode: 0, rrtypes: ["CNAME", "A"], observationSource: "proxy" });
  assert.equal(toHubbleFlow(chained).Summary, 'DNS Answer "10.205.0.11" CNAMEs: "edge.cdn.test." TTL: 30 (Proxy www.allowed.test. A)');
  assert.deepEqual(dnsFlows(flow({ query: "api.allowed.test" }), lookups).map((f) => f.l7?.dns?.query), ["api.allowed.test.", "api.allowed.test."], "fully qualified, as Hubble shows it");
});

test("Hubble's dns metrics count the proxy's queries by verdict and its responses by rcode; flows and policy verdicts count them as L7", async () => {
  const registry = new Registry();
  const c = parseHubbleMetrics("dns:query flow policy drop");
  assert.ok(c.ok);
  const h = new HubbleMetrics(registry, c.value);
  for (const f of [flow({}), flow({ verdict: "denied", rcode: "REFUSED", addresses: [], query: "evil.denied.test." }), flow({ rcode: "NXDOMAIN", addresses: [], query: "nope.allowed.test." })]) {
    for (const r of dnsFlows(f, lookups)) h.observe(r);
  }
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_dns_queries_total{rcode="",qtypes="A",ips_returned="0",query="api.allowed.test."} 1');
  has('hubble_dns_queries_total{rcode="Policy denied",qtypes="A",ips_returned="0",query="evil.denied.test."} 1');
  has('hubble_dns_responses_total{rcode="No Error",qtypes="A",ips_returned="1",query="api.allowed.test."} 1');
  has('hubble_dns_responses_total{rcode="Non-Existent Domain",qtypes="A",ips_returned="0",query="nope.allowed.test."} 1');
  has('hubble_dns_response_types_total{type="A",qtypes="A",query="api.allowed.test."} 1');
  has('hubble_flows_processed_total{protocol="DNS",type="L7",subtype="DNS",verdict="FORWARDED"} 4');
  has('hubble_flows_processed_total{protocol="DNS",type="L7",subtype="DNS",verdict="DROPPED"} 1');
  has('hubble_drop_total{reason="POLICY_DENIED",protocol="DNS"} 1');
  has('hubble_policy_verdicts_total{direction="egress",match="l7/dns",action="forwarded"} 4');
  has('hubble_policy_verdicts_total{direction="egress",match="l7/dns",action="dropped"} 1');
});
