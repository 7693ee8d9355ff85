// A cluster-wide peer selector (bench/scale's `fromEntities: [cluster]` CCNPs, its NetworkPolicies' `namespaceSelector: {}`) compiles to one entry per key for its class (CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER), not one per peer: a peer that other rules also match keeps entries of its own, and a change reaches all of them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compileAll, DeltaCollector, policyKey, RULE_ID_DEFAULT_DENY, type Delta } from "../compiler.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, IDENTITY, RESERVED_IDENTITIES } from "../identity.ts";
import { label, labelSetFrom, securityLabels } from "../labels.ts";
import type { LabelSet, Policy, PolicyEntry } from "../model.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { lookup, type LookupResult } from "./mapstate.ts";

const NAMESPACES = 12;
const WORLD = 2;
const TCP = 6;
const UDP = 17;

/** app `web` (the subjects) and app `db` in every namespace; identities from 256 up. */
function podIdentities(): Map<number, LabelSet> {
  const ids = new Map<number, LabelSet>(RESERVED_IDENTITIES.map((r) => [r.id, r.labels]));
  let n = 256;
  for (let ns = 0; ns < NAMESPACES; ns++) {
    for (const app of ["web", "db"]) ids.set(n++, securityLabels({ podLabels: { app }, namespace: `ns-${ns}`, namespaceLabels: {} }));
  }
  return ids;
}

function parse(obj: object): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

/** A CCNP: `web` in every namespace takes TCP `port` from the whole cluster. */
function fromCluster(port: number): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "web-from-cluster" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] }] },
  });
}

/** A CCNP denying TCP `port` from `db` in ns-0 to every `web`. */
function denyDb0(port: number): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "no-db-0" },
    spec: {
      endpointSelector: { matchLabels: { app: "web" } },
      ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: "db", "k8s:io.kubernetes.pod.namespace": "ns-0" } }], toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] }],
    },
  });
}

const isWeb = (labels: LabelSet): boolean => labels.labels.some((l) => l.key === "app" && l.value === "web");
const podPeers = (ids: Map<number, LabelSet>): number[] => [...ids.keys()].filter((id) => id >= 256);

function verdict(c: ReturnType<typeof compileAll>, subject: number, peer: number, port: number): string {
  return lookup(c.snapshot(subject), "ingress", peer, TCP, port).verdict;
}

function entriesOf(deltas: readonly Delta[], subject: number): { added: PolicyEntry[]; removed: PolicyEntry[] } {
  const d = deltas.find((x) => x.subject === subject);
  return { added: [...(d?.added ?? [])], removed: [...(d?.removed ?? [])] };
}

test("fromEntities cluster allows every pod of the cluster on its port to every subject, and not the world", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const subjects = [...ids].filter(([, l]) => isWeb(l)).map(([id]) => id);
  assert.equal(subjects.length, NAMESPACES);
  assert.deepEqual(c.subjectIds(), subjects);
  for (const s of subjects) {
    for (const peer of podPeers(ids)) {
      assert.equal(verdict(c, s, peer, 8080), "allow", `subject ${s} peer ${peer} on 8080`);
      assert.equal(verdict(c, s, peer, 8081), "deny", `subject ${s} peer ${peer} on 8081`);
    }
    assert.equal(verdict(c, s, WORLD, 8080), "deny", `subject ${s}: the world is not the cluster`);
    // Each subject's entries name that subject (peers share one entry list inside the compiler, not on the wire).
    assert.ok(c.snapshot(s).entries.every((e) => e.subject === s));
  }
});

test("each subject holds one entry for the whole cluster on its port, whatever the number of pods", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  for (const s of c.subjectIds()) {
    assert.deepEqual(
      c.snapshot(s).entries.map((e) => [e.direction, e.peer, e.proto, e.port, e.portPrefixLen, e.verdict]),
      [["ingress", CLUSTER_CLASS_PEER, TCP, 8080, 16, "allow"]],
    );
  }
  assert.equal(c.entryCount(), NAMESPACES);
});

