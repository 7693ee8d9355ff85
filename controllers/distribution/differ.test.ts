// The memoised differ agrees with core/nodestate: applying its delta to a state yields the target, whichever parts the two share by reference.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { SubjectPolicy } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import { NO_PART_CHANGE, SharedPartLinks, SubjectDeltaLinks, applyDelta, canonicalState, sameState } from "../../core/nodestate.ts";
import { StateDiffer } from "./differ.ts";

const subject = (id: number, port: number, enforced: boolean): SubjectPolicy => ({
  subject: id,
  ingressEnforced: enforced,
  egressEnforced: false,
  entries: [{ subject: id, direction: "ingress", peer: 0, proto: 6, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 }],
});
// Pools of parts: states pick from them, so two states often share a part object (as nodes do).
const SUBJECTS = [subject(256, 80, true), subject(256, 81, true), subject(257, 80, false), subject(258, 443, true)];
const POD_A = { prefix: "10.0.0.1/32", identity: 257, node: "192.0.2.1", pod: "ns/a" };
// Some ipcaches share entry objects, as consecutive versions of the operator's ipcache do.
const IPCACHES = [[], [{ prefix: "10.0.0.1/32", identity: 256 }], [POD_A, { prefix: "10.0.0.2/32", identity: 256 }], [POD_A], [POD_A, { prefix: "10.0.0.3/32", identity: 258 }]];
const IDENTITIES = [[], [{ id: 256, labels: ["k8s:app=a"] }], [{ id: 256, labels: ["k8s:app=b"] }, { id: 257, labels: ["k8s:app=c"] }]];
const RULES = [[], [{ id: 1, origin: { policyKind: "CiliumNetworkPolicy" as const, name: "p", ruleIndex: 0, path: "spec.ingress[0]" } }]];
const GENERATIONS = [[], [{ key: "CiliumNetworkPolicy/ns/p", uid: "u", generation: 1 }], [{ key: "CiliumNetworkPolicy/ns/p", uid: "u", generation: 2 }]];

const EMPTY_PARTS: Omit<NodeState, "policies"> = { ipcache: [], identities: [], rules: [], policyGenerations: [] };

const state: fc.Arbitrary<NodeState> = fc
  .record({
    subjects: fc.uniqueArray(fc.integer({ min: 0, max: SUBJECTS.length - 1 }), { maxLength: 3, selector: (i) => SUBJECTS[i]?.subject }),
    ipcache: fc.integer({ min: 0, max: IPCACHES.length - 1 }),
    identities: fc.integer({ min: 0, max: IDENTITIES.length - 1 }),
    rules: fc.integer({ min: 0, max: RULES.length - 1 }),
    gens: fc.integer({ min: 0, max: GENERATIONS.length - 1 }),
  })
  .map((r) => ({
    policies: r.subjects.map((i) => SUBJECTS[i] as SubjectPolicy),
    ipcache: IPCACHES[r.ipcache] ?? [],
    identities: IDENTITIES[r.identities] ?? [],
    rules: RULES[r.rules] ?? [],
    policyGenerations: GENERATIONS[r.gens] ?? [],
  }));

test("property: applying the memoised delta to a yields b (rules only ever accumulate); equal states give no delta", () => {
  const differ = new StateDiffer(); // one differ for all runs, as in the server: its memo must never leak between pairs
  const plain = (x: unknown): unknown => JSON.parse(JSON.stringify(x));
  // A ruleId is never reused, so a rule the target lacks may stay on the agent (core's applyDelta never removes one).
  const rulesAside = (s: NodeState): unknown => plain({ ...canonicalState(s), rules: [] });
  fc.assert(
    fc.property(state, state, (a, b) => {
      const from = differ.canonical(a);
      const to = differ.canonical(b);
      const d = differ.diff(from, to);
      if (sameState(a, b)) assert.equal(d, null);
      const applied = d ? applyDelta(from, d) : from;
      assert.deepEqual(rulesAside(applied), rulesAside(b));
      const held = new Set(applied.rules.map((r) => JSON.stringify(r)));
      assert.ok(b.rules.every((r) => held.has(JSON.stringify(r))), "every rule of the target is on the agent");
    }),
    { numRuns: 500 },
  );
});

