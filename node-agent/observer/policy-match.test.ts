// Hubble's policy_match_type from the deciding rule's applied entries, in the datapath's lookup order.
import { test } from "node:test";
import assert from "node:assert/strict";
import { enrich, type EnrichLookups } from "./enrich.ts";
import { entryMatch, policyMatchIndex } from "./policy-match.ts";
import type { PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, IDENTITY, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER } from "../../core/identity.ts";
import { toHubbleFlow, fromHubbleFlow } from "../../flowapi/hubble/flow.ts";

function entry(over: Partial<PolicyEntry>): PolicyEntry {
  return { subject: 300, direction: "ingress", peer: 256, proto: 6, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 9, ...over };
}

test("each kind of key is Cilium's match type: peer or any, protocol or any, port block or any port", () => {
  assert.equal(entryMatch(entry({})), "L3-L4");
  assert.equal(entryMatch(entry({ proto: 0, port: 0, portPrefixLen: 0 })), "L3-Only");
  assert.equal(entryMatch(entry({ port: 0, portPrefixLen: 0 })), "L3-Proto");
  assert.equal(entryMatch(entry({ peer: 0 })), "L4-Only");
  assert.equal(entryMatch(entry({ peer: 0, proto: 0, port: 0, portPrefixLen: 0 })), "all");
  assert.equal(entryMatch(entry({ peer: 0, port: 0, portPrefixLen: 0 })), "Proto-Only");
});

test("a rule with several keys holding the connection reports the one the datapath hits first", () => {
  const policies: SubjectPolicy[] = [
    {
      subject: 300,
      ingressEnforced: true,
      egressEnforced: false,
      entries: [
        entry({ peer: 0, port: 80, portPrefixLen: 16 }), // any peer, port 80
        entry({ peer: 256, proto: 0, port: 0, portPrefixLen: 0 }), // this peer, anything
        entry({ peer: 256, port: 0x0000, portPrefixLen: 8 }), // this peer, TCP 0–255
        entry({ peer: 256, port: 80, portPrefixLen: 16, ruleId: 10 }), // another rule
        entry({ direction: "egress", peer: 256, port: 80, ruleId: 9 }),
      ],
    },
  ];
  const m = policyMatchIndex(policies);
  assert.equal(m(9, 300, "ingress", 256, 6, 80), "L3-L4"); // the peer's port block before its any-protocol key
  assert.equal(m(9, 300, "ingress", 256, 17, 53), "L3-Only"); // UDP: only the peer's any-protocol key holds it
  assert.equal(m(9, 300, "ingress", 999, 6, 80), "L4-Only"); // another peer: only the any-peer key
  assert.equal(m(9, 300, "ingress", 999, 6, 443), undefined); // no key of the rule holds it
  assert.equal(m(9, 301, "ingress", 256, 6, 80), undefined); // another subject
  assert.equal(m(11, 300, "ingress", 256, 6, 80), undefined); // a rule the state does not have
});

test("an entry of the cluster class matches a peer in the class (L3, after the peer's own keys, before any peer's), never one outside it", () => {
  const policies: SubjectPolicy[] = [
    {
      subject: 300,
      ingressEnforced: true,
      egressEnforced: false,
      entries: [
        entry({ peer: CLUSTER_CLASS_PEER, proto: 6, port: 80, portPrefixLen: 16 }),
        entry({ peer: 0, proto: 6, port: 0, portPrefixLen: 0 }),
        entry({ peer: 257, proto: 0, port: 0, portPrefixLen: 0 }),
      ],
    },
  ];
  const m = policyMatchIndex(policies);
  assert.equal(m(9, 300, "ingress", 256, 6, 80), "L3-L4", "a pod: the class's port block");
  assert.equal(m(9, 300, "ingress", 1, 6, 80), "L3-L4", "reserved:host is in the class");
  assert.equal(m(9, 300, "ingress", 257, 6, 80), "L3-Only", "a pod with keys of its own: those first");
  assert.equal(m(9, 300, "ingress", 2, 6, 80), "Proto-Only", "the world: only the any-peer key");
  assert.equal(m(9, 300, "ingress", (1 << 24) + 3, 6, 80), "Proto-Only", "a CIDR identity: only the any-peer key");
});

test("an entry of the every-pod class matches a pod peer instead of the cluster class's (which matches a reserved peer in the cluster), never one outside", () => {
  const policies: SubjectPolicy[] = [
    {
      subject: 300,
      ingressEnforced: true,
      egressEnforced: false,
      entries: [
        entry({ peer: EVERY_POD_CLASS_PEER, proto: 17, port: 53, portPrefixLen: 16 }),
        entry({ peer: CLUSTER_CLASS_PEER, proto: 0, port: 0, portPrefixLen: 0 }),
        // Another rule's every-pod entry: the subject has the class, so a pod's lookup never reaches the cluster class's keys.
        entry({ peer: EVERY_POD_CLASS_PEER, proto: 6, port: 80, portPrefixLen: 16, ruleId: 10 }),
        entry({ peer: 0, proto: 0, port: 0, portPrefixLen: 0 }),
      ],
    },
  ];
  const m = policyMatchIndex(policies);
  assert.equal(m(9, 300, "ingress", 256, 17, 53), "L3-L4", "a pod: the every-pod class's port block");
  assert.equal(m(9, 300, "ingress", 256, 6, 443), "all", "a pod: not the cluster class's key (the every-pod class answers for it), the any-peer key");
  assert.equal(m(9, 300, "ingress", 1, 6, 443), "L3-Only", "reserved:host: the cluster class's key");
  assert.equal(m(9, 300, "ingress", 1, 17, 53), "L3-Only", "reserved:host: not the every-pod class's port block");
  assert.equal(m(9, 300, "ingress", (1 << 24) + 3, 17, 53), "all", "a CIDR identity: only the any-peer key");
});

