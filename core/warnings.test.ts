// Warnings for legal but risky policies: which policies get which warning, and which do not.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parsePolicyObject } from "./parser/index.ts";
import { formatWarning, policyWarnings } from "./warnings.ts";

function warningsFor(spec: Record<string, unknown>): string[] {
  const parsed = parsePolicyObject({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "p", namespace: "default" },
    spec: { endpointSelector: { matchLabels: { app: "web" } }, ...spec },
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return policyWarnings(parsed.value).map(formatWarning);
}

const tcp = (port: string, endPort?: number) => ({ ports: [{ port, protocol: "TCP", ...(endPort ? { endPort } : {}) }] });

describe("policy warnings", () => {
  it("warns about toFQDNs in a policy without any DNS rule, and not when one is there", () => {
    const fqdn = { toFQDNs: [{ matchName: "api.github.com" }], toPorts: [tcp("443")] };
    const warned = warningsFor({ egress: [fqdn] }).filter((w) => w.includes("no DNS rule"));
    assert.deepEqual(warned, [
      "spec.egress[0].toFQDNs: no DNS rule (toPorts[].rules.dns, e.g. to kube-dns on port 53) in this policy: toFQDNs learns addresses only from lookups the DNS proxy sees, so unless another policy selecting the same pods has one, these names never allow an address",
    ]);
    const dns = {
      toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
      toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }],
    };
    assert.deepEqual(warningsFor({ egress: [dns, fqdn] }).filter((w) => w.includes("no DNS rule")), []);
  });

  it("warns about an allow to world or all on every port, in both directions", () => {
    assert.deepEqual(warningsFor({ egress: [{ toEntities: ["world"] }] }), [
      'spec.egress[0]: allows every port and protocol to entity "world"; restrict it with toPorts if that is not intended',
    ]);
    assert.deepEqual(warningsFor({ ingress: [{ fromEntities: ["all"] }] }), [
      'spec.ingress[0]: allows every port and protocol from entity "all"; restrict it with toPorts if that is not intended',
    ]);
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["0.0.0.0/0"] }] }), [
      "spec.egress[0]: allows every port and protocol to CIDR 0.0.0.0/0; restrict it with toPorts if that is not intended",
    ]);
  });

  it("does not warn about world on a listed port, or about the cluster entity", () => {
    assert.deepEqual(warningsFor({ egress: [{ toEntities: ["world"], toPorts: [tcp("443")] }] }), []);
    assert.deepEqual(warningsFor({ egress: [{ toEntities: ["cluster"] }] }), []);
  });

  it("warns about an allow that a deny of the same policy covers completely", () => {
    assert.deepEqual(
      warningsFor({
        egress: [{ toCIDR: ["10.1.0.0/16"], toPorts: [tcp("8000", 8080)] }],
        egressDeny: [{ toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["10.200.0.0/16"] }], toPorts: [tcp("7000", 9000)] }],
      }),
      ["spec.egress[0]: never takes effect: spec.egressDeny[0] denies every peer and port it allows (deny wins)"],
    );
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["2001:db8:1::/48"] }], egressDeny: [{ toCIDR: ["2001:db8::/32"] }] }), [
      "spec.egress[0]: never takes effect: spec.egressDeny[0] denies every peer and port it allows (deny wins)",
    ]);
    assert.deepEqual(
      warningsFor({
        ingress: [{ fromEndpoints: [{ matchLabels: { app: "a", tier: "x" } }], toPorts: [tcp("80")] }],
        ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: "a" } }] }],
      }),
      ["spec.ingress[0]: never takes effect: spec.ingressDeny[0] denies every peer and port it allows (deny wins)"],
    );
  });

  it("does not warn when the deny covers only part of the allow", () => {
    // Deny on fewer ports, an except that cuts into the allow, a narrower CIDR or one of the other family, a narrower selector, the other direction.
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["10.1.0.0/16"] }], egressDeny: [{ toCIDR: ["10.0.0.0/8"], toPorts: [tcp("22")] }] }), []);
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["10.0.0.0/8"] }], egressDeny: [{ toCIDR: ["10.1.0.0/16"] }] }), []);
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["10.0.0.0/8"] }], egressDeny: [{ toCIDR: ["::/0"] }] }), []);
    assert.deepEqual(warningsFor({ egress: [{ toCIDR: ["2001:db8::/64"] }], egressDeny: [{ toCIDR: ["0.0.0.0/0"] }] }), []);
    assert.deepEqual(
      warningsFor({ egress: [{ toCIDR: ["10.1.0.0/16"], toPorts: [tcp("80")] }], egressDeny: [{ toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["10.1.2.0/24"] }] }] }),
      [],
    );
    assert.deepEqual(
      warningsFor({
        ingress: [{ fromEndpoints: [{ matchLabels: { app: "a" } }], toPorts: [tcp("80")] }],
        ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: "a", tier: "x" } }] }],
      }),
      [],
    );
    assert.deepEqual(warningsFor({ ingress: [{ fromEntities: ["world"], toPorts: [tcp("80")] }], egressDeny: [{ toEntities: ["world"] }] }), []);
  });

  it("warns about DNS rules on a port other than 53", () => {
    const dns = (port: string) => ({
      egress: [{ toEndpoints: [{}], toPorts: [{ ports: [{ port, protocol: "UDP" }], rules: { dns: [{ matchPattern: "*" }] } }] }],
    });
    // DNS rules are enforced by the agents' DNS proxy: no "not enforced" warning (the status names nodes without one).
    assert.deepEqual(warningsFor(dns("53")), []);
    assert.deepEqual(warningsFor(dns("5353")), [
      "spec.egress[0].toPorts[0]: DNS rules on port 5353, not 53: DNS is only inspected on the listed port, so it must be the port your DNS server listens on",
    ]);
  });

  it("HTTP rules are enforced by the agents' L7 proxy (no warning: the status names nodes without one); toFQDNs without a DNS rule is warned by its path", () => {
    assert.deepEqual(
      warningsFor({
        egress: [
          { toEndpoints: [{}], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] },
          { toFQDNs: [{ matchName: "example.com" }] },
        ],
      }),
      [
        "spec.egress[1].toFQDNs: no DNS rule (toPorts[].rules.dns, e.g. to kube-dns on port 53) in this policy: toFQDNs learns addresses only from lookups the DNS proxy sees, so unless another policy selecting the same pods has one, these names never allow an address",
      ],
    );
  });

  it("warns about selector keys no Cilium source produces, but not about negations of them", () => {
    assert.deepEqual(warningsFor({ ingress: [{ fromEndpoints: [{ matchLabels: { "k8s:io.cilium.k8s.policy.serviceacount": "x" } }] }] }), [
      'spec.ingress[0]: label key "io.cilium.k8s.policy.serviceacount" is not one Cilium sets (io.cilium.k8s.policy.cluster, io.cilium.k8s.policy.serviceaccount, io.cilium.k8s.policy.name, io.cilium.k8s.policy.namespace, io.cilium.k8s.policy.uid, io.cilium.k8s.policy.derived-from): the selector matches nothing',
    ]);
    assert.deepEqual(
      warningsFor({ ingress: [{ fromEndpoints: [{ matchExpressions: [{ key: "reserved:nope", operator: "DoesNotExist" }] }] }] }),
      [],
    );
    assert.deepEqual(warningsFor({ ingress: [{ fromEndpoints: [{ matchLabels: { "k8s:app": "a", "io.kubernetes.pod.namespace": "x" } }] }] }), []);
  });

  it("admits fromRequires/toRequires, still enforced, with a warning that Cilium 1.19 removed them", () => {
    const spec = {
      ingress: [{ fromRequires: [{ matchLabels: { env: "prod" } }] }, { fromEndpoints: [{ matchLabels: { role: "fe" } }] }],
      egress: [{ toRequires: [{ matchLabels: { env: "prod" } }] }, { toEndpoints: [{}] }],
    };
    assert.deepEqual(warningsFor(spec), [
      "spec.ingress[0].fromRequires: fromRequires is deprecated: Cilium 1.19 removed it (cilium/cilium#42615); Membrane still enforces it, but add its labels to the peer selectors of the policy's ingress rules instead",
      "spec.egress[0].toRequires: toRequires is deprecated: Cilium 1.19 removed it (cilium/cilium#42615); Membrane still enforces it, but add its labels to the peer selectors of the policy's egress rules instead",
    ]);
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: { endpointSelector: {}, ...spec },
    });
    assert.ok(parsed.ok);
    assert.deepEqual(
      parsed.value[0]!.rules.map((r) => r.requires.length),
      [1, 0, 1, 0],
      "the requirements stay in the model the compiler enforces",
    );
  });

  it("admits toServices entries that select nothing, warning at the entry, and the rule then allows nothing", () => {
    assert.deepEqual(warningsFor({ egress: [{ toServices: [] }] }), [
      "spec.egress[0].toServices: an empty list selects no Service, so this rule matches nothing: list services such as {k8sService: {serviceName: db}}, or remove the field",
    ]);
    assert.deepEqual(warningsFor({ egress: [{ toServices: [{ k8sService: { serviceName: "db" } }, {}] }] }), [
      "spec.egress[0].toServices[1]: names no Service, so it selects nothing: set k8sService (serviceName, namespace) or k8sServiceSelector (selector, namespace)",
    ]);
    for (const rule of [{ toServices: [] }, { toServices: [{}] }, { toServices: [], toPorts: [tcp("443")] }]) {
      const parsed = parsePolicyObject({
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "p", namespace: "default" },
        spec: { endpointSelector: {}, egress: [rule] },
      });
      assert.ok(parsed.ok, JSON.stringify(rule));
      const [p] = parsed.value;
      assert.deepEqual(p!.rules[0]!.peers, [], `${JSON.stringify(rule)} must select no peer (never every peer)`);
      assert.deepEqual(p!.defaultDeny, { ingress: false, egress: true }, "the subject is still in egress default deny");
    }
  });
});

