// The `world` entity as a peer class (WORLD_CLASS_PEER) and `world-ipv4`/`world-ipv6` as the classes of a family (WORLD_IPV4/6_CLASS_PEER): one entry per key per subject, not one per CIDR identity, with the same first hit as per peer (denies included), IPv4 and IPv6 alike.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compileAll, DeltaCollector, policyKey, type Delta } from "../compiler.ts";
import { IDENTITY, MIN_FQDN_IDENTITY, MIN_LOCAL_IDENTITY, RESERVED_IDENTITIES, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER, cidrLabels, unknownAddressIdentity, worldFamilyOf } from "../identity.ts";
import { ipBlockLabels } from "../ipblock.ts";
import { label, labelSetFrom, securityLabels } from "../labels.ts";
import type { LabelSet, Policy, PolicyEntry } from "../model.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { compareEntries, lookup } from "./mapstate.ts";

const TCP = 6;
const CIDRS = 40;
const WEB = 256;
const DB = 257;
const V6 = MIN_LOCAL_IDENTITY + 1000;
const IPBLOCK = MIN_LOCAL_IDENTITY + 2000;

/** Two pods, the reserved identities, 40 IPv4 CIDR identities, one IPv6 CIDR identity and one ipBlock identity. */
function identities(): Map<number, LabelSet> {
  const ids = new Map<number, LabelSet>(RESERVED_IDENTITIES.map((r) => [r.id, r.labels]));
  ids.set(WEB, securityLabels({ podLabels: { app: "web" }, namespace: "ns-0", namespaceLabels: {} }));
  ids.set(DB, securityLabels({ podLabels: { app: "db" }, namespace: "ns-0", namespaceLabels: {} }));
  for (let i = 0; i < CIDRS; i++) ids.set(MIN_LOCAL_IDENTITY + i, cidrLabels(`198.18.${i}.0/24`));
  ids.set(V6, cidrLabels("2001:db8::/64"));
  ids.set(IPBLOCK, ipBlockLabels("198.18.0.0/16"));
  return ids;
}
const cidrPeers = (ids: Map<number, LabelSet>): number[] => [...ids.keys()].filter((id) => id >= MIN_LOCAL_IDENTITY && id !== IPBLOCK);
const worldPeers = (ids: Map<number, LabelSet>): number[] => [IDENTITY.world, IDENTITY.worldIPv4, IDENTITY.worldIPv6, ...cidrPeers(ids)];

function parse(obj: object): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

function cnp(name: string, spec: object): Policy[] {
  return parse({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "ns-0" }, spec: { endpointSelector: { matchLabels: { app: "web" } }, ...spec } });
}
const tcp = (port: number): object => ({ toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] });
/** web may reach the world on TCP 443 (bench/scale's shape). */
const toWorld = (): Policy[] => cnp("to-world", { egress: [{ toEntities: ["world"], ...tcp(443) }] });
/** web may not reach 198.18.3.0/24 on TCP 443 (one CIDR identity the world rule also covers). */
const denyOne = (): Policy[] => cnp("deny-one", { egressDeny: [{ toCIDR: ["198.18.3.0/24"], ...tcp(443) }] });
/** web may reach every IPv6 address on TCP 8443: the IPv6 CIDR identity is matched by two rules. */
const toWorldV6 = (): Policy[] => cnp("to-world-v6", { egress: [{ toEntities: ["world-ipv6"], ...tcp(8443) }] });

/** A peer's address family as the datapath has it from the packet (a world peer's own; none for pods and reserved:world). */
const IDS = identities();
const familyOf = (peer: number): 4 | 6 | undefined => worldFamilyOf(peer, IDS.get(peer));
const verdict = (c: ReturnType<typeof compileAll>, peer: number, port: number): string => lookup(c.snapshot(WEB), "egress", peer, TCP, port, undefined, familyOf(peer)).verdict;
const sameKey = (a: PolicyEntry, b: PolicyEntry): boolean => a.direction === b.direction && a.peer === b.peer && a.proto === b.proto && a.port === b.port && a.portPrefixLen === b.portPrefixLen;

/** `entries` with a delta applied (removals, then additions), in map order. */
function applied(entries: readonly PolicyEntry[], deltas: readonly Delta[], subject: number): PolicyEntry[] {
  const d = deltas.find((x) => x.subject === subject);
  const out = entries.filter((e) => !(d?.removed ?? []).some((r) => sameKey(r, e)));
  for (const a of d?.added ?? []) {
    const i = out.findIndex((e) => sameKey(e, a));
    if (i >= 0) out[i] = a;
    else out.push(a);
  }
  return out.sort(compareEntries);
}

