// NodeStateSource over in-memory caches with the real parser and compiler: a node gets the compiled
// policy of the identities it hosts and the whole ipcache; enforcement follows the agents' ACKs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { securityLabels } from "../../core/labels.ts";
import type { Informer } from "../../kube/informer.ts";
import { keyOf } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";
import { securityLabelsMap, type EndpointSliceObject, type IdentityObject, type PodObject, type ServiceObject } from "../../kube/objects.ts";
import type { NodeObject } from "../node.ts";
import type { PolicyObject } from "../policy.ts";
import { NodeStateSource, patchSubjectPolicy } from "./source.ts";
import { CIDRGroups } from "../cidr-groups.ts";
import fc from "fast-check";
import type { PolicyEntry } from "../../core/model.ts";
import { compareEntries } from "../../core/policy/mapstate.ts";
import { isNodeHostIdentity } from "../../core/host-endpoint.ts";

function cache<T extends KubeObject>(items: T[]): Informer<T> {
  const m = new Map(items.map((i) => [keyOf(i), i]));
  return { get: (k: string) => m.get(k), list: () => [...m.values()] } as unknown as Informer<T>;
}

const labelsOf = (app: string) => securityLabels({ podLabels: { app }, namespace: "ns", namespaceLabels: {} });
const identity = (n: number, app: string): IdentityObject => ({ metadata: { name: String(n) }, "security-labels": securityLabelsMap(labelsOf(app)) });
const pod = (name: string, app: string, id: number, node: string, ip: string): PodObject => ({
  metadata: { name, namespace: "ns", labels: { app }, annotations: { "membrane.io/identity": String(id) } },
  spec: { nodeName: node },
  status: { phase: "Running", podIP: ip },
});
const node = (name: string, ip: string): NodeObject => ({ metadata: { name }, status: { addresses: [{ type: "InternalIP", address: ip }] } });

test("a node receives the compiled policy of its own identities, the cluster ipcache and the policy generation", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5"), pod("db", "db", 257, "n2", "10.0.2.5")]);
  const nodes = cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]);
  const src = new NodeStateSource(pods, nodes);
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  const cnp: PolicyObject = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "web", namespace: "ns", uid: "u1", generation: 4 },
    ...({ spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] } } as object),
  };
  src.onPolicy({ type: "add", obj: cnp });

  const n1 = src.stateFor("n1");
  assert.deepEqual(n1.policies.map((p) => p.subject), [256]);
  const web = n1.policies[0];
  assert.equal(web?.ingressEnforced, true);
  assert.ok(web?.entries.some((e) => e.direction === "ingress" && e.peer === 257 && e.proto === 6 && e.port === 80 && e.verdict === "allow"));
  assert.deepEqual(n1.policyGenerations, [{ key: "CiliumNetworkPolicy/ns/web", uid: "u1", generation: 4 }]);
  const ipc = new Map(n1.ipcache.map((e) => [e.prefix, e]));
  assert.deepEqual(ipc.get("10.0.2.5/32"), { prefix: "10.0.2.5/32", identity: 257, node: "192.0.2.2", pod: "ns/db" });
  assert.equal(ipc.get("192.0.2.2/32")?.identity, 6, "nodes are remote-node");
  assert.ok(n1.rules.length >= 1);
  const n2 = src.stateFor("n2");
  assert.equal(n2.policies[0]?.subject, 257);
  assert.equal(n2.policies[0]?.ingressEnforced, false, "db is selected by no policy");

  // An invalid edit keeps the last valid version compiled (fail closed).
  src.onPolicy({ type: "update", old: cnp, obj: { ...cnp, metadata: { ...cnp.metadata, generation: 5 }, ...({ spec: { endpointSelector: { matchExpressions: [{ key: "app", operator: "In", values: [] }] } } } as object) } });
  assert.equal(src.stateFor("n1").policyGenerations[0]?.generation, 4);
  assert.equal(src.stateFor("n1").policies[0]?.ingressEnforced, true);

  const concerned = new Set(["n1"]);
  const acked = src.stateFor("n1");
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked }]), { acknowledged: 1, refused: [], unheard: [], withoutDnsProxy: ["n1"], withoutL7Proxy: ["n1"] });
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked, dnsProxy: true }]), { acknowledged: 1, refused: [], unheard: [], withoutDnsProxy: [], withoutL7Proxy: ["n1"] });
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked, l7Proxy: true }]), { acknowledged: 1, refused: [], unheard: [], withoutDnsProxy: ["n1"], withoutL7Proxy: [] });
  assert.deepEqual(src.enforcement({ ...cnp, metadata: { ...cnp.metadata, generation: 5 } }, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked }]), { acknowledged: 0, refused: [], unheard: [], withoutDnsProxy: ["n1"], withoutL7Proxy: ["n1"] });
  // A node concerned whose agent has not answered since the operator started is named (the agent reconnect grace, policy.ts).
  assert.deepEqual(src.enforcement(cnp, new Set(["n1", "n2"]), [{ node: "n1", connected: true, ackedVersion: 1, acked }, { node: "n2", connected: true }]).unheard, ["n2"]);
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, nack: { version: 2, error: "map full", state: acked } }]), { acknowledged: 0, refused: [{ node: "n1", message: "map full" }], unheard: [], withoutDnsProxy: ["n1"], withoutL7Proxy: ["n1"] });

  src.onPolicy({ type: "delete", obj: cnp });
  assert.equal(src.stateFor("n1").policies[0]?.ingressEnforced, false);
  assert.deepEqual(src.stateFor("n1").policyGenerations, []);
});

const cnpOf = (name: string, spec: object, generation = 1): PolicyObject =>
  ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "ns", uid: `uid-${name}`, generation }, spec }) as PolicyObject;

