// The DNS proxy's metrics from its flow records: queries by verdict and rcode, latency in seconds.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { DnsProxyMetrics } from "./dns-metrics.ts";
import type { DnsFlow } from "./proxy.ts";

const flow = (verdict: DnsFlow["verdict"], rcode: string | undefined, latencyMs: number): DnsFlow => ({
  time: new Date(),
  protocol: "udp",
  source: { ip: "10.244.1.5", port: 40000, identity: 1000 },
  server: { ip: "10.244.1.2", port: 53 },
  query: "api.outside.test.",
  qtype: "A",
  verdict,
  ruleId: 7,
  ...(rcode !== undefined ? { rcode } : {}),
  addresses: [],
  latencyMs,
});

test("queries are counted by verdict and rcode, and their latency observed in seconds", async () => {
  const registry = new Registry();
  const m = new DnsProxyMetrics(registry);
  m.observe(flow("allowed", "NOERROR", 2));
  m.observe(flow("allowed", "NOERROR", 3));
  m.observe(flow("denied", "REFUSED", 0.05));
  m.observe(flow("error", undefined, 2000));
  const text = await registry.metrics();
  assert.match(text, /^membrane_dns_proxy_queries_total\{verdict="allowed",rcode="NOERROR"\} 2$/m);
  assert.match(text, /^membrane_dns_proxy_queries_total\{verdict="denied",rcode="REFUSED"\} 1$/m);
  assert.match(text, /^membrane_dns_proxy_queries_total\{verdict="error",rcode=""\} 1$/m);
  assert.match(text, /^membrane_dns_proxy_latency_seconds_bucket\{le="0.0001",verdict="denied"\} 1$/m, "50 µs is in the first bucket");
  assert.match(text, /^membrane_dns_proxy_latency_seconds_bucket\{le="0.0025",verdict="allowed"\} 1$/m);
  assert.match(text, /^membrane_dns_proxy_latency_seconds_bucket\{le="0.005",verdict="allowed"\} 2$/m);
  assert.match(text, /^membrane_dns_proxy_latency_seconds_sum\{verdict="allowed"\} 0.005$/m);
  assert.match(text, /^membrane_dns_proxy_latency_seconds_count\{verdict="error"\} 1$/m);
});
