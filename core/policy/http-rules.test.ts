// The HTTP part of a subject's compiled policy: what the operator sends the node's L7 proxy, how it travels in snapshots and deltas, and the union of the HTTP rules allowing one key.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { PolicyCompiler, compileAll, policyKey } from "../compiler.ts";
import { parseDownstream } from "../wire.ts";
import { EMPTY_STATE, applyDelta, diffState } from "../nodestate.ts";
import { httpRulesAt, sameSubjectHttp, tlsAt } from "./http-rules.ts";
import { lookup } from "./mapstate.ts";
import { compileHttpRules, decideHttp } from "../l7/http-decision.ts";
import { requestFromRaw } from "../l7/http-request.ts";

const pod = (cls: string, org: string): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "default"), label("k8s", "class", cls), label("k8s", "org", org), label("k8s", "io.cilium.k8s.policy.cluster", "default")]);
const DEATHSTAR = 300;
const XWING = 301;
const TIEFIGHTER = 302;
const ids = new Map<number, LabelSet>([
  [DEATHSTAR, pod("deathstar", "empire")],
  [XWING, pod("xwing", "alliance")],
  [TIEFIGHTER, pod("tiefighter", "empire")],
]);

function parse(spec: unknown, name = "rule1"): Policy[] {
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "default", uid: "u1", generation: 1 }, spec });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

// Cilium's star-wars demo, as its documentation writes it (an ingress rule on the deathstar).
const SPEC = {
  endpointSelector: { matchLabels: { org: "empire", class: "deathstar" } },
  ingress: [
    {
      fromEndpoints: [{ matchLabels: { org: "empire" } }],
      toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "POST", path: "/v1/request-landing" }] } }],
    },
  ],
};

test("a subject's compiled policy carries the HTTP rules of each L7 allow rule, under the ruleId its proxied entries carry", () => {
  const c = compileAll(parse(SPEC), ids);
  const p = c.snapshot(DEATHSTAR);
  const proxied = p.entries.filter((e) => e.proxyPort !== 0);
  assert.ok(proxied.length > 0, "the port is proxied");
  assert.deepEqual(p.http, [{ ruleId: proxied[0]!.ruleId, portRule: 0, direction: "ingress", rules: [{ method: "POST", path: "/v1/request-landing" }], proxyPorts: [proxied[0]!.proxyPort] }]);
  assert.equal(c.snapshot(XWING).http, undefined, "a subject without HTTP rules has no HTTP part");
});

test("each toPorts entry's HTTP rules judge only its own ports (Cilium's filters are per port); egress rules are carried with their direction; denies give none", () => {
  const c = compileAll(
    parse({
      endpointSelector: { matchLabels: { class: "xwing" } },
      egress: [
        {
          toEndpoints: [{ matchLabels: { class: "deathstar" } }],
          toPorts: [
            { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/v1/.*" }] } },
            { ports: [{ port: "8080", protocol: "TCP" }], rules: { http: [{ headers: ["X-Token"] }] } },
            { ports: [{ port: "9090", protocol: "TCP" }] },
          ],
        },
      ],
      egressDeny: [{ toEndpoints: [{ matchLabels: { class: "tiefighter" } }] }],
    }),
    ids,
  );
  const p = c.snapshot(XWING);
  assert.deepEqual(p.http?.map((r) => [r.direction, r.portRule, r.rules]), [
    ["egress", 0, [{ method: "GET", path: "/v1/.*" }]],
    ["egress", 1, [{ headers: ["X-Token"] }]],
  ]);
  const rulesAt = (port: number) => httpRulesAt(p, lookup(p, "egress", DEATHSTAR, 6, port).entry!).map((r) => r.rule);
  assert.deepEqual(rulesAt(80), [{ method: "GET", path: "/v1/.*" }], "port 80 does not take the X-Token rule of port 8080");
  assert.deepEqual(rulesAt(8080), [{ headers: ["X-Token"] }]);
  assert.equal(lookup(p, "egress", DEATHSTAR, 6, 9090).entry?.proxyPort, 0, "the entry without L7 rules is a plain allow, not the rule's HTTP");
});

test("changing a policy's HTTP rules is in the subject's delta even when no map entry moves", () => {
  const c = new PolicyCompiler();
  for (const [id, l] of ids) c.upsertIdentity(id, l);
  const key = policyKey({ kind: "CiliumNetworkPolicy", namespace: "default", name: "rule1" });
  c.upsertPolicy(key, parse(SPEC));
  const changed = { ...SPEC, ingress: [{ ...SPEC.ingress[0], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "PUT", path: "/v1/exhaust-port" }] } }] }] };
  const d = c.upsertPolicy(key, parse(changed)).find((x) => x.subject === DEATHSTAR);
  assert.ok(d, "the subject has a delta");
  assert.deepEqual([d.added, d.removed], [[], []], "no map entry moved");
  assert.deepEqual(d.http?.[0]?.rules, [{ method: "PUT", path: "/v1/exhaust-port" }]);
  c.removePolicy(key);
  assert.equal(c.snapshot(DEATHSTAR).http, undefined);
});

