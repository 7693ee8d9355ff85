// Which policies' subjects select a label set: the reverse of selection, so that a pod change wakes only the status of the policies it concerns.
import type { LabelSet, Policy, Result, Selector } from "../core/model.ts";
import { matchesSelector } from "../core/selector.ts";

/** One policy object as the index sees it: its key and its parse (an invalid one selects nothing). */
export interface PolicySubjects {
  readonly key: string;
  readonly parsed: Result<Policy[]>;
}

/** Bound on the remembered label sets (those of pods long gone); past it the memo starts afresh. */
const MAX_LABEL_SETS = 1 << 16;

/**
 * Answers "which policies select this label set" from the policies as `list` returns them, remembered
 * per label set until `invalidate()` (a policy came, went or got a new generation). Pods arrive by the
 * thousand with a few hundred label sets between them: each set is matched against every policy once.
 */
export class SelectingPolicies {
  private subjects: { key: string; selectors: readonly Selector[] }[] | undefined;
  private readonly byLabelSet = new Map<string, readonly string[]>();

  constructor(private readonly list: () => Iterable<PolicySubjects>) {}

  /** The keys of the policies whose subjects select `labels` (host policies, which select nodes, never do). */
  selecting(labels: LabelSet): readonly string[] {
    const known = this.byLabelSet.get(labels.key);
    if (known) return known;
    this.subjects ??= [...this.list()].flatMap(({ key, parsed }) =>
      parsed.ok ? [{ key, selectors: parsed.value.filter((p) => p.nodeSelector === undefined).map((p) => p.subject) }] : [],
    );
    const keys = this.subjects.filter((s) => s.selectors.some((sel) => matchesSelector(sel, labels))).map((s) => s.key);
    if (this.byLabelSet.size >= MAX_LABEL_SETS) this.byLabelSet.clear();
    this.byLabelSet.set(labels.key, keys);
    return keys;
  }

  /** Forgets every answer: call when a policy is added, deleted, or its spec (generation) changes. */
  invalidate(): void {
    this.subjects = undefined;
    this.byLabelSet.clear();
  }
}