/** The same first hit with the world class as per CIDR identity, for every world peer, pod and port. */
function assertSameAsPerPeer(policies: readonly Policy[], ids: Map<number, LabelSet>): void {
  const c = compileAll(policies, ids);
  const perPeer = compileAll(policies, ids);
  perPeer.setWorldClass(false);
  assert.ok(perPeer.snapshot(WEB).entries.every((e) => e.peer !== WORLD_CLASS_PEER && e.peer !== WORLD_IPV4_CLASS_PEER && e.peer !== WORLD_IPV6_CLASS_PEER));
  for (const peer of [...worldPeers(ids), WEB, DB]) {
    // reserved:world (an unknown address) in a packet of either family.
    for (const family of familyOf(peer) !== undefined ? [familyOf(peer)] : ([4, 6] as const)) {
      for (const port of [22, 80, 443, 8443]) {
        const a = lookup(c.snapshot(WEB), "egress", peer, TCP, port, undefined, family);
        const b = lookup(perPeer.snapshot(WEB), "egress", peer, TCP, port, undefined, family);
        assert.deepEqual({ v: a.verdict, rule: a.entry?.ruleId }, { v: b.verdict, rule: b.entry?.ruleId }, `peer ${peer} family ${family} port ${port}`);
      }
    }
  }
}

test("toEntities world is one entry per key for the subject, whatever the number of CIDR identities: every IPv4 and IPv6 CIDR and reserved world identity is allowed on its port, no pod", () => {
  const ids = identities();
  const c = compileAll(toWorld(), ids);
  const entries = c.snapshot(WEB).entries.filter((e) => e.direction === "egress");
  assert.deepEqual(entries.map((e) => [e.peer, e.proto, e.port, e.verdict]), [[WORLD_CLASS_PEER, TCP, 443, "allow"]]);
  for (const peer of worldPeers(ids)) {
    assert.equal(verdict(c, peer, 443), "allow", `peer ${peer} on 443`);
    assert.equal(verdict(c, peer, 22), "deny", `peer ${peer} on 22`);
  }
  for (const pod of [WEB, DB, IDENTITY.host, IDENTITY.remoteNode]) assert.equal(verdict(c, pod, 443), "deny", `peer ${pod} is not the world`);
  assert.equal(verdict(c, MIN_FQDN_IDENTITY + 1, 443), "allow", "an agent's FQDN identity (a learned address) is a world peer: the class answers for it");
  assertSameAsPerPeer(toWorld(), ids);
});

test("a CIDR identity that a deny also matches keeps its own entries (deny first), an IPv6 one matched by world-ipv6 too is the world-ipv6 class's; the same first hits as per peer, and deltas end where fresh compiles are", () => {
  const ids = identities();
  const c = compileAll(toWorld(), ids);
  const steps: Policy[][] = [[...toWorld(), ...denyOne(), ...toWorldV6()], toWorld()];
  let held = c.snapshot(WEB).entries;
  for (const want of steps) {
    const d = new DeltaCollector();
    for (const k of new Set(steps.flat().map(policyKey))) {
      const parts = want.filter((p) => policyKey(p) === k);
      if (parts.length > 0) c.upsertPolicy(k, parts, d);
      else c.removePolicy(k, d);
    }
    const fresh = compileAll(want, ids);
    held = applied(held, d.deltas(c.enforcementOf), WEB);
    assert.deepEqual(held, applied(fresh.snapshot(WEB).entries, [], WEB), "the deltas reach the fresh compile");
    assert.deepEqual(c.snapshot(WEB), fresh.snapshot(WEB));
    const full = want.length > 1;
    const denied = MIN_LOCAL_IDENTITY + 3;
    assert.equal(verdict(c, denied, 443), full ? "deny" : "allow");
    assert.equal(verdict(c, MIN_LOCAL_IDENTITY + 4, 443), "allow");
    assert.equal(verdict(c, V6, 443), "allow");
    assert.equal(verdict(c, V6, 8443), full ? "allow" : "deny");
    assert.equal(verdict(c, IDENTITY.worldIPv6, 8443), full ? "allow" : "deny");
    assert.equal(verdict(c, IDENTITY.worldIPv4, 8443), "deny", "world-ipv6 is not the IPv4 world");
    const own = (peer: number): boolean => c.snapshot(WEB).entries.some((e) => e.peer === peer);
    assert.equal(own(denied), full);
    assert.equal(own(V6), false, "the IPv6 CIDR identity has no entry: the world-ipv6 class's (world and world-ipv6 rules) answer for it");
    assert.equal(own(WORLD_IPV6_CLASS_PEER), full);
    assert.equal(own(WORLD_IPV4_CLASS_PEER), false, "no world-ipv4 rule: the world class answers for IPv4 peers");
    assert.ok(!own(MIN_LOCAL_IDENTITY + 4), "a CIDR identity only the world rule matches has no entry");
    assertSameAsPerPeer(want, ids);
  }
});

