// matchName and matchPattern as Cilium documents them, example by example and as properties.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { nameMatches, patternMatches, selectorMatches } from "./name-pattern.ts";
import { decideQuery, rejectRcode } from "./query-decision.ts";
import { fqdnMatches } from "../peer-match.ts";

test("matchName is exact, case-insensitive, with or without the trailing dot", () => {
  assert.equal(nameMatches("API.GitHub.com.", "api.github.com"), true);
  assert.equal(nameMatches("api.github.com", "api.github.com."), true);
  assert.equal(nameMatches("www.api.github.com", "api.github.com"), false);
  assert.equal(nameMatches("github.com", "api.github.com"), false);
});

test("a lone * matches every name", () => {
  for (const n of ["a", "cilium.io", "a.b.c.d.example.com."]) assert.equal(patternMatches(n, "*"), true, n);
});

test("* inside a label matches within that label and never crosses a dot", () => {
  assert.equal(patternMatches("sub.cilium.io", "*.cilium.io"), true);
  assert.equal(patternMatches("a.sub.cilium.io", "*.cilium.io"), false);
  assert.equal(patternMatches("cilium.io", "*.cilium.io"), false);
  assert.equal(patternMatches("api1.example.com", "api*.example.com"), true);
  assert.equal(patternMatches("api.example.com", "api*.example.com"), true);
  assert.equal(patternMatches("api.x.example.com", "api*.example.com"), false);
  assert.equal(patternMatches("sub.cilium.io", "sub.*.io"), true);
  assert.equal(patternMatches("sub.a.b.io", "sub.*.io"), false);
  assert.equal(patternMatches("www.cilium.io", "*.CILIUM.io."), true);
});

test("**. matches one or more labels but not the bare suffix", () => {
  assert.equal(patternMatches("a.example.com", "**.example.com"), true);
  assert.equal(patternMatches("a.b.c.example.com", "**.example.com"), true);
  assert.equal(patternMatches("example.com", "**.example.com"), false);
  assert.equal(patternMatches("a.example.org", "**.example.com"), false);
  assert.equal(patternMatches("notexample.com", "**.example.com"), false);
});

test("pattern characters that are special in regular expressions stay literal", () => {
  assert.equal(patternMatches("a-b.example.com", "a-b.example.com"), true);
  assert.equal(patternMatches("axexample.com", "a.example.com"), false);
});

test("toFQDNs selection uses the same matcher", () => {
  assert.equal(fqdnMatches("a.b.example.com.", undefined, "**.example.com"), true);
  assert.equal(fqdnMatches("example.com.", undefined, "**.example.com"), false);
  assert.equal(fqdnMatches("Example.com", "example.com."), true);
});

const label = fc.stringMatching(/^[a-z0-9_][-a-z0-9_]{0,8}$/);
const name = fc.array(label, { minLength: 1, maxLength: 5 });

test("property: a name matches itself as matchName and as a pattern, in any case", () => {
  fc.assert(
    fc.property(name, (labels) => {
      const n = labels.join(".");
      return nameMatches(n.toUpperCase(), n) && patternMatches(`${n.toUpperCase()}.`, n);
    }),
  );
});

test("property: *.suffix matches exactly the names with one more label than the suffix", () => {
  fc.assert(
    fc.property(name, fc.array(label, { minLength: 0, maxLength: 3 }), (suffix, prefix) => {
      const n = [...prefix, ...suffix].join(".");
      return patternMatches(n, `*.${suffix.join(".")}`) === (prefix.length === 1);
    }),
  );
});

test("property: **.suffix matches exactly the names with at least one more label than the suffix", () => {
  fc.assert(
    fc.property(name, fc.array(label, { minLength: 0, maxLength: 3 }), (suffix, prefix) => {
      const n = [...prefix, ...suffix].join(".");
      return patternMatches(n, `**.${suffix.join(".")}`) === (prefix.length >= 1);
    }),
  );
});

test("property: replacing one label of a name by * still matches; the pattern never matches a name with another label count", () => {
  fc.assert(
    // Two labels at least: a pattern of "*" alone is the match-everything case.
    fc.property(fc.array(label, { minLength: 2, maxLength: 5 }), fc.nat(), label, (labels, k, extra) => {
      const i = k % labels.length;
      const pattern = labels.map((l, j) => (j === i ? "*" : l)).join(".");
      return patternMatches(labels.join("."), pattern) && !patternMatches([extra, ...labels].join("."), pattern);
    }),
  );
});

test("a query is allowed by the first DNS rule that matches it and names that rule; otherwise denied", () => {
  const rules = [
    { ruleId: 7, index: 0, matchName: "api.github.com" },
    { ruleId: 7, index: 1, matchPattern: "*.svc.cluster.local" },
    { ruleId: 9, index: 0, matchPattern: "**.svc.cluster.local" },
  ];
  assert.deepEqual(decideQuery("API.github.com.", rules), { verdict: "allow", rule: rules[0] });
  assert.deepEqual(decideQuery("kube-dns.svc.cluster.local", rules), { verdict: "allow", rule: rules[1] });
  assert.deepEqual(decideQuery("kube-dns.kube-system.svc.cluster.local", rules), { verdict: "allow", rule: rules[2] });
  assert.deepEqual(decideQuery("svc.cluster.local", rules), { verdict: "deny" });
  assert.deepEqual(decideQuery("evil.com", []), { verdict: "deny" });
  assert.equal(selectorMatches("x", {}), false, "a rule with neither field matches nothing");
  assert.equal(rejectRcode("refused"), 5);
  assert.equal(rejectRcode("nameError"), 3);
});
