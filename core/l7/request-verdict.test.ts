// One HTTP request against a direction's HTTP inspection: not inspected, every request allowed, the first matching rule, or 403.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { HttpInspection, HttpPart } from "../evaluator.ts";
import type { Rule } from "../model.ts";
import { requestFromRaw } from "./http-request.ts";
import { httpRulePath, requestVerdict } from "./request-verdict.ts";

const rule = (name: string, path: string): Rule => ({
  direction: "ingress",
  verdict: "allow",
  peers: [{ kind: "any" }],
  ports: [],
  icmps: [],
  requires: [],
  origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name, ruleIndex: 0, path },
});
const a: HttpPart = { rule: rule("a", "spec.ingress[0]"), portRule: 1, http: [{ method: "GET", path: "/a" }, { method: "GET", path: "/.*" }] };
const b: HttpPart = { rule: rule("b", "spec.ingress[2]"), portRule: 0, http: [{ method: "GET", path: "/a" }] };
const get = (p: string, method = "GET") => requestFromRaw(method, p, ["Host", "x"]);

test("the first matching HTTP rule in policy order allows, the others matching are named too; none matching is a 403 naming every rule tried", () => {
  const http: HttpInspection = { kind: "http", parts: [a, b] };
  const v = requestVerdict(http, get("/a"));
  assert.equal(v.kind, "allowed");
  if (v.kind === "allowed") {
    assert.equal(httpRulePath(v.by), "spec.ingress[0].toPorts[1].rules.http[0]");
    assert.deepEqual(v.also.map(httpRulePath), ["spec.ingress[0].toPorts[1].rules.http[1]", "spec.ingress[2].toPorts[0].rules.http[0]"]);
  }
  const d = requestVerdict(http, get("/a", "POST"));
  assert.equal(d.kind, "denied");
  if (d.kind === "denied") assert.equal(d.rules.length, 3);
});

test("no HTTP part: not inspected; a lifting rule: every request, with the HTTP rules it makes moot", () => {
  assert.deepEqual(requestVerdict({ kind: "none" }, get("/a")), { kind: "not-inspected" });
  const lifted = requestVerdict({ kind: "every-request", by: b.rule.origin, parts: [a] }, get("/nothing", "DELETE"));
  assert.equal(lifted.kind, "every-request");
  if (lifted.kind === "every-request") assert.deepEqual(lifted.lifted.map(httpRulePath), ["spec.ingress[0].toPorts[1].rules.http[0]", "spec.ingress[0].toPorts[1].rules.http[1]"]);
});
