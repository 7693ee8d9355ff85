// Tests for the selector cache: incremental selections equal a fresh evaluation, reference counting, peers of every kind.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { LabelSet, Peer, Selector } from "../model.ts";
import { SelectorCache, cidrMatcher, conjunctionMatcher, mergeSelectionChanges, peerMatcher, type IdentityMatcher, type SelectionChange } from "./selector-cache.ts";
import { labelSetFromStrings, securityLabels } from "../labels.ts";
import { selectorFrom } from "../selector.ts";
import { RESERVED_IDENTITIES, cidrLabels } from "../identity.ts";

const web = securityLabels({ podLabels: { app: "web" }, namespace: "prod", namespaceLabels: {} });
const db = securityLabels({ podLabels: { app: "db" }, namespace: "prod", namespaceLabels: {} });
const webSel = selectorFrom({ matchLabels: { app: "web" } });

test("a selector's selection follows identities as they come, change and go, with deltas", () => {
  const cache = new SelectorCache();
  const h = cache.addSelector(webSel);
  assert.deepEqual(cache.upsertIdentity(256, web), [{ canonical: webSel.canonical, added: [256], removed: [] }]);
  assert.deepEqual(cache.upsertIdentity(257, db), []);
  assert.deepEqual(h.sorted(), [256]);
  assert.deepEqual(cache.upsertIdentity(257, web), [{ canonical: webSel.canonical, added: [257], removed: [] }]);
  assert.deepEqual(cache.upsertIdentity(256, db), [{ canonical: webSel.canonical, added: [], removed: [256] }]);
  assert.deepEqual(cache.removeIdentity(257), [{ canonical: webSel.canonical, added: [], removed: [257] }]);
  assert.deepEqual(cache.removeIdentity(999), []);
  assert.deepEqual(h.sorted(), []);
});

test("a selector added later is evaluated against the identities already known", () => {
  const cache = new SelectorCache();
  cache.upsertIdentity(256, web);
  cache.upsertIdentity(257, db);
  for (const r of RESERVED_IDENTITIES) cache.upsertIdentity(r.id, r.labels);
  assert.deepEqual(cache.addSelector(webSel).sorted(), [256]);
  assert.deepEqual(cache.addPeer({ kind: "entity", entity: "world" }).sorted(), [2, 9, 10]);
  assert.deepEqual(cache.addPeer({ kind: "any" }).sorted(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 256, 257]);
});

test("equal selectors share one entry, evaluated once, dropped with their last reference", () => {
  let evaluations = 0;
  const counting = (canonical: string): IdentityMatcher => ({
    canonical,
    matches: () => {
      evaluations++;
      return true;
    },
  });
  const cache = new SelectorCache();
  const a = cache.add(counting("x"));
  const b = cache.add(counting("x"));
  assert.equal(a, b);
  assert.equal(cache.size, 1);
  assert.equal(cache.refCount("x"), 2);
  cache.upsertIdentity(256, web);
  assert.equal(evaluations, 1, "one evaluation per distinct selector and identity");
  assert.equal(cache.release(a), false);
  assert.equal(cache.release("x"), true);
  assert.equal(cache.size, 0);
  assert.equal(cache.release("x"), false);
  cache.upsertIdentity(257, web);
  assert.equal(evaluations, 1, "a dropped selector is no longer evaluated");
});