test("CIDR peers get node-local CIDR identities: allow entries name them and the ipcache maps their prefixes", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const egress = cnpOf("out", {
    endpointSelector: { matchLabels: { app: "web" } },
    egress: [
      { toCIDR: ["203.0.113.0/24"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
      { toCIDRSet: [{ cidr: "198.51.100.0/24", except: ["198.51.100.128/25"] }] },
    ],
    ingress: [{ fromCIDR: ["192.0.2.0/24"] }],
  });
  assert.equal(src.onPolicy({ type: "add", obj: egress }), "all");
  const state = src.stateFor("n1");
  const ipc = new Map(state.ipcache.map((e) => [e.prefix, e.identity]));
  const idOf = (prefix: string): number => {
    const id = ipc.get(prefix);
    assert.ok(id !== undefined && id >= 1 << 24, `${prefix} has a local CIDR identity in the ipcache (got ${id})`);
    return id;
  };
  const web = state.policies[0];
  assert.ok(web?.egressEnforced && web.ingressEnforced);
  const allows = (dir: string, peer: number, port = 0): boolean =>
    web.entries.some((e) => e.direction === dir && e.peer === peer && e.verdict === "allow" && (port === 0 || (e.port === port && e.proto === 6)));
  assert.ok(allows("egress", idOf("203.0.113.0/24"), 443), "toCIDR allows 203.0.113.0/24 on 443/TCP");
  assert.ok(allows("egress", idOf("198.51.100.0/24")), "toCIDRSet allows its cidr");
  assert.ok(!allows("egress", idOf("198.51.100.128/25")), "the except prefix is not allowed");
  assert.ok(allows("ingress", idOf("192.0.2.0/24")), "fromCIDR allows the prefix");
  assert.ok(state.identities.some((i) => i.id === idOf("203.0.113.0/24") && i.labels.includes("cidr:203.0.113.0/24")), "its labels are sent for flows");
  assert.equal(ipc.get("192.0.2.1/32"), 6, "a node address stays remote-node inside a policy's prefix");

  // Dropping a prefix from the policy releases its identity and its ipcache entry.
  src.onPolicy({ type: "update", old: egress, obj: cnpOf("out", { endpointSelector: { matchLabels: { app: "web" } }, egress: [{ toCIDR: ["203.0.113.0/24"] }] }, 2) });
  const after = new Map(src.stateFor("n1").ipcache.map((e) => [e.prefix, e.identity]));
  assert.equal(after.get("203.0.113.0/24"), ipc.get("203.0.113.0/24"), "a kept prefix keeps its identity");
  assert.equal(after.has("198.51.100.0/24"), false);
  assert.equal(after.has("192.0.2.0/24"), false);
  src.onPolicy({ type: "delete", obj: egress });
  assert.equal(src.stateFor("n1").ipcache.some((e) => e.identity >= 1 << 24), false);
});

test("NetworkPolicy ipBlock prefixes carry an ipBlock identity in the ipcache (a pod's /32 in except too); a CNP's CIDRs do not", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5"), pod("db", "db", 257, "n2", "10.0.2.5")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  const np = (except: string[], generation = 1): PolicyObject =>
    ({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "from-pods", namespace: "ns", uid: "uid-np", generation },
      spec: { podSelector: { matchLabels: { app: "web" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except } }] }] },
    }) as PolicyObject;
  src.onPolicy({ type: "add", obj: cnpOf("cidr", { endpointSelector: { matchLabels: { app: "db" } }, ingress: [{ fromCIDR: ["172.16.0.0/12"] }] }) });
  src.onPolicy({ type: "add", obj: np(["10.0.2.5/32"]) });
  const state = src.stateFor("n1");
  const ipc = new Map(state.ipcache.map((e) => [e.prefix, e]));
  const wide = ipc.get("10.0.0.0/8");
  const db = ipc.get("10.0.2.5/32");
  assert.ok(wide?.ipBlockIdentity !== undefined && wide.ipBlockIdentity >= 1 << 24 && wide.ipBlockIdentity !== wide.identity, "the block has its own ipBlock identity beside its CIDR identity");
  assert.deepEqual(db && { ...db, ipBlockIdentity: undefined }, { prefix: "10.0.2.5/32", identity: 257, node: "192.0.2.2", pod: "ns/db", ipBlockIdentity: undefined }, "the pod entry stays the pod's");
  assert.ok(db?.ipBlockIdentity !== undefined && db.ipBlockIdentity >= 1 << 24, "the excepted pod address has an ipBlock identity");
  assert.equal(ipc.get("172.16.0.0/12")?.ipBlockIdentity, undefined, "a CNP CIDR has none");
  assert.ok(state.identities.some((i) => i.id === wide.ipBlockIdentity && i.labels.includes("ipblock:10.0.0.0/8")), "its labels are sent for flows");
  const web = state.policies.find((p) => p.subject === 256);
  assert.ok(web?.entries.some((e) => e.direction === "ingress" && e.peer === wide.ipBlockIdentity && e.verdict === "allow"), "the block's identity is allowed");
  assert.ok(!web?.entries.some((e) => e.peer === db?.ipBlockIdentity), "the except's is not");

  // The except moves to another address: the old except's ipBlock identity goes, the new one comes.
  src.onPolicy({ type: "update", old: np(["10.0.2.5/32"]), obj: np(["10.9.0.0/16"], 2) });
  const after = new Map(src.stateFor("n1").ipcache.map((e) => [e.prefix, e]));
  assert.equal(after.get("10.0.2.5/32")?.ipBlockIdentity, undefined);
  assert.equal(after.get("10.0.2.5/32")?.identity, 257);
  assert.ok(after.get("10.9.0.0/16")?.ipBlockIdentity !== undefined);
  assert.equal(after.get("10.0.0.0/8")?.ipBlockIdentity, wide.ipBlockIdentity, "a kept prefix keeps its ipBlock identity");
  src.onPolicy({ type: "delete", obj: np(["10.9.0.0/16"], 2) });
  // What is left is each node address's node identity (core/node-peers.ts).
  assert.equal(src.stateFor("n1").ipcache.some((e) => e.ipBlockIdentity !== undefined && !isNodeHostIdentity(e.ipBlockIdentity)), false);
});

test("named ports resolve against the containerPorts of the selected pods, both directions", () => {
  const withPorts = (p: PodObject, ports: { name: string; containerPort: number; protocol?: string }[]): PodObject => ({ ...p, spec: { ...p.spec, containers: [{ ports }] } });
  const web = withPorts(pod("web", "web", 256, "n1", "10.0.1.5"), [{ name: "http", containerPort: 8080 }, { name: "dns", containerPort: 53, protocol: "UDP" }]);
  const db = withPorts(pod("db", "db", 257, "n2", "10.0.2.5"), [{ name: "sql", containerPort: 5432 }]);
  const src = new NodeStateSource(cache([web, db]), cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  src.onPolicy({
    type: "add",
    obj: cnpOf("named", {
      endpointSelector: { matchLabels: { app: "web" } },
      ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }], toPorts: [{ ports: [{ port: "http", protocol: "TCP" }] }] }],
      egress: [{ toEndpoints: [{ matchLabels: { app: "db" } }], toPorts: [{ ports: [{ port: "sql" }] }] }],
    }),
  });
  const entries = src.stateFor("n1").policies[0]?.entries ?? [];
  assert.ok(entries.some((e) => e.direction === "ingress" && e.peer === 257 && e.proto === 6 && e.port === 8080 && e.verdict === "allow"), "ingress 'http' is the subject's 8080/TCP");
  assert.ok(entries.some((e) => e.direction === "egress" && e.peer === 257 && e.port === 5432 && e.verdict === "allow"), "egress 'sql' is the peer's 5432");
  assert.ok(!entries.some((e) => e.port === 53), "a name the policy does not use adds nothing");
});

test("each change says which nodes it concerns, and every node shares the same ipcache", () => {
  const p1 = pod("web", "web", 256, "n1", "10.0.1.5");
  const src = new NodeStateSource(cache([p1]), cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  assert.equal(src.stateFor("n1").ipcache, src.stateFor("n2").ipcache, "one ipcache array for all nodes");
  const relabelled: PodObject = { ...p1, metadata: { ...p1.metadata, labels: { app: "web", tier: "x" } } };
  assert.deepEqual(src.onPod({ type: "update", old: p1, obj: relabelled }), [], "a change that moves no address or identity concerns nobody");
  const moved: PodObject = { ...p1, status: { phase: "Running", podIP: "10.0.1.6" } };
  assert.equal(src.onPod({ type: "update", old: p1, obj: moved }), "all", "a new address goes to every node");
  const pending: PodObject = { ...p1, metadata: { ...p1.metadata, name: "new" }, spec: { nodeName: "n2" }, status: { phase: "Pending" } };
  assert.deepEqual(src.onPod({ type: "add", obj: pending }), ["n2"], "an identity without an address only concerns its node");
  const cnp = cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{}] });
  assert.equal(src.onPolicy({ type: "add", obj: cnp }), "all");
  assert.deepEqual(src.onPolicy({ type: "update", old: cnp, obj: { ...cnp, status: { enforced: "1/1" } } }), [], "a status write changes nothing");
});

