// Fuzz: 10,000 random and mutated AdmissionReviews through the real HTTPS server; every one gets a well-formed answer in time.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { ciliumDocsExamples, seedExamples } from "../crds/fixtures.ts";
import { reviewFor } from "./admission.ts";
import { DEFAULT_REQUEST_TIMEOUT_MS } from "./server.ts";
import { startTestServer, type TestServer } from "./testing.ts";

const RUNS = Number(process.env.WEBHOOK_FUZZ_RUNS ?? 10_000);
// The server's own per-request timeout (the production default), which every answer must beat.
const TIMEOUT_MS = DEFAULT_REQUEST_TIMEOUT_MS;
const PARALLEL = 8;
const DEEP_MARKER = "\u0000deep\u0000";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Case {
  /** What was sent, for the failure message. */
  readonly label: string;
  readonly body: string;
  /** The uid the answer must carry; undefined when the body is garbage and any salvaged uid will do. */
  readonly uid?: string;
}

const examples = [...seedExamples(), ...ciliumDocsExamples()].map((e) => e.object as unknown as Json);

/** Every path (list of keys) inside a JSON value, the root included. */
function paths(v: Json, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...prefix, i], out));
  else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v)) paths(x, [...prefix, k], out);
  return out;
}

type Mutation =
  | { op: "replace"; value: Json }
  | { op: "delete" }
  | { op: "wrap" }
  | { op: "huge"; size: number }
  | { op: "unicode"; text: string }
  | { op: "deep"; depth: number };

function mutate(root: Json, where: number, m: Mutation): Json {
  const copy = structuredClone(root);
  const all = paths(copy);
  const path = all[where % all.length] ?? [];
  const replacement = (old: Json): Json | undefined => {
    switch (m.op) {
      case "replace":
        return m.value;
      case "delete":
        return undefined;
      case "wrap":
        return [old, old];
      case "huge":
        return "x".repeat(m.size);
      case "unicode":
        return m.text;
      case "deep":
        return DEEP_MARKER + String(m.depth);
    }
  };
  if (path.length === 0) return replacement(copy) ?? null;
  let parent: Json = copy;
  for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, Json>)[k] as Json;
  const last = path[path.length - 1] as string | number;
  const container = parent as Record<string | number, Json>;
  const next = replacement(container[last] as Json);
  if (next === undefined) {
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete container[last];
  } else container[last] = next;
  return copy;
}

/** Deep nesting is spliced into the JSON text: JSON.stringify itself would overflow the stack. */
function withDeepNesting(body: string): string {
  return body.replace(new RegExp(`"\\\\u0000deep\\\\u0000(\\d+)"`, "g"), (_m, d: string) => {
    const depth = Number(d);
    return "[".repeat(depth) + "{}" + "]".repeat(depth);
  });
}

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 5, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((value) => ({ op: "replace" as const, value: value as Json })) },
  { weight: 2, arbitrary: fc.constant({ op: "delete" as const }) },
  { weight: 1, arbitrary: fc.constant({ op: "wrap" as const }) },
  { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 300_000 }).map((size) => ({ op: "huge" as const, size })) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }).map((text) => ({ op: "unicode" as const, text })) },
  { weight: 1, arbitrary: fc.integer({ min: 50, max: 20_000 }).map((depth) => ({ op: "deep" as const, depth })) },
);

const uid = fc.oneof(fc.uuid(), fc.string({ unit: "grapheme", maxLength: 20 }));
const operation = fc.constantFrom("CREATE" as const, "UPDATE" as const, "DELETE" as const);

