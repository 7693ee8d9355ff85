// Kernel verdicts via BPF_PROG_TEST_RUN on crafted frames, each compared with core's reference lookup.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import fc from "fast-check";
import { lookup } from "../../core/policy/mapstate.ts";
import { compileAll } from "../../core/compiler.ts";
import { securityLabels } from "../../core/labels.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, IDENTITY, LOCAL_IDENTITY_FLAG, MAX_LOCAL_IDENTITY, MIN_FQDN_IDENTITY, RESERVED_IDENTITIES, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER } from "../../core/identity.ts";
import { PROTO_NUMBER, type Direction, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { rangeToPrefixes } from "../../core/portprefix.ts";
import { Datapath, MAPS, PROGRAMS } from "./datapath.ts";
import { testRun } from "./loader.ts";
import { frame, TCP_ACK, TCP_SYN } from "./frames.ts";
import { CONST, DROP_REASON_CODES, LAYOUT, decodePolicyLensValue, encodePolicyLensKey, encodePolicyLensValue, policyLensOf, type PolicyLens, type VerdictEvent } from "./layout.ts";

const SCOPE = `test-testrun-${process.pid}`;
const LO = 1; // BPF_PROG_TEST_RUN runs tc programs on the loopback device
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

// Two local pods (subjects) and remote peers known through the ipcache.
const POD_A = { ip: "10.0.0.1", ip6: "fd00::1", identity: 1000 };
const POD_B = { ip: "10.0.0.2", ip6: "fd00::2", identity: 1001 };
const PEER_X = { ip: "10.1.0.5", ip6: "fd00:1::5", identity: 3000 };
const PEER_Y = { ip: "10.1.1.5", ip6: "fd00:1:0:1::5", identity: 3001 };
/** A peer outside the `cluster` class (a CIDR identity): class entries never answer for it. */
const PEER_W = { ip: "10.1.2.5", ip6: "fd00:1:0:2::5", identity: LOCAL_IDENTITY_FLAG + 7 };
/** A reserved peer in the `cluster` class that is not a pod (reserved:health): every-pod entries never answer for it. */
const PEER_H = { ip: "10.1.3.5", ip6: "fd00:1:0:3::5", identity: IDENTITY.health };
const WORLD_IP = "192.0.2.9";
/** The world class's peers (core/identity.ts inWorldClass): an address outside the ipcache (reserved world), world-ipv4, world-ipv6, the last operator CIDR identity. */
const PEER_WORLD = { ip: WORLD_IP, ip6: "2001:db8::9", identity: IDENTITY.world };
const PEER_W4 = { ip: "10.1.5.5", ip6: "fd00:1:0:5::5", identity: IDENTITY.worldIPv4 };
const PEER_W6 = { ip: "10.1.6.5", ip6: "fd00:1:0:6::5", identity: IDENTITY.worldIPv6 };
const PEER_L = { ip: "10.1.7.5", ip6: "fd00:1:0:7::5", identity: MIN_FQDN_IDENTITY - 1 };
/** An agent's FQDN identity (a learned address), the first of the agents' half: a world peer too. */
const PEER_F = { ip: "10.1.4.5", ip6: "fd00:1:0:4::5", identity: MIN_FQDN_IDENTITY };
/** The last local identity (an agent's FQDN one): still in the world class. */
const PEER_FL = { ip: "10.1.8.5", ip6: "fd00:1:0:8::5", identity: MAX_LOCAL_IDENTITY };
/** The ipcache of the peers beyond X, Y and W (each family's prefix of the peer's addresses). */
function setWorldPeersIpcache(): void {
  for (const [n, p] of [[3, PEER_H], [4, PEER_F], [5, PEER_W4], [6, PEER_W6], [7, PEER_L], [8, PEER_FL]] as const) {
    dp.setIpcache({ cidr: `10.1.${n}.0/24`, identity: p.identity });
    dp.setIpcache({ cidr: `fd00:1:0:${n}::/64`, identity: p.identity });
  }
}

let dp: Datapath;
let events: VerdictEvent[] = [];
let drainEvents: () => number;

before(() => {
  dp = Datapath.load(SCOPE);
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
  dp.setIpcache({ cidr: "10.1.0.0/24", identity: PEER_X.identity });
  dp.setIpcache({ cidr: "fd00:1::/64", identity: PEER_X.identity });
  dp.setIpcache({ cidr: "10.1.1.0/24", identity: PEER_Y.identity });
  dp.setIpcache({ cidr: "fd00:1:0:1::/64", identity: PEER_Y.identity });
  dp.setIpcache({ cidr: "10.1.2.0/24", identity: PEER_W.identity });
  dp.setIpcache({ cidr: "fd00:1:0:2::/64", identity: PEER_W.identity });
  drainEvents();
  events = [];
});

let nextRule = 1;
function entry(p: Partial<PolicyEntry> & Pick<PolicyEntry, "subject" | "direction" | "peer">): PolicyEntry {
  return { proto: 0, port: 0, portPrefixLen: 0, verdict: "allow", proxyPort: 0, ruleId: nextRule++, ...p };
}

function install(...policies: SubjectPolicy[]): void {
  for (const p of policies) {
    const pod = p.subject === POD_A.identity ? POD_A : POD_B;
    dp.setSubjectPolicy(p, [
      { ip: pod.ip, ifindex: LO },
      { ip: pod.ip6, ifindex: LO },
    ]);
  }
}

function verdictOf(retval: number): "allow" | "deny" {
  if (retval === TC_ACT_OK || retval === TC_ACT_REDIRECT) return "allow";
  assert.equal(retval, TC_ACT_SHOT, `unexpected tc return ${retval}`);
  return "deny";
}

interface Probe {
  readonly direction: Direction;
  readonly pod: typeof POD_A;
  readonly peer: { ip: string; ip6: string; identity: number };
  readonly proto: number;
  readonly port: number;
  readonly v6?: boolean;
  readonly sport?: number;
}

/** Sends one new-flow packet through the program for the direction and returns the kernel verdict. */
function kernelVerdict(p: Probe): "allow" | "deny" {
  dp.clearConntrack();
  const podIp = p.v6 ? p.pod.ip6 : p.pod.ip;
  const peerIp = p.v6 ? p.peer.ip6 : p.peer.ip;
  const spec =
    p.direction === "egress"
      ? { src: podIp, dst: peerIp, sport: p.sport ?? 40000, dport: p.port }
      : { src: peerIp, dst: podIp, sport: p.sport ?? 40000, dport: p.port };
  const prog = dp.programFd(p.direction === "egress" ? PROGRAMS.fromContainer : PROGRAMS.toContainer);
  return verdictOf(testRun(prog, frame({ ...spec, proto: p.proto }), { ifindex: LO }).retval);
}

/** The peer lens the datapath holds for a subject's egress (0 when it has none). */
function egressPeerLens(subject: number): number {
  const lens = dp.object.map(MAPS.policyLens).lookup(encodePolicyLensKey(subject, "egress"));
  return lens ? decodePolicyLensValue(lens).peerLens : 0;
}

/** Asserts kernel verdict == expected == core's lookup verdict. */
function expectVerdict(policy: SubjectPolicy, p: Probe, expected: "allow" | "deny"): void {
  const core = lookup(policy, p.direction, p.peer.identity, p.proto, p.port, undefined, p.v6 ? 6 : 4).verdict;
  assert.equal(core, expected, `core lookup for ${JSON.stringify(p)}`);
  assert.equal(kernelVerdict(p), expected, `kernel verdict for ${JSON.stringify(p)}`);
}

const TCP = PROTO_NUMBER.TCP;
const UDP = PROTO_NUMBER.UDP;

test("identity allow: the named peer on the named port passes, other ports are default-denied", () => {
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: false, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: 80, portPrefixLen: 16 })],
  };
  install(policy);
  for (const v6 of [false, true]) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 80, v6 }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 81, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_Y, proto: TCP, port: 80, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port: 80, v6 }, "deny");
  }
});

