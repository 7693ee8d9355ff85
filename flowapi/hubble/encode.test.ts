// The agent's own protobuf encoder writes exactly the bytes protobufjs (grpc's proto-loader) writes for the same message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeGetFlowsResponse, ProtoEncoder } from "./encode.ts";
import { hubbleApi } from "./proto.ts";
import { toHubbleFlow } from "./flow.ts";
import { dnsResponseFlow, dropFlow, endpoint, flow, httpRequestFlow } from "../testing/flows.ts";
import type { GetFlowsResponse, HubbleFlow } from "./types.ts";
import type { Flow } from "../flow.ts";

const protobufjs = (r: object): Buffer => hubbleApi().service.GetFlows!.responseSerialize(r);
const decode = (b: Buffer): GetFlowsResponse => hubbleApi().service.GetFlows!.responseDeserialize(b) as GetFlowsResponse;

function response(f: HubbleFlow): GetFlowsResponse {
  return { flow: f, node_name: f.node_name ?? "", time: f.time! };
}

const labels = Object.freeze(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop", "k8s:io.cilium.k8s.policy.serviceaccount=default"]);
const flows: Flow[] = [
  flow(),
  dropFlow(),
  flow({ direction: "egress", type: "trace", decidedBy: undefined }),
  flow({ verdict: "AUDIT", type: "policy-verdict", dropReason: "policy denied", decidedBy: { kind: "rule", policyKind: "CiliumClusterwideNetworkPolicy", name: "deny-all", rule: "spec.egressDeny[0]" } }),
  dropFlow({ dropReason: "spoofed source", decidedBy: undefined, protocol: "UDP" }),
  flow({ protocol: "ICMP", source: endpoint({ port: 8 }), destination: endpoint({ port: 0, identity: 2, labels: ["reserved:world"], namespace: undefined, pod: undefined }) }),
  flow({ protocol: "ICMPv6", source: endpoint({ ip: "fd00::1", port: 0 }), destination: endpoint({ ip: "fd00::2", port: 128 }) }),
  flow({ protocol: "IP protocol 47" }),
  flow({ protocol: "SCTP", time: "2026-12-04T05:06:07.891Z", source: endpoint({ labels, pod: "ünïcode-pod", port: 65535 }) }),
  flow({ destination: endpoint({ labels: Object.freeze(Array.from({ length: 60 }, (_, i) => `k8s:label-${i}=${"v".repeat(i)}`)) }) }),
  httpRequestFlow(),
  httpRequestFlow({ verdict: "DROPPED", dropReason: "policy denied (L7)" }),
  httpRequestFlow({ l7: { type: "RESPONSE", latencyNs: 3_000_000_000, http: { method: "PUT", url: "http://x/y", protocol: "HTTP/1.1", code: 403 } } }),
  dnsResponseFlow(),
  dnsResponseFlow({ l7: { type: "RESPONSE", latencyNs: 5, dns: { query: "nope.", qtypes: ["AAAA"], rcode: 3 } } }),
  // An address the DNS proxy learned names for (Hubble's destination_names / source_names).
  flow({ direction: "egress", destination: endpoint({ identity: 16777217, labels: ["fqdn:api.github.com"], namespace: undefined, pod: undefined, names: ["api.github.com", "github.com"] }) }),
  flow({ nodeLabels: Object.freeze(["kubernetes.io/hostname=node-a", "topology.kubernetes.io/zone=zone-a"]) }),
];

test("every kind of flow the agent serves encodes to protobufjs' bytes, and decodes back to the same flow", () => {
  for (const f of flows) {
    const r = response(toHubbleFlow(f));
    const ours = encodeGetFlowsResponse(r);
    assert.deepEqual(ours, protobufjs(r), `flow ${JSON.stringify(f)}`);
    assert.deepEqual(decode(ours), decode(protobufjs(r)));
  }
});

test("a frozen label list is written from its cached bytes in later messages, still protobufjs' bytes", () => {
  const f = toHubbleFlow(flow({ source: endpoint({ labels }) }));
  const first = encodeGetFlowsResponse(response(f));
  const again = encodeGetFlowsResponse(response({ ...f, source: { ...f.source!, pod_name: "other-pod" } }));
  assert.deepEqual(first, protobufjs(response(f)));
  assert.deepEqual(again, protobufjs(response({ ...f, source: { ...f.source!, pod_name: "other-pod" } })));
});

test("scalars protobufjs writes specially: negative int32, zero values set explicitly, unknown enum names, big lengths", () => {
  const enc = new ProtoEncoder(hubbleApi().definition);
  const plan = enc.plan("flow.Flow");
  const cases: object[] = [
    { verdict: "DROPPED", drop_reason: 0, is_reply: { value: false }, event_type: { type: -1, sub_type: -129 } },
    { verdict: "NOT_A_VERDICT", Summary: "x".repeat(300), node_labels: [] },
    { Summary: "é".repeat(50), policy_match_type: 4294967295, socket_cookie: 2 ** 40, cgroup_id: 0 },
    { time: { seconds: 1_764_000_000, nanos: 999_000_000 }, source: { identity: 4294967295, labels: ["a".repeat(200)] } },
  ];
  for (const m of cases) assert.deepEqual(enc.encode(plan, m), hubbleApi().definition["flow.Flow"] && (hubbleApi().definition["flow.Flow"] as { serialize: (o: object) => Buffer }).serialize(m), JSON.stringify(m));
});

test("a type the .proto files do not have is an error naming it", () => {
  const enc = new ProtoEncoder(hubbleApi().definition);
  assert.throws(() => enc.plan("flow.NoSuchMessage"), /flow\.NoSuchMessage is not a message/);
});
