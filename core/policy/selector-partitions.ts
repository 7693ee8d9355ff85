// The policy pipeline's selector cache: split by namespace, with typed users told which identities their selectors gained or lost.
import type { LabelSet, Peer, Selector } from "../model.ts";
import { POD_NAMESPACE_LABEL } from "../labels.ts";
import { SelectorCache, isServiceCanonical, rulePeerSelection, type PinnedMatcher, type RulePeerSelection, type SelectionChange } from "./selector-cache.ts";
import type { ServiceIndex } from "./services.ts";

/**
 * Whoever depends on a selector's selection (a subject's direction, the repository's subject index).
 * Told once per changed selector, after the cache is consistent, so it may read other selections.
 */
export interface SelectionUser {
  identitiesChanged(selector: string, added: readonly number[], removed: readonly number[]): void;
}

function namespaceOf(labels: LabelSet): string | undefined {
  return labels.labels.find((l) => l.key === POD_NAMESPACE_LABEL)?.value;
}

export interface PartitionedSelectorCacheOptions {
  /** The local cluster's name, for the `cluster` entity. */
  readonly clusterName?: string;
  /** The Services toServices entries select through (without it they select nothing). */
  readonly services?: ServiceIndex;
}

/**
 * One SelectorCache for unpinned matchers (it sees every identity) and one per namespace for the
 * matchers pinned there (each sees only its namespace's identities). With policies that are
 * mostly namespaced, a new identity is evaluated against its namespace's selectors and the
 * cluster-wide ones instead of every selector in the cluster. Users are counted per selector:
 * a selector is registered once per use and released once per use.
 */
export class PartitionedSelectorCache {
  private readonly unpinned = new SelectorCache();
  private readonly byNamespace = new Map<string, SelectorCache>();
  private readonly pinOf = new Map<string, string>();
  private readonly identityNamespace = new Map<number, string>();
  /** selector canonical → user → number of its uses */
  private readonly users = new Map<string, Map<SelectionUser, number>>();
  private readonly clusterName: string | undefined;
  private readonly services: ServiceIndex | undefined;

  constructor(opts: PartitionedSelectorCacheOptions = {}) {
    this.clusterName = opts.clusterName;
    this.services = opts.services;
  }

  /** What a rule peer selects, with this cluster's name for the `cluster` entity (the one place peers become matchers). */
  peerSelection(peer: Peer, requires: readonly Selector[]): RulePeerSelection {
    return rulePeerSelection(peer, requires, this.clusterName, this.services);
  }

  /** After the Services changed: evaluates every toServices selection again, then tells the users of each that changed. */
  servicesChanged(): void {
    const changes = this.unpinned.reevaluate(isServiceCanonical);
    for (const c of this.byNamespace.values()) changes.push(...c.reevaluate(isServiceCanonical));
    this.notify(changes);
  }

  /** The toServices selections registered now, by canonical. */
  serviceSelectors(): string[] {
    return [...this.users.keys()].filter(isServiceCanonical);
  }

  /** Registers one use of `m` by `user`; `selections(m.canonical)` is current when this returns. */
  add(m: PinnedMatcher, user: SelectionUser): void {
    const cache = m.pin === undefined ? this.unpinned : this.namespaceCache(m.pin);
    if (m.pin !== undefined) this.pinOf.set(m.canonical, m.pin);
    cache.add(m);
    let users = this.users.get(m.canonical);
    if (!users) this.users.set(m.canonical, (users = new Map()));
    users.set(user, (users.get(user) ?? 0) + 1);
  }

  /** Drops one use of a selector by `user`; the selector goes with its last use. */
  release(canonical: string, user: SelectionUser): void {
    const users = this.users.get(canonical);
    const n = (users?.get(user) ?? 0) - 1;
    if (n > 0) users?.set(user, n);
    else users?.delete(user);
    if (users?.size === 0) this.users.delete(canonical);
    const pin = this.pinOf.get(canonical);
    const cache = pin === undefined ? this.unpinned : this.byNamespace.get(pin);
    if (cache?.release(canonical) && pin !== undefined) this.pinOf.delete(canonical);
  }

  selections(canonical: string): ReadonlySet<number> | undefined {
    const pin = this.pinOf.get(canonical);
    return (pin === undefined ? this.unpinned : this.byNamespace.get(pin))?.selections(canonical);
  }

  /** Adds an identity or changes its labels, then tells the users of every selection that changed. */
  upsertIdentity(id: number, labels: LabelSet): void {
    const changes = this.unpinned.upsertIdentity(id, labels);
    const before = this.identityNamespace.get(id);
    const ns = namespaceOf(labels);
    if (before !== undefined && before !== ns)
      changes.push(...(this.byNamespace.get(before)?.removeIdentity(id) ?? []));
    if (ns === undefined) this.identityNamespace.delete(id);
    else {
      this.identityNamespace.set(id, ns);
      changes.push(...this.namespaceCache(ns).upsertIdentity(id, labels));
    }
    this.notify(changes);
  }

  /** Removes an identity, then tells the users of every selection that lost it. */
  removeIdentity(id: number): void {
    const changes = this.unpinned.removeIdentity(id);
    const ns = this.identityNamespace.get(id);
    if (ns !== undefined) {
      changes.push(...(this.byNamespace.get(ns)?.removeIdentity(id) ?? []));
      this.identityNamespace.delete(id);
    }
    this.notify(changes);
  }

  private notify(changes: readonly SelectionChange[]): void {
    // Users are collected first: a user may register or release selectors when told.
    const calls: [SelectionUser, SelectionChange][] = [];
    for (const c of changes) for (const user of this.users.get(c.canonical)?.keys() ?? []) calls.push([user, c]);
    for (const [user, c] of calls) user.identitiesChanged(c.canonical, c.added, c.removed);
  }

  private namespaceCache(ns: string): SelectorCache {
    let c = this.byNamespace.get(ns);
    if (!c) this.byNamespace.set(ns, (c = new SelectorCache()));
    return c;
  }
}