test("the HTTP part travels in snapshots and deltas: the agent's record follows it, and diffState sees a change of it alone", () => {
  const c = compileAll(parse(SPEC), ids);
  const before = { ...EMPTY_STATE, policies: [c.snapshot(DEATHSTAR)] };
  const without = { ...EMPTY_STATE, policies: [{ ...c.snapshot(DEATHSTAR), http: undefined }] };
  const delta = diffState(without, before);
  assert.equal(delta.subjects.length, 1);
  assert.ok(sameSubjectHttp(delta.subjects[0]!.http, before.policies[0]!.http));
  assert.ok(sameSubjectHttp(applyDelta(without, delta).policies[0]!.http, before.policies[0]!.http));
  assert.equal(applyDelta(before, diffState(before, without)).policies[0]!.http, undefined, "a delta without an HTTP part clears it");
  const snap = parseDownstream(JSON.parse(JSON.stringify({ type: "snapshot", version: 1, nonce: "n", state: before })));
  assert.ok(snap.ok);
  assert.ok(sameSubjectHttp(snap.value.type === "snapshot" ? snap.value.state.policies[0]!.http : undefined, before.policies[0]!.http));
});

test("the agent refuses a malformed HTTP part, naming the field", () => {
  const p = compileAll(parse(SPEC), ids).snapshot(DEATHSTAR);
  const bad = (http: unknown): string => {
    const r = parseDownstream({ type: "snapshot", version: 1, nonce: "n", state: { ...EMPTY_STATE, policies: [{ ...p, http }] } });
    assert.ok(!r.ok);
    return `${r.errors[0]!.path}: ${r.errors[0]!.message}`;
  };
  assert.equal(bad([{ ruleId: 1, direction: "up", rules: [] }]), "state.policies[0].http[0].direction: must be one of ingress, egress");
  assert.equal(bad([{ ruleId: 1, direction: "ingress", rules: [{ method: 5 }] }]), "state.policies[0].http[0].rules[0].method: must be a string");
  assert.equal(
    bad([{ ruleId: 1, direction: "ingress", rules: [{ headerMatches: [{ name: "X", mismatch: "DROP" }] }] }]),
    "state.policies[0].http[0].rules[0].headerMatches[0].mismatch: must be one of LOG, ADD, DELETE, REPLACE",
  );
  assert.equal(bad({}), "state.policies[0].http: must be a list");
  assert.equal(bad([{ ruleId: 1, direction: "ingress", rules: [], proxyPorts: [0] }]), "state.policies[0].http[0].proxyPorts[0]: must be a port number (1 to 65535)");
  assert.equal(bad([{ ruleId: 1, direction: "ingress", rules: [], proxyPorts: 10000 }]), "state.policies[0].http[0].proxyPorts: must be a list");
});

// ----- two rules allowing one key with HTTP rules: ORed (Cilium: policies are additive) -----