function hostWarningsFor(spec: Record<string, unknown>): string[] {
  const parsed = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "host-fw" }, spec: { nodeSelector: {}, ...spec } });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return policyWarnings(parsed.value).map(formatWarning);
}

it("a host policy that denies everything in ingress warns that it would cut the overlay, WireGuard, health checks and the API server between nodes, and that the lock-out guard keeps them", () => {
  const w = hostWarningsFor({ ingress: [{ fromEntities: ["world"], toPorts: [{ ports: [{ port: "22", protocol: "TCP" }] }] }] });
  const lock = w.find((x) => x.startsWith("spec.ingress: this host policy makes the node default-deny in ingress"));
  assert.ok(lock, JSON.stringify(w));
  for (const what of ["VXLAN, UDP 8472", "WireGuard, UDP 51871", "ICMP echo", "TCP 6443"]) assert.ok(lock.includes(what), what);
  assert.match(lock, /lock-out guard keeps these open anyway/);
});

it("a host policy that allows the cluster's nodes everything, or all peers, gets no lock-out warning; a pod policy never does", () => {
  assert.ok(!hostWarningsFor({ ingress: [{ fromEntities: ["remote-node"] }] }).some((x) => x.includes("lock-out guard")));
  const onlyVxlan = hostWarningsFor({ ingress: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: "8472", protocol: "UDP" }] }] }] });
  const w = onlyVxlan.find((x) => x.includes("lock-out guard"));
  assert.ok(w && !w.includes("VXLAN") && w.includes("WireGuard"), "only what is not allowed is named");
  assert.ok(!hostWarningsFor({ ingress: [{ fromEntities: ["all"] }] }).some((x) => x.includes("lock-out guard")));
  assert.ok(!warningsFor({ ingress: [{ fromEntities: ["world"] }] }).some((x) => x.includes("lock-out guard")));
});

it("with the policy secrets namespace known, a TLS rule's Secret named elsewhere (or defaulted to the policy's namespace) is warned about at its field; one there is not", () => {
  const parsed = parsePolicyObject({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "p", namespace: "shop" },
    spec: {
      endpointSelector: { matchLabels: { app: "web" } },
      egress: [
        {
          toEntities: ["world"],
          toPorts: [
            {
              ports: [{ port: "443", protocol: "TCP" }],
              terminatingTLS: { secret: { name: "front" } },
              originatingTLS: { secret: { namespace: "membrane-secrets", name: "outside-ca" } },
              rules: { http: [{ method: "GET" }] },
            },
          ],
        },
      ],
    },
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const tls = (w: string[]): string[] => w.filter((x) => x.includes("TLS"));
  assert.deepEqual(tls(policyWarnings(parsed.value, { policySecretsNamespace: "membrane-secrets" }).map(formatWarning)), [
    "spec.egress[0].toPorts[0].terminatingTLS: Secret shop/front is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets (name it with secret.namespace: membrane-secrets): connections to the port are refused",
  ]);
  assert.deepEqual(tls(policyWarnings(parsed.value).map(formatWarning)), [], "without the namespace known, nothing is said about Secrets");
});
