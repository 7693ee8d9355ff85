// Our flows in Hubble's shape and back: every drop reason has Cilium's name and number (checked against Cilium's own flow.proto).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CILIUM_DROP_REASONS, ciliumDropReason, fromHubbleFlow, toHubbleFlow } from "./flow.ts";
import { DROP_REASONS } from "../../node-agent/bpf/layout.ts";
import { hubbleProtoDir } from "./proto.ts";
import { dnsResponseFlow, dropFlow, flow, httpRequestFlow } from "../testing/flows.ts";
import { L7_DROP_REASON } from "../flow.ts";

function ciliumEnum(name: string): Map<string, number> {
  const proto = fs.readFileSync(path.join(hubbleProtoDir(), "flow", "flow.proto"), "utf8");
  const body = new RegExp(`enum ${name} \\{([^}]*)\\}`).exec(proto)![1]!;
  return new Map([...body.matchAll(/^\s*([A-Z0-9_]+)\s*=\s*(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

test("every datapath drop reason maps to a DropReason of Cilium's flow.proto, name and number", () => {
  const cilium = ciliumEnum("DropReason");
  for (const [code, text] of Object.entries(DROP_REASONS)) {
    const mapped = ciliumDropReason(text);
    assert.ok(mapped, `drop reason ${code} "${text}" has no Cilium mapping`);
    assert.equal(cilium.get(mapped.name), mapped.code, `${mapped.name} is ${cilium.get(mapped.name)} in Cilium's flow.proto, not ${mapped.code}`);
  }
  // Besides the datapath's: the proxies' refusal of an L7 request.
  assert.equal(Object.keys(CILIUM_DROP_REASONS).length, Object.keys(DROP_REASONS).length + 1);
  assert.equal(cilium.get(ciliumDropReason(L7_DROP_REASON)!.name), ciliumDropReason(L7_DROP_REASON)!.code);
});

test("an audit is Hubble's verdict AUDIT, a policy verdict event without a drop reason, its rule in the denied list", () => {
  const h = toHubbleFlow(dropFlow({ verdict: "AUDIT", type: "policy-verdict", direction: "egress" }));
  assert.equal(h.verdict, "AUDIT");
  assert.deepEqual(h.event_type, { type: 5, sub_type: 0 });
  assert.equal(h.drop_reason, undefined);
  assert.deepEqual(h.egress_denied_by?.map((p) => p.kind), ["DefaultDeny"]);
});

test("an audit is Hubble's verdict AUDIT, a policy verdict event without a drop reason, its rule in the denied list", () => {
  const h = toHubbleFlow(dropFlow({ verdict: "AUDIT", type: "policy-verdict", direction: "egress" }));
  assert.equal(h.verdict, "AUDIT");
  assert.deepEqual(h.event_type, { type: 5, sub_type: 0 });
  assert.equal(h.drop_reason, undefined);
  assert.deepEqual(h.egress_denied_by?.map((p) => p.kind), ["DefaultDeny"]);
  // Read back: the verdict, the rule, and the policy drop that did not happen (from the policy: audit mode passes only those).
  const back = fromHubbleFlow(h);
  assert.deepEqual([back.verdict, back.type, back.decidedBy, back.dropReason], ["AUDIT", "policy-verdict", { kind: "default-deny" }, "policy denied (default deny)"]);
  const rule = { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deny-8081", rule: "spec.egressDeny[0]" } as const;
  const denied = dropFlow({ verdict: "AUDIT", type: "policy-verdict", dropReason: "policy denied", decidedBy: rule });
  assert.deepEqual(fromHubbleFlow(toHubbleFlow(denied)), JSON.parse(JSON.stringify(denied)));
});

test("the deciding rule lands in the allowed/denied list of the flow's direction, default deny included", () => {
  const allowedIn = toHubbleFlow(flow());
  assert.deepEqual(allowedIn.ingress_allowed_by?.[0]?.name, "allow-web");
  assert.equal(allowedIn.egress_allowed_by, undefined);
  const deniedOut = toHubbleFlow(dropFlow({ direction: "egress" }));
  assert.deepEqual(deniedOut.egress_denied_by?.map((p) => p.kind), ["DefaultDeny"]);
  assert.equal(deniedOut.ingress_denied_by, undefined);
  assert.deepEqual(deniedOut.event_type, { type: 1, sub_type: 133 });
  const trace = toHubbleFlow(flow({ type: "trace", decidedBy: undefined as never, direction: "egress" }));
  assert.deepEqual([trace.event_type.type, trace.trace_observation_point, trace.egress_allowed_by], [4, "FROM_ENDPOINT", undefined]);
  const v6 = toHubbleFlow(flow({ source: { ...flow().source, ip: "fd00::1", port: 0 }, destination: { ...flow().destination, port: 1 }, protocol: "ICMPv6" }));
  assert.equal(v6.IP.ipVersion, "IPv6");
  assert.deepEqual(v6.l4, { ICMPv6: { type: 1, code: 0 } });
});

test("a Hubble flow reads back as the flow it came from: every type, verdict, drop reason, decision, protocol", () => {
  const cases = [
    flow(),
    flow({ type: "trace", decidedBy: undefined as never, direction: "egress" }),
    flow({ protocol: "UDP", decidedBy: { kind: "rule", policyKind: "CiliumClusterwideNetworkPolicy", name: "cw", rule: "spec.egress[2]" }, direction: "egress" }),
    ...Object.values(DROP_REASONS).map((dropReason) => dropFlow({ dropReason })),
    dropFlow({ dropReason: "policy denied", decidedBy: { kind: "rule", policyKind: "NetworkPolicy", namespace: "shop", name: "deny", rule: "spec.ingressDeny[0]" } }),
    dropFlow({ protocol: "ICMPv6", icmpCode: 4, source: { ...flow().source, ip: "fd00::1", port: 0 }, destination: { ...flow().destination, ip: "fd00::2", port: 1 } }),
    dropFlow({ protocol: "ICMP", icmpCode: 0, source: { ...flow().source, port: 0 }, destination: { ...flow().destination, port: 8 } }),
    dropFlow({ protocol: "ICMP", icmpCode: 13, source: { ...flow().source, port: 0 }, destination: { ...flow().destination, port: 3 } }),
    flow({ protocol: "ICMP", icmpCode: 0, source: { ...flow().source, port: 8 }, destination: { ...flow().destination, port: 0 } }),
    flow({ tcpFlags: 0x12 }),
    dropFlow({ tcpFlags: 0 }),
    flow({ source: { ...flow().source, workloads: [{ kind: "Deployment", name: "client" }] }, destination: { ...flow().destination, workloads: [{ kind: "StatefulSet", name: "web" }] } }),
    flow({ protocol: "GRE", source: { ...flow().source, port: 0 }, destination: { ...flow().destination, port: 0 } }),
    dropFlow({ source: { identity: 2, labels: ["reserved:world"], ip: "1.2.3.4", port: 5 }, decidedBy: undefined as never, dropReason: "spoofed source" }),
    httpRequestFlow(),
    httpRequestFlow({ verdict: "DROPPED", dropReason: L7_DROP_REASON }),
    httpRequestFlow({ direction: "ingress", l7: { type: "RESPONSE", latencyNs: 2_000_000, http: { method: "POST", url: "http://a/b", protocol: "HTTP/1.1", code: 503 } } }),
    dnsResponseFlow(),
    dnsResponseFlow({ l7: { type: "RESPONSE", latencyNs: 9, dns: { query: "nope.", qtypes: ["A"], rcode: 3, observationSource: "proxy" } } }),
    dnsResponseFlow({ verdict: "DROPPED", dropReason: L7_DROP_REASON, l7: { type: "REQUEST", dns: { query: "evil.", qtypes: ["A"], observationSource: "proxy" } } }),
  ];
  for (const f of cases) {
    const clean = JSON.parse(JSON.stringify(f)) as typeof f;
    assert.deepEqual(fromHubbleFlow(toHubbleFlow(f)), clean, JSON.stringify(f));
  }
});

test("ICMP type from the datapath's ports: echo request (id → type), echo reply (type → id), other messages (0 → type)", () => {
  const icmp = (proto: "ICMP" | "ICMPv6", sport: number, dport: number) => toHubbleFlow(flow({ protocol: proto, source: { ...flow().source, port: sport }, destination: { ...flow().destination, port: dport } })).l4;
  assert.deepEqual(icmp("ICMP", 4242, 8), { ICMPv4: { type: 8, code: 0 } });
  assert.deepEqual(icmp("ICMP", 8, 4242), { ICMPv4: { type: 0, code: 0 } });
  assert.deepEqual(icmp("ICMP", 0, 3), { ICMPv4: { type: 3, code: 0 } });
  assert.deepEqual(icmp("ICMPv6", 77, 128), { ICMPv6: { type: 128, code: 0 } });
  assert.deepEqual(icmp("ICMPv6", 128, 77), { ICMPv6: { type: 129, code: 0 } });
  assert.deepEqual(icmp("ICMPv6", 0, 1), { ICMPv6: { type: 1, code: 0 } });
  // The code is the datapath's: destination unreachable, port (3/3) and communication administratively prohibited (3/13).
  const unreachable = (code: number) => toHubbleFlow(flow({ protocol: "ICMP", icmpCode: code, source: { ...flow().source, port: 0 }, destination: { ...flow().destination, port: 3 } })).l4;
  assert.deepEqual(unreachable(3), { ICMPv4: { type: 3, code: 3 } });
  assert.deepEqual(unreachable(13), { ICMPv4: { type: 3, code: 13 } });
  // The echo id is not part of Hubble's flow: a request reads back without it.
  assert.deepEqual([fromHubbleFlow(toHubbleFlow(flow({ protocol: "ICMP", source: { ...flow().source, port: 4242 }, destination: { ...flow().destination, port: 8 } }))).source.port], [0]);
});

test("an endpoint's workloads are Hubble's Endpoint.workloads; none when the pod has none", () => {
  const h = toHubbleFlow(flow({ destination: { ...flow().destination, workloads: [{ kind: "Deployment", name: "web" }] } }));
  assert.deepEqual(h.destination.workloads, [{ kind: "Deployment", name: "web" }]);
  assert.equal(h.source.workloads, undefined);
});

test("TCP flags are Hubble's TCPFlags (only the flags set), read back as the flags byte", () => {
  assert.deepEqual(toHubbleFlow(flow({ tcpFlags: 0x12 })).l4, { TCP: { source_port: 40000, destination_port: 80, flags: { SYN: true, ACK: true } } });
  assert.deepEqual(toHubbleFlow(flow({ tcpFlags: 0x11 })).l4?.TCP?.flags, { FIN: true, ACK: true });
  assert.deepEqual(toHubbleFlow(flow()).l4, { TCP: { source_port: 40000, destination_port: 80 } }, "a flow without flags has none");
  assert.equal(fromHubbleFlow(toHubbleFlow(flow({ tcpFlags: 0xff }))).tcpFlags, 0xff);
});

test("a pod's cluster is Hubble's cluster_name, read from its identity's cluster label; the world has none", () => {
  const h = toHubbleFlow(flow({ source: { ...flow().source, labels: ["k8s:app=client", "k8s:io.cilium.k8s.policy.cluster=east"] } }));
  assert.equal(h.source.cluster_name, "east");
  assert.equal(h.destination.cluster_name, undefined);
  assert.equal(toHubbleFlow(dropFlow({ source: { identity: 2, labels: ["reserved:world"], ip: "1.2.3.4", port: 5 } })).source.cluster_name, undefined);
});

test("an L7 flow is Hubble's L7 type (access log event 129) with its record, Cilium's summary, is_reply for a response, and the rule in the list of its verdict", () => {
  const denied = toHubbleFlow(httpRequestFlow({ verdict: "DROPPED", dropReason: L7_DROP_REASON }));
  assert.deepEqual([denied.Type, denied.event_type, denied.verdict, denied.drop_reason_desc, denied.is_reply], ["L7", { type: 129, sub_type: 0 }, "DROPPED", "POLICY_DENIED", { value: false }]);
  assert.deepEqual(denied.egress_denied_by?.map((p) => p.name), ["l7-web"]);
  assert.equal(denied.Summary, "HTTP/1.1 GET http://web.shop/public/x");
  assert.deepEqual(denied.l7, { type: "REQUEST", http: { method: "GET", url: "http://web.shop/public/x", protocol: "HTTP/1.1" } });
  const answer = toHubbleFlow(dnsResponseFlow());
  assert.deepEqual([answer.is_reply, answer.l4], [{ value: true }, { UDP: { source_port: 53, destination_port: 40001 } }]);
  assert.equal(answer.Summary, 'DNS Answer "192.0.2.1,192.0.2.2" TTL: 0 (Proxy api.example.com. A)');
  assert.equal(toHubbleFlow(dnsResponseFlow({ l7: { type: "RESPONSE", dns: { query: "nope.", qtypes: ["A"], rcode: 3 } } })).Summary, "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query nope. A)");
  assert.equal(toHubbleFlow(httpRequestFlow({ l7: { type: "RESPONSE", latencyNs: 12_600_000, http: { method: "GET", url: "http://a/", protocol: "HTTP/1.1", code: 200 } } })).Summary, "HTTP/1.1 200 12ms (GET http://a/)");
});