test("wildcard peer: port 443 is open to every identity, world included", () => {
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: true, egressEnforced: false,
    entries: [entry({ subject: POD_A.identity, direction: "ingress", peer: 0, proto: TCP, port: 443, portPrefixLen: 16 })],
  };
  install(policy);
  const world = { ip: WORLD_IP, ip6: "2001:db8::9", identity: 2 };
  for (const peer of [PEER_X, PEER_Y, world]) {
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer, proto: TCP, port: 443 }, "allow");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer, proto: TCP, port: 444 }, "deny");
  }
});

test("wildcard port: a peer allowed on any protocol passes on every port", () => {
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: false, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity })],
  };
  install(policy);
  for (const [proto, port] of [[TCP, 1], [UDP, 53], [TCP, 65535]] as const) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto, port }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_Y, proto, port }, "deny");
  }
});

test("port range as prefixes: 8000-8100 passes inside and is denied just outside", () => {
  const entries = rangeToPrefixes(8000, 8100).map((b) =>
    entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: UDP, port: b.port, portPrefixLen: b.prefixLen }),
  );
  const policy: SubjectPolicy = { subject: POD_A.identity, ingressEnforced: false, egressEnforced: true, entries };
  install(policy);
  for (const port of [8000, 8001, 8050, 8063, 8064, 8099, 8100]) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port }, "allow");
  }
  for (const port of [7999, 8101, 8128, 80]) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port }, "deny");
  }
});

test("nested port prefixes: the longest prefix the subject uses decides, at the peer and at the wildcard level", () => {
  const e = (peer: number, port: number, portPrefixLen: number, verdict: "allow" | "deny") =>
    entry({ subject: POD_A.identity, direction: "ingress", peer, proto: TCP, port, portPrefixLen, verdict });
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: true, egressEnforced: false,
    entries: [
      e(PEER_X.identity, 8192, 3, "allow"), // 8192-16383
      e(PEER_X.identity, 8448, 8, "deny"), // 8448-8703 inside it
      e(PEER_X.identity, 8500, 16, "allow"), // one port inside the deny
      e(0, 0, 0, "deny"), // every TCP port for every peer...
      e(0, 443, 16, "allow"), // ...but 443
    ],
  };
  install(policy);
  const probe = (peer: typeof PEER_X, port: number, expected: "allow" | "deny") =>
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer, proto: TCP, port }, expected);
  probe(PEER_X, 8192, "allow");
  probe(PEER_X, 16383, "allow");
  probe(PEER_X, 8448, "deny");
  probe(PEER_X, 8703, "deny");
  probe(PEER_X, 8500, "allow");
  probe(PEER_X, 443, "allow"); // no peer-level entry matches: the wildcard level decides
  probe(PEER_X, 80, "deny");
  probe(PEER_Y, 8500, "deny");
  probe(PEER_Y, 443, "allow");
  expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_Y, proto: UDP, port: 443 }, "deny"); // default deny
});

test("the probed keys follow the policy: a replaced range stops matching, a superset changes no verdict", () => {
  const lensOf = (d: Direction): PolicyLens | undefined => {
    const v = dp.object.map(MAPS.policyLens).lookup(encodePolicyLensKey(POD_A.identity, d));
    return v && decodePolicyLensValue(v);
  };
  const range = rangeToPrefixes(1000, 1999).map((b) =>
    entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: b.port, portPrefixLen: b.prefixLen }),
  );
  const before: SubjectPolicy = { subject: POD_A.identity, ingressEnforced: false, egressEnforced: true, entries: range };
  install(before);
  assert.deepEqual(lensOf("egress"), policyLensOf(range, "egress"));
  assert.equal(lensOf("egress")?.wildcardLens, 0);
  assert.equal(lensOf("ingress"), undefined, "no ingress entry: nothing to probe");
  expectVerdict(before, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 1500 }, "allow");

  const after: SubjectPolicy = {
    ...before,
    entries: [
      entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: 2000, portPrefixLen: 16 }),
      entry({ subject: POD_A.identity, direction: "egress", peer: 0, proto: 0, port: 0, portPrefixLen: 0, verdict: "deny" }),
    ],
  };
  install(after);
  assert.deepEqual(lensOf("egress"), { peerLens: 1 << 16, wildcardLens: CONST.POLICY_LENS_ANY_PROTO }, "narrowed to the new policy's keys after the removals");
  expectVerdict(after, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 1500 }, "deny");
  expectVerdict(after, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 2000 }, "allow");
  expectVerdict(after, { direction: "egress", pod: POD_A, peer: PEER_Y, proto: UDP, port: 2000 }, "deny");

  // The state an update passes through (old ∪ new keys) only adds probes that miss.
  const all = CONST.POLICY_LENS_PORT_MASK | CONST.POLICY_LENS_ANY_PROTO;
  dp.object.map(MAPS.policyLens).update(encodePolicyLensKey(POD_A.identity, "egress"), encodePolicyLensValue({ peerLens: all, wildcardLens: all }));
  for (const port of [1500, 2000, 2001, 1]) {
    expectVerdict(after, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port }, port === 2000 ? "allow" : "deny");
  }

  install({ ...before, entries: [] });
  assert.equal(lensOf("egress"), undefined, "a subject without entries has no lens: its lookup ends after one probe");
  expectVerdict({ ...before, entries: [] }, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 2000 }, "deny");
});

test("deny over allow: a deny for one peer and port beats an allow-all, and the drop names its rule", () => {
  const deny = entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: 22, portPrefixLen: 16, verdict: "deny" });
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: false, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: 0 }), deny],
  };
  install(policy);
  const before = dp.dropCount(DROP_REASON_CODES.DROP_POLICY_DENY as 1);
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 22, sport: 41022 }, "deny");
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 23 }, "allow");
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_Y, proto: TCP, port: 22 }, "allow");
  assert.equal(dp.dropCount(1), before + 1n);
  drainEvents();
  const drop = events.find((e) => e.verdict === "dropped" && e.sport === 41022);
  assert.ok(drop, "a drop event for the denied packet");
  assert.equal(drop.ruleId, deny.ruleId);
  assert.equal(drop.reason, "policy denied");
  assert.equal(drop.srcIdentity, POD_A.identity);
  assert.equal(drop.dstIdentity, PEER_X.identity);
  assert.equal(drop.dst, PEER_X.ip);
  assert.equal(drop.dport, 22);
  assert.equal(drop.direction, "egress");
});

test("cluster class: its entries answer for a peer in the class between the peer's own and the wildcard's, never for one outside; deny kept at each level", () => {
  const A = POD_A.identity;
  const classAllow = entry({ subject: A, direction: "ingress", peer: CLUSTER_CLASS_PEER, proto: TCP, port: 8080, portPrefixLen: 16 });
  const policy: SubjectPolicy = {
    subject: A, ingressEnforced: true, egressEnforced: false,
    entries: [
      classAllow,
      // The class denies 9090 to every pod, the wildcard allows it (and 9091) to everyone: the class's deny wins for pods.
      entry({ subject: A, direction: "ingress", peer: CLUSTER_CLASS_PEER, proto: TCP, port: 9090, portPrefixLen: 16, verdict: "deny" }),
      entry({ subject: A, direction: "ingress", peer: 0, proto: TCP, port: 9090, portPrefixLen: 15 }),
      // PEER_Y's own entries (the compiler emits them whole: its deny of 8080), found before the class's.
      entry({ subject: A, direction: "ingress", peer: PEER_Y.identity, proto: TCP, port: 8080, portPrefixLen: 16, verdict: "deny" }),
    ],
  };
  install(policy);
  const lens = dp.object.map(MAPS.policyLens).lookup(encodePolicyLensKey(A, "ingress"));
  assert.ok(lens && decodePolicyLensValue(lens).peerLens & CONST.POLICY_LENS_CLASS, "the subject's lens says it has class entries");
  for (const v6 of [false, true]) {
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: TCP, port: 8080, v6, sport: 42080 }, "allow");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_W, proto: TCP, port: 8080, v6 }, "deny");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_Y, proto: TCP, port: 8080, v6 }, "deny");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: TCP, port: 9090, v6 }, "deny");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_W, proto: TCP, port: 9090, v6 }, "allow");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: TCP, port: 9091, v6 }, "allow");
    expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: UDP, port: 8080, v6 }, "deny");
  }
  drainEvents();
  const allowed = events.find((e) => e.verdict === "forwarded" && e.sport === 42080);
  assert.equal(allowed?.ruleId, classAllow.ruleId, "the flow names the class entry's rule");
  // Without class entries the subject's lens has no class bit: its lookups never probe the class's keys.
  install({ ...policy, entries: policy.entries.filter((e) => e.peer !== CLUSTER_CLASS_PEER) });
  const after = dp.object.map(MAPS.policyLens).lookup(encodePolicyLensKey(A, "ingress"));
  assert.equal(after && decodePolicyLensValue(after).peerLens & CONST.POLICY_LENS_CLASS, 0);
  expectVerdict({ ...policy, entries: policy.entries.filter((e) => e.peer !== CLUSTER_CLASS_PEER) }, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: TCP, port: 8080 }, "deny");
});

