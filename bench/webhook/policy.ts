// The benchmark's policy: a realistic, valid CiliumNetworkPolicy that exercises every kind of check the webhook makes.
/** A policy like the ones users write: several rules, selectors, ports, CIDRs, FQDNs, DNS and HTTP rules. */
export const POLICY = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "checkout", namespace: "shop", uid: "5d0c1e9e-0000-4000-8000-000000000001", generation: 3 },
  spec: {
    description: "checkout service: callers, its database, payment provider, DNS",
    endpointSelector: { matchLabels: { app: "checkout", tier: "backend" } },
    ingress: [
      {
        fromEndpoints: [
          { matchLabels: { app: "frontend" } },
          { matchExpressions: [{ key: "k8s:io.kubernetes.pod.namespace", operator: "In", values: ["shop", "shop-canary"] }] },
        ],
        toPorts: [
          {
            ports: [{ port: "8080", protocol: "TCP" }],
            rules: {
              http: [
                { method: "POST", path: "/api/v1/checkout(/.*)?" },
                { method: "GET", path: "/healthz", headers: ["X-Probe: true"] },
              ],
            },
          },
        ],
      },
      { fromEntities: ["host"], toPorts: [{ ports: [{ port: "9090", protocol: "TCP" }] }] },
    ],
    egress: [
      {
        toEndpoints: [{ matchLabels: { app: "postgres", "k8s:io.kubernetes.pod.namespace": "shop" } }],
        toPorts: [{ ports: [{ port: "5432", protocol: "TCP" }] }],
      },
      {
        toFQDNs: [{ matchName: "api.payments.example.com" }, { matchPattern: "*.stripe.com" }],
        toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }],
      },
      { toCIDRSet: [{ cidr: "10.20.0.0/16", except: ["10.20.99.0/24"] }], toPorts: [{ ports: [{ port: "6000", endPort: 6100, protocol: "TCP" }] }] },
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.example.com" }, { matchName: "api.payments.example.com" }] } }],
      },
    ],
    egressDeny: [{ toCIDR: ["169.254.169.254/32"] }],
  },
};
