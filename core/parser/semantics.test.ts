// What parsed policies mean: peers, ports, default deny, origins and namespaces, as Cilium and Kubernetes define them.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Peer, Policy } from "../model.ts";
import { POD_NAMESPACE_KEY, selectorFrom } from "../selector.ts";
import { parsePolicyObject, parsePolicyYaml, parseYamlDocuments } from "./index.ts";

function one(yaml: string): Policy {
  const r = parsePolicyYaml(yaml);
  if (!r.ok) assert.fail(`unexpected errors: ${JSON.stringify(r.errors)}`);
  assert.equal(r.value.length, 1);
  return r.value[0]!;
}

const CNP = (spec: string, ns = "prod"): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: ${ns}}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n${spec}`;
const CCNP = (spec: string): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec:\n${spec}`;
const NP = (spec: string): string =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n${spec}`;

test("a rule with toPorts but no L3 field applies the ports to every peer", () => {
  const p = one(CNP(`  egress:\n  - toPorts: [{ports: [{port: "443", protocol: TCP}]}]\n`));
  assert.deepEqual(p.rules[0]!.peers, [{ kind: "any" }]);
  assert.deepEqual(p.rules[0]!.ports, [{ ports: [{ port: 443, endPort: 443, protocol: "TCP" }] }]);
});

test("ingress: [{}] puts the subject in default deny and allows nothing", () => {
  const p = one(CNP(`  ingress:\n  - {}\n`));
  assert.deepEqual(p.rules[0]!.peers, []);
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
});

test("Cilium's empty-selector idioms stay accepted: endpointSelector {}, fromEndpoints [{}], egress [{}]", () => {
  const r = parsePolicyYaml(
    CCNP(`  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n  egress:\n  - {}\n`),
  );
  assert.ok(r.ok, JSON.stringify(r.ok ? [] : r.errors));
  const [ingress, egress] = r.value[0]!.rules;
  assert.equal(ingress!.peers.length, 1);
  assert.deepEqual(egress!.peers, []);
});

test("NetworkPolicy from: [] and to: [] still mean every peer, as in Kubernetes", () => {
  const p = one(NP(`  ingress:\n  - from: []\n  egress:\n  - to: []\n`));
  assert.deepEqual(
    p.rules.map((r) => r.peers),
    [[{ kind: "any" }], [{ kind: "any" }]],
  );
});

test("an explicitly empty endpoint, CIDR or entity list selects no peer (Cilium 1.15+): admitted with a warning at its path, the rule matches nothing, default deny stays on", () => {
  const lists = [
    ["ingress", "fromEndpoints: []", "allows nothing"],
    ["ingress", "fromCIDR: []", "allows nothing"],
    ["ingress", "fromCIDRSet: []", "allows nothing"],
    ["ingress", "fromEntities: []", "allows nothing"],
    ["egress", "toEndpoints: []", "allows nothing"],
    ["egress", "toCIDR: []", "allows nothing"],
    ["egress", "toCIDRSet: []", "allows nothing"],
    ["egress", "toEntities: []", "allows nothing"],
    ["ingressDeny", "fromCIDR: []", "denies nothing"],
  ] as const;
  for (const [section, field, effect] of lists) {
    for (const l4 of ["", `\n    toPorts:\n    - ports:\n      - port: "5432"\n        protocol: TCP`]) {
      const r = parsePolicyYaml(CNP(`  ${section}:\n  - ${field}${l4}\n`));
      assert.equal(r.ok, true, `${section}: ${field}${l4} was refused: ${JSON.stringify(r.ok ? [] : r.errors)}`);
      if (!r.ok) continue;
      const p = r.value[0]!;
      assert.deepEqual(p.rules[0]!.peers, [], `${section}: ${field}${l4} selects no peer`);
      const direction = section.startsWith("ingress") ? "ingress" : "egress";
      assert.equal(p.defaultDeny[direction], true, "the subject is in default deny");
      const key = field.slice(0, field.indexOf(":"));
      const w = p.parseWarnings?.find((x) => x.path === `spec.${section}[0].${key}`);
      assert.ok(w, `a warning at spec.${section}[0].${key}: ${JSON.stringify(p.parseWarnings)}`);
      assert.match(w.message, new RegExp(`^an empty list selects no peer, so this rule ${effect}`));
    }
  }
});

test("an explicitly empty toFQDNs, port or ICMP list is refused at its own path, never accepted as 'not set'", () => {
  const lists = [
    ["egress", "toFQDNs: []"],
    ["egress", "toPorts: []"],
    ["egress", "icmps: []"],
    ["egressDeny", "toPorts: [{ports: []}]"],
    ["ingressDeny", "icmps: [{fields: []}]"],
  ] as const;
  for (const [section, body] of lists) {
    const r = parsePolicyYaml(CNP(`  ${section}:\n  - ${body}\n`));
    const key = body.slice(0, body.indexOf(":"));
    const at = body.includes("ports: []")
      ? `${key}[0].ports`
      : body.includes("fields: []")
        ? `${key}[0].fields`
        : key;
    assert.equal(r.ok, false, `${section}: ${body} was accepted`);
    if (!r.ok) {
      assert.equal(r.errors.length, 1, JSON.stringify(r.errors));
      assert.equal(r.errors[0]!.path, `spec.${section}[0].${at}`);
      assert.match(r.errors[0]!.message, /^an empty list /);
    }
  }
});

test("enableDefaultDeny false keeps a direction open even with rules", () => {
  const p = one(
    CNP(
      `  enableDefaultDeny: {ingress: false}\n  ingress:\n  - fromEntities: [host]\n  egress:\n  - toEntities: [world]\n`,
    ),
  );
  assert.deepEqual(p.defaultDeny, { ingress: false, egress: true });
});

test("deny sections give deny rules and count for default deny", () => {
  const p = one(CCNP(`  endpointSelector: {}\n  egressDeny:\n  - toEntities: [all]\n`));
  assert.equal(p.rules[0]!.verdict, "deny");
  assert.equal(p.rules[0]!.direction, "egress");
  assert.deepEqual(p.defaultDeny, { ingress: false, egress: true });
  assert.deepEqual(p.rules[0]!.peers, [{ kind: "entity", entity: "all" }]);
});

test("toNodes in egressDeny and fromNodes in ingressDeny are deny rules with node selector peers (Cilium's deny sections embed them)", () => {
  const p = one(
    CNP(
      `  egressDeny:\n  - toNodes:\n    - matchLabels:\n        node-role.kubernetes.io/control-plane: ""\n    toPorts: [{ports: [{port: "6443", protocol: TCP}]}]\n  ingressDeny:\n  - fromNodes: [{}]\n`,
    ),
  );
  assert.deepEqual(
    p.rules.map((r) => [r.direction, r.verdict, r.peers.map((peer) => (peer.kind === "nodes" ? peer.selector.canonical : peer.kind))]),
    [
      ["ingress", "deny", ["[]"]],
      ["egress", "deny", ['[["any:node-role.kubernetes.io/control-plane","In",[""]]]']],
    ],
  );
  assert.deepEqual(p.rules[1]!.ports, [{ ports: [{ port: 6443, endPort: 6443, protocol: "TCP" }] }]);
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: true });
});

test("every rule carries its origin: kind, namespace, name, index and path", () => {
  const p = one(
    CNP(
      `  ingress:\n  - fromEntities: [host]\n  ingressDeny:\n  - fromEntities: [world]\n  - fromEntities: [health]\n`,
    ),
  );
  assert.deepEqual(
    p.rules.map((r) => r.origin),
    [
      {
        policyKind: "CiliumNetworkPolicy",
        namespace: "prod",
        name: "p",
        ruleIndex: 0,
        path: "spec.ingress[0]",
      },
      {
        policyKind: "CiliumNetworkPolicy",
        namespace: "prod",
        name: "p",
        ruleIndex: 0,
        path: "spec.ingressDeny[0]",
      },
      {
        policyKind: "CiliumNetworkPolicy",
        namespace: "prod",
        name: "p",
        ruleIndex: 1,
        path: "spec.ingressDeny[1]",
      },
    ],
  );
});

test("specs yield one policy per spec, with specs[i] paths", () => {
  const r = parsePolicyYaml(
    `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: m, namespace: prod}\nspecs:\n- endpointSelector: {matchLabels: {a: "1"}}\n  ingress: [{}]\n- endpointSelector: {matchLabels: {b: "2"}}\n  egress: [{toEntities: [world]}]\n`,
  );
  assert.ok(r.ok);
  assert.equal(r.value.length, 2);
  assert.equal(r.value[1]!.rules[0]!.origin.path, "specs[1].egress[0]");
  assert.deepEqual(
    r.value[1]!.subject,
    selectorFrom({ matchLabels: { b: "2" } }, { role: "subject", namespace: "prod" }),
  );
});

test("CNP subject and peers are limited to the policy's namespace unless a peer names one", () => {
  const p = one(
    CNP(
      `  ingress:\n  - fromEndpoints:\n    - {matchLabels: {app: fe}}\n    - {matchLabels: {app: fe, k8s:io.kubernetes.pod.namespace: other}}\n`,
    ),
  );
  assert.ok(p.subject.requirements.some((r) => r.key === POD_NAMESPACE_KEY && r.values[0] === "prod"));
  const [a, b] = p.rules[0]!.peers as Extract<Peer, { kind: "selector" }>[];
  assert.ok(a!.selector.requirements.some((r) => r.key === POD_NAMESPACE_KEY && r.values[0] === "prod"));
  assert.ok(b!.selector.requirements.some((r) => r.key === POD_NAMESPACE_KEY && r.values[0] === "other"));
  assert.ok(!b!.selector.requirements.some((r) => r.values[0] === "prod"));
});

test("CCNP peers select endpoints in any namespace", () => {
  const p = one(CCNP(`  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: fe}}]\n`));
  const peer = p.rules[0]!.peers[0] as Extract<Peer, { kind: "selector" }>;
  assert.deepEqual(peer.selector, selectorFrom({ matchLabels: { app: "fe" } }, { role: "peer" }));
  assert.equal(p.namespace, undefined);
  assert.equal(p.rules[0]!.origin.namespace, undefined);
});

test("fromRequires becomes requires, not a peer", () => {
  const p = one(
    CNP(
      `  ingress:\n  - fromRequires: [{matchLabels: {env: prod}}]\n  - fromEndpoints: [{matchLabels: {app: fe}}]\n`,
    ),
  );
  assert.equal(p.rules[0]!.requires.length, 1);
  assert.deepEqual(p.rules[0]!.peers, []);
  assert.deepEqual(p.rules[1]!.requires, []);
});

test("CIDRs are normalised and except lists kept", () => {
  const p = one(
    CNP(
      `  egress:\n  - toCIDRSet:\n    - cidr: 10.1.2.3/8\n      except: [10.96.0.0/12]\n  - toCIDR: [192.168.1.1, "2001:db8:0:0::/64"]\n`,
    ),
  );
  assert.deepEqual(p.rules[0]!.peers, [{ kind: "cidr", cidr: "10.0.0.0/8", except: ["10.96.0.0/12"] }]);
  assert.deepEqual(p.rules[1]!.peers, [
    { kind: "cidr", cidr: "192.168.1.1/32", except: [] },
    { kind: "cidr", cidr: "2001:db8::/64", except: [] },
  ]);
});

test("ports: named ports, ranges, port 0 and default protocol ANY", () => {
  const p = one(
    CNP(
      `  ingress:\n  - toPorts:\n    - ports:\n      - {port: "HTTP-alt"}\n      - {port: "8000", endPort: 8100, protocol: UDP}\n      - {port: "0", protocol: SCTP}\n`,
    ),
  );
  assert.deepEqual(p.rules[0]!.ports[0]!.ports, [
    { port: 0, endPort: 0, name: "http-alt", protocol: "ANY" },
    { port: 8000, endPort: 8100, protocol: "UDP" },
    { port: 0, endPort: 0, protocol: "SCTP" },
  ]);
});

test("the DNS rule on port 53 with protocol ANY is accepted, as Cilium does", () => {
  const p = one(
    CNP(
      `  egress:\n  - toEndpoints: [{matchLabels: {k8s:k8s-app: kube-dns, k8s:io.kubernetes.pod.namespace: kube-system}}]\n    toPorts:\n    - ports: [{port: "53", protocol: ANY}]\n      rules:\n        dns: [{matchPattern: "*"}, {matchName: "api.example.com"}]\n`,
    ),
  );
  assert.deepEqual(p.rules[0]!.ports[0]!.rules, {
    kind: "dns",
    dns: [{ matchPattern: "*" }, { matchName: "api.example.com" }],
  });
});

test("toFQDNs, toServices, entities and ICMP are carried into the model", () => {
  const p = one(
    CNP(
      `  egress:\n  - toFQDNs: [{matchName: api.example.com}, {matchPattern: "*.example.com"}, {matchPattern: "**.svc.example.com"}]\n  - toServices: [{k8sService: {serviceName: db}}, {k8sServiceSelector: {selector: {matchLabels: {tier: db}}, namespace: data}}]\n  - toEntities: [kube-apiserver]\n    authentication: {mode: disabled}\n  - icmps: [{fields: [{type: 8}, {family: IPv6, type: EchoRequest}]}]\n`,
    ),
  );
  assert.deepEqual(p.rules[0]!.peers, [
    { kind: "fqdn", matchName: "api.example.com" },
    { kind: "fqdn", matchPattern: "*.example.com" },
    { kind: "fqdn", matchPattern: "**.svc.example.com" },
  ]);
  assert.deepEqual(p.rules[1]!.peers[0], { kind: "service", name: "db", namespace: "prod" });
  assert.deepEqual(p.rules[1]!.peers[1], {
    kind: "service",
    selector: selectorFrom({ matchLabels: { tier: "db" } }),
    namespace: "data",
  });
  assert.deepEqual(p.rules[2]!.peers, [{ kind: "entity", entity: "kube-apiserver" }]);
  assert.deepEqual(p.rules[3]!.peers, [{ kind: "any" }]);
  assert.deepEqual(p.rules[3]!.icmps, [
    { family: "IPv4", type: 8 },
    { family: "IPv6", type: "EchoRequest" },
  ]);
});

test("host policies: nodeSelector is the subject", () => {
  const p = one(
    CCNP(`  nodeSelector: {matchLabels: {role: worker}}\n  ingress:\n  - fromEntities: [cluster]\n`),
  );
  assert.deepEqual(p.nodeSelector, selectorFrom({ matchLabels: { role: "worker" } }));
  assert.deepEqual(p.subject, p.nodeSelector);
});

test("NetworkPolicy: policyTypes default to Ingress, plus Egress when egress rules exist", () => {
  assert.deepEqual(one(NP(`  ingress: [{}]\n`)).defaultDeny, { ingress: true, egress: false });
  assert.deepEqual(one(NP(`  egress: [{}]\n`)).defaultDeny, { ingress: true, egress: true });
  assert.deepEqual(one(NP(`  policyTypes: [Egress]\n`)).defaultDeny, { ingress: false, egress: true });
});

test("NetworkPolicy: ingress [{}] allows everything from everywhere, on every port", () => {
  const p = one(NP(`  ingress: [{}]\n`));
  assert.deepEqual(p.rules[0]!.peers, [{ kind: "any" }]);
  assert.deepEqual(p.rules[0]!.ports, []);
});

test("NetworkPolicy: rules of a direction outside policyTypes are ignored", () => {
  const p = one(NP(`  policyTypes: [Ingress]\n  egress: [{to: [{podSelector: {}}]}]\n`));
  assert.deepEqual(p.rules, []);
  assert.deepEqual(p.defaultDeny, { ingress: true, egress: false });
});

test("NetworkPolicy: podSelector and namespaceSelector in one peer are ANDed; two peers are ORed", () => {
  const and = one(
    NP(
      `  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n      namespaceSelector: {matchLabels: {ns: y}}\n`,
    ),
  );
  assert.equal(and.rules[0]!.peers.length, 1);
  const sel = (and.rules[0]!.peers[0] as Extract<Peer, { kind: "selector" }>).selector;
  assert.ok(sel.requirements.some((r) => r.key === "k8s:pod"));
  assert.ok(sel.requirements.some((r) => r.key === "k8s:io.cilium.k8s.namespace.labels.ns"));
  const or = one(
    NP(
      `  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - namespaceSelector: {matchLabels: {ns: y}}\n`,
    ),
  );
  assert.equal(or.rules[0]!.peers.length, 2);
  // A podSelector alone selects pods in the policy's namespace.
  const podOnly = (or.rules[0]!.peers[0] as Extract<Peer, { kind: "selector" }>).selector;
  assert.ok(podOnly.requirements.some((r) => r.key === POD_NAMESPACE_KEY && r.values[0] === "x"));
});

test("NetworkPolicy: ports default to TCP, with endPort and named ports; ipBlock keeps except and matches pod addresses", () => {
  const p = one(
    NP(
      `  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports:\n    - port: 80\n    - {port: 32000, endPort: 32768, protocol: UDP}\n    - {port: metrics}\n    - {protocol: SCTP}\n`,
    ),
  );
  assert.deepEqual(p.rules[0]!.peers, [{ kind: "cidr", cidr: "10.0.0.0/8", except: ["10.1.0.0/16"], podAddresses: true }]);
  assert.deepEqual(p.rules[0]!.ports, [
    {
      ports: [
        { port: 80, endPort: 80, protocol: "TCP" },
        { port: 32000, endPort: 32768, protocol: "UDP" },
        { port: 0, endPort: 0, name: "metrics", protocol: "TCP" },
        { port: 0, endPort: 0, protocol: "SCTP" },
      ],
    },
  ]);
});

test("a namespaced policy without a namespace lands in default, as kubectl would put it", () => {
  const p = one(
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec: {podSelector: {}}\n`,
  );
  assert.equal(p.namespace, "default");
});