test("every-pod class: its entries answer for a pod peer after its own, instead of the cluster class's; the cluster class's for a reserved peer; never for one outside; deny kept at each level", () => {
  const A = POD_A.identity;
  dp.setIpcache({ cidr: "10.1.3.0/24", identity: PEER_H.identity });
  dp.setIpcache({ cidr: "fd00:1:0:3::/64", identity: PEER_H.identity });
  const podsAllow = entry({ subject: A, direction: "egress", peer: EVERY_POD_CLASS_PEER, proto: UDP, port: 53, portPrefixLen: 16 });
  const policy: SubjectPolicy = {
    subject: A, ingressEnforced: false, egressEnforced: true,
    entries: [
      podsAllow,
      // Every pod is denied TCP 9090, which the wildcard allows (and 9091): the class's deny wins for pods only.
      entry({ subject: A, direction: "egress", peer: EVERY_POD_CLASS_PEER, proto: TCP, port: 9090, portPrefixLen: 16, verdict: "deny" }),
      entry({ subject: A, direction: "egress", peer: 0, proto: TCP, port: 9090, portPrefixLen: 15 }),
      // The cluster class allows TCP 7000: for a pod the every-pod class answers instead (it holds the cluster entity's rules too when the compiler emits it; here it does not).
      entry({ subject: A, direction: "egress", peer: CLUSTER_CLASS_PEER, proto: TCP, port: 7000, portPrefixLen: 16 }),
      // PEER_Y's own entries (its deny of UDP 53), found before the class's.
      entry({ subject: A, direction: "egress", peer: PEER_Y.identity, proto: UDP, port: 53, portPrefixLen: 16, verdict: "deny" }),
    ],
  };
  install(policy);
  assert.ok(egressPeerLens(A) & CONST.POLICY_LENS_PODS, "the subject's lens says it has every-pod entries");
  for (const v6 of [false, true]) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port: 53, v6, sport: 43053 }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_Y, proto: UDP, port: 53, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_H, proto: UDP, port: 53, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_W, proto: UDP, port: 53, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 9090, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_H, proto: TCP, port: 9090, v6 }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 9091, v6 }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 7000, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_H, proto: TCP, port: 7000, v6 }, "allow");
  }
  drainEvents();
  const allowed = events.find((e) => e.verdict === "forwarded" && e.sport === 43053);
  assert.equal(allowed?.ruleId, podsAllow.ruleId, "the flow names the every-pod entry's rule");
  // Without every-pod entries the lens has no bit: a pod goes to the cluster class's keys again.
  const without = { ...policy, entries: policy.entries.filter((e) => e.peer !== EVERY_POD_CLASS_PEER) };
  install(without);
  assert.equal(egressPeerLens(A) & CONST.POLICY_LENS_PODS, 0);
  expectVerdict(without, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port: 53 }, "deny");
  expectVerdict(without, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 7000 }, "allow");
});

test("world class: its entries answer for a CIDR, FQDN or reserved world peer (IPv4 and IPv6) after its own, never for a pod or a reserved peer in the cluster; deny kept at each level", () => {
  const A = POD_A.identity;
  setWorldPeersIpcache();
  const worldAllow = entry({ subject: A, direction: "egress", peer: WORLD_CLASS_PEER, proto: TCP, port: 443, portPrefixLen: 16 });
  const policy: SubjectPolicy = {
    subject: A, ingressEnforced: false, egressEnforced: true,
    entries: [
      worldAllow,
      // The world is denied TCP 9090, which the wildcard allows (and 9091): the class's deny wins for world peers only.
      entry({ subject: A, direction: "egress", peer: WORLD_CLASS_PEER, proto: TCP, port: 9090, portPrefixLen: 16, verdict: "deny" }),
      entry({ subject: A, direction: "egress", peer: 0, proto: TCP, port: 9090, portPrefixLen: 15 }),
      // The cluster class allows TCP 7000: never for a world peer.
      entry({ subject: A, direction: "egress", peer: CLUSTER_CLASS_PEER, proto: TCP, port: 7000, portPrefixLen: 16 }),
      // PEER_W's own deny of TCP 443, found before the class's allow.
      entry({ subject: A, direction: "egress", peer: PEER_W.identity, proto: TCP, port: 443, portPrefixLen: 16, verdict: "deny" }),
    ],
  };
  install(policy);
  assert.ok(egressPeerLens(A) & CONST.POLICY_LENS_WORLD, "the subject's lens says it has world class entries");
  const world = [PEER_WORLD, PEER_W4, PEER_W6, PEER_L, PEER_F, PEER_FL];
  for (const v6 of [false, true]) {
    for (const peer of world) {
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 443, v6 }, "allow");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 9090, v6 }, "deny");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 9091, v6 }, "allow");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 7000, v6 }, "deny");
    }
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_W, proto: TCP, port: 443, v6 }, "deny");
    for (const peer of [PEER_X, PEER_H]) {
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 443, v6 }, "deny");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 9090, v6 }, "allow");
    }
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_H, proto: TCP, port: 7000, v6 }, "allow");
  }
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_L, proto: TCP, port: 443, sport: 43443 }, "allow");
  drainEvents();
  const allowed = events.find((e) => e.verdict === "forwarded" && e.sport === 43443);
  assert.equal(allowed?.ruleId, worldAllow.ruleId, "the flow names the world class entry's rule");
  // Without world class entries the lens has no bit and the world meets default deny.
  const without = { ...policy, entries: policy.entries.filter((e) => e.peer !== WORLD_CLASS_PEER) };
  install(without);
  assert.equal(egressPeerLens(A) & CONST.POLICY_LENS_WORLD, 0);
  for (const peer of world) expectVerdict(without, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 443 }, "deny");
});

