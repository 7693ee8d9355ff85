// The TracingPolicy part of the distribution stream: snapshot and delta carry the node's TracingPolicies, the
// agent's parser refuses a bad item naming its field (nothing half-applied), and the delta helpers move them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY_STATE, applyDelta, canonicalState, diffState, diffTracingPolicies, sameState } from "./nodestate.ts";
import { decodeMessage, encodeMessage, parseDownstream, parseUpstream, tracingPolicyKey, type Downstream, type TracingPolicyItem } from "./wire.ts";

const denyShadow: TracingPolicyItem = {
  key: "TracingPolicy/deny-shadow",
  uid: "u1",
  generation: 1,
  policy: {
    apiVersion: "cilium.io/v1alpha1",
    kind: "TracingPolicy",
    metadata: { name: "deny-shadow" },
    spec: {
      lsmhooks: [
        {
          hook: "file_open",
          args: [{ index: 0, type: "file" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: ["/etc/shadow"] }], matchActions: [{ action: "Override", argError: -1 }] }],
        },
      ],
    },
  },
};
const killNc: TracingPolicyItem = {
  key: "TracingPolicyNamespaced/shop/kill-nc",
  uid: "u2",
  generation: 3,
  policy: {
    apiVersion: "cilium.io/v1alpha1",
    kind: "TracingPolicyNamespaced",
    metadata: { name: "kill-nc", namespace: "shop" },
    spec: {
      kprobes: [
        {
          call: "security_bprm_check",
          syscall: false,
          args: [{ index: 0, type: "linux_binprm" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "Postfix", values: ["/nc"] }], matchActions: [{ action: "Sigkill" }] }],
        },
      ],
    },
  },
};

const snapshot = (tracingPolicies: unknown): unknown => ({ type: "snapshot", version: 2, nonce: "n", state: { ...EMPTY_STATE, tracingPolicies } });
const errorOf = (m: unknown): string => {
  const r = parseDownstream(m);
  assert.equal(r.ok, false, "refused");
  return r.ok ? "" : `${r.errors[0]!.path}: ${r.errors[0]!.message}`;
};

test("tracingPolicyKey names kind, namespace and name", () => {
  assert.equal(tracingPolicyKey("TracingPolicy", "a"), "TracingPolicy/a");
  assert.equal(tracingPolicyKey("TracingPolicyNamespaced", "a", "ns"), "TracingPolicyNamespaced/ns/a");
});

test("a snapshot and a delta with TracingPolicies round-trip through the JSON framing and the agent's parser", () => {
  const s: Downstream = { type: "snapshot", version: 2, nonce: "n", state: { ...EMPTY_STATE, tracingPolicies: [denyShadow, killNc] } };
  assert.deepEqual(parseDownstream(decodeMessage(encodeMessage(s))), { ok: true, value: s });
  const d: Downstream = {
    type: "delta", version: 3, baseVersion: 2, nonce: "m", subjects: [], removedSubjects: [], ipcacheUpserts: [], ipcacheRemovals: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [],
    policyGenerationUpserts: [], policyGenerationRemovals: [], tracingPolicyUpserts: [{ ...denyShadow, generation: 2 }], tracingPolicyRemovals: [killNc.key],
  };
  assert.deepEqual(parseDownstream(decodeMessage(encodeMessage(d))), { ok: true, value: d });
  // A state without TracingPolicies is sent as before (no key), and parses.
  const plain: Downstream = { type: "snapshot", version: 1, nonce: "n", state: EMPTY_STATE };
  assert.equal(JSON.stringify(decodeMessage(encodeMessage(plain))).includes("tracing"), false);
  assert.equal(parseDownstream(decodeMessage(encodeMessage(plain))).ok, true);
});

