// Synthetic flows for the observer's tests.
import type { Flow, FlowEndpoint } from "../flow.ts";

export function endpoint(over: Partial<FlowEndpoint> = {}): FlowEndpoint {
  return { identity: 256, labels: ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"], namespace: "default", pod: "client-1", ip: "10.0.0.1", port: 40000, ...over };
}

export function flow(over: Partial<Flow> = {}): Flow {
  return {
    time: "2026-01-01T00:00:00.000Z",
    verdict: "FORWARDED",
    type: "policy-verdict",
    direction: "ingress",
    source: endpoint(),
    destination: endpoint({ identity: 300, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"], namespace: "shop", pod: "web-0", ip: "10.0.1.5", port: 80 }),
    protocol: "TCP",
    decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "allow-web", rule: "spec.ingress[0]" },
    node: "node-a",
    ...over,
  };
}

export function dropFlow(over: Partial<Flow> = {}): Flow {
  return flow({ verdict: "DROPPED", type: "drop", dropReason: "policy denied (default deny)", decidedBy: { kind: "default-deny" }, ...over });
}

/** A proxy's HTTP request (`type: "l7"`), egress from the client, named by the rule that sent it to the proxy. */
export function httpRequestFlow(over: Partial<Flow> = {}): Flow {
  return flow({
    type: "l7",
    direction: "egress",
    l7: { type: "REQUEST", http: { method: "GET", url: "http://web.shop/public/x", protocol: "HTTP/1.1" } },
    decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "l7-web", rule: "spec.egress[0]" },
    ...over,
  });
}

/** A DNS proxy's answer (`type: "l7"` response) from the server back to the pod. */
export function dnsResponseFlow(over: Partial<Flow> = {}): Flow {
  return flow({
    type: "l7",
    direction: "egress",
    protocol: "UDP",
    source: endpoint({ identity: 300, labels: ["k8s:k8s-app=kube-dns"], namespace: "kube-system", pod: "dns-0", ip: "10.0.1.53", port: 53 }),
    destination: endpoint({ port: 40001 }),
    l7: { type: "RESPONSE", latencyNs: 1_250_000, dns: { query: "api.example.com.", qtypes: ["A"], ips: ["192.0.2.1", "192.0.2.2"], rcode: 0, rrtypes: ["A", "A"], observationSource: "proxy" } },
    decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "dns", rule: "spec.egress[1]" },
    ...over,
  });
}
