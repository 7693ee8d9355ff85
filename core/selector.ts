// Label selectors over security labels: building them from matchLabels/matchExpressions with Cilium's conventions, and matching.
import type { Label, LabelRequirement, LabelSet, Selector, SelectorOperator } from "./model.ts";
import { CLUSTER_LABEL, LABEL_SOURCE, POD_NAMESPACE_LABEL, namespaceLabelKey } from "./labels.ts";

export interface LabelSelectorRequirementInput {
  readonly key: string;
  /** In | NotIn | Exists | DoesNotExist; anything else yields a requirement that matches nothing. */
  readonly operator: string;
  readonly values?: readonly string[];
}

export interface LabelSelectorInput {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: readonly LabelSelectorRequirementInput[];
}

/**
 * How to read a selector.
 * - No role: the selector as written (bare key = `any:` source).
 * - role "subject": a policy's endpointSelector/podSelector. In a namespaced policy the subject is
 *   always restricted to the policy's namespace (whatever namespace the selector names).
 * - role "peer": fromEndpoints/toEndpoints (and, with `requires`, fromRequires/toRequires). In a
 *   namespaced policy, restricted to the policy's namespace unless the selector names the namespace
 *   label or a namespace label (`io.cilium.k8s.namespace.labels.*`) itself; in a cluster-wide policy
 *   (no namespace), restricted to endpoints that have a namespace at all, except when the rule's
 *   subject selects `reserved:init` (initializing endpoints have no namespace label yet). Endpoint
 *   peers that select reserved labels are never restricted.
 * `kubernetesKeys`: keys are plain Kubernetes label keys with source `k8s` (NetworkPolicy), never
 * `source:key`.
 */
export type SelectorOptions =
  | { readonly role?: undefined; readonly namespace?: undefined; readonly kubernetesKeys?: boolean }
  | {
      readonly role: "subject" | "peer";
      /** The policy's namespace; undefined for cluster-wide policies. */
      readonly namespace?: string;
      /** For peers: whether the rule's subject selects `reserved:init`. */
      readonly subjectSelectsInit?: boolean;
      /** For peers: this is a fromRequires/toRequires selector (reserved labels get no exemption). */
      readonly requires?: boolean;
      readonly kubernetesKeys?: boolean;
    };

const OPERATORS: ReadonlySet<string> = new Set<SelectorOperator>(["In", "NotIn", "Exists", "DoesNotExist"]);

export const POD_NAMESPACE_KEY = `${LABEL_SOURCE.k8s}:${POD_NAMESPACE_LABEL}`;
const POD_NAMESPACE_ANY_KEY = `${LABEL_SOURCE.any}:${POD_NAMESPACE_LABEL}`;
export const RESERVED_INIT_KEY = `${LABEL_SOURCE.reserved}:init`;
const NAMESPACE_LABEL_KEY_PREFIXES = [LABEL_SOURCE.k8s, LABEL_SOURCE.any].map((src) => `${src}:${namespaceLabelKey("")}`);

/** Splits a selector key into source and label key: `k8s:app` → k8s/app, `app` → any/app, `$host` → reserved/host. */
export function splitSelectorKey(raw: string): { source: string; key: string } {
  if (raw.startsWith("$")) return { source: LABEL_SOURCE.reserved, key: raw.slice(1) };
  const colon = raw.indexOf(":");
  if (colon <= 0) return { source: LABEL_SOURCE.any, key: colon === 0 ? raw.slice(1) : raw };
  return { source: raw.slice(0, colon), key: raw.slice(colon + 1) };
}