const landing = (name: string, http: unknown[], from: unknown = { fromEndpoints: [{ matchLabels: { org: "alliance" } }] }, port: Record<string, string | number> = { port: "80", protocol: "TCP" }) =>
  parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ ...(from as object), toPorts: [{ ports: [port], rules: { http } }] }] }, name);

/** What the deathstar's ingress does with one request from `peer` to TCP `port`: the datapath's lookup, then the proxy's rules on the entry's port. */
function judge(c: PolicyCompiler, peer: number, method: string, path: string, port = 80): string {
  const p = c.snapshot(DEATHSTAR);
  const hit = lookup(p, "ingress", peer, 6, port);
  if (hit.verdict === "deny") return "dropped";
  if (!hit.entry || hit.entry.proxyPort === 0) return "allowed (L4)";
  const d = decideHttp(requestFromRaw(method, path, ["Host", "deathstar"]), compileHttpRules(httpRulesAt(p, hit.entry)));
  return d.verdict === "deny" ? "403" : `allowed by ${c.ruleOrigin(d.ruleId)?.name}[${d.index}]`;
}

function compiler(...policies: Policy[][]): PolicyCompiler {
  const c = new PolicyCompiler();
  for (const [id, l] of ids) c.upsertIdentity(id, l);
  for (const parts of policies) c.upsertPolicy(policyKey(parts[0]!), parts);
  return c;
}

test("two policies allowing the same peer and port with HTTP rules are ORed: GET /a and GET /b pass, each named by its own rule, GET /c is refused", () => {
  const a = landing("a", [{ method: "GET", path: "/a" }]);
  const b = landing("b", [{ method: "GET", path: "/b" }]);
  for (const order of [[a, b], [b, a]]) {
    const c = compiler(...order);
    assert.equal(judge(c, XWING, "GET", "/a"), "allowed by a[0]");
    assert.equal(judge(c, XWING, "GET", "/b"), "allowed by b[0]");
    assert.equal(judge(c, XWING, "GET", "/c"), "403");
    assert.equal(judge(c, XWING, "POST", "/a"), "403");
    const p = c.snapshot(DEATHSTAR);
    const port = lookup(p, "ingress", XWING, 6, 80).entry!.proxyPort;
    assert.deepEqual(p.http?.map((r) => [c.ruleOrigin(r.ruleId)?.name, r.proxyPorts]), [["a", [port]], ["b", [port]]], "one port for the union, listed by both rules");
  }
});

