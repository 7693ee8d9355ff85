// Extended IP protocols (VRRP, IGMP, GRE, ...): refused unless the option is on, port-less when on, compiled by protocol number.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EXTENDED_PROTO_NUMBER, type LabelSet } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { compileAll } from "../compiler.ts";
import { lookup } from "../policy/mapstate.ts";
import { validateObject } from "../validate.ts";
import { parsePolicyObject, parsePolicyYaml } from "./index.ts";

const ON = { enableExtendedIPProtocols: true } as const;
const PORT_PATH = "spec.ingress[0].toPorts[0].ports[0]";

const cnp = (ports: unknown[]) => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "keepalived", namespace: "prod" },
  spec: {
    endpointSelector: { matchLabels: { app: "lb" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: "lb" } }], toPorts: [{ ports }] }],
  },
});

function errorsOf(obj: unknown, options = {}): { path: string; message: string }[] {
  const r = parsePolicyObject(obj, options);
  assert.equal(r.ok, false, "refused");
  return r.ok ? [] : [...r.errors];
}

test("without the option an extended protocol is refused at its field, naming the option", () => {
  for (const proto of Object.keys(EXTENDED_PROTO_NUMBER)) {
    const errs = errorsOf(cnp([{ protocol: proto }]));
    assert.deepEqual(errs.map((e) => e.path), [`${PORT_PATH}.protocol`], proto);
    assert.match(errs[0]?.message ?? "", /--enable-extended-ip-protocols/);
    assert.match(errs[0]?.message ?? "", new RegExp(`"${proto}"`));
  }
  // Off is the default everywhere the parser is entered.
  assert.equal(parsePolicyYaml("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: v}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{protocol: VRRP}]}]}]\n").ok, false);
  assert.match(validateObject(cnp([{ protocol: "GRE" }])).errors[0]?.message ?? "", /--enable-extended-ip-protocols/);
});

test("with the option a port-less VRRP, IGMP or GRE rule is accepted, with port absent or \"0\"", () => {
  for (const ports of [[{ protocol: "VRRP" }], [{ port: "0", protocol: "IGMP" }], [{ protocol: "GRE" }, { port: "443", protocol: "TCP" }]]) {
    const r = parsePolicyObject(cnp(ports), ON);
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    const pp = r.value[0]?.rules[0]?.ports[0]?.ports[0];
    assert.deepEqual(pp, { port: 0, endPort: 0, protocol: ports[0]?.protocol });
  }
  assert.deepEqual(validateObject(cnp([{ protocol: "VRRP" }]), ON).errors, []);
  const yaml = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: v}\nspec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{protocol: ESP}]}]}]\n";
  assert.ok(parsePolicyYaml(yaml, ON).ok);
});

test("with the option a port or endPort on an extended protocol is an error naming the field", () => {
  const port = errorsOf(cnp([{ port: "112", protocol: "VRRP" }]), ON);
  assert.deepEqual(port.map((e) => e.path), [`${PORT_PATH}.port`]);
  assert.match(port[0]?.message ?? "", /VRRP has no ports/);
  const named = errorsOf(cnp([{ port: "http", protocol: "GRE" }]), ON);
  assert.deepEqual(named.map((e) => e.path), [`${PORT_PATH}.port`]);
  const end = errorsOf(cnp([{ port: "0", endPort: 10, protocol: "IGMP" }]), ON);
  assert.deepEqual(end.map((e) => e.path), [`${PORT_PATH}.endPort`]);
});

test("with the option a misspelt or lower-case protocol lists the extended names too", () => {
  const protocolError = (errs: { path: string; message: string }[]) => errs.find((e) => e.path === `${PORT_PATH}.protocol`)?.message ?? "";
  assert.match(protocolError(errorsOf(cnp([{ protocol: "vrrp" }]), ON)), /write it in capitals: VRRP/);
  assert.match(protocolError(errorsOf(cnp([{ port: "1", protocol: "OSPF" }]), ON)), /use TCP, UDP, SCTP, ANY, IGMP, .*VRRP/);
  // Off: the extended names are not offered.
  assert.equal(protocolError(errorsOf(cnp([{ port: "1", protocol: "OSPF" }]))), `"OSPF" is not a protocol: use TCP, UDP, SCTP or ANY`);
});

test("L7 rules on an extended protocol are refused (they apply to TCP only)", () => {
  const obj = cnp([{ protocol: "VRRP" }]);
  (obj.spec.ingress[0]!.toPorts[0] as Record<string, unknown>).rules = { http: [{ method: "GET" }] };
  const errs = errorsOf(obj, ON);
  assert.ok(errs.some((e) => e.path === `${PORT_PATH}.protocol` && /TCP only/.test(e.message)), JSON.stringify(errs));
});

const pod = (app: string): LabelSet =>
  labelSetFrom([
    label("k8s", "io.kubernetes.pod.namespace", "prod"),
    label("k8s", "app", app),
    label("k8s", "io.cilium.k8s.policy.cluster", "default"),
  ]);

test("the compiler keys a port-less VRRP rule by protocol number 112 with port 0, and it allows no TCP", () => {
  const LB = 300;
  const OTHER = 301;
  const r = parsePolicyObject(cnp([{ protocol: "VRRP" }]), ON);
  assert.ok(r.ok);
  const sp = compileAll(r.value, new Map([[LB, pod("lb")], [OTHER, pod("other")]])).snapshot(LB);
  assert.ok(sp.ingressEnforced);
  const vrrp = sp.entries.filter((e) => e.direction === "ingress" && e.verdict === "allow");
  assert.deepEqual(
    vrrp.map((e) => ({ peer: e.peer, proto: e.proto, port: e.port, portPrefixLen: e.portPrefixLen })),
    [{ peer: LB, proto: EXTENDED_PROTO_NUMBER.VRRP, port: 0, portPrefixLen: 0 }],
  );
  assert.equal(lookup(sp, "ingress", LB, 112, 0).verdict, "allow");
  assert.equal(lookup(sp, "ingress", OTHER, 112, 0).verdict, "deny", "only the selected peer");
  assert.equal(lookup(sp, "ingress", LB, 6, 0).verdict, "deny", "TCP is not VRRP");
  assert.equal(lookup(sp, "ingress", LB, 47, 0).verdict, "deny", "GRE is not VRRP");
});
