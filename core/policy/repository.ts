// The policy repository: the policies by source object, the rule table (ruleId → origin), and which subjects each policy selects.
import type { Policy, RuleOrigin } from "../model.ts";
import { subjectMatcher, type PinnedMatcher } from "./selector-cache.ts";
import type { PartitionedSelectorCache, SelectionUser } from "./selector-partitions.ts";

/** ruleId 0 never names a rule: a verdict from a miss in an enforced direction is "default deny". */
export const RULE_ID_DEFAULT_DENY = 0;

/** Stable key of one source object (a CNP with `specs` is several Policy values under one key). */
export function policyKey(p: Pick<Policy, "kind" | "namespace" | "name">): string {
  return `${p.kind}/${p.namespace ?? ""}/${p.name}`;
}

/** Where a rule comes from, for ordering rules: its policy's key and its field path. */
export interface RulePlace {
  readonly policyKey: string;
  readonly path: string;
}

/** Two rules in the compiler's order: by policy key, then path (an unknown rule as ""). */
export function compareRulePlaces(a: RulePlace | undefined, b: RulePlace | undefined): number {
  const ka = a?.policyKey ?? "";
  const kb = b?.policyKey ?? "";
  if (ka !== kb) return ka < kb ? -1 : 1;
  const pa = a?.path ?? "";
  const pb = b?.path ?? "";
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

/** The CIDR prefixes policies mention (peers and their excepts): each needs a CIDR identity in the ipcache. */
export function policyPrefixes(policies: readonly Policy[]): string[] {
  const out = new Set<string>();
  for (const p of policies) {
    for (const r of p.rules) {
      for (const peer of r.peers) {
        if (peer.kind !== "cidr") continue;
        out.add(peer.cidr);
        for (const e of peer.except) out.add(e);
      }
    }
  }
  return [...out].sort();
}

/** One source object's part of the subject index: its subject selectors, and the identities they select. */
class PolicySubjects implements SelectionUser {
  matchers: readonly PinnedMatcher[] = [];
  readonly subjects = new Set<number>();

  constructor(
    readonly key: string,
    private readonly index: Map<number, Set<string>>,
    private readonly cache: PartitionedSelectorCache,
  ) {}

  identitiesChanged(_selector: string, added: readonly number[], removed: readonly number[]): void {
    for (const id of added) this.link(id);
    for (const id of removed) if (!this.matchers.some((m) => this.cache.selections(m.canonical)?.has(id))) this.unlink(id);
  }

  link(id: number): void {
    this.subjects.add(id);
    let keys = this.index.get(id);
    if (!keys) this.index.set(id, (keys = new Set()));
    keys.add(this.key);
  }

  unlink(id: number): void {
    this.subjects.delete(id);
    const keys = this.index.get(id);
    keys?.delete(this.key);
    if (keys?.size === 0) this.index.delete(id);
  }
}

/** Where a ruleId came from, and the order attribution follows (policy key, then the rule's path). */
interface RuleRecord {
  readonly policyKey: string;
  readonly path: string;
  origin: RuleOrigin;
}

export class PolicyRepository {
  private readonly policies = new Map<string, readonly Policy[]>();
  private readonly subjectsByKey = new Map<string, PolicySubjects>();
  /** subject identity → keys of the policies selecting it */
  private readonly keysBySubject = new Map<number, Set<string>>();
  /** policy key → rule path → ruleId; ruleIds are never reused, so a verdict names the same rule for as long as it lives. */
  private readonly ruleIds = new Map<string, Map<string, number>>();
  private readonly rules = new Map<number, RuleRecord>();
  private readonly origins = new Map<number, RuleOrigin>();

  constructor(private readonly cache: PartitionedSelectorCache) {}

  get size(): number {
    return this.policies.size;
  }

  has(key: string): boolean {
    return this.policies.has(key);
  }

  keys(): string[] {
    return [...this.policies.keys()].sort();
  }

  /** Adds or replaces one source object's policies: their rules get ids and their subjects are selected. */
  upsert(key: string, parts: readonly Policy[]): void {
    this.policies.set(key, parts);
    for (const p of parts) for (const r of p.rules) this.ruleIdOf(key, r.origin);
    this.index(key);
  }

  remove(key: string): void {
    const entry = this.subjectsByKey.get(key);
    if (entry) {
      for (const m of entry.matchers) this.cache.release(m.canonical, entry);
      for (const id of [...entry.subjects]) entry.unlink(id);
      this.subjectsByKey.delete(key);
    }
    this.policies.delete(key);
  }

  /** The subjects a source object's policies select (live view). */
  subjectsOf(key: string): ReadonlySet<number> {
    return this.subjectsByKey.get(key)?.subjects ?? new Set();
  }

  /** Subjects selected by at least one policy. */
  subjects(): IterableIterator<number> {
    return this.keysBySubject.keys();
  }

  isSubject(id: number): boolean {
    return this.keysBySubject.has(id);
  }

  /** The policy parts that select `subject`, ordered by policy key, each with its key. */
  partsSelecting(subject: number): { readonly parts: Policy[]; readonly keys: string[] } {
    const parts: Policy[] = [];
    const keys: string[] = [];
    for (const key of [...(this.keysBySubject.get(subject) ?? [])].sort()) {
      for (const p of this.policies.get(key) ?? []) {
        if (this.cache.selections(subjectMatcher(p).canonical)?.has(subject)) {
          parts.push(p);
          keys.push(key);
        }
      }
    }
    return { parts, keys };
  }

  /** The id of a rule (by policy key and the rule's path), assigned the first time it is seen. */
  ruleIdOf(key: string, origin: RuleOrigin): number {
    let byPath = this.ruleIds.get(key);
    if (!byPath) this.ruleIds.set(key, (byPath = new Map()));
    let id = byPath.get(origin.path);
    if (id === undefined) {
      id = this.rules.size + 1;
      byPath.set(origin.path, id);
      this.rules.set(id, { policyKey: key, path: origin.path, origin });
    }
    this.rules.get(id)!.origin = origin;
    this.origins.set(id, origin);
    return id;
  }

  /** Which policy and rule a ruleId names; undefined for RULE_ID_DEFAULT_DENY or an unknown id. */
  ruleOrigin(ruleId: number): RuleOrigin | undefined {
    return this.origins.get(ruleId);
  }

  ruleTable(): ReadonlyMap<number, RuleOrigin> {
    return this.origins;
  }

  /** Orders rules by their origin (policy key, then path), so attribution does not depend on history. */
  readonly compareRules = (a: number, b: number): number => compareRulePlaces(this.rules.get(a), this.rules.get(b));

  /** (Re)registers a policy's subject selectors and recomputes which subjects it selects. */
  private index(key: string): void {
    let entry = this.subjectsByKey.get(key);
    if (!entry) this.subjectsByKey.set(key, (entry = new PolicySubjects(key, this.keysBySubject, this.cache)));
    const matchers = (this.policies.get(key) ?? []).map(subjectMatcher);
    // The new selectors are added before the old are released, so an unchanged one is not evaluated again.
    for (const m of matchers) this.cache.add(m, entry);
    for (const m of entry.matchers) this.cache.release(m.canonical, entry);
    entry.matchers = matchers;
    const now = new Set<number>();
    for (const m of matchers) for (const id of this.cache.selections(m.canonical) ?? []) now.add(id);
    for (const id of [...entry.subjects]) if (!now.has(id)) entry.unlink(id);
    for (const id of now) entry.link(id);
  }
}
