// A policy that does not fit the policy map fails closed for its endpoints (POLICY_OVERFLOW), never the node; kernel verdicts via BPF_PROG_TEST_RUN.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { Datapath, MAPS, PROGRAMS } from "./datapath.ts";
import { testRun } from "./loader.ts";
import { frame, TCP_ACK, TCP_SYN } from "./frames.ts";
import { CONST, DROP_REASON_CODES, encodeEndpointKey, LAYOUT, type VerdictEvent } from "./layout.ts";

const SCOPE = `test-overflow-${process.pid}`;
const MAP_SIZE = 8; // the policy map of this test holds 8 entries
const LO = 1;
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const OVERFLOW = DROP_REASON_CODES.DROP_POLICY_OVERFLOW as 12;

const POD_A = { ip: "10.0.0.1", identity: 1000 };
const POD_B = { ip: "10.0.0.2", identity: 1001 };
const POD_B2 = { ip: "10.0.0.3", identity: 1001 }; // a second pod of B's identity
const PEER = { ip: "10.1.0.5", identity: 3000 };
const PORT = 80;

let dp: Datapath;
let events: VerdictEvent[] = [];
let drainEvents: () => number;

before(() => {
  dp = Datapath.load(SCOPE, { policyMapEntries: MAP_SIZE });
  drainEvents = dp.onEvents((e) => events.push(e));
});
after(() => {
  dp?.clearAll();
  dp?.close();
  dp?.unpin();
});
beforeEach(() => {
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: `${PEER.ip}/32`, identity: PEER.identity });
  drainEvents();
  events = [];
});

/** n egress allows for the subject: PEER on PORT, then n-1 other peers. */
function policyOf(subject: number, n: number): SubjectPolicy {
  const entries: PolicyEntry[] = [];
  for (let i = 0; i < n; i++) {
    const peer = i === 0 ? PEER.identity : 5000 + i;
    entries.push({ subject, direction: "egress", peer, proto: PROTO_NUMBER.TCP, port: PORT, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: subject * 100 + i });
  }
  return { subject, ingressEnforced: true, egressEnforced: true, entries };
}

function egress(pod: { ip: string }, sport: number, tcpFlags = TCP_SYN): number {
  const f = frame({ src: pod.ip, dst: PEER.ip, proto: PROTO_NUMBER.TCP, sport, dport: PORT, tcpFlags });
  return testRun(dp.programFd(PROGRAMS.fromContainer), f, { ifindex: LO }).retval;
}

function ingress(pod: { ip: string }, sport: number): number {
  const f = frame({ src: PEER.ip, dst: pod.ip, proto: PROTO_NUMBER.TCP, sport, dport: PORT });
  return testRun(dp.programFd(PROGRAMS.toContainer), f, { ifindex: LO }).retval;
}

/** PEER's answer to the pod's connection from sport (to-container, a reply). */
function reply(pod: { ip: string }, sport: number): number {
  const f = frame({ src: PEER.ip, dst: pod.ip, proto: PROTO_NUMBER.TCP, sport: PORT, dport: sport, tcpFlags: TCP_ACK });
  return testRun(dp.programFd(PROGRAMS.toContainer), f, { ifindex: LO }).retval;
}

function endpointFlags(ip: string): number {
  const v = dp.object.map(MAPS.endpoints).lookup(encodeEndpointKey(ip));
  assert.ok(v, `endpoint ${ip} in the map`);
  return v.readUInt32LE(LAYOUT.endpoint_value.fields.flags.offset);
}

const policyEntries = (): number => dp.object.map(MAPS.policy).keys().length;

test("the policy map size is a load-time option: the ninth entry does not fit an 8-entry map", () => {
  const r = dp.setSubjectPolicy(policyOf(POD_A.identity, MAP_SIZE), [{ ip: POD_A.ip, ifindex: LO }]);
  assert.deepEqual(r, { installed: true });
  const over = dp.setSubjectPolicy(policyOf(POD_B.identity, 1), [{ ip: POD_B.ip, ifindex: LO }]);
  assert.equal(over.installed, false);
  assert.match(!over.installed ? over.reason : "", /policy map full: 1 entries of identity 1001 do not fit .*E2BIG/);
});

