// The selector cache split by namespace: a selector pinned to one namespace is evaluated only against that namespace's identities.
import type { LabelSet, Selector } from "./model.ts";
import { POD_NAMESPACE_LABEL } from "./labels.ts";
import { SelectorCache, type IdentityMatcher, type SelectionChange } from "./selector-cache.ts";

/** A matcher that can only match identities of one namespace (`pin`), or any (`pin` absent). */
export interface PinnedMatcher extends IdentityMatcher {
  readonly pin?: string;
}

const NAMESPACE_KEYS = new Set([`k8s:${POD_NAMESPACE_LABEL}`, `any:${POD_NAMESPACE_LABEL}`]);

/** The namespace a conjunction of selectors pins its matches to: a single-valued `In` on the namespace label. */
export function namespacePin(selectors: readonly Selector[]): string | undefined {
  for (const s of selectors) {
    for (const r of s.requirements) {
      if (NAMESPACE_KEYS.has(r.key) && r.operator === "In" && r.values.length === 1) return r.values[0];
    }
  }
  return undefined;
}

function namespaceOf(labels: LabelSet): string | undefined {
  return labels.labels.find((l) => l.key === POD_NAMESPACE_LABEL)?.value;
}

/**
 * One SelectorCache for unpinned matchers (it sees every identity) and one per namespace for the
 * matchers pinned there (each sees only its namespace's identities). With policies that are
 * mostly namespaced, a new identity is evaluated against its namespace's selectors and the
 * cluster-wide ones instead of every selector in the cluster.
 */
export class PartitionedSelectorCache {
  private readonly unpinned = new SelectorCache();
  private readonly byNamespace = new Map<string, SelectorCache>();
  private readonly pinOf = new Map<string, string>();
  private readonly identityNamespace = new Map<number, string>();

  add(m: PinnedMatcher): void {
    const cache = m.pin === undefined ? this.unpinned : this.namespaceCache(m.pin);
    if (m.pin !== undefined) this.pinOf.set(m.canonical, m.pin);
    cache.add(m);
  }

  release(canonical: string): void {
    const pin = this.pinOf.get(canonical);
    const cache = pin === undefined ? this.unpinned : this.byNamespace.get(pin);
    if (cache?.release(canonical) && pin !== undefined) this.pinOf.delete(canonical);
  }

  selections(canonical: string): ReadonlySet<number> | undefined {
    const pin = this.pinOf.get(canonical);
    return (pin === undefined ? this.unpinned : this.byNamespace.get(pin))?.selections(canonical);
  }

  upsertIdentity(id: number, labels: LabelSet): SelectionChange[] {
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
    return changes;
  }

  removeIdentity(id: number): SelectionChange[] {
    const changes = this.unpinned.removeIdentity(id);
    const ns = this.identityNamespace.get(id);
    if (ns !== undefined) {
      changes.push(...(this.byNamespace.get(ns)?.removeIdentity(id) ?? []));
      this.identityNamespace.delete(id);
    }
    return changes;
  }

  private namespaceCache(ns: string): SelectorCache {
    let c = this.byNamespace.get(ns);
    if (!c) this.byNamespace.set(ns, (c = new SelectorCache()));
    return c;
  }
}
