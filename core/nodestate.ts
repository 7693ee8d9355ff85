// Pure helpers over a node's desired state: typed equality of its parts, the delta from an acknowledged
// state to a new one, and applying a delta (what an agent does to keep its record of what the maps hold).
import type { PolicyEntry, RuleOrigin, SubjectPolicy } from "./model.ts";
import { compareEntries } from "./policy/mapstate.ts";
import { sameSubjectDns } from "./policy/dns-rules.ts";
import { sameSubjectHttp } from "./policy/http-rules.ts";

export { sameSubjectDns, sameSubjectHttp };
import { sameWorkload } from "./workload.ts";
import type { Downstream, IPCacheEntry, IdentityLabels, NodeState, PolicyGeneration, SubjectDelta, TracingPolicyItem } from "./wire.ts";

export type DeltaBody = Omit<Extract<Downstream, { type: "delta" }>, "type" | "version" | "baseVersion" | "nonce">;

export const EMPTY_STATE: NodeState = { policies: [], ipcache: [], identities: [], rules: [], policyGenerations: [] };

function byKey<T, K>(items: readonly T[], key: (t: T) => K): Map<K, T> {
  return new Map(items.map((t) => [key(t), t]));
}

/** `old` is there and equal to `now`. */
const sameOrMissing = <T>(old: T | undefined, now: T, same: (a: T, b: T) => boolean): boolean => old !== undefined && same(old, now);

// Typed equality of each part of a node state (one home for each; nothing is serialised to compare).

export function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function samePolicyEntry(a: PolicyEntry, b: PolicyEntry): boolean {
  return a === b || (compareEntries(a, b) === 0 && a.verdict === b.verdict && a.proxyPort === b.proxyPort && a.ruleId === b.ruleId);
}

export function sameIPCacheEntry(a: IPCacheEntry, b: IPCacheEntry): boolean {
  return a === b || (a.prefix === b.prefix && a.identity === b.identity && a.node === b.node && a.pod === b.pod && sameWorkload(a.workload, b.workload) && a.ipBlockIdentity === b.ipBlockIdentity);
}

export function sameIdentityLabels(a: IdentityLabels, b: IdentityLabels): boolean {
  return a === b || (a.id === b.id && sameStrings(a.labels, b.labels));
}

export function sameRuleOrigin(a: RuleOrigin, b: RuleOrigin): boolean {
  return a === b || (a.policyKind === b.policyKind && a.namespace === b.namespace && a.name === b.name && a.ruleIndex === b.ruleIndex && a.path === b.path);
}

export function samePolicyGeneration(a: PolicyGeneration, b: PolicyGeneration): boolean {
  return a === b || (a.key === b.key && a.uid === b.uid && a.generation === b.generation);
}

/** Element-wise (both lists in canonical order). */
export function samePolicyGenerations(a: readonly PolicyGeneration[], b: readonly PolicyGeneration[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!samePolicyGeneration(a[i]!, b[i]!)) return false;
  return true;
}

/** The same policy object: key, uid and generation (the API server bumps the generation on every spec change). */
export function sameTracingPolicy(a: TracingPolicyItem, b: TracingPolicyItem): boolean {
  return a === b || (a.key === b.key && a.uid === b.uid && a.generation === b.generation);
}

const byItemKey = (a: { key: string }, b: { key: string }): number => comparePrefixes(a.key, b.key);

/** What of the TracingPolicies moved between two lists (any order): the items new or changed, whole, and the keys gone; both sorted by key. */
export function diffTracingPolicies(from: readonly TracingPolicyItem[] = [], to: readonly TracingPolicyItem[] = []): Pick<DeltaBody, "tracingPolicyUpserts" | "tracingPolicyRemovals"> {
  if (from === to) return {};
  const before = byKey(from, (p) => p.key);
  const after = new Set(to.map((p) => p.key));
  const upserts = to.filter((p) => !sameOrMissing(before.get(p.key), p, sameTracingPolicy)).sort(byItemKey);
  const removals = from.map((p) => p.key).filter((k) => !after.has(k)).sort(comparePrefixes);
  return { ...(upserts.length > 0 ? { tracingPolicyUpserts: upserts } : {}), ...(removals.length > 0 ? { tracingPolicyRemovals: removals } : {}) };
}

