// Security labels: parsing and formatting `source:key=value`, canonical label sets, and a pod's security-relevant labels.
import type { Label, LabelSet } from "./model.ts";

/** Label sources as Cilium names them. */
export const LABEL_SOURCE = {
  /** Only in selectors: a bare key matches a label of that key from any source. */
  any: "any",
  /** A label parsed without a source. */
  unspec: "unspec",
  k8s: "k8s",
  reserved: "reserved",
  cidr: "cidr",
  /** The prefix of a NetworkPolicy ipBlock as it stands for pod addresses (core/ipblock.ts). */
  ipblock: "ipblock",
  fqdn: "fqdn",
  container: "container",
} as const;

/** The namespace name of a pod, always part of its identity. */
export const POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace";
/** Prefix under which a namespace's labels become part of its pods' identities. */
export const NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels";
export const SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount";
export const CLUSTER_LABEL = "io.cilium.k8s.policy.cluster";
/** Cilium's default cluster name; used when none is configured so that the `cluster` entity always works. */
export const DEFAULT_CLUSTER_NAME = "default";

/** `namespaceLabelKey("team")` → `io.cilium.k8s.namespace.labels.team`. */
export function namespaceLabelKey(key: string): string {
  return `${NAMESPACE_LABELS_PREFIX}.${key}`;
}

export function label(source: string, key: string, value = ""): Label {
  return { source, key, value };
}

function parseWithDefaultSource(s: string, defaultSource: string): Label {
  let source = defaultSource;
  let rest = s;
  if (s.startsWith("$")) {
    // Cilium's legacy shorthand for reserved labels: "$host".
    source = LABEL_SOURCE.reserved;
    rest = s.slice(1);
  } else {
    const colon = s.indexOf(":");
    const eq = s.indexOf("=");
    // A colon after the '=' belongs to the value ("app=a:b"), not to a source.
    if (colon >= 0 && (eq < 0 || colon < eq)) {
      source = s.slice(0, colon) || defaultSource;
      rest = s.slice(colon + 1);
    }
  }
  const eq = rest.indexOf("=");
  if (eq < 0) return { source, key: rest, value: "" };
  return { source, key: rest.slice(0, eq), value: rest.slice(eq + 1) };
}

/**
 * Parses a label as it appears in an identity: `k8s:app=web`, `reserved:host`, `cidr:10.0.0.0/8`.
 * A bare `app=web` gets source `unspec`, as in Cilium.
 */
export function parseLabel(s: string): Label {
  return parseWithDefaultSource(s, LABEL_SOURCE.unspec);
}

/** Parses a label as it appears in a selector: a bare key means any source (`any:`). */
export function parseSelectorLabel(s: string): Label {
  return parseWithDefaultSource(s, LABEL_SOURCE.any);
}

/** `source:key=value`, or `source:key` when the value is empty (Cilium's form). */
export function formatLabel(l: Label): string {
  return l.value === "" ? `${l.source}:${l.key}` : `${l.source}:${l.key}=${l.value}`;
}

export function compareLabels(a: Label, b: Label): number {
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  if (a.value !== b.value) return a.value < b.value ? -1 : 1;
  return 0;
}

// The set key must be unambiguous for any strings, so the delimiters are escaped per field.
function escapeField(s: string, specials: string): string {
  let out = "";
  for (const c of s) out += c === "\\" || specials.includes(c) ? `\\${c}` : c;
  return out;
}

function labelKeyPart(l: Label): string {
  return `${escapeField(l.source, ":;")}:${escapeField(l.key, "=;")}=${escapeField(l.value, ";")}`;
}

/** A canonical label set: sorted by (source, key, value), exact duplicates dropped. Equal sets ⇒ equal `key`. */
export function labelSetFrom(labels: Iterable<Label>): LabelSet {
  const sorted = [...labels].map((l) => ({ source: l.source, key: l.key, value: l.value })).sort(compareLabels);
  const unique: Label[] = [];
  for (const l of sorted) {
    const last = unique[unique.length - 1];
    if (last === undefined || compareLabels(last, l) !== 0) unique.push(Object.freeze(l));
  }
  return Object.freeze({ labels: Object.freeze(unique), key: unique.map(labelKeyPart).join(";") });
}

/** `labelSetFromStrings(["k8s:app=web", "reserved:host"])`. */
export function labelSetFromStrings(labels: Iterable<string>): LabelSet {
  return labelSetFrom([...labels].map(parseLabel));
}

// ---------------------------------------------------------------------------------------------
// Identity-relevant labels (Cilium's label filter): patterns are anchored at the start of the
// label key; when an include and an ignore pattern both match, the longer match wins; with no
// include pattern configured by the user, everything not ignored is relevant.
// ---------------------------------------------------------------------------------------------

/** A literal string is a key prefix; a RegExp is anchored at the start of the key. */
export type LabelKeyPattern = string | RegExp;

/** Cilium's default ignore list: keys that change per pod or per rollout and would explode identities. */
export const DEFAULT_IGNORED_LABEL_KEYS: readonly LabelKeyPattern[] = Object.freeze([
  "io.kubernetes",
  "kubernetes.io",
  "statefulset.kubernetes.io/pod-name",
  "apps.kubernetes.io/pod-index",
  "batch.kubernetes.io/job-completion-index",
  "batch.kubernetes.io/controller-uid",
  "beta.kubernetes.io",
  "k8s.io",
  "pod-template-generation",
  "pod-template-hash",
  "controller-revision-hash",
  /annotation.*/,
  "controller-uid",
  "etcd_node",
]);

