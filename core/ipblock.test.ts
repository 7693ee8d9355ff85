// NetworkPolicy ipBlocks match pods by address (Kubernetes' meaning) while CNP/CCNP CIDR peers stay outside the cluster (Cilium's): compiler, selector cache, lookup and evaluator agree.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "./model.ts";
import { label, labelSetFrom } from "./labels.ts";
import { LocalCIDRAllocator, cidrLabels } from "./identity.ts";
import { parsePolicyObject } from "./parser/index.ts";
import { PolicyCompiler, compileAll, policyKey, policyPrefixes } from "./compiler.ts";
import { lookup } from "./policy/mapstate.ts";
import { verdict } from "./evaluator.ts";
import { SelectorCache, cidrMatcher, ipBlockMatcher, selectorMatcher } from "./policy/selector-cache.ts";
import { selectorFrom } from "./selector.ts";
import { addressInBlock, ipBlockLabels, ipBlockPrefixOf, ipBlockPrefixes, isIPBlockIdentity, longestBlock } from "./ipblock.ts";
import { PROTO_NUMBER } from "./model.ts";

const TCP = PROTO_NUMBER.TCP;

const pod = (ns: string, app: string): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", ns), label("k8s", "app", app), label("k8s", "io.cilium.k8s.policy.cluster", "default")]);

function parse(obj: unknown): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

const WEB = 300;
const CLIENT = 301;
const BAD = 302;
const ADDRESS: ReadonlyMap<number, string> = new Map([
  [WEB, "10.244.1.10"],
  [CLIENT, "10.244.2.11"],
  [BAD, "10.244.1.12"],
]);
const PODS = new Map<number, LabelSet>([
  [WEB, pod("prod", "web")],
  [CLIENT, pod("prod", "client")],
  [BAD, pod("prod", "bad")],
]);

const np = (name: string, spec: unknown) => ({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace: "prod" }, spec });
const cnp = (name: string, spec: unknown) => ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "prod" }, spec });

/** Identities as the operator makes them: pods, a CIDR identity per policy prefix, an ipBlock identity per NetworkPolicy ipBlock prefix. */
function world(policies: readonly Policy[]): { ids: Map<number, LabelSet>; blocks: [string, number][] } {
  const ids = new Map(PODS);
  const alloc = new LocalCIDRAllocator();
  for (const p of policyPrefixes(policies)) {
    const r = alloc.acquire(p);
    assert.ok(r.ok);
    ids.set(r.value.id, r.value.labels);
  }
  const blocks: [string, number][] = [];
  for (const p of ipBlockPrefixes(policies)) {
    const r = alloc.acquire(p, ipBlockLabels);
    assert.ok(r.ok);
    ids.set(r.value.id, r.value.labels);
    blocks.push([p, r.value.id]);
  }
  return { ids, blocks };
}

/** The verdict of `direction` at `subject` for a pod peer: the compiled lookup with the datapath's second look, and the evaluator. */
function both(policies: readonly Policy[], subject: number, direction: "ingress" | "egress", peer: number, port: number): { compiled: string; evaluated: string; rule?: string } {
  const { ids, blocks } = world(policies);
  const c = compileAll(policies, ids);
  const l = lookup(c.snapshot(subject), direction, peer, TCP, port, longestBlock(ADDRESS.get(peer)!, blocks));
  const ep = (id: number) => ({ id, labels: ids.get(id)!, address: ADDRESS.get(id)! });
  const [src, dst] = direction === "ingress" ? [ep(peer), ep(subject)] : [ep(subject), ep(peer)];
  const v = verdict({ policies, src, dst, protocol: TCP, port });
  const rule = l.entry ? c.ruleOrigin(l.entry.ruleId)?.name : undefined;
  return { compiled: l.verdict, evaluated: v[direction].verdict, ...(rule !== undefined ? { rule } : {}) };
}

test("ipBlock identities: one ipblock: label, no world label, their own numbers beside the CIDR identity of the same prefix", () => {
  const l = ipBlockLabels("10.244.0.0/16");
  assert.deepEqual(l.labels.map((x) => `${x.source}:${x.key}`), ["ipblock:10.244.0.0/16"]);
  assert.equal(ipBlockPrefixOf(l)?.bits, 16);
  assert.ok(isIPBlockIdentity(l));
  assert.ok(!isIPBlockIdentity(cidrLabels("10.244.0.0/16")));
  assert.equal(ipBlockPrefixOf(ipBlockLabels("2001:db8::/32"))?.family, 6);
  const alloc = new LocalCIDRAllocator();
  const a = alloc.acquire("10.244.0.0/16");
  const b = alloc.acquire("10.244.0.0/16", ipBlockLabels);
  assert.ok(a.ok && b.ok);
  assert.notEqual(a.value.id, b.value.id);
  assert.equal(alloc.lookup("10.244.0.0/16", ipBlockLabels), b.value.id);
  assert.equal(ipBlockLabels("nope").labels.length, 0);
});

