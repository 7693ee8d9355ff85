// The keys admission knows for TracingPolicy (core/tracing.ts TRACING_KEYS) are exactly the CRD schema's, and
// the schema keeps unknown keys (so admission, not pruning, answers a misspelt one).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TRACING_KEYS } from "../core/tracing.ts";
import type { JSONSchemaProps } from "./schema/index.ts";
import { tracingPolicyCRD, tracingPolicyNamespacedCRD } from "./schema/tracing-policy.ts";

const specOf = (crd: typeof tracingPolicyCRD): JSONSchemaProps => {
  const spec = crd.spec.versions[0]?.schema.openAPIV3Schema.properties?.spec;
  assert.ok(spec);
  return spec;
};
const keys = (node: JSONSchemaProps | undefined): string[] => Object.keys(node?.properties ?? {}).sort();
const item = (node: JSONSchemaProps | undefined): JSONSchemaProps | undefined => node?.items;
const sorted = (k: readonly string[]): string[] => [...k].sort();

describe("TracingPolicy schema and admission agree", () => {
  const spec = specOf(tracingPolicyCRD);
  const p = spec.properties ?? {};
  const kprobe = item(p.kprobes);
  const selector = item(kprobe?.properties?.selectors);
  const sp = selector?.properties ?? {};

  it("on every object's keys", () => {
    const pairs: [keyof typeof TRACING_KEYS, JSONSchemaProps | undefined][] = [
      ["spec", spec],
      ["kprobe", kprobe],
      ["kprobe", item(p.fentries)],
      ["tracepoint", item(p.tracepoints)],
      ["lsmhook", item(p.lsmhooks)],
      ["uprobe", item(p.uprobes)],
      ["usdt", item(p.usdts)],
      ["arg", item(kprobe?.properties?.args)],
      ["arg", kprobe?.properties?.returnArg],
      ["ignore", kprobe?.properties?.ignore],
      ["selector", selector],
      ["argFilter", item(sp.matchArgs)],
      ["argFilter", item(sp.matchReturnArgs)],
      ["pidFilter", item(sp.matchPIDs)],
      ["binaryFilter", item(sp.matchBinaries)],
      ["namespaceFilter", item(sp.matchNamespaces)],
      ["namespaceChangeFilter", item(sp.matchNamespaceChanges)],
      ["nameFilter", item(sp.matchNames)],
      ["capabilityFilter", item(sp.matchCapabilities)],
      ["capabilityFilter", item(sp.matchCapabilityChanges)],
      ["action", item(sp.matchActions)],
      ["action", item(sp.matchReturnActions)],
      ["list", item(p.lists)],
      ["enforcer", item(p.enforcers)],
      ["option", item(p.options)],
      ["labelSelector", p.podSelector],
    ];
    for (const [shape, node] of pairs) assert.deepEqual(keys(node), sorted(TRACING_KEYS[shape]), shape);
  });

  it("TracingPolicyNamespaced has the same spec without hostSelector", () => {
    assert.deepEqual(keys(specOf(tracingPolicyNamespacedCRD)), sorted(TRACING_KEYS.spec.filter((k) => k !== "hostSelector")));
  });

  it("keeps unknown keys in every object of the spec except label selectors, so admission names them", () => {
    const open: string[] = [];
    const closed: string[] = [];
    const walk = (node: JSONSchemaProps, path: string): void => {
      if (node.properties) (node["x-kubernetes-preserve-unknown-fields"] ? open : closed).push(path);
      if (node.properties?.matchLabels) return;
      for (const [k, v] of Object.entries(node.properties ?? {})) walk(v, `${path}.${k}`);
      if (node.items) walk(node.items, `${path}[]`);
    };
    walk(spec, "spec");
    assert.deepEqual(closed, ["spec.podSelector", "spec.containerSelector", "spec.hostSelector"]);
    assert.ok(open.length > 50, `${open.length} open objects`);
  });
});