test("a policy change replaces only the subject policies it touches, each linked to the one before by the compiler's delta", () => {
  const src = new NodeStateSource(cache([pod("web", "web", 256, "n1", "10.0.1.5"), pod("db", "db", 257, "n1", "10.0.1.6")]), cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  src.onPolicy({ type: "add", obj: cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }) });
  src.onPolicy({ type: "add", obj: cnpOf("db", { endpointSelector: { matchLabels: { app: "db" } }, ingress: [{ toPorts: [{ ports: [{ port: "5432", protocol: "TCP" }] }] }] }) });
  const [web1, db1] = src.stateFor("n1").policies;
  src.onPolicy({ type: "update", old: cnpOf("web", {}), obj: cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ toPorts: [{ ports: [{ port: "81", protocol: "TCP" }] }] }] }, 2) });
  const [web2, db2] = src.stateFor("n1").policies;
  assert.equal(db2, db1, "an untouched subject keeps its object");
  assert.notEqual(web2, web1);
  const delta = src.subjectDeltas.between(web1!, web2!);
  assert.deepEqual(delta?.added.map((e) => e.port), [81]);
  assert.deepEqual(delta?.removed.map((e) => e.port), [80]);
  assert.equal(src.subjectDeltas.between(web2!, web1!), undefined, "a link goes one way, from the object it was made from");
});

test("sync reconciles with the caches as they are now: added, changed and removed objects, whatever events were seen", () => {
  const items = <T extends KubeObject>(xs: T[]) => {
    const m = new Map(xs.map((x) => [keyOf(x), x]));
    return { m, informer: { get: (k: string) => m.get(k), list: () => [...m.values()] } as unknown as Informer<T> };
  };
  const pods = items([pod("web", "web", 256, "n1", "10.0.1.5"), pod("db", "db", 257, "n2", "10.0.2.5")]);
  const identities = items([identity(256, "web"), identity(257, "db")]);
  const v1 = cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }] }] });
  const policies = items<PolicyObject>([v1]);
  const src = new NodeStateSource(pods.informer, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  const informers = { identities: identities.informer, policies: [policies.informer] };
  assert.equal(src.sync(informers), "all");
  assert.deepEqual(src.stateFor("n1").policyGenerations.map((g) => g.generation), [1]);
  assert.ok(src.stateFor("n1").policies[0]?.entries.some((e) => e.peer === 257));
  assert.deepEqual(src.sync(informers), [], "nothing changed: nothing to do");
  policies.m.set(keyOf(v1), cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "nobody" } }] }] }, 2));
  assert.deepEqual(src.sync(informers, ["pods", "identities"]), [], "only the kinds asked for are compared");
  assert.equal(src.sync(informers, ["policies"]), "all");
  assert.equal(src.stateFor("n1").policies[0]?.entries.some((e) => e.peer === 257), false, "the new generation is compiled");
  policies.m.clear();
  src.sync(informers);
  assert.deepEqual(src.stateFor("n1").policies, [{ subject: 256, ingressEnforced: false, egressEnforced: false, entries: [] }], "a policy gone from the cache is removed");
  assert.deepEqual(src.stateFor("n1").policyGenerations, []);
});

test("a first sync from full caches (an operator's restart: policies and identities at once) gives every node the state the same objects give as events in any order, also when it gives the event loop turns on the way", async () => {
  const apps = ["web", "db", "api", "cache", "gone-1", "gone-2"];
  const idents = apps.map((app, i) => identity(256 + i, app));
  const policies = [
    cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }, { fromEntities: ["cluster"], toPorts: [{ ports: [{ port: "9090", protocol: "TCP" }] }] }] }),
    cnpOf("db", { endpointSelector: { matchExpressions: [{ key: "app", operator: "In", values: ["db", "api"] }] }, egress: [{ toEndpoints: [{}] }, { toCIDR: ["198.18.0.0/24"] }] }),
    cnpOf("deny", { endpointSelector: { matchLabels: { app: "api" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: "cache" } }] }] }),
  ];
  const pods = () => cache(apps.slice(0, 4).map((app, i) => pod(app, app, 256 + i, `n${i % 2}`, `10.0.${i}.5`)));
  const nodes = () => cache([node("n0", "192.0.2.1"), node("n1", "192.0.2.2")]);
  const synced = new NodeStateSource(pods(), nodes());
  synced.sync({ identities: cache(idents), policies: [cache(policies)] });
  const identitiesFirst = new NodeStateSource(pods(), nodes());
  for (const obj of idents) identitiesFirst.onIdentity({ type: "add", obj });
  for (const obj of policies) identitiesFirst.onPolicy({ type: "add", obj });
  const policiesFirst = new NodeStateSource(pods(), nodes());
  for (const obj of policies) policiesFirst.onPolicy({ type: "add", obj });
  for (const obj of idents) policiesFirst.onIdentity({ type: "add", obj });
  // The operator's first compile (syncYielding): with a slice of 0 ms it lets other callbacks run after every object.
  const yielding = new NodeStateSource(pods(), nodes());
  let turns = 0;
  let done = false;
  const spin = (): void => {
    turns++;
    if (!done) setImmediate(spin);
  };
  setImmediate(spin);
  assert.equal(await yielding.syncYielding({ identities: cache(idents), policies: [cache(policies)] }, 0), "all");
  done = true;
  assert.ok(turns >= idents.length, `other callbacks ran ${turns} times during the compile`);
  for (const n of ["n0", "n1"]) {
    const want = synced.stateFor(n);
    assert.ok(want.policies.some((p) => p.entries.length > 0), "the policies compile to entries");
    for (const other of [identitiesFirst, policiesFirst, yielding]) {
      const got = other.stateFor(n);
      assert.deepEqual(got.policies, want.policies);
      assert.deepEqual(got.identities, want.identities);
      assert.deepEqual(got.ipcache, want.ipcache);
      assert.deepEqual(got.rules, want.rules);
    }
  }
});

