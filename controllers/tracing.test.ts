// The conditions the tracing controller writes, from the object alone: Valid and Loaded, observedGeneration carried.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NodeAnswer } from "./distribution/server.ts";
import { tracingConditions, tracingDuringReconnectGrace, tracingEnforcement, type TracingPolicyObject, type TracingPolicyStatus } from "./tracing.ts";

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
        message: "translates to: spec.lsmhooks[0] (LSM hook file_open) → file-permission; the operator does not send TracingPolicies to the nodes yet (membrane runtime --policy-file enforces exec, file and connect hooks and syscall tracepoints on a node)",
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

describe("tracing policy enforcement over the nodes' reports", () => {
  const policy: TracingPolicyObject = { ...obj({ lsmhooks: [{ hook: "file_open" }] }), metadata: { name: "p", uid: "u", generation: 4 } };
  const report = (node: string, s: Partial<{ enforced: boolean; reason: string; message: string; generation: number }>): NodeAnswer => ({
    node,
    runtime: true,
    tracing: [{ key: "TracingPolicy/p", uid: "u", generation: s.generation ?? 4, enforced: s.enforced ?? true, ...(s.reason ? { reason: s.reason } : {}), ...(s.message ? { message: s.message } : {}) }],
  });
  const byType = (cs: ReturnType<typeof tracingConditions>): Record<string, [string, string, string]> => Object.fromEntries(cs.map((c) => [c.type, [c.status, c.reason, c.message]]));

  it("every node enforcing this generation: Enforced=True n/n, Loaded=True", () => {
    const e = tracingEnforcement(policy, ["a", "b"], [report("b", {}), report("a", {})]);
    assert.deepEqual(e, { enforced: 2, total: 2, nodeErrors: [], unheard: [] });
    const c = byType(tracingConditions(policy, e));
    assert.deepEqual(c.Enforced, ["True", "Enforced", "2/2 nodes"]);
    assert.equal(c.Loaded?.[0], "True");
    assert.match(c.Loaded?.[2] ?? "", /^2\/2 nodes; translates to: spec\.lsmhooks\[0\]/);
  });

  it("a node's refusal, an older generation, an agent without the enforcer and a missing agent are each named", () => {
    const e = tracingEnforcement(policy, ["a", "b", "c", "d"], [
      report("a", { enforced: false, reason: "HookUnavailable", message: "spec.lsmhooks[0] (file_open): no fanotify" }),
      report("b", { generation: 3 }),
      { node: "c" },
    ]);
    assert.deepEqual(e, {
      enforced: 0,
      total: 4,
      nodeErrors: [
        { node: "a", reason: "HookUnavailable", message: "spec.lsmhooks[0] (file_open): no fanotify" },
        { node: "b", reason: "Pending", message: "not reported for this generation yet" },
        { node: "c", reason: "EnforcerNotRunning", message: "its agent does not run the runtime enforcer (--enable-runtime, chart value runtime.enabled)" },
        { node: "d", reason: "EnforcerNotRunning", message: "its agent is not connected" },
      ],
      unheard: ["d"],
    });
    const c = byType(tracingConditions(policy, e));
    assert.deepEqual(c.Enforced?.slice(0, 2), ["False", "HookUnavailable"]);
    assert.match(c.Enforced?.[2] ?? "", /^0\/4 nodes; a: HookUnavailable: spec\.lsmhooks\[0\] \(file_open\): no fanotify; b: Pending/);
    assert.deepEqual(c.Loaded?.slice(0, 2), ["False", "HookUnavailable"]);
    // Only late nodes: Unknown/Pending, never True.
    assert.deepEqual(byType(tracingConditions(policy, tracingEnforcement(policy, ["b"], [report("b", { generation: 3 })]))).Enforced?.slice(0, 2), ["Unknown", "Pending"]);
  });

  it("during the agent reconnect grace a node not heard from counts as the stored status of this generation saw it; anything heard, or another generation or node count, as it is", () => {
    // Before the operator restarted: a, b and c enforced generation 4, d refused it.
    const refusal = { node: "d", reason: "HookUnavailable", message: "spec.lsmhooks[0] (file_open): no fanotify" };
    const stored: TracingPolicyStatus = { observedGeneration: 4, enforced: "3/4", enforcedNodes: 3, totalNodes: 4, nodeErrors: [refusal] };
    // After it: only b's agent is back, and it reports an older generation.
    const reported = tracingEnforcement(policy, ["a", "b", "c", "d"], [report("b", { generation: 3 })]);
    assert.deepEqual(reported.unheard, ["a", "c", "d"]);
    const held = tracingDuringReconnectGrace(reported, stored, 4);
    assert.equal(held.enforced, 2, "a and c: enforcing as stored; b: heard, and late");
    assert.deepEqual(held.nodeErrors, [{ node: "b", reason: "Pending", message: "not reported for this generation yet" }, refusal]);
    const c = byType(tracingConditions(policy, held));
    assert.deepEqual(c.Enforced?.slice(0, 2), ["False", "HookUnavailable"], "d's refusal stands");
    assert.match(c.Enforced?.[2] ?? "", /^2\/4 nodes; b: Pending: .*; d: HookUnavailable/);
    // Not "its agent is not connected" for a node whose agent was never asked since the restart.
    assert.ok(!(c.Enforced?.[2] ?? "").includes("not connected"));
    // A new generation, another node count, or no stored status: the nodes not heard from count as they are.
    assert.deepEqual(tracingDuringReconnectGrace(reported, stored, 5), reported);
    assert.deepEqual(tracingDuringReconnectGrace(reported, { ...stored, totalNodes: 5 }, 4), reported);
    assert.deepEqual(tracingDuringReconnectGrace(reported, undefined, 4), reported);
  });
});