type Rule = NodeState["rules"][number];
export const sameRule = (a: Rule, b: Rule): boolean => a === b || (a.id === b.id && sameRuleOrigin(a.origin, b.origin));

/**
 * Which compiled delta turns one subject policy object into the next: a node that holds the first
 * is sent that delta as it is, instead of a diff of the two entry lists.
 */
export class SubjectDeltaLinks {
  // The base is held weakly: a strong one would keep every version a subject ever had alive, each through the next
  // (a chain as long as the subject's history; gigabytes in bench/scale). A base no agent holds is never asked for.
  private readonly links = new WeakMap<SubjectPolicy, { readonly base: WeakRef<SubjectPolicy>; readonly delta: SubjectDelta }>();

  link(base: SubjectPolicy, next: SubjectPolicy, delta: SubjectDelta): void {
    this.links.set(next, { base: new WeakRef(base), delta });
  }

  /** The delta from `base` to `next` when `next` was made from `base` by one; undefined otherwise. */
  between(base: SubjectPolicy, next: SubjectPolicy): SubjectDelta | undefined {
    const l = this.links.get(next);
    return l?.base.deref() === base ? l.delta : undefined;
  }

  // Subject policies whose producer made their entries in canonical order (a compiler snapshot, or one patched
  // from it): consumers skip checking the order, a walk over every entry of every new version.
  private readonly sorted = new WeakSet<SubjectPolicy>();

  /** Records that `p`'s entries are in compareEntries order, as its producer made them. */
  vouchSorted(p: SubjectPolicy): void {
    this.sorted.add(p);
  }

  /** Whether `p`'s producer recorded its entries as sorted (false: unknown, check). */
  isVouchedSorted(p: SubjectPolicy): boolean {
    return this.sorted.has(p);
  }
}

/** The parts of a node state every node shares whose deltas their producer records (policy generations are diffed, once per pair of lists). */
export type SharedPart = "ipcache" | "identities" | "rules";
export type SharedPartDelta = Pick<DeltaBody, "ipcacheUpserts" | "ipcacheRemovals" | "identityUpserts" | "identityRemovals" | "ruleUpserts">;
export const NO_PART_CHANGE: SharedPartDelta = { ipcacheUpserts: [], ipcacheRemovals: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [] };

/**
 * Which delta turned one version of a shared part (an array its producer replaced) into the next,
 * as the producer computed it once from the change. The last `depth` versions of each part are
 * kept, so an agent a few changes behind gets the composition of their deltas; one further behind
 * is not linked (undefined) and its caller diffs the two arrays.
 */
export class SharedPartLinks {
  private readonly history = new Map<SharedPart, { base: readonly unknown[]; next: readonly unknown[]; delta: SharedPartDelta }[]>();

  constructor(private readonly depth = 64) {}

  link<K extends SharedPart>(part: K, base: NodeState[K], next: NodeState[K], delta: SharedPartDelta): void {
    let h = this.history.get(part);
    if (!h) this.history.set(part, (h = []));
    h.push({ base, next, delta });
    if (h.length > this.depth) h.shift();
  }

  /** The delta from `base` to `next` when a chain of recorded changes leads from one to the other. */
  between<K extends SharedPart>(part: K, base: NodeState[K], next: NodeState[K]): SharedPartDelta | undefined {
    const h = this.history.get(part);
    if (!h) return undefined;
    let i = h.length - 1;
    while (i >= 0 && h[i]!.next !== next) i--;
    const end = i;
    while (i >= 0 && h[i]!.base !== base) {
      if (i > 0 && h[i - 1]!.next !== h[i]!.base) return undefined; // a gap in the chain
      i--;
    }
    if (i < 0) return undefined;
    return i === end ? h[i]!.delta : composeParts(h.slice(i, end + 1).map((l) => l.delta));
  }
}

