// The DNS proxy's flows feed Hubble's dns metrics: queries by verdict (allowed, "Policy denied"), responses by rcode, response types.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { HubbleMetrics } from "../observer/hubble-metrics.ts";
import { parseHubbleMetrics } from "../observer/hubble-context.ts";
import { dnsHubbleRecords } from "./dns-hubble.ts";
import type { DnsFlow } from "./proxy.ts";

const lookups = {
  node: "node-a",
  identityLabels: (id: number) => (id === 256 ? ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"] : undefined),
  endpointByIp: (ip: string) => (ip === "10.0.0.1" ? { namespace: "default", pod: "client-1" } : ip === "10.0.1.5" ? { namespace: "kube-system", pod: "dnsmasq-0" } : undefined),
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

test("an answered query is a request and a response (server to pod, rcode, addresses); a denied one a DROPPED request", () => {
  const [req, res] = dnsHubbleRecords(flow({}), lookups);
  assert.equal(req?.verdict, "FORWARDED");
  assert.deepEqual(req?.l7, { type: "REQUEST", dns: { query: "api.allowed.test.", qtypes: ["A"] } });
  assert.deepEqual(req?.source, { identity: 256, namespace: "default", pod_name: "client-1", labels: ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"] });
  assert.deepEqual(req?.time, { seconds: 1_700_000_000, nanos: 123_000_000 });
  assert.deepEqual(res?.IP, { source: "10.0.1.5", destination: "10.0.0.1", ipVersion: "IPv4" });
  assert.deepEqual(res?.l4, { UDP: { source_port: 53, destination_port: 40000 } });
  assert.deepEqual(res?.l7, { type: "RESPONSE", latency_ns: 1_500_000, dns: { query: "api.allowed.test.", ips: ["10.205.0.10"], rcode: 0, qtypes: ["A"], rrtypes: ["A"] } });
  const denied = dnsHubbleRecords(flow({ verdict: "denied", rcode: "REFUSED", addresses: [], query: "evil.denied.test.", protocol: "tcp" }), lookups);
  assert.equal(denied.length, 1);
  assert.equal(denied[0]?.verdict, "DROPPED");
  assert.ok(denied[0]?.l4?.TCP);
  assert.equal(dnsHubbleRecords(flow({ verdict: "error", rcode: undefined, error: "timeout" }), lookups).length, 1, "no answer: the request only");
});

test("Hubble's dns metrics count the proxy's queries by verdict and its responses by rcode", async () => {
  const registry = new Registry();
  const c = parseHubbleMetrics("dns:query");
  assert.ok(c.ok);
  const h = new HubbleMetrics(registry, c.value);
  for (const f of [flow({}), flow({ verdict: "denied", rcode: "REFUSED", addresses: [], query: "evil.denied.test." }), flow({ rcode: "NXDOMAIN", addresses: [], query: "nope.allowed.test." })]) {
    for (const r of dnsHubbleRecords(f, lookups)) h.observeL7(r);
  }
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_dns_queries_total{rcode="",qtypes="A",ips_returned="0",query="api.allowed.test."} 1');
  has('hubble_dns_queries_total{rcode="Policy denied",qtypes="A",ips_returned="0",query="evil.denied.test."} 1');
  has('hubble_dns_responses_total{rcode="No Error",qtypes="A",ips_returned="1",query="api.allowed.test."} 1');
  has('hubble_dns_responses_total{rcode="Non-Existent Domain",qtypes="A",ips_returned="0",query="nope.allowed.test."} 1');
  has('hubble_dns_response_types_total{type="A",qtypes="A",query="api.allowed.test."} 1');
});