test("a port change in a cluster-wide rule moves each subject's one class entry, and ends where a fresh compile is", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const key = policyKey(fromCluster(8080)[0]!);
  const d = new DeltaCollector();
  c.upsertPolicy(key, fromCluster(9090), d);
  const deltas = d.deltas(c.enforcementOf);
  const fresh = compileAll(fromCluster(9090), ids);
  for (const s of c.subjectIds()) {
    const { added, removed } = entriesOf(deltas, s);
    assert.deepEqual(added.map((e) => [e.peer, e.port]), [[CLUSTER_CLASS_PEER, 9090]], `subject ${s}: 9090 added for the class`);
    assert.deepEqual(removed.map((e) => [e.peer, e.port]), [[CLUSTER_CLASS_PEER, 8080]], `subject ${s}: 8080 removed for the class`);
    assert.deepEqual(c.snapshot(s), fresh.snapshot(s));
    assert.equal(verdict(c, s, 256 + 3, 9090), "allow");
    assert.equal(verdict(c, s, 256 + 3, 8080), "deny");
  }
});

test("a new pod identity is allowed by every subject's class entry as it is: no entry comes with it or goes with it", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const NEW = 1000;
  const add = new DeltaCollector();
  c.upsertIdentity(NEW, securityLabels({ podLabels: { app: "cache" }, namespace: "ns-new", namespaceLabels: {} }), add);
  const added = add.deltas(c.enforcementOf);
  for (const s of before.keys()) {
    assert.deepEqual(entriesOf(added, s), { added: [], removed: [] });
    assert.equal(verdict(c, s, NEW, 8080), "allow");
    assert.equal(verdict(c, s, NEW, 8081), "deny");
  }
  const drop = new DeltaCollector();
  c.removeIdentity(NEW, drop);
  const dropped = drop.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    assert.deepEqual(entriesOf(dropped, s), { added: [], removed: [] });
    assert.deepEqual(c.snapshot(s), snap);
  }
});

test("a deny for one peer beside a cluster-wide allow denies that peer only, on every subject, and goes when the deny goes", () => {
  const ids = podIdentities();
  const allow = fromCluster(8080);
  const deny = denyDb0(8080);
  const c = compileAll([...allow, ...deny], ids);
  const db0 = 257; // podIdentities: web then db of ns-0 first
  assert.ok(!isWeb(ids.get(db0)!));
  for (const s of c.subjectIds()) {
    for (const peer of podPeers(ids)) assert.equal(verdict(c, s, peer, 8080), peer === db0 ? "deny" : "allow", `subject ${s} peer ${peer}`);
  }
  c.removePolicy(policyKey(deny[0]!));
  const fresh = compileAll(allow, ids);
  for (const s of c.subjectIds()) {
    assert.equal(verdict(c, s, db0, 8080), "allow");
    assert.deepEqual(c.snapshot(s), fresh.snapshot(s));
  }
});

/** A CNP: `web` in ns-0 also takes every port from `db` of ns-0 (a peer the class's rule matches too). */
function allowDb0All(): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "db0-all", namespace: "ns-0" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }] }] },
  });
}

/** A CCNP denying TCP `port` to every `web` from the whole cluster. */
function denyCluster(port: number): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "no-cluster" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ingressDeny: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] }] },
  });
}

/** Applies deltas to a subject's entries as the agent does: added (insert or update), then removed. */
function applied(entries: readonly PolicyEntry[], deltas: readonly Delta[], subject: number): PolicyEntry[] {
  const key = (e: PolicyEntry): string => `${e.direction}|${e.peer}|${e.proto}|${e.port}/${e.portPrefixLen}`;
  const m = new Map(entries.map((e) => [key(e), e]));
  const d = deltas.find((x) => x.subject === subject);
  for (const e of d?.added ?? []) m.set(key(e), e);
  for (const e of d?.removed ?? []) m.delete(key(e));
  return [...m.values()].sort((a, b) => key(a).localeCompare(key(b)));
}

