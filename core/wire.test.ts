// Unit tests of the agent-message parser at the edge of the distribution stream.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeMessage, describeErrors, encodeMessage, parseDownstream, parseUpstream, type Downstream, type IPCacheEntry } from "./wire.ts";

test("hello, ack and nack round-trip through the JSON framing", () => {
  for (const m of [
    { type: "hello", node: "n1", lastAppliedVersion: 7 },
    { type: "hello", node: "n1" },
    { type: "ack", version: 3, nonce: "a" },
    { type: "nack", version: 3, nonce: "a", error: "map full" },
  ] as const) {
    assert.deepEqual(parseUpstream(decodeMessage(encodeMessage(m))), { ok: true, value: m });
  }
});

test("malformed agent messages are errors naming the field", () => {
  assert.deepEqual(parseUpstream({ type: "ack", version: -1, nonce: "a" }), { ok: false, errors: [{ path: "version", message: "must be a non-negative integer" }] });
  assert.deepEqual(parseUpstream({ type: "hello" }), { ok: false, errors: [{ path: "node", message: "must be a non-empty string" }] });
  assert.deepEqual(parseUpstream({ type: "nack", version: 1, nonce: "x" }), { ok: false, errors: [{ path: "error", message: "must be a string" }] });
  assert.equal(parseUpstream([]).ok, false);
  assert.match(JSON.stringify(parseUpstream({ type: "bye" })), /must be hello, ack, nack or runtime/);
});

const entry = { subject: 300, direction: "egress", peer: 301, proto: 6, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 } as const;
const snapshot: Downstream = {
  type: "snapshot",
  version: 4,
  nonce: "n",
  state: {
    policies: [{ subject: 300, ingressEnforced: false, egressEnforced: true, entries: [entry] }],
    ipcache: [{ prefix: "10.0.0.1/32", identity: 300, node: "192.0.2.1", pod: "default/a", workload: { kind: "Deployment", name: "a" } }, { prefix: "10.9.0.0/16", identity: 16777217, ipBlockIdentity: 16777218 }],
    identities: [{ id: 300, labels: ["k8s:app=a"] }],
    rules: [{ id: 1, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "p", ruleIndex: 0, path: "spec.egress[0]" } }],
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/p", uid: "u", generation: 2 }],
  },
};
const delta: Downstream = {
  type: "delta",
  version: 5,
  baseVersion: 4,
  nonce: "m",
  subjects: [{ subject: 300, ingressEnforced: false, egressEnforced: true, added: [{ ...entry, port: 8081 }], removed: [entry] }],
  removedSubjects: [],
  ipcacheUpserts: [],
  ipcacheRemovals: ["10.9.0.0/16"],
  identityUpserts: [],
  identityRemovals: [],
  ruleUpserts: [],
  policyGenerationUpserts: [{ key: "CiliumNetworkPolicy/default/p", uid: "u", generation: 3 }],
  policyGenerationRemovals: ["CiliumNetworkPolicy/default/q"],
};

test("snapshots and deltas the operator sends parse as they are", () => {
  for (const m of [snapshot, delta]) assert.deepEqual(parseDownstream(decodeMessage(encodeMessage(m))), { ok: true, value: m });
});

test("a list a thousand node streams share is serialised once, and every message reads back as sent", () => {
  let serialised = 0;
  const upserts = Object.assign([{ prefix: "10.0.0.2/32", identity: 300, node: "192.0.2.1" }], {
    toJSON(this: IPCacheEntry[]) {
      serialised++;
      return [...this];
    },
  });
  const body = delta as Extract<Downstream, { type: "delta" }>;
  for (let n = 0; n < 1000; n++) {
    const m: Downstream = { ...body, version: n, nonce: `n${n}`, ipcacheUpserts: upserts };
    assert.deepEqual(decodeMessage(encodeMessage(m)), { ...body, version: n, nonce: `n${n}`, ipcacheUpserts: [{ prefix: "10.0.0.2/32", identity: 300, node: "192.0.2.1" }] });
  }
  assert.equal(serialised, 1);
  // A message missing a list (only a test writes one) goes out as it is, for the agent to refuse.
  const { ruleUpserts: _, ...noRules } = body;
  assert.deepEqual(decodeMessage(encodeMessage(noRules as unknown as Downstream)), noRules);
});

test("a malformed downstream message is an error naming the first bad field", () => {
  const bad = (m: unknown): string => {
    const r = parseDownstream(m);
    assert.equal(r.ok, false);
    return r.ok ? "" : describeErrors(r.errors);
  };
  assert.equal(bad(null), "must be an object");
  assert.equal(bad({ ...snapshot, type: "patch" }), 'type: must be snapshot or delta, not "patch"');
  assert.equal(bad({ ...snapshot, nonce: "" }), "nonce: must be a non-empty string");
  assert.equal(bad({ ...snapshot, state: { ...snapshot.state, policies: [{ ...snapshot.state.policies[0], entries: [{ ...entry, port: 70000 }] }] } }), "state.policies[0].entries[0].port: must be an integer from 0 to 65535");
  assert.equal(bad({ ...snapshot, state: { ...snapshot.state, policies: [{ ...snapshot.state.policies[0], entries: [{ ...entry, verdict: "maybe" }] }] } }), "state.policies[0].entries[0].verdict: must be one of allow, deny");
  assert.equal(bad({ ...snapshot, state: { ...snapshot.state, ipcache: "all" } }), "state.ipcache: must be a list");
  assert.equal(bad({ ...snapshot, state: { ...snapshot.state, ipcache: [{ prefix: "10.0.0.0/8", identity: 16777217, ipBlockIdentity: 300 }] } }), "state.ipcache[0].ipBlockIdentity: must be a local identity (16777216 to 33554431) or a node's (65536 to 16777215)");
  assert.equal(bad({ ...snapshot, state: { ...snapshot.state, ipcache: [{ prefix: "10.0.0.1/32", identity: 300, pod: "default/a", workload: { kind: "Deployment" } }] } }), "state.ipcache[0].workload.name: must be a non-empty string");
  assert.equal(bad({ ...delta, baseVersion: "4" }), "baseVersion: must be a non-negative integer");
  assert.equal(bad({ ...delta, subjects: [{ ...(delta as Extract<Downstream, { type: "delta" }>).subjects[0], added: [{ ...entry, subject: 999 }] }] }), "subjects[0].added[0].subject: must be the subject 300, not 999");
  assert.equal(bad({ ...delta, removedSubjects: [-1] }), "removedSubjects[0]: must be an integer from 0 to 4294967295");
  const { ipcacheRemovals: _, ...noRemovals } = delta as Extract<Downstream, { type: "delta" }>;
  assert.equal(bad(noRemovals), "ipcacheRemovals: must be a list");
  assert.equal(bad({ ...delta, policyGenerationRemovals: [""] }), "policyGenerationRemovals[0]: must be a non-empty string");
  assert.equal(bad({ ...delta, policyGenerationUpserts: [{ key: "k", uid: "u", generation: -1 }] }), "policyGenerationUpserts[0].generation: must be a non-negative integer");
});