/** Successive shared-part deltas as one: the last word on each prefix, identity or rule wins. */
function composeParts(deltas: readonly SharedPartDelta[]): SharedPartDelta {
  const ipc = new Map<string, IPCacheEntry | null>();
  const ids = new Map<number, IdentityLabels | null>();
  const rules = new Map<number, Rule>();
  for (const d of deltas) {
    for (const e of d.ipcacheUpserts) ipc.set(e.prefix, e);
    for (const p of d.ipcacheRemovals) ipc.set(p, null);
    for (const i of d.identityUpserts) ids.set(i.id, i);
    for (const id of d.identityRemovals) ids.set(id, null);
    for (const r of d.ruleUpserts) rules.set(r.id, r);
  }
  const upserts = <K, V>(m: Map<K, V | null>): V[] => [...m.values()].filter((v): v is V => v !== null);
  const removals = <K, V>(m: Map<K, V | null>): K[] => [...m].filter(([, v]) => v === null).map(([k]) => k);
  return {
    ipcacheUpserts: upserts(ipc).sort((a, b) => comparePrefixes(a.prefix, b.prefix)),
    ipcacheRemovals: removals(ipc).sort(comparePrefixes),
    identityUpserts: upserts(ids).sort((a, b) => a.id - b.id),
    identityRemovals: removals(ids).sort((a, b) => a - b),
    ruleUpserts: [...rules.values()].sort((a, b) => a.id - b.id),
  };
}

export const comparePrefixes = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Sorted canonical copy, so equal states compare equal and deltas are deterministic. */
export function canonicalState(s: NodeState): NodeState {
  return {
    policies: [...s.policies].sort((a, b) => a.subject - b.subject).map((p) => ({ ...p, entries: [...p.entries].sort(compareEntries) })),
    ipcache: [...s.ipcache].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0)),
    identities: [...s.identities].sort((a, b) => a.id - b.id),
    rules: [...s.rules].sort((a, b) => a.id - b.id),
    policyGenerations: [...s.policyGenerations].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
    ...(s.tracingPolicies ? { tracingPolicies: [...s.tracingPolicies].sort(byItemKey) } : {}),
  };
}

export function sameState(a: NodeState, b: NodeState): boolean {
  const ca = canonicalState(a);
  const cb = canonicalState(b);
  const d = diffState(ca, cb);
  // diffState lists rules to add only: equal counts and nothing to add is the same rule table.
  const moved = d.subjects.length + d.removedSubjects.length + d.ipcacheUpserts.length + d.ipcacheRemovals.length + d.identityUpserts.length + d.identityRemovals.length + d.ruleUpserts.length;
  const tracing = d.tracingPolicyUpserts === undefined && d.tracingPolicyRemovals === undefined;
  return moved === 0 && tracing && ca.rules.length === cb.rules.length && samePolicyGenerations(ca.policyGenerations, cb.policyGenerations);
}

/**
 * What changes `from` into `to`, by comparing the two whole. Per subject, the added entries come
 * before removals when applied. The distribution sends the compiler's and the source's deltas
 * instead; this is its fallback for a pair no recorded change links (a resuming agent, one far behind).
 */