test("ipBlockPrefixes names NetworkPolicy ipBlock prefixes only, never a CNP's CIDRs", () => {
  const policies = [
    ...parse(np("a", { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.244.1.12/32"] } }] }] })),
    ...parse(cnp("b", { endpointSelector: {}, ingress: [{ fromCIDRSet: [{ cidr: "192.168.0.0/16", except: ["192.168.1.0/24"] }] }] })),
  ];
  assert.deepEqual(ipBlockPrefixes(policies), ["10.0.0.0/8", "10.244.1.12/32"]);
  assert.deepEqual(policyPrefixes(policies), ["10.0.0.0/8", "10.244.1.12/32", "192.168.0.0/16", "192.168.1.0/24"]);
});

test("addressInBlock and longestBlock: inside the cidr and outside its excepts; the longest prefix answers", () => {
  assert.ok(addressInBlock("10.244.1.10", "10.0.0.0/8", ["10.244.1.12/32"]));
  assert.ok(!addressInBlock("10.244.1.12", "10.0.0.0/8", ["10.244.1.12/32"]));
  assert.ok(!addressInBlock("11.0.0.1", "10.0.0.0/8", []));
  assert.ok(!addressInBlock("fd00::1", "10.0.0.0/8", []));
  const blocks: [string, string][] = [["10.0.0.0/8", "wide"], ["10.244.1.0/24", "node"], ["10.244.1.12/32", "pod"]];
  assert.equal(longestBlock("10.244.1.12", blocks), "pod");
  assert.equal(longestBlock("10.244.1.13", blocks), "node");
  assert.equal(longestBlock("10.9.9.9", blocks), "wide");
  assert.equal(longestBlock("11.0.0.1", blocks), undefined);
});

test("selector cache: an ipBlock peer selects ipBlock identities inside its cidr and outside its excepts, and the CIDR identities as before", () => {
  const m = ipBlockMatcher("10.0.0.0/8", ["10.244.1.12/32"]);
  const cache = new SelectorCache();
  cache.upsertIdentity(1 << 24, ipBlockLabels("10.0.0.0/8"));
  cache.upsertIdentity((1 << 24) + 1, ipBlockLabels("10.244.1.12/32"));
  cache.upsertIdentity((1 << 24) + 2, cidrLabels("10.0.0.0/8"));
  cache.upsertIdentity((1 << 24) + 3, cidrLabels("10.244.1.12/32"));
  cache.upsertIdentity((1 << 24) + 4, ipBlockLabels("192.168.0.0/16"));
  assert.deepEqual(cache.add(m).sorted(), [1 << 24, (1 << 24) + 2]);
  assert.match(m.canonical, /^ipblock:10\.0\.0\.0\/8 except 10\.244\.1\.12\/32$/);
});

test("selector cache: no other selector ever selects an ipBlock identity (a CNP CIDR, a negative label requirement, an entity)", () => {
  const cache = new SelectorCache();
  const block = 1 << 24;
  cache.upsertIdentity(block, ipBlockLabels("10.0.0.0/8"));
  const notBad = selectorFrom({ matchExpressions: [{ key: "app", operator: "NotIn", values: ["bad"] }] });
  // The selector alone would match (the identity has no app label): the cache keeps it away.
  assert.ok(selectorMatcher(notBad).matches(block, ipBlockLabels("10.0.0.0/8")));
  for (const m of [cidrMatcher("0.0.0.0/0"), cidrMatcher("10.0.0.0/8"), selectorMatcher(notBad)]) {
    assert.deepEqual(cache.add(m).sorted(), [], m.canonical);
  }
  // Added after the selectors: still not selected.
  cache.upsertIdentity(block + 1, ipBlockLabels("10.1.0.0/16"));
  for (const c of cache.canonicals()) assert.deepEqual([...(cache.selections(c) ?? [])], [], c);
  assert.ok(cache.addPeer({ kind: "entity", entity: "world" }).selections.size === 0);
});

test("ingress ipBlock over the pod network with one pod's /32 in except: every other pod is allowed by the NetworkPolicy, that pod meets default deny", () => {
  const policies = parse(np("from-pods", { podSelector: { matchLabels: { app: "web" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: [`${ADDRESS.get(BAD)!}/32`] } }] }] }));
  assert.deepEqual(both(policies, WEB, "ingress", CLIENT, 80), { compiled: "allow", evaluated: "allow", rule: "from-pods" });
  assert.deepEqual(both(policies, WEB, "ingress", BAD, 80), { compiled: "deny", evaluated: "deny" });
});