test("a peer that another rule also matches gets entries of its own (the class's ports among them) and loses them when that rule goes; deltas end where fresh compiles are", () => {
  const ids = podIdentities();
  const web0 = 256;
  const db0 = 257;
  const db1 = 259;
  const c = compileAll(fromCluster(8080), ids);
  const steps: Policy[][] = [[...fromCluster(8080), ...allowDb0All()], fromCluster(8080)];
  let held = new Map(c.subjectIds().map((s) => [s, c.snapshot(s).entries]));
  for (const want of steps) {
    const d = new DeltaCollector();
    const keys = new Set(want.map(policyKey));
    for (const k of new Set([...steps.flat().map(policyKey)])) {
      const parts = want.filter((p) => policyKey(p) === k);
      if (parts.length > 0) c.upsertPolicy(k, parts, d);
      else if (!keys.has(k)) c.removePolicy(k, d);
    }
    const deltas = d.deltas(c.enforcementOf);
    const fresh = compileAll(want, ids);
    const next = new Map<number, PolicyEntry[]>();
    for (const s of fresh.subjectIds()) {
      next.set(s, applied(held.get(s) ?? [], deltas, s));
      assert.deepEqual(next.get(s), applied(fresh.snapshot(s).entries, [], s), `subject ${s}: the deltas reach the fresh compile`);
      assert.deepEqual(c.snapshot(s), fresh.snapshot(s));
    }
    held = next;
    const withDb0 = want.length > 1;
    assert.equal(verdict(c, web0, db0, 8080), "allow");
    assert.equal(verdict(c, web0, db0, 5432), withDb0 ? "allow" : "deny");
    assert.equal(verdict(c, web0, db1, 5432), "deny");
    assert.equal(verdict(c, web0, db1, 8080), "allow");
    const own = c.snapshot(web0).entries.filter((e) => e.peer === db0).map((e) => [e.proto, e.port, e.portPrefixLen, e.verdict]);
    assert.deepEqual(own.length > 0, withDb0, "db-0's own entries only while the second rule matches it");
  }
});

test("a cluster-wide deny beats a peer's own allow and the wildcard's on its port; other ports stay as allowed", () => {
  const ids = podIdentities();
  const anyOn8080 = parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "anyone-8080" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["all"], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] }] },
  });
  const c = compileAll([...denyCluster(8080), ...allowDb0All(), ...anyOn8080], ids);
  const web0 = 256;
  const db0 = 257;
  for (const peer of podPeers(ids)) assert.equal(verdict(c, web0, peer, 8080), "deny", `peer ${peer}`);
  assert.equal(verdict(c, web0, WORLD, 8080), "allow", "the world is not in the cluster: the wildcard's allow");
  assert.equal(verdict(c, web0, db0, 5432), "allow", "db-0's own allow elsewhere");
  assert.ok(c.snapshot(web0).entries.some((e) => e.peer === CLUSTER_CLASS_PEER && e.verdict === "deny"));
});

test("an identity in the cluster's number range that the cluster entity does not select keeps the class entries on: it alone gets an entry of its own that hides the class's, and loses it when it goes", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const STRAY = 2000;
  const foreign = securityLabels({ podLabels: { app: "db" }, namespace: "ns-0", namespaceLabels: {}, clusterName: "other" });
  const d = new DeltaCollector();
  c.upsertIdentity(STRAY, foreign, d);
  const deltas = d.deltas(c.enforcementOf);
  const fresh = compileAll(fromCluster(8080), new Map([...ids, [STRAY, foreign]]));
  for (const [s, snap] of before) {
    assert.deepEqual(
      c.snapshot(s).entries.map((e) => [e.peer, e.proto, e.port, e.verdict, e.ruleId]),
      [[CLUSTER_CLASS_PEER, TCP, 8080, "allow", snap.entries[0]!.ruleId], [STRAY, TCP, 8080, "deny", 0]],
      `subject ${s}: the class entry and the stray's default deny on its key`,
    );
    assert.deepEqual(applied(snap.entries, deltas, s), applied(fresh.snapshot(s).entries, [], s));
    assert.equal(verdict(c, s, STRAY, 8080), "deny", "the stray identity is not allowed");
    assert.equal(verdict(c, s, 256 + 3, 8080), "allow");
  }
  const back = new DeltaCollector();
  c.removeIdentity(STRAY, back);
  for (const [s, snap] of before) {
    assert.deepEqual(c.snapshot(s), snap);
    assert.deepEqual(entriesOf(back.deltas(c.enforcementOf), s).removed.map((e) => e.peer), [STRAY]);
  }
});

