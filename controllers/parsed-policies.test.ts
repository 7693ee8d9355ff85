// The operator's one parse per policy generation follows its --enable-extended-ip-protocols, so status and distribution agree.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { KubeObject } from "../kube/kube.ts";
import { ParsedPolicies } from "./parsed-policies.ts";

const vrrp = (): KubeObject =>
  ({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "keepalived", namespace: "net", uid: "u1", generation: 1 },
    spec: { endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ protocol: "VRRP" }] }] }] },
  }) as KubeObject;

test("a port-less VRRP policy parses with the operator's option on, and is invalid naming the flag with it off (the default)", () => {
  const on = new ParsedPolicies({ enableExtendedIPProtocols: true }).parse(vrrp());
  assert.ok(on.ok, JSON.stringify(!on.ok && on.errors));
  assert.equal(on.value[0]?.rules[0]?.ports[0]?.ports[0]?.protocol, "VRRP");
  const off = new ParsedPolicies().parse(vrrp());
  assert.equal(off.ok, false);
  assert.match(!off.ok ? (off.errors[0]?.message ?? "") : "", /--enable-extended-ip-protocols/);
});