test("YAML syntax errors name the line", () => {
  const r = parsePolicyYaml("apiVersion: v1\nkind: [\nfoo: bar\n");
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.match(r.errors[0]!.path, /^line \d+$/);
    assert.match(r.errors[0]!.message, /^YAML syntax error: /);
  }
});

test("with several documents, error paths name the document", () => {
  const good = CNP(`  ingress: [{}]\n`);
  const bad = CNP(`  ingress: [{fromEntities: [nobody]}]\n`);
  const r = parsePolicyYaml(`${good}---\n${bad}`);
  assert.equal(r.ok, false);
  if (!r.ok)
    assert.deepEqual(
      r.errors.map((e) => e.path),
      ["documents[1].spec.ingress[0].fromEntities[0]"],
    );
  const docs = parseYamlDocuments(`${good}---\n${bad}`);
  assert.equal(docs.length, 2);
  assert.equal(docs[1]!.line, good.split("\n").length); // the line of its "---"
});

test("not an object, unknown kinds and missing specs are errors, not exceptions", () => {
  assert.deepEqual(parsePolicyObject(null), {
    ok: false,
    errors: [{ path: "<root>", message: "must be an object with apiVersion and kind, not null" }],
  });
  const r = parsePolicyObject({ apiVersion: "v1", kind: "Pod" });
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.errors[0]!.path, "kind");
});