test("while an agent that does not look up class entries is known (setClusterClass(false)), every peer of the cluster gets its own entry, with the same verdicts; allowed again, the class entries come back", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const off = new DeltaCollector();
  c.setClusterClass(false, off);
  const deltas = off.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    const entries = c.snapshot(s).entries;
    assert.ok(entries.every((e) => e.peer !== CLUSTER_CLASS_PEER), `subject ${s}: no class entry`);
    // One per peer in the cluster: every pod identity and the reserved identities the entity selects.
    assert.ok(podPeers(ids).every((p) => entries.some((e) => e.peer === p && e.port === 8080 && e.verdict === "allow")), `subject ${s}: each pod its own entry`);
    assert.deepEqual(applied(snap.entries, deltas, s), applied(entries, [], s), "the delta ends where the snapshot is");
    for (const peer of podPeers(ids)) assert.equal(verdict(c, s, peer, 8080), "allow");
    assert.equal(verdict(c, s, WORLD, 8080), "deny");
  }
  assert.deepEqual(c.setClusterClass(false), [], "no change, no delta");
  const on = new DeltaCollector();
  c.setClusterClass(true, on);
  const back = on.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    assert.deepEqual(c.snapshot(s), snap);
    assert.deepEqual(applied(c.snapshot(s).entries, [], s), applied(applied(snap.entries, deltas, s), back, s), "the deltas end where they began");
  }
});

// ----- every pod (EVERY_POD_CLASS_PEER) ---------------------------------------------------------

/** One NetworkPolicy per namespace: its pods may send UDP 53 to every pod of every namespace (bench/scale's). */
function dnsToEveryNamespace(port = 53): Policy[] {
  return Array.from({ length: NAMESPACES }, (_, ns) =>
    parse({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "dns", namespace: `ns-${ns}` },
      spec: { podSelector: {}, policyTypes: ["Egress"], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ protocol: "UDP", port }] }] },
    }),
  ).flat();
}

/** A CCNP: every `web` may send TCP 443 to the whole cluster (pods and the reserved identities in it). */
function webToCluster(): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "web-to-cluster" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, egress: [{ toEntities: ["cluster"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] }] },
  });
}

/** A CNP in ns-0: `web` may not send UDP 53 to `db` of ns-0 (a pod that another rule also matches). */
function denyDb0Dns(): Policy[] {
  return parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "no-db-dns", namespace: "ns-0" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, egressDeny: [{ toEndpoints: [{ matchLabels: { app: "db" } }], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] }] },
  });
}

function egressVerdict(c: ReturnType<typeof compileAll>, subject: number, peer: number, proto: number, port: number): string {
  return lookup(c.snapshot(subject), "egress", peer, proto, port).verdict;
}

/** The rule a lookup names; a stray peer's entry that stands for the default names none (strayPeerTemplates), as the default does. */
function ruleOf(r: LookupResult): number | undefined {
  return r.entry?.ruleId === RULE_ID_DEFAULT_DENY ? undefined : r.entry?.ruleId;
}

/** Every lookup of every subject and peer on the probed ports gives the same entry as the per-peer compile's. */
function assertSameAsPerPeer(policies: readonly Policy[], ids: Map<number, LabelSet>): void {
  const classes = compileAll(policies, ids);
  const perPeer = compileAll(policies, ids);
  perPeer.setEveryPodClass(false);
  perPeer.setClusterClass(false);
  for (const s of classes.subjectIds()) {
    for (const peer of ids.keys()) {
      for (const [proto, port] of [[UDP, 53], [UDP, 54], [TCP, 53], [TCP, 443], [TCP, 80]] as const) {
        const a = lookup(classes.snapshot(s), "egress", peer, proto, port);
        const b = lookup(perPeer.snapshot(s), "egress", peer, proto, port);
        assert.deepEqual([a.verdict, ruleOf(a)], [b.verdict, ruleOf(b)], `subject ${s} peer ${peer} ${proto}/${port}`);
      }
    }
  }
}