test("a pod or identity change records the shared part's delta from the change: what moved, and nothing else", () => {
  const pods = [pod("web", "web", 256, "n1", "10.0.1.5")];
  const live = { list: () => [...pods] } as unknown as Informer<PodObject>; // the cache as it is at each call
  const src = new NodeStateSource(live, cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const before = src.stateFor("n1");
  // A second pod appears and one identity's labels change.
  const db = pod("db", "db", 257, "n1", "10.0.1.6");
  pods.push(db);
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  src.onPod({ type: "add", obj: db });
  const after = src.stateFor("n1");
  const ipc = src.sharedDeltas.between("ipcache", before.ipcache, after.ipcache);
  assert.deepEqual(ipc?.ipcacheUpserts, [{ prefix: "10.0.1.6/32", identity: 257, node: "192.0.2.1", pod: "ns/db" }]);
  assert.deepEqual(ipc?.ipcacheRemovals, []);
  const ids = src.sharedDeltas.between("identities", before.identities, after.identities);
  assert.deepEqual(ids?.identityUpserts.map((i) => i.id), [257]);
  assert.equal(after.ipcache.find((e) => e.prefix === "10.0.1.5/32"), before.ipcache.find((e) => e.prefix === "10.0.1.5/32"), "an unchanged entry keeps its object");
  // The pod goes: its address is the only removal; an agent two changes behind gets both as one.
  pods.pop();
  src.onPod({ type: "delete", obj: db });
  const gone = src.stateFor("n1");
  assert.deepEqual(src.sharedDeltas.between("ipcache", after.ipcache, gone.ipcache)?.ipcacheRemovals, ["10.0.1.6/32"]);
  const both = src.sharedDeltas.between("ipcache", before.ipcache, gone.ipcache);
  assert.deepEqual(both?.ipcacheUpserts, []);
  assert.deepEqual(both?.ipcacheRemovals, ["10.0.1.6/32"], "a prefix added then removed is a removal (a no-op on an agent that never held it)");
  // A status-only identity write changes nothing: no new list.
  src.onIdentity({ type: "update", old: identity(257, "db"), obj: identity(257, "db") });
  assert.equal(src.stateFor("n1").identities, gone.identities);
});

test("a pod's workload (Deployment through its ReplicaSet) rides on its ipcache entry; a pod adopted by another owner moves it", () => {
  const owned = (rs: string, hash: string): PodObject => {
    const p = pod("web-abc12", "web", 256, "n1", "10.0.1.5");
    return {
      ...p,
      metadata: {
        ...p.metadata,
        generateName: `${rs}-`,
        labels: { app: "web", "pod-template-hash": hash },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: rs, uid: "rs1", controller: true }],
      },
    };
  };
  const first = owned("web-6f9d8", "6f9d8");
  const src = new NodeStateSource(cache([first]), cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const before = src.stateFor("n1");
  assert.deepEqual(
    before.ipcache.find((e) => e.prefix === "10.0.1.5/32"),
    { prefix: "10.0.1.5/32", identity: 256, node: "192.0.2.1", pod: "ns/web-abc12", workload: { kind: "Deployment", name: "web" } },
  );
  // The same pod now controlled by a ReplicaSet of its own (no hash in its name): the entry moves, and only it.
  const orphan = owned("frontend", "6f9d8");
  assert.deepEqual(src.onPod({ type: "update", old: first, obj: orphan }), "all");
  const after = src.stateFor("n1");
  assert.deepEqual(src.sharedDeltas.between("ipcache", before.ipcache, after.ipcache)?.ipcacheUpserts, [
    { prefix: "10.0.1.5/32", identity: 256, node: "192.0.2.1", pod: "ns/web-abc12", workload: { kind: "ReplicaSet", name: "frontend" } },
  ]);
  // An event that changes nothing of it moves nothing.
  assert.deepEqual(src.onPod({ type: "update", old: orphan, obj: orphan }), []);
});

test("toServices: a node's compiled egress follows the Service's EndpointSlices (pods by their identity, a selector-less Service's addresses as CIDR identities in the ipcache)", () => {
  const pods = cache([pod("client", "client", 256, "n1", "10.0.1.5"), pod("db-1", "db", 257, "n2", "10.0.2.5"), pod("db-2", "db2", 258, "n2", "10.0.2.6")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  for (const [n, app] of [[256, "client"], [257, "db"], [258, "db2"]] as const) src.onIdentity({ type: "add", obj: identity(n, app) });
  const service = (name: string, selector?: Record<string, string>): ServiceObject => ({ metadata: { name, namespace: "ns" }, spec: selector ? { selector } : {} });
  const slice = (name: string, svc: string, addresses: string[]): EndpointSliceObject => ({
    metadata: { name, namespace: "ns", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: addresses.map((a) => ({ addresses: [a] })),
  });
  const services = new Map<string, ServiceObject>([["ns/db", service("db", { app: "db" })], ["ns/ext", service("ext")]]);
  const slices = new Map<string, EndpointSliceObject>([["ns/db-abc", slice("db-abc", "db", ["10.0.2.5"])], ["ns/ext-1", slice("ext-1", "ext", ["203.0.113.7"])]]);
  const informers = {
    identities: cache<IdentityObject>([]),
    policies: [] as Informer<PolicyObject>[],
    services: { list: () => [...services.values()] } as unknown as Informer<ServiceObject>,
    endpointSlices: { list: () => [...slices.values()] } as unknown as Informer<EndpointSliceObject>,
  };
  src.onPolicy({ type: "add", obj: cnpOf("to-db", { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toServices: [{ k8sService: { serviceName: "db" } }, { k8sService: { serviceName: "ext" } }] }] }) });
  src.sync(informers, ["services"]);
  const egressPeers = (): number[] => [...new Set((src.stateFor("n1").policies.find((p) => p.subject === 256)?.entries ?? []).filter((e) => e.direction === "egress" && e.verdict === "allow").map((e) => e.peer))].sort((a, b) => a - b);
  const extId = src.stateFor("n1").ipcache.find((e) => e.prefix === "203.0.113.7/32")?.identity;
  assert.ok(extId !== undefined && extId >= 1 << 24, "the selector-less Service's address has a CIDR identity in the ipcache");
  assert.deepEqual(egressPeers(), [257, extId]);

  // The EndpointSlice gains a backend, then loses the first: the entries follow.
  slices.set("ns/db-abc", slice("db-abc", "db", ["10.0.2.5", "10.0.2.6"]));
  assert.equal(src.sync(informers, ["services"]), "all");
  assert.deepEqual(egressPeers(), [257, 258, extId]);
  slices.set("ns/db-abc", slice("db-abc", "db", ["10.0.2.6"]));
  src.sync(informers, ["services"]);
  assert.deepEqual(egressPeers(), [258, extId]);

  // Services deleted: nothing selected (never allow-all), the CIDR identity released from the ipcache.
  services.clear();
  src.sync(informers, ["services"]);
  assert.deepEqual(egressPeers(), []);
  assert.equal(src.stateFor("n1").policies.find((p) => p.subject === 256)?.egressEnforced, true);
  assert.equal(src.stateFor("n1").ipcache.find((e) => e.prefix === "203.0.113.7/32"), undefined);
});

test("toServices: a backend pod that moves to another identity (relabelled) is followed: the new identity allowed, the old one no longer", () => {
  const podMap = new Map<string, PodObject>([
    ["ns/client", pod("client", "client", 256, "n1", "10.0.1.5")],
    ["ns/db-1", pod("db-1", "db", 257, "n1", "10.0.1.6")],
  ]);
  const pods = { get: (k: string) => podMap.get(k), list: () => [...podMap.values()] } as unknown as Informer<PodObject>;
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1")]));
  for (const [n, app] of [[256, "client"], [257, "db"], [259, "db-v2"]] as const) src.onIdentity({ type: "add", obj: identity(n, app) });
  const informers = {
    identities: cache<IdentityObject>([]),
    policies: [] as Informer<PolicyObject>[],
    services: cache<ServiceObject>([{ metadata: { name: "db", namespace: "ns" }, spec: { selector: { app: "db" } } }]),
    endpointSlices: cache<EndpointSliceObject>([{ metadata: { name: "db-1", namespace: "ns", labels: { "kubernetes.io/service-name": "db" } }, addressType: "IPv4", endpoints: [{ addresses: ["10.0.1.6"] }] }]),
  };
  src.sync(informers, ["pods", "services"]);
  src.onPolicy({ type: "add", obj: cnpOf("to-db", { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toServices: [{ k8sService: { serviceName: "db" } }] }] }) });
  const peers = (): number[] => [...new Set((src.stateFor("n1").policies.find((p) => p.subject === 256)?.entries ?? []).filter((e) => e.direction === "egress").map((e) => e.peer))];
  assert.deepEqual(peers(), [257]);
  podMap.set("ns/db-1", pod("db-1", "db-v2", 259, "n1", "10.0.1.6"));
  src.sync(informers, ["pods"]);
  assert.deepEqual(peers(), [259]);
});