const cases: fc.Arbitrary<Case> = fc.oneof(
  // A valid example with a few mutations anywhere in it: the most realistic kind of mistake.
  {
    weight: 6,
    arbitrary: fc
      .record({
        example: fc.constantFrom(...examples),
        mutations: fc.array(fc.tuple(fc.nat(), mutation), { minLength: 1, maxLength: 4 }),
        uid,
        operation,
        dryRun: fc.boolean(),
      })
      .map(({ example, mutations, uid, operation, dryRun }) => {
        const object = mutations.reduce<Json>((o, [where, m]) => mutate(o, where, m), example);
        return {
          label: `mutated ${JSON.stringify(mutations).slice(0, 300)}`,
          body: withDeepNesting(reviewFor(object, { uid, operation, dryRun })),
          uid,
        };
      }),
  },
  // Any JSON at all as the object.
  {
    weight: 2,
    arbitrary: fc.record({ object: fc.jsonValue({ maxDepth: 6 }), uid }).map(({ object, uid }) => ({
      label: `random object ${JSON.stringify(object).slice(0, 300)}`,
      body: reviewFor(object, { uid }),
      uid,
    })),
  },
  // Mutations of the AdmissionReview envelope itself (request, kind, operation with wrong types).
  {
    weight: 1,
    arbitrary: fc
      .record({ example: fc.constantFrom(...examples), where: fc.nat(), m: mutation, uid })
      .map(({ example, where, m, uid }) => {
        const review = JSON.parse(reviewFor(example, { uid })) as Json;
        const mutated = mutate(review, where, m);
        return { label: `mutated envelope ${JSON.stringify(m).slice(0, 300)}`, body: withDeepNesting(JSON.stringify(mutated)) };
      }),
  },
  // Bodies that are not JSON: truncated reviews, random text and bytes.
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.record({ example: fc.constantFrom(...examples), cut: fc.nat(), uid: fc.uuid() }).map(({ example, cut, uid }) => {
        const full = reviewFor(example, { uid });
        return { label: "truncated review", body: full.slice(0, cut % full.length) };
      }),
      fc.string({ unit: "binary", maxLength: 200 }).map((s) => ({ label: `text ${JSON.stringify(s)}`, body: s })),
      fc.uint8Array({ maxLength: 200 }).map((b) => ({ label: "bytes", body: Buffer.from(b).toString("latin1") })),
    ),
  },
);

interface Answer {
  apiVersion?: unknown;
  kind?: unknown;
  response?: { uid?: unknown; allowed?: unknown; status?: { message?: unknown } };
}

describe("webhook fuzz", () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ requestTimeoutMs: TIMEOUT_MS, maxSockets: PARALLEL });
  });
  after(async () => t.close());

  it(`answers ${RUNS} random and mutated requests with a well-formed AdmissionReview carrying the uid, within the timeout`, async () => {
    const all = fc.sample(cases, { numRuns: RUNS, seed: Number(process.env.WEBHOOK_FUZZ_SEED ?? 20261123) });
    let slowest = 0;
    let denied = 0;
    for (let i = 0; i < all.length; i += PARALLEL) {
      await Promise.all(
        all.slice(i, i + PARALLEL).map(async (c) => {
          const started = performance.now();
          const res = await t.post(c.body);
          const ms = performance.now() - started;
          slowest = Math.max(slowest, ms);
          const context = `${c.label} → ${res.body.slice(0, 300)}`;
          assert.equal(res.status, 200, context);
          assert.ok(ms < TIMEOUT_MS, `${ms} ms: ${context}`);
          const a = JSON.parse(res.body) as Answer;
          assert.equal(a.apiVersion, "admission.k8s.io/v1", context);
          assert.equal(a.kind, "AdmissionReview", context);
          assert.equal(typeof a.response?.allowed, "boolean", context);
          assert.equal(typeof a.response?.uid, "string", context);
          if (c.uid !== undefined) assert.equal(a.response?.uid, c.uid, context);
          if (a.response?.allowed === false) {
            denied++;
            assert.equal(typeof a.response.status?.message, "string", context);
            assert.ok((a.response.status?.message as string).length > 0, context);
          }
        }),
      );
    }
    assert.ok(denied > RUNS / 2, `most mutated objects must be denied, got ${denied}/${RUNS}`);
    assert.ok(slowest < TIMEOUT_MS);
    // Still alive and answering after everything.
    const probe = await t.post(reviewFor(examples[0], { uid: "after-fuzz" }));
    assert.equal((JSON.parse(probe.body) as Answer).response?.uid, "after-fuzz");
  });
});
