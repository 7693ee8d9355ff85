// Property tests: the parser never throws on any input, and every error it reports has a non-empty path and message.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ciliumDocsExamples, seedExamples } from "../../crds/fixtures.ts";
import type { Result } from "../model.ts";
import { parsePolicyObject, parsePolicyYaml } from "./index.ts";
import { BAD_POLICIES } from "./testdata/bad-policies.ts";

const examples: unknown[] = [...seedExamples(), ...ciliumDocsExamples()].map((e) => e.object);

function checkResult(r: Result<unknown>): void {
  if (r.ok) return;
  assert.ok(r.errors.length > 0, "a failed result must carry errors");
  for (const e of r.errors) {
    assert.equal(typeof e.path, "string");
    assert.ok(e.path.length > 0, `empty path for ${e.message}`);
    assert.equal(typeof e.message, "string");
    assert.ok(e.message.length > 0, `empty message at ${e.path}`);
  }
}

/** Every path (list of keys) in a JSON-like value, containers included. */
function paths(
  v: unknown,
  prefix: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...prefix, i], out));
  else if (typeof v === "object" && v !== null)
    for (const [k, x] of Object.entries(v)) paths(x, [...prefix, k], out);
  return out;
}

function mutate(obj: unknown, pick: number, replacement: unknown): unknown {
  const copy: unknown = structuredClone(obj);
  const all = paths(copy);
  const path = all[pick % all.length]!;
  if (path.length === 0) return replacement;
  let cur = copy as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string | number, unknown>;
  cur[path[path.length - 1]!] = replacement;
  return copy;
}

function deep(depth: number, leaf: unknown): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { ingress: v };
  return v;
}

const FIELD_NAMES = [
  "apiVersion",
  "kind",
  "metadata",
  "name",
  "namespace",
  "spec",
  "specs",
  "endpointSelector",
  "nodeSelector",
  "ingress",
  "egress",
  "ingressDeny",
  "egressDeny",
  "fromEndpoints",
  "toEndpoints",
  "fromCIDR",
  "toCIDRSet",
  "cidr",
  "except",
  "fromEntities",
  "toFQDNs",
  "matchName",
  "matchPattern",
  "toServices",
  "toPorts",
  "ports",
  "port",
  "endPort",
  "protocol",
  "rules",
  "http",
  "dns",
  "kafka",
  "l7proto",
  "l7",
  "terminatingTLS",
  "secret",
  "serverNames",
  "icmps",
  "fields",
  "type",
  "matchLabels",
  "matchExpressions",
  "key",
  "operator",
  "values",
  "podSelector",
  "namespaceSelector",
  "ipBlock",
  "from",
  "to",
  "policyTypes",
  "enableDefaultDeny",
  "__proto__",
  "constructor",
  "toString",
];

const weirdValue = fc.oneof(
  fc.anything({
    withNullPrototype: true,
    withBigInt: true,
    withBoxedValues: true,
    withMap: true,
    withSet: true,
    withDate: true,
    withTypedArray: true,
    withSparseArray: true,
    withUnicodeString: true,
    maxDepth: 4,
  }),
  fc.constantFrom(
    "",
    "0",
    "70000",
    "-1",
    "TCP",
    "ANY",
    "*",
    "**.",
    "10.0.0.0/8",
    "::/0",
    "In",
    "Exists",
    "(?=x)",
    "[",
    "\u0000",
    "é",
    "😀",
  ),
  fc.integer({ min: 1, max: 200_000 }).map((n) => "a".repeat(n)),
  fc.integer({ min: 1, max: 5_000 }).map((n) => deep(n, {})),
);

/** Policy-shaped objects: known field names with random (often wrong) values, a few levels deep. */
const shaped: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    weirdValue,
    fc.dictionary(fc.constantFrom(...FIELD_NAMES), tie("node"), { maxKeys: 5 }),
    fc.array(tie("node"), { maxLength: 3 }),
  ),
})).node;

const policyish = fc
  .record({
    apiVersion: fc.constantFrom("cilium.io/v2", "networking.k8s.io/v1", "v1"),
    kind: fc.constantFrom("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy", "Pod"),
    metadata: fc.oneof(fc.constant({ name: "x", namespace: "y" }), shaped),
    spec: shaped,
    specs: fc.oneof(fc.constant(undefined), fc.array(shaped, { maxLength: 3 })),
  })
  .map((o) => o as unknown);

const mutatedExample = fc
  .tuple(fc.constantFrom(...examples), fc.nat(), weirdValue)
  .map(([ex, n, v]) => mutate(ex, n, v));

test("parsePolicyObject never throws and every error has a path (10,000 runs)", () => {
  fc.assert(
    fc.property(fc.oneof(weirdValue, policyish, mutatedExample, mutatedExample), (input) => {
      checkResult(parsePolicyObject(input));
    }),
    { numRuns: 10_000 },
  );
});

test("parsePolicyYaml never throws on arbitrary or damaged text", () => {
  const texts = [...BAD_POLICIES.map((c) => c.yaml)];
  const damaged = fc
    .tuple(
      fc.constantFrom(...texts),
      fc.nat(),
      fc.nat({ max: 40 }),
      fc.string({ unit: "binary", maxLength: 20 }),
    )
    .map(
      ([t, at, cut, insert]) =>
        t.slice(0, at % (t.length + 1)) + insert + t.slice((at % (t.length + 1)) + cut),
    );
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: "binary", maxLength: 300 }), damaged), (text) => {
      checkResult(parsePolicyYaml(text));
    }),
    { numRuns: 2_000 },
  );
});

test("YAML alias bombs are refused, not expanded", () => {
  const bomb = `a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n`;
  const r = parsePolicyYaml(bomb);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.errors[0]!.message, /alias/i);
});

test("deeply nested YAML is an error naming a line, not a crash", () => {
  const r = parsePolicyYaml(`spec: ${"[".repeat(20_000)}${"]".repeat(20_000)}`);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.errors[0]!.message, /nested too deeply/);
  checkResult(r);
});

test("a megabyte string in every string field is rejected quickly", () => {
  const huge = "x".repeat(1 << 20);
  for (const ex of examples) {
    const all = paths(ex).filter((p) => {
      let cur: unknown = ex;
      for (const k of p) cur = (cur as Record<string | number, unknown>)[k];
      return typeof cur === "string";
    });
    for (let i = 0; i < all.length; i++) {
      const started = performance.now();
      const input = mutate(
        ex,
        paths(ex).findIndex((p) => JSON.stringify(p) === JSON.stringify(all[i])),
        huge,
      );
      checkResult(parsePolicyObject(input));
      assert.ok(performance.now() - started < 1000, `slow at ${JSON.stringify(all[i])}`);
    }
  }
});