test("a bad TracingPolicy item is refused naming the field", () => {
  assert.equal(errorOf(snapshot({})), "state.tracingPolicies: must be a list");
  assert.equal(errorOf(snapshot([{ ...denyShadow, generation: -1 }])), "state.tracingPolicies[0].generation: must be a non-negative integer");
  assert.equal(errorOf(snapshot([{ ...denyShadow, key: "TracingPolicy/other" }])), 'state.tracingPolicies[0].key: must be "TracingPolicy/deny-shadow" (the policy\'s kind, namespace and name), not "TracingPolicy/other"');
  assert.equal(errorOf(snapshot([{ ...denyShadow, policy: { ...denyShadow.policy, kind: "CiliumNetworkPolicy" } }])), "state.tracingPolicies[0].policy.kind: must be one of TracingPolicy, TracingPolicyNamespaced");
  const noNs = { ...killNc, policy: { ...killNc.policy, metadata: { name: "kill-nc" } } };
  assert.equal(errorOf(snapshot([noNs])), "state.tracingPolicies[0].policy.metadata.namespace: required for a TracingPolicyNamespaced");
  // The spec goes through Tetragon's loader rules (core/tracing.ts): the path reaches into it.
  const badOperator = { ...denyShadow, policy: { ...denyShadow.policy, spec: { lsmhooks: [{ hook: "file_open", args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "equal", values: ["/x"] }] }] }] } } };
  assert.match(errorOf(snapshot([badOperator])), /^state\.tracingPolicies\[0\]\.policy\.spec\.lsmhooks\[0\]\.selectors\[0\]\.matchArgs\[0\]\.operator: /);
  assert.equal(errorOf(snapshot([killNc, denyShadow])), 'state.tracingPolicies[1].key: must come after "TracingPolicyNamespaced/shop/kill-nc" (sorted by key, each key once)');
  const delta = { type: "delta", version: 3, baseVersion: 2, nonce: "m", subjects: [], removedSubjects: [], ipcacheUpserts: [], ipcacheRemovals: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [], policyGenerationUpserts: [], policyGenerationRemovals: [] };
  assert.equal(errorOf({ ...delta, tracingPolicyRemovals: [""] }), "tracingPolicyRemovals[0]: must be a non-empty string");
  assert.equal(errorOf({ ...delta, tracingPolicyUpserts: [{ ...denyShadow, uid: 7 }] }), "tracingPolicyUpserts[0].uid: must be a string");
});

test("deltas of TracingPolicies: a new generation is upserted whole, a gone key removed, applyDelta gives the target", () => {
  const from = canonicalState({ ...EMPTY_STATE, tracingPolicies: [killNc, denyShadow] });
  const changed = { ...denyShadow, generation: 2 };
  const to = canonicalState({ ...EMPTY_STATE, tracingPolicies: [changed] });
  assert.deepEqual(diffTracingPolicies(from.tracingPolicies, to.tracingPolicies), { tracingPolicyUpserts: [changed], tracingPolicyRemovals: [killNc.key] });
  assert.deepEqual(diffTracingPolicies(to.tracingPolicies, to.tracingPolicies), {});
  const d = diffState(from, to);
  assert.deepEqual(applyDelta(from, d), to);
  assert.equal(sameState(from, to), false);
  assert.equal(sameState(to, canonicalState({ ...EMPTY_STATE, tracingPolicies: [{ ...changed }] })), true);
  // Removing the last one leaves a state without the part (as a state that never had one).
  const none = applyDelta(to, diffState(to, EMPTY_STATE));
  assert.deepEqual(none, EMPTY_STATE);
  // From nothing: every policy is an upsert.
  assert.deepEqual(diffState(EMPTY_STATE, from).tracingPolicyUpserts, [denyShadow, killNc]);
});

test("the agent's runtime report and hello flag parse; a bad status is refused naming the field", () => {
  const report = { type: "runtime", policies: [{ key: "TracingPolicy/p", uid: "u", generation: 2, enforced: false, reason: "HookUnavailable", message: "spec.containerSelector: …" }] } as const;
  assert.deepEqual(parseUpstream(decodeMessage(encodeMessage(report))), { ok: true, value: report });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", runtime: true }), { ok: true, value: { type: "hello", node: "n", runtime: true } });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", runtime: "yes" }), { ok: false, errors: [{ path: "runtime", message: "must be a boolean" }] });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", clusterClass: true }), { ok: true, value: { type: "hello", node: "n", clusterClass: true } });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", clusterClass: 1 }), { ok: false, errors: [{ path: "clusterClass", message: "must be a boolean" }] });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", worldClass: true }), { ok: true, value: { type: "hello", node: "n", worldClass: true } });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", worldClass: "yes" }), { ok: false, errors: [{ path: "worldClass", message: "must be a boolean" }] });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", worldFamilyClass: true }), { ok: true, value: { type: "hello", node: "n", worldFamilyClass: true } });
  assert.deepEqual(parseUpstream({ type: "hello", node: "n", worldFamilyClass: 1 }), { ok: false, errors: [{ path: "worldFamilyClass", message: "must be a boolean" }] });
  assert.deepEqual(parseUpstream({ type: "runtime", policies: [{ ...report.policies[0], enforced: "no" }] }), { ok: false, errors: [{ path: "policies[0].enforced", message: "must be a boolean" }] });
  assert.deepEqual(parseUpstream({ type: "runtime" }), { ok: false, errors: [{ path: "policies", message: "must be a list" }] });
});