test("pod events alone move hosted identities, named ports and the ipcache (no pass over the cache's pods)", () => {
  const withPort = (p: PodObject, port: number): PodObject => ({ ...p, spec: { ...p.spec, containers: [{ ports: [{ name: "http", containerPort: port }] }] } });
  const empty = { list: () => [] } as unknown as Informer<PodObject>; // events are all the source gets
  const src = new NodeStateSource(empty, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  src.onPolicy({ type: "add", obj: cnpOf("named", { endpointSelector: { matchLabels: { app: "db" } }, egress: [{ toEndpoints: [{ matchLabels: { app: "web" } }], toPorts: [{ ports: [{ port: "http", protocol: "TCP" }] }] }] }) });
  const db = pod("db", "db", 257, "n2", "10.0.2.5");
  src.onPod({ type: "add", obj: db });
  const httpPorts = (): number[] => (src.stateFor("n2").policies.find((p) => p.subject === 257)?.entries ?? []).filter((e) => e.peer === 256).map((e) => e.port);
  assert.deepEqual(httpPorts(), [], "no pod names the port yet");
  const web = withPort(pod("web", "web", 256, "n1", "10.0.1.5"), 8080);
  assert.equal(src.onPod({ type: "add", obj: web }), "all");
  assert.deepEqual(src.stateFor("n1").policies.map((p) => p.subject), [256]);
  assert.deepEqual(httpPorts(), [8080], "the new pod's named port resolves");
  assert.deepEqual(src.ipcache().find((e) => e.prefix === "10.0.1.5/32"), { prefix: "10.0.1.5/32", identity: 256, node: "192.0.2.1", pod: "ns/web" });
  // Moved to n2 with another port: n1 hosts nothing, n2 both, the entry tunnels to n2.
  const moved = withPort({ ...web, spec: { nodeName: "n2" } }, 9090);
  src.onPod({ type: "update", old: web, obj: moved });
  assert.deepEqual(src.stateFor("n1").policies, []);
  assert.deepEqual(src.stateFor("n2").policies.map((p) => p.subject), [256, 257]);
  assert.deepEqual(httpPorts(), [9090]);
  assert.equal(src.ipcache().find((e) => e.prefix === "10.0.1.5/32")?.node, "192.0.2.2");
  assert.deepEqual(src.onPod({ type: "update", old: moved, obj: moved }), [], "a repeated event changes nothing");
  src.onPod({ type: "delete", obj: moved });
  assert.deepEqual(httpPorts(), [], "the port went with its last pod");
  assert.equal(src.ipcache().some((e) => e.prefix === "10.0.1.5/32"), false);
});

test("a host policy (CCNP nodeSelector) is compiled for reserved:host and sent to every node, also one hosting no pod; without one no node gets the host subject", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5")]);
  const nodes = cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]);
  const src = new NodeStateSource(pods, nodes);
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  assert.ok(!src.stateFor("n1").policies.some((p) => p.subject === 1), "no host policy: no host subject");
  const ccnp: PolicyObject = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "host-fw", uid: "h1", generation: 1 },
    ...({ spec: { nodeSelector: {}, ingress: [{ fromEntities: ["remote-node"], toPorts: [{ ports: [{ port: "10250", protocol: "TCP" }] }] }] } } as object),
  };
  src.onPolicy({ type: "add", obj: ccnp });
  for (const n of ["n1", "n2"]) {
    const host = src.stateFor(n).policies.find((p) => p.subject === 1);
    assert.ok(host, `${n} gets the host subject`);
    assert.equal(host.ingressEnforced, true);
    assert.ok(host.entries.some((e) => e.direction === "ingress" && e.peer === 6 && e.port === 10250 && e.verdict === "allow"), "remote-node may reach the kubelet");
  }
  src.onPolicy({ type: "delete", obj: ccnp });
  assert.ok(!src.stateFor("n2").policies.some((p) => p.subject === 1), "deleted: the host subject leaves");
});

test("Cilium's init policy (a CCNP selecting reserved:init) is sent to every node as subject reserved:init, also one hosting no pod; its peers follow new identities; without it no node gets the subject", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const INIT = 5;
  assert.ok(!src.stateFor("n1").policies.some((p) => p.subject === INIT), "no init policy: no init subject (its endpoints stay closed)");
  const ccnp: PolicyObject = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "init", uid: "i1", generation: 1 },
    ...({ specs: [{ endpointSelector: { matchLabels: { "reserved:init": "" } }, ingress: [{ fromEntities: ["host"] }], egress: [{ toEndpoints: [{ matchLabels: { app: "dns" } }], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] }] }] } as object),
  };
  src.onPolicy({ type: "add", obj: ccnp });
  for (const n of ["n1", "n2"]) {
    const init = src.stateFor(n).policies.find((p) => p.subject === INIT);
    assert.ok(init, `${n} gets the init subject`);
    assert.equal(init.ingressEnforced && init.egressEnforced, true);
    assert.ok(init.entries.some((e) => e.direction === "ingress" && e.peer === 1 && e.verdict === "allow"), "the node reaches it");
    assert.deepEqual(init.entries.filter((e) => e.direction === "egress"), [], "no dns pod yet");
  }
  assert.deepEqual(src.stateFor("n1").policyGenerations, [{ key: "CiliumClusterwideNetworkPolicy//init", uid: "i1", generation: 1 }]);
  const before = src.stateFor("n2").policies.find((p) => p.subject === INIT);
  src.onIdentity({ type: "add", obj: identity(257, "dns") });
  const after = src.stateFor("n2").policies.find((p) => p.subject === INIT);
  assert.notEqual(after, before, "a new object: the distribution sends it");
  assert.ok(after?.entries.some((e) => e.direction === "egress" && e.peer === 257 && e.proto === 17 && e.port === 53), "the new identity's pods are a peer");
  src.onPolicy({ type: "delete", obj: ccnp });
  assert.ok(!src.stateFor("n2").policies.some((p) => p.subject === INIT), "deleted: the init subject leaves (the agent clears its entries)");
});