test("an endpoint whose policy overflows drops everything, established flows included, with reason POLICY_OVERFLOW; others keep their policy", () => {
  assert.deepEqual(dp.setSubjectPolicy(policyOf(POD_A.identity, 3), [{ ip: POD_A.ip, ifindex: LO }]), { installed: true });
  assert.deepEqual(dp.setSubjectPolicy(policyOf(POD_B.identity, 2), [{ ip: POD_B.ip, ifindex: LO }, { ip: POD_B2.ip, ifindex: LO }]), { installed: true });
  assert.equal(egress(POD_B, 41000), TC_ACT_OK, "B's allowed connection opens");
  assert.equal(egress(POD_B, 41000, TCP_ACK), TC_ACT_OK, "and is established");
  assert.equal(reply(POD_B, 41000), TC_ACT_OK, "its replies pass");
  assert.equal(egress(POD_B, 41000, TCP_ACK), TC_ACT_OK, "known packets (stamped: no endpoint lookup, bpf/datapath.c endpoint_fast_path)");

  // B's new policy needs 6 entries; 3 (A) + 6 > 8: it cannot be installed.
  const before = dp.dropCount(OVERFLOW);
  const r = dp.setSubjectPolicy(policyOf(POD_B.identity, 6), [{ ip: POD_B.ip, ifindex: LO }]);
  assert.equal(r.installed, false);
  assert.deepEqual([...dp.failedSubjects()], [POD_B.identity]);
  // Both pods of identity B are flagged (the second one was not named in the call), A is not.
  assert.ok(endpointFlags(POD_B.ip) & CONST.EP_F_POLICY_FAILED);
  assert.ok(endpointFlags(POD_B2.ip) & CONST.EP_F_POLICY_FAILED);
  assert.equal(endpointFlags(POD_A.ip) & CONST.EP_F_POLICY_FAILED, 0);
  // B's old entries are gone (they decide nothing now); A's three stay.
  assert.equal(policyEntries(), 3);

  assert.equal(egress(POD_B, 41000, TCP_ACK), TC_ACT_SHOT, "B's established flow is cut");
  assert.equal(reply(POD_B, 41000), TC_ACT_SHOT, "both ways");
  assert.equal(egress(POD_B, 41001), TC_ACT_SHOT, "B's new flows are dropped");
  assert.equal(ingress(POD_B2, 42000), TC_ACT_SHOT, "traffic to B's other pod is dropped");
  assert.equal(egress(POD_A, 43000), TC_ACT_OK, "A still connects");
  assert.equal(dp.dropCount(OVERFLOW), before + 4n);

  drainEvents();
  const drops = events.filter((e) => e.verdict === "dropped" && e.reasonCode === OVERFLOW);
  assert.equal(drops.length, 4);
  const first = drops.find((e) => e.sport === 41000)!;
  assert.equal(first.reason, "policy did not fit the policy map (endpoint fails closed)");
  assert.equal(first.srcIdentity, POD_B.identity);
  assert.equal(first.direction, "egress");
  assert.equal(drops.find((e) => e.direction === "ingress")?.dstIdentity, POD_B.identity);
  assert.equal(dp.dropCounters().byReason["policy did not fit the policy map (endpoint fails closed)"], dp.dropCount(OVERFLOW));
});

test("a re-written endpoint of a failed identity stays failed; a policy that fits lifts the failure", () => {
  dp.setSubjectPolicy(policyOf(POD_A.identity, 4), [{ ip: POD_A.ip, ifindex: LO }]);
  assert.equal(dp.setSubjectPolicy(policyOf(POD_B.identity, 5), [{ ip: POD_B.ip, ifindex: LO }]).installed, false);
  // The agent re-writes endpoints from its state (e.g. a new pod of that identity): still fail closed.
  dp.setEndpoint({ ip: POD_B2.ip, ifindex: LO, identity: POD_B.identity, ingressEnforced: true, egressEnforced: true });
  assert.ok(endpointFlags(POD_B2.ip) & CONST.EP_F_POLICY_FAILED);
  assert.equal(egress(POD_B2, 44000), TC_ACT_SHOT);

  // B's policy shrinks to 4: 4 + 4 fits.
  assert.deepEqual(dp.setSubjectPolicy(policyOf(POD_B.identity, 4), [{ ip: POD_B.ip, ifindex: LO }]), { installed: true });
  assert.equal(dp.failedSubjects().size, 0);
  assert.equal(endpointFlags(POD_B.ip) & CONST.EP_F_POLICY_FAILED, 0);
  assert.equal(endpointFlags(POD_B2.ip) & CONST.EP_F_POLICY_FAILED, 0);
  assert.equal(egress(POD_B, 44001), TC_ACT_OK, "B's allowed peer passes again");
  assert.equal(ingress(POD_B, 44002), TC_ACT_SHOT, "and its policy applies: ingress is default-deny");
  drainEvents();
  assert.equal(events.find((e) => e.sport === 44002)?.reasonCode, DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY);
});

test("after a restart, a flag left on an endpoint by the previous process is lifted by the first install that fits", () => {
  dp.setSubjectPolicy(policyOf(POD_A.identity, 4), [{ ip: POD_A.ip, ifindex: LO }]);
  assert.equal(dp.setSubjectPolicy(policyOf(POD_B.identity, 5), [{ ip: POD_B.ip, ifindex: LO }]).installed, false);
  const restarted = Datapath.load(SCOPE, { policyMapEntries: MAP_SIZE });
  try {
    assert.ok(endpointFlags(POD_B.ip) & CONST.EP_F_POLICY_FAILED, "the pinned endpoint is still failed closed");
    assert.deepEqual(restarted.setSubjectPolicy(policyOf(POD_B.identity, 2)), { installed: true });
    assert.equal(endpointFlags(POD_B.ip) & CONST.EP_F_POLICY_FAILED, 0);
    assert.equal(egress(POD_B, 45000), TC_ACT_OK);
  } finally {
    restarted.close();
  }
});