test("world-ipv4/-ipv6 classes: a world peer other than reserved:world gets its packet's family class (IPv4 and IPv6), reserved:world the world class's; own entries and deny kept; without a family's entries the world class answers", () => {
  const A = POD_A.identity;
  setWorldPeersIpcache();
  const v4Allow = entry({ subject: A, direction: "egress", peer: WORLD_IPV4_CLASS_PEER, proto: TCP, port: 80, portPrefixLen: 16 });
  const policy: SubjectPolicy = {
    subject: A, ingressEnforced: false, egressEnforced: true,
    entries: [
      // The world class (what reserved:world gets): TCP 443. The family classes: IPv4 TCP 80, IPv6 TCP 8443, and both deny 9090, which the wildcard allows.
      entry({ subject: A, direction: "egress", peer: WORLD_CLASS_PEER, proto: TCP, port: 443, portPrefixLen: 16 }),
      v4Allow,
      entry({ subject: A, direction: "egress", peer: WORLD_IPV6_CLASS_PEER, proto: TCP, port: 8443, portPrefixLen: 16 }),
      entry({ subject: A, direction: "egress", peer: WORLD_IPV4_CLASS_PEER, proto: TCP, port: 9090, portPrefixLen: 16, verdict: "deny" }),
      entry({ subject: A, direction: "egress", peer: WORLD_IPV6_CLASS_PEER, proto: TCP, port: 9090, portPrefixLen: 16, verdict: "deny" }),
      entry({ subject: A, direction: "egress", peer: 0, proto: TCP, port: 9090, portPrefixLen: 16 }),
      // PEER_L's own deny of TCP 80, found before the class's allow.
      entry({ subject: A, direction: "egress", peer: PEER_L.identity, proto: TCP, port: 80, portPrefixLen: 16, verdict: "deny" }),
    ],
  };
  install(policy);
  const lens = egressPeerLens(A);
  assert.ok(lens & CONST.POLICY_LENS_WORLD_IPV4 && lens & CONST.POLICY_LENS_WORLD_IPV6 && lens & CONST.POLICY_LENS_WORLD, "the lens has the three world bits");
  const familyPeers = [PEER_W4, PEER_W6, PEER_F, PEER_FL];
  for (const v6 of [false, true]) {
    for (const peer of familyPeers) {
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 80, v6 }, v6 ? "deny" : "allow");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 8443, v6 }, v6 ? "allow" : "deny");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 443, v6 }, "deny");
      expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 9090, v6 }, "deny");
    }
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_L, proto: TCP, port: 80, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_L, proto: TCP, port: 8443, v6 }, v6 ? "allow" : "deny");
    // reserved:world (an address outside the ipcache): the world class's, in either family.
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_WORLD, proto: TCP, port: 443, v6 }, "allow");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_WORLD, proto: TCP, port: v6 ? 8443 : 80, v6 }, "deny");
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_WORLD, proto: TCP, port: 9090, v6 }, "allow");
    for (const peer of [PEER_X, PEER_H]) expectVerdict(policy, { direction: "egress", pod: POD_A, peer, proto: TCP, port: v6 ? 8443 : 80, v6 }, "deny");
  }
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_F, proto: TCP, port: 80, sport: 43480 }, "allow");
  drainEvents();
  assert.equal(events.find((e) => e.verdict === "forwarded" && e.sport === 43480)?.ruleId, v4Allow.ruleId, "the flow names the world-ipv4 class entry's rule");
  // Without the IPv6 class's entries its bit goes and the world class answers for IPv6 peers.
  const noV6 = { ...policy, entries: policy.entries.filter((e) => e.peer !== WORLD_IPV6_CLASS_PEER) };
  install(noV6);
  assert.equal(egressPeerLens(A) & CONST.POLICY_LENS_WORLD_IPV6, 0);
  for (const peer of familyPeers) {
    expectVerdict(noV6, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 443, v6: true }, "allow");
    expectVerdict(noV6, { direction: "egress", pod: POD_A, peer, proto: TCP, port: 80 }, "allow");
  }
});

test("dual-stack as Cilium: an address outside every ipcache entry is reserved:world-ipv4 / -ipv6 by its family, so toEntities/fromEntities [world-ipv4] reach an IPv4 one and not an IPv6 one, [world-ipv6] the reverse, [world] both, and flows name 9/10; single-stack: reserved:world (2), which neither family entity reaches", () => {
  const A = POD_A.identity;
  const ids = new Map(RESERVED_IDENTITIES.map((r) => [r.id, r.labels]));
  ids.set(A, securityLabels({ podLabels: { app: "a" }, namespace: "ns", namespaceLabels: {} }));
  const ports = (port: number): object => ({ toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] });
  const parsed = parsePolicyObject({
    apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "world-families", namespace: "ns" },
    spec: {
      endpointSelector: { matchLabels: { app: "a" } },
      egress: [{ toEntities: ["world-ipv4"], ...ports(80) }, { toEntities: ["world-ipv6"], ...ports(8443) }, { toEntities: ["world"], ...ports(443) }],
      ingress: [{ fromEntities: ["world-ipv4"], ...ports(80) }, { fromEntities: ["world-ipv6"], ...ports(8443) }],
    },
  });
  if (!parsed.ok) assert.fail(JSON.stringify(parsed.errors));
  const policy = compileAll(parsed.value, ids).snapshot(A);
  install(policy);
  // PEER_WORLD's addresses (192.0.2.9, 2001:db8::9) are in no ipcache entry, exact or prefix.
  const probe = (direction: Direction, port: number, v6: boolean, sport: number): { verdict: "allow" | "deny"; peer: number | undefined } => {
    const verdict = kernelVerdict({ direction, pod: POD_A, peer: PEER_WORLD, proto: TCP, port, v6, sport });
    drainEvents();
    const e = events.find((x) => x.sport === sport && x.dport === port);
    return { verdict, peer: direction === "egress" ? e?.dstIdentity : e?.srcIdentity };
  };
  let sport = 41000;
  for (const dualStack of [true, false]) {
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium", dualStack });
    for (const v6 of [false, true]) {
      const unknown = dualStack ? (v6 ? IDENTITY.worldIPv6 : IDENTITY.worldIPv4) : IDENTITY.world;
      assert.equal(dp.unknownAddressIdentity(v6 ? 6 : 4), unknown, "user space names the address as the kernel does");
      const what = `${dualStack ? "dual" : "single"}-stack IPv${v6 ? 6 : 4}`;
      for (const direction of ["egress", "ingress"] as const) {
        const v4Rule = probe(direction, 80, v6, sport++);
        const v6Rule = probe(direction, 8443, v6, sport++);
        assert.deepEqual(v4Rule, { verdict: dualStack && !v6 ? "allow" : "deny", peer: unknown }, `${what} ${direction} world-ipv4`);
        assert.deepEqual(v6Rule, { verdict: dualStack && v6 ? "allow" : "deny", peer: unknown }, `${what} ${direction} world-ipv6`);
        assert.equal(lookup(policy, direction, unknown, TCP, 80, undefined, v6 ? 6 : 4).verdict, v4Rule.verdict, `core agrees: ${what} ${direction} world-ipv4`);
      }
      assert.deepEqual(probe("egress", 443, v6, sport++), { verdict: "allow", peer: unknown }, `${what}: world reaches it`);
    }
  }
});

test("no policy: a subject selected by nothing is allow-all both ways", () => {
  const policy: SubjectPolicy = { subject: POD_A.identity, ingressEnforced: false, egressEnforced: false, entries: [] };
  install(policy);
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: TCP, port: 80 }, "allow");
  expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_Y, proto: UDP, port: 53, v6: true }, "allow");
});

test("default deny: an enforced direction with no matching entry drops, counted as default deny", () => {
  const policy: SubjectPolicy = { subject: POD_A.identity, ingressEnforced: true, egressEnforced: true, entries: [] };
  install(policy);
  const before = dp.dropCount(2);
  expectVerdict(policy, { direction: "ingress", pod: POD_A, peer: PEER_X, proto: TCP, port: 80 }, "deny");
  expectVerdict(policy, { direction: "egress", pod: POD_A, peer: PEER_X, proto: UDP, port: 53, v6: true }, "deny");
  assert.equal(dp.dropCount(2), before + 2n);
  drainEvents();
  const drop = events.find((e) => e.verdict === "dropped" && e.direction === "ingress");
  assert.equal(drop?.reason, "policy denied (default deny)");
  assert.equal(drop?.ruleId, undefined);
});

/** POD_A may open TCP to PEER_X:80; its ingress is enforced with nothing allowed. Conntrack starts empty. */
function egressToPeerX80(): { policy: SubjectPolicy; from: number; to: number; pass: (prog: number, f: Buffer) => "allow" | "deny" } {
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: true, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: 80, portPrefixLen: 16 })],
  };
  install(policy);
  dp.clearConntrack();
  const pass = (prog: number, f: Buffer): "allow" | "deny" => verdictOf(testRun(prog, f, { ifindex: LO }).retval);
  return { policy, from: dp.programFd(PROGRAMS.fromContainer), to: dp.programFd(PROGRAMS.toContainer), pass };
}

test("conntrack: the reply of an allowed connection passes an enforced ingress; an unsolicited packet does not", () => {
  const { policy, from, to, pass } = egressToPeerX80();
  const syn = frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40100, dport: 80, tcpFlags: TCP_SYN });
  const synAck = frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 80, dport: 40100, tcpFlags: TCP_SYN | TCP_ACK });
  const ack = frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40100, dport: 80, tcpFlags: TCP_ACK });
  const stranger = frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 80, dport: 40101, tcpFlags: TCP_SYN | TCP_ACK });
  assert.equal(pass(from, syn), "allow");
  assert.equal(pass(to, synAck), "allow", "reply");
  assert.equal(pass(from, ack), "allow", "established");
  assert.equal(pass(to, stranger), "deny", "no connection");
  assert.equal(lookup(policy, "ingress", PEER_X.identity, TCP, 40100).verdict, "deny", "core: policy alone would deny the reply");
});

