// A cluster-wide peer selector (bench/scale's `fromEntities: [cluster]` CCNPs) compiles to one entry list shared by every peer it matches: each subject and peer still gets its own entries, and a change reaches all of them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compileAll, DeltaCollector, policyKey, type Delta } from "../compiler.ts";
import { RESERVED_IDENTITIES } from "../identity.ts";
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

test("a port change in a cluster-wide rule moves every subject's entry of every peer, and ends where a fresh compile is", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const key = policyKey(fromCluster(8080)[0]!);
  const d = new DeltaCollector();
  c.upsertPolicy(key, fromCluster(9090), d);
  const deltas = d.deltas(c.enforcementOf);
  const fresh = compileAll(fromCluster(9090), ids);
  for (const s of c.subjectIds()) {
    const { added, removed } = entriesOf(deltas, s);
    const peers = fresh.snapshot(s).entries.map((e) => e.peer);
    assert.ok(peers.length >= podPeers(ids).length, "every pod peer and the reserved cluster entities");
    assert.deepEqual(added.map((e) => [e.peer, e.port]), peers.map((p) => [p, 9090]), `subject ${s}: 9090 added for every peer`);
    assert.deepEqual(removed.map((e) => [e.peer, e.port]), peers.map((p) => [p, 8080]), `subject ${s}: 8080 removed for every peer`);
    assert.deepEqual(c.snapshot(s), fresh.snapshot(s));
    assert.equal(verdict(c, s, 256 + 3, 9090), "allow");
    assert.equal(verdict(c, s, 256 + 3, 8080), "deny");
  }
});

test("a new pod identity reaches every subject of a cluster-wide rule with one entry, and its removal takes exactly that entry back", () => {
  const ids = podIdentities();
  const c = compileAll(fromCluster(8080), ids);
  const before = new Map(c.subjectIds().map((s) => [s, c.snapshot(s)]));
  const NEW = 1000;
  const add = new DeltaCollector();
  c.upsertIdentity(NEW, securityLabels({ podLabels: { app: "cache" }, namespace: "ns-new", namespaceLabels: {} }), add);
  const added = add.deltas(c.enforcementOf);
  for (const s of before.keys()) {
    const { added: a, removed: r } = entriesOf(added, s);
    assert.deepEqual(a.map((e) => [e.subject, e.direction, e.peer, e.port, e.verdict]), [[s, "ingress", NEW, 8080, "allow"]]);
    assert.deepEqual(r, []);
    assert.equal(verdict(c, s, NEW, 8080), "allow");
  }
  const drop = new DeltaCollector();
  c.removeIdentity(NEW, drop);
  const dropped = drop.deltas(c.enforcementOf);
  for (const [s, snap] of before) {
    assert.deepEqual(entriesOf(dropped, s).removed.map((e) => [e.peer, e.port]), [[NEW, 8080]]);
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