test("a world peer's verdict by the world class names the class's key (L3), after its own, an FQDN identity's too; a pod's never", () => {
  const cidr = (1 << 24) + 3;
  const policies: SubjectPolicy[] = [
    {
      subject: 300,
      ingressEnforced: false,
      egressEnforced: true,
      entries: [
        entry({ direction: "egress", peer: WORLD_CLASS_PEER, proto: 6, port: 443, portPrefixLen: 16 }),
        entry({ direction: "egress", peer: cidr, proto: 0, port: 0, portPrefixLen: 0 }),
        entry({ direction: "egress", peer: 0, proto: 0, port: 0, portPrefixLen: 0 }),
      ],
    },
  ];
  const m = policyMatchIndex(policies);
  assert.equal(m(9, 300, "egress", (1 << 24) + 4, 6, 443), "L3-L4", "a CIDR identity: the world class's port");
  assert.equal(m(9, 300, "egress", IDENTITY.worldIPv6, 6, 443), "L3-L4", "world-ipv6: the world class's port");
  assert.equal(m(9, 300, "egress", cidr, 6, 443), "L3-Only", "a CIDR identity with its own key: that key first");
  assert.equal(m(9, 300, "egress", 256, 6, 443), "all", "a pod: the any-peer key");
  assert.equal(m(9, 300, "egress", (1 << 24) + (1 << 23), 6, 443), "L3-L4", "an FQDN identity (a learned address): the world class's port");
  assert.equal(m(9, 300, "egress", (1 << 24) + (1 << 23), 6, 80), "all", "an FQDN identity elsewhere: the any-peer key");
});

test("a world peer in a packet of a family whose class has entries: that class's key decides (the packet's family picks it, reserved:world keeps the world class's)", () => {
  const policies: SubjectPolicy[] = [
    {
      subject: 300,
      ingressEnforced: false,
      egressEnforced: true,
      entries: [
        // The world rule's any-port key in the world class; the world-ipv4 class holds it with a TCP 80 key of the world-ipv4 rule (rule 9).
        entry({ direction: "egress", peer: WORLD_CLASS_PEER, proto: 0, port: 0, portPrefixLen: 0, ruleId: 7 }),
        entry({ direction: "egress", peer: WORLD_IPV4_CLASS_PEER, proto: 0, port: 0, portPrefixLen: 0, ruleId: 7 }),
        entry({ direction: "egress", peer: WORLD_IPV4_CLASS_PEER, proto: 6, port: 80, portPrefixLen: 16 }),
      ],
    },
  ];
  const m = policyMatchIndex(policies);
  const cidr = (1 << 24) + 4;
  assert.equal(m(9, 300, "egress", cidr, 6, 80, 4), "L3-L4", "an IPv4 CIDR identity: the world-ipv4 class's port");
  assert.equal(m(9, 300, "egress", IDENTITY.worldIPv4, 6, 80, 4), "L3-L4", "world-ipv4 itself");
  assert.equal(m(7, 300, "egress", cidr, 6, 80, 6), "L3-Only", "in an IPv6 packet: the world class's any-port key");
  assert.equal(m(7, 300, "egress", IDENTITY.world, 6, 80, 4), "L3-Only", "reserved:world: the world class's, whatever the family");
  assert.equal(m(9, 300, "egress", IDENTITY.world, 6, 80, 4), undefined, "the world-ipv4 rule never decides for reserved:world");
});

test("a policy verdict carries its match type through enrichment, Hubble's policy_match_type and back; a drop none", () => {
  const policies: SubjectPolicy[] = [{ subject: 300, ingressEnforced: true, egressEnforced: false, entries: [entry({})] }];
  const lookups: EnrichLookups = {
    node: "node-a",
    identityLabels: () => ["k8s:app=x"],
    endpointByIp: () => undefined,
    ruleOrigin: () => ({ policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "allow-web", ruleIndex: 0, path: "spec.ingress[0]" }),
    policyMatch: policyMatchIndex(policies),
    wallClock: () => new Date(1_700_000_000_000),
  };
  const base = { timestampNs: 1n, direction: "ingress", ctState: "new", tcpFlags: 2, reasonCode: 0, proto: 6, srcIdentity: 256, dstIdentity: 300, ruleId: 9, ifindex: 3, src: "10.0.0.1", dst: "10.0.1.5", sport: 40000, dport: 80 } as const;
  const allowed = enrich({ ...base, verdict: "forwarded" }, lookups);
  assert.equal(allowed.type, "policy-verdict");
  assert.equal(allowed.policyMatch, "L3-L4");
  const h = toHubbleFlow(allowed);
  assert.equal(h.policy_match_type, 2);
  assert.equal(fromHubbleFlow(h).policyMatch, "L3-L4");
  const dropped = enrich({ ...base, verdict: "dropped", reasonCode: 1, reason: "policy denied" }, lookups);
  assert.equal(dropped.policyMatch, undefined);
  assert.equal(toHubbleFlow(dropped).policy_match_type, undefined);
});
