// NodeStateSource over in-memory caches with the real parser and compiler: a node gets the compiled
// policy of the identities it hosts and the whole ipcache; enforcement follows the agents' ACKs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { securityLabels } from "../../core/labels.ts";
import type { Informer } from "../runtime/informer.ts";
import { keyOf } from "../runtime/informer.ts";
import type { KubeObject } from "../runtime/kube.ts";
import { securityLabelsMap, type IdentityObject, type PodObject } from "../identity.ts";
import type { NodeObject } from "../node.ts";
import type { PolicyObject } from "../policy.ts";
import { NodeStateSource } from "./source.ts";

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
  assert.deepEqual(ipc.get("10.0.2.5/32"), { prefix: "10.0.2.5/32", identity: 257, node: "192.0.2.2" });
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
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked }]), { acknowledged: 1, refused: [] });
  assert.deepEqual(src.enforcement({ ...cnp, metadata: { ...cnp.metadata, generation: 5 } }, concerned, [{ node: "n1", connected: true, ackedVersion: 1, acked }]), { acknowledged: 0, refused: [] });
  assert.deepEqual(src.enforcement(cnp, concerned, [{ node: "n1", connected: true, nack: { version: 2, error: "map full", state: acked } }]), { acknowledged: 0, refused: [{ node: "n1", message: "map full" }] });

  src.onPolicy({ type: "delete", obj: cnp });
  assert.equal(src.stateFor("n1").policies[0]?.ingressEnforced, false);
  assert.deepEqual(src.stateFor("n1").policyGenerations, []);
});
