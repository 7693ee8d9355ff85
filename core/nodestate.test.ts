// Property tests of node-state deltas: applying diff(a, b) to a gives b, and equal states give an empty delta.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { NodeState } from "./wire.ts";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { PolicyEntry, SubjectPolicy } from "./model.ts";
import { SubjectDeltaLinks, applyDelta, canonicalState, comparePrefixes, diffState, mergeIPCache, mergedInCanonicalOrder, sameState } from "./nodestate.ts";

const entry = (subject: number): fc.Arbitrary<PolicyEntry> =>
  fc.record({
    subject: fc.constant(subject),
    direction: fc.constantFrom("ingress" as const, "egress" as const),
    peer: fc.integer({ min: 0, max: 5 }),
    proto: fc.constantFrom(0, 6, 17),
    port: fc.constantFrom(0, 80, 443),
    portPrefixLen: fc.constantFrom(0, 16),
    verdict: fc.constantFrom("allow" as const, "deny" as const),
    proxyPort: fc.constant(0),
    ruleId: fc.integer({ min: 1, max: 3 }),
  });

const state: fc.Arbitrary<NodeState> = fc
  .record({
    subjects: fc.uniqueArray(fc.integer({ min: 256, max: 260 }), { maxLength: 4 }),
    prefixes: fc.uniqueArray(fc.constantFrom("10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", "0.0.0.0/0"), { maxLength: 4 }),
    ident: fc.integer({ min: 256, max: 260 }),
    gen: fc.integer({ min: 1, max: 3 }),
  })
  .chain(({ subjects, prefixes, ident, gen }) =>
    fc.record({
      policies: fc.tuple(...subjects.map((s) => fc.record({ subject: fc.constant(s), ingressEnforced: fc.boolean(), egressEnforced: fc.boolean(), entries: fc.array(entry(s), { maxLength: 5 }) }))),
      ipcache: fc.constant(prefixes.map((prefix) => ({ prefix, identity: ident }))),
      identities: fc.constant(subjects.map((id) => ({ id, labels: [`k8s:app=${id}`] }))),
      rules: fc.constant([{ id: 1, origin: { policyKind: "CiliumNetworkPolicy" as const, name: "p", ruleIndex: 0, path: "spec.ingress[0]" } }]),
      policyGenerations: fc.constant([{ key: "CiliumNetworkPolicy/ns/p", uid: "u", generation: gen }]),
    }),
  )
  .map((s) => {
    // Entries are unique per key within a subject, as the compiler emits them.
    const policies = s.policies.map((p) => ({ ...p, entries: [...new Map(p.entries.map((e) => [`${e.direction}|${e.peer}|${e.proto}|${e.port}/${e.portPrefixLen}`, e])).values()] }));
    return { ...s, policies };
  });

test("property: applying diff(a, b) to a yields b", () => {
  fc.assert(
    fc.property(state, state, (a, b) => {
      // JSON form: fast-check may build null-prototype records, which deepEqual tells apart.
      const plain = (x: unknown): unknown => JSON.parse(JSON.stringify(x));
      assert.deepEqual(plain(applyDelta(canonicalState(a), diffState(a, b))), plain(canonicalState(b)));
    }),
    { numRuns: 300 },
  );
});

test("property: a chain of ipcache merges ends where its definition does (upserts replace by prefix, removals take out, also an upsert of their prefix)", () => {
  const prefix = fc.constantFrom(...Array.from({ length: 12 }, (_, i) => `10.0.${i % 3}.${i}/32`), "0.0.0.0/0", "fd00::/64");
  const change = fc.record({
    upserts: fc.uniqueArray(fc.record({ prefix, identity: fc.integer({ min: 256, max: 260 }) }), { selector: (e) => e.prefix, maxLength: 6 }),
    removals: fc.uniqueArray(prefix, { maxLength: 4 }),
  });
  fc.assert(
    fc.property(fc.uniqueArray(fc.record({ prefix, identity: fc.constant<number>(256) }), { selector: (e) => e.prefix }), fc.array(change, { maxLength: 6 }), (start, changes) => {
      // The first base in any order (sorted by the merge); every later one a merge's own output.
      let merged = mergeIPCache(start, [], []);
      const expected = new Map(start.map((e) => [e.prefix, e]));
      for (const c of changes) {
        merged = mergeIPCache(merged, c.upserts, c.removals);
        for (const e of c.upserts) expected.set(e.prefix, e);
        for (const p of c.removals) expected.delete(p);
        assert.ok(mergedInCanonicalOrder(merged));
        assert.deepEqual(merged.map((e) => `${e.prefix}=${e.identity}`), [...expected.values()].sort((a, b) => comparePrefixes(a.prefix, b.prefix)).map((e) => `${e.prefix}=${e.identity}`));
      }
    }),
    { numRuns: 300 },
  );
});

test("property: a state diffed with itself changes nothing", () => {
  fc.assert(
    fc.property(state, (a) => {
      const d = diffState(a, a);
      assert.equal(d.subjects.length + d.removedSubjects.length + d.ipcacheUpserts.length + d.ipcacheRemovals.length + d.identityUpserts.length + d.identityRemovals.length, 0);
      assert.ok(sameState(a, a));
    }),
  );
});

test("a subject delta link does not keep its base alive: a subject's past versions are collected while its latest is held", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const links = new SubjectDeltaLinks();
  const policy = (n: number): SubjectPolicy => ({ subject: 256, ingressEnforced: true, egressEnforced: false, entries: Array.from({ length: 100 }, (_, i) => ({ subject: 256, direction: "ingress", peer: n * 1000 + i, proto: 6, port: 80, portPrefixLen: 16, verdict: "allow", ruleId: 1 }) as PolicyEntry) });
  const first = (): { oldest: WeakRef<SubjectPolicy>; latest: SubjectPolicy; previous: SubjectPolicy } => {
    let held = policy(0);
    const oldest = new WeakRef(held);
    let previous = held;
    for (let n = 1; n <= 50; n++) {
      const next = policy(n);
      links.link(held, next, { subject: 256, ingressEnforced: true, egressEnforced: false, added: next.entries, removed: held.entries });
      previous = held;
      held = next;
    }
    return { oldest, latest: held, previous };
  };
  const { oldest, latest, previous } = first();
  assert.ok(links.between(previous, latest), "the last link is there while both ends are held");
  await new Promise((r) => setImmediate(r));
  gc();
  await new Promise((r) => setImmediate(r));
  assert.equal(oldest.deref(), undefined, "the first version was collected");
});
