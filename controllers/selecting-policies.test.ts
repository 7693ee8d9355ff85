// Which policies select a label set, with the real parser: namespaced and cluster-wide subjects, host and invalid policies never, and a new generation is seen after invalidate().
import { test } from "node:test";
import assert from "node:assert/strict";
import { securityLabels } from "../core/labels.ts";
import { parsePolicyObject } from "../core/parser/index.ts";
import { SelectingPolicies, type PolicySubjects } from "./selecting-policies.ts";

const labels = (ns: string, app: string) => securityLabels({ podLabels: { app }, namespace: ns, namespaceLabels: {} });
const cnp = (name: string, ns: string, app: string) => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name, namespace: ns },
  spec: { endpointSelector: { matchLabels: { app } }, ingress: [{}] },
});

test("a label set is selected by the policies whose subjects match it, in their namespace; host and invalid policies select none", () => {
  const objs = new Map<string, object>([
    ["a", cnp("a", "ns1", "a")],
    ["a-other-ns", cnp("a-other-ns", "ns2", "a")],
    ["np-b", { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "np-b", namespace: "ns1" }, spec: { podSelector: { matchLabels: { app: "b" } } } }],
    ["ccnp-ab", { apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "ccnp-ab" }, spec: { endpointSelector: { matchExpressions: [{ key: "app", operator: "In", values: ["a", "b"] }] }, ingress: [{}] } }],
    ["host", { apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "host" }, spec: { nodeSelector: {}, ingress: [{}] } }],
    ["invalid", { ...cnp("invalid", "ns1", "a"), spec: { endpointSelector: { matchLabels: { app: "a" } }, ingress: [{ toPorts: [{ ports: [{ port: "70000" }] }] }] } }],
  ]);
  let lists = 0;
  const index = new SelectingPolicies(function* (): Iterable<PolicySubjects> {
    lists++;
    for (const [key, obj] of objs) yield { key, parsed: parsePolicyObject(obj) };
  });
  assert.ok(!parsePolicyObject(objs.get("invalid")!).ok, "the invalid fixture does not parse");
  assert.deepEqual(index.selecting(labels("ns1", "a")), ["a", "ccnp-ab"]);
  assert.deepEqual(index.selecting(labels("ns2", "a")), ["a-other-ns", "ccnp-ab"]);
  assert.deepEqual(index.selecting(labels("ns1", "b")), ["np-b", "ccnp-ab"]);
  assert.deepEqual(index.selecting(labels("ns1", "c")), [], "an unrelated label set wakes no policy");
  assert.equal(lists, 1, "the policies are read once until invalidated");

  // A new generation selects another app: seen once the index is invalidated.
  objs.set("a", cnp("a", "ns1", "c"));
  assert.deepEqual(index.selecting(labels("ns1", "c")), [], "remembered until invalidate()");
  index.invalidate();
  assert.deepEqual(index.selecting(labels("ns1", "c")), ["a"]);
  assert.deepEqual(index.selecting(labels("ns1", "a")), ["ccnp-ab"]);
});