test("a NetworkPolicy egress to every namespace is one entry per subject for every pod, which allows each pod on its port and no reserved identity", () => {
  const ids = podIdentities();
  const c = compileAll(dnsToEveryNamespace(), ids);
  assert.equal(c.subjectIds().length, 2 * NAMESPACES);
  for (const s of c.subjectIds()) {
    assert.deepEqual(c.snapshot(s).entries.map((e) => [e.direction, e.peer, e.proto, e.port, e.portPrefixLen, e.verdict]), [["egress", EVERY_POD_CLASS_PEER, UDP, 53, 16, "allow"]]);
    for (const peer of podPeers(ids)) assert.equal(egressVerdict(c, s, peer, UDP, 53), "allow", `subject ${s} peer ${peer}`);
    for (const r of RESERVED_IDENTITIES) assert.equal(egressVerdict(c, s, r.id, UDP, 53), "deny", `subject ${s} reserved ${r.name}`);
    assert.equal(egressVerdict(c, s, 256, UDP, 54), "deny");
  }
  assert.equal(c.entryCount(), 2 * NAMESPACES);
  assertSameAsPerPeer(dnsToEveryNamespace(), ids);
});

test("beside a cluster-wide rule each subject holds one entry per key and class: a pod finds both rules in the every-pod entries, a reserved peer the cluster's", () => {
  const ids = podIdentities();
  const policies = [...dnsToEveryNamespace(), ...webToCluster()];
  const c = compileAll(policies, ids);
  for (const s of c.subjectIds()) {
    const web = ids.get(s)!.labels.some((l) => l.key === "app" && l.value === "web");
    const want = web
      ? [[EVERY_POD_CLASS_PEER, TCP, 443], [EVERY_POD_CLASS_PEER, UDP, 53], [CLUSTER_CLASS_PEER, TCP, 443]]
      : [[EVERY_POD_CLASS_PEER, UDP, 53]];
    const got = c.snapshot(s).entries.map((e) => [e.peer, e.proto, e.port]);
    assert.deepEqual(got.sort(), want.sort(), `subject ${s}: no pod has an entry of its own`);
    if (!web) continue;
    for (const peer of podPeers(ids)) {
      assert.equal(egressVerdict(c, s, peer, TCP, 443), "allow");
      assert.equal(egressVerdict(c, s, peer, UDP, 53), "allow");
    }
    assert.equal(egressVerdict(c, s, IDENTITY.host, TCP, 443), "allow", "the host is in the cluster");
    assert.equal(egressVerdict(c, s, IDENTITY.host, UDP, 53), "deny", "the host is no pod");
    assert.equal(egressVerdict(c, s, IDENTITY.world, TCP, 443), "deny");
  }
  assertSameAsPerPeer(policies, ids);
});

