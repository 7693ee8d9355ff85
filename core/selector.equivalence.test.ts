// Property tests: the cheaper canonical-selector builder in core/selector.ts yields exactly the selectors of the earlier reference kept here.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { LabelRequirement, Selector, SelectorOperator } from "./model.ts";
import { LABEL_SOURCE, namespaceLabelKey } from "./labels.ts";
import {
  type LabelSelectorInput,
  type SelectorOptions,
  POD_NAMESPACE_KEY,
  canonicalSelector,
  namespaceSelectorFrom,
  selectorFrom,
  selectorKey,
  selectsInit,
} from "./selector.ts";

// ---- the reference: the implementation before the rewrite, unchanged ----
const OPERATORS: ReadonlySet<string> = new Set<SelectorOperator>(["In", "NotIn", "Exists", "DoesNotExist"]);
const POD_NAMESPACE_ANY_KEY = `${LABEL_SOURCE.any}:io.kubernetes.pod.namespace`;
const NAMESPACE_LABEL_KEY_PREFIXES = [LABEL_SOURCE.k8s, LABEL_SOURCE.any].map((src) => `${src}:${namespaceLabelKey("")}`);
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
function refNormalize(key: string, operator: string, values: readonly string[]): LabelRequirement {
  if (!OPERATORS.has(operator)) return { key, operator: "In", values: [] };
  const op = operator as SelectorOperator;
  const vals = op === "In" || op === "NotIn" ? [...new Set(values)].sort(cmp) : [];
  return { key, operator: op, values: vals };
}
function refCanonical(requirements: Iterable<LabelRequirement>): Selector {
  const byString = new Map<string, LabelRequirement>();
  for (const r of requirements) {
    const n = refNormalize(r.key, r.operator, r.values);
    byString.set(JSON.stringify([n.key, n.operator, n.values]), n);
  }
  const sorted = [...byString.entries()].sort((a, b) => cmp(a[0], b[0]));
  return { requirements: sorted.map(([, r]) => r), canonical: `[${sorted.map(([s]) => s).join(",")}]` };
}
function refRaw(input: LabelSelectorInput, kubernetesKeys: boolean, keyPrefix = ""): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  for (const [k, v] of Object.entries(input.matchLabels ?? {})) out.push({ key: selectorKey(keyPrefix + k, kubernetesKeys), operator: "In", values: [v] });
  for (const e of input.matchExpressions ?? []) out.push(refNormalize(selectorKey(keyPrefix + e.key, kubernetesKeys), e.operator, e.values ?? []));
  return out;
}
const hasKey = (reqs: readonly LabelRequirement[], key: string): boolean => reqs.some((r) => r.key === key);
function refSelectorFrom(input: LabelSelectorInput, opts: SelectorOptions = {}): Selector {
  const kubernetesKeys = opts.kubernetesKeys ?? false;
  let reqs = refRaw(input, kubernetesKeys);
  if (opts.role === "subject") {
    if (opts.namespace !== undefined) {
      const matchLabels = Object.fromEntries(Object.entries(input.matchLabels ?? {}).filter(([k]) => selectorKey(k, kubernetesKeys) !== POD_NAMESPACE_KEY));
      reqs = refRaw({ ...input, matchLabels }, kubernetesKeys);
      reqs.push({ key: POD_NAMESPACE_KEY, operator: "In", values: [opts.namespace] });
    }
  } else if (opts.role === "peer") {
    const namesNamespace = hasKey(reqs, POD_NAMESPACE_KEY) || hasKey(reqs, POD_NAMESPACE_ANY_KEY);
    const selectsReserved = !opts.requires && reqs.some((r) => r.key.startsWith(`${LABEL_SOURCE.reserved}:`));
    const namesNamespaceLabels = reqs.some((r) => NAMESPACE_LABEL_KEY_PREFIXES.some((p) => r.key.startsWith(p)));
    if (!namesNamespace && !selectsReserved) {
      if (opts.namespace === undefined) {
        if (!opts.subjectSelectsInit) reqs.push({ key: POD_NAMESPACE_KEY, operator: "Exists", values: [] });
      } else if (!namesNamespaceLabels) {
        reqs.push({ key: POD_NAMESPACE_KEY, operator: "In", values: [opts.namespace] });
      }
    }
  }
  return refCanonical(reqs);
}
function refNamespaceSelectorFrom(ns: LabelSelectorInput, pod?: LabelSelectorInput): Selector {
  const reqs = refRaw(ns, true, namespaceLabelKey(""));
  if (reqs.length === 0) reqs.push({ key: POD_NAMESPACE_KEY, operator: "Exists", values: [] });
  if (pod !== undefined) reqs.push(...refRaw(pod, true));
  return refCanonical(reqs);
}

