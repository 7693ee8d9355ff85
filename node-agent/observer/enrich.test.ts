// Enrichment: a datapath event becomes a Flow naming pods, labels, the drop reason and the deciding rule.
import { test } from "node:test";
import assert from "node:assert/strict";
import { enrich, type EnrichLookups } from "./enrich.ts";
import { decisionText } from "../../flowapi/flow.ts";
import type { VerdictEvent } from "../bpf/layout.ts";
import { PROTO_NUMBER, type RuleOrigin } from "../../core/model.ts";
import { RULE_ID_DEFAULT_DENY } from "../../core/compiler.ts";

const rules = new Map<number, RuleOrigin>([
  [7, { policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "deny-client", ruleIndex: 0, path: "spec.ingressDeny[0]" }],
  [9, { policyKind: "CiliumClusterwideNetworkPolicy", name: "allow-dns", ruleIndex: 1, path: "spec.egress[1]" }],
]);

const lookups: EnrichLookups = {
  node: "node-a",
  identityLabels: (id) => ({ 256: ["k8s:app=client"], 300: ["k8s:app=web"] })[id],
  endpointByIp: (ip) => ({ "10.0.0.1": { namespace: "default", pod: "client-1" }, "10.0.1.5": { namespace: "shop", pod: "web-0" } })[ip],
  ruleOrigin: (id) => rules.get(id),
  wallClock: (ns) => new Date(1_700_000_000_000 + Number(ns / 1_000_000n)),
};

function event(over: Partial<VerdictEvent> = {}): VerdictEvent {
  return {
    timestampNs: 5_000_000n,
    verdict: "dropped",
    direction: "ingress",
    ctState: "new",
    tcpFlags: 2,
    reasonCode: 1,
    reason: "policy denied",
    proto: 6,
    srcIdentity: 256,
    dstIdentity: 300,
    ruleId: 7,
    ifindex: 12,
    src: "10.0.0.1",
    dst: "10.0.1.5",
    sport: 40000,
    dport: 80,
    ...over,
  };
}

test("an audit (a policy drop audit mode let pass) is an AUDIT policy verdict naming the rule, default deny included, and the drop that did not happen", () => {
  const f = enrich(event({ verdict: "audit" }), lookups);
  assert.deepEqual([f.verdict, f.type, f.dropReason, decisionText(f.decidedBy)], ["AUDIT", "policy-verdict", "policy denied", "CiliumNetworkPolicy shop/deny-client spec.ingressDeny[0]"]);
  const dd = enrich(event({ verdict: "audit", reasonCode: 2, reason: "policy denied (default deny)" }), lookups);
  assert.deepEqual([dd.verdict, dd.type, dd.decidedBy], ["AUDIT", "policy-verdict", { kind: "default-deny" }]);
});

test("a policy drop names the pods, identities, labels, port, reason and the deny rule", () => {
  const f = enrich(event(), lookups);
  assert.deepEqual(f, {
    time: new Date(1_700_000_000_005).toISOString(),
    verdict: "DROPPED",
    type: "drop",
    direction: "ingress",
    source: { identity: 256, labels: ["k8s:app=client"], namespace: "default", pod: "client-1", ip: "10.0.0.1", port: 40000 },
    destination: { identity: 300, labels: ["k8s:app=web"], namespace: "shop", pod: "web-0", ip: "10.0.1.5", port: 80 },
    protocol: "TCP",
    tcpFlags: 2, // SYN
    dropReason: "policy denied",
    decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "deny-client", rule: "spec.ingressDeny[0]" },
    interface: { index: 12 }, // the device the event names (no name: these lookups know none)
    node: "node-a",
  });
  assert.equal(decisionText(f.decidedBy), "CiliumNetworkPolicy shop/deny-client spec.ingressDeny[0]");
});

