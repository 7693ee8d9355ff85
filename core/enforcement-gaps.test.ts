// Which rules of a policy are reported as not enforced yet (L7, DNS, toFQDNs), by field path, and which are not.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parsePolicyObject } from "./parser/index.ts";
import { describeGaps, enforcementGaps } from "./enforcement-gaps.ts";

function gapsOf(object: Record<string, unknown>): string[] {
  const parsed = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "p", namespace: "default" }, ...object });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return enforcementGaps(parsed.value).map((g) => g.path);
}

const web = { matchLabels: { app: "web" } };
const http = { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/public/.*" }] } };
const dns = { ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } };

describe("enforcement gaps", () => {
  it("an L4-only policy has none", () => {
    assert.deepEqual(gapsOf({ spec: { endpointSelector: web, ingress: [{ fromEndpoints: [web], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] } }), []);
  });

  it("names HTTP and DNS rules by their toPorts path, and toFQDNs by its rule", () => {
    const paths = gapsOf({
      spec: {
        endpointSelector: web,
        ingress: [{ toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }, http] }],
        egress: [
          { toEndpoints: [{}], toPorts: [dns] },
          { toFQDNs: [{ matchName: "example.com" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
        ],
      },
    });
    assert.deepEqual(paths, [
      "spec.ingress[0].toPorts[1].rules.http",
      "spec.egress[0].toPorts[0].rules.dns",
      "spec.egress[1].toFQDNs",
    ]);
  });

  it("toFQDNs with HTTP rules of their own are enforced through the L7 proxy where both proxies run; serverNames or TLS inspection with toFQDNs are named (they fail closed), not the plain port", () => {
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: {
        endpointSelector: web,
        egress: [
          {
            toFQDNs: [{ matchName: "example.com" }],
            toPorts: [
              { ports: [{ port: "443", protocol: "TCP" }] },
              http,
              { ports: [{ port: "8443", protocol: "TCP" }], serverNames: ["example.com"] },
              { ...http, ports: [{ port: "9443", protocol: "TCP" }], originatingTLS: { secret: { name: "ca" } } },
            ],
          },
        ],
      },
    });
    assert.ok(parsed.ok);
    const closed = "not enforced yet with toFQDNs: the names' addresses are not allowed on the port (fails closed)";
    assert.deepEqual(
      enforcementGaps(parsed.value, { withoutDnsProxy: [], withoutL7Proxy: [] }).map((g) => [g.path, g.effect]),
      [
        ["spec.egress[0].toPorts[2].serverNames", closed],
        ["spec.egress[0].toPorts[3].rules.http", closed],
      ],
    );
    assert.deepEqual(
      enforcementGaps(parsed.value, { withoutDnsProxy: [], withoutL7Proxy: ["n2"] }).map((g) => g.path),
      ["spec.egress[0].toPorts[1].rules.http", "spec.egress[0].toPorts[2].serverNames", "spec.egress[0].toPorts[3].rules.http"],
      "a node without the L7 proxy: the HTTP rules are named as for any peer",
    );
  });

  it("uses the specs[i] paths of a multi-spec policy", () => {
    const paths = gapsOf({ specs: [{ endpointSelector: web, ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }, { endpointSelector: web, ingress: [{ toPorts: [http] }] }] });
    assert.deepEqual(paths, ["specs[1].ingress[0].toPorts[0].rules.http"]);
  });

  it("the description says what happens instead: every request passes, or the FQDN traffic stays denied", () => {
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: { endpointSelector: web, egress: [{ toEndpoints: [web], toPorts: [http] }, { toFQDNs: [{ matchPattern: "*.example.com" }] }] },
    });
    assert.ok(parsed.ok);
    assert.equal(
      describeGaps(enforcementGaps(parsed.value)),
      "spec.egress[0].toPorts[0].rules.http: not enforced yet: the port is allowed for every request; " +
        "spec.egress[1].toFQDNs: not enforced yet: no DNS proxy learns the names' addresses, so it allows nothing",
    );
  });

  it("DNS rules and toFQDNs are enforced where every node concerned runs the DNS proxy, and the others are named", () => {
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: { endpointSelector: web, egress: [{ toEndpoints: [{}], toPorts: [dns] }, { toFQDNs: [{ matchName: "example.com" }] }, { toEndpoints: [web], toPorts: [http] }] },
    });
    assert.ok(parsed.ok);
    assert.deepEqual(
      enforcementGaps(parsed.value, { withoutDnsProxy: [] }).map((g) => g.path),
      ["spec.egress[2].toPorts[0].rules.http"],
      "HTTP rules are the L7 proxy's, not the DNS proxy's",
    );
    assert.equal(
      describeGaps(enforcementGaps(parsed.value, { withoutDnsProxy: ["n2"] }).filter((g) => !g.path.endsWith("http"))),
      "spec.egress[0].toPorts[0].rules.dns: not enforced on n2 (no DNS proxy runs there): every DNS query on the port is allowed; " +
        "spec.egress[1].toFQDNs: not enforced on n2 (no DNS proxy runs there): no DNS proxy learns the names' addresses, so it allows nothing",
    );
  });

  it("HTTP rules are enforced where every node concerned runs the L7 proxy, and the others are named", () => {
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: { endpointSelector: web, ingress: [{ fromEndpoints: [web], toPorts: [http] }], egress: [{ toEndpoints: [{}], toPorts: [dns] }] },
    });
    assert.ok(parsed.ok);
    assert.deepEqual(enforcementGaps(parsed.value, { withoutDnsProxy: [], withoutL7Proxy: [] }), []);
    assert.equal(
      describeGaps(enforcementGaps(parsed.value, { withoutDnsProxy: [], withoutL7Proxy: ["n1", "n2"] })),
      "spec.ingress[0].toPorts[0].rules.http: not enforced on n1, n2 (no L7 proxy runs there): the port is allowed for every request",
    );
  });

  it("TLS with HTTP rules is enforced unless a Secret cannot be served (named, never its bytes); serverNames alone are enforced by the L7 proxy (the SNI), terminatingTLS without L7 rules is named as not inspected", () => {
    const parsed = parsePolicyObject({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "p", namespace: "default" },
      spec: {
        endpointSelector: web,
        egress: [
          { toEndpoints: [web], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], terminatingTLS: { secret: { name: "api-tls" } }, originatingTLS: { secret: { namespace: "kube-system", name: "ca" } }, rules: { http: [{ method: "GET" }] } }] },
          { toEndpoints: [web], toPorts: [{ ports: [{ port: "8443", protocol: "TCP" }], serverNames: ["api.example.com"] }] },
          { toEndpoints: [web], toPorts: [{ ports: [{ port: "9443", protocol: "TCP" }], terminatingTLS: { secret: { name: "api-tls" } } }] },
        ],
      },
    });
    assert.ok(parsed.ok, JSON.stringify(parsed));
    const everywhere = { withoutDnsProxy: [], withoutL7Proxy: [] };
    assert.equal(describeGaps(enforcementGaps(parsed.value, everywhere)), "spec.egress[2].toPorts[0].terminatingTLS: not enforced yet without HTTP rules: the connection passes without inspection");
    // Where the nodes are not known (admission), serverNames alone are as unenforced as HTTP rules.
    assert.match(describeGaps(enforcementGaps(parsed.value)), /spec\.egress\[1\]\.toPorts\[0\]\.serverNames: not enforced yet: the port is allowed for every server name/);
    const missing = enforcementGaps(parsed.value, { ...everywhere, tlsSecretProblem: (use, role) => (use.secret.name === "api-tls" ? `not found (${role}, ${use.secret.namespace})` : undefined) });
    assert.equal(
      describeGaps(missing.slice(0, 1)),
      "spec.egress[0].toPorts[0].terminatingTLS: Secret default/api-tls not found (terminatingTLS, default): connections to the port are refused",
    );
    assert.equal(missing.length, 2, "the usable originatingTLS Secret is no gap");
  });
});