test("two rules of one policy on the same peer and port are ORed too", () => {
  const c = compileAll(
    parse({
      endpointSelector: { matchLabels: { class: "deathstar" } },
      ingress: [
        { fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/a" }] } }] },
        { fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/b" }] } }] },
      ],
    }),
    ids,
  );
  const p = c.snapshot(DEATHSTAR);
  const at = (path: string): string => {
    const e = lookup(p, "ingress", XWING, 6, 80).entry!;
    const d = decideHttp(requestFromRaw("GET", path, []), compileHttpRules(httpRulesAt(p, e)));
    return d.verdict === "allow" ? c.ruleOrigin(d.ruleId)!.path : "403";
  };
  assert.deepEqual([at("/a"), at("/b"), at("/c")], ["spec.ingress[0]", "spec.ingress[1]", "403"]);
});

test("an any-peer HTTP rule is ORed into a specific peer's: that peer gets both, another peer only the any-peer rule", () => {
  const specific = landing("specific", [{ method: "GET", path: "/a" }]);
  const anyPeer = landing("any-peer", [{ method: "GET", path: "/b" }], {});
  for (const order of [[specific, anyPeer], [anyPeer, specific]]) {
    const c = compiler(...order);
    assert.equal(judge(c, XWING, "GET", "/a"), "allowed by specific[0]");
    assert.equal(judge(c, XWING, "GET", "/b"), "allowed by any-peer[0]", "the lookup stops at the x-wing's entry: the any-peer rule must be in its port's rules");
    assert.equal(judge(c, XWING, "GET", "/c"), "403");
    assert.equal(judge(c, TIEFIGHTER, "GET", "/b"), "allowed by any-peer[0]");
    assert.equal(judge(c, TIEFIGHTER, "GET", "/a"), "403", "the specific rule does not select the tie fighter");
  }
});

test("an any-peer HTTP rule on one port of a specific peer's port range: that port gets both rules, the rest of the range only the specific rule", () => {
  const c = compiler(landing("range", [{ path: "/a" }], undefined, { port: "80", endPort: 83, protocol: "TCP" }), landing("any-peer", [{ path: "/b" }], {}, { port: "82", protocol: "TCP" }));
  assert.equal(judge(c, XWING, "GET", "/b", 82), "allowed by any-peer[0]");
  assert.equal(judge(c, XWING, "GET", "/a", 82), "allowed by range[0]");
  assert.equal(judge(c, XWING, "GET", "/b", 83), "403");
  assert.equal(judge(c, XWING, "GET", "/a", 83), "allowed by range[0]");
  assert.equal(judge(c, TIEFIGHTER, "GET", "/b", 82), "allowed by any-peer[0]");
  assert.equal(judge(c, TIEFIGHTER, "GET", "/a", 80), "dropped");
});

test("an any-peer HTTP rule added after a specific one reaches the specific peer's entry in the delta (and goes again when removed)", () => {
  const c = compiler(landing("specific", [{ path: "/a" }]));
  const alone = lookup(c.snapshot(DEATHSTAR), "ingress", XWING, 6, 80).entry!.proxyPort;
  const anyPeer = landing("any-peer", [{ path: "/b" }], {});
  const d = c.upsertPolicy(policyKey(anyPeer[0]!), anyPeer).find((x) => x.subject === DEATHSTAR)!;
  const union = d.added.find((e) => e.peer === XWING && e.port === 80)?.proxyPort;
  assert.ok(union !== undefined && union !== alone, "the x-wing's entry moves to the union's port");
  assert.deepEqual(d.http?.map((r) => r.proxyPorts?.includes(union)), [true, true]);
  assert.equal(judge(c, XWING, "GET", "/b"), "allowed by any-peer[0]");
  const gone = c.removePolicy(policyKey(anyPeer[0]!)).find((x) => x.subject === DEATHSTAR)!;
  assert.equal(gone.added.find((e) => e.peer === XWING && e.port === 80)?.proxyPort, alone, "back on the specific rule's own port");
  assert.equal(judge(c, XWING, "GET", "/b"), "403");
});

test("removing one of two policies shrinks the union: its requests are refused, the entry leaves the union's port, and that port is not kept", () => {
  const a = landing("a", [{ path: "/a" }]);
  const b = landing("b", [{ path: "/b" }]);
  const c = compiler(a, b);
  const union = lookup(c.snapshot(DEATHSTAR), "ingress", XWING, 6, 80).entry!.proxyPort;
  const d = c.removePolicy(policyKey(b[0]!)).find((x) => x.subject === DEATHSTAR)!;
  const now = d.added.find((e) => e.peer === XWING && e.port === 80)?.proxyPort;
  assert.ok(now !== undefined && now !== union, "the entry is rewritten to the remaining rule's port");
  assert.deepEqual(d.http?.map((r) => r.proxyPorts), [[now]], "the union's port is listed nowhere: freed");
  assert.equal(judge(c, XWING, "GET", "/a"), "allowed by a[0]");
  assert.equal(judge(c, XWING, "GET", "/b"), "403");
  // A new union on another subject can have the freed port: it is no one's any more.
  const other = parse({ endpointSelector: { matchLabels: { class: "tiefighter" } }, ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{}] } }] }] }, "tf");
  c.upsertPolicy(policyKey(other[0]!), other);
  assert.ok(c.snapshot(TIEFIGHTER).entries.some((e) => e.proxyPort === union), "the lowest free port is the union's old one");
});