test("a new CIDR identity is allowed by the world class entry as it is: no entry comes with it or goes with it", () => {
  const ids = identities();
  const c = compileAll(toWorld(), ids);
  const NEW = MIN_LOCAL_IDENTITY + 500;
  assert.deepEqual(c.upsertIdentity(NEW, cidrLabels("203.0.113.0/24")), []);
  assert.equal(verdict(c, NEW, 443), "allow");
  assert.deepEqual(c.removeIdentity(NEW), []);
});

test("a local identity the world entity does not select turns world class entries off (every CIDR identity its own) and on when it goes; an ipBlock identity does not, and keeps its own entries", () => {
  const ids = identities();
  const ipBlockNp = parse({
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: "block", namespace: "ns-0" },
    spec: { podSelector: { matchLabels: { app: "web" } }, policyTypes: ["Egress"], egress: [{ to: [{ ipBlock: { cidr: "198.18.0.0/16" } }], ports: [{ port: 5432, protocol: "TCP" }] }] },
  });
  const policies = [...toWorld(), ...ipBlockNp];
  const c = compileAll(policies, ids);
  const before = c.snapshot(WEB);
  assert.ok(before.entries.some((e) => e.peer === WORLD_CLASS_PEER), "the ipBlock identity leaves the class on");
  assert.ok(before.entries.some((e) => e.peer === IPBLOCK && e.port === 5432), "the ipBlock identity keeps its own entry");
  assert.equal(lookup(before, "egress", DB, TCP, 5432, IPBLOCK).verdict, "allow", "a pod in the block, by the second look");
  assert.equal(lookup(before, "egress", DB, TCP, 443, IPBLOCK).verdict, "deny", "the second look finds no world entry");
  const STRAY = MIN_LOCAL_IDENTITY + 3000;
  const strayLabels = labelSetFrom([label("cidr", "10.9.0.0/16")]);
  const d = new DeltaCollector();
  c.upsertIdentity(STRAY, strayLabels, d);
  const fresh = compileAll(policies, new Map([...ids, [STRAY, strayLabels]]));
  assert.ok(c.snapshot(WEB).entries.every((e) => e.peer !== WORLD_CLASS_PEER), "no world class entry");
  assert.deepEqual(applied(before.entries, d.deltas(c.enforcementOf), WEB), applied(fresh.snapshot(WEB).entries, [], WEB));
  assert.equal(verdict(c, STRAY, 443), "deny", "the stray identity is not the world");
  for (const peer of worldPeers(ids)) assert.equal(verdict(c, peer, 443), "allow", `peer ${peer}`);
  c.removeIdentity(STRAY);
  assert.deepEqual(c.snapshot(WEB), before);
});

test("while an agent that does not look up world class entries is known (setWorldClass(false)), every CIDR identity gets its own entry with the same verdicts; allowed again, the class entry comes back", () => {
  const ids = identities();
  const c = compileAll(toWorld(), ids);
  const before = c.snapshot(WEB);
  const off = c.setWorldClass(false);
  const offEntries = applied(before.entries, off, WEB);
  assert.deepEqual(offEntries, applied(c.snapshot(WEB).entries, [], WEB));
  assert.ok(offEntries.every((e) => e.peer !== WORLD_CLASS_PEER));
  assert.deepEqual(new Set(offEntries.filter((e) => e.direction === "egress").map((e) => e.peer)), new Set(worldPeers(ids)));
  for (const peer of worldPeers(ids)) assert.equal(verdict(c, peer, 443), "allow", `peer ${peer}`);
  const on = c.setWorldClass(true);
  assert.deepEqual(applied(offEntries, on, WEB), applied(before.entries, [], WEB));
  assert.deepEqual(c.snapshot(WEB), before);
});

