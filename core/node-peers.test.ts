// toNodes/fromNodes: a node selector selects the node identities of the nodes whose labels match, reached by the datapath's second look at a node's address.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parsePolicyObject } from "./parser/index.ts";
import { PolicyCompiler, policyKey } from "./compiler.ts";
import { IDENTITY, RESERVED_IDENTITIES } from "./identity.ts";
import { securityLabels } from "./labels.ts";
import type { Policy } from "./model.ts";
import { lookup } from "./policy/mapstate.ts";
import { MIN_NODE_HOST_IDENTITY, nodeHostLabels } from "./host-endpoint.ts";
import { ClusterIPCache } from "./ipcache.ts";
import { secondLookApplies } from "./node-peers.ts";
import { directionVerdict } from "./evaluator.ts";
import { hostTrace, type TraceParty } from "./host-trace.ts";

const WORKER = MIN_NODE_HOST_IDENTITY;
const CONTROL = MIN_NODE_HOST_IDENTITY + 1;
const WEB = 256;
const TCP = 6;

function cnp(spec: Record<string, unknown>): Policy[] {
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "p", namespace: "ns" }, spec: { endpointSelector: { matchLabels: { app: "web" } }, ...spec } });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function compiler(policy: Policy[]): PolicyCompiler {
  const c = new PolicyCompiler();
  for (const r of RESERVED_IDENTITIES) c.upsertIdentity(r.id, r.labels);
  c.upsertIdentity(WEB, securityLabels({ podLabels: { app: "web" }, namespace: "ns", namespaceLabels: {} }));
  c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1" }));
  c.upsertIdentity(CONTROL, nodeHostLabels({ "kubernetes.io/hostname": "c1", "node-role.kubernetes.io/control-plane": "" }));
  c.upsertPolicy(policyKey(policy[0]!), policy);
  return c;
}

const toControlPlane = { egress: [{ toNodes: [{ matchLabels: { "node-role.kubernetes.io/control-plane": "" } }], toPorts: [{ ports: [{ port: "6443", protocol: "TCP" }] }] }] };

test("toNodes compiles to entries for the selected node's identity only, never for host or remote-node", () => {
  const peers = new Set(compiler(cnp(toControlPlane)).snapshot(WEB).entries.map((e) => e.peer));
  assert.deepEqual([...peers], [CONTROL]);
});

test("toNodes allows the selected node by its address, as remote-node elsewhere and as host on itself, on its ports only", () => {
  const web = compiler(cnp(toControlPlane)).snapshot(WEB);
  for (const peer of [IDENTITY.remoteNode, IDENTITY.host]) {
    assert.equal(lookup(web, "egress", peer, TCP, 6443, CONTROL).verdict, "allow", `${peer} at the control plane's address`);
    assert.equal(lookup(web, "egress", peer, TCP, 6443, WORKER).verdict, "deny", `${peer} at the worker's address`);
    assert.equal(lookup(web, "egress", peer, TCP, 22, CONTROL).verdict, "deny", `${peer} on another port`);
    assert.equal(lookup(web, "egress", peer, TCP, 6443).verdict, "deny", `${peer} at an address that is no node's`);
  }
  // A pod's address never answers with a node identity (and a node's never with an ipBlock identity).
  assert.equal(lookup(web, "egress", WEB, TCP, 6443, CONTROL).verdict, "deny");
  assert.equal(secondLookApplies(IDENTITY.remoteNode, 1 << 24), false);
  assert.equal(secondLookApplies(WEB, 1 << 24), true);
});

test("fromNodes with an empty selector allows every node, and nothing that is not a node", () => {
  const web = compiler(cnp({ ingress: [{ fromNodes: [{}] }] })).snapshot(WEB);
  assert.equal(web.ingressEnforced, true);
  for (const node of [WORKER, CONTROL]) assert.equal(lookup(web, "ingress", IDENTITY.remoteNode, TCP, 80, node).verdict, "allow");
  for (const peer of [IDENTITY.world, WEB, IDENTITY.kubeAPIServer]) assert.equal(lookup(web, "ingress", peer, TCP, 80).verdict, "deny", `peer ${peer}`);
});