export function diffState(from: NodeState, to: NodeState): DeltaBody {
  const fromPolicies = byKey(from.policies, (p) => p.subject);
  const subjects: SubjectDelta[] = [];
  for (const p of to.policies) {
    const old = fromPolicies.get(p.subject);
    const { added, removed } = diffEntries(old?.entries ?? [], p.entries);
    if (!old || added.length > 0 || removed.length > 0 || old.ingressEnforced !== p.ingressEnforced || old.egressEnforced !== p.egressEnforced || !sameSubjectDns(old.dns, p.dns) || !sameSubjectHttp(old.http, p.http)) {
      subjects.push({ subject: p.subject, ingressEnforced: p.ingressEnforced, egressEnforced: p.egressEnforced, added, removed, ...(p.dns ? { dns: p.dns } : {}), ...(p.http ? { http: p.http } : {}) });
    }
  }
  const toSubjects = new Set(to.policies.map((p) => p.subject));
  const fromIpc = byKey(from.ipcache, (e) => e.prefix);
  const toIpc = byKey(to.ipcache, (e) => e.prefix);
  const fromIds = byKey(from.identities, (i) => i.id);
  const toIds = byKey(to.identities, (i) => i.id);
  const fromRules = byKey(from.rules, (r) => r.id);
  return {
    subjects: subjects.sort((a, b) => a.subject - b.subject),
    removedSubjects: from.policies.map((p) => p.subject).filter((s) => !toSubjects.has(s)).sort((a, b) => a - b),
    ipcacheUpserts: to.ipcache.filter((e) => !sameOrMissing(fromIpc.get(e.prefix), e, sameIPCacheEntry)),
    ipcacheRemovals: from.ipcache.map((e) => e.prefix).filter((p) => !toIpc.has(p)),
    identityUpserts: to.identities.filter((i) => !sameOrMissing(fromIds.get(i.id), i, sameIdentityLabels)),
    identityRemovals: from.identities.map((i) => i.id).filter((id) => !toIds.has(id)),
    ruleUpserts: to.rules.filter((r) => !sameOrMissing(fromRules.get(r.id), r, sameRule)),
    ...diffPolicyGenerations(from.policyGenerations, to.policyGenerations),
    ...diffTracingPolicies(from.tracingPolicies, to.tracingPolicies),
  };
}

/**
 * The entries `to` adds or changes against `from`, and the ones it drops, both in compareEntries
 * order: one walk over the two lists in that order (as subject policies hold them), no key strings
 * or maps; the differ runs this for every subject of an agent more than one version behind.
 */
function diffEntries(from: readonly PolicyEntry[], to: readonly PolicyEntry[]): { added: PolicyEntry[]; removed: PolicyEntry[] } {
  if (!isSorted(from, compareEntries)) from = [...from].sort(compareEntries);
  if (!isSorted(to, compareEntries)) to = [...to].sort(compareEntries);
  const added: PolicyEntry[] = [];
  const removed: PolicyEntry[] = [];
  let i = 0;
  let j = 0;
  while (i < from.length || j < to.length) {
    const c = i >= from.length ? 1 : j >= to.length ? -1 : compareEntries(from[i]!, to[j]!);
    if (c < 0) removed.push(from[i++]!);
    else if (c > 0) added.push(to[j++]!);
    else {
      if (!samePolicyEntry(from[i]!, to[j]!)) added.push(to[j]!);
      i++;
      j++;
    }
  }
  return { added, removed };
}

/** What of the policy generations moved between two lists in canonical (key) order: one walk over both. */
export function diffPolicyGenerations(from: readonly PolicyGeneration[], to: readonly PolicyGeneration[]): Pick<DeltaBody, "policyGenerationUpserts" | "policyGenerationRemovals"> {
  if (from === to) return NO_GENERATION_CHANGE;
  const byKey = (a: PolicyGeneration, b: PolicyGeneration): number => comparePrefixes(a.key, b.key);
  if (!isSorted(from, byKey)) from = [...from].sort(byKey);
  if (!isSorted(to, byKey)) to = [...to].sort(byKey);
  const upserts: PolicyGeneration[] = [];
  const removals: string[] = [];
  let i = 0;
  let j = 0;
  while (i < from.length || j < to.length) {
    const c = i >= from.length ? 1 : j >= to.length ? -1 : comparePrefixes(from[i]!.key, to[j]!.key);
    if (c < 0) removals.push(from[i++]!.key);
    else if (c > 0) upserts.push(to[j++]!);
    else {
      if (!samePolicyGeneration(from[i]!, to[j]!)) upserts.push(to[j]!);
      i++;
      j++;
    }
  }
  return upserts.length === 0 && removals.length === 0 ? NO_GENERATION_CHANGE : { policyGenerationUpserts: upserts, policyGenerationRemovals: removals };
}

