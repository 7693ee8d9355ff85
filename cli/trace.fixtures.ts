// Objects for the trace tests: four pods in two namespaces, an allow CNP, a cluster-wide deny, a NetworkPolicy and a CNP with HTTP rules.
import type { TraceCluster } from "./trace.ts";

export const TRACE_CLUSTER: TraceCluster = {
  namespaces: [{ metadata: { name: "default" } }, { metadata: { name: "shop", labels: { team: "shop" } } }],
  pods: [
    { metadata: { name: "client", namespace: "default", labels: { app: "client" } } },
    { metadata: { name: "web", namespace: "shop", labels: { app: "web" } } },
    { metadata: { name: "db", namespace: "shop", labels: { app: "db" }, annotations: { "membrane.io/identity": "4242" } } },
    { metadata: { name: "api", namespace: "shop", labels: { app: "api" } } },
  ],
  policies: [
    {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "allow-web", namespace: "shop" },
      spec: {
        endpointSelector: { matchLabels: { app: "web" } },
        ingress: [{ fromEndpoints: [{ matchLabels: { app: "client", "k8s:io.kubernetes.pod.namespace": "default" } }] }],
      },
    },
    {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "no-admin-port" },
      spec: {
        endpointSelector: {},
        ingressDeny: [{ fromEntities: ["all"], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] }],
      },
    },
    {
      // The client's requests meet two HTTP rules; the web pod is allowed on the port without L7 rules.
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "api-http", namespace: "shop" },
      spec: {
        endpointSelector: { matchLabels: { app: "api" } },
        ingress: [
          {
            fromEndpoints: [{ matchLabels: { app: "client", "k8s:io.kubernetes.pod.namespace": "default" } }],
            toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/public/.*" }, { method: "POST", path: "/orders", headers: ["X-Token: t1"] }] } }],
          },
          { fromEndpoints: [{ matchLabels: { app: "web" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] },
        ],
      },
    },
    {
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "db-from-web", namespace: "shop" },
      spec: {
        podSelector: { matchLabels: { app: "db" } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: "web" } } }], ports: [{ port: 5432 }] }],
      },
    },
  ],
};
