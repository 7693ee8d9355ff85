// The DNS part of a subject's compiled policy: what the operator sends the node's DNS proxy, and how it travels in snapshots and deltas.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { PolicyCompiler, compileAll, policyKey } from "../compiler.ts";
import { parseDownstream } from "../wire.ts";
import { EMPTY_STATE, applyDelta, diffState } from "../nodestate.ts";
import { sameSubjectDns } from "./dns-rules.ts";
import { protoNumbers } from "./resolution.ts";
import { dnsRulesOn, type DnsPortRules } from "../dns/query-decision.ts";

const pod = (app: string): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "prod"), label("k8s", "app", app), label("k8s", "io.cilium.k8s.policy.cluster", "default")]);
const CLIENT = 300;
const DNS = 301;
const OTHER = 302;
const ids = new Map<number, LabelSet>([
  [CLIENT, pod("client")],
  [DNS, pod("kube-dns")],
  [OTHER, pod("other")],
]);

/** The port blocks of `port` with protocol ANY, as the compiler expands it. */
const dnsPorts = (port: number): { proto: number; port: number; portPrefixLen: number }[] => protoNumbers("ANY").map((proto) => ({ proto, port, portPrefixLen: 16 }));

function parse(spec: unknown, name = "fqdn"): Policy[] {
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "prod", uid: "u1", generation: 1 }, spec });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

// The Cilium documentation's shape: DNS to kube-dns through the proxy, then HTTPS to the names it allowed.
const SPEC = {
  endpointSelector: { matchLabels: { app: "client" } },
  egress: [
    {
      toEndpoints: [{ matchLabels: { app: "kube-dns" } }],
      toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.example.com" }, { matchName: "api.github.com" }] } }],
    },
    {
      toFQDNs: [{ matchName: "api.github.com" }, { matchPattern: "**.example.com" }],
      toPorts: [{ ports: [{ port: "443", protocol: "TCP" }, { port: "8080", endPort: 8081, protocol: "TCP" }] }],
    },
    { toEndpoints: [{ matchLabels: { app: "other" } }] },
  ],
};

test("a subject's compiled policy carries the DNS rules of its proxied port and its toFQDNs selectors with their ports", () => {
  const c = compileAll(parse(SPEC), ids);
  const p = c.snapshot(CLIENT);
  assert.ok(p.dns, "the subject has a DNS part");
  const dnsEntries = p.entries.filter((e) => e.peer === DNS);
  assert.ok(dnsEntries.length > 0 && dnsEntries.every((e) => e.proxyPort !== 0), "the DNS port is proxied");
  const ruleId = dnsEntries[0]!.ruleId;
  assert.deepEqual(p.dns.dnsRules, [{ ruleId, rules: [{ matchPattern: "*.example.com" }, { matchName: "api.github.com" }], ports: dnsPorts(53) }]);
  const ports = [
    { proto: 6, port: 443, portPrefixLen: 16 },
    { proto: 6, port: 8080, portPrefixLen: 15 },
  ];
  const fqdnRule = p.dns.fqdnSelectors[0]!.ruleId;
  assert.notEqual(fqdnRule, ruleId);
  assert.deepEqual(p.dns.fqdnSelectors, [
    { ruleId: fqdnRule, matchName: "api.github.com", ports },
    { ruleId: fqdnRule, matchPattern: "**.example.com", ports },
  ]);
  assert.equal(c.ruleOrigin(fqdnRule)?.path, "spec.egress[1]", "the selector names the rule that allows");
  assert.equal(c.snapshot(OTHER).dns, undefined, "a subject without DNS rules or toFQDNs has no DNS part");
});

test("a toFQDNs rule without ports allows every port; egressDeny and ingress rules give no DNS part", () => {
  const c = compileAll(parse({ endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toFQDNs: [{ matchName: "a.test" }] }], ingress: [{ fromEndpoints: [{}] }] }), ids);
  assert.deepEqual(c.snapshot(CLIENT).dns?.fqdnSelectors.map((t) => t.ports), [[{ proto: 0, port: 0, portPrefixLen: 0 }]]);
  const d = compileAll(parse({ endpointSelector: { matchLabels: { app: "client" } }, egressDeny: [{ toEndpoints: [{}] }] }), ids);
  assert.equal(d.snapshot(CLIENT).dns, undefined);
});