test("a node's state carries its subjects' DNS rules and toFQDNs selectors, and an edit of the names alone reaches it", () => {
  const pods = cache([pod("web", "web", 256, "n1", "10.0.1.5")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const spec = (name: string) => ({
    endpointSelector: { matchLabels: { app: "web" } },
    egress: [
      { toEndpoints: [{}], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }], rules: { dns: [{ matchName: name }] } }] },
      { toFQDNs: [{ matchName: name }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
    ],
  });
  const v1 = cnpOf("fqdn", spec("a.test"));
  src.onPolicy({ type: "add", obj: v1 });
  const before = src.stateFor("n1").policies[0];
  assert.deepEqual(before?.dns?.dnsRules.map((r) => r.rules), [[{ matchName: "a.test" }]]);
  assert.deepEqual(before?.dns?.fqdnSelectors.map((t) => [t.matchName, t.ports]), [["a.test", [{ proto: 6, port: 443, portPrefixLen: 16 }]]]);
  src.onPolicy({ type: "update", old: v1, obj: cnpOf("fqdn", spec("b.test"), 2) });
  const after = src.stateFor("n1").policies[0];
  assert.notEqual(after, before, "the subject policy is a new object: the distribution sends it");
  assert.deepEqual(after?.dns?.fqdnSelectors.map((t) => t.matchName), ["b.test"]);
  assert.deepEqual(after?.entries, before?.entries, "no map entry moved");
});

test("toNodes: each node address carries its node identity, a pod's egress entries name the labelled node's, and a relabel moves them on every node", () => {
  const labelled = (name: string, ip: string, labels: Record<string, string>): NodeObject => ({ ...node(name, ip), metadata: { name, labels } });
  const n1 = labelled("n1", "192.0.2.1", { "kubernetes.io/hostname": "n1" });
  const n2 = labelled("n2", "192.0.2.2", { "kubernetes.io/hostname": "n2" });
  const items = new Map([["n1", n1], ["n2", n2]]);
  const nodes = { get: (k: string) => items.get(k), list: () => [...items.values()] } as unknown as Informer<NodeObject>;
  const src = new NodeStateSource(cache([pod("web", "web", 256, "n1", "10.0.1.5")]), nodes);
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  const nodeId = (ip: string) => src.stateFor("n1").ipcache.find((e) => e.prefix === `${ip}/32`)?.ipBlockIdentity;
  assert.ok(isNodeHostIdentity(nodeId("192.0.2.1") ?? 0) && isNodeHostIdentity(nodeId("192.0.2.2") ?? 0) && nodeId("192.0.2.1") !== nodeId("192.0.2.2"));
  const n2on = labelled("n2", "192.0.2.2", { "kubernetes.io/hostname": "n2", tier: "mgmt" });
  items.set("n2", n2on);
  assert.deepEqual(src.onNode({ type: "update", old: n2, obj: n2on }), ["n2"], "no policy names nodes: only the node's own state moves");
  src.onPolicy({ type: "add", obj: cnpOf("to-mgmt", { endpointSelector: { matchLabels: { app: "web" } }, egress: [{ toNodes: [{ matchLabels: { tier: "mgmt" } }] }] }) });
  const peers = () => src.stateFor("n1").policies.find((p) => p.subject === 256)?.entries.filter((e) => e.direction === "egress").map((e) => e.peer);
  assert.deepEqual(peers(), [nodeId("192.0.2.2")]);
  items.set("n2", n2);
  assert.equal(src.onNode({ type: "update", old: n2on, obj: n2 }), "all", "a relabel moves the toNodes peers of subjects on any node");
  assert.deepEqual(peers(), []);
});

test("a host policy whose nodeSelector names node labels reaches exactly the labelled nodes as reserved:host, and follows a label change without a restart", () => {
  const labelled = (name: string, ip: string, labels: Record<string, string>): NodeObject => ({ ...node(name, ip), metadata: { name, labels } });
  const n1 = labelled("n1", "192.0.2.1", { "kubernetes.io/hostname": "n1", "membrane.io/host-firewall": "on" });
  const n2 = labelled("n2", "192.0.2.2", { "kubernetes.io/hostname": "n2" });
  const items = new Map([["n1", n1], ["n2", n2]]);
  const nodes = { get: (k: string) => items.get(k), list: () => [...items.values()] } as unknown as Informer<NodeObject>;
  const src = new NodeStateSource(cache<PodObject>([]), nodes);
  src.onPolicy({
    type: "add",
    obj: {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "host-fw", uid: "h2", generation: 1 },
      ...({ spec: { nodeSelector: { matchLabels: { "membrane.io/host-firewall": "on" } }, ingress: [{ fromEntities: ["remote-node"], toPorts: [{ ports: [{ port: "10250", protocol: "TCP" }] }] }] } } as object),
    },
  });
  const hostOf = (n: string) => src.stateFor(n).policies.find((p) => p.subject === 1);
  const h1 = hostOf("n1");
  assert.ok(h1, "the labelled node gets the host policy");
  assert.equal(h1.ingressEnforced, true);
  assert.ok(h1.entries.length > 0 && h1.entries.every((e) => e.subject === 1), "its entries are reserved:host's, as the datapath keys them");
  assert.ok(h1.entries.some((e) => e.peer === 6 && e.port === 10250 && e.verdict === "allow"));
  assert.equal(hostOf("n2"), undefined, "the unlabelled node gets none");
  assert.ok(!src.stateFor("n1").identities.some((i) => i.id > 65535 && i.id < 1 << 24), "node host subjects never reach the identity list");

  // n2 gets the label, n1 loses it: only those two nodes move, with a delta linked to what they held.
  const n2on = { ...n2, metadata: { name: "n2", labels: { ...n2.metadata.labels, "membrane.io/host-firewall": "on" } } };
  items.set("n2", n2on);
  assert.deepEqual(src.onNode({ type: "update", old: n2, obj: n2on }), ["n2"]);
  assert.ok(hostOf("n2")?.ingressEnforced, "n2 selected after its label came");
  const n1off = { ...n1, metadata: { name: "n1", labels: { "kubernetes.io/hostname": "n1" } } };
  items.set("n1", n1off);
  src.onNode({ type: "update", old: n1, obj: n1off });
  const after = hostOf("n1");
  assert.equal(after, undefined, "n1 unselected after its label went");

  // A node that stays selected gets the compiler's delta, as reserved:host's, linked to what it held.
  src.onPolicy({
    type: "add",
    obj: {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "n1-ssh", uid: "h3", generation: 1 },
      ...({ spec: { nodeSelector: { matchLabels: { "kubernetes.io/hostname": "n1" } }, ingress: [{ fromEntities: ["world"], toPorts: [{ ports: [{ port: "22", protocol: "TCP" }] }] }] } } as object),
    },
  });
  const held = hostOf("n1");
  assert.ok(held && !held.entries.some((e) => e.port === 10250));
  items.set("n1", n1);
  src.onNode({ type: "update", old: n1off, obj: n1 });
  const next = hostOf("n1");
  const linked = next && src.subjectDeltas.between(held, next);
  assert.ok(linked, "the new host policy is linked to the held one");
  assert.equal(linked.subject, 1);
  assert.ok(linked.added.some((e) => e.port === 10250) && linked.added.every((e) => e.subject === 1) && linked.removed.length === 0, JSON.stringify(linked));

  items.delete("n2");
  src.onNode({ type: "delete", obj: n2on });
  assert.equal(hostOf("n2"), undefined, "a deleted node's host subject is gone");
});