test("canonical forms of a shared part are one object, so nodes sharing it are diffed once", () => {
  const differ = new StateDiffer();
  const shared = { ipcache: IPCACHES[2] ?? [], identities: IDENTITIES[2] ?? [], rules: RULES[1] ?? [], policyGenerations: GENERATIONS[1] ?? [] };
  const n1 = differ.canonical({ policies: [SUBJECTS[0] as SubjectPolicy], ...shared });
  const n2 = differ.canonical({ policies: [SUBJECTS[2] as SubjectPolicy], ...shared });
  assert.equal(n1.ipcache, n2.ipcache);
  assert.equal(n1.identities, n2.identities);
  assert.deepEqual(n1.ipcache.map((e) => e.prefix), ["10.0.0.1/32", "10.0.0.2/32"]);
  assert.equal(differ.diff(n1, differ.canonical({ policies: [SUBJECTS[0] as SubjectPolicy], ...shared })), null);
});

test("a subject the compiler changed travels as the compiler's delta itself, not a re-diff; an unlinked one is diffed", () => {
  const links = new SubjectDeltaLinks();
  const differ = new StateDiffer();
  differ.subjectDeltas = links;
  const base = subject(256, 80, true);
  const next = subject(256, 81, true);
  const compiled = { subject: 256, ingressEnforced: true, egressEnforced: false, added: next.entries, removed: base.entries };
  links.link(base, next, compiled);
  const from = differ.canonical({ policies: [base], ipcache: [], identities: [], rules: [], policyGenerations: [] });
  const to = differ.canonical({ policies: [next], ipcache: [], identities: [], rules: [], policyGenerations: [] });
  const d = differ.diff(from, to);
  assert.equal(d?.subjects[0], compiled, "the very delta object the compiler produced");
  assert.ok(sameState(applyDelta(from, d!), to));
  const other = differ.diff(from, differ.canonical({ ...to, policies: [subject(256, 81, true)] }));
  assert.notEqual(other?.subjects[0], compiled);
  assert.deepEqual(other?.subjects[0], compiled, "the diff of an unlinked object says the same");
});

test("a subject policy its producer vouched sorted is taken as it is (no walk over its entries); any other is put in order", () => {
  const links = new SubjectDeltaLinks();
  const differ = new StateDiffer();
  differ.subjectDeltas = links;
  const [e80, e81] = [subject(256, 80, true).entries[0]!, subject(256, 81, true).entries[0]!];
  const unsorted: SubjectPolicy = { subject: 256, ingressEnforced: true, egressEnforced: false, entries: [e81, e80] };
  const sortedCopy = differ.canonical({ ...EMPTY_PARTS, policies: [unsorted] }).policies[0]!;
  assert.notEqual(sortedCopy, unsorted, "not vouched: a sorted copy");
  assert.deepEqual(sortedCopy.entries.map((e) => e.port), [80, 81]);
  const vouched: SubjectPolicy = { ...unsorted, entries: [e80, e81] };
  links.vouchSorted(vouched);
  assert.equal(links.isVouchedSorted(vouched), true);
  assert.equal(links.isVouchedSorted(unsorted), false);
  assert.equal(differ.canonical({ ...EMPTY_PARTS, policies: [vouched] }).policies[0], vouched, "vouched: the very object");
});

test("a shared part the source replaced travels as its recorded delta (composed for an agent a few changes behind); an unlinked pair is diffed", () => {
  const links = new SharedPartLinks();
  const differ = new StateDiffer();
  differ.sharedDeltas = links;
  const v1 = [POD_A];
  const v2 = [POD_A, { prefix: "10.0.0.2/32", identity: 256 }];
  const v3 = [{ prefix: "10.0.0.2/32", identity: 258 }];
  const d12 = { ...NO_PART_CHANGE, ipcacheUpserts: [v2[1]!] };
  links.link("ipcache", v1, v2, d12);
  links.link("ipcache", v2, v3, { ...NO_PART_CHANGE, ipcacheUpserts: v3, ipcacheRemovals: ["10.0.0.1/32"] });
  const at = (ipcache: NodeState["ipcache"]): NodeState => differ.canonical({ policies: [], ipcache, identities: [], rules: [], policyGenerations: [] });
  assert.equal(differ.diff(at(v1), at(v2))?.ipcacheUpserts, d12.ipcacheUpserts, "the very list the source recorded");
  const two = differ.diff(at(v1), at(v3));
  assert.deepEqual(two?.ipcacheUpserts, v3);
  assert.deepEqual(two?.ipcacheRemovals, ["10.0.0.1/32"]);
  assert.ok(sameState(applyDelta(at(v1), two!), at(v3)));
  // Not linked (e.g. a resumed agent's older state): diffed whole, same result.
  const older = [{ prefix: "10.0.0.9/32", identity: 257 }];
  const fallback = differ.diff(at(older), at(v3));
  assert.ok(sameState(applyDelta(at(older), fallback!), at(v3)));
});