test("changing a policy's DNS rules is in the subject's delta even when no map entry moves", () => {
  const c = new PolicyCompiler();
  for (const [id, l] of ids) c.upsertIdentity(id, l);
  const key = policyKey({ kind: "CiliumNetworkPolicy", namespace: "prod", name: "fqdn" });
  c.upsertPolicy(key, parse(SPEC));
  const changed = {
    ...SPEC,
    egress: [
      { ...SPEC.egress[0], toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }] },
      { ...SPEC.egress[1], toFQDNs: [{ matchName: "api.github.com" }] },
      SPEC.egress[2],
    ],
  };
  const deltas = c.upsertPolicy(key, parse(changed));
  const d = deltas.find((x) => x.subject === CLIENT);
  assert.ok(d, "the subject has a delta");
  assert.deepEqual([d.added, d.removed], [[], []], "no map entry moved");
  assert.deepEqual(d.dns?.dnsRules[0]?.rules, [{ matchPattern: "*" }]);
  assert.deepEqual(d.dns?.fqdnSelectors.map((t) => t.matchName), ["api.github.com"]);
  c.removePolicy(key);
  assert.equal(c.snapshot(CLIENT).dns, undefined);
});

test("the DNS part travels in snapshots and deltas: the agent's record follows it, and diffState sees a change of it alone", () => {
  const c = compileAll(parse(SPEC), ids);
  const before = { ...EMPTY_STATE, policies: [c.snapshot(CLIENT)] };
  const withoutDns = { ...EMPTY_STATE, policies: [{ ...c.snapshot(CLIENT), dns: undefined }] };
  const delta = diffState(withoutDns, before);
  assert.equal(delta.subjects.length, 1);
  assert.ok(sameSubjectDns(delta.subjects[0]!.dns, before.policies[0]!.dns));
  assert.ok(sameSubjectDns(applyDelta(withoutDns, delta).policies[0]!.dns, before.policies[0]!.dns));
  const back = diffState(before, withoutDns);
  assert.equal(applyDelta(before, back).policies[0]!.dns, undefined, "a delta without a DNS part clears it");
  const snap = parseDownstream(JSON.parse(JSON.stringify({ type: "snapshot", version: 1, nonce: "n", state: before })));
  assert.ok(snap.ok);
  assert.ok(sameSubjectDns(snap.value.type === "snapshot" ? snap.value.state.policies[0]!.dns : undefined, before.policies[0]!.dns));
});

test("the agent refuses a malformed DNS part, naming the field", () => {
  const c = compileAll(parse(SPEC), ids);
  const p = c.snapshot(CLIENT);
  const bad = (dns: unknown): string => {
    const r = parseDownstream({ type: "snapshot", version: 1, nonce: "n", state: { ...EMPTY_STATE, policies: [{ ...p, dns }] } });
    assert.ok(!r.ok);
    return `${r.errors[0]!.path}: ${r.errors[0]!.message}`;
  };
  assert.equal(bad({ dnsRules: [{ ruleId: 1, rules: [{}] }], fqdnSelectors: [] }), "state.policies[0].dns.dnsRules[0].rules[0]: must have exactly one of matchName and matchPattern");
  assert.equal(bad({ dnsRules: [], fqdnSelectors: [{ ruleId: 1, matchName: "", ports: [] }] }), "state.policies[0].dns.fqdnSelectors[0].matchName: must be a non-empty string");
  assert.equal(
    bad({ dnsRules: [], fqdnSelectors: [{ ruleId: 1, matchName: "a.test", ports: [{ proto: 6, port: 443, portPrefixLen: 17 }] }] }),
    "state.policies[0].dns.fqdnSelectors[0].ports[0].portPrefixLen: must be an integer from 0 to 16",
  );
  assert.equal(bad({ fqdnSelectors: [] }), "state.policies[0].dns.dnsRules: must be a list");
});