test("property: after random pod and identity churn, syncPods of the touched keys and the patched subject policies give every node the state a full recompute from the final caches gives", () => {
  // Seeded, so a failure names a reproducible run.
  const rng = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const NODES = ["n1", "n2", "n3", "n4"];
  const APPS = ["a0", "a1", "a2", "a3", "a4", "a5"];
  const policies = [
    cnpOf("named", { endpointSelector: { matchLabels: { app: "a0" } }, egress: [{ toEndpoints: [{ matchLabels: { app: "a1" } }], toPorts: [{ ports: [{ port: "http", protocol: "TCP" }] }] }] }),
    cnpOf("in", { endpointSelector: { matchLabels: { app: "a2" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "a3" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] }] }),
    cnpOf("dns", { endpointSelector: { matchLabels: { app: "a5" } }, egress: [{ toEndpoints: [{ matchLabels: { app: "a1" } }], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }], rules: { dns: [{ matchPattern: "*" }] } }] }] }),
    cnpOf("all", { endpointSelector: {}, egress: [{ toEndpoints: [{ matchLabels: { app: "a4" } }] }] }),
  ];
  const nodes = cache(NODES.map((n, i) => node(n, `192.0.2.${i + 1}`)));
  const build = (pods: Informer<PodObject>, extra: ReadonlyMap<number, string> = new Map()): NodeStateSource => {
    const src = new NodeStateSource(pods, nodes);
    APPS.forEach((app, i) => src.onIdentity({ type: "add", obj: identity(256 + i, app) }));
    for (const p of policies) src.onPolicy({ type: "add", obj: p });
    for (const [n, app] of extra) src.onIdentity({ type: "add", obj: identity(n, app) });
    return src;
  };
  let withHttp = 0;
  let withDns = 0;
  for (let seed = 1; seed <= 25; seed++) {
    const r = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const podMap = new Map<string, PodObject>();
    const pods = { get: (k: string) => podMap.get(k), list: () => [...podMap.values()] } as unknown as Informer<PodObject>;
    const src = build(pods);
    const touched = new Set<string>();
    // Identities no pod here carries come and go (peers only): every subject whose peer selectors match one moves.
    const extra = new Map<number, string>();
    for (let step = 0; step < 200; step++) {
      if (r() < 0.15) {
        const n = 300 + Math.floor(r() * 8);
        const had = extra.get(n);
        if (had !== undefined && r() < 0.5) {
          extra.delete(n);
          src.onIdentity({ type: "delete", obj: identity(n, had) });
        } else {
          const app = pick([...APPS, "x0", "x1"]);
          extra.set(n, app);
          src.onIdentity(had === undefined ? { type: "add", obj: identity(n, app) } : { type: "update", old: identity(n, had), obj: identity(n, app) });
        }
      }
      const i = Math.floor(r() * 30);
      const name = `p${i}`;
      const key = `ns/${name}`;
      const op = r();
      if (op < 0.2) podMap.delete(key);
      else {
        const a = Math.floor(r() * APPS.length);
        // Each pod has addresses of its own (10.<0|1>.<i>.1): pods never share an address.
        let p = pod(name, APPS[a]!, 256 + a, r() < 0.15 ? "" : pick(NODES), `10.${Math.floor(r() * 2)}.${i}.1`);
        if (r() < 0.3) p = { ...p, spec: { ...p.spec, containers: [{ ports: [{ name: "http", containerPort: pick([8080, 9090]) }] }] } };
        if (r() < 0.1) p = { ...p, status: { ...p.status, phase: "Succeeded" } };
        if (r() < 0.05) p = { ...p, metadata: { ...p.metadata, annotations: {} } }; // no identity yet
        if (r() < 0.1) p = { ...p, status: { phase: "Pending" } }; // no address yet
        podMap.set(key, r() < 0.1 && podMap.has(key) ? podMap.get(key)! : p);
      }
      touched.add(key);
      if (r() < 0.25) {
        src.syncPods(touched);
        touched.clear();
        if (r() < 0.5) src.stateFor(pick(NODES)); // read between bursts: deltas and snapshots are taken along the way
      }
    }
    src.syncPods(touched);
    const fresh = build(pods, new Map([...extra].sort((a, b) => a[0] - b[0])));
    for (const n of NODES) assert.deepEqual(src.stateFor(n), fresh.stateFor(n), `seed ${seed}, node ${n}`);
    for (const n of NODES) for (const p of src.stateFor(n).policies) [withHttp, withDns] = [withHttp + (p.http ? 1 : 0), withDns + (p.dns ? 1 : 0)];
    assert.deepEqual(src.syncPods(podMap.keys()), [], `seed ${seed}: nothing left to do`);
  }
  assert.ok(withHttp > 0 && withDns > 0, `some runs end with subjects holding HTTP (${withHttp}) and DNS (${withDns}) parts`);
});

test("property: patchSubjectPolicy gives the base's entries with the delta's added put in (replacing their key) and its removed keys taken out, in order", () => {
  // The model: entries by key in a Map, sorted at the end.
  const keyOfEntry = (e: PolicyEntry): string => `${e.direction}/${e.peer}/${e.proto}/${e.port}/${e.portPrefixLen}`;
  const entry = fc.record({ direction: fc.constantFrom("ingress" as const, "egress" as const), peer: fc.integer({ min: 0, max: 40 }), proto: fc.constantFrom(0, 6, 17), port: fc.integer({ min: 0, max: 6 }), portPrefixLen: fc.constantFrom(0, 16), ruleId: fc.integer({ min: 1, max: 3 }) });
  const entries = fc.array(entry, { maxLength: 120 }).map((xs) => {
    const m = new Map<string, PolicyEntry>();
    for (const x of xs) {
      const e: PolicyEntry = { subject: 300, verdict: "allow", proxyPort: 0, ...x };
      m.set(keyOfEntry(e), e);
    }
    return [...m.values()].sort(compareEntries);
  });
  fc.assert(
    fc.property(entries, entries, entries, fc.boolean(), (base, adds, removes, enforced) => {
      const added = adds.map((e) => ({ ...e, ruleId: e.ruleId + 10 })); // a changed value where a key is in base
      const addedKeys = new Set(added.map(keyOfEntry));
      const removed = removes.filter((e) => !addedKeys.has(keyOfEntry(e))); // a delta never adds and removes one key
      const model = new Map(base.map((e) => [keyOfEntry(e), e]));
      for (const e of added) model.set(keyOfEntry(e), e);
      for (const e of removed) model.delete(keyOfEntry(e));
      const out = patchSubjectPolicy({ subject: 300, ingressEnforced: false, egressEnforced: false, entries: base }, { subject: 300, added, removed, ingressEnforced: enforced, egressEnforced: false });
      assert.deepEqual(out.entries, [...model.values()].sort(compareEntries));
      assert.equal(out.ingressEnforced, enforced, "the flags are the delta's");
      assert.deepEqual(base.map(keyOfEntry), [...base].sort(compareEntries).map(keyOfEntry), "the base is not changed");
    }),
    { numRuns: 300 },
  );
});

test("subject policies the source makes are vouched sorted for the differ (snapshots and patched ones)", () => {
  const src = new NodeStateSource(cache([pod("web", "web", 256, "n1", "10.0.1.5")]), cache([node("n1", "192.0.2.1")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onPolicy({ type: "add", obj: cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }] }] }) });
  const first = src.stateFor("n1").policies[0]!;
  assert.ok(src.subjectDeltas.isVouchedSorted(first));
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  const next = src.stateFor("n1").policies[0]!;
  assert.notEqual(next, first);
  assert.deepEqual(next.entries.map((e) => e.peer), [257]);
  assert.ok(src.subjectDeltas.isVouchedSorted(next), "the patched one too");
});