test("a node whose labels change moves in and out of toNodes: the subject's delta adds or removes its entries", () => {
  const c = compiler(cnp(toControlPlane));
  const delta = c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1", "node-role.kubernetes.io/control-plane": "" }));
  assert.deepEqual(delta.find((d) => d.subject === WEB)?.added.map((e) => e.peer), [WORKER]);
  assert.equal(lookup(c.snapshot(WEB), "egress", IDENTITY.remoteNode, TCP, 6443, WORKER).verdict, "allow");
  const back = c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1" }));
  assert.deepEqual(back.find((d) => d.subject === WEB)?.removed.map((e) => e.peer), [WORKER]);
  const gone = c.removeIdentity(CONTROL);
  assert.deepEqual(gone.find((d) => d.subject === WEB)?.removed.map((e) => e.peer), [CONTROL]);
  assert.deepEqual(c.snapshot(WEB).entries, []);
});

test("toNodes beside toEntities remote-node in another rule: both hold, each for its own peers", () => {
  const web = compiler(cnp({ egress: [{ toEntities: ["remote-node"], toPorts: [{ ports: [{ port: "10250", protocol: "TCP" }] }] }, toControlPlane.egress[0]] })).snapshot(WEB);
  assert.equal(lookup(web, "egress", IDENTITY.remoteNode, TCP, 10250, WORKER).verdict, "allow");
  assert.equal(lookup(web, "egress", IDENTITY.remoteNode, TCP, 6443, CONTROL).verdict, "allow");
  assert.equal(lookup(web, "egress", IDENTITY.remoteNode, TCP, 6443, WORKER).verdict, "deny");
});

test("the reference evaluator agrees: a node peer is held by the Node labels of its address", () => {
  const policies = cnp(toControlPlane);
  const subject = { id: WEB, labels: securityLabels({ podLabels: { app: "web" }, namespace: "ns", namespaceLabels: {} }) };
  const node = (labels: Record<string, string>) => ({ id: IDENTITY.remoteNode, labels: RESERVED_IDENTITIES.find((r) => r.id === IDENTITY.remoteNode)!.labels, nodeLabels: nodeHostLabels(labels) });
  const verdict = (peer: ReturnType<typeof node>) => directionVerdict({ policies, subject, peer, direction: "egress", protocol: TCP, port: 6443 }).verdict;
  assert.equal(verdict(node({ "node-role.kubernetes.io/control-plane": "" })), "allow");
  assert.equal(verdict(node({ "kubernetes.io/hostname": "w1" })), "deny");
});

test("a node's addresses carry its node identity in the ipcache, winning over an ipBlock naming the same address", () => {
  const ipc = new ClusterIPCache();
  ipc.setNode("c1", [{ type: "InternalIP", ip: "10.0.0.1" }], CONTROL);
  ipc.setCIDR("10.0.0.1/32", (1 << 24) + 2); // an ipBlock prefix has its CIDR identity too
  ipc.setIPBlock("10.0.0.1/32", 1 << 24);
  ipc.setIPBlock("10.0.0.0/8", (1 << 24) + 1);
  const entries = ipc.take()?.entries ?? [];
  assert.deepEqual(entries.find((e) => e.prefix === "10.0.0.1/32"), { prefix: "10.0.0.1/32", identity: IDENTITY.remoteNode, node: "10.0.0.1", ipBlockIdentity: CONTROL });
  ipc.setNode("c1", undefined);
  assert.equal(ipc.take()?.entries.find((e) => e.prefix === "10.0.0.1/32")?.ipBlockIdentity, 1 << 24);
});

test("membrane policy trace (hostTrace) agrees: a pod reaches the labelled node, on its own node as host and from another as remote-node, and not the other", () => {
  const policies = cnp(toControlPlane);
  const labels = securityLabels({ podLabels: { app: "web" }, namespace: "ns", namespaceLabels: {} });
  const c1: TraceParty = { kind: "node", name: "c1", labels: nodeHostLabels({ "node-role.kubernetes.io/control-plane": "" }) };
  const w1: TraceParty = { kind: "node", name: "w1", labels: nodeHostLabels({}) };
  const pod = (node: string): TraceParty => ({ kind: "pod", name: `ns/web-${node}`, id: WEB, labels, node });
  const trace = (src: TraceParty, dst: TraceParty) => hostTrace({ policies, src, dst, protocol: TCP, port: 6443 });
  assert.equal(trace(pod("w1"), c1).verdict, "allow");
  assert.equal(trace(pod("c1"), c1).verdict, "allow");
  assert.equal(trace(pod("c1"), w1).verdict, "deny");
  assert.equal(trace(pod("w1"), w1).verdict, "deny");
});

const denyControlPlane = { egressDeny: [{ toNodes: [{ matchLabels: { "node-role.kubernetes.io/control-plane": "" } }], toPorts: [{ ports: [{ port: "6443", protocol: "TCP" }] }] }] };