test("conntrack: a SYN-ACK that answers nothing is checked by policy; one of a simultaneous open finds its own connection", () => {
  const { from, to, pass } = egressToPeerX80();
  // The pod sends a SYN and then, as in a simultaneous open, a SYN-ACK of the same tuple: its forward entry.
  const syn = frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40200, dport: 80, tcpFlags: TCP_SYN });
  const synAckSameWay = frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40200, dport: 80, tcpFlags: TCP_SYN | TCP_ACK });
  assert.equal(pass(from, syn), "allow");
  assert.equal(pass(from, synAckSameWay), "allow", "simultaneous open");
  // A SYN-ACK toward the pod for a port it never opened answers nothing: ingress policy drops it.
  const unsolicited = frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 80, dport: 40201, tcpFlags: TCP_SYN | TCP_ACK });
  drainEvents();
  events = [];
  assert.equal(pass(to, unsolicited), "deny");
  drainEvents();
  assert.equal(events.find((e) => e.verdict === "dropped")?.reason, "policy denied (default deny)");
});

test("conntrack: a reconnect from the port of a closed connection meets policy again, and its reply passes once allowed", () => {
  const { policy: allowing, from, to, pass } = egressToPeerX80();
  const out = (flags: number): Buffer => frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40300, dport: 80, tcpFlags: flags });
  const back = (flags: number): Buffer => frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 80, dport: 40300, tcpFlags: flags });
  const TCP_RST = 0x04;
  assert.equal(pass(from, out(TCP_SYN)), "allow");
  assert.equal(pass(to, back(TCP_SYN | TCP_ACK)), "allow");
  assert.equal(pass(from, out(TCP_RST)), "allow", "the reset closes the connection");
  // The same tuple again while the closed entry lingers: a new connection, so policy decides.
  install({ ...allowing, entries: [] });
  assert.equal(pass(from, out(TCP_SYN)), "deny", "policy no longer allows it");
  assert.equal(pass(to, back(TCP_SYN | TCP_ACK)), "allow", "the closing entry still lets the last reply through");
  install(allowing);
  assert.equal(pass(from, out(TCP_SYN)), "allow", "allowed again");
  assert.equal(pass(to, back(TCP_SYN | TCP_ACK)), "allow", "its reply passes");
  assert.equal(pass(from, out(TCP_ACK)), "allow", "established");
  const entries = dp.object.map(MAPS.conntrack).keys();
  assert.equal(entries.length, 1, "one entry for the tuple, reused");
});

test("ipcache: a pod's address decides over the CIDR that holds it, and deleting it falls back to the CIDR", () => {
  const POD_IN_X = { ip: "10.1.0.77", ip6: "fd00:1::77", identity: 3333 };
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: false, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: POD_IN_X.identity, proto: TCP, port: 80, portPrefixLen: 16 })],
  };
  install(policy);
  dp.setIpcache({ cidr: `${POD_IN_X.ip}/32`, identity: POD_IN_X.identity });
  dp.setIpcache({ cidr: `${POD_IN_X.ip6}/128`, identity: POD_IN_X.identity });
  for (const v6 of [false, true]) expectVerdict(policy, { direction: "egress", pod: POD_A, peer: POD_IN_X, proto: TCP, port: 80, v6 }, "allow");
  dp.deleteIpcache(`${POD_IN_X.ip}/32`);
  dp.deleteIpcache(`${POD_IN_X.ip6}/128`);
  // Now the address is PEER_X's CIDR: identity 3000, which the policy does not allow.
  for (const v6 of [false, true]) {
    expectVerdict(policy, { direction: "egress", pod: POD_A, peer: { ...POD_IN_X, identity: PEER_X.identity }, proto: TCP, port: 80, v6 }, "deny");
  }
});

test("conntrack: policy is checked for new connections only — removing the allow keeps the open one", () => {
  const allow = entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: UDP, port: 53, portPrefixLen: 16 });
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: true, entries: [allow] });
  dp.clearConntrack();
  const from = dp.programFd(PROGRAMS.fromContainer);
  const q = (sport: number): Buffer => frame({ src: POD_A.ip, dst: PEER_X.ip, proto: UDP, sport, dport: 53 });
  assert.equal(verdictOf(testRun(from, q(5000), { ifindex: LO }).retval), "allow");
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: true, entries: [] });
  assert.equal(verdictOf(testRun(from, q(5000), { ifindex: LO }).retval), "allow", "established flow");
  assert.equal(verdictOf(testRun(from, q(5001), { ifindex: LO }).retval), "deny", "new flow");
});

test("a pod's known connection to its node's enforced address passes in from-container itself; new ones and reported packets still go to pod_to_host", () => {
  const NODE_IP = "10.9.0.1";
  const KUBELET = 10250;
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: false, entries: [] });
  dp.setHostAddress({ ip: NODE_IP, ingressEnforced: true, egressEnforced: false });
  dp.setSubjectPolicy({ subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false, entries: [entry({ subject: IDENTITY.host, direction: "ingress", peer: POD_A.identity, proto: TCP, port: KUBELET, portPrefixLen: 16 })] });
  const from = dp.programFd(PROGRAMS.fromContainer);
  const out = (sport: number, flags: number): Buffer => frame({ src: POD_A.ip, dst: NODE_IP, proto: TCP, sport, dport: KUBELET, tcpFlags: flags });
  const slot = Buffer.alloc(4); // TAIL_CALL_POD_TO_HOST
  const podToHost = Buffer.alloc(4);
  podToHost.writeUInt32LE(dp.programFd(PROGRAMS.podToHost));
  const TCP_FIN = 0x01;
  assert.equal(verdictOf(testRun(from, out(40700, TCP_SYN), { ifindex: LO }).retval), "allow", "the host's ingress policy allows the pod (pod_to_host)");
  dp.object.map(MAPS.tailCalls).delete(slot);
  try {
    // Without pod_to_host (a slot never empty while the agent runs: filled at load, before any attach) the known
    // connection's packet shows that it no longer goes there; a new connection still fails closed.
    assert.equal(verdictOf(testRun(from, out(40700, TCP_ACK), { ifindex: LO }).retval), "allow", "known connection");
    drainEvents();
    events = [];
    assert.equal(verdictOf(testRun(from, out(40701, TCP_SYN), { ifindex: LO }).retval), "deny", "new connection");
    drainEvents();
    assert.equal(events.find((e) => e.verdict === "dropped")?.reasonCode, DROP_REASON_CODES.DROP_MISSED_TAIL_CALL);
  } finally {
    dp.object.map(MAPS.tailCalls).update(slot, podToHost);
  }
  // A packet the monitor aggregation reports (low: the first FIN) goes to pod_to_host, whose peer for the node's
  // address is reserved:host (not in this ipcache: from-container alone would name the world).
  dp.setMonitorAggregation("low");
  drainEvents();
  events = [];
  assert.equal(verdictOf(testRun(from, out(40700, TCP_FIN | TCP_ACK), { ifindex: LO }).retval), "allow");
  drainEvents();
  assert.deepEqual(events.map((e) => [e.verdict, e.srcIdentity, e.dstIdentity]), [["forwarded", POD_A.identity, IDENTITY.host]]);
});

