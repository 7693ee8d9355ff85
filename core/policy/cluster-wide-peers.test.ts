// A cluster-wide peer selector (bench/scale's `fromEntities: [cluster]` CCNPs) compiles to one entry per key for the cluster class (CLUSTER_CLASS_PEER), not one per peer: a peer that other rules also match keeps entries of its own, and a change reaches all of them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compileAll, DeltaCollector, policyKey, type Delta } from "../compiler.ts";
import { CLUSTER_CLASS_PEER, RESERVED_IDENTITIES } from "../identity.ts";
import { securityLabels } from "../labels.ts";
import type { LabelSet, Policy, PolicyEntry } from "../model.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { lookup } from "./mapstate.ts";

const NAMESPACES = 12;
const WORLD = 2;
const TCP = 6;

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

test("an identity in the cluster's number range that the cluster entity does not select turns class entries off (every peer its own), and on again when it goes", () => {
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
    assert.ok(c.snapshot(s).entries.every((e) => e.peer !== CLUSTER_CLASS_PEER), `subject ${s}: no class entry`);
    assert.deepEqual(applied(snap.entries, deltas, s), applied(fresh.snapshot(s).entries, [], s));
    assert.equal(verdict(c, s, STRAY, 8080), "deny", "the stray identity is not allowed");
    assert.equal(verdict(c, s, 256 + 3, 8080), "allow");
  }
  const back = new DeltaCollector();
  c.removeIdentity(STRAY, back);
  for (const [s, snap] of before) assert.deepEqual(c.snapshot(s), snap);
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
