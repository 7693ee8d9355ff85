// Hubble's metric names and labels: counted from flows, and the names and label sets checked against Cilium's own handlers.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Registry } from "prom-client";
import { HubbleMetrics } from "./hubble-metrics.ts";
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
  h.observe(flow({ type: "trace", decidedBy: undefined as never, direction: "egress", protocol: "UDP" }));
  h.observe(dropFlow());
  h.observe(dropFlow({ dropReason: "policy denied", decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "a", name: "b", rule: "spec.ingressDeny[0]" } }));
  h.observe(dropFlow({ dropReason: "spoofed source", decidedBy: undefined as never, direction: "egress" }));
  const text = await registry.metrics();
  const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
  has('hubble_flows_processed_total{protocol="TCP",type="PolicyVerdict",subtype="",verdict="FORWARDED"} 1');
  has('hubble_flows_processed_total{protocol="UDP",type="Trace",subtype="from-endpoint",verdict="FORWARDED"} 1');
  has('hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"} 3');
  has('hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"} 1');
  has('hubble_drop_total{reason="POLICY_DENY",protocol="TCP"} 1');
  has('hubble_drop_total{reason="INVALID_SOURCE_IP",protocol="TCP"} 1');
  has('hubble_policy_verdicts_total{direction="ingress",match="none",action="forwarded"} 1');
  has('hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"} 2');
  assert.ok(!text.includes('direction="egress"'), "a drop no policy decided is no policy verdict");
});