test("ICMP echo: the request is checked as (proto, type); its reply passes through conntrack", () => {
  const ICMP = PROTO_NUMBER.ICMP;
  const ICMPV6 = PROTO_NUMBER.ICMPv6;
  const policy: SubjectPolicy = {
    subject: POD_A.identity, ingressEnforced: true, egressEnforced: true,
    entries: [
      entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: ICMP, port: 8, portPrefixLen: 16 }),
      entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: ICMPV6, port: 128, portPrefixLen: 16 }),
    ],
  };
  install(policy);
  dp.clearConntrack();
  const from = dp.programFd(PROGRAMS.fromContainer);
  const to = dp.programFd(PROGRAMS.toContainer);
  for (const [proto, req, rep, pod, peer] of [[ICMP, 8, 0, POD_A.ip, PEER_X.ip], [ICMPV6, 128, 129, POD_A.ip6, PEER_X.ip6]] as const) {
    assert.equal(lookup(policy, "egress", PEER_X.identity, proto, req).verdict, "allow");
    assert.equal(verdictOf(testRun(from, frame({ src: pod, dst: peer, proto, sport: 77, dport: req }), { ifindex: LO }).retval), "allow", `echo request ${proto}`);
    assert.equal(verdictOf(testRun(to, frame({ src: peer, dst: pod, proto, sport: 77, dport: rep }), { ifindex: LO }).retval), "allow", `echo reply ${proto}`);
    assert.equal(verdictOf(testRun(to, frame({ src: peer, dst: pod, proto, sport: 78, dport: rep }), { ifindex: LO }).retval), "deny", `unsolicited reply ${proto}`);
    assert.equal(verdictOf(testRun(from, frame({ src: pod, dst: PEER_Y.ip.includes(".") && proto === ICMP ? PEER_Y.ip : PEER_Y.ip6, proto, sport: 79, dport: req }), { ifindex: LO }).retval), "deny", `echo to another peer ${proto}`);
  }
});

test("ICMP events carry the message's code beside its type (destination unreachable: port, admin-prohibited; echo: 0); other protocols have none", () => {
  install({ subject: POD_A.identity, ingressEnforced: true, egressEnforced: true, entries: [] }); // default deny: every packet is a reported drop
  const from = dp.programFd(PROGRAMS.fromContainer);
  const sent = [
    { proto: PROTO_NUMBER.ICMP, src: POD_A.ip, dst: PEER_X.ip, type: 3, code: 3 },
    { proto: PROTO_NUMBER.ICMP, src: POD_A.ip, dst: PEER_X.ip, type: 3, code: 13 },
    { proto: PROTO_NUMBER.ICMPv6, src: POD_A.ip6, dst: PEER_X.ip6, type: 1, code: 4 },
    { proto: PROTO_NUMBER.ICMP, src: POD_A.ip, dst: PEER_X.ip, type: 8, code: 0 },
  ];
  for (const p of sent) testRun(from, frame({ src: p.src, dst: p.dst, proto: p.proto, sport: 0, dport: p.type, icmpCode: p.code }), { ifindex: LO });
  testRun(from, frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40000, dport: 80 }), { ifindex: LO });
  drainEvents();
  assert.deepEqual(
    events.map((e) => [e.proto, e.dport, e.icmpCode]),
    [...sent.map((p) => [p.proto, p.type, p.code]), [TCP, 80, undefined]],
  );
});

test("spoofed source: a packet whose source is not the pod behind the interface is dropped", () => {
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: false, entries: [] });
  dp.setEndpoint({ ip: POD_B.ip, ifindex: 999, identity: POD_B.identity, ingressEnforced: false, egressEnforced: false });
  const from = dp.programFd(PROGRAMS.fromContainer);
  const before = dp.dropCount(3);
  for (const src of ["10.0.0.99", POD_B.ip /* another pod's address, other interface */, PEER_X.ip]) {
    const r = testRun(from, frame({ src, dst: PEER_X.ip, proto: TCP, sport: 40000, dport: 80 }), { ifindex: LO });
    assert.equal(verdictOf(r.retval), "deny", src);
  }
  assert.equal(dp.dropCount(3), before + 3n);
  drainEvents();
  assert.ok(events.some((e) => e.reason === "spoofed source" && e.src === "10.0.0.99"));
});

test("to-container drops packets for an address that is no endpoint of this interface", () => {
  const to = dp.programFd(PROGRAMS.toContainer);
  const r = testRun(to, frame({ src: PEER_X.ip, dst: "10.0.0.77", proto: TCP, sport: 1, dport: 80 }), { ifindex: LO });
  assert.equal(verdictOf(r.retval), "deny");
});

test("egress to a pod on another node is tunnelled (identity in the VNI) when a VXLAN device is set, dropped when not", () => {
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: false, entries: [] });
  dp.setIpcache({ cidr: "10.2.0.7/32", identity: 4000, tunnelEndpoint: "192.168.50.2" });
  const from = dp.programFd(PROGRAMS.fromContainer);
  const f = frame({ src: POD_A.ip, dst: "10.2.0.7", proto: TCP, sport: 40000, dport: 80 });
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
  assert.equal(testRun(from, f, { ifindex: LO }).retval, TC_ACT_SHOT, "no tunnel device: fail closed");
  dp.clearConntrack();
  dp.setConfig({ vxlanIfindex: LO, monitorAggregation: "maximum" });
  assert.equal(testRun(from, f, { ifindex: LO }).retval, TC_ACT_REDIRECT);
});

test("every packet of a known flow with a pod on another node is tunnelled: egress, and replies to peers that came in from another node", () => {
  install({ subject: POD_A.identity, ingressEnforced: false, egressEnforced: false, entries: [] });
  dp.setIpcache({ cidr: "10.2.0.0/24", identity: 4000, tunnelEndpoint: "192.168.50.2" });
  dp.setConfig({ vxlanIfindex: LO, monitorAggregation: "maximum" });
  const from = dp.programFd(PROGRAMS.fromContainer);
  const to = dp.programFd(PROGRAMS.toContainer);
  const tcp = (src: string, dst: string, sport: number, dport: number, tcpFlags: number): Buffer => frame({ src, dst, proto: TCP, sport, dport, tcpFlags });
  // The pod opens a connection to a remote pod.
  assert.equal(testRun(from, tcp(POD_A.ip, "10.2.0.7", 40000, 80, TCP_SYN), { ifindex: LO }).retval, TC_ACT_REDIRECT);
  assert.equal(testRun(to, tcp("10.2.0.7", POD_A.ip, 80, 40000, TCP_SYN | TCP_ACK), { ifindex: LO }).retval, TC_ACT_OK);
  for (let i = 0; i < 3; i++) assert.equal(testRun(from, tcp(POD_A.ip, "10.2.0.7", 40000, 80, TCP_ACK), { ifindex: LO }).retval, TC_ACT_REDIRECT, `established packet ${i}`);
  // A remote pod connects to ours, known by the ipcache or vouched for by from-overlay (the mark): the replies go back through the tunnel.
  for (const [peer, mark] of [["10.2.0.8", 0], ["10.2.0.9", 0x0e000000 | 4000]] as const) {
    assert.equal(testRun(to, tcp(peer, POD_A.ip, 41000, 8080, TCP_SYN), { ifindex: LO, mark }).retval, TC_ACT_OK);
    assert.equal(testRun(from, tcp(POD_A.ip, peer, 8080, 41000, TCP_SYN | TCP_ACK), { ifindex: LO }).retval, TC_ACT_REDIRECT, `reply to ${peer}`);
    assert.equal(testRun(from, tcp(POD_A.ip, peer, 8080, 41000, TCP_ACK), { ifindex: LO }).retval, TC_ACT_REDIRECT, `later reply to ${peer}`);
  }
  // A flow with a peer on this side of the tunnel is not redirected, first packet or later.
  assert.equal(testRun(from, tcp(POD_A.ip, PEER_X.ip, 40001, 80, TCP_SYN), { ifindex: LO }).retval, TC_ACT_OK);
  assert.equal(testRun(from, tcp(POD_A.ip, PEER_X.ip, 40001, 80, TCP_ACK), { ifindex: LO }).retval, TC_ACT_OK);
});