export const NO_GENERATION_CHANGE: Pick<DeltaBody, "policyGenerationUpserts" | "policyGenerationRemovals"> = { policyGenerationUpserts: [], policyGenerationRemovals: [] };

/**
 * Applies a delta to a canonical state, giving a canonical state (rules are only ever added: a
 * ruleId is never reused for another rule). Only what the delta names is rebuilt, by merging its
 * sorted changes into the sorted lists; a subject or part it does not name keeps its object.
 */
export function applyDelta(s: NodeState, d: DeltaBody): NodeState {
  let policies: readonly SubjectPolicy[] = s.policies;
  if (d.subjects.length > 0 || d.removedSubjects.length > 0) {
    const bySubject = new Map<number, SubjectPolicy>(s.policies.map((p) => [p.subject, p]));
    for (const sd of d.subjects) {
      const entries = mergeSorted(bySubject.get(sd.subject)?.entries ?? [], sd.added, sd.removed, compareEntries, compareEntries, compareEntries);
      bySubject.set(sd.subject, { subject: sd.subject, ingressEnforced: sd.ingressEnforced, egressEnforced: sd.egressEnforced, entries, ...(sd.dns ? { dns: sd.dns } : {}), ...(sd.http ? { http: sd.http } : {}) });
    }
    for (const r of d.removedSubjects) bySubject.delete(r);
    policies = [...bySubject.values()].sort((a, b) => a.subject - b.subject);
  }
  const ipcache = d.ipcacheUpserts.length + d.ipcacheRemovals.length === 0 ? s.ipcache : mergeIPCache(s.ipcache, d.ipcacheUpserts, d.ipcacheRemovals);
  const identities =
    d.identityUpserts.length + d.identityRemovals.length === 0 ? s.identities : mergeSorted(s.identities, d.identityUpserts, d.identityRemovals, byId, idOf, byNumber);
  const rules = d.ruleUpserts.length === 0 ? s.rules : mergeSorted(s.rules, d.ruleUpserts, [], byId, idOf, byNumber);
  const policyGenerations =
    d.policyGenerationUpserts.length + d.policyGenerationRemovals.length === 0
      ? s.policyGenerations
      : mergeSorted(s.policyGenerations, d.policyGenerationUpserts, d.policyGenerationRemovals, byItemKey, itemKeyOf, comparePrefixes);
  const tracingPolicies =
    (d.tracingPolicyUpserts?.length ?? 0) + (d.tracingPolicyRemovals?.length ?? 0) === 0
      ? s.tracingPolicies
      : mergeSorted(s.tracingPolicies ?? [], d.tracingPolicyUpserts ?? [], d.tracingPolicyRemovals ?? [], byItemKey, itemKeyOf, comparePrefixes);
  return { policies, ipcache, identities, rules, policyGenerations, ...(tracingPolicies && tracingPolicies.length > 0 ? { tracingPolicies } : {}) };
}

/** A sorted ipcache with `upserts` put in (replacing the entry of their prefix) and `removals` taken out: each change found by binary search, the runs between them copied whole. */
export function mergeIPCache(base: readonly IPCacheEntry[], upserts: readonly IPCacheEntry[], removals: readonly string[]): IPCacheEntry[] {
  return mergeSorted(base, upserts, removals, byPrefix, prefixOf, comparePrefixes);
}

