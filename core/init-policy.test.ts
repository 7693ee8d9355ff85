// Cilium's init policy: a cluster-wide policy selecting reserved:init opens what it names for endpoints whose identity is not known yet, and only that.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "./model.ts";
import { label, labelSetFrom } from "./labels.ts";
import { IDENTITY, RESERVED_IDENTITIES, reservedIdentityById } from "./identity.ts";
import { parsePolicyObject } from "./parser/index.ts";
import { compileAll } from "./compiler.ts";
import { directionVerdict } from "./evaluator.ts";
import { lookup } from "./policy/mapstate.ts";

const TCP = 6;
const UDP = 17;
const KUBE_DNS = 300;
const WEB = 301;
const pod = (ns: string, labels: Record<string, string>): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", ns), label("k8s", "io.cilium.k8s.policy.cluster", "default"), ...Object.entries(labels).map(([k, v]) => label("k8s", k, v))]);
const ids = new Map<number, LabelSet>([...RESERVED_IDENTITIES.map((r): [number, LabelSet] => [r.id, r.labels]), [KUBE_DNS, pod("kube-system", { "k8s-app": "kube-dns" })], [WEB, pod("prod", { app: "web" })]]);

function parse(obj: unknown): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

/** Cilium's docs (Endpoint Lifecycle, "Init Identity"), with a kube-dns peer beside the entity. */
const INIT_RULE = {
  endpointSelector: { matchLabels: { "reserved:init": "" } },
  ingress: [{ fromEntities: ["host"] }],
  egress: [
    { toEntities: ["all"], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] },
    { toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns" } }], toPorts: [{ ports: [{ port: "53", protocol: "TCP" }] }] },
  ],
};
const ccnp = (spec: Record<string, unknown>) => ({ apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "init" }, ...spec });

test("Cilium's init policy, as spec and as specs, compiles entries for subject reserved:init: the node in, UDP 53 to anything and TCP 53 to kube-dns out, the rest default deny", () => {
  for (const form of [{ spec: INIT_RULE }, { specs: [INIT_RULE] }]) {
    const sp = compileAll(parse(ccnp(form)), ids).snapshot(IDENTITY.init);
    assert.equal(sp.ingressEnforced, true);
    assert.equal(sp.egressEnforced, true);
    assert.equal(lookup(sp, "ingress", IDENTITY.host, TCP, 8080).verdict, "allow", "the node (its probes) reaches it");
    assert.equal(lookup(sp, "ingress", WEB, TCP, 8080).verdict, "deny");
    assert.equal(lookup(sp, "egress", KUBE_DNS, UDP, 53).verdict, "allow");
    assert.equal(lookup(sp, "egress", IDENTITY.world, UDP, 53).verdict, "allow", "toEntities all: any peer");
    assert.equal(lookup(sp, "egress", KUBE_DNS, TCP, 53).verdict, "allow", "kube-dns by its namespace and label");
    assert.equal(lookup(sp, "egress", WEB, TCP, 53).verdict, "deny");
    assert.deepEqual(lookup(sp, "egress", IDENTITY.world, TCP, 80), { verdict: "deny" }, "default deny: no entry names it");
  }
});

test("reserved:init is enforced both ways whatever selects it (Cilium): an init policy with ingress rules only leaves its egress default deny, in the compiler and the evaluator", () => {
  const policies = parse(ccnp({ spec: { endpointSelector: { matchLabels: { "reserved:init": "" } }, ingress: [{ fromEntities: ["host"] }] } }));
  const sp = compileAll(policies, ids).snapshot(IDENTITY.init);
  assert.equal(sp.ingressEnforced, true);
  assert.equal(sp.egressEnforced, true);
  assert.equal(lookup(sp, "egress", KUBE_DNS, UDP, 53).verdict, "deny");
  const init = { id: IDENTITY.init, labels: reservedIdentityById(IDENTITY.init)!.labels };
  const dns = { id: KUBE_DNS, labels: ids.get(KUBE_DNS)! };
  assert.deepEqual(directionVerdict({ policies, direction: "egress", subject: init, peer: dns, protocol: UDP, port: 53 }), { verdict: "deny", rule: "default-deny" });
  assert.deepEqual(directionVerdict({ policies: [], direction: "ingress", subject: init, peer: dns, protocol: UDP, port: 53 }), { verdict: "deny", rule: "default-deny" }, "no policy at all: still closed");
  // Any other subject keeps Cilium's per-direction default: selected only in ingress, egress allows.
  const web = compileAll(parse(ccnp({ spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["host"] }] } })), ids).snapshot(WEB);
  assert.equal(web.egressEnforced, false);
});

test("a namespaced policy never selects reserved:init; a cluster-wide one with an empty endpointSelector does, as in Cilium", () => {
  const cnp = { apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "all", namespace: "prod" }, spec: { endpointSelector: {}, egress: [{ toEntities: ["world"] }] } };
  assert.equal(compileAll(parse(cnp), ids).snapshot(IDENTITY.init).entries.length, 0);
  const everything = compileAll(parse(ccnp({ spec: { endpointSelector: {}, egress: [{ toEntities: ["world"] }] } })), ids).snapshot(IDENTITY.init);
  assert.equal(lookup(everything, "egress", IDENTITY.world, TCP, 443).verdict, "allow");
});