test("forwarded flows are reported once per connection, when it is created; every dropped packet is reported", () => {
  install({
    subject: POD_A.identity, ingressEnforced: true, egressEnforced: true,
    entries: [entry({ subject: POD_A.identity, direction: "egress", peer: PEER_X.identity, proto: TCP, port: 80, portPrefixLen: 16 })],
  });
  const from = dp.programFd(PROGRAMS.fromContainer);
  const to = dp.programFd(PROGRAMS.toContainer);
  const out = (flags: number): Buffer => frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 40200, dport: 80, tcpFlags: flags });
  assert.equal(testRun(from, out(TCP_SYN), { ifindex: LO }).retval, TC_ACT_OK);
  assert.equal(testRun(to, frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 80, dport: 40200, tcpFlags: TCP_SYN | TCP_ACK }), { ifindex: LO }).retval, TC_ACT_OK);
  assert.equal(testRun(from, out(TCP_ACK), { ifindex: LO, repeat: 100 }).retval, TC_ACT_OK);
  const denied = frame({ src: POD_A.ip, dst: PEER_Y.ip, proto: TCP, sport: 40201, dport: 80 });
  assert.equal(testRun(from, denied, { ifindex: LO, repeat: 5 }).retval, TC_ACT_SHOT);
  drainEvents();
  const forwarded = events.filter((e) => e.verdict === "forwarded");
  assert.equal(forwarded.length, 1, "one event for the connection, none for its 101 later packets");
  assert.equal(forwarded[0]?.sport, 40200);
  assert.equal(events.filter((e) => e.verdict === "dropped" && e.sport === 40201).length, 5, "each dropped packet");
});

test("from-overlay fails closed on a packet without tunnel metadata", () => {
  const r = testRun(dp.programFd(PROGRAMS.fromOverlay), frame({ src: PEER_X.ip, dst: POD_A.ip, proto: TCP, sport: 1, dport: 80 }), { ifindex: LO });
  assert.equal(r.retval, TC_ACT_SHOT);
});

test("malformed and non-IP frames are dropped with a reason; ARP passes", () => {
  const from = dp.programFd(PROGRAMS.fromContainer);
  const truncated = frame({ src: POD_A.ip, dst: PEER_X.ip, proto: TCP, sport: 1, dport: 80 }).subarray(0, 40);
  assert.equal(testRun(from, truncated, { ifindex: LO }).retval, TC_ACT_SHOT);
  const arp = Buffer.alloc(60);
  arp.writeUInt16BE(0x0806, 12);
  assert.equal(testRun(from, arp, { ifindex: LO }).retval, TC_ACT_OK);
  const other = Buffer.alloc(60);
  other.writeUInt16BE(0x88cc, 12);
  assert.equal(testRun(from, other, { ifindex: LO }).retval, TC_ACT_SHOT);
});

// ------------------------------------------------------------------ property test

const peers = [PEER_X, PEER_Y, PEER_W, PEER_H, PEER_WORLD, PEER_W4, PEER_W6, PEER_L, PEER_F];
const arbEntry = fc
  .record({
    direction: fc.constantFrom<Direction>("ingress", "egress"),
    peer: fc.constantFrom(0, PEER_X.identity, PEER_Y.identity, PEER_W.identity, CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER),
    proto: fc.constantFrom(0, TCP, UDP),
    prefixLen: fc.integer({ min: 0, max: 16 }),
    portSeed: fc.constantFrom(0, 53, 80, 443, 8080, 8191, 65535),
    verdict: fc.constantFrom<"allow" | "deny">("allow", "deny"),
  })
  .map(({ direction, peer, proto, prefixLen, portSeed, verdict }): PolicyEntry => {
    const len = proto === 0 ? 0 : prefixLen;
    const mask = len === 0 ? 0 : (0xffff << (16 - len)) & 0xffff;
    return entry({ subject: POD_A.identity, direction, peer, proto, port: proto === 0 ? 0 : portSeed & mask, portPrefixLen: len, verdict });
  });
const arbProbe = fc.record({
  direction: fc.constantFrom<Direction>("ingress", "egress"),
  peer: fc.constantFrom(...peers),
  proto: fc.constantFrom(TCP, UDP),
  port: fc.oneof(fc.constantFrom(53, 80, 81, 443, 8080, 8190, 8191, 60000, 65535), fc.integer({ min: 1, max: 65535 })),
  v6: fc.boolean(),
});
/** A port range as the compiler emits it: several prefix lengths for one (peer, proto). */
const arbRangeEntries = fc
  .record({
    direction: fc.constantFrom<Direction>("ingress", "egress"),
    peer: fc.constantFrom(0, PEER_X.identity, PEER_Y.identity, PEER_W.identity, CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER),
    proto: fc.constantFrom(TCP, UDP),
    first: fc.constantFrom(1, 53, 80, 443, 8000, 8080, 8191, 60000),
    span: fc.integer({ min: 0, max: 5000 }),
    verdict: fc.constantFrom<"allow" | "deny">("allow", "deny"),
  })
  .map(({ direction, peer, proto, first, span, verdict }): PolicyEntry[] =>
    rangeToPrefixes(first, Math.min(65535, first + span)).map((b) =>
      entry({ subject: POD_A.identity, direction, peer, proto, port: b.port, portPrefixLen: b.prefixLen, verdict }),
    ),
  );

test("property: for random entries (the five classes' among them) and packets the kernel verdict equals core's lookup", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(arbEntry, { maxLength: 12, selector: (e) => `${e.direction}|${e.peer}|${e.proto}|${e.port}/${e.portPrefixLen}` }),
      fc.array(arbRangeEntries, { maxLength: 3 }),
      fc.boolean(),
      fc.boolean(),
      fc.array(arbProbe, { minLength: 1, maxLength: 8 }),
      (single, ranges, ingressEnforced, egressEnforced, probes) => {
        // One entry per key (as the compiler emits): the first of equal keys stays.
        const byKey = new Map<string, PolicyEntry>();
        for (const e of [...single, ...ranges.flat()]) {
          const k = `${e.direction}|${e.peer}|${e.proto}|${e.port}/${e.portPrefixLen}`;
          if (!byKey.has(k)) byKey.set(k, e);
        }
        const entries = [...byKey.values()];
        dp.clearAll();
        dp.setIpcache({ cidr: "10.1.0.0/24", identity: PEER_X.identity });
        dp.setIpcache({ cidr: "fd00:1::/64", identity: PEER_X.identity });
        dp.setIpcache({ cidr: "10.1.1.0/24", identity: PEER_Y.identity });
        dp.setIpcache({ cidr: "fd00:1:0:1::/64", identity: PEER_Y.identity });
        dp.setIpcache({ cidr: "10.1.2.0/24", identity: PEER_W.identity });
        dp.setIpcache({ cidr: "fd00:1:0:2::/64", identity: PEER_W.identity });
        setWorldPeersIpcache();
        const policy: SubjectPolicy = { subject: POD_A.identity, ingressEnforced, egressEnforced, entries };
        install(policy);
        for (const p of probes) {
          const core = lookup(policy, p.direction, p.peer.identity, p.proto, p.port, undefined, p.v6 ? 6 : 4).verdict;
          assert.equal(kernelVerdict({ ...p, pod: POD_A }), core, JSON.stringify(p));
        }
      },
    ),
    { numRuns: 150 },
  );
});

// A known flow's packet without the endpoint lookup (bpf/datapath.c endpoint_fast_path): the conntrack stamp keeps the
// spoofed-source and unknown-endpoint checks as strong as before.

/** A second interface to run the programs on (BPF_PROG_TEST_RUN needs a device of this namespace): another pod's, a veth (this kernel has no dummy). */
const OTHER_LINK = `ctk${process.pid}`.slice(0, 13);
let otherIfindex = 0;
/** The second interface's index, the veth made on first use (removed after the file). */
function otherInterface(): number {
  if (!otherIfindex) {
    execFileSync("ip", ["link", "add", OTHER_LINK, "type", "veth", "peer", "name", `${OTHER_LINK}p`]);
    otherIfindex = Number(fs.readFileSync(`/sys/class/net/${OTHER_LINK}/ifindex`, "utf8"));
  }
  return otherIfindex;
}
after(() => {
  if (otherIfindex) execFileSync("ip", ["link", "del", OTHER_LINK]); // and its peer
});
const POD_C = { ip: "10.0.0.3", ip6: "fd00::3", identity: 1002 };
const TCP_FIN = 0x01;

function setPod(pod: { ip: string; identity: number }, ifindex: number): void {
  dp.setEndpoint({ ip: pod.ip, ifindex, identity: pod.identity, ingressEnforced: false, egressEnforced: false });
}

