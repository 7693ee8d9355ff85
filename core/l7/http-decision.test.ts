// HTTP and gRPC rules as Cilium's docs state them: whole-value regexes, host, headers, headerMatches, ORed rules naming the decider.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { HTTPRule } from "../model.ts";
import { applyHeaderActions, compileHttpRules, decideHttp, type HttpRuleRef } from "./http-decision.ts";
import { headerRequirement } from "./http-rule.ts";
import { requestFromH2Raw, requestFromRaw, type HttpRequest } from "./http-request.ts";
import { grpcDeniedHeaders, grpcPath, grpcStatusHeaders, grpcStatusOfHttp, isGrpc, parseGrpcPath } from "./grpc.ts";

const req = (method: string, path: string, headers: Record<string, string> = {}, host = "deathstar"): HttpRequest =>
  requestFromRaw(method, path, ["Host", host, ...Object.entries(headers).flat()]);

const rules = (...rs: HTTPRule[]): ReturnType<typeof compileHttpRules> =>
  compileHttpRules(rs.map((rule, index): HttpRuleRef => ({ ruleId: 3, index, rule })));

const verdict = (r: HttpRequest, rs: ReturnType<typeof compileHttpRules>): string => decideHttp(r, rs).verdict;

test("the star-wars rule: POST /v1/request-landing is allowed, PUT /v1/exhaust-port is denied", () => {
  const rs = rules({ method: "POST", path: "/v1/request-landing" });
  assert.deepEqual(decideHttp(req("POST", "/v1/request-landing"), rs), { verdict: "allow", ruleId: 3, index: 0, actions: [], mismatches: [] });
  assert.equal(verdict(req("PUT", "/v1/exhaust-port"), rs), "deny");
  assert.equal(verdict(req("GET", "/v1/request-landing"), rs), "deny", "the method must match too");
});

test("path and method are regular expressions matching the whole value", () => {
  const rs = rules({ method: "GET|HEAD", path: "/public/.*" });
  assert.equal(verdict(req("GET", "/public/a/b"), rs), "allow");
  assert.equal(verdict(req("HEAD", "/public/"), rs), "allow");
  assert.equal(verdict(req("GET", "/public"), rs), "deny", "/public/.* needs the slash");
  assert.equal(verdict(req("GET", "/x/public/a"), rs), "deny", "no match inside the value");
  assert.equal(verdict(req("GETX", "/public/a"), rs), "deny", "the alternation is anchored as a whole");
  assert.equal(verdict(req("XHEAD", "/public/a"), rs), "deny");
  assert.equal(verdict(req("get", "/public/a"), rs), "deny", "methods are case-sensitive");
  const exact = rules({ path: "/v1" });
  assert.equal(verdict(req("GET", "/v1/x"), exact), "deny");
  assert.equal(verdict(req("GET", "/v1?x=1"), exact), "deny", "the query is part of the path matched");
  assert.equal(verdict(req("GET", "/v1"), exact), "allow");
});

test("an empty rule allows every request; no rules at all deny", () => {
  assert.equal(verdict(req("DELETE", "/anything"), rules({})), "allow");
  assert.equal(verdict(req("GET", "/"), rules()), "deny");
});

test("several rules on a port are ORed and the first that matches is named", () => {
  const rs = rules({ method: "GET", path: "/a" }, { path: "/b" }, { method: "GET" });
  assert.equal((decideHttp(req("GET", "/a"), rs) as { index: number }).index, 0);
  assert.equal((decideHttp(req("POST", "/b"), rs) as { index: number }).index, 1);
  assert.equal((decideHttp(req("GET", "/c"), rs) as { index: number }).index, 2);
  assert.equal(verdict(req("POST", "/c"), rs), "deny");
});

test("host is a whole-value regular expression on the Host header (port included when sent)", () => {
  const rs = rules({ host: "api\\.example\\.com" });
  assert.equal(verdict(req("GET", "/", {}, "api.example.com"), rs), "allow");
  assert.equal(verdict(req("GET", "/", {}, "xapi.example.com"), rs), "deny");
  assert.equal(verdict(req("GET", "/", {}, "api.example.com:8080"), rs), "deny");
  assert.equal(verdict(req("GET", "/", {}, "api.example.com:8080"), rules({ host: "api\\.example\\.com(:[0-9]+)?" })), "allow");
  assert.equal(verdict(requestFromRaw("GET", "/", []), rs), "deny", "no Host header");
});