// ---- generators: keys and values that hit every branch, including text JSON must escape ----
const text = fc.oneof(
  fc.constantFrom("", "app", "web", "a b", 'quo"te', "back\\slash", "new\nline", "\u0001", "ünï", "\ud83d\ude00", "\ud800", "\udfff", "a:b", "x=y"),
  fc.string({ maxLength: 8 }),
  fc.string({ maxLength: 6, unit: "binary" }),
);
const key = fc.oneof(
  text,
  fc.constantFrom(
    "io.kubernetes.pod.namespace",
    "k8s:io.kubernetes.pod.namespace",
    "any:io.kubernetes.pod.namespace",
    "$host",
    "reserved:init",
    "reserved:world",
    "k8s:io.cilium.k8s.namespace.labels.team",
    "io.cilium.k8s.namespace.labels.team",
    ":app",
    "k8s:app",
  ),
);
const operator = fc.constantFrom("In", "NotIn", "Exists", "DoesNotExist", "in", "Gt", "");
const expression = fc.record({ key, operator, values: fc.option(fc.array(text, { maxLength: 4 }), { nil: undefined }) }, { requiredKeys: ["key", "operator"] });
const labelSelector: fc.Arbitrary<LabelSelectorInput> = fc.record(
  { matchLabels: fc.dictionary(key, text, { maxKeys: 4 }), matchExpressions: fc.array(expression, { maxLength: 4 }) },
  { requiredKeys: [] },
);
const options: fc.Arbitrary<SelectorOptions> = fc.oneof(
  fc.record({ kubernetesKeys: fc.boolean() }, { requiredKeys: [] }),
  fc.record(
    {
      role: fc.constantFrom("subject" as const, "peer" as const),
      namespace: fc.option(fc.constantFrom("shop", "kube-system", "a\"b"), { nil: undefined }),
      subjectSelectsInit: fc.boolean(),
      requires: fc.boolean(),
      kubernetesKeys: fc.boolean(),
    },
    { requiredKeys: ["role"] },
  ),
);

const RUNS = { numRuns: 20_000 };
const plain = (s: Selector): unknown => ({ canonical: s.canonical, requirements: s.requirements.map((r) => ({ key: r.key, operator: r.operator, values: [...r.values] })) });

test("selectorFrom builds the same requirements and canonical string as the reference for any selector and role", () => {
  fc.assert(
    fc.property(labelSelector, options, (input, opts) => {
      const got = selectorFrom(input, opts);
      assert.deepEqual(plain(got), plain(refSelectorFrom(input, opts)));
      assert.ok(Object.isFrozen(got) && Object.isFrozen(got.requirements) && got.requirements.every((r) => Object.isFrozen(r)));
    }),
    RUNS,
  );
});

test("canonicalSelector de-duplicates and orders requirements exactly as the reference, whatever their order", () => {
  const requirement = fc.record({ key: text, operator, values: fc.array(text, { maxLength: 4 }) });
  fc.assert(
    fc.property(fc.array(requirement, { maxLength: 6 }), (reqs) => {
      const got = canonicalSelector(reqs as LabelRequirement[]);
      assert.deepEqual(plain(got), plain(refCanonical(reqs as LabelRequirement[])));
      assert.deepEqual(plain(canonicalSelector([...reqs].reverse() as LabelRequirement[])), plain(got));
    }),
    RUNS,
  );
});

test("namespaceSelectorFrom and selectsInit agree with the reference", () => {
  fc.assert(
    fc.property(labelSelector, fc.option(labelSelector, { nil: undefined }), (ns, pod) => {
      assert.deepEqual(plain(namespaceSelectorFrom(ns, pod)), plain(refNamespaceSelectorFrom(ns, pod)));
      assert.equal(selectsInit(ns), hasKey(refRaw(ns, false), "reserved:init"));
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