/** The pod's packet to X (egress, from-container) or X's to the pod (to-container), on an interface. */
function sendKnown(way: "out" | "in", pod: { ip: string }, sport: number, tcpFlags: number, ifindex: number): number {
  const spec = way === "out" ? { src: pod.ip, dst: PEER_X.ip, sport, dport: 80 } : { src: PEER_X.ip, dst: pod.ip, sport: 80, dport: sport };
  const prog = dp.programFd(way === "out" ? PROGRAMS.fromContainer : PROGRAMS.toContainer);
  return testRun(prog, frame({ ...spec, proto: TCP, tcpFlags }), { ifindex }).retval;
}

/** The conntrack entry of the pod's connection from sport (there is one per test). */
function entryOf(sport: number): { state: number; ifindex: number; epGen: number; expires: bigint } {
  const ct = dp.object.map(MAPS.conntrack);
  const K = LAYOUT.ct_key.fields;
  const V = LAYOUT.ct_value.fields;
  const key = ct.keys().find((k) => k.readUInt16BE(K.sport.offset) === sport || k.readUInt16BE(K.dport.offset) === sport);
  const v = key && ct.lookup(key);
  assert.ok(v, `a conntrack entry for port ${sport}`);
  return { state: v.readUInt8(V.state.offset), ifindex: v.readUInt32LE(V.ifindex.offset), epGen: v.readUInt32LE(V.ep_gen.offset), expires: v.readBigUInt64LE(V.expires_ns.offset) };
}

function dropReasons(): number[] {
  drainEvents();
  const r = events.filter((e) => e.verdict === "dropped").map((e) => e.reasonCode);
  events = [];
  return r;
}

test("a known flow's 5-tuple sent on another pod's interface is dropped (spoofed source out, unknown endpoint in), and leaves the entry as it was", () => {
  setPod(POD_A, LO);
  setPod(POD_B, otherInterface());
  // A's connection out (X answers) and X's connection in, both established and stamped on A's interface.
  assert.equal(sendKnown("out", POD_A, 40000, TCP_SYN, LO), TC_ACT_OK);
  assert.equal(sendKnown("in", POD_A, 40000, TCP_SYN | TCP_ACK, LO), TC_ACT_OK);
  assert.equal(sendKnown("out", POD_A, 40000, TCP_ACK, LO), TC_ACT_OK);
  const out = entryOf(40000);
  assert.deepEqual([out.state, out.ifindex, out.epGen], [2 /* ESTABLISHED */, LO, dp.endpointGeneration()], "stamped: its packets take the fast path");
  dropReasons();

  // The same tuple from B's interface: a FIN that would close A's connection if it were believed.
  assert.equal(sendKnown("out", POD_A, 40000, TCP_FIN | TCP_ACK, otherInterface()), TC_ACT_SHOT);
  assert.equal(sendKnown("in", POD_A, 40000, TCP_FIN | TCP_ACK, otherInterface()), TC_ACT_SHOT);
  assert.deepEqual(dropReasons(), [DROP_REASON_CODES.DROP_SPOOFED_SOURCE, DROP_REASON_CODES.DROP_UNKNOWN_ENDPOINT]);
  assert.deepEqual(entryOf(40000), out, "neither refreshed nor closed by the spoofed packets");
  assert.equal(sendKnown("out", POD_A, 40000, TCP_ACK, LO), TC_ACT_OK, "A's own packets still pass");
  assert.equal(sendKnown("in", POD_A, 40000, TCP_ACK, LO), TC_ACT_OK);
});

test("a stale stamp (an endpoint changed) is checked once, stamped anew, and the flow keeps passing; a spoofed packet does not refresh a stale entry", () => {
  setPod(POD_A, LO);
  setPod(POD_B, otherInterface());
  assert.equal(sendKnown("out", POD_A, 40100, TCP_SYN, LO), TC_ACT_OK);
  assert.equal(sendKnown("in", POD_A, 40100, TCP_SYN | TCP_ACK, LO), TC_ACT_OK);
  const stamped = entryOf(40100);
  setPod(POD_C, otherInterface()); // any endpoint write moves the generation
  assert.equal(dp.endpointGeneration(), stamped.epGen + 1);
  assert.equal(sendKnown("out", POD_A, 40100, TCP_FIN | TCP_ACK, otherInterface()), TC_ACT_SHOT, "spoofed, on a stale entry");
  assert.deepEqual(entryOf(40100), stamped, "the stale entry was not refreshed by it");
  assert.equal(sendKnown("out", POD_A, 40100, TCP_ACK, LO), TC_ACT_OK);
  assert.deepEqual([entryOf(40100).ifindex, entryOf(40100).epGen], [LO, dp.endpointGeneration()], "stamped anew by the check");
  for (let i = 0; i < 3; i++) assert.equal(sendKnown(i % 2 ? "in" : "out", POD_A, 40100, TCP_ACK, LO), TC_ACT_OK);
  assert.deepEqual(dropReasons(), [DROP_REASON_CODES.DROP_SPOOFED_SOURCE]);
});

test("an endpoint deleted and its interface reused by a new pod with another address: the old pod's flows are dropped both ways", () => {
  setPod(POD_A, otherInterface());
  assert.equal(sendKnown("out", POD_A, 40200, TCP_SYN, otherInterface()), TC_ACT_OK);
  assert.equal(sendKnown("in", POD_A, 40200, TCP_SYN | TCP_ACK, otherInterface()), TC_ACT_OK);
  assert.equal(sendKnown("out", POD_A, 40200, TCP_ACK, otherInterface()), TC_ACT_OK);
  assert.equal(entryOf(40200).ifindex, otherInterface());
  dp.deleteEndpoint(POD_A.ip);
  setPod(POD_C, otherInterface());
  dropReasons();
  assert.equal(sendKnown("out", POD_A, 40200, TCP_ACK, otherInterface()), TC_ACT_SHOT, "A's address is no longer this interface's");
  assert.equal(sendKnown("in", POD_A, 40200, TCP_ACK, otherInterface()), TC_ACT_SHOT, "nor any endpoint's");
  assert.deepEqual(dropReasons(), [DROP_REASON_CODES.DROP_SPOOFED_SOURCE, DROP_REASON_CODES.DROP_UNKNOWN_ENDPOINT]);
});

test("a stamped flow's packets are reported as each monitor aggregation level says (medium none, low its flags once, none every packet); drops always", () => {
  setPod(POD_A, LO);
  assert.equal(sendKnown("out", POD_A, 40300, TCP_SYN, LO), TC_ACT_OK);
  assert.equal(sendKnown("in", POD_A, 40300, TCP_SYN | TCP_ACK, LO), TC_ACT_OK);
  assert.equal(sendKnown("out", POD_A, 40300, TCP_ACK, LO), TC_ACT_OK);
  const forwardedCount = (): number => {
    drainEvents();
    const n = events.filter((e) => e.verdict === "forwarded").length;
    events = [];
    return n;
  };
  forwardedCount();
  for (let i = 0; i < 2; i++) sendKnown("out", POD_A, 40300, TCP_ACK, LO);
  assert.equal(forwardedCount(), 0, "medium: known packets are not reported");
  dp.setMonitorAggregation("low");
  sendKnown("out", POD_A, 40300, TCP_ACK, LO);
  sendKnown("out", POD_A, 40300, TCP_FIN | TCP_ACK, LO);
  sendKnown("out", POD_A, 40300, TCP_FIN | TCP_ACK, LO);
  assert.equal(forwardedCount(), 1, "low: the first FIN only");
  dp.setMonitorAggregation("none");
  sendKnown("out", POD_A, 40300, TCP_ACK, LO);
  sendKnown("in", POD_A, 40300, TCP_ACK, LO);
  assert.equal(forwardedCount(), 2, "none: every packet");
  dp.setMonitorAggregation("maximum");
  assert.equal(sendKnown("out", POD_A, 40300, TCP_ACK, otherInterface()), TC_ACT_SHOT);
  assert.deepEqual(dropReasons(), [DROP_REASON_CODES.DROP_SPOOFED_SOURCE], "maximum: the drop is still reported");
});
