// Policy enforcement modes: what the datapath holds for a subject under default, always and never.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { SubjectPolicy } from "../core/model.ts";
import { EMPTY_STATE } from "../core/nodestate.ts";
import { endpointEntry } from "./agent.ts";
import { enforcedPolicy, enforcedState, isPolicyEnforcementMode } from "./enforcement.ts";

const deny = { subject: 300, direction: "ingress", peer: 400, proto: 6, port: 22, portPrefixLen: 16, verdict: "deny", proxyPort: 0, ruleId: 1 } as const;
const allow = { ...deny, port: 80, verdict: "allow", ruleId: 2 } as const;
const selectedIngress: SubjectPolicy = { subject: 300, ingressEnforced: true, egressEnforced: false, entries: [deny, allow] };
const unselected: SubjectPolicy = { subject: 301, ingressEnforced: false, egressEnforced: false, entries: [] };

describe("policy enforcement mode", () => {
  it("default keeps the operator's flags and entries: only the directions a policy selects are enforced", () => {
    assert.equal(enforcedPolicy(selectedIngress, "default"), selectedIngress);
    assert.equal(enforcedPolicy(unselected, "default"), unselected);
  });

  it("always enforces both directions of every subject, selected or not, and keeps its entries", () => {
    assert.deepEqual(enforcedPolicy(selectedIngress, "always"), { ...selectedIngress, egressEnforced: true });
    assert.deepEqual(enforcedPolicy(unselected, "always"), { ...unselected, ingressEnforced: true, egressEnforced: true });
  });

  it("never enforces nothing: no direction, and no entry (not even a deny) reaches the datapath", () => {
    assert.deepEqual(enforcedPolicy(selectedIngress, "never"), { subject: 300, ingressEnforced: false, egressEnforced: false, entries: [] });
  });

  it("an endpoint whose identity is not known yet is fail-closed, unless nothing is enforced", () => {
    const state = enforcedState({ ...EMPTY_STATE, policies: [unselected] }, "always");
    assert.deepEqual(endpointEntry("10.0.0.9", 7, state, "always"), { ip: "10.0.0.9", ifindex: 7, identity: 5, ingressEnforced: true, egressEnforced: true });
    assert.deepEqual(endpointEntry("10.0.0.9", 7, state, "default"), { ip: "10.0.0.9", ifindex: 7, identity: 5, ingressEnforced: true, egressEnforced: true });
    assert.deepEqual(endpointEntry("10.0.0.9", 7, state, "never"), { ip: "10.0.0.9", ifindex: 7, identity: 5, ingressEnforced: false, egressEnforced: false });
  });

  it("an endpoint takes its flags from its identity's policy as the mode makes it", () => {
    const received = { ...EMPTY_STATE, policies: [unselected], ipcache: [{ prefix: "10.0.0.9/32", identity: 301 }] };
    assert.deepEqual(endpointEntry("10.0.0.9", 7, enforcedState(received, "default"), "default"), { ip: "10.0.0.9", ifindex: 7, identity: 301, ingressEnforced: false, egressEnforced: false });
    assert.deepEqual(endpointEntry("10.0.0.9", 7, enforcedState(received, "always"), "always"), { ip: "10.0.0.9", ifindex: 7, identity: 301, ingressEnforced: true, egressEnforced: true });
  });

  it("only the three names are modes", () => {
    assert.deepEqual(["default", "always", "never", "Always", ""].map(isPolicyEnforcementMode), [true, true, true, false, false]);
  });
});