/** web may reach IPv4 addresses on TCP 80 and IPv6 ones on TCP 8443 (no world rule). */
const byFamily = (): Policy[] => cnp("by-family", { egress: [{ toEntities: ["world-ipv4"], ...tcp(80) }, { toEntities: ["world-ipv6"], ...tcp(8443) }] });

test("world-ipv4 and world-ipv6 are one entry per key each, whatever the number of CIDR identities: each allows its family's CIDR and reserved identities and no other, reserved:world (an unknown address) neither", () => {
  const ids = identities();
  const c = compileAll(byFamily(), ids);
  const entries = c.snapshot(WEB).entries.filter((e) => e.direction === "egress");
  assert.deepEqual(entries.map((e) => [e.peer, e.port, e.verdict]), [[WORLD_IPV6_CLASS_PEER, 8443, "allow"], [WORLD_IPV4_CLASS_PEER, 80, "allow"]]);
  for (const peer of worldPeers(ids)) {
    const fam = familyOf(peer);
    assert.equal(verdict(c, peer, 80), fam === 4 ? "allow" : "deny", `peer ${peer} (IPv${fam}) on 80`);
    assert.equal(verdict(c, peer, 8443), fam === 6 ? "allow" : "deny", `peer ${peer} (IPv${fam}) on 8443`);
  }
  assert.equal(lookup(c.snapshot(WEB), "egress", MIN_FQDN_IDENTITY + 1, TCP, 80, undefined, 4).verdict, "allow", "a learned IPv4 address is a world-ipv4 peer");
  assert.equal(lookup(c.snapshot(WEB), "egress", MIN_FQDN_IDENTITY + 1, TCP, 80, undefined, 6).verdict, "deny", "a learned IPv6 address is not");
  for (const pod of [WEB, DB, IDENTITY.host]) assert.equal(verdict(c, pod, 80), "deny", `peer ${pod} is not the world`);
  assertSameAsPerPeer(byFamily(), ids);
});

test("with world, world-ipv4 and a CIDR deny together: the world class answers for reserved:world, each family's class holds the world rule too, the denied CIDR identity keeps its own entries; deltas end where fresh compiles are", () => {
  const ids = identities();
  const all = [...toWorld(), ...byFamily(), ...denyOne()];
  const c = compileAll(toWorld(), ids);
  const d = new DeltaCollector();
  for (const k of new Set(all.map(policyKey))) c.upsertPolicy(k, all.filter((p) => policyKey(p) === k), d);
  const fresh = compileAll(all, ids);
  assert.deepEqual(applied(compileAll(toWorld(), ids).snapshot(WEB).entries, d.deltas(c.enforcementOf), WEB), applied(fresh.snapshot(WEB).entries, [], WEB));
  const peers = new Set(c.snapshot(WEB).entries.filter((e) => e.direction === "egress").map((e) => e.peer));
  assert.deepEqual([...peers].sort((a, b) => a - b), [WORLD_IPV6_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_CLASS_PEER, MIN_LOCAL_IDENTITY + 3].sort((a, b) => a - b));
  const v4 = c.snapshot(WEB).entries.filter((e) => e.peer === WORLD_IPV4_CLASS_PEER).map((e) => e.port).sort((a, b) => a - b);
  assert.deepEqual(v4, [80, 443], "the world-ipv4 class holds the world rule's key too");
  assert.equal(lookup(c.snapshot(WEB), "egress", IDENTITY.world, TCP, 443, undefined, 4).verdict, "allow");
  assert.equal(lookup(c.snapshot(WEB), "egress", IDENTITY.world, TCP, 80, undefined, 4).verdict, "deny", "reserved:world is not in world-ipv4 (as per peer)");
  assert.equal(verdict(c, MIN_LOCAL_IDENTITY + 3, 443), "deny");
  assert.equal(verdict(c, MIN_LOCAL_IDENTITY + 3, 80), "allow");
  assertSameAsPerPeer(all, ids);
  // Back to the world rule alone: the family classes go, nothing per peer comes.
  const back = new DeltaCollector();
  for (const k of new Set(all.map(policyKey))) {
    const parts = toWorld().filter((p) => policyKey(p) === k);
    if (parts.length > 0) c.upsertPolicy(k, parts, back);
    else c.removePolicy(k, back);
  }
  assert.deepEqual(applied(fresh.snapshot(WEB).entries, back.deltas(c.enforcementOf), WEB), applied(compileAll(toWorld(), ids).snapshot(WEB).entries, [], WEB));
});

