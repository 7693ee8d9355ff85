// Node host subjects in the compiler: a CCNP nodeSelector matches node labels, follows them, and a node host subject is never anyone's peer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parsePolicyObject } from "./parser/index.ts";
import { PolicyCompiler, policyKey } from "./compiler.ts";
import { IDENTITY, RESERVED_IDENTITIES } from "./identity.ts";
import { securityLabels } from "./labels.ts";
import type { Policy } from "./model.ts";
import { lookup } from "./policy/mapstate.ts";
import { MIN_NODE_HOST_IDENTITY, NodeHostIdentities, asHostDelta, asHostSubject, isNodeHostIdentity, nodeHostLabels } from "./host-endpoint.ts";

function policy(kind: string, spec: Record<string, unknown>, name = "p"): Policy[] {
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind, metadata: { name, ...(kind === "CiliumNetworkPolicy" ? { namespace: "ns" } : {}) }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const ssh = { toPorts: [{ ports: [{ port: "22", protocol: "TCP" }] }] };
const WORKER = MIN_NODE_HOST_IDENTITY;
const CONTROL = MIN_NODE_HOST_IDENTITY + 1;

function compilerWithNodes(): PolicyCompiler {
  const c = new PolicyCompiler();
  for (const r of RESERVED_IDENTITIES) c.upsertIdentity(r.id, r.labels);
  c.upsertIdentity(256, securityLabels({ podLabels: { app: "web" }, namespace: "ns", namespaceLabels: {} }));
  c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1", "node-role.kubernetes.io/worker": "" }));
  c.upsertIdentity(CONTROL, nodeHostLabels({ "kubernetes.io/hostname": "c1", "node-role.kubernetes.io/control-plane": "", tier: "mgmt" }));
  return c;
}

const add = (c: PolicyCompiler, parts: Policy[]): void => void c.upsertPolicy(policyKey(parts[0]!), parts);

test("nodeHostLabels: reserved:host plus each node label under the k8s source", () => {
  assert.deepEqual(nodeHostLabels({ b: "2", a: "1" }).labels.map((l) => `${l.source}:${l.key}=${l.value}`), ["k8s:a=1", "k8s:b=2", "reserved:host="]);
  assert.deepEqual(nodeHostLabels(undefined).labels.map((l) => `${l.source}:${l.key}`), ["reserved:host"]);
});

test("a nodeSelector matchLabels selects exactly the node host subjects whose node has the label", () => {
  const c = compilerWithNodes();
  add(c, policy("CiliumClusterwideNetworkPolicy", { nodeSelector: { matchLabels: { tier: "mgmt" } }, ingress: [{ fromEntities: ["world"], ...ssh }] }));
  assert.equal(c.snapshot(CONTROL).ingressEnforced, true, "the labelled node's host is enforced");
  for (const world of [IDENTITY.world, IDENTITY.worldIPv4, IDENTITY.worldIPv6]) assert.equal(lookup(c.snapshot(CONTROL), "ingress", world, 6, 22).verdict, "allow", `world ${world} on 22`);
  assert.equal(lookup(c.snapshot(CONTROL), "ingress", 256, 6, 22).verdict, "deny", "a pod is not the world");
  assert.equal(c.snapshot(WORKER).ingressEnforced, false, "the other node is not selected");
  assert.deepEqual(c.snapshot(WORKER).entries, []);
  assert.equal(c.snapshot(IDENTITY.host).ingressEnforced, false, "reserved:host without node labels matches no label selector");
});

test("nodeSelector matchExpressions (Exists, DoesNotExist, In, NotIn) over node labels", () => {
  const cases: [Record<string, unknown>, number[]][] = [
    [{ matchExpressions: [{ key: "node-role.kubernetes.io/control-plane", operator: "Exists" }] }, [CONTROL]],
    [{ matchExpressions: [{ key: "node-role.kubernetes.io/control-plane", operator: "DoesNotExist" }] }, [WORKER]],
    [{ matchExpressions: [{ key: "kubernetes.io/hostname", operator: "In", values: ["w1", "x"] }] }, [WORKER]],
    [{ matchExpressions: [{ key: "kubernetes.io/hostname", operator: "NotIn", values: ["w1"] }] }, [CONTROL]],
    [{}, [WORKER, CONTROL]],
  ];
  for (const [nodeSelector, selected] of cases) {
    const c = compilerWithNodes();
    add(c, policy("CiliumClusterwideNetworkPolicy", { nodeSelector, ingress: [{ fromEntities: ["cluster"], ...ssh }] }));
    for (const id of [WORKER, CONTROL]) assert.equal(c.snapshot(id).ingressEnforced, selected.includes(id), `${JSON.stringify(nodeSelector)} on ${id}`);
    assert.ok(!c.subjectIds().some((s) => s === 256), "no pod is a host policy's subject");
  }
});

test("a node whose labels change moves in and out of a host policy's selection, with the delta of just that node's host", () => {
  const c = compilerWithNodes();
  add(c, policy("CiliumClusterwideNetworkPolicy", { nodeSelector: { matchLabels: { tier: "mgmt" } }, ingress: [{ fromEntities: ["world"], ...ssh }] }));
  const gained = c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1", tier: "mgmt" }));
  assert.deepEqual(gained.map((d) => d.subject), [WORKER]);
  assert.equal(gained[0]!.ingressEnforced, true);
  assert.ok(gained[0]!.added.some((e) => e.port === 22));
  const lost = c.upsertIdentity(WORKER, nodeHostLabels({ "kubernetes.io/hostname": "w1" }));
  assert.deepEqual(lost.map((d) => d.subject), [WORKER]);
  assert.equal(lost[0]!.ingressEnforced, false);
  assert.ok(lost[0]!.removed.some((e) => e.port === 22) && lost[0]!.added.length === 0);
});

test("a node host subject is never a peer: not of the host entity, a wildcard-ish NotIn selector, or all", () => {
  const c = compilerWithNodes();
  add(
    c,
    policy("CiliumNetworkPolicy", {
      endpointSelector: { matchLabels: { app: "web" } },
      ingress: [{ fromEntities: ["host", "all"] }, { fromEndpoints: [{ matchExpressions: [{ key: "app", operator: "NotIn", values: ["x"] }] }] }],
      egress: [{ toEntities: ["host"] }],
    }),
  );
  add(c, policy("CiliumClusterwideNetworkPolicy", { nodeSelector: {}, ingress: [{ fromEntities: ["host", "cluster", "all"] }] }, "host"));
  for (const s of [256, WORKER, CONTROL]) {
    const peers = c.snapshot(s).entries.map((e) => e.peer);
    assert.ok(peers.length > 0, `${s} has entries`);
    assert.ok(!peers.some(isNodeHostIdentity), `${s}'s peers ${JSON.stringify(peers)} hold no node host subject`);
  }
  assert.ok(c.snapshot(256).entries.some((e) => e.peer === IDENTITY.host), "the host entity is still reserved:host");
});

test("NodeHostIdentities: one number per node, reused after release; asHostSubject/asHostDelta give the node reserved:host", () => {
  const ids = new NodeHostIdentities();
  const a = ids.acquire("a");
  assert.equal(ids.acquire("a"), a);
  const b = ids.acquire("b");
  assert.notEqual(a, b);
  assert.ok(isNodeHostIdentity(a) && isNodeHostIdentity(b) && !isNodeHostIdentity(IDENTITY.host) && !isNodeHostIdentity(65535) && !isNodeHostIdentity(1 << 24));
  assert.equal(ids.release("a"), a);
  assert.equal(ids.idOf("a"), undefined);
  assert.equal(ids.acquire("c"), a);
  const e = { subject: b, direction: "ingress" as const, peer: 2, proto: 6, port: 22, portPrefixLen: 16, verdict: "allow" as const, proxyPort: 0, ruleId: 1 };
  assert.deepEqual(asHostSubject({ subject: b, ingressEnforced: true, egressEnforced: false, entries: [e] }), { subject: 1, ingressEnforced: true, egressEnforced: false, entries: [{ ...e, subject: 1 }] });
  const d = asHostDelta({ subject: b, ingressEnforced: true, egressEnforced: false, added: [e], removed: [e] });
  assert.equal(d.subject, 1);
  assert.ok([...d.added, ...d.removed].every((x) => x.subject === 1));
});