test("CIDR peers select identities inside the prefix and outside every except", () => {
  const m = cidrMatcher("10.0.0.0/8", ["10.1.0.0/16"]);
  assert.ok(m.matches(1 << 24, cidrLabels("10.2.0.0/24")));
  assert.ok(m.matches(1 << 24, cidrLabels("10.0.0.0/8")));
  assert.ok(!m.matches(1 << 24, cidrLabels("10.1.2.0/24")));
  assert.ok(!m.matches(1 << 24, cidrLabels("11.0.0.0/24")));
  assert.ok(!m.matches(1 << 24, cidrLabels("0.0.0.0/0")));
  assert.ok(!m.matches(256, web), "pods are never selected by CIDR");
  const all4 = cidrMatcher("0.0.0.0/0");
  assert.ok(all4.matches(9, labelSetFromStrings(["reserved:world-ipv4"])));
  assert.ok(all4.matches(2, labelSetFromStrings(["reserved:world"])));
  assert.ok(!all4.matches(10, labelSetFromStrings(["reserved:world-ipv6"])));
  assert.ok(!all4.matches(1 << 24, cidrLabels("2001:db8::/32")));
  assert.ok(cidrMatcher("2001:db8::/16").matches(1 << 24, cidrLabels("2001:db8::/32")));
  assert.ok(!cidrMatcher("bogus").matches(1 << 24, cidrLabels("10.0.0.0/8")), "a malformed prefix selects nothing");
  assert.equal(cidrMatcher("10.1.2.3/8", ["10.1.0.0/16", "10.1.0.0/16"]).canonical, cidrMatcher("10.0.0.0/8", ["10.1.0.0/16"]).canonical);
});

test("FQDN peers select identities learned for a matching name; service peers select nothing", () => {
  const learned = labelSetFromStrings(["fqdn:api.example.com", ...cidrLabels("198.51.100.7/32").labels.map((l) => `${l.source}:${l.key}`)]);
  assert.ok(peerMatcher({ kind: "fqdn", matchName: "api.example.com" }).matches(1 << 24, learned));
  assert.ok(peerMatcher({ kind: "fqdn", matchPattern: "*.example.com" }).matches(1 << 24, learned));
  assert.ok(!peerMatcher({ kind: "fqdn", matchName: "example.com" }).matches(1 << 24, learned));
  assert.ok(!peerMatcher({ kind: "service", name: "kubernetes", namespace: "default" }).matches(256, web));
});

test("merged change lists give the net change", () => {
  const lists: SelectionChange[][] = [
    [{ canonical: "a", added: [1, 2], removed: [] }],
    [{ canonical: "a", added: [], removed: [1] }, { canonical: "b", added: [], removed: [3] }],
    [{ canonical: "b", added: [3], removed: [] }],
  ];
  assert.deepEqual(mergeSelectionChanges(lists), [{ canonical: "a", added: [2], removed: [] }]);
});

// ---------------------------------------------------------------------------------------------
// Property: after any sequence of identity and selector changes, every cached selection equals a
// fresh evaluation of its selector over the current identities, and the reported deltas, applied
// to the previous selections, give the new ones.
// ---------------------------------------------------------------------------------------------

const labelPool = [
  "k8s:app=web",
  "k8s:app=db",
  "k8s:tier=front",
  "k8s:io.kubernetes.pod.namespace=prod",
  "k8s:io.kubernetes.pod.namespace=dev",
  "k8s:io.cilium.k8s.policy.cluster=default",
  "container:app=web",
  "reserved:host",
  "reserved:world",
];
const arbLabels: fc.Arbitrary<LabelSet> = fc.subarray(labelPool).map((ls) => labelSetFromStrings(ls));
const arbCidrLabels: fc.Arbitrary<LabelSet> = fc
  .constantFrom("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.168.0.0/16", "0.0.0.0/0", "2001:db8::/32")
  .map((p) => cidrLabels(p));
const arbSelector: fc.Arbitrary<Selector> = fc
  .record({
    matchLabels: fc.dictionary(fc.constantFrom("app", "k8s:app", "tier", "any:tier"), fc.constantFrom("web", "db", "front"), { maxKeys: 2 }),
    matchExpressions: fc.array(
      fc.record({
        key: fc.constantFrom("app", "tier", "reserved:host", "io.kubernetes.pod.namespace"),
        operator: fc.constantFrom("In", "NotIn", "Exists", "DoesNotExist"),
        values: fc.array(fc.constantFrom("web", "db", "prod", ""), { maxLength: 2 }),
      }),
      { maxLength: 2 },
    ),
    ns: fc.constantFrom(undefined, "prod"),
  })
  .map(({ ns, ...input }) => (ns === undefined ? selectorFrom(input) : selectorFrom(input, { role: "peer", namespace: ns })));
