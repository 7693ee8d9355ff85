// hostTrace: the reference host firewall as a CCNP, traced the way the datapath judges each path (host egress/ingress, pod_to_host, the guard).
import { test } from "node:test";
import assert from "node:assert/strict";
import { parsePolicyObject } from "./parser/index.ts";
import { PROTO_NUMBER, type Policy } from "./model.ts";
import { securityLabels } from "./labels.ts";
import { nodeHostLabels } from "./host-endpoint.ts";
import { hostTrace, hostTraceText, stepReasonText, type TraceGuardEntry, type TraceParty } from "./host-trace.ts";

function parse(obj: object): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const reference = parse({
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "host-reference" },
  spec: {
    nodeSelector: { matchLabels: { fw: "reference" } },
    ingress: [
      { fromCIDR: ["172.31.0.0/24"], toPorts: [{ ports: [{ port: "22", protocol: "TCP" }] }] },
      { fromEntities: ["remote-node"], toPorts: [{ ports: [{ port: "10250", protocol: "TCP" }] }] },
    ],
  },
});
const podEgressDeny = parse({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "no-host-9999", namespace: "app" },
  spec: { endpointSelector: { matchLabels: { app: "web" } }, egressDeny: [{ toEntities: ["host"], toPorts: [{ ports: [{ port: "9999", protocol: "TCP" }] }] }] },
});
const hostEgress = parse({
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "host-egress" },
  spec: { nodeSelector: { matchLabels: { fw: "reference" } }, egress: [{ toEntities: ["world"] }] },
});

const node1: TraceParty = { kind: "node", name: "n1", labels: nodeHostLabels({ fw: "reference", "kubernetes.io/hostname": "n1" }) };
const node2: TraceParty = { kind: "node", name: "n2", labels: nodeHostLabels({ "kubernetes.io/hostname": "n2" }) };
const webLabels = securityLabels({ podLabels: { app: "web" }, namespace: "app", namespaceLabels: {} });
const pod = (node: string): TraceParty => ({ kind: "pod", name: `app/web-${node}`, id: 300, labels: webLabels, address: node === "n1" ? "10.0.1.5" : "10.0.2.5", node });
const mgmt: TraceParty = { kind: "address", address: "172.31.0.5" };
const outside: TraceParty = { kind: "address", address: "172.30.0.200" };
const TCP = PROTO_NUMBER.TCP;

const trace = (src: TraceParty, dst: TraceParty, port: number, policies: Policy[] = reference, guard?: TraceGuardEntry[]) =>
  hostTrace({ policies, src, dst, protocol: TCP, port, ...(guard ? { guard } : {}) });

test("the reference host firewall: SSH from the management CIDR only, the kubelet from nodes only, the rest default deny, each naming its rule", () => {
  const cases: [string, TraceParty, number, "allow" | "deny", string][] = [
    ["mgmt→22", mgmt, 22, "allow", "CiliumClusterwideNetworkPolicy host-reference spec.ingress[0]"],
    ["outside→22", outside, 22, "deny", "default deny"],
    ["node-2→10250", node2, 10250, "allow", "CiliumClusterwideNetworkPolicy host-reference spec.ingress[1]"],
    ["outside→10250", outside, 10250, "deny", "default deny"],
    ["node-2→9999", node2, 9999, "deny", "default deny"],
    ["pod on node-2→22", pod("n2"), 22, "deny", "default deny"],
    ["pod on node-1→22 (its own node)", pod("n1"), 22, "deny", "default deny"],
  ];
  for (const [what, src, port, verdict, rule] of cases) {
    const a = trace(src, node1, port);
    assert.equal(a.verdict, verdict, what);
    assert.equal(stepReasonText(a.decided!.rule), rule, what);
    assert.equal(a.decided!.subject, "host of node n1", what);
    assert.equal(a.decided!.direction, "ingress", what);
  }
});

test("a node no host policy selects is allow-all; its peer as the datapath sees it: remote-node from another node, the pod's identity from a pod", () => {
  const a = trace(node1, node2, 9999);
  assert.equal(a.verdict, "allow");
  assert.deepEqual(
    a.steps.map((s) => [s.subject, s.direction, s.peer.id, stepReasonText(s.rule)]),
    [
      ["host of node n1", "egress", 6, "no policy selects it (allow-all)"],
      ["host of node n2", "ingress", 6, "no policy selects it (allow-all)"],
    ],
  );
  const fromPod = trace(pod("n2"), node1, 22);
  assert.deepEqual(fromPod.steps.map((s) => [s.subject, s.direction, s.peer.id]), [["app/web-n2", "egress", 6], ["host of node n1", "ingress", 300]]);
});