test("a world identity without a single family, or an agent that does not look the family classes up (setWorldFamilyClass(false)), turns the family classes off: each family peer its own entries, the same verdicts; and back", () => {
  const ids = identities();
  const c = compileAll(byFamily(), ids);
  const before = c.snapshot(WEB);
  const off = c.setWorldFamilyClass(false);
  const offEntries = applied(before.entries, off, WEB);
  assert.deepEqual(offEntries, applied(c.snapshot(WEB).entries, [], WEB));
  assert.ok(offEntries.every((e) => e.peer !== WORLD_IPV4_CLASS_PEER && e.peer !== WORLD_IPV6_CLASS_PEER));
  assert.deepEqual(new Set(offEntries.filter((e) => e.direction === "egress").map((e) => e.peer)), new Set(worldPeers(ids).filter((p) => p !== IDENTITY.world)));
  for (const peer of worldPeers(ids)) assert.equal(verdict(c, peer, 80), familyOf(peer) === 4 ? "allow" : "deny", `peer ${peer}`);
  assert.deepEqual(applied(offEntries, c.setWorldFamilyClass(true), WEB), applied(before.entries, [], WEB));
  const STRAY = MIN_LOCAL_IDENTITY + 3001;
  const noFamily = labelSetFrom([label("reserved", "world")]);
  const d = new DeltaCollector();
  c.upsertIdentity(STRAY, noFamily, d);
  assert.ok(c.snapshot(WEB).entries.every((e) => e.peer !== WORLD_IPV4_CLASS_PEER && e.peer !== WORLD_IPV6_CLASS_PEER), "no family class entry");
  assert.deepEqual(applied(before.entries, d.deltas(c.enforcementOf), WEB), applied(compileAll(byFamily(), new Map([...ids, [STRAY, noFamily]])).snapshot(WEB).entries, [], WEB));
  for (const family of [4, 6] as const) assert.equal(lookup(c.snapshot(WEB), "egress", STRAY, TCP, 80, undefined, family).verdict, "deny", `the familyless identity in an IPv${family} packet`);
  c.removeIdentity(STRAY);
  assert.deepEqual(c.snapshot(WEB), before);
});

test("an address outside the ipcache as the datapath names it (unknownAddressIdentity): dual-stack, world-ipv4 reaches an IPv4 one and not an IPv6 one, world-ipv6 the reverse, world both; single-stack (reserved:world in both families, as every agent before it) neither family entity reaches it, world does; classes and per peer alike", () => {
  const ids = identities();
  // web: world-ipv4 on TCP 80, world-ipv6 on TCP 8443, world on TCP 443.
  const policies = [...byFamily(), ...toWorld()];
  const classes = compileAll(policies, ids);
  const perPeer = compileAll(policies, ids);
  perPeer.setWorldClass(false);
  assert.ok(perPeer.snapshot(WEB).entries.every((e) => e.peer !== WORLD_CLASS_PEER && e.peer !== WORLD_IPV4_CLASS_PEER && e.peer !== WORLD_IPV6_CLASS_PEER), "an agent without worldClass: per peer");
  for (const [name, c] of [["classes", classes], ["per peer", perPeer]] as const) {
    const reach = (family: 4 | 6, dualStack: boolean, port: number): string => lookup(c.snapshot(WEB), "egress", unknownAddressIdentity(family, dualStack), TCP, port, undefined, family).verdict;
    assert.deepEqual([reach(4, true, 80), reach(6, true, 80)], ["allow", "deny"], `${name}: dual-stack world-ipv4`);
    assert.deepEqual([reach(6, true, 8443), reach(4, true, 8443)], ["allow", "deny"], `${name}: dual-stack world-ipv6`);
    assert.deepEqual([reach(4, true, 443), reach(6, true, 443)], ["allow", "allow"], `${name}: dual-stack world`);
    for (const family of [4, 6] as const) {
      assert.deepEqual([reach(family, false, 80), reach(family, false, 8443)], ["deny", "deny"], `${name}: single-stack IPv${family}, no family entity reaches reserved:world (fail closed)`);
      assert.equal(reach(family, false, 443), "allow", `${name}: single-stack IPv${family}, world does`);
    }
  }
  assert.deepEqual([unknownAddressIdentity(4, true), unknownAddressIdentity(6, true), unknownAddressIdentity(undefined, true), unknownAddressIdentity(4, false), unknownAddressIdentity(6, false)], [IDENTITY.worldIPv4, IDENTITY.worldIPv6, IDENTITY.world, IDENTITY.world, IDENTITY.world], "an unknown family is reserved:world (fail closed)");
});
