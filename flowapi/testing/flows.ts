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