test("a pod that another rule also matches keeps entries of its own (the class's keys among them), with the same first hit as per peer, deny included; deltas end where fresh compiles are", () => {
  const ids = podIdentities();
  const base = [...dnsToEveryNamespace(), ...webToCluster()];
  const c = compileAll(base, ids);
  const web0 = 256;
  const db0 = 257;
  const before = c.snapshot(web0);
  const add = new DeltaCollector();
  for (const p of denyDb0Dns()) c.upsertPolicy("CiliumNetworkPolicy/ns-0/no-db-dns", [p], add);
  const withDeny = compileAll([...base, ...denyDb0Dns()], ids);
  assert.deepEqual(applied(before.entries, add.deltas(c.enforcementOf), web0), applied(withDeny.snapshot(web0).entries, [], web0));
  assert.deepEqual(c.snapshot(web0), withDeny.snapshot(web0));
  assert.deepEqual(
    c.snapshot(web0).entries.filter((e) => e.peer === db0).map((e) => [e.proto, e.port, e.verdict]).sort(),
    [[TCP, 443, "allow"], [UDP, 53, "deny"]].sort(),
    "db of ns-0 has its own entries: its deny and the class's other key",
  );
  assert.equal(egressVerdict(c, web0, db0, UDP, 53), "deny");
  assert.equal(egressVerdict(c, web0, db0, TCP, 443), "allow");
  assert.equal(egressVerdict(c, web0, 259, UDP, 53), "allow", "db of ns-1: the class");
  assertSameAsPerPeer([...base, ...denyDb0Dns()], ids);
  const drop = new DeltaCollector();
  c.removePolicy("CiliumNetworkPolicy/ns-0/no-db-dns", drop);
  assert.deepEqual(c.snapshot(web0), before, "back to one entry per key and class");
});

test("an identity in the pods' number range without a namespace keeps the every-pod entries on: it alone gets an entry of its own, with the per-peer compile's verdicts; a new pod comes with no entry", () => {
  const ids = podIdentities();
  const c = compileAll(dnsToEveryNamespace(), ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const NEW = 1000;
  const fresh = new DeltaCollector();
  c.upsertIdentity(NEW, securityLabels({ podLabels: { app: "cache" }, namespace: "ns-new", namespaceLabels: {} }), fresh);
  assert.deepEqual(fresh.deltas(c.enforcementOf).filter((d) => d.added.length + d.removed.length > 0), [], "a new pod: no entry comes with it");
  for (const s of before.keys()) assert.equal(egressVerdict(c, s, NEW, UDP, 53), "allow");
  c.removeIdentity(NEW);
  const STRAY = 2000;
  const stray = labelSetFrom([label("k8s", "app", "legacy")]);
  const on = new DeltaCollector();
  c.upsertIdentity(STRAY, stray, on);
  const deltas = on.deltas(c.enforcementOf);
  const withStray = new Map([...ids, [STRAY, stray]]);
  const fromScratch = compileAll(dnsToEveryNamespace(), withStray);
  for (const [s, snap] of before) {
    const entries = c.snapshot(s).entries;
    assert.deepEqual(entries.map((e) => e.peer), [EVERY_POD_CLASS_PEER, STRAY], `subject ${s}: the class entry and the stray's`);
    assert.deepEqual(applied(snap.entries, deltas, s), applied(fromScratch.snapshot(s).entries, [], s));
    assert.equal(egressVerdict(c, s, STRAY, UDP, 53), "deny", "the identity without a namespace is not allowed");
    assert.equal(egressVerdict(c, s, 258, UDP, 53), "allow");
  }
  assertSameAsPerPeer(dnsToEveryNamespace(), withStray);
  c.removeIdentity(STRAY);
  for (const [s, snap] of before) assert.deepEqual(c.snapshot(s), snap);
});

test("while an agent that does not look up every-pod entries is known (setEveryPodClass(false)), every pod gets its own entry with the same verdicts; allowed again, the class entries come back", () => {
  const ids = podIdentities();
  const policies = [...dnsToEveryNamespace(), ...webToCluster()];
  const c = compileAll(policies, ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const off = new DeltaCollector();
  c.setEveryPodClass(false, off);
  const deltas = off.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    const entries = c.snapshot(s).entries;
    assert.ok(entries.every((e) => e.peer !== EVERY_POD_CLASS_PEER), `subject ${s}: no every-pod entry`);
    assert.ok(podPeers(ids).every((p) => entries.some((e) => e.peer === p && e.proto === UDP && e.port === 53)), `subject ${s}: each pod its own entry`);
    assert.deepEqual(applied(snap.entries, deltas, s), applied(entries, [], s), "the delta ends where the snapshot is");
    for (const peer of podPeers(ids)) assert.equal(egressVerdict(c, s, peer, UDP, 53), "allow");
  }
  assert.ok(c.snapshot(256).entries.some((e) => e.peer === CLUSTER_CLASS_PEER), "the cluster class stays");
  assert.deepEqual(c.setEveryPodClass(false), [], "no change, no delta");
  const on = new DeltaCollector();
  c.setEveryPodClass(true, on);
  const back = on.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    assert.deepEqual(c.snapshot(s), snap);
    assert.deepEqual(applied(c.snapshot(s).entries, [], s), applied(applied(snap.entries, deltas, s), back, s), "the deltas end where they began");
  }
  // An agent without the cluster class has neither (the every-pod entries hold the cluster entity's rules too).
  c.setClusterClass(false);
  assert.ok(c.subjectIds().every((s) => c.snapshot(s).entries.every((e) => e.peer !== EVERY_POD_CLASS_PEER && e.peer !== CLUSTER_CLASS_PEER)));
});