test("toNodes in egressDeny beats an allow of remote-node, host or every peer for the selected node; other nodes and ports stay allowed", () => {
  for (const allow of [{ toEntities: ["remote-node", "host"] }, { toEntities: ["all"] }, { toPorts: [{ ports: [{ port: "6443", protocol: "TCP" }] }] }]) {
    const c = compiler(cnp({ egress: [allow], ...denyControlPlane }));
    const web = c.snapshot(WEB);
    assert.deepEqual([...new Set(web.entries.filter((e) => e.verdict === "deny").map((e) => e.peer))], [CONTROL], JSON.stringify(allow));
    for (const peer of [IDENTITY.remoteNode, IDENTITY.host]) {
      const why = `${JSON.stringify(allow)} as ${peer}`;
      assert.equal(lookup(web, "egress", peer, TCP, 6443, CONTROL).verdict, "deny", why);
      assert.equal(lookup(web, "egress", peer, TCP, 6443, WORKER).verdict, "allow", why);
      assert.equal(lookup(web, "egress", peer, TCP, 6443).verdict, "allow", `${why}, an address that is no node's`);
    }
    if (!("toPorts" in allow)) assert.equal(lookup(web, "egress", IDENTITY.remoteNode, TCP, 22, CONTROL).verdict, "allow", "another port of the denied node");
  }
});

test("fromNodes in ingressDeny denies the selected node even where nothing allows (deny-only policy), and an explicit remote-node deny stays", () => {
  const web = compiler(cnp({ ingressDeny: [{ fromNodes: [{ matchLabels: { "kubernetes.io/hostname": "w1" } }] }] })).snapshot(WEB);
  assert.equal(lookup(web, "ingress", IDENTITY.remoteNode, TCP, 80, WORKER).verdict, "deny");
  assert.equal(lookup(web, "ingress", IDENTITY.remoteNode, TCP, 80, WORKER).entry?.peer, WORKER, "the verdict names the node's deny entry");
  const open = compiler(cnp({ enableDefaultDeny: { ingress: false }, ingressDeny: [{ fromNodes: [{ matchLabels: { "kubernetes.io/hostname": "w1" } }] }] })).snapshot(WEB);
  assert.equal(open.ingressEnforced, false);
  assert.equal(lookup(open, "ingress", IDENTITY.remoteNode, TCP, 80, WORKER).verdict, "deny", "not enforced: the node's deny still holds");
  assert.equal(lookup(open, "ingress", IDENTITY.remoteNode, TCP, 80, CONTROL).verdict, "allow");
  const both = compiler(cnp({ ingress: [{ fromNodes: [{}] }], ingressDeny: [{ fromEntities: ["remote-node"] }] })).snapshot(WEB);
  assert.equal(lookup(both, "ingress", IDENTITY.remoteNode, TCP, 80, CONTROL).verdict, "deny", "a deny of remote-node is not undone by an allow of the node");
});

test("the reference evaluator and hostTrace agree: toNodes in egressDeny denies the labelled node over an allow of every node", () => {
  const policies = cnp({ egress: [{ toNodes: [{}] }], ...denyControlPlane });
  const subject = { id: WEB, labels: securityLabels({ podLabels: { app: "web" }, namespace: "ns", namespaceLabels: {} }) };
  const node = (labels: Record<string, string>) => ({ id: IDENTITY.remoteNode, labels: RESERVED_IDENTITIES.find((r) => r.id === IDENTITY.remoteNode)!.labels, nodeLabels: nodeHostLabels(labels) });
  const verdict = (peer: ReturnType<typeof node>) => directionVerdict({ policies, subject, peer, direction: "egress", protocol: TCP, port: 6443 }).verdict;
  assert.equal(verdict(node({ "node-role.kubernetes.io/control-plane": "" })), "deny");
  assert.equal(verdict(node({ "kubernetes.io/hostname": "w1" })), "allow");
  const labels = subject.labels;
  const c1: TraceParty = { kind: "node", name: "c1", labels: nodeHostLabels({ "node-role.kubernetes.io/control-plane": "" }) };
  const w1: TraceParty = { kind: "node", name: "w1", labels: nodeHostLabels({}) };
  const pod: TraceParty = { kind: "pod", name: "ns/web-w1", id: WEB, labels, node: "w1" };
  assert.equal(hostTrace({ policies, src: pod, dst: c1, protocol: TCP, port: 6443 }).verdict, "deny");
  assert.equal(hostTrace({ policies, src: pod, dst: w1, protocol: TCP, port: 6443 }).verdict, "allow");
});