test("headers: a name alone requires presence, 'Name: value' an exact value; names are case-insensitive", () => {
  assert.deepEqual(headerRequirement("X-My-Header: true"), { name: "x-my-header", value: "true" });
  assert.deepEqual(headerRequirement("X-My-Header"), { name: "x-my-header" });
  const present = rules({ headers: ["X-Token"] });
  assert.equal(verdict(req("GET", "/", { "x-token": "" }), present), "allow");
  assert.equal(verdict(req("GET", "/"), present), "deny");
  const valued = rules({ headers: ["X-My-Header: true"] });
  assert.equal(verdict(req("GET", "/", { "X-MY-HEADER": "true" }), valued), "allow");
  assert.equal(verdict(req("GET", "/", { "X-My-Header": "false" }), valued), "deny");
  assert.equal(verdict(req("GET", "/", { "X-My-Header": "true" }), rules({ headers: ["X-My-Header: true", "X-Other"] })), "deny", "all of them");
});

test("headerMatches: without a mismatch action a wrong or missing value denies; LOG lets it through and records it", () => {
  const strict = rules({ headerMatches: [{ name: "X-Role", value: "admin" }] });
  assert.equal(verdict(req("GET", "/", { "x-role": "admin" }), strict), "allow");
  assert.equal(verdict(req("GET", "/", { "x-role": "guest" }), strict), "deny");
  assert.equal(verdict(req("GET", "/"), strict), "deny");
  const logged = rules({ path: "/x", headerMatches: [{ name: "X-Role", value: "admin", mismatch: "LOG" }] });
  assert.deepEqual(decideHttp(req("GET", "/x", { "x-role": "guest" }), logged), {
    verdict: "allow", ruleId: 3, index: 0, actions: [], mismatches: [{ name: "x-role", action: "LOG" }],
  });
  assert.equal(verdict(req("GET", "/y", { "x-role": "guest" }), logged), "deny", "LOG does not loosen the other fields");
});

test("headerMatches ADD, DELETE and REPLACE become header changes of the forwarded request", () => {
  const rs = rules({
    headerMatches: [
      { name: "X-Add", value: "1", mismatch: "ADD" },
      { name: "X-Del", value: "keep", mismatch: "DELETE" },
      { name: "X-Rep", value: "new", mismatch: "REPLACE" },
    ],
  });
  const r = req("GET", "/", { "x-del": "other", "x-rep": "old" });
  const d = decideHttp(r, rs);
  assert.equal(d.verdict, "allow");
  if (d.verdict !== "allow") return;
  const out = applyHeaderActions(r.headers, d.actions);
  assert.deepEqual(out.map((h) => h.name), ["host", "x-rep", "x-add"]);
  assert.equal(out.find((h) => h.name === "x-del"), undefined, "the mismatching header is deleted");
  assert.equal(out.find((h) => h.name === "x-rep")?.value, "new");
  assert.equal(out.find((h) => h.name === "x-add")?.value, "1");
  assert.equal(out.find((h) => h.name === "host")?.value, "deathstar", "other headers untouched");
  const matching = req("GET", "/", { "x-add": "1", "x-del": "keep", "x-rep": "new" });
  const d2 = decideHttp(matching, rs);
  assert.deepEqual(d2.verdict === "allow" ? d2.actions : undefined, [], "nothing to change when they match");
});

