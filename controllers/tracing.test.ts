// The conditions the tracing controller writes, from the object alone: Valid and Loaded, observedGeneration carried.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { tracingConditions, type TracingPolicyObject } from "./tracing.ts";

const obj = (spec: unknown): TracingPolicyObject => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicy",
  metadata: { name: "p", generation: 4 },
  spec,
});

describe("tracing policy conditions", () => {
  it("a servable policy: Valid=True with its hook count, Loaded=False NotLoadedYet with the translation", () => {
    assert.deepEqual(tracingConditions(obj({ lsmhooks: [{ hook: "file_open" }] })), [
      { type: "Valid", status: "True", reason: "Admitted", message: "1 hook", observedGeneration: 4 },
      {
        type: "Loaded",
        status: "False",
        reason: "NotLoadedYet",
        message: "translates to: spec.lsmhooks[0] (LSM hook file_open) → file-permission; the operator does not send TracingPolicies to the nodes yet (membrane runtime --policy-file enforces exec, file and connect hooks on a node)",
        observedGeneration: 4,
      },
    ]);
  });

  it("an object admission would refuse (stored while the webhook was away): Valid=False naming the field, Loaded=False Invalid", () => {
    const conditions = tracingConditions(obj({ kprobes: [{ call: "fd_install", selectors: [{ matchActions: [{ action: "FollowFD" }] }] }] }));
    assert.deepEqual(
      conditions.map((c) => [c.type, c.status, c.reason]),
      [
        ["Valid", "False", "Invalid"],
        ["Loaded", "False", "Invalid"],
      ],
    );
    assert.match(conditions[0]?.message ?? "", /^spec\.kprobes\[0\]\.selectors\[0\]\.matchActions\[0\]\.action: FollowFD was removed from Tetragon/);
  });
});
