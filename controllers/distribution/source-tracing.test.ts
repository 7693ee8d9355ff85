// NodeStateSource's TracingPolicy part: every node gets every valid TracingPolicy (Tetragon's schema has no node
// selector), an invalid edit keeps the last valid generation, a status-only write changes nothing, deletion removes it.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Informer } from "../../kube/informer.ts";
import { keyOf } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";
import type { IdentityObject, PodObject } from "../../kube/objects.ts";
import type { NodeObject } from "../node.ts";
import type { TracingPolicyObject } from "../tracing.ts";
import { NodeStateSource } from "./source.ts";

function cache<T extends KubeObject>(items: T[]): Informer<T> & { set(items: T[]): void } {
  let m = new Map(items.map((i) => [keyOf(i), i]));
  return { get: (k: string) => m.get(k), list: () => [...m.values()], set: (next: T[]) => (m = new Map(next.map((i) => [keyOf(i), i]))) } as unknown as Informer<T> & { set(items: T[]): void };
}

const spec = (path: string): unknown => ({
  lsmhooks: [{ hook: "file_open", args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [path] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
});
const tp = (name: string, generation: number, s: unknown, namespace?: string): TracingPolicyObject => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: namespace ? "TracingPolicyNamespaced" : "TracingPolicy",
  metadata: { name, uid: `uid-${name}`, generation, ...(namespace ? { namespace } : {}) },
  spec: s,
});

test("every node's state carries every valid TracingPolicy, sorted by key; edits, invalid edits and deletion follow", () => {
  const nodes = cache<NodeObject>([{ metadata: { name: "n1" } }, { metadata: { name: "n2" } }]);
  const src = new NodeStateSource(cache<PodObject>([]), nodes);
  const cluster = tp("deny-shadow", 1, spec("/etc/shadow"));
  const namespaced = tp("deny-key", 2, spec("/etc/key"), "shop");
  const tracing = cache<TracingPolicyObject>([namespaced, cluster]);
  const informers = { identities: cache<IdentityObject>([]), policies: [], tracingPolicies: [tracing] };
  assert.equal(src.stateFor("n1").tracingPolicies, undefined, "no policy: no part");
  assert.equal(src.sync(informers, ["tracing"]), "all");
  for (const n of ["n1", "n2"]) {
    const items = src.stateFor(n).tracingPolicies ?? [];
    assert.deepEqual(items.map((i) => [i.key, i.uid, i.generation]), [["TracingPolicy/deny-shadow", "uid-deny-shadow", 1], ["TracingPolicyNamespaced/shop/deny-key", "uid-deny-key", 2]]);
    assert.deepEqual(items[1]!.policy, { apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicyNamespaced", metadata: { name: "deny-key", namespace: "shop" }, spec: spec("/etc/key") });
  }
  // A status write (same generation) is no change; an invalid new generation keeps the last valid one (fail closed).
  tracing.set([namespaced, { ...cluster, status: { observedGeneration: 1 } }]);
  assert.deepEqual(src.sync(informers, ["tracing"]), []);
  tracing.set([namespaced, tp("deny-shadow", 2, { lsmhooks: [{ hook: "file_open", selectors: [{ matchArgs: [{ index: 0, operator: "equal", values: ["/x"] }] }] }] })]);
  assert.deepEqual(src.sync(informers, ["tracing"]), []);
  assert.equal(src.stateFor("n1").tracingPolicies?.[0]?.generation, 1);
  tracing.set([namespaced, tp("deny-shadow", 3, spec("/etc/gshadow"))]);
  assert.equal(src.sync(informers, ["tracing"]), "all");
  assert.equal(src.stateFor("n2").tracingPolicies?.[0]?.generation, 3);
  tracing.set([]);
  assert.equal(src.sync(informers, ["tracing"]), "all");
  assert.equal(src.stateFor("n1").tracingPolicies, undefined);
});