// The orders mergeSorted keeps, one function object each (mergedOrder records which one a merged list is in).
const byPrefix = (a: IPCacheEntry, b: IPCacheEntry): number => comparePrefixes(a.prefix, b.prefix);
const prefixOf = (e: IPCacheEntry, p: string): number => comparePrefixes(e.prefix, p);
const byId = (a: { id: number }, b: { id: number }): number => a.id - b.id;
const idOf = (i: { id: number }, id: number): number => i.id - id;
const byNumber = (a: number, b: number): number => a - b;
const itemKeyOf = (p: { key: string }, k: string): number => comparePrefixes(p.key, k);

/**
 * The order each list mergeSorted made is in. A merged list is never written after (node states are read-only), so the
 * next merge into it (the operator's ipcache after every change, an agent's after every delta) skips the O(n) check.
 */
const mergedOrder = new WeakMap<readonly unknown[], (a: never, b: never) => number>();

/**
 * Whether `list` is a merge's output: every such list is in the canonical order of its part (mergeSorted's
 * orders are canonicalState's), so a consumer may skip checking it.
 */
export function mergedInCanonicalOrder(list: readonly unknown[]): boolean {
  return mergedOrder.has(list);
}

/**
 * `base` with `upserts` put in (an upsert replaces the item with its key), then `removals` taken
 * out, all in `cmp` order (base sorted first if it is not). A delta moves a few items of lists that
 * hold thousands (a 50,000-pod ipcache), so each change is found by binary search and the runs of
 * base between changes are copied whole: O(changes × log n) comparisons, not one per item.
 */
function mergeSorted<T, K>(
  base: readonly T[],
  upserts: readonly T[],
  removals: readonly K[],
  cmp: (a: T, b: T) => number,
  cmpKey: (t: T, k: K) => number,
  cmpKeys: (a: K, b: K) => number,
): T[] {
  const b = mergedOrder.get(base) === cmp || isSorted(base, cmp) ? base : [...base].sort(cmp);
  const u = isSorted(upserts, cmp) ? upserts : [...upserts].sort(cmp);
  const r = isSorted(removals, cmpKeys) ? removals : [...removals].sort(cmpKeys);
  const runs: (readonly T[])[] = [];
  let i = 0; // the first base item not yet copied or dropped
  let j = 0;
  let k = 0;
  /** Copies base items from i up to the first one for which `before` is false. */
  const copyWhile = (before: (t: T) => boolean): void => {
    let lo = i;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(b[mid]!)) lo = mid + 1;
      else hi = mid;
    }
    if (lo > i) runs.push(b.slice(i, lo));
    i = lo;
  };
  while (j < u.length || k < r.length) {
    // The next change in key order; a removal goes before an upsert of its key, and takes it out too.
    if (j >= u.length || (k < r.length && cmpKey(u[j]!, r[k]!) >= 0)) {
      const key = r[k++]!;
      copyWhile((t) => cmpKey(t, key) < 0);
      while (i < b.length && cmpKey(b[i]!, key) === 0) i++;
      while (j < u.length && cmpKey(u[j]!, key) === 0) j++;
    } else {
      const item = u[j++]!;
      copyWhile((t) => cmp(t, item) < 0);
      if (i < b.length && cmp(b[i]!, item) === 0) i++;
      runs.push([item]);
    }
  }
  if (i < b.length) runs.push(i === 0 ? b : b.slice(i));
  let out: T[] = [];
  for (let x = 0; x < runs.length; x += CONCAT_RUNS) out = out.concat(...runs.slice(x, x + CONCAT_RUNS));
  mergedOrder.set(out, cmp);
  return out;
}

/** Runs joined per concat call: a spread of arguments has a limit, and a delta can move thousands of items. */
const CONCAT_RUNS = 4096;

function isSorted<T>(items: readonly T[], cmp: (a: T, b: T) => number): boolean {
  for (let i = 1; i < items.length; i++) if (cmp(items[i - 1]!, items[i]!) > 0) return false;
  return true;
}