test("the union's port is stable across recompiles while its rules do not change", () => {
  const a = landing("a", [{ path: "/a" }]);
  const b = landing("b", [{ path: "/b" }]);
  const c = compiler(a, b);
  const port = lookup(c.snapshot(DEATHSTAR), "ingress", XWING, 6, 80).entry!.proxyPort;
  assert.deepEqual(c.upsertPolicy(policyKey(a[0]!), a).flatMap((d) => [...d.added, ...d.removed]), []);
  assert.deepEqual(c.recompileAll().flatMap((d) => [...d.added, ...d.removed]), []);
  const changed = landing("a", [{ path: "/a2" }]);
  assert.deepEqual(c.upsertPolicy(policyKey(changed[0]!), changed).flatMap((d) => [...d.added, ...d.removed]), [], "new HTTP rules, same rules allowing the key: same port");
  assert.equal(lookup(c.snapshot(DEATHSTAR), "ingress", XWING, 6, 80).entry!.proxyPort, port);
  assert.equal(judge(c, XWING, "GET", "/a2"), "allowed by a[0]");
});

test("with two HTTP rules on the key, an L4-only allow of the same peer and port still allows every request, and a deny still drops", () => {
  const a = landing("a", [{ path: "/a" }]);
  const b = landing("b", [{ path: "/b" }]);
  const l4 = parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }, "l4");
  const c = compiler(a, l4, b);
  assert.equal(judge(c, XWING, "GET", "/c"), "allowed (L4)");
  const deny = parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }, "deny");
  assert.equal(judge(compiler(a, b, deny), XWING, "GET", "/a"), "dropped");
  const anyDeny = parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingressDeny: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }, "deny-all");
  assert.equal(judge(compiler(a, landing("any-peer", [{ path: "/b" }], {}), anyDeny), XWING, "GET", "/a"), "dropped");
});

// ----- an allow without L7 rules lifts the HTTP rules of the flows it covers, whatever its width (Cilium) -----

const plainAllow = (name: string, rule: unknown) => parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [rule] }, name);

test("an L4-only allow from every endpoint on port 80 lifts the empire's GET /public there: every request of the tie fighter passes, not through the proxy", () => {
  const publicOnly = landing("public", [{ method: "GET", path: "/public" }], { fromEndpoints: [{ matchLabels: { org: "empire" } }] });
  for (const everyone of [{ fromEndpoints: [{}] }, {}]) {
    const l4 = plainAllow("l4-all", { ...everyone, toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] });
    for (const order of [[publicOnly, l4], [l4, publicOnly]]) {
      const c = compiler(...order);
      assert.equal(judge(c, TIEFIGHTER, "PUT", "/private"), "allowed (L4)", `${JSON.stringify(everyone)}: the L4-only rule selects the tie fighter too`);
      assert.equal(judge(c, XWING, "PUT", "/private"), "allowed (L4)");
      assert.equal(judge(c, TIEFIGHTER, "PUT", "/private", 81), "dropped", "port 81 is allowed by neither");
      assert.equal(c.snapshot(DEATHSTAR).entries.filter((e) => e.proxyPort !== 0).length, 0, "nothing is redirected");
    }
  }
});

test("a narrower L4-only allow under a wider HTTP rule: the empire's requests all pass, everyone else's meet GET /public", () => {
  const c = compiler(
    landing("public", [{ method: "GET", path: "/public" }], { fromEndpoints: [{}] }),
    plainAllow("l4-empire", { fromEndpoints: [{ matchLabels: { org: "empire" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }),
  );
  assert.equal(judge(c, TIEFIGHTER, "PUT", "/private"), "allowed (L4)");
  assert.equal(judge(c, XWING, "GET", "/public"), "allowed by public[0]");
  assert.equal(judge(c, XWING, "PUT", "/private"), "403");
});

test("an allow of the same peer over a wider key (a port range, every port, an L3-only rule) lifts its HTTP rules on the port; the rest of a range stays as it was", () => {
  const http = landing("http", [{ method: "GET", path: "/public" }], { fromEndpoints: [{ matchLabels: { class: "xwing" } }] }, { port: "80", endPort: 95, protocol: "TCP" });
  const cases: [string, unknown][] = [
    ["range", { fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "82", endPort: 83, protocol: "TCP" }] }] }],
    ["all TCP ports", { fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "0", protocol: "TCP" }] }] }],
    ["L3-only", { fromEndpoints: [{ matchLabels: { org: "alliance" } }] }],
    ["any peer, range", { toPorts: [{ ports: [{ port: "82", endPort: 83, protocol: "ANY" }] }] }],
  ];
  for (const [what, rule] of cases) {
    const c = compiler(http, plainAllow("wide", rule));
    assert.equal(judge(c, XWING, "PUT", "/private", 82), "allowed (L4)", what);
    assert.equal(judge(c, XWING, "PUT", "/private", 83), "allowed (L4)", what);
    const narrow = what === "range" || what === "any peer, range";
    assert.equal(judge(c, XWING, "PUT", "/private", 84), narrow ? "403" : "allowed (L4)", what);
    assert.equal(judge(c, XWING, "GET", "/public", 90), narrow ? "allowed by http[0]" : "allowed (L4)", what);
  }
});

