// What the parser remembers between objects (checked peer selectors, checked regexes) never changes a result: options still count, errors come back every time.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Peer, Policy, Selector } from "../model.ts";
import { type LabelSelectorInput, selectorFrom } from "../selector.ts";
import { parsePolicyObject } from "./index.ts";

function cnp(namespace: string, spec: Record<string, unknown>, kind = "CiliumNetworkPolicy"): unknown {
  return { apiVersion: "cilium.io/v2", kind, metadata: { name: "p", ...(kind === "CiliumNetworkPolicy" ? { namespace } : {}) }, spec };
}

function parsed(obj: unknown): Policy {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(`rejected: ${JSON.stringify(r.errors)}`);
  assert.equal(r.value.length, 1);
  return r.value[0] as Policy;
}

function peerSelector(p: Policy, rule = 0): Selector {
  const peer = p.rules[rule]?.peers[0] as Peer | undefined;
  if (peer?.kind !== "selector") assert.fail(`rule ${rule} has no selector peer`);
  return peer.selector;
}

const web = { matchLabels: { app: "web" } };

test("the same peer selector text in two namespaces gives each policy its own namespace", () => {
  for (let round = 0; round < 2; round++) {
    for (const ns of ["team-a", "team-b"]) {
      const p = parsed(cnp(ns, { endpointSelector: {}, ingress: [{ fromEndpoints: [web] }] }));
      assert.equal(peerSelector(p).canonical, selectorFrom(web, { role: "peer", namespace: ns }).canonical, `${ns}, round ${round}`);
    }
  }
});

test("the same peer selector text under a subject that selects reserved:init, or not, keeps Cilium's namespace defaulting apart", () => {
  const peers = { ingress: [{ fromEndpoints: [web] }] };
  const plain = parsed(cnp("", { endpointSelector: { matchLabels: { app: "db" } }, ...peers }, "CiliumClusterwideNetworkPolicy"));
  const init = parsed(cnp("", { endpointSelector: { matchLabels: { "reserved:init": "" } }, ...peers }, "CiliumClusterwideNetworkPolicy"));
  const again = parsed(cnp("", { endpointSelector: { matchLabels: { app: "db" } }, ...peers }, "CiliumClusterwideNetworkPolicy"));
  assert.equal(peerSelector(plain).canonical, selectorFrom(web, { role: "peer" }).canonical);
  assert.equal(peerSelector(init).canonical, selectorFrom(web, { role: "peer", subjectSelectsInit: true }).canonical);
  assert.notEqual(peerSelector(plain).canonical, peerSelector(init).canonical);
  assert.equal(peerSelector(again).canonical, peerSelector(plain).canonical);
});

test("the same selector text in fromEndpoints and fromRequires keeps the reserved-label exemption to endpoints", () => {
  const host = { matchLabels: { "reserved:host": "" } };
  const p = parsed(cnp("team-a", { endpointSelector: {}, ingress: [{ fromEndpoints: [host] }, { fromRequires: [host], fromEntities: ["cluster"] }] }));
  assert.equal(peerSelector(p, 0).canonical, selectorFrom(host, { role: "peer", namespace: "team-a" }).canonical);
  assert.equal(p.rules[1]?.requires[0]?.canonical, selectorFrom(host, { role: "peer", namespace: "team-a", requires: true }).canonical);
  assert.notEqual(peerSelector(p, 0).canonical, p.rules[1]?.requires[0]?.canonical);
});

test("an invalid selector or regex is reported with its path on every parse, also after a valid one with the same labels", () => {
  parsed(cnp("team-a", { endpointSelector: {}, ingress: [{ fromEndpoints: [web] }] }));
  const bad = cnp("team-a", {
    endpointSelector: {},
    ingress: [
      { fromEndpoints: [{ matchLabels: { app: "web" }, extra: true }] },
      { fromEndpoints: [{ matchLabels: { app: 7 } }] },
      { fromEndpoints: [{ matchLabels: null, matchExpressions: [{ key: "app", operator: "In" }] }] },
      { toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ path: "(?=x)" }, { path: "a(" }] } }] },
    ],
  });
  const expected = [
    { path: "spec.ingress[0].fromEndpoints[0].extra", message: 'unknown field "extra"' },
    { path: 'spec.ingress[1].fromEndpoints[0].matchLabels["app"]', message: 'label value must be a string, not a number (quote it: "7")' },
    { path: "spec.ingress[2].fromEndpoints[0].matchExpressions[0].values", message: "operator In needs at least one value" },
    { path: "spec.ingress[3].toPorts[0].rules.http[0].path", message: "\"(?=x)\" uses a lookaround, which Cilium's regular expressions (RE2) do not support" },
    { path: "spec.ingress[3].toPorts[0].rules.http[1].path", message: '"a(" is not a valid regular expression: Unterminated group' },
  ];
  for (let round = 0; round < 3; round++) {
    const r = parsePolicyObject(bad);
    assert.equal(r.ok, false);
    if (!r.ok) assert.deepEqual(r.errors, expected, `round ${round}`);
  }
});

test("selectors written as a prefix or an extension of a remembered one, or with the same strings in other fields, each get their own selector", () => {
  const written: LabelSelectorInput[] = [
    { matchLabels: { app: "web" } },
    { matchLabels: { app: "web", tier: "db" } },
    { matchLabels: { app: "web" }, matchExpressions: [{ key: "tier", operator: "Exists" }] },
    { matchExpressions: [{ key: "app", operator: "In", values: ["web"] }] },
    { matchExpressions: [{ key: "app", operator: "In", values: ["web", "db"] }] },
    { matchLabels: { app: "web", web: "app" } },
    {},
  ];
  for (let round = 0; round < 2; round++) {
    for (const s of written) {
      const p = parsed(cnp("team-a", { endpointSelector: {}, ingress: [{ fromEndpoints: [s] }] }));
      assert.equal(peerSelector(p).canonical, selectorFrom(s, { role: "peer", namespace: "team-a" }).canonical, `${JSON.stringify(s)}, round ${round}`);
    }
  }
});