/** The canonical `source:key` form of a selector key (splitSelectorKey joined again, without building the parts). */
export function selectorKey(raw: string, kubernetesKeys = false): string {
  if (kubernetesKeys) return `${LABEL_SOURCE.k8s}:${raw}`;
  if (raw.startsWith("$")) return `${LABEL_SOURCE.reserved}:${raw.slice(1)}`;
  const colon = raw.indexOf(":");
  if (colon < 0) return `${LABEL_SOURCE.any}:${raw}`;
  // "source:key" is already canonical; ":key" has an empty source, which means any.
  return colon === 0 ? `${LABEL_SOURCE.any}:${raw.slice(1)}` : raw;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function normalizeRequirement(key: string, operator: string, values: readonly string[]): LabelRequirement {
  if (!OPERATORS.has(operator)) {
    // Validation is the parser's job; an operator we do not know selects nothing rather than throw.
    return { key, operator: "In", values: [] };
  }
  const op = operator as SelectorOperator;
  let vals: string[];
  if (op !== "In" && op !== "NotIn") vals = [];
  else if (values.length === 1) vals = [values[0] as string];
  else vals = [...new Set(values)].sort(compareStrings);
  return { key, operator: op, values: vals };
}

/** JSON.stringify(s); text without a character it escapes (quote, backslash, control, surrogate) is quoted as is. */
function jsonString(s: string): string {
  // Untyped callers may hand in non-strings: keep exactly what the array serializer would write.
  if (typeof s !== "string") return JSON.stringify([s]).slice(1, -1);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/** JSON.stringify(operator) for the operators a normalized requirement can have. */
const OPERATOR_JSON: Readonly<Record<SelectorOperator, string>> = { In: '"In"', NotIn: '"NotIn"', Exists: '"Exists"', DoesNotExist: '"DoesNotExist"' };

/** JSON.stringify([key, operator, values]) of a normalized requirement, built without the generic serializer (a hot path in admission). */
function requirementString(r: LabelRequirement): string {
  let out = `[${jsonString(r.key)},${OPERATOR_JSON[r.operator] ?? jsonString(r.operator)},[`;
  const vs = r.values;
  for (let i = 0; i < vs.length; i++) out += i === 0 ? jsonString(vs[i] as string) : `,${jsonString(vs[i] as string)}`;
  return `${out}]]`;
}

// Selectors are immutable and equal canonical strings mean equal selectors, so one built before is
// handed out again: freezing fresh objects was most of the cost of building one. Bounded, so that
// an admission request full of distinct (or huge) selectors cannot grow it without limit.
const MEMO_MAX_ENTRIES = 4096;
const MEMO_MAX_CANONICAL = 1024;
const builtSelectors = new Map<string, Selector>();

/** A selector from requirements: sorted, de-duplicated, with its canonical string. */
export function canonicalSelector(requirements: Iterable<LabelRequirement>): Selector {
  const normalized: LabelRequirement[] = [];
  for (const r of requirements) normalized.push(normalizeRequirement(r.key, r.operator, r.values));
  return selectorOfNormalized(normalized);
}

/**
 * canonicalSelector of requirements already normalized (as rawRequirements and selectorFrom build
 * them): sorted by their strings, equal ones once, and only built when not built before.
 */
function selectorOfNormalized(reqs: LabelRequirement[]): Selector {
  const n = reqs.length;
  const strings: string[] = new Array<string>(n);
  for (let i = 0; i < n; i++) strings[i] = requirementString(reqs[i] as LabelRequirement);
  // Insertion sort of both arrays by string (selectors have a handful of requirements), then drop repeats.
  for (let i = 1; i < n; i++) {
    const s = strings[i] as string;
    const r = reqs[i] as LabelRequirement;
    let j = i - 1;
    for (; j >= 0 && (strings[j] as string) > s; j--) {
      strings[j + 1] = strings[j] as string;
      reqs[j + 1] = reqs[j] as LabelRequirement;
    }
    strings[j + 1] = s;
    reqs[j + 1] = r;
  }
  let unique = n;
  for (let i = 1, w = 1; i < n; i++) {
    if (strings[i] === strings[w - 1]) {
      unique--;
      continue;
    }
    strings[w] = strings[i] as string;
    reqs[w] = reqs[i] as LabelRequirement;
    w++;
  }
  strings.length = unique;
  const canonical = `[${strings.join(",")}]`;
  const known = builtSelectors.get(canonical);
  if (known !== undefined) return known;
  const frozen: LabelRequirement[] = new Array<LabelRequirement>(unique);
  for (let i = 0; i < unique; i++) frozen[i] = Object.freeze(reqs[i] as LabelRequirement);
  const sel: Selector = Object.freeze({ requirements: Object.freeze(frozen), canonical });
  if (canonical.length <= MEMO_MAX_CANONICAL) {
    if (builtSelectors.size >= MEMO_MAX_ENTRIES) builtSelectors.clear();
    builtSelectors.set(canonical, sel);
  }
  return sel;
}

/** The selector that selects every identity it is applied to. */
export const SELECT_ALL: Selector = canonicalSelector([]);

/** `matchLabels` for exactly these labels (Cilium's NewESFromLabels). */
export function selectorFromLabels(labels: Iterable<Label>): Selector {
  return canonicalSelector([...labels].map((l) => ({ key: `${l.source}:${l.key}`, operator: "In" as const, values: [l.value] })));
}

/** `skipKey`: a matchLabels key (canonical) to leave out. */
function rawRequirements(input: LabelSelectorInput, kubernetesKeys: boolean, keyPrefix = "", skipKey?: string): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  const matchLabels = input.matchLabels;
  if (matchLabels !== undefined) {
    for (const k in matchLabels) {
      if (!Object.prototype.hasOwnProperty.call(matchLabels, k)) continue;
      const key = selectorKey(keyPrefix + k, kubernetesKeys);
      if (key !== skipKey) out.push({ key, operator: "In", values: [matchLabels[k] as string] });
    }
  }
  for (const e of input.matchExpressions ?? []) {
    out.push(normalizeRequirement(selectorKey(keyPrefix + e.key, kubernetesKeys), e.operator, e.values ?? []));
  }
  return out;
}

function hasKey(reqs: readonly LabelRequirement[], key: string): boolean {
  for (const r of reqs) if (r.key === key) return true;
  return false;
}

/** Whether any requirement's key starts with one of the prefixes (loops: this runs for every peer selector). */
function hasKeyPrefix(reqs: readonly LabelRequirement[], prefixes: readonly string[]): boolean {
  for (const r of reqs) for (const p of prefixes) if (r.key.startsWith(p)) return true;
  return false;
}

const RESERVED_KEY_PREFIXES = [`${LABEL_SOURCE.reserved}:`];

/** Whether a selector names (any requirement on) a key, e.g. `k8s:io.kubernetes.pod.namespace`. */
export function selectorHasKey(sel: Selector, key: string): boolean {
  return hasKey(sel.requirements, key);
}

/** Builds a selector from a Kubernetes-style label selector with Cilium's conventions (see SelectorOptions). */
export function selectorFrom(input: LabelSelectorInput, opts: SelectorOptions = {}): Selector {
  const kubernetesKeys = opts.kubernetesKeys ?? false;
  // For a namespaced subject, the policy's namespace replaces whatever namespace matchLabels named:
  // a namespaced policy never selects subjects in another namespace.
  const namespacedSubject = opts.role === "subject" && opts.namespace !== undefined;
  const reqs = rawRequirements(input, kubernetesKeys, "", namespacedSubject ? POD_NAMESPACE_KEY : undefined);
  if (opts.role === "subject") {
    if (opts.namespace !== undefined) {
      reqs.push({ key: POD_NAMESPACE_KEY, operator: "In", values: [opts.namespace] });
    }
  } else if (opts.role === "peer") {
    const namesNamespace = hasKey(reqs, POD_NAMESPACE_KEY) || hasKey(reqs, POD_NAMESPACE_ANY_KEY);
    const selectsReserved = !opts.requires && hasKeyPrefix(reqs, RESERVED_KEY_PREFIXES);
    const namesNamespaceLabels = hasKeyPrefix(reqs, NAMESPACE_LABEL_KEY_PREFIXES);
    if (!namesNamespace && !selectsReserved) {
      if (opts.namespace === undefined) {
        if (!opts.subjectSelectsInit) reqs.push({ key: POD_NAMESPACE_KEY, operator: "Exists", values: [] });
      } else if (!namesNamespaceLabels) {
        reqs.push({ key: POD_NAMESPACE_KEY, operator: "In", values: [opts.namespace] });
      }
    }
  }
  return selectorOfNormalized(reqs);
}

/**
 * A NetworkPolicy peer's namespaceSelector (with its podSelector, if the same peer has one: the two
 * are a conjunction). Namespace labels are matched as the pod's `k8s:io.cilium.k8s.namespace.labels.*`
 * labels. It selects pods in namespaces, never anything without a namespace (world, host, a CIDR):
 * `NotIn`/`DoesNotExist` hold where a label is absent, so `kubernetes.io/metadata.name NotIn [y]`
 * alone would also select the world, and an egress rule with it would allow every address outside
 * the cluster (and a ClusterIP before its translation).
 */
export function namespaceSelectorFrom(namespaceSelector: LabelSelectorInput, podSelector?: LabelSelectorInput): Selector {
  const reqs = rawRequirements(namespaceSelector, true, namespaceLabelKey(""));
  reqs.push({ key: POD_NAMESPACE_KEY, operator: "Exists", values: [] });
  if (podSelector !== undefined) reqs.push(...rawRequirements(podSelector, true));
  return selectorOfNormalized(reqs);
}

/**
 * A NetworkPolicy `from`/`to` peer without ipBlock: namespaceSelector (+ podSelector) as above, or a
 * podSelector alone, which selects pods in the policy's namespace. Undefined when the peer has neither.
 */
export function networkPolicyPeerSelector(
  peer: { readonly podSelector?: LabelSelectorInput; readonly namespaceSelector?: LabelSelectorInput },
  policyNamespace: string,
  opts: { readonly clusterName?: string } = {},
): Selector | undefined {
  if (peer.namespaceSelector === undefined && peer.podSelector === undefined) return undefined;
  let podSelector = peer.podSelector;
  // As Cilium does (cluster mesh): peers mean the local cluster unless the podSelector names a cluster.
  if (opts.clusterName !== undefined) {
    const ps = podSelector ?? {};
    const namesCluster = CLUSTER_LABEL in (ps.matchLabels ?? {}) || (ps.matchExpressions ?? []).some((e) => e.key === CLUSTER_LABEL);
    if (!namesCluster) podSelector = { ...ps, matchLabels: { ...ps.matchLabels, [CLUSTER_LABEL]: opts.clusterName } };
  }
  if (peer.namespaceSelector !== undefined) return namespaceSelectorFrom(peer.namespaceSelector, podSelector);
  return selectorFrom(podSelector ?? {}, { role: "subject", namespace: policyNamespace, kubernetesKeys: true });
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/** Values per `source:key` and per `any:key`, built once per label set. */
const indexCache = new WeakMap<LabelSet, Map<string, string[]>>();

function labelIndex(set: LabelSet): Map<string, string[]> {
  let idx = indexCache.get(set);
  if (idx !== undefined) return idx;
  idx = new Map();
  const add = (k: string, v: string): void => {
    const vs = idx!.get(k);
    if (vs === undefined) idx!.set(k, [v]);
    else vs.push(v);
  };
  for (const l of set.labels) {
    add(`${l.source}:${l.key}`, l.value);
    if (l.source !== LABEL_SOURCE.any) add(`${LABEL_SOURCE.any}:${l.key}`, l.value);
  }
  indexCache.set(set, idx);
  return idx;
}

function lookupKey(requirementKey: string): string {
  // Requirements built here are already `source:key`; a bare key from elsewhere means any source.
  return requirementKey.includes(":") ? requirementKey : `${LABEL_SOURCE.any}:${requirementKey}`;
}

/** Kubernetes semantics: NotIn and DoesNotExist also match when the label is absent. */
export function requirementMatches(r: LabelRequirement, labels: LabelSet): boolean {
  const values = labelIndex(labels).get(lookupKey(r.key));
  switch (r.operator) {
    case "Exists":
      return values !== undefined;
    case "DoesNotExist":
      return values === undefined;
    case "In":
      return values !== undefined && values.some((v) => r.values.includes(v));
    case "NotIn":
      return values === undefined || !values.some((v) => r.values.includes(v));
    default:
      return false;
  }
}

/** Whether every requirement holds for the label set (the empty selector matches everything). */
export function matchesSelector(sel: Selector, labels: LabelSet): boolean {
  for (const r of sel.requirements) if (!requirementMatches(r, labels)) return false;
  return true;
}
