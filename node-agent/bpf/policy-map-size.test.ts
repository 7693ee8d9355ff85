// --policy-map-max with the real kernel: the policy map has the size asked, and a restart with another size keeps every pinned entry or refuses.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { Datapath, MAPS, PROGRAMS, PolicyMapTooSmall } from "./datapath.ts";
import { BPFFS_ROOT, closePinnedMap, openPinnedMap, testRun } from "./loader.ts";
import { frame, TCP_SYN } from "./frames.ts";
import { DEFAULT_POLICY_MAP_ENTRIES } from "./layout.ts";

const SCOPE = `test-policy-map-size-${process.pid}`;
const LO = 1;
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const POD = { ip: "10.0.0.1", identity: 1000 };
const ALLOWED = { ip: "10.1.0.5", identity: 3000 };
const DENIED = { ip: "10.1.0.6", identity: 3001 };
const PORT = 80;

const open: Datapath[] = [];
function load(policyMapEntries?: number): Datapath {
  const dp = Datapath.load(SCOPE, policyMapEntries !== undefined ? { policyMapEntries } : {});
  open.push(dp);
  return dp;
}
after(() => {
  for (const dp of open) dp.close();
  fs.rmSync(path.join(BPFFS_ROOT, SCOPE), { recursive: true, force: true });
});

/** n entries: a deny of DENIED and a wildcard allow on PORT (the deny decides only if it is in the map), then n-2 other peers. */
function policyOf(n: number): SubjectPolicy {
  const base = { subject: POD.identity, direction: "egress" as const, proto: PROTO_NUMBER.TCP, port: PORT, portPrefixLen: 16, proxyPort: 0 };
  const entries: PolicyEntry[] = [
    { ...base, peer: DENIED.identity, verdict: "deny", ruleId: 1 },
    { ...base, peer: 0, verdict: "allow", ruleId: 2 },
  ];
  for (let i = 2; i < n; i++) entries.push({ ...base, peer: 5000 + i, verdict: "allow", ruleId: 100 + i });
  return { subject: POD.identity, ingressEnforced: true, egressEnforced: true, entries };
}

function egress(dp: Datapath, to: { ip: string }, sport: number): number {
  const f = frame({ src: POD.ip, dst: to.ip, proto: PROTO_NUMBER.TCP, sport, dport: PORT, tcpFlags: TCP_SYN });
  return testRun(dp.programFd(PROGRAMS.fromContainer), f, { ifindex: LO }).retval;
}

function pinnedPolicyMap(): { maxEntries: number; entries: number } {
  const m = openPinnedMap(path.join(BPFFS_ROOT, SCOPE, MAPS.policy), "policy");
  try {
    return { maxEntries: m.maxEntries(), entries: m.keys().length };
  } finally {
    closePinnedMap(m);
  }
}

test("the policy map has the size asked; without one, the datapath's 262,144", () => {
  const dp = load();
  assert.equal(dp.object.map(MAPS.policy).maxEntries(), DEFAULT_POLICY_MAP_ENTRIES);
  dp.close();
  const same = load(DEFAULT_POLICY_MAP_ENTRIES);
  assert.equal(same.object.reused, true, "the default size asked for reuses the programs a load without a size pinned");
  same.close();
  const sized = load(1024);
  assert.equal(sized.object.map(MAPS.policy).maxEntries(), 1024);
  assert.equal(pinnedPolicyMap().maxEntries, 1024, "the pinned map is the one of the new size");
  assert.equal(sized.lostPinnedState(), false, "an empty map replaced loses nothing");
  sized.close();
});

test("a restart with a larger size keeps every entry and every verdict; the entry that did not fit before fits now", () => {
  const dp = load(1024);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
  for (const p of [ALLOWED, DENIED]) dp.setIpcache({ cidr: `${p.ip}/32`, identity: p.identity });
  assert.deepEqual(dp.setSubjectPolicy(policyOf(1000), [{ ip: POD.ip, ifindex: LO }]), { installed: true });
  assert.equal(dp.setSubjectPolicy(policyOf(1100)).installed, false, "1,100 entries do not fit 1,024");
  assert.deepEqual(dp.setSubjectPolicy(policyOf(1000), [{ ip: POD.ip, ifindex: LO }]), { installed: true });
  dp.close();

  const bigger = load(2048);
  assert.equal(bigger.object.map(MAPS.policy).maxEntries(), 2048);
  assert.deepEqual(pinnedPolicyMap(), { maxEntries: 2048, entries: 1000 });
  assert.equal(bigger.lostPinnedState(), false, "every entry came along: no snapshot needed");
  assert.equal(egress(bigger, ALLOWED, 40000), TC_ACT_OK, "the allow is there");
  assert.equal(egress(bigger, DENIED, 40001), TC_ACT_SHOT, "and the deny beside it");
  assert.deepEqual(bigger.setSubjectPolicy(policyOf(1100), [{ ip: POD.ip, ifindex: LO }]), { installed: true });
  bigger.close();
});

test("a restart with a size below the entries pinned is refused naming both, and leaves the pinned map as it was", () => {
  assert.throws(
    () => load(1024),
    (err: unknown) => err instanceof PolicyMapTooSmall && /a policy map of 1024 entries cannot hold the 1100 entries pinned at .*membrane_policy: use a size of at least 1100/.test(err.message),
  );
  assert.deepEqual(pinnedPolicyMap(), { maxEntries: 2048, entries: 1100 });

  // A smaller size that holds them is a replacement like any other: every entry and verdict kept.
  const smaller = load(1536);
  assert.deepEqual(pinnedPolicyMap(), { maxEntries: 1536, entries: 1100 });
  assert.equal(smaller.lostPinnedState(), false);
  assert.equal(egress(smaller, ALLOWED, 40002), TC_ACT_OK);
  assert.equal(egress(smaller, DENIED, 40003), TC_ACT_SHOT);
  smaller.clearAll();
});