test("a pod whose identity's labels are not known yet gets no subject policy (its agent fails it closed), not one of a subject no policy selects; it gets its compiled one when the identity comes", () => {
  // The operator's pods are not coalesced and its identities are (IDENTITY_PUBLISH_COALESCE_MS): a pod's identity
  // annotation can be compiled before its CiliumIdentity, and an operator starting mid-upgrade sees both in any order.
  const pods = cache([pod("server", "server", 256, "n1", "10.0.1.5"), pod("denied", "denied", 258, "n2", "10.0.2.6")]);
  const src = new NodeStateSource(pods, cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(257, "allowed") });
  src.onIdentity({ type: "add", obj: identity(258, "denied") });
  src.onPolicy({ type: "add", obj: cnpOf("server-from-allowed", { endpointSelector: { matchLabels: { app: "server" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "allowed" } }], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] }] }) });
  const before = src.stateFor("n1");
  const held = before.policies.find((p) => p.subject === 256);
  assert.equal(held, undefined, `no policy for identity 256 before its labels are known: ${JSON.stringify(held)}`);
  assert.equal(before.ipcache.find((e) => e.prefix === "10.0.1.5/32")?.identity, 256, "its address is in the ipcache (the agent finds the identity and no policy: enforced, no entry)");
  assert.deepEqual(src.onIdentity({ type: "add", obj: identity(256, "server") }), "all", "every node is published again");
  const server = src.stateFor("n1").policies.find((p) => p.subject === 256);
  assert.equal(server?.ingressEnforced, true);
  assert.ok(server?.entries.some((e) => e.direction === "ingress" && e.peer === 257 && e.port === 8080 && e.verdict === "allow"));
  assert.ok(!server?.entries.some((e) => e.peer === 258 && e.verdict === "allow"), "nothing allows the denied pod");
});

test("a node whose subjects did not move keeps its subject list by reference across a change of the shared parts; a change of its subjects gives a new list", () => {
  const web = pod("web", "web", 256, "n1", "10.0.1.5");
  const src = new NodeStateSource(cache([web]), cache([node("n1", "192.0.2.1"), node("n2", "192.0.2.2")]));
  src.onIdentity({ type: "add", obj: identity(256, "web") });
  src.onIdentity({ type: "add", obj: identity(257, "db") });
  src.onPod({ type: "add", obj: web });
  const before = src.stateFor("n1");
  // A pod on the other node: the ipcache moves for every node, n1's subjects do not.
  assert.equal(src.onPod({ type: "add", obj: pod("db", "db", 257, "n2", "10.0.2.5") }), "all");
  const after = src.stateFor("n1");
  assert.notEqual(after.ipcache, before.ipcache);
  assert.equal(after.policies, before.policies, "the same list object: the distribution sends only the shared parts' delta");
  // A policy that selects web replaces its subject policy: n1's list is a new one, with it.
  src.onPolicy({ type: "add", obj: cnpOf("web", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "db" } }] }] }) });
  const selected = src.stateFor("n1");
  assert.notEqual(selected.policies, after.policies);
  assert.equal(selected.policies[0]?.ingressEnforced, true);
  // A second pod of web on n1 hosts no new identity: the list stays.
  src.onPod({ type: "add", obj: pod("web2", "web", 256, "n1", "10.0.1.6") });
  assert.equal(src.stateFor("n1").policies, selected.policies);
  // db comes to n1 too: a new list with both subjects.
  src.onPod({ type: "add", obj: pod("db2", "db", 257, "n1", "10.0.1.7") });
  assert.deepEqual(src.stateFor("n1").policies.map((p) => p.subject), [256, 257]);
});

test("a cidrGroupRef follows its CiliumCIDRGroup: nothing while it is missing, its CIDRs once created, an edit and a deletion without touching the policy; an invalid edit keeps the last valid group", () => {
  const groupObjects = new Map<string, KubeObject>();
  const groupInformer = { get: (k: string) => groupObjects.get(k), list: () => [...groupObjects.values()] } as unknown as Informer<KubeObject>;
  const setGroup = (name: string, cidrs: unknown[]): void => {
    groupObjects.set(name, { apiVersion: "cilium.io/v2alpha1", kind: "CiliumCIDRGroup", metadata: { name }, ...({ spec: { externalCIDRs: cidrs } } as object) });
  };
  const src = new NodeStateSource(cache([pod("web", "web", 256, "n1", "10.0.1.5")]), cache([node("n1", "192.0.2.1")]), { cidrGroups: new CIDRGroups(groupInformer) });
  const policies = cache<PolicyObject>([
    cnpOf("partner", { endpointSelector: { matchLabels: { app: "web" } }, egress: [{ toCIDRSet: [{ cidrGroupRef: "partner" }] }], egressDeny: [{ toCIDRSet: [{ cidrGroupRef: "partner", except: ["198.51.100.0/25"] }] }] }),
  ]);
  const informers = { identities: cache([identity(256, "web")]), policies: [policies] };
  src.sync(informers);
  const verdicts = (): Map<string, string[]> => {
    const state = src.stateFor("n1");
    const prefixOf = new Map(state.ipcache.map((e) => [e.identity, e.prefix]));
    const out = new Map<string, string[]>();
    for (const e of state.policies[0]?.entries ?? []) {
      const prefix = prefixOf.get(e.peer);
      if (e.direction === "egress" && prefix !== undefined && e.peer >= 1 << 24) out.set(prefix, [...(out.get(prefix) ?? []), e.verdict].sort());
    }
    return out;
  };
  assert.equal(src.stateFor("n1").policies[0]?.egressEnforced, true, "default deny holds while the group is missing");
  assert.deepEqual(verdicts(), new Map(), "a missing group selects nothing");

  setGroup("partner", ["203.0.113.0/24", "198.51.100.0/24"]);
  assert.equal(src.sync(informers, ["cidrGroups"]), "all");
  // The deny covers the group but its except: there, the allow stands (deny wins where both hold).
  assert.deepEqual(verdicts(), new Map([["198.51.100.0/24", ["deny"]], ["198.51.100.0/25", ["allow"]], ["203.0.113.0/24", ["deny"]]]));

  setGroup("partner", ["203.0.113.0/24"]);
  src.sync(informers, ["cidrGroups"]);
  assert.deepEqual(verdicts(), new Map([["203.0.113.0/24", ["deny"]]]), "an edit takes a CIDR out");
  assert.equal(src.stateFor("n1").ipcache.some((e) => e.prefix === "198.51.100.0/24"), false, "its identity is released");

  setGroup("partner", ["203.0.113.0/24", "not-a-cidr"]);
  assert.deepEqual(src.sync(informers, ["cidrGroups"]), [], "an invalid edit changes nothing");
  assert.deepEqual(verdicts(), new Map([["203.0.113.0/24", ["deny"]]]));

  groupObjects.delete("partner");
  src.sync(informers, ["cidrGroups"]);
  assert.deepEqual(verdicts(), new Map(), "a deleted group selects nothing again");
  assert.deepEqual(src.stateFor("n1").policyGenerations.map((g) => g.generation), [1], "the policy was not touched");
});
