// Tests for policy entities: which identities each entity means, per Cilium's documentation.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Entity, LabelSet } from "./model.ts";
import { ENTITIES, entityIdentities, entityMatches, isEntity } from "./entities.ts";
import { RESERVED_IDENTITIES, cidrLabels } from "./identity.ts";
import { securityLabels } from "./labels.ts";

// Every reserved identity, a pod of this cluster, a pod of another cluster (cluster mesh), and CIDR identities.
const identities: { id: number; labels: LabelSet }[] = [
  ...RESERVED_IDENTITIES.map((r) => ({ id: r.id, labels: r.labels })),
  { id: 256, labels: securityLabels({ podLabels: { app: "web" }, namespace: "prod", namespaceLabels: {} }) },
  { id: 257, labels: securityLabels({ podLabels: { app: "web" }, namespace: "prod", namespaceLabels: {}, clusterName: "east" }) },
  { id: 1 << 24, labels: cidrLabels("203.0.113.0/24") },
  { id: (1 << 24) + 1, labels: cidrLabels("2001:db8::/32") },
];

const expected: Record<Entity, number[]> = {
  all: identities.map((i) => i.id).sort((a, b) => a - b),
  none: [],
  // world, world-ipv4, world-ipv6 and every CIDR identity (addresses outside the cluster).
  world: [2, 9, 10, 1 << 24, (1 << 24) + 1],
  "world-ipv4": [9, 1 << 24],
  "world-ipv6": [10, (1 << 24) + 1],
  // host, remote-node, init, ingress, health, unmanaged, kube-apiserver and this cluster's pods.
  cluster: [1, 3, 4, 5, 6, 7, 8, 256],
  host: [1],
  "remote-node": [6],
  "kube-apiserver": [7],
  health: [4],
  init: [5],
  ingress: [8],
  unmanaged: [3],
};

for (const entity of ENTITIES) {
  test(`entity ${entity} means the identities Cilium's documentation lists`, () => {
    assert.deepEqual(entityIdentities(entity, identities), expected[entity]);
  });
}

test("the cluster entity follows the configured cluster name", () => {
  assert.deepEqual(entityIdentities("cluster", identities, "east"), [1, 3, 4, 5, 6, 7, 8, 257]);
  assert.equal(entityMatches("cluster", identities[11]!.labels, "default"), false);
});

test("entity names are recognised exactly", () => {
  assert.ok(isEntity("kube-apiserver") && isEntity("world-ipv6"));
  assert.ok(!isEntity("World") && !isEntity("everything"));
  assert.equal(ENTITIES.length, 13);
});