test("one rule's toPorts entry without L7 rules lifts its own HTTP entry on the same port", () => {
  const c = compiler(
    parse(
      {
        endpointSelector: { matchLabels: { class: "deathstar" } },
        ingress: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }, { ports: [{ port: "80", protocol: "TCP" }] }] }],
      },
      "mixed",
    ),
  );
  assert.equal(judge(c, XWING, "PUT", "/x"), "allowed (L4)");
});

test("a lifted port still drops what a deny covers, and the HTTP rules come back when the L4-only allow goes", () => {
  const http = landing("http", [{ method: "GET", path: "/public" }]);
  const l4 = plainAllow("l4-all", { toPorts: [{ ports: [{ port: "0", protocol: "TCP" }] }] });
  const deny = parse({ endpointSelector: { matchLabels: { class: "deathstar" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] }, "deny");
  assert.equal(judge(compiler(http, l4, deny), XWING, "GET", "/public"), "dropped");
  const c = compiler(http, l4);
  assert.equal(judge(c, XWING, "PUT", "/private"), "allowed (L4)");
  const d = c.removePolicy(policyKey(l4[0]!)).find((x) => x.subject === DEATHSTAR)!;
  assert.ok(d.added.some((e) => e.peer === XWING && e.port === 80 && e.proxyPort !== 0), "the x-wing's entry is redirected again in the delta");
  assert.equal(judge(c, XWING, "PUT", "/private"), "403");
  c.upsertPolicy(policyKey(l4[0]!), l4);
  assert.equal(judge(c, XWING, "PUT", "/private"), "allowed (L4)", "and lifted again by the incremental path");
});

test("a subject's rules without proxy ports (an operator from before the union): the entry's own rule judges its port", () => {
  const c = compiler(landing("a", [{ path: "/a" }]));
  const p = c.snapshot(DEATHSTAR);
  const e = lookup(p, "ingress", XWING, 6, 80).entry!;
  const old = { ...p, http: p.http!.map(({ proxyPorts: _, ...r }) => r) };
  assert.deepEqual(httpRulesAt(old, e), httpRulesAt(p, e));
  assert.deepEqual(httpRulesAt(old, { ...e, ruleId: e.ruleId + 100 }), [], "no rule of that id: nothing (the proxy refuses every request)");
  assert.deepEqual(httpRulesAt(p, { ...e, proxyPort: 0 }), [], "no proxy port: no HTTP rules");
});

test("a rule's TLS travels with its HTTP rules (Secret namespace defaulted to the policy's), and a change of the operator's material is a change", () => {
  const spec = {
    endpointSelector: { matchLabels: { class: "xwing" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { class: "deathstar" } }],
        toPorts: [
          {
            ports: [{ port: "443", protocol: "TCP" }],
            terminatingTLS: { secret: { name: "api-tls" } },
            originatingTLS: { secret: { namespace: "kube-system", name: "outside-ca" }, trustedCA: "bundle.pem" },
            serverNames: ["api.example.com"],
            rules: { http: [{ method: "GET" }] },
          },
        ],
      },
    ],
  };
  const http = compileAll(parse(spec), ids).snapshot(XWING).http!;
  assert.deepEqual(http[0]!.tls, {
    terminating: { secret: { namespace: "default", name: "api-tls" } },
    originating: { secret: { namespace: "kube-system", name: "outside-ca" }, trustedCA: "bundle.pem" },
    serverNames: ["api.example.com"],
  });
  const withMaterial = (pem: string) => http.map((r) => ({ ...r, tls: { ...r.tls!, terminating: { ...r.tls!.terminating!, material: { certificate: pem, privateKey: "k" } } } }));
  assert.ok(sameSubjectHttp(withMaterial("a"), withMaterial("a")));
  assert.ok(!sameSubjectHttp(withMaterial("a"), withMaterial("b")), "a rotated Secret reaches the node");
  assert.ok(!sameSubjectHttp(http, withMaterial("a")));
  // It passes the agent's edge, and a malformed one is refused naming the field (never its value).
  const state = { ...EMPTY_STATE, policies: [{ subject: XWING, ingressEnforced: false, egressEnforced: true, entries: [], http: withMaterial("a") }] };
  assert.ok(parseDownstream({ type: "snapshot", version: 1, nonce: "n", state }).ok);
  const bad = parseDownstream({ type: "snapshot", version: 1, nonce: "n", state: { ...state, policies: [{ ...state.policies[0]!, http: [{ ...http[0]!, tls: { terminating: { secret: { namespace: "default", name: "api-tls" }, material: { certificate: 7 } } } }] }] } });
  assert.ok(!bad.ok);
  assert.equal(bad.errors[0]!.path, "state.policies[0].http[0].tls.terminating.material.certificate");
});

