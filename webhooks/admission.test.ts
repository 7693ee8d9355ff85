// Unit tests of the AdmissionReview handler: verdicts, messages, warnings and the uid for every kind of body.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seedExamples } from "../crds/fixtures.ts";
import { admit, reviewFor } from "./admission.ts";

interface Answer {
  apiVersion: string;
  kind: string;
  response: { uid: string; allowed: boolean; status?: { code: number; message: string }; warnings?: string[] };
}

const answer = (body: string, mode: "validate" | "noop" = "validate"): Answer => JSON.parse(admit(body, mode).body) as Answer;

const cnp = (spec: unknown, name = "web"): Record<string, unknown> => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name, namespace: "default" },
  spec,
});

const badCnp = cnp({
  endpointSelector: { matchLabels: { app: "web" } },
  egress: [
    { toPorts: [{ ports: [{ port: "70000", protocol: "TCP" }] }] },
    { toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["11.0.0.0/16"] }] },
  ],
});

describe("admission handler", () => {
  it("denies with every field error at once, as field.path: reason; field.path: reason", () => {
    const a = answer(reviewFor(badCnp, { uid: "u-1" }));
    assert.equal(a.apiVersion, "admission.k8s.io/v1");
    assert.equal(a.kind, "AdmissionReview");
    assert.equal(a.response.uid, "u-1");
    assert.equal(a.response.allowed, false);
    assert.equal(a.response.status?.code, 403);
    assert.equal(
      a.response.status?.message,
      'spec.egress[0].toPorts[0].ports[0].port: "70000" is not a port (1-65535); ' +
        'spec.egress[1].toCIDRSet[0].except[0]: except "11.0.0.0/16" is not inside cidr "10.0.0.0/8"',
    );
  });

  it("warns at toFQDNs with serverNames of their own, naming the field: not enforced yet, the port stays closed to the names' addresses (HTTP rules with toFQDNs go through the L7 proxy)", () => {
    const a = answer(
      reviewFor(
        cnp({
          endpointSelector: { matchLabels: { app: "web" } },
          egress: [
            { toEndpoints: [{ matchLabels: { "k8s:k8s-app": "kube-dns" } }], toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }] },
            {
              toFQDNs: [{ matchName: "api.github.com" }],
              toPorts: [
                { ports: [{ port: "443", protocol: "TCP" }] },
                { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } },
                { ports: [{ port: "8443", protocol: "TCP" }], serverNames: ["api.github.com"] },
              ],
            },
          ],
        }),
        { uid: "u-fqdn" },
      ),
    );
    assert.equal(a.response.allowed, true, "Cilium's own examples use it (seed.yaml#0): admitted, never silently");
    const closed = "not enforced yet with toFQDNs: the names' addresses are not allowed on the port (fails closed)";
    assert.deepEqual(
      (a.response.warnings ?? []).filter((w) => w.includes("toFQDNs")),
      [`spec.egress[1].toPorts[2].serverNames: ${closed}`],
    );
  });

  it("admits every seed example without a status", () => {
    for (const ex of seedExamples()) {
      const a = answer(reviewFor(ex.object, { uid: ex.source }));
      assert.equal(a.response.allowed, true, `${ex.source}: ${a.response.status?.message}`);
      assert.equal(a.response.uid, ex.source);
      assert.equal(a.response.status, undefined);
    }
  });

  it("returns warnings for a legal but risky policy and still admits it", () => {
    const risky = cnp({
      endpointSelector: { matchLabels: { app: "web" } },
      egress: [
        { toEntities: ["world"] },
        { toPorts: [{ ports: [{ port: "5353", protocol: "UDP" }], rules: { dns: [{ matchPattern: "*" }] } }] },
      ],
      egressDeny: [{ toEntities: ["world"] }],
      ingress: [{ fromEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namspace": "prod" } }] }],
    });
    const a = answer(reviewFor(risky, { uid: "w" }));
    assert.equal(a.response.allowed, true);
    assert.deepEqual(a.response.warnings, [
      'spec.egress[0]: allows every port and protocol to entity "world"; restrict it with toPorts if that is not intended',
      "spec.egress[1].toPorts[0]: DNS rules on port 5353, not 53: DNS is only inspected on the listed port, so it must be the port your DNS server listens on",
      "spec.egress[0]: never takes effect: spec.egressDeny[0] denies every peer and port it allows (deny wins)",
      'spec.ingress[0]: label key "io.kubernetes.pod.namspace" is not one Cilium sets (did you mean "io.kubernetes.pod.namespace"?): the selector matches nothing',
    ]);
  });

  it("admits a policy with HTTP rules and toFQDNs; warns that toFQDNs has no DNS rule, with its path (HTTP rules are the agents' L7 proxy's: status names nodes without one)", () => {
    const l7 = cnp({
      endpointSelector: { matchLabels: { app: "web" } },
      ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/public/.*" }] } }] }],
      egress: [{ toFQDNs: [{ matchPattern: "*.example.com" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] }],
    });
    const a = answer(reviewFor(l7, { uid: "l7" }));
    assert.equal(a.response.allowed, true);
    assert.deepEqual(a.response.warnings, [
      "spec.egress[0].toFQDNs: no DNS rule (toPorts[].rules.dns, e.g. to kube-dns on port 53) in this policy: toFQDNs learns addresses only from lookups the DNS proxy sees, so unless another policy selecting the same pods has one, these names never allow an address",
    ]);
  });

  it("denies a CiliumCIDRGroup with a malformed CIDR naming the field, and admits the documentation's group in both served versions", () => {
    const group = (apiVersion: string, externalCIDRs: unknown[]): Record<string, unknown> => ({ apiVersion, kind: "CiliumCIDRGroup", metadata: { name: "vpn-example-1", labels: { role: "vpn" } }, spec: { externalCIDRs } });
    for (const v of ["cilium.io/v2alpha1", "cilium.io/v2"]) assert.equal(answer(reviewFor(group(v, ["10.48.0.0/24", "10.16.0.0/24"]), { uid: v })).response.allowed, true, v);
    const bad = answer(reviewFor(group("cilium.io/v2alpha1", ["10.48.0.0/24", "10.16.0.0/33"]), { uid: "bad" }));
    assert.equal(bad.response.allowed, false);
    assert.equal(bad.response.status?.message, 'spec.externalCIDRs[1]: "10.16.0.0/33" is not a CIDR: the prefix length must be 0-32');
  });

  it("answers a body that is not JSON with a denial carrying the uid it can find", () => {
    const a = answer('{"apiVersion":"admission.k8s.io/v1","request":{"uid":"abc-123","object":{');
    assert.equal(a.response.uid, "abc-123");
    assert.equal(a.response.allowed, false);
    assert.match(a.response.status?.message ?? "", /^the request body is not JSON: /);
    const b = answer("\u0000garbage");
    assert.equal(b.response.uid, "");
    assert.equal(b.response.allowed, false);
  });

  it("denies a review without a request, and a request without an object", () => {
    assert.equal(answer("[]").response.status?.message, "the body is not an AdmissionReview object");
    assert.equal(answer('{"request":5}').response.status?.message, "request: required (an AdmissionReview with a request)");
    const a = answer(JSON.stringify({ request: { uid: "x", operation: "CREATE" } }));
    assert.equal(a.response.uid, "x");
    assert.equal(a.response.status?.message, "request.object: required for CREATE and UPDATE");
  });

  it("validates the new object on UPDATE and lets DELETE through", () => {
    const good = cnp({ endpointSelector: {}, ingress: [{ fromEndpoints: [{}] }] });
    assert.equal(answer(reviewFor(badCnp, { uid: "1", operation: "UPDATE", oldObject: good })).response.allowed, false);
    assert.equal(answer(reviewFor(good, { uid: "2", operation: "UPDATE", oldObject: badCnp })).response.allowed, true);
    assert.equal(answer(reviewFor(null, { uid: "3", operation: "DELETE", oldObject: badCnp })).response.allowed, true);
  });

  it("gives a dry run the same verdict and message as a real request", () => {
    const real = answer(reviewFor(badCnp, { uid: "d" }));
    const dry = answer(reviewFor(badCnp, { uid: "d", dryRun: true }));
    assert.deepEqual(dry, real);
  });

  it("names the kind when it is not one the webhook validates", () => {
    const a = answer(reviewFor({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } }, { uid: "k" }));
    assert.equal(a.response.allowed, false);
    assert.match(a.response.status?.message ?? "", /^kind: "ConfigMap" is not a kind Membrane validates \(/);
  });

  it("validates TracingPolicy semantics with field paths", () => {
    const tp = {
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicy",
      metadata: { name: "t" },
      spec: {
        kprobes: [
          {
            call: "fd_install",
            args: [{ index: 1, type: "file" }],
            selectors: [{ matchArgs: [{ index: 3, operator: "Equal", values: ["/etc/passwd"] }], matchActions: [{ action: "Signal" }] }],
          },
        ],
      },
    };
    const a = answer(reviewFor(tp, { uid: "t" }));
    assert.equal(
      a.response.status?.message,
      "spec.kprobes[0].selectors[0].matchArgs[0].index: argument 3 is not declared in args; " +
        "spec.kprobes[0].selectors[0].matchActions[0].argSig: Signal needs argSig, a signal number 1-64",
    );
    const empty = answer(reviewFor({ ...tp, spec: {} }, { uid: "t2" }));
    assert.match(empty.response.status?.message ?? "", /^spec: declares no kprobes, fentries, tracepoints, lsmhooks, uprobes, usdts: the policy would trace nothing$/);
  });

  it("validates MembraneEncryptionKey semantics with field paths", () => {
    const key = {
      apiVersion: "membrane.io/v1alpha1",
      kind: "MembraneEncryptionKey",
      metadata: { name: "default" },
      spec: { mode: "wireguard", rotationInterval: "10s", secretRef: { name: "wg-keys" }, privateKey: "AAAA" },
    };
    const a = answer(reviewFor(key, { uid: "e" }));
    assert.equal(
      a.response.status?.message,
      'spec.rotationInterval: "10s" is too short: rotate at most once a minute; ' +
        "spec.privateKey: key material must not be stored in this resource: it lives only in Secrets",
    );
    const good = { ...key, spec: { mode: "ipsec", rotationInterval: "24h", secretRef: { name: "ipsec-keys", namespace: "kube-system" } } };
    assert.equal(answer(reviewFor(good, { uid: "e2" })).response.allowed, true);
  });

  it("refuses a port-less VRRP rule naming --enable-extended-ip-protocols and the field, and admits it with the option", () => {
    const vrrp = cnp({
      endpointSelector: { matchLabels: { app: "lb" } },
      ingress: [{ fromEndpoints: [{ matchLabels: { app: "lb" } }], toPorts: [{ ports: [{ protocol: "VRRP" }] }] }],
    });
    const off = JSON.parse(admit(reviewFor(vrrp, { uid: "x-1" }), "validate").body) as Answer;
    assert.equal(off.response.allowed, false);
    assert.match(off.response.status?.message ?? "", /^spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol: "VRRP" .*--enable-extended-ip-protocols/);
    const on = JSON.parse(admit(reviewFor(vrrp, { uid: "x-2" }), "validate", { enableExtendedIPProtocols: true }).body) as Answer;
    assert.equal(on.response.allowed, true, on.response.status?.message);
    const withPort = cnp({
      endpointSelector: {},
      egress: [{ toPorts: [{ ports: [{ port: "47", protocol: "GRE" }] }] }],
    });
    const port = JSON.parse(admit(reviewFor(withPort, { uid: "x-3" }), "validate", { enableExtendedIPProtocols: true }).body) as Answer;
    assert.equal(port.response.allowed, false);
    assert.match(port.response.status?.message ?? "", /^spec\.egress\[0\]\.toPorts\[0\]\.ports\[0\]\.port: GRE has no ports/);
  });

  it("allows anything in noop mode, with the same well-formed answer", () => {
    const a = answer(reviewFor(badCnp, { uid: "n" }), "noop");
    assert.deepEqual(a, { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: "n", allowed: true } });
  });
});
