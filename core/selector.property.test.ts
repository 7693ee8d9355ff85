// Property tests of core/selector.ts: what a built selector matches is checked against a direct reading of the selector's definition over generated label sets.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { Label, LabelRequirement, LabelSet } from "./model.ts";
import { LABEL_SOURCE, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, labelSetFrom } from "./labels.ts";
import { type LabelSelectorInput, type SelectorOptions, canonicalSelector, matchesSelector, namespaceSelectorFrom, selectorFrom } from "./selector.ts";

// ---- the oracle: the definition, read literally ----

/** The label a selector key names: `source:key`, `$name` = reserved:name, a bare (or `:`-led) key = any source. */
function named(raw: string, kubernetesKeys: boolean): { source: string; key: string } {
  if (kubernetesKeys) return { source: LABEL_SOURCE.k8s, key: raw };
  if (raw.startsWith("$")) return { source: LABEL_SOURCE.reserved, key: raw.slice(1) };
  const colon = raw.indexOf(":");
  if (colon < 0) return { source: LABEL_SOURCE.any, key: raw };
  if (colon === 0) return { source: LABEL_SOURCE.any, key: raw.slice(1) };
  return { source: raw.slice(0, colon), key: raw.slice(colon + 1) };
}

/** The values the labels carry under that key (any source, or the one named). */
const valuesOf = (labels: readonly Label[], k: { source: string; key: string }): string[] =>
  labels.filter((l) => l.key === k.key && (k.source === LABEL_SOURCE.any || l.source === k.source)).map((l) => l.value);

/** Kubernetes label-selector operators; NotIn and DoesNotExist hold when the label is absent; an unknown operator holds for nothing. */
function holds(operator: string, have: readonly string[], values: readonly string[]): boolean {
  if (operator === "In") return have.some((v) => values.includes(v));
  if (operator === "NotIn") return !have.some((v) => values.includes(v));
  if (operator === "Exists") return have.length > 0;
  if (operator === "DoesNotExist") return have.length === 0;
  return false;
}

/** Every key a selector names, as written. */
const keysOf = (input: LabelSelectorInput, kk: boolean): { source: string; key: string }[] =>
  [...Object.keys(input.matchLabels ?? {}), ...(input.matchExpressions ?? []).map((e) => e.key)].map((k) => named(k, kk));

/** matchLabels and matchExpressions, all of them, over the labels (keys optionally under a prefix). */
function matchesAsWritten(input: LabelSelectorInput, labels: readonly Label[], kk: boolean, prefix = "", skip: (k: string) => boolean = () => false): boolean {
  const labelsHold = Object.entries(input.matchLabels ?? {}).every(([k, v]) => skip(k) || holds("In", valuesOf(labels, named(prefix + k, kk)), [v]));
  return labelsHold && (input.matchExpressions ?? []).every((e) => holds(e.operator, valuesOf(labels, named(prefix + e.key, kk)), e.values ?? []));
}

const podNamespaces = (labels: readonly Label[]): string[] => valuesOf(labels, { source: LABEL_SOURCE.k8s, key: POD_NAMESPACE_LABEL });
const isPodNamespace = (k: { source: string; key: string }): boolean => k.key === POD_NAMESPACE_LABEL && (k.source === LABEL_SOURCE.k8s || k.source === LABEL_SOURCE.any);

/** SelectorOptions' documented meaning of each role. */
function oracle(input: LabelSelectorInput, opts: SelectorOptions, labels: readonly Label[]): boolean {
  const kk = opts.kubernetesKeys ?? false;
  if (opts.role === "subject" && opts.namespace !== undefined) {
    // The policy's namespace, whatever namespace matchLabels names.
    const namesK8sNamespace = (k: string): boolean => {
      const n = named(k, kk);
      return n.source === LABEL_SOURCE.k8s && n.key === POD_NAMESPACE_LABEL;
    };
    return podNamespaces(labels).includes(opts.namespace) && matchesAsWritten(input, labels, kk, "", namesK8sNamespace);
  }
  if (!matchesAsWritten(input, labels, kk)) return false;
  if (opts.role !== "peer") return true;
  const keys = keysOf(input, kk);
  if (keys.some(isPodNamespace)) return true;
  if (!opts.requires && keys.some((k) => k.source === LABEL_SOURCE.reserved)) return true;
  if (opts.namespace === undefined) return opts.subjectSelectsInit === true || podNamespaces(labels).length > 0;
  const namesNamespaceLabels = keys.some((k) => (k.source === LABEL_SOURCE.k8s || k.source === LABEL_SOURCE.any) && k.key.startsWith(`${NAMESPACE_LABELS_PREFIX}.`));
  return namesNamespaceLabels || podNamespaces(labels).includes(opts.namespace);
}