test("one rule's HTTP toPorts entries on different ports carry their own TLS: each port is inspected with its own Secret", () => {
  const entry = (port: string, secret: string) => ({ ports: [{ port, protocol: "TCP" }], terminatingTLS: { secret: { name: secret } }, rules: { http: [{ method: "GET" }] } });
  const c = compileAll(parse({ endpointSelector: { matchLabels: { class: "xwing" } }, egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [entry("443", "a-tls"), entry("8443", "b-tls")] }] }), ids);
  const p = c.snapshot(XWING);
  const secretAt = (port: number) => {
    const tls = tlsAt(p, lookup(p, "egress", DEATHSTAR, 6, port).entry!);
    return tls === "conflict" ? tls : tls?.terminating?.secret.name;
  };
  assert.equal(secretAt(443), "a-tls");
  assert.equal(secretAt(8443), "b-tls");
});

test("serverNames alone (no HTTP rules, no terminating or originating TLS) steer the port to the L7 proxy with the names to judge the SNI by; an L4-only allow of the same port lifts them, as it lifts HTTP rules", () => {
  const spec = (extra: unknown[] = []) => ({
    endpointSelector: { matchLabels: { class: "xwing" } },
    egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], serverNames: ["api.example.com", "*.cdn.example.com"] }] }, ...extra],
  });
  const p = compileAll(parse(spec()), ids).snapshot(XWING);
  const e = p.entries.find((x) => x.peer === DEATHSTAR && x.port === 443 && x.verdict === "allow");
  assert.ok(e && e.proxyPort !== 0, "the port is proxied");
  assert.deepEqual(p.http, [{ ruleId: e.ruleId, portRule: 0, direction: "egress", rules: [], tls: { serverNames: ["api.example.com", "*.cdn.example.com"] }, proxyPorts: [e.proxyPort] }]);
  assert.deepEqual(httpRulesAt(p, e), []);
  assert.deepEqual(tlsAt(p, e), { serverNames: ["api.example.com", "*.cdn.example.com"] });
  const lifted = compileAll(parse(spec([{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] }])), ids).snapshot(XWING);
  assert.ok(lifted.entries.filter((x) => x.peer === DEATHSTAR && x.port === 443).every((x) => x.proxyPort === 0), "an L4-only allow of the port: a plain allow");
});