test("a pod to its own node: the host's ingress first (pod_to_host), then the pod's egress with peer reserved:host", () => {
  const open = trace(pod("n2"), node2, 9999, podEgressDeny);
  assert.deepEqual(open.steps.map((s) => [s.subject, s.direction, s.peer.id, s.verdict]), [["host of node n2", "ingress", 300, "allow"], ["app/web-n2", "egress", 1, "deny"]]);
  assert.equal(open.verdict, "deny");
  assert.equal(stepReasonText(open.decided!.rule), "CiliumNetworkPolicy app/no-host-9999 spec.egressDeny[0]");
  // Both deny: the host's ingress decides (it runs first, so no conntrack entry of the pod's is written).
  const both = trace(pod("n1"), node1, 9999, [...reference, ...podEgressDeny]);
  assert.equal(both.decided!.subject, "host of node n1");
});

test("host egress: a node's own connections are judged on its device; loopback and its own pods are not", () => {
  const out = trace(node1, outside, 443, hostEgress);
  assert.equal(out.verdict, "allow");
  assert.equal(stepReasonText(out.decided!.rule), "CiliumClusterwideNetworkPolicy host-egress spec.egress[0]");
  const toNode = trace(node1, node2, 443, hostEgress);
  assert.equal(toNode.verdict, "deny");
  assert.deepEqual([toNode.decided!.subject, toNode.decided!.direction, stepReasonText(toNode.decided!.rule)], ["host of node n1", "egress", "default deny"]);
  const self = trace(node1, node1, 22);
  assert.deepEqual([self.verdict, self.steps.length, self.decided], ["allow", 0, undefined]);
  assert.match(self.notes[0]!, /crosses no device/);
  const ownPod = trace(node1, pod("n1"), 80, hostEgress);
  assert.deepEqual(ownPod.steps.map((s) => [s.subject, s.direction, s.peer.id]), [["app/web-n1", "ingress", 1]]);
  const otherPod = trace(node1, pod("n2"), 80, hostEgress);
  assert.deepEqual(otherPod.steps.map((s) => [s.subject, s.direction, s.peer.id, s.verdict]), [["host of node n1", "egress", 300, "deny"], ["app/web-n2", "ingress", 6, "allow"]]);
});

test("the lock-out guard passes before policy, for nodes only where it says so", () => {
  const guard: TraceGuardEntry[] = [
    { direction: "ingress", proto: TCP, port: 6443, peers: "any", why: "the API server" },
    { direction: "ingress", proto: TCP, port: 10250, peers: "nodes", why: "kubelet (test)" },
  ];
  const deny = parse({ apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "deny-all" }, spec: { nodeSelector: {}, ingressDeny: [{ fromEntities: ["all"] }] } });
  assert.equal(stepReasonText(trace(outside, node1, 6443, deny, guard).decided!.rule), "the lock-out guard (the API server)");
  assert.equal(trace(node2, node1, 10250, deny, guard).verdict, "allow");
  const notNode = trace(outside, node1, 10250, deny, guard);
  assert.equal(notNode.verdict, "deny");
  assert.equal(stepReasonText(notNode.decided!.rule), "CiliumClusterwideNetworkPolicy deny-all spec.ingressDeny[0]");
});

test("hostTraceText names the decision and every step", () => {
  const text = hostTraceText("172.31.0.5", "node n1", "TCP", 22, trace(mgmt, node1, 22));
  assert.equal(
    text,
    "172.31.0.5 -> node n1 TCP/22: ALLOWED\n" +
      "decided by: CiliumClusterwideNetworkPolicy host-reference spec.ingress[0] (ingress of host of node n1)\n" +
      "  ingress of host of node n1: allow by CiliumClusterwideNetworkPolicy host-reference spec.ingress[0] (peer 172.31.0.5 (a CIDR identity of a policy prefix holding it, else its family's world identity, as on a dual-stack node))\n" +
      "  note: 172.31.0.5 is outside the cluster: only the destination judges\n",
  );
});

test("a node to its own pod: allow-localhost always (the default) passes it before the pod's ingress policy; policy has that policy judge it as reserved:host", () => {
  const webIngress = parse({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "web-from-host-8080", namespace: "app" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["host"], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] }] },
  });
  const always = hostTrace({ policies: webIngress, src: node1, dst: pod("n1"), protocol: TCP, port: 9999 });
  assert.equal(always.verdict, "allow");
  assert.equal(stepReasonText(always.decided!.rule), "allow-localhost always (a node reaches its own pods)");
  assert.match(hostTraceText("node n1", "app/web-n1", "TCP", 9999, always), /ALLOWED\ndecided by: allow-localhost always/);
  const policy = (port: number) => hostTrace({ policies: webIngress, src: node1, dst: pod("n1"), protocol: TCP, port, allowLocalhost: "policy" });
  assert.deepEqual([policy(9999).verdict, stepReasonText(policy(9999).decided!.rule), policy(9999).decided!.peer.id], ["deny", "default deny", 1]);
  assert.deepEqual([policy(8080).verdict, stepReasonText(policy(8080).decided!.rule)], ["allow", "CiliumNetworkPolicy app/web-from-host-8080 spec.ingress[0]"]);
  // Another node's pod is not its own: the pod's policy judges it in either mode (peer reserved:remote-node).
  assert.equal(hostTrace({ policies: webIngress, src: node1, dst: pod("n2"), protocol: TCP, port: 9999 }).verdict, "deny");
});