const arbPeer: fc.Arbitrary<Peer> = fc.oneof(
  arbSelector.map((selector): Peer => ({ kind: "selector", selector })),
  fc.constantFrom<Peer>(
    { kind: "any" },
    { kind: "entity", entity: "world" },
    { kind: "entity", entity: "cluster" },
    { kind: "entity", entity: "host" },
    { kind: "cidr", cidr: "10.0.0.0/8", except: ["10.1.0.0/16"] },
    { kind: "cidr", cidr: "0.0.0.0/0", except: [] },
  ),
);

type Op =
  | { kind: "upsert"; id: number; labels: LabelSet }
  | { kind: "remove"; id: number }
  | { kind: "add"; peer: Peer }
  | { kind: "addConjunction"; selectors: Selector[] }
  | { kind: "release"; index: number };

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("upsert" as const), id: fc.integer({ min: 256, max: 263 }), labels: arbLabels }),
  fc.record({ kind: fc.constant("upsert" as const), id: fc.integer({ min: 1 << 24, max: (1 << 24) + 3 }), labels: arbCidrLabels }),
  fc.record({ kind: fc.constant("remove" as const), id: fc.oneof(fc.integer({ min: 256, max: 263 }), fc.constant(1 << 24)) }),
  fc.record({ kind: fc.constant("add" as const), peer: arbPeer }),
  fc.record({ kind: fc.constant("addConjunction" as const), selectors: fc.array(arbSelector, { minLength: 1, maxLength: 2 }) }),
  fc.record({ kind: fc.constant("release" as const), index: fc.nat(20) }),
);

test("incremental selections always equal a fresh evaluation, and deltas account for every change", () => {
  fc.assert(
    fc.property(fc.array(arbOp, { maxLength: 40 }), (ops) => {
      const cache = new SelectorCache();
      const handles: string[] = [];
      const matchers = new Map<string, IdentityMatcher>();
      const register = (m: IdentityMatcher): void => {
        matchers.set(m.canonical, m);
        handles.push(cache.add(m).canonical);
      };
      const snapshot = (): Map<string, number[]> => new Map(cache.canonicals().map((c) => [c, [...cache.selections(c)!].sort((a, b) => a - b)]));
      for (const op of ops) {
        const before = snapshot();
        let changes: SelectionChange[] = [];
        if (op.kind === "upsert") changes = cache.upsertIdentity(op.id, op.labels);
        else if (op.kind === "remove") changes = cache.removeIdentity(op.id);
        else if (op.kind === "add") register(peerMatcher(op.peer));
        else if (op.kind === "addConjunction") register(conjunctionMatcher(op.selectors));
        else if (handles.length > 0) cache.release(handles.splice(op.index % handles.length, 1)[0]!);
        if (op.kind === "upsert" || op.kind === "remove") {
          const after = snapshot();
          for (const [c, sel] of after) {
            const ch = changes.find((x) => x.canonical === c);
            const expect = new Set(before.get(c) ?? []);
            for (const id of ch?.added ?? []) expect.add(id);
            for (const id of ch?.removed ?? []) expect.delete(id);
            assert.deepEqual([...expect].sort((a, b) => a - b), sel, `delta for ${c}`);
          }
        }
      }
      // Fresh evaluation: a new cache given the final identities and the same selectors.
      const fresh = new SelectorCache();
      for (const [id, labels] of cache.identities()) fresh.upsertIdentity(id, labels);
      for (const c of cache.canonicals()) {
        const m = matchers.get(c)!;
        // Without anchors: every identity is evaluated, so anchoring can hide nothing.
        const expected = fresh.add({ canonical: c, matches: m.matches }).sorted();
        assert.deepEqual(cache.get(c)!.sorted(), expected, c);
      }
      assert.equal(cache.size, new Set(handles).size);
    }),
    { numRuns: 200 },
  );
});
