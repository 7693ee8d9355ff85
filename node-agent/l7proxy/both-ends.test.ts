// A request through a connection whose both ends have HTTP rules: judged by the client's egress rules, then the destination's ingress rules, one flow per side.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyHeaderActions, compileHttpRules } from "../../core/l7/http-decision.ts";
import { requestFromRaw } from "../../core/l7/http-request.ts";
import type { OriginalDestination } from "../bpf/redirect.ts";
import { decideSides, sideFlows, sidesOf } from "./both-ends.ts";
import type { HttpFlow } from "./http-proxy.ts";

const EGRESS = 10081;
const INGRESS = 10080;
const rules = new Map([
  [EGRESS, compileHttpRules([{ ruleId: 7, index: 0, rule: { method: "POST|PUT", headerMatches: [{ name: "x-side", value: "egress", mismatch: "ADD" }] } }])],
  [INGRESS, compileHttpRules([{ ruleId: 9, index: 0, rule: { method: "POST", path: "/v1/request-landing" } }, { ruleId: 9, index: 1, rule: { method: "GET", headers: ["X-Side: egress"] } }])],
]);
const rulesOf = (p: number) => rules.get(p) ?? [];
const orig: OriginalDestination = { ip: "10.0.0.2", port: 80, proxyPort: EGRESS, subject: 1000, ruleId: 70, ingress: { proxyPort: INGRESS, ruleId: 90 } };
const apply = (h: Parameters<typeof applyHeaderActions>[0], d: { actions: Parameters<typeof applyHeaderActions>[1] }) => applyHeaderActions(h, d.actions);
const req = (method: string, path: string, headers: string[] = []) => requestFromRaw(method, path, ["Host", "deathstar", ...headers]);

test("the connection's sides: its own port, then the destination's ingress port the datapath's record names; one side without it", () => {
  assert.deepEqual(sidesOf(EGRESS, false, orig, rulesOf).map((s) => [s.port, s.ingress, s.ruleId]), [[EGRESS, false, 70], [INGRESS, true, 90]]);
  const { ingress: _ingress, ...alone } = orig;
  assert.deepEqual(sidesOf(EGRESS, false, alone, rulesOf).map((s) => [s.port, s.ingress, s.ruleId]), [[EGRESS, false, 70]]);
});

test("a request both sides allow is allowed; one either side denies is denied, the ingress side not asked after an egress denial", () => {
  const sides = sidesOf(EGRESS, false, orig, rulesOf);
  const both = decideSides(req("POST", "/v1/request-landing"), sides, apply);
  assert.equal(both.decision.verdict, "allow");
  assert.equal(both.judged.length, 2);
  const ingressDenies = decideSides(req("PUT", "/v1/exhaust-port"), sides, apply);
  assert.deepEqual([ingressDenies.decision.verdict, ingressDenies.judged.map((j) => j.decision.verdict)], ["deny", ["allow", "deny"]]);
  const egressDenies = decideSides(req("GET", "/v1/ships"), sides, apply);
  assert.deepEqual([egressDenies.decision.verdict, egressDenies.judged.map((j) => j.decision.verdict)], ["deny", ["deny"]]);
});

test("the ingress side judges the request as the egress side forwards it (its header actions applied), and the actions add up in order", () => {
  const sides = [{ port: EGRESS, ingress: false, ruleId: 70, rules: compileHttpRules([{ ruleId: 7, index: 0, rule: { method: "GET", headerMatches: [{ name: "x-side", value: "egress", mismatch: "ADD" }] } }]) }, sidesOf(EGRESS, false, orig, rulesOf)[1]!];
  const d = decideSides(req("GET", "/v1/ships"), sides, apply);
  assert.equal(d.decision.verdict, "allow", "X-Side: egress was added by the egress side's rule, so the ingress rule's header matches");
  assert.ok(d.decision.verdict === "allow" && d.decision.actions.some((a) => a.name.toLowerCase() === "x-side"));
});

test("one flow per side that judged: a denying side says denied, an allowing side reports what the client got with its own rule, port and entry", () => {
  const got: [string, number, Partial<HttpFlow>][] = [];
  const sides = sidesOf(EGRESS, false, orig, rulesOf);
  const report = (v: HttpFlow["verdict"], s: number, extra: Partial<HttpFlow> = {}): void => void got.push([v, s, extra]);
  const denied = [{ name: "content-type", value: "text/plain" }];
  sideFlows(decideSides(req("PUT", "/v1/exhaust-port"), sides, apply).judged, report)("denied", 403, { responseHeaders: denied });
  assert.deepEqual(got.map(([v, s, e]) => [v, s, e.proxyPort, e.ingress, e.ruleId, e.rule, e.responseHeaders]), [
    ["forwarded", 403, EGRESS, false, 70, { ruleId: 7, index: 0 }, denied],
    ["denied", 403, INGRESS, true, 90, undefined, denied],
  ], "each side's flow keeps what the client got (its response headers)");
  got.length = 0;
  sideFlows(decideSides(req("POST", "/v1/request-landing"), sides, apply).judged, report)("forwarded", 200, { rule: { ruleId: 7, index: 0 } });
  assert.deepEqual(got.map(([v, s, e]) => [v, s, e.proxyPort, e.rule]), [["forwarded", 200, EGRESS, { ruleId: 7, index: 0 }], ["forwarded", 200, INGRESS, { ruleId: 9, index: 0 }]]);
});
