// Hubble's metric names and labels: counted from flows and from L7 records of Hubble's shape, with context options, and the names and label sets checked against Cilium's own handlers.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Registry } from "prom-client";
import { HubbleMetrics } from "./hubble-metrics.ts";
import { parseHubbleMetrics } from "./hubble-context.ts";
import { parseDynamicMetricsConfig } from "./hubble-metrics-config.ts";
import { parseAgentFlags } from "../flags.ts";
import { AgentMetrics } from "../metrics.ts";
import { NodeAgent, type AgentDatapath } from "../agent.ts";
import { pino } from "pino";
import type { HubbleFlow, HubbleLayer7 } from "../../flowapi/hubble/types.ts";
import { hubbleProtoDir } from "../../flowapi/hubble/proto.ts";
import { dropFlow, flow } from "../../flowapi/testing/flows.ts";

/** Cilium's pkg/hubble/metrics/<name>/handler.go of the pinned module (beside api/v1 in the module cache). */
const ciliumHandler = (name: string): string => fs.readFileSync(path.join(hubbleProtoDir(), "..", "..", "pkg", "hubble", "metrics", name, "handler.go"), "utf8");

test("hubble_* metrics carry Cilium's names and label names (read from Cilium's handlers)", () => {
  const registry = new Registry();
  new HubbleMetrics(registry);
  const expect: [string, string, RegExp][] = [
    ["flow", "hubble_flows_processed_total", /labels := \[\]string\{("[^}]*")\}/],
    ["drop", "hubble_drop_total", /labels := append\(contextLabels, ("[^)]*")\)/],
    ["policy", "hubble_policy_verdicts_total", /labels := \[\]string\{("[^}]*")\}/],
  ];
  for (const [dir, name, re] of expect) {
    const src = ciliumHandler(dir);
    assert.ok(src.includes(`Name:      "${name.replace(/^hubble_/, "")}"`), `${dir}/handler.go names ${name}`);
    const labels = JSON.parse(`[${re.exec(src)![1]}]`) as string[];
    const m = registry.getSingleMetric(name) as unknown as { labelNames: string[] } | undefined;
    assert.ok(m, `${name} registered`);
    // Hubble appends its context labels (source/destination options) to these; we add none.
    assert.deepEqual(m.labelNames, labels, name);
  }
});

test("every flow is counted by protocol, type, verdict; drops by Cilium's reason; policy verdicts by direction and action", async () => {
  const registry = new Registry();
  const h = new HubbleMetrics(registry);
  h.observe(flow());
  h.observe(flow({ policyMatch: "L3-L4" }));
  h.observe(flow({ type: "trace", decidedBy: undefined as never, direction: "egress", protocol: "UDP" }));
  h.observe(dropFlow());
  h.observe(dropFlow({ dropReason: "policy denied", decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "a", name: "b", rule: "spec.ingressDeny[0]" } }));
  h.observe(dropFlow({ dropReason: "spoofed source", decidedBy: undefined as never, direction: "egress" }));
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED"} 2');
  has('hubble_flows_processed_total{protocol="UDP",type="Trace",subtype="from-endpoint",verdict="FORWARDED"} 1');
  has('hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"} 3');
  has('hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"} 1');
  has('hubble_drop_total{reason="POLICY_DENY",protocol="TCP"} 1');
  has('hubble_drop_total{reason="INVALID_SOURCE_IP",protocol="TCP"} 1');
  has('hubble_policy_verdicts_total{direction="ingress",match="none",action="forwarded"} 1');
  has('hubble_policy_verdicts_total{direction="ingress",match="l3-l4",action="forwarded"} 1'); // Cilium lowercases its match type
  has('hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"} 2');
  assert.ok(!text.includes('direction="egress"'), "a drop no policy decided is no policy verdict");
});