test("one policy changed among 2,000: every node is sent that one generation (the same list object for all, so it is serialised once), not the whole list", () => {
  const differ = new StateDiffer();
  const gen = (i: number, g: number) => ({ key: `CiliumNetworkPolicy/ns/p${String(i).padStart(4, "0")}`, uid: `u${i}`, generation: g });
  const before = Array.from({ length: 2000 }, (_, i) => gen(i, 1));
  const after = before.map((g, i) => (i === 700 ? gen(i, 2) : g)).filter((_, i) => i !== 5);
  const nodes = Array.from({ length: 50 }, (_, n) => ({
    from: differ.canonical({ ...EMPTY, policies: [subject(256 + n, 80, true)], policyGenerations: before }),
    to: differ.canonical({ ...EMPTY, policies: [subject(256 + n, 80, true)], policyGenerations: after }),
  }));
  const deltas = nodes.map(({ from, to }) => differ.diff(from, to)!);
  assert.deepEqual(deltas[0]!.policyGenerationUpserts, [gen(700, 2)]);
  assert.deepEqual(deltas[0]!.policyGenerationRemovals, ["CiliumNetworkPolicy/ns/p0005"]);
  for (const d of deltas) assert.equal(d.policyGenerationUpserts, deltas[0]!.policyGenerationUpserts);
  for (const [i, { from, to }] of nodes.entries()) assert.ok(sameState(applyDelta(from, deltas[i]!), to));
  // Nothing moved: no delta at all.
  assert.equal(differ.diff(nodes[0]!.to, differ.canonical({ ...EMPTY, policies: [subject(256, 80, true)], policyGenerations: [...after] })), null);
});

const EMPTY: NodeState = { policies: [], ipcache: [], identities: [], rules: [], policyGenerations: [] };

test("a target whose subject list is the held one's object is sent the shared parts' delta alone, the same delta object for every node", () => {
  const links = new SharedPartLinks();
  const differ = new StateDiffer();
  differ.sharedDeltas = links;
  const ipc0 = IPCACHES[3]!;
  const ipc1 = IPCACHES[4]!;
  links.link("ipcache", ipc0, ipc1, { ...NO_PART_CHANGE, ipcacheUpserts: [ipc1[1]!] });
  const n1 = [SUBJECTS[0]!, SUBJECTS[2]!];
  const n2 = [SUBJECTS[3]!];
  const held1 = differ.canonical({ ...EMPTY_PARTS, policies: n1, ipcache: ipc0 });
  const held2 = differ.canonical({ ...EMPTY_PARTS, policies: n2, ipcache: ipc0 });
  // The source gives each node's list as the same object when its subjects did not move.
  const to1 = differ.canonical({ ...EMPTY_PARTS, policies: n1, ipcache: ipc1 });
  const to2 = differ.canonical({ ...EMPTY_PARTS, policies: n2, ipcache: ipc1 });
  assert.equal(to1.policies, held1.policies, "the canonical list made once per list object");
  const d1 = differ.diff(held1, to1);
  const d2 = differ.diff(held2, to2);
  assert.deepEqual(d1?.subjects, []);
  assert.deepEqual(d1?.removedSubjects, []);
  assert.deepEqual(d1?.ipcacheUpserts, [ipc1[1]]);
  assert.equal(d1?.ipcacheUpserts, d2?.ipcacheUpserts, "one shared delta for both nodes");
  assert.deepEqual(applyDelta(held1, d1!), to1);
});