test("one identity without the cluster label among many keeps the class entries on for every subject: a subject direction holds at most two entries more (the stray's), not one per identity, and every lookup is the per-peer compile's", () => {
  const ids = podIdentities();
  for (let n = 0; n < 200; n++) ids.set(1000 + n, securityLabels({ podLabels: { app: `idle-${n}` }, namespace: "gone", namespaceLabels: {} }));
  const policies = [...fromCluster(8080), ...dnsToEveryNamespace(), ...allowDb0All()];
  const labelled = compileAll(policies, ids);
  const STRAY = 5000;
  const bare = labelSetFrom([label("k8s", "app", "legacy"), label("k8s", "io.kubernetes.pod.namespace", "ns-0")]);
  const withStray = new Map([...ids, [STRAY, bare]]);
  const c = compileAll(policies, withStray);
  const classDirections = c.subjectIds().reduce((n, s) => n + new Set(c.snapshot(s).entries.filter((e) => e.peer === CLUSTER_CLASS_PEER || e.peer === EVERY_POD_CLASS_PEER).map((e) => e.direction)).size, 0);
  assert.ok(c.entryCount() <= labelled.entryCount() + 2 * classDirections, `${c.entryCount()} entries with the stray, ${labelled.entryCount()} without (${classDirections} subject directions with class entries)`);
  assert.ok(c.entryCount() < withStray.size, "far fewer entries than identities");
  const perPeer = compileAll(policies, withStray);
  perPeer.setEveryPodClass(false);
  perPeer.setClusterClass(false);
  assert.ok(perPeer.entryCount() > 10 * c.entryCount(), `the per-peer compile: ${perPeer.entryCount()} entries`);
  for (const s of c.subjectIds()) {
    const [classes, own] = [c.snapshot(s), perPeer.snapshot(s)];
    for (const peer of [...podPeers(ids).slice(0, 40), STRAY, IDENTITY.host, WORLD]) {
      for (const direction of ["ingress", "egress"] as const) {
        for (const [proto, port] of [[TCP, 8080], [TCP, 5432], [UDP, 53], [UDP, 54]] as const) {
          const a = lookup(classes, direction, peer, proto, port);
          const b = lookup(own, direction, peer, proto, port);
          assert.deepEqual([a.verdict, ruleOf(a)], [b.verdict, ruleOf(b)], `subject ${s} ${direction} peer ${peer} ${proto}/${port}`);
        }
      }
    }
  }
  // Incrementally too: the stray's coming and going moves only its own entries.
  const inc = compileAll(policies, ids);
  const d = new DeltaCollector();
  inc.upsertIdentity(STRAY, bare, d);
  for (const delta of d.deltas(inc.enforcementOf)) {
    if (delta.subject === STRAY) continue; // in ns-0 by its labels, the NetworkPolicy there selects it: a subject of its own
    assert.ok([...delta.added, ...delta.removed].every((e) => e.peer === STRAY), `subject ${delta.subject}: only the stray's entries move`);
    assert.deepEqual(inc.snapshot(delta.subject), c.snapshot(delta.subject));
  }
  inc.removeIdentity(STRAY);
  for (const s of inc.subjectIds()) assert.deepEqual(inc.snapshot(s), labelled.snapshot(s));
});