/** An L7 record of the shape Hubble's proxies write (flow.proto Layer7), between two pods. */
function l7(over: Partial<HubbleFlow> & { l7: HubbleLayer7 }): HubbleFlow {
  return {
    time: { seconds: 1, nanos: 0 },
    verdict: "FORWARDED",
    IP: { source: "10.0.0.1", destination: "10.0.1.5", ipVersion: "IPv4" },
    l4: { UDP: { source_port: 40000, destination_port: 53 } },
    source: { identity: 256, namespace: "default", pod_name: "client-1", labels: ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"] },
    destination: { identity: 300, namespace: "kube-system", pod_name: "coredns-0", labels: ["k8s:k8s-app=kube-dns"] },
    Type: "L7",
    node_name: "node-a",
    event_type: { type: 129, sub_type: 0 },
    traffic_direction: "EGRESS",
    is_reply: { value: false },
    ...over,
  };
}

function config(spec: string) {
  const c = parseHubbleMetrics(spec);
  assert.ok(c.ok, c.ok ? "" : c.error);
  return c.value;
}

test("hubble_dns_*: queries, responses with Cilium's rcode names, response types, policy-denied queries; query and ignoreAAAA options; context labels", async () => {
  const registry = new Registry();
  const h = new HubbleMetrics(registry, config("dns:query;ignoreAAAA;sourceContext=pod;destinationContext=app|namespace"));
  const q = (over: Partial<HubbleLayer7["dns"] & object> = {}) => ({ query: "web.shop.svc.cluster.local.", qtypes: ["A"], ...over });
  h.observeL7(l7({ l7: { type: "REQUEST", dns: q() } }));
  h.observeL7(l7({ l7: { type: "REQUEST", dns: q({ qtypes: ["AAAA"] }) } })); // ignored
  h.observeL7(l7({ is_reply: { value: true }, source: l7({ l7: { type: "REQUEST" } }).destination, destination: l7({ l7: { type: "REQUEST" } }).source, l7: { type: "RESPONSE", dns: q({ rcode: 0, ips: ["10.0.1.5", "10.0.1.6"], rrtypes: ["A", "A"] }) } }));
  h.observeL7(l7({ is_reply: { value: true }, l7: { type: "RESPONSE", dns: q({ query: "nope.", rcode: 3, rrtypes: [] }) } }));
  h.observeL7(l7({ verdict: "DROPPED", l7: { type: "REQUEST", dns: q({ query: "evil.example." }) } }));
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_dns_queries_total{source="default/client-1",destination="kube-dns",rcode="",qtypes="A",ips_returned="0",query="web.shop.svc.cluster.local."} 1');
  has('hubble_dns_responses_total{source="kube-system/coredns-0",destination="client",rcode="No Error",qtypes="A",ips_returned="2",query="web.shop.svc.cluster.local."} 1');
  has('hubble_dns_responses_total{source="default/client-1",destination="kube-dns",rcode="Non-Existent Domain",qtypes="A",ips_returned="0",query="nope."} 1');
  has('hubble_dns_response_types_total{source="kube-system/coredns-0",destination="client",type="A",qtypes="A",query="web.shop.svc.cluster.local."} 2');
  has('hubble_dns_queries_total{source="default/client-1",destination="kube-dns",rcode="Policy denied",qtypes="A",ips_returned="0",query="evil.example."} 1');
  assert.ok(!text.includes('qtypes="AAAA"'), "ignoreAAAA drops AAAA-only queries");
});

test("hubble_http_*: requests, responses by status and the duration histogram by reporter; httpV2 counts responses with the request's context", async () => {
  const http = (type: "REQUEST" | "RESPONSE", code?: number) => ({ type, latency_ns: type === "RESPONSE" ? 250_000_000 : 0, http: { method: "GET", url: "http://web.shop/", protocol: "HTTP/1.1", ...(code !== undefined ? { code } : {}) } });
  const v1 = new Registry();
  const h1 = new HubbleMetrics(v1, config("http:labelsContext=source_namespace,destination_pod,traffic_direction"));
  h1.observeL7(l7({ l7: http("REQUEST") }));
  h1.observeL7(l7({ is_reply: { value: true }, l7: http("RESPONSE", 200) }));
  h1.observeL7(l7({ traffic_direction: "INGRESS", is_reply: { value: true }, l7: http("RESPONSE", 503) }));
  const t1 = await v1.metrics();
  const has = (text: string, line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has(t1, 'hubble_http_requests_total{source_namespace="default",destination_pod="coredns-0",traffic_direction="egress",method="GET",protocol="HTTP/1.1",reporter="client"} 1');
  has(t1, 'hubble_http_responses_total{source_namespace="default",destination_pod="coredns-0",traffic_direction="egress",method="GET",protocol="HTTP/1.1",status="200",reporter="client"} 1');
  has(t1, 'hubble_http_responses_total{source_namespace="default",destination_pod="coredns-0",traffic_direction="ingress",method="GET",protocol="HTTP/1.1",status="503",reporter="server"} 1');
  has(t1, 'hubble_http_request_duration_seconds_bucket{le="0.25",source_namespace="default",destination_pod="coredns-0",traffic_direction="egress",method="GET",reporter="client"} 1');
  has(t1, 'hubble_http_request_duration_seconds_bucket{le="0.1",source_namespace="default",destination_pod="coredns-0",traffic_direction="egress",method="GET",reporter="client"} 0');

  const v2 = new Registry();
  const h2 = new HubbleMetrics(v2, config("httpV2:sourceContext=pod;destinationContext=pod"));
  h2.observeL7(l7({ l7: http("REQUEST") })); // not counted: v2 counts exchanges at their response
  h2.observeL7(l7({ is_reply: { value: true }, source: { namespace: "shop", pod_name: "web-0" }, destination: { namespace: "default", pod_name: "client-1" }, l7: http("RESPONSE", 200) }));
  const t2 = await v2.metrics();
  has(t2, 'hubble_http_requests_total{source="default/client-1",destination="shop/web-0",method="GET",protocol="HTTP/1.1",status="200",reporter="client"} 1');
  assert.ok(!t2.includes("hubble_http_responses_total"), "httpV2 has no responses family");
});

test("context options on the L3/L4 families: labels after Hubble's own (flow, policy) or before them (drop), as Cilium orders them", async () => {
  const registry = new Registry();
  const h = new HubbleMetrics(registry, config("flow:destinationContext=namespace drop:sourceContext=reserved-identity|pod policy:labelsContext=source_app"));
  h.observe(dropFlow({ source: { identity: 2, labels: ["reserved:world"], ip: "1.2.3.4", port: 5 } }));
  h.observe(flow());
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED",destination="shop"} 1');
  has('hubble_drop_total{source="reserved:world",reason="POLICY_DENIED",protocol="TCP"} 1');
  has('hubble_policy_verdicts_total{direction="ingress",match="none",action="forwarded",source_app="client"} 1');
  assert.equal(new Set((registry.getMetricsAsArray() as unknown as { name: string }[]).map((m) => m.name)).has("hubble_dns_queries_total"), false, "families not asked for are not registered");
});

test("workload context: the Deployment of a flow's pod (Hubble's workload and workload-name), from the flow's workloads", async () => {
  const registry = new Registry();
  const h = new HubbleMetrics(registry, config("flow:sourceContext=workload;destinationContext=workload-name policy:labelsContext=source_workload,source_workload_kind,destination_workload"));
  h.observe(flow({ source: { ...flow().source, workloads: [{ kind: "Deployment", name: "client" }] }, destination: { ...flow().destination, workloads: [{ kind: "StatefulSet", name: "web" }] } }));
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED",source="default/client",destination="web"} 1');
  has('source_workload="client",source_workload_kind="Deployment",destination_workload="web"');
});

test("--hubble-metrics errors name the family and the option", () => {
  const err = (s: string): string => {
    const c = parseHubbleMetrics(s);
    assert.ok(!c.ok, s);
    return c.error;
  };
  assert.match(err("dns tcp"), /^"tcp" is not a metric Membrane counts \(flow, drop, policy, dns, http, httpV2\)/);
  assert.match(err("dns:sourceContext=pod|host"), /^dns: sourceContext: "host" is not one of identity, namespace/);
  assert.match(err("http:labelsContext=source_ip,dst"), /^http: labelsContext: "dst" is not one of source_ip/);
  assert.match(err("drop:query"), /^drop: query: not an option of drop \(sourceContext/);
  assert.match(err("http httpV2"), /^httpV2: not together with http/);
  assert.match(err("flow flow"), /^flow: given twice/);
  assert.match(err("http:exemplars=true"), /^http: exemplars: not an option of http/);
});

test("hubble_dns_* and hubble_http_* carry Cilium's names and label names (read from Cilium's handlers)", () => {
  const registry = new Registry();
  new HubbleMetrics(registry, config("dns:query http"));
  const labels = (name: string) => (registry.getSingleMetric(name) as unknown as { labelNames: string[] }).labelNames;
  const dns = ciliumHandler("dns");
  for (const n of ["dns_queries_total", "dns_responses_total", "dns_response_types_total"]) assert.ok(dns.includes(`Name:      "${n}"`), n);
  assert.match(dns, /commonLabels := append\(contextLabels, "rcode", "qtypes"\)/);
  assert.match(dns, /queryAndResponseLabels := append\(commonLabels, "ips_returned"\)/);
  assert.match(dns, /responseTypeLabels := append\(contextLabels, "type", "qtypes"\)/);
  assert.deepEqual(labels("hubble_dns_queries_total"), ["rcode", "qtypes", "ips_returned", "query"]);
  assert.deepEqual(labels("hubble_dns_response_types_total"), ["type", "qtypes", "query"]);
  const http = ciliumHandler("http");
  assert.match(http, /Name:\s+"http_responses_total",[\s\S]*?\}, append\(h\.context\.GetLabelNames\(\), "method", "protocol", "status", "reporter"\)\)/);
  assert.deepEqual(labels("hubble_http_requests_total"), ["method", "protocol", "reporter"]);
  assert.deepEqual(labels("hubble_http_responses_total"), ["method", "protocol", "status", "reporter"]);
  assert.deepEqual(labels("hubble_http_request_duration_seconds"), ["method", "reporter"]);
});

test("the dynamic metrics file: Cilium's own test configurations parse (context options, include and exclude filters); errors name the field", () => {
  const testdata = path.join(hubbleProtoDir(), "..", "..", "pkg", "hubble", "metrics", "testdata");
  for (const name of ["valid_empty_metric_cfg.yaml", "valid_metric_config_drop.yaml", "valid_metric_config_drop_flow.yaml", "valid_metric_config_flow_with_filter.yaml"]) {
    const parsed = parseDynamicMetricsConfig(fs.readFileSync(path.join(testdata, name), "utf8"));
    assert.ok(parsed.ok, `${name}: ${parsed.ok ? "" : parsed.errors.join("; ")}`);
  }
  const missing = parseDynamicMetricsConfig(fs.readFileSync(path.join(testdata, "invalid_config_missing_name.yaml"), "utf8"));
  assert.deepEqual(missing.ok ? [] : missing.errors, ["metrics[0].name: required", "metrics[1].name: required"]);
  const ok = parseDynamicMetricsConfig(["metrics:", "- name: dns", "  contextOptions:", "  - name: query", "  - {name: sourceContext, values: [pod, ip]}", "  - {name: labelsContext, values: [source_namespace, destination_pod]}"].join("\n"));
  assert.ok(ok.ok);
  const dns = ok.value.get("dns")!;
  assert.deepEqual([[...dns.flags], dns.context.labelNames, dns.select], [["query"], ["source_namespace", "destination_pod", "source"], undefined]);
  const bad = parseDynamicMetricsConfig(["metrics:", "- name: tcp", "- name: flow", "  includeFilters:", "  - source_service: [default/web]", "- name: drop", "  contextOptions:", "  - {name: sourceContext, values: [nodename]}", "- name: http", "- name: httpV2", "- name: policy", "  colour: blue"].join("\n"));
  assert.deepEqual(bad.ok ? [] : bad.errors.map((e) => e.replace(/: not supported.*|: "nodename".*| \(.*\)$/, "")), [
    'metrics[0].name: "tcp" is not a metric Membrane counts',
    "metrics[1].includeFilters[0].source_service",
    "metrics[2].contextOptions: drop: sourceContext",
    "metrics[4].name: http and httpV2 both write hubble_http_requests_total",
    "metrics[5].colour: unknown field",
  ]);
});

test("a family counts only the flows its filters select; reconfigured, its series start again with the new labels", async () => {
  const registry = new Registry();
  const parsed = parseDynamicMetricsConfig(["metrics:", "- name: flow", "  includeFilters:", "  - verdict: [DROPPED]", "- name: drop", "  excludeFilters:", '  - destination_port: ["80"]'].join("\n"));
  assert.ok(parsed.ok);
  const m = new HubbleMetrics(registry, parsed.value);
  m.observe(flow());
  m.observe(dropFlow());
  m.observe(dropFlow({ destination: { ...dropFlow().destination, port: 8080 } }));
  const text = await registry.metrics();
  assert.match(text, /hubble_flows_processed_total\{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"\} 2/);
  assert.doesNotMatch(text, /verdict="FORWARDED"/);
  assert.match(text, /hubble_drop_total\{reason="POLICY_DENIED",protocol="TCP"\} 1/, "the drop to port 80 excluded");
  const next = parseHubbleMetrics("flow:sourceContext=pod");
  assert.ok(next.ok);
  m.reconfigure(next.value);
  m.observe(flow());
  const after = await registry.metrics();
  assert.doesNotMatch(after, /hubble_drop_total/);
  assert.match(after, /hubble_flows_processed_total\{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED",source="default\/client-1"\} 1/);
  assert.doesNotMatch(after, /verdict="DROPPED"/, "the old series are gone");
});

test("--hubble-dynamic-metrics-config-path: Cilium's flag, refused beside --hubble-metrics (one source of families)", () => {
  const base = ["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
  const ok = parseAgentFlags([...base, "--hubble-dynamic-metrics-config-path", "/etc/membrane/metrics/metrics.yaml"]);
  assert.equal(ok.ok ? ok.flags.hubbleDynamicMetrics : "", "/etc/membrane/metrics/metrics.yaml");
  const both = parseAgentFlags([...base, "--hubble-dynamic-metrics-config-path", "/x.yaml", "--hubble-metrics", "flow"]);
  assert.equal(both.ok ? "" : both.error, "--hubble-dynamic-metrics-config-path: not together with --hubble-metrics");
});

test("--enable-hubble-open-metrics: /metrics in OpenMetrics (its content type, # EOF), the other metrics unchanged", async () => {
  const base = ["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
  for (const flag of ["--enable-hubble-open-metrics", "--enable-hubble-open-metrics=true"]) {
    const on = parseAgentFlags([...base, flag]);
    assert.equal(on.ok && on.flags.hubbleOpenMetrics, true, flag);
  }
  const bad = parseAgentFlags([...base, "--enable-hubble-open-metrics=yes"]);
  assert.equal(bad.ok ? "" : bad.error, '--enable-hubble-open-metrics: must be true or false, got "yes"');
  const log = pino({ level: "silent" });
  const agent = new NodeAgent({ nodeName: "n", operator: "127.0.0.1:1", tls: { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) }, datapath: {} as AgentDatapath, cniSocket: "/nonexistent/agent.sock", log });
  const metrics = new AgentMetrics({ agent, datapath: { dropCounters: () => ({ byReason: {}, lostEvents: 0n }) } as never, log, openMetrics: true });
  assert.equal(metrics.registry.contentType, "application/openmetrics-text; version=1.0.0; charset=utf-8");
  metrics.hubble.observe(flow());
  const text = await metrics.registry.metrics();
  assert.match(text, /^hubble_flows_processed_total\{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED"\} 1$/m);
  assert.match(text, /^membrane_agent_stream_connected 0$/m, "the agent's own metrics in the same output");
  assert.ok(text.trimEnd().endsWith("# EOF"));
});
