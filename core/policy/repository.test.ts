// The repository: rule ids stable per (policy, path), the subject index following policies and identities, attribution order.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { PolicyRepository, policyKey } from "./repository.ts";
import { PartitionedSelectorCache } from "./selector-partitions.ts";

const pod = (app: string): LabelSet => labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "prod"), label("k8s", "app", app)]);

function cnp(name: string, app: string, ports: string[]): Policy[] {
  const r = parsePolicyObject({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name, namespace: "prod" },
    spec: { endpointSelector: { matchLabels: { app } }, ingress: ports.map((port) => ({ toPorts: [{ ports: [{ port, protocol: "TCP" }] }] })) },
  });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

test("a policy's subjects follow identities as they come, change labels and go", () => {
  const cache = new PartitionedSelectorCache();
  const repo = new PolicyRepository(cache);
  cache.upsertIdentity(300, pod("web"));
  const p = cnp("web", "web", ["80"]);
  const key = policyKey(p[0]!);
  repo.upsert(key, p);
  assert.deepEqual([...repo.subjectsOf(key)], [300]);
  cache.upsertIdentity(301, pod("web"));
  assert.deepEqual([...repo.subjectsOf(key)].sort(), [300, 301]);
  cache.removeIdentity(300);
  assert.deepEqual([...repo.subjectsOf(key)], [301]);
  assert.equal(repo.isSubject(300), false);
  assert.deepEqual(repo.partsSelecting(301).keys, [key]);
  repo.remove(key);
  assert.equal(repo.isSubject(301), false);
  assert.deepEqual([...repo.subjectsOf(key)], []);
});

test("rule ids stay the same when a policy is replaced, and a new rule gets a new id", () => {
  const repo = new PolicyRepository(new PartitionedSelectorCache());
  const v1 = cnp("web", "web", ["80"]);
  const key = policyKey(v1[0]!);
  repo.upsert(key, v1);
  const id0 = repo.ruleIdOf(key, v1[0]!.rules[0]!.origin);
  const v2 = cnp("web", "web", ["81", "82"]);
  repo.upsert(key, v2);
  assert.equal(repo.ruleIdOf(key, v2[0]!.rules[0]!.origin), id0, "same path, same id");
  const id1 = repo.ruleIdOf(key, v2[0]!.rules[1]!.origin);
  assert.notEqual(id1, id0);
  assert.equal(repo.ruleOrigin(id1)?.path, v2[0]!.rules[1]!.origin.path);
});

test("attribution orders rules by policy key, then path, whatever order they were numbered in", () => {
  const repo = new PolicyRepository(new PartitionedSelectorCache());
  const b = cnp("b", "web", ["80"]);
  const a = cnp("a", "web", ["80"]);
  repo.upsert(policyKey(b[0]!), b);
  repo.upsert(policyKey(a[0]!), a);
  const idB = repo.ruleIdOf(policyKey(b[0]!), b[0]!.rules[0]!.origin);
  const idA = repo.ruleIdOf(policyKey(a[0]!), a[0]!.rules[0]!.origin);
  assert.ok(idB < idA);
  assert.ok(repo.compareRules(idA, idB) < 0);
});
