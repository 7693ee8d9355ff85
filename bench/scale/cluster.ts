// The simulated cluster's policies: a mix of CNP (half), NetworkPolicy (three in ten) and CCNP (two in ten) with label selectors, namespace selectors, CIDRs with excepts, ports and entities, spread over the apps and namespaces the pods use.

/** The size of the simulated cluster. */
export interface ScaleShape {
  readonly nodes: number;
  readonly pods: number;
  /** Distinct security label sets: namespace × app label. */
  readonly identities: number;
  readonly policies: number;
  readonly namespaces: number;
}

/** One object to POST: its collection path and body. */
export interface ScaleObject {
  readonly path: string;
  readonly body: Record<string, unknown>;
}

/** The apps (values of the `app` label) per namespace. */
export const appsPerNamespace = (s: ScaleShape): number => Math.ceil(s.identities / s.namespaces);

export function scalePolicies(s: ScaleShape): ScaleObject[] {
  const apps = appsPerNamespace(s);
  const out: ScaleObject[] = [];
  for (let j = 0; j < s.policies; j++) {
    const ns = `ns-${j % s.namespaces}`;
    const app = `app-${j % apps}`;
    const peer = `app-${(j + 1) % apps}`;
    const port = 8000 + (j % 1000);
    const net = j % 250;
    const kind = j % 10;
    if (kind < 5) {
      out.push({
        path: `/apis/cilium.io/v2/namespaces/${ns}/ciliumnetworkpolicies`,
        body: {
          apiVersion: "cilium.io/v2",
          kind: "CiliumNetworkPolicy",
          metadata: { name: `cnp-${j}`, namespace: ns },
          spec: {
            endpointSelector: { matchLabels: { app } },
            ingress: [
              { fromEndpoints: [{ matchLabels: { app: peer } }], toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] },
              { fromEntities: ["host", "remote-node"] },
            ],
            egress: [
              { toCIDR: [`198.18.${net}.0/24`], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
              { toEndpoints: [{ matchExpressions: [{ key: "app", operator: "In", values: [peer, `app-${(j + 2) % apps}`] }] }] },
              { toEntities: ["kube-apiserver"] },
            ],
          },
        },
      });
    } else if (kind < 8) {
      out.push({
        path: `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`,
        body: {
          apiVersion: "networking.k8s.io/v1",
          kind: "NetworkPolicy",
          metadata: { name: `np-${j}`, namespace: ns },
          spec: {
            podSelector: { matchLabels: { app } },
            policyTypes: ["Ingress", "Egress"],
            ingress: [
              {
                from: [{ namespaceSelector: { matchLabels: { team: `team-${j % 5}` } }, podSelector: { matchLabels: { app: peer } } }, { ipBlock: { cidr: `192.168.${net}.0/24`, except: [`192.168.${net}.128/25`] } }],
                ports: [{ protocol: "TCP", port: 5432 }, { protocol: "TCP", port: 6000, endPort: 6010 }],
              },
            ],
            egress: [{ to: [{ namespaceSelector: {} }], ports: [{ protocol: "UDP", port: 53 }] }],
          },
        },
      });
    } else {
      out.push({
        path: `/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies`,
        body: {
          apiVersion: "cilium.io/v2",
          kind: "CiliumClusterwideNetworkPolicy",
          metadata: { name: `ccnp-${j}` },
          spec: {
            endpointSelector: { matchExpressions: [{ key: "app", operator: "In", values: [app, peer] }] },
            ingress: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: String(port), protocol: "TCP" }] }] }],
            egress: [{ toEntities: ["world"], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }, { port: "443", protocol: "TCP" }] }] }],
          },
        },
      });
    }
  }
  return out;
}
