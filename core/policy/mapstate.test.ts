// The lookup order shared with bpf/lib/policy.h: peer before wildcard, protocol before ANY, longest port prefix.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { PolicyEntry, SubjectPolicy } from "../model.ts";
import { DeltaCollector, lookup } from "./mapstate.ts";

function entry(
  peer: number,
  proto: number,
  port: number,
  portPrefixLen: number,
  verdict: "allow" | "deny",
  ruleId: number,
): PolicyEntry {
  return {
    subject: 300,
    direction: "ingress",
    peer,
    proto,
    port,
    portPrefixLen,
    verdict,
    proxyPort: 0,
    ruleId,
  };
}

const policy: SubjectPolicy = {
  subject: 300,
  ingressEnforced: true,
  egressEnforced: false,
  entries: [
    entry(400, 6, 80, 15, "allow", 1), // peer 400, TCP 80-81
    entry(400, 6, 81, 16, "deny", 2), // peer 400, TCP 81 (longer prefix)
    entry(400, 0, 0, 0, "deny", 3), // peer 400, any protocol
    entry(0, 6, 443, 16, "allow", 4), // anyone, TCP 443
    entry(0, 0, 0, 0, "allow", 5), // anyone, anything
    entry(500, 17, 0, 0, "allow", 6), // peer 500, every UDP port
  ],
};

test("level 1: (peer, proto, port) with the longest port prefix wins", () => {
  assert.equal(lookup(policy, "ingress", 400, 6, 80).entry?.ruleId, 1);
  assert.equal(lookup(policy, "ingress", 400, 6, 81).entry?.ruleId, 2);
  assert.equal(lookup(policy, "ingress", 400, 6, 81).verdict, "deny");
});

test("level 2: (peer, ANY) before any wildcard-peer entry", () => {
  // TCP 443 has a wildcard-peer allow, but peer 400's ANY entry comes first.
  assert.equal(lookup(policy, "ingress", 400, 6, 443).entry?.ruleId, 3);
  assert.equal(lookup(policy, "ingress", 400, 17, 53).verdict, "deny");
});

test("levels 3 and 4: wildcard peer, protocol before ANY", () => {
  assert.equal(lookup(policy, "ingress", 999, 6, 443).entry?.ruleId, 4);
  assert.equal(lookup(policy, "ingress", 999, 6, 22).entry?.ruleId, 5);
  // Peer 500 has only UDP entries: TCP falls through to the wildcard levels.
  assert.equal(lookup(policy, "ingress", 500, 6, 443).entry?.ruleId, 4);
  assert.equal(lookup(policy, "ingress", 500, 17, 9999).entry?.ruleId, 6);
});

test("a miss falls back to the direction's default", () => {
  const empty: SubjectPolicy = { subject: 300, ingressEnforced: true, egressEnforced: false, entries: [] };
  assert.deepEqual(lookup(empty, "ingress", 1, 6, 80), { verdict: "deny" });
  assert.deepEqual(lookup(empty, "egress", 1, 6, 80), { verdict: "allow" });
  // Entries of the other direction never match.
  assert.deepEqual(lookup(policy, "egress", 400, 6, 80), { verdict: "allow" });
});

test("a delta nets one change's writes per key: an update is one added entry, a write taken back is nothing", () => {
  const e = (peer: number, port: number, ruleId: number): PolicyEntry => ({ subject: 300, direction: "ingress", peer, proto: 6, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId });
  const d = new DeltaCollector();
  d.remove(300, e(1, 80, 1)); // updated in place
  d.add(300, e(1, 80, 2));
  d.remove(300, e(1, 81, 1)); // gone
  d.add(300, e(2, 90, 1)); // new, then taken back
  d.remove(300, e(2, 90, 1));
  d.remove(300, e(3, 70, 1)); // rewritten with the same value
  d.add(300, e(3, 70, 1));
  d.add(300, e(4, 60, 1)); // new
  const [delta, ...rest] = d.deltas(() => ({ ingress: true, egress: false }));
  assert.equal(rest.length, 0);
  assert.deepEqual(delta?.added, [e(1, 80, 2), e(4, 60, 1)]);
  assert.deepEqual(delta?.removed, [e(1, 81, 1)]);
  assert.equal(delta?.ingressEnforced, true);
});
