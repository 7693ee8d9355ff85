// The seed examples and the Cilium documentation examples parse, and mean what their documentation says.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ciliumDocsExamples, seedExamples } from "../../crds/fixtures.ts";
import type { Policy } from "../model.ts";
import { parsePolicyObject } from "./index.ts";

const POLICY_KINDS = new Set(["NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]);
const examples = [...seedExamples(), ...ciliumDocsExamples()].filter((e) => POLICY_KINDS.has(e.object.kind));

/** Documented Cilium features Membrane refuses rather than enforce wrongly, with the one field each error names. */
const UNSUPPORTED: Record<string, string> = {
  "cilium-docs/authentication-required.yaml": "spec.ingress[0].authentication.mode",
  // Kafka rules were removed from Cilium in 1.20; refused rather than enforced as plain L4.
  "cilium-docs/l7-kafka-produce-topic.yaml": "spec.ingress[0].toPorts[0].rules.kafka",
};

function parsed(source: string): Policy[] {
  const ex = examples.find((e) => e.source === source);
  assert.ok(ex, `no example ${source}`);
  const r = parsePolicyObject(ex.object);
  if (!r.ok) assert.fail(`${source}: ${JSON.stringify(r.errors)}`);
  return r.value;
}

test("there are examples to check", () => {
  assert.ok(examples.length >= 20, `only ${examples.length} policy examples`);
});

for (const ex of examples) {
  const unsupported = UNSUPPORTED[ex.source];
  if (unsupported !== undefined) {
    test(`refuses ${ex.source} at ${unsupported}, saying Membrane does not support it`, () => {
      const r = parsePolicyObject(ex.object);
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.deepEqual(
          r.errors.map((e) => e.path),
          [unsupported],
        );
        assert.match(r.errors[0]!.message, /not supported by Membrane/);
      }
    });
    continue;
  }
  test(`accepts ${ex.source}`, () => {
    const r = parsePolicyObject(ex.object);
    assert.deepEqual(r.ok ? [] : r.errors, []);
    if (r.ok) for (const p of r.value) for (const rule of p.rules) assert.ok(rule.origin.path.length > 0);
  });
}

test("seed CNP: the DNS rule on port 53 with protocol ANY is accepted and the FQDN rule keeps its TLS and HTTP rules", () => {
  const [p] = parsed("seed.yaml#0");
  const [fqdn, dns] = p!.rules;
  assert.deepEqual(fqdn!.peers, [{ kind: "fqdn", matchName: "httpbin.org" }]);
  assert.equal(fqdn!.ports[0]!.terminatingTLS?.secret.name, "httpbin-tls-data");
  assert.equal(fqdn!.ports[0]!.originatingTLS?.secret.namespace, "kube-system");
  assert.deepEqual(fqdn!.ports[0]!.rules, { kind: "http", http: [{}] });
  assert.deepEqual(dns!.peers, [{ kind: "any" }]);
  assert.deepEqual(dns!.ports[0]!.ports, [{ port: 53, endPort: 53, protocol: "ANY" }]);
  assert.equal(dns!.ports[0]!.rules?.kind, "dns");
  assert.deepEqual(p!.defaultDeny, { ingress: false, egress: true });
});

test("seed CCNP: default deny everything, both directions", () => {
  const [p] = parsed("seed.yaml#1");
  assert.deepEqual(p!.defaultDeny, { ingress: true, egress: true });
  assert.deepEqual(
    p!.rules.map((r) => [r.direction, r.verdict, r.peers]),
    [
      ["ingress", "deny", [{ kind: "entity", entity: "all" }]],
      ["egress", "deny", [{ kind: "entity", entity: "all" }]],
    ],
  );
});

test("docs: an empty ingress rule is default deny that allows nothing", () => {
  const [p] = parsed("cilium-docs/l3-ingress-default-deny.yaml");
  assert.deepEqual(p!.defaultDeny, { ingress: true, egress: false });
  assert.deepEqual(p!.rules[0]!.peers, []);
});

test("docs: a port range is 80 through 444 on TCP to any peer", () => {
  const [p] = parsed("cilium-docs/l4-egress-port-range.yaml");
  assert.deepEqual(p!.rules[0]!.peers, [{ kind: "any" }]);
  assert.deepEqual(p!.rules[0]!.ports[0]!.ports, [{ port: 80, endPort: 444, protocol: "TCP" }]);
});

test("docs: toCIDRSet keeps its except block", () => {
  const [p] = parsed("cilium-docs/l3-cidr-egress-with-except.yaml");
  assert.deepEqual(p!.rules[1]!.peers, [{ kind: "cidr", cidr: "10.0.0.0/8", except: ["10.96.0.0/12"] }]);
});

test("docs: cidrGroupRef and cidrGroupSelector are CIDR group peers, filled in by the operator from the groups", () => {
  assert.deepEqual(parsed("cilium-docs/l3-cidrgroupref-ingress.yaml")[0]!.rules[0]!.peers, [{ kind: "cidrGroup", name: "office-networks", except: [] }]);
  const [bySelector] = parsed("cilium-docs/l3-cidrgroupselector-ingress.yaml")[0]!.rules[0]!.peers;
  assert.equal(bySelector?.kind === "cidrGroup" ? bySelector.selector?.canonical : undefined, '[["any:role","In",["office"]]]');
});

test("docs: toNodes is a node selector peer over the Node labels", () => {
  const [p] = parsed("cilium-docs/l3-nodes-egress-control-plane.yaml");
  const [peer] = p!.rules[0]!.peers;
  assert.equal(peer?.kind, "nodes");
  assert.equal(peer?.kind === "nodes" ? peer.selector.canonical : undefined, '[["any:node-role.kubernetes.io/control-plane","In",[""]]]');
  assert.deepEqual(p!.defaultDeny, { ingress: false, egress: true });
});

test("docs: fromRequires narrows, fromEndpoints allows", () => {
  const [p] = parsed("cilium-docs/l3-requires-same-env.yaml");
  assert.equal(p!.rules[0]!.requires.length, 1);
  assert.deepEqual(p!.rules[0]!.peers, []);
  assert.equal(p!.rules[1]!.peers[0]!.kind, "selector");
});

test("docs: allow all and deny world in one cluster-wide policy", () => {
  const [p] = parsed("cilium-docs/deny-ingress-from-world.yaml");
  assert.deepEqual(
    p!.rules.map((r) => [r.verdict, r.peers]),
    [
      ["allow", [{ kind: "entity", entity: "all" }]],
      ["deny", [{ kind: "entity", entity: "world" }]],
    ],
  );
});