// ---- generators: few keys and values, so that selectors and label sets meet often ----
const value = fc.constantFrom("", "web", "db", "shop", "kube-system", 'quo"te', "ünï");
const plainKey = fc.constantFrom("app", "tier", POD_NAMESPACE_LABEL, `${NAMESPACE_LABELS_PREFIX}.team`, "init", "host");
const selectorKeyText = fc.oneof(
  plainKey,
  fc.tuple(fc.constantFrom("k8s", "any", "reserved", "container", ""), plainKey).map(([s, k]) => `${s}:${k}`),
  plainKey.map((k) => `$${k}`),
);
const expression = fc.record(
  { key: selectorKeyText, operator: fc.constantFrom("In", "NotIn", "Exists", "DoesNotExist", "in", "Gt"), values: fc.option(fc.array(value, { maxLength: 3 }), { nil: undefined }) },
  { requiredKeys: ["key", "operator"] },
);
const labelSelector: fc.Arbitrary<LabelSelectorInput> = fc.record(
  { matchLabels: fc.dictionary(selectorKeyText, value, { maxKeys: 3 }), matchExpressions: fc.array(expression, { maxLength: 3 }) },
  { requiredKeys: [] },
);
const labelSet: fc.Arbitrary<LabelSet> = fc
  .array(fc.record({ source: fc.constantFrom("k8s", "reserved", "container", "cidr"), key: plainKey, value }), { maxLength: 6 })
  .map((ls) => labelSetFrom(ls));
const options: fc.Arbitrary<SelectorOptions> = fc.oneof(
  fc.record({ kubernetesKeys: fc.boolean() }, { requiredKeys: [] }),
  fc.record(
    {
      role: fc.constantFrom("subject" as const, "peer" as const),
      namespace: fc.option(fc.constantFrom("shop", "kube-system", 'quo"te'), { nil: undefined }),
      subjectSelectsInit: fc.boolean(),
      requires: fc.boolean(),
      kubernetesKeys: fc.boolean(),
    },
    { requiredKeys: ["role"] },
  ),
);

const RUNS = { numRuns: 20_000 };

test("a selector built for any role matches exactly the label sets its definition selects", () => {
  fc.assert(
    fc.property(labelSelector, options, labelSet, (input, opts, labels) => {
      const sel = selectorFrom(input, opts);
      assert.equal(matchesSelector(sel, labels), oracle(input, opts, labels.labels));
      assert.ok(Object.isFrozen(sel) && Object.isFrozen(sel.requirements) && sel.requirements.every((r) => Object.isFrozen(r)));
    }),
    RUNS,
  );
});

test("a NetworkPolicy namespaceSelector (with its podSelector) selects pods in a namespace whose namespace labels and own labels match (an empty one, any such pod), never a label set without a namespace", () => {
  fc.assert(
    fc.property(labelSelector, fc.option(labelSelector, { nil: undefined }), labelSet, (ns, pod, labels) => {
      const l = labels.labels;
      const nsEmpty = Object.keys(ns.matchLabels ?? {}).length === 0 && (ns.matchExpressions ?? []).length === 0;
      const nsHolds = podNamespaces(l).length > 0 && (nsEmpty || matchesAsWritten(ns, l, true, `${NAMESPACE_LABELS_PREFIX}.`));
      const want = nsHolds && (pod === undefined || matchesAsWritten(pod, l, true));
      assert.equal(matchesSelector(namespaceSelectorFrom(ns, pod), labels), want);
    }),
    RUNS,
  );
});

test("the canonical form ignores order and repetition of requirements, and equal canonical strings match alike", () => {
  const requirement: fc.Arbitrary<LabelRequirement> = fc.record({
    key: selectorKeyText.map((k) => { const n = named(k, false); return `${n.source}:${n.key}`; }),
    operator: fc.constantFrom("In" as const, "NotIn" as const, "Exists" as const, "DoesNotExist" as const),
    values: fc.array(value, { maxLength: 3 }),
  });
  fc.assert(
    fc.property(fc.array(requirement, { maxLength: 5 }), fc.nat(), labelSet, (reqs, seed, labels) => {
      const got = canonicalSelector(reqs);
      const shuffled = [...reqs, ...reqs.slice(0, seed % (reqs.length + 1))].sort((a, b) => ((a.key.length * 31 + seed) % 7) - ((b.key.length * 31 + seed) % 7));
      assert.equal(canonicalSelector(shuffled).canonical, got.canonical);
      const want = reqs.every((r) => holds(r.operator, valuesOf(labels.labels, named(r.key, false)), r.values));
      assert.equal(matchesSelector(got, labels), want);
    }),
    RUNS,
  );
});

test("the canonical string stays JSON: it parses back to the requirements", () => {
  fc.assert(
    fc.property(labelSelector, options, (input, opts) => {
      const s = selectorFrom(input, opts);
      assert.deepEqual(JSON.parse(s.canonical), s.requirements.map((r) => [r.key, r.operator, [...r.values]]));
    }),
    { numRuns: 5_000 },
  );
});