test("an ICMP flow carries the message's code and no TCP flags; a TCP flow its flags and no code", () => {
  const unreachable = enrich(event({ proto: PROTO_NUMBER.ICMP, sport: 0, dport: 3, tcpFlags: 0, icmpCode: 13 }), lookups);
  assert.deepEqual([unreachable.protocol, unreachable.destination.port, unreachable.icmpCode, unreachable.tcpFlags], ["ICMP", 3, 13, undefined]);
  const synAck = enrich(event({ tcpFlags: 0x12 }), lookups);
  assert.deepEqual([synAck.tcpFlags, synAck.icmpCode], [0x12, undefined]);
});

test("a miss in an enforced direction is marked default deny", () => {
  const noRule = event({ reasonCode: 2, reason: "policy denied (default deny)" });
  delete (noRule as { ruleId?: number }).ruleId;
  assert.deepEqual(enrich(noRule, lookups).decidedBy, { kind: "default-deny" });
  assert.equal(decisionText(enrich(event({ ruleId: RULE_ID_DEFAULT_DENY }), lookups).decidedBy), "default deny");
});

test("a forwarded flow by a cluster-wide rule is a policy-verdict; with no rule it is a trace", () => {
  const allowed = enrich(event({ verdict: "forwarded", reasonCode: 0, reason: undefined, ruleId: 9, proto: 17, direction: "egress" }), lookups);
  assert.equal(allowed.verdict, "FORWARDED");
  assert.equal(allowed.type, "policy-verdict");
  assert.equal(allowed.protocol, "UDP");
  assert.equal(allowed.dropReason, undefined);
  assert.equal(decisionText(allowed.decidedBy), "CiliumClusterwideNetworkPolicy allow-dns spec.egress[1]");
  const plain = event({ verdict: "forwarded", reasonCode: 0, reason: undefined });
  delete (plain as { ruleId?: number }).ruleId;
  assert.equal(enrich(plain, lookups).type, "trace");
});

test("unknown addresses and identities keep the IP and an empty label list", () => {
  const f = enrich(event({ src: "192.0.2.9", srcIdentity: 2, proto: 99 }), lookups);
  assert.deepEqual(f.source, { identity: 2, labels: [], ip: "192.0.2.9", port: 40000 });
  assert.equal(f.protocol, "99");
});

test("an address the DNS proxy learned names for carries them on its side of the flow; one without carries none", () => {
  const named: EnrichLookups = { ...lookups, namesByIp: (ip) => (ip === "140.82.112.6" ? ["api.github.com", "github.com"] : []) };
  const f = enrich(event({ verdict: "forwarded", direction: "egress", dst: "140.82.112.6", dport: 443, dstIdentity: 16777217 }), named);
  assert.deepEqual(f.destination.names, ["api.github.com", "github.com"]);
  assert.equal("names" in f.source, false);
});

test("every flow carries the node's labels once the agent knows them, none before", () => {
  assert.equal("nodeLabels" in enrich(event(), lookups), false);
  const labelled = enrich(event(), { ...lookups, nodeLabels: () => ["topology.kubernetes.io/zone=zone-a"] });
  assert.deepEqual([labelled.node, labelled.nodeLabels], ["node-a", ["topology.kubernetes.io/zone=zone-a"]]);
});

test("a flow names the device it was seen on (its name when the agent knows it) and is encrypted when forwarded to or from an encrypted peer, never when dropped", () => {
  const more: EnrichLookups = { ...lookups, interfaceName: (i) => (i === 12 ? "lxc-client" : undefined), encryptedPeer: (ip) => ip === "10.0.1.5" };
  const forwarded = enrich(event({ verdict: "forwarded", direction: "egress" }), more);
  assert.deepEqual([forwarded.interface, forwarded.encrypted], [{ index: 12, name: "lxc-client" }, true]);
  const dropped = enrich(event(), more);
  assert.equal(dropped.encrypted, undefined, "a dropped packet never left");
  assert.deepEqual(enrich(event({ ifindex: 40 }), more).interface, { index: 40 });
  assert.equal(enrich(event({ verdict: "forwarded", dst: "10.0.9.9" }), more).encrypted, undefined);
});
