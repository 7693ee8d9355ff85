// The Node's labels as the agent's flows carry them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { nodeLabelList } from "./node-labels.ts";

test("a Node's labels are key=value sorted by key (an empty value kept), frozen; no Node or no labels give none", () => {
  const l = nodeLabelList({ metadata: { name: "n1", labels: { "topology.kubernetes.io/zone": "a", "kubernetes.io/hostname": "n1", "node-role.kubernetes.io/control-plane": "" } } });
  assert.deepEqual(l, ["kubernetes.io/hostname=n1", "node-role.kubernetes.io/control-plane=", "topology.kubernetes.io/zone=a"]);
  assert.ok(Object.isFrozen(l));
  assert.deepEqual(nodeLabelList(undefined), []);
  assert.deepEqual(nodeLabelList({ metadata: { name: "n1" } }), []);
});
