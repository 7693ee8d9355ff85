// Pure helpers over a node's desired state: the delta from an acknowledged state to a new one, and
// applying a delta (what an agent does; used by tests and simulated agents to check round trips).
import type { PolicyEntry, SubjectPolicy } from "./model.ts";
import { compareEntries, entryKeyString } from "./policy/mapstate.ts";
import type { Downstream, NodeState, SubjectDelta } from "./wire.ts";

export type DeltaBody = Omit<Extract<Downstream, { type: "delta" }>, "type" | "version" | "baseVersion" | "nonce">;

export const EMPTY_STATE: NodeState = { policies: [], ipcache: [], identities: [], rules: [], policyGenerations: [] };

function byKey<T>(items: readonly T[], key: (t: T) => string): Map<string, T> {
  return new Map(items.map((t) => [key(t), t]));
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Which compiled delta turns one subject policy object into the next: a node that holds the first
 * is sent that delta as it is, instead of a diff of the two entry lists.
 */
export class SubjectDeltaLinks {
  private readonly links = new WeakMap<SubjectPolicy, { readonly base: SubjectPolicy; readonly delta: SubjectDelta }>();

  link(base: SubjectPolicy, next: SubjectPolicy, delta: SubjectDelta): void {
    this.links.set(next, { base, delta });
  }

  /** The delta from `base` to `next` when `next` was made from `base` by one; undefined otherwise. */
  between(base: SubjectPolicy, next: SubjectPolicy): SubjectDelta | undefined {
    const l = this.links.get(next);
    return l?.base === base ? l.delta : undefined;
  }
}

/** Sorted canonical copy, so equal states compare equal and deltas are deterministic. */
export function canonicalState(s: NodeState): NodeState {
  return {
    policies: [...s.policies].sort((a, b) => a.subject - b.subject).map((p) => ({ ...p, entries: [...p.entries].sort(compareEntries) })),
    ipcache: [...s.ipcache].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0)),
    identities: [...s.identities].sort((a, b) => a.id - b.id),
    rules: [...s.rules].sort((a, b) => a.id - b.id),
    policyGenerations: [...s.policyGenerations].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
  };
}

export function sameState(a: NodeState, b: NodeState): boolean {
  return same(canonicalState(a), canonicalState(b));
}

/** What changes `from` into `to`. Per subject, the added entries come before removals when applied. */
export function diffState(from: NodeState, to: NodeState): DeltaBody {
  const fromPolicies = byKey(from.policies, (p) => String(p.subject));
  const subjects: SubjectDelta[] = [];
  for (const p of to.policies) {
    const old = fromPolicies.get(String(p.subject));
    const oldEntries = byKey(old?.entries ?? [], entryKeyString);
    const newEntries = byKey(p.entries, entryKeyString);
    const added = p.entries.filter((e) => !same(oldEntries.get(entryKeyString(e)), e));
    const removed = (old?.entries ?? []).filter((e) => !newEntries.has(entryKeyString(e)));
    if (!old || added.length > 0 || removed.length > 0 || old.ingressEnforced !== p.ingressEnforced || old.egressEnforced !== p.egressEnforced) {
      subjects.push({ subject: p.subject, ingressEnforced: p.ingressEnforced, egressEnforced: p.egressEnforced, added: [...added].sort(compareEntries), removed: [...removed].sort(compareEntries) });
    }
  }
  const toSubjects = new Set(to.policies.map((p) => p.subject));
  const fromIpc = byKey(from.ipcache, (e) => e.prefix);
  const toIpc = byKey(to.ipcache, (e) => e.prefix);
  const fromIds = byKey(from.identities, (i) => String(i.id));
  const toIds = byKey(to.identities, (i) => String(i.id));
  const fromRules = byKey(from.rules, (r) => String(r.id));
  return {
    subjects: subjects.sort((a, b) => a.subject - b.subject),
    removedSubjects: from.policies.map((p) => p.subject).filter((s) => !toSubjects.has(s)).sort((a, b) => a - b),
    ipcacheUpserts: to.ipcache.filter((e) => !same(fromIpc.get(e.prefix), e)),
    ipcacheRemovals: from.ipcache.map((e) => e.prefix).filter((p) => !toIpc.has(p)),
    identityUpserts: to.identities.filter((i) => !same(fromIds.get(String(i.id)), i)),
    identityRemovals: from.identities.map((i) => i.id).filter((id) => !toIds.has(String(id))),
    ruleUpserts: to.rules.filter((r) => !same(fromRules.get(String(r.id)), r)),
    policyGenerations: to.policyGenerations,
  };
}

/** Applies a delta to a state (rules are only ever added: a ruleId is never reused for another rule). */
export function applyDelta(s: NodeState, d: DeltaBody): NodeState {
  const policies = new Map<number, SubjectPolicy>(s.policies.map((p) => [p.subject, p]));
  for (const sd of d.subjects) {
    const entries = new Map<string, PolicyEntry>((policies.get(sd.subject)?.entries ?? []).map((e) => [entryKeyString(e), e]));
    for (const e of sd.added) entries.set(entryKeyString(e), e);
    for (const e of sd.removed) entries.delete(entryKeyString(e));
    policies.set(sd.subject, { subject: sd.subject, ingressEnforced: sd.ingressEnforced, egressEnforced: sd.egressEnforced, entries: [...entries.values()] });
  }
  for (const r of d.removedSubjects) policies.delete(r);
  const ipcache = byKey(s.ipcache, (e) => e.prefix);
  for (const e of d.ipcacheUpserts) ipcache.set(e.prefix, e);
  for (const p of d.ipcacheRemovals) ipcache.delete(p);
  const identities = byKey(s.identities, (i) => String(i.id));
  for (const i of d.identityUpserts) identities.set(String(i.id), i);
  for (const id of d.identityRemovals) identities.delete(String(id));
  const rules = byKey(s.rules, (r) => String(r.id));
  for (const r of d.ruleUpserts) rules.set(String(r.id), r);
  return canonicalState({ policies: [...policies.values()], ipcache: [...ipcache.values()], identities: [...identities.values()], rules: [...rules.values()], policyGenerations: d.policyGenerations });
}