test("a headerMatches Secret this node does not have: its value is the fallback, with no value the rule cannot match", () => {
  const rule: HTTPRule = { headerMatches: [{ name: "Authorization", secret: { namespace: "ns", name: "token" } }] };
  const none = compileHttpRules([{ ruleId: 1, index: 0, rule }]);
  assert.equal(verdict(req("GET", "/", { authorization: "anything" }), none), "deny", "fail closed");
  const logOnly = compileHttpRules([{ ruleId: 1, index: 0, rule: { headerMatches: [{ name: "Authorization", secret: { name: "t" }, mismatch: "LOG" }] } }]);
  assert.equal(verdict(req("GET", "/", { authorization: "x" }), logOnly), "deny", "not even with LOG: nothing to compare with");
  const known = compileHttpRules([{ ruleId: 1, index: 0, rule }], (ref) => (ref === "ns/token" ? "Bearer s3cret" : undefined));
  assert.equal(verdict(req("GET", "/", { authorization: "Bearer s3cret" }), known), "allow");
  assert.equal(verdict(req("GET", "/", { authorization: "Bearer other" }), known), "deny");
  const fallback = compileHttpRules([{ ruleId: 1, index: 0, rule: { headerMatches: [{ name: "X-K", value: "v", secret: { name: "gone" } }] } }]);
  assert.equal(verdict(req("GET", "/", { "x-k": "v" }), fallback), "allow");
});

test("gRPC: a method is the path /package.Service/Method, matched by the path rule like any request", () => {
  const path = grpcPath({ service: "cilium.examples.doorman.DoorManager", method: "OpenDoor" });
  assert.equal(path, "/cilium.examples.doorman.DoorManager/OpenDoor");
  assert.deepEqual(parseGrpcPath(path), { service: "cilium.examples.doorman.DoorManager", method: "OpenDoor" });
  assert.equal(parseGrpcPath("/a/b/c"), undefined);
  const call = (m: string): HttpRequest => requestFromRaw("POST", `/cilium.examples.doorman.DoorManager/${m}`, [":authority", "door:50051", "content-type", "application/grpc"]);
  assert.equal(isGrpc(call("x")), true);
  assert.equal(isGrpc(req("POST", "/")), false);
  const rs = rules({ method: "POST", path: "/cilium.examples.doorman.DoorManager/GetName" }, { path: "/cilium\\.examples\\.doorman\\.DoorManager/Get.*" });
  assert.equal(verdict(call("GetName"), rs), "allow");
  assert.equal(verdict(call("GetLocation"), rs), "allow");
  assert.equal(verdict(call("OpenDoor"), rs), "deny");
  assert.equal(call("x").host, "door:50051", ":authority is the host");
});

test("HTTP/2: method, path and host come from the pseudo-headers, which no header rule sees; gRPC denials are trailers-only with HTTP 200", () => {
  const raw = [":method", "POST", ":scheme", "http", ":path", "/cloudcity.DoorManager/GetName", ":authority", "door:50051", "content-type", "application/grpc", "te", "trailers"];
  const r = requestFromH2Raw(raw);
  assert.deepEqual([r.method, r.path, r.host], ["POST", "/cloudcity.DoorManager/GetName", "door:50051"]);
  assert.deepEqual(r.headers.map((h) => h.name), ["content-type", "te"]);
  assert.equal(isGrpc(r), true);
  assert.equal(verdict(r, rules({ headers: [":method"] })), "deny", "a pseudo-header is not a header");
  assert.equal(verdict(r, rules({ method: "POST", path: "/cloudcity\\.DoorManager/Get.*", host: "door:50051" })), "allow");
  assert.equal(requestFromH2Raw([":method", "GET", ":path", "/", "host", "h:1"]).host, "h:1", "a Host header when :authority is absent");
  assert.deepEqual(grpcDeniedHeaders(), { ":status": "200", "content-type": "application/grpc", "grpc-status": "7", "grpc-message": "Access denied" });
  assert.equal(grpcStatusHeaders(14, "100% down: ö")["grpc-message"], "100%25 down: %C3%B6", "percent-encoded as gRPC's Status-Message");
});

test("the proxy's own answer to a gRPC call carries the status Envoy maps its HTTP status to (httpToGrpcStatus): 400 INTERNAL, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN", () => {
  const mapped = [400, 401, 403, 404, 429, 502, 503, 504, 307, 500].map((s) => [s, grpcStatusOfHttp(s)]);
  assert.deepEqual(mapped, [[400, 13], [401, 16], [403, 7], [404, 12], [429, 14], [502, 14], [503, 14], [504, 14], [307, 2], [500, 2]]);
});