test("egress ipBlock to a pod's /32 on one port: that pod only, on that port only", () => {
  const policies = parse(np("to-web", { podSelector: { matchLabels: { app: "client" } }, policyTypes: ["Egress"], egress: [{ to: [{ ipBlock: { cidr: `${ADDRESS.get(WEB)!}/32` } }], ports: [{ port: 80 }] }] }));
  assert.deepEqual(both(policies, CLIENT, "egress", WEB, 80), { compiled: "allow", evaluated: "allow", rule: "to-web" });
  assert.deepEqual(both(policies, CLIENT, "egress", WEB, 81), { compiled: "deny", evaluated: "deny" });
  assert.deepEqual(both(policies, CLIENT, "egress", BAD, 80), { compiled: "deny", evaluated: "deny" });
});

test("a CNP fromCIDR covering the pod network still matches no pod (Cilium's meaning), in the compiler, the lookup and the evaluator", () => {
  const policies = parse(cnp("cidr-pods", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromCIDR: ["10.0.0.0/8"] }], egress: [{ toCIDRSet: [{ cidr: "10.0.0.0/8" }] }] }));
  assert.deepEqual(ipBlockPrefixes(policies), []);
  assert.deepEqual(both(policies, WEB, "ingress", CLIENT, 80), { compiled: "deny", evaluated: "deny" });
  assert.deepEqual(both(policies, WEB, "egress", CLIENT, 80), { compiled: "deny", evaluated: "deny" });
  // Even with a NetworkPolicy's ipBlock identities around, the CNP selects none of them.
  const withNP = [...policies, ...parse(np("other", { podSelector: { matchLabels: { app: "bad" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8" } }] }] }))];
  const { ids } = world(withNP);
  const c = compileAll(withNP, ids);
  const blockIds = [...ids].filter(([, l]) => isIPBlockIdentity(l)).map(([id]) => id);
  assert.equal(blockIds.length, 1);
  assert.ok(c.snapshot(WEB).entries.every((e) => !blockIds.includes(e.peer)), "no entry of the CNP's subject names an ipBlock identity");
  assert.ok(c.snapshot(BAD).entries.some((e) => blockIds.includes(e.peer)), "the NetworkPolicy's subject has the ipBlock identity's entry");
});

test("an explicit deny of the pod's identity wins over a NetworkPolicy ipBlock that holds its address", () => {
  const policies = [
    ...parse(np("from-pods", { podSelector: { matchLabels: { app: "web" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8" } }] }] })),
    ...parse(cnp("deny-bad", { endpointSelector: { matchLabels: { app: "web" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: "bad" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] })),
  ];
  const r = both(policies, WEB, "ingress", BAD, 80);
  assert.equal(r.compiled, "deny");
  assert.equal(r.evaluated, "deny");
  assert.equal(r.rule, "deny-bad");
  assert.deepEqual(both(policies, WEB, "ingress", BAD, 81), { compiled: "allow", evaluated: "allow", rule: "from-pods" });
});

test("pods coming and going inside a block need no policy change; a changed except moves only the ipBlock identities", () => {
  const c = new PolicyCompiler();
  for (const [id, l] of PODS) c.upsertIdentity(id, l);
  const v1 = parse(np("from-pods", { podSelector: { matchLabels: { app: "web" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.244.1.12/32"] } }] }] }));
  const alloc = new LocalCIDRAllocator();
  const blockId = (p: string): number => {
    const r = alloc.acquire(p, ipBlockLabels);
    assert.ok(r.ok);
    c.upsertIdentity(r.value.id, r.value.labels);
    return r.value.id;
  };
  const wide = blockId("10.0.0.0/8");
  const bad = blockId("10.244.1.12/32");
  c.upsertPolicy(policyKey(v1[0]!), v1);
  const peersOf = (): number[] => [...new Set(c.snapshot(WEB).entries.map((e) => e.peer))].sort((a, b) => a - b);
  assert.deepEqual(peersOf(), [wide]);
  // A new pod with any identity inside the block: no delta at all.
  assert.deepEqual(c.upsertIdentity(400, pod("prod", "new")).filter((d) => d.subject === WEB && (d.added.length > 0 || d.removed.length > 0)), []);
  // Except another pod instead: the allow stays on the wide block's identity.
  const v2 = parse(np("from-pods", { podSelector: { matchLabels: { app: "web" } }, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.244.2.11/32"] } }] }] }));
  const other = blockId("10.244.2.11/32");
  c.upsertPolicy(policyKey(v2[0]!), v2);
  c.removeIdentity(bad);
  assert.deepEqual(peersOf(), [wide]);
  assert.ok(!peersOf().includes(other), "the new except's identity has no allow");
});