/**
 * Always relevant (Cilium adds the first three itself); they beat a shorter ignore such as
 * `io.kubernetes`. Unlike Cilium, the service account and cluster labels stay in allow-list mode
 * too: the `cluster` entity and service-account selectors depend on them.
 */
export const DEFAULT_INCLUDED_LABEL_KEYS: readonly LabelKeyPattern[] = Object.freeze([
  POD_NAMESPACE_LABEL,
  NAMESPACE_LABELS_PREFIX,
  "app.kubernetes.io",
  SERVICE_ACCOUNT_LABEL,
  CLUSTER_LABEL,
]);

export interface LabelFilterOptions {
  /** Added to DEFAULT_IGNORED_LABEL_KEYS (unless `replaceDefaultIgnores`). */
  readonly ignoredLabelKeys?: readonly LabelKeyPattern[];
  /** When non-empty, only keys matching these (or the default includes) are relevant. */
  readonly includedLabelKeys?: readonly LabelKeyPattern[];
  readonly replaceDefaultIgnores?: boolean;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function anchored(p: LabelKeyPattern): RegExp {
  return new RegExp(`^(?:${typeof p === "string" ? escapeRegExp(p) : p.source})`, typeof p === "string" ? "" : p.flags.replace(/[gy]/g, ""));
}

/** Length of the match at the start of `key`, or -1. */
function matchLength(re: RegExp, key: string): number {
  const m = re.exec(key);
  return m === null ? -1 : m[0].length;
}

export interface LabelFilter {
  isRelevant(l: Label): boolean;
}

export function labelFilter(opts: LabelFilterOptions = {}): LabelFilter {
  const ignores = [...(opts.replaceDefaultIgnores ? [] : DEFAULT_IGNORED_LABEL_KEYS), ...(opts.ignoredLabelKeys ?? [])].map(anchored);
  const userIncludes = opts.includedLabelKeys ?? [];
  const includes = [...DEFAULT_INCLUDED_LABEL_KEYS, ...userIncludes].map(anchored);
  const allowList = userIncludes.length > 0;
  return {
    isRelevant(l: Label): boolean {
      if (l.source === LABEL_SOURCE.reserved) return true;
      let included = 0; // longest matching include
      let ignored = Infinity; // shortest matching ignore
      for (const re of includes) included = Math.max(included, matchLength(re, l.key));
      for (const re of ignores) {
        const n = matchLength(re, l.key);
        if (n >= 0) ignored = Math.min(ignored, n);
      }
      if (ignored === Infinity) return !allowList || included > 0;
      return included > ignored;
    },
  };
}

const defaultFilter = labelFilter();
const filters = new WeakMap<LabelFilterOptions, LabelFilter>();

// The operator passes the same options object for every pod: compile its patterns once.
function filterFor(opts: LabelFilterOptions): LabelFilter {
  let f = filters.get(opts);
  if (f === undefined) filters.set(opts, (f = labelFilter(opts)));
  return f;
}

export interface PodIdentityInput {
  readonly podLabels: Readonly<Record<string, string>>;
  readonly namespace: string;
  readonly namespaceLabels: Readonly<Record<string, string>>;
  readonly serviceAccount?: string;
  readonly clusterName?: string;
}

/**
 * A pod's security labels, Cilium style: its own labels under `k8s:`, its namespace's labels under
 * `k8s:io.cilium.k8s.namespace.labels.*`, the namespace name, service account and cluster, minus
 * labels that are not security-relevant. Labels that only Membrane may set (namespace name,
 * namespace labels, service account, cluster) are never taken from the pod itself, so a pod cannot
 * claim another namespace's identity.
 */
export function securityLabels(input: PodIdentityInput, opts?: LabelFilterOptions): LabelSet {
  const filter = opts === undefined ? defaultFilter : filterFor(opts);
  const out: Label[] = [];
  const reservedForUs = (k: string): boolean =>
    k === POD_NAMESPACE_LABEL || k === SERVICE_ACCOUNT_LABEL || k === CLUSTER_LABEL || k.startsWith(`${NAMESPACE_LABELS_PREFIX}.`);
  for (const [k, v] of Object.entries(input.podLabels)) {
    if (!reservedForUs(k)) out.push(label(LABEL_SOURCE.k8s, k, v));
  }
  for (const [k, v] of Object.entries(input.namespaceLabels)) out.push(label(LABEL_SOURCE.k8s, namespaceLabelKey(k), v));
  out.push(label(LABEL_SOURCE.k8s, POD_NAMESPACE_LABEL, input.namespace));
  if (input.serviceAccount !== undefined && input.serviceAccount !== "") {
    out.push(label(LABEL_SOURCE.k8s, SERVICE_ACCOUNT_LABEL, input.serviceAccount));
  }
  out.push(label(LABEL_SOURCE.k8s, CLUSTER_LABEL, input.clusterName || DEFAULT_CLUSTER_NAME));
  return labelSetFrom(out.filter((l) => filter.isRelevant(l)));
}

/** Labels as the `labels` map of a CiliumIdentity object / `membrane identity list`: formatted label → value. */
export function labelSetStrings(set: LabelSet): string[] {
  return set.labels.map(formatLabel);
}