test("the DNS rules of two toPorts entries of one rule stay apart: a query is judged by the rules of the port and protocol it was sent to", () => {
  const spec = {
    endpointSelector: { matchLabels: { app: "client" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { app: "kube-dns" } }],
        toPorts: [
          { ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.svc.cluster.local" }] } },
          { ports: [{ port: "5353", protocol: "UDP" }], rules: { dns: [{ matchName: "example.org" }] } },
        ],
      },
    ],
  };
  const p = compileAll(parse(spec), ids).snapshot(CLIENT);
  const ruleId = p.entries.find((e) => e.peer === DNS)!.ruleId;
  assert.deepEqual(p.dns?.dnsRules, [
    { ruleId, rules: [{ matchPattern: "*.svc.cluster.local" }], ports: dnsPorts(53) },
    { ruleId, rules: [{ matchName: "example.org" }], ports: [{ proto: 17, port: 5353, portPrefixLen: 16 }] },
  ]);
  const parts: DnsPortRules[] = p.dns!.dnsRules.map((r) => ({ ruleId: r.ruleId, rules: r.rules.map((x, index) => ({ ...x, ruleId: r.ruleId, index })), ...(r.ports ? { ports: r.ports } : {}) }));
  const names = (port: number, proto: number): (string | undefined)[] => dnsRulesOn(parts, ruleId, port, proto).map((r) => r.matchName ?? r.matchPattern);
  assert.deepEqual(names(53, 17), ["*.svc.cluster.local"]);
  assert.deepEqual(names(53, 6), ["*.svc.cluster.local"]);
  assert.deepEqual(names(5353, 17), ["example.org"]);
  assert.deepEqual(names(5353, 6), [], "5353 is UDP only");
  assert.deepEqual(dnsRulesOn(parts, ruleId + 1, 53, 17), [], "another rule's entry has none of them");
  const old = parts.map(({ ruleId: id, rules }) => ({ ruleId: id, rules }));
  assert.deepEqual(dnsRulesOn(old, ruleId, 53, 17).length, 2, "an operator from before per-entry ports: every entry's rules, as then");
  const changed = compileAll(parse({ ...spec, egress: [{ ...spec.egress[0], toPorts: [spec.egress[0]!.toPorts[0], { ...spec.egress[0]!.toPorts[1], ports: [{ port: "5354", protocol: "UDP" }] }] }] }), ids).snapshot(CLIENT);
  assert.equal(sameSubjectDns(p.dns, changed.dns), false, "moving an entry's port changes the DNS part");
});

test("toFQDNs with HTTP rules of their own: the learned addresses get the HTTP entry's port through the L7 proxy port of that entry's HTTP rules, the plain entry's port plainly; with serverNames or TLS inspection they never get it (fails closed)", () => {
  const spec = {
    endpointSelector: { matchLabels: { app: "client" } },
    egress: [
      {
        toFQDNs: [{ matchName: "api.github.com" }],
        toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }, { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }],
      },
      { toFQDNs: [{ matchName: "only.http.test" }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] },
      { toFQDNs: [{ matchName: "tls.test" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], terminatingTLS: { secret: { name: "t" } }, rules: { http: [{ method: "GET" }] } }] },
      { toFQDNs: [{ matchName: "sni.test" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], serverNames: ["sni.test"] }] },
    ],
  };
  const p = compileAll(parse(spec), ids).snapshot(CLIENT);
  const terms = p.dns?.fqdnSelectors ?? [];
  const github = terms[0]!.ports[1]?.proxyPort;
  const onlyHttp = terms[1]!.ports[0]?.proxyPort;
  assert.ok(github && onlyHttp && github !== onlyHttp, `each rule's HTTP part has a proxy port of its own: ${github}, ${onlyHttp}`);
  assert.deepEqual(
    terms.map((t) => [t.matchName, t.ports]),
    [
      ["api.github.com", [{ proto: 6, port: 443, portPrefixLen: 16 }, { proto: 6, port: 80, portPrefixLen: 16, proxyPort: github }]],
      ["only.http.test", [{ proto: 6, port: 80, portPrefixLen: 16, proxyPort: onlyHttp }]],
      ["tls.test", []],
      ["sni.test", []],
    ],
  );
  // The L7 proxy gets those ports' rules: each HTTP part lists the port its learned addresses are steered to.
  const byRule = new Map((p.http ?? []).map((h) => [h.ruleId, h.proxyPorts]));
  assert.deepEqual(byRule.get(terms[0]!.ruleId), [github]);
  assert.deepEqual(byRule.get(terms[1]!.ruleId), [onlyHttp]);
});
