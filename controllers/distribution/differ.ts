// What a node is sent to move from the state it holds to the one it should hold: the deltas its producers recorded (the compiler's per subject, the source's per shared part), memoised by object so a change every node shares is composed once, not once per node.
import type { SubjectPolicy } from "../../core/model.ts";
import {
  type DeltaBody,
  EMPTY_STATE,
  NO_PART_CHANGE,
  type SharedPart,
  type SharedPartDelta,
  type SharedPartLinks,
  type SubjectDeltaLinks,
  canonicalState,
  comparePrefixes,
  diffPolicyGenerations,
  diffState,
  diffTracingPolicies,
  mergedInCanonicalOrder,
} from "../../core/nodestate.ts";
import { compareEntries } from "../../core/policy/mapstate.ts";
import type { NodeState, PolicyGeneration, SubjectDelta } from "../../core/wire.ts";

/** The order canonicalState gives each shared part: a part already in it is kept as is (its recorded links stay valid). */
const PART_ORDER: { readonly [K in SharedPart | "policyGenerations"]: (a: NodeState[K][number], b: NodeState[K][number]) => number } = {
  ipcache: (a, b) => comparePrefixes(a.prefix, b.prefix),
  identities: (a, b) => a.id - b.id,
  rules: (a, b) => a.id - b.id,
  policyGenerations: (a, b) => comparePrefixes(a.key, b.key),
};

export class StateDiffer {
  private readonly canonicalParts = new WeakMap<object, object>();
  private readonly canonicalSubjects = new WeakMap<SubjectPolicy, SubjectPolicy>();
  private readonly canonicalLists = new WeakMap<readonly SubjectPolicy[], readonly SubjectPolicy[]>();
  private readonly partDiffs = new WeakMap<object, WeakMap<object, SharedPartDelta>>();
  private readonly members = new WeakMap<object, ReadonlySet<unknown>>();
  private readonly generationDiffs = new WeakMap<readonly PolicyGeneration[], WeakMap<readonly PolicyGeneration[], ReturnType<typeof diffPolicyGenerations>>>();
  /** The compiler's per-subject deltas (NodeStateSource.subjectDeltas): used as they are where they link two states. */
  subjectDeltas: SubjectDeltaLinks | undefined;
  /** The source's shared-part deltas (NodeStateSource.sharedDeltas), recorded from each change. */
  sharedDeltas: SharedPartLinks | undefined;

  /** core's canonicalState, computed once per distinct part (and per subject policy) however many nodes share it. */
  canonical(s: NodeState): NodeState {
    // A compiled subject policy is sorted already and keeps its object, so the compiler's delta links stay valid. A node's
    // list the source kept (its subjects did not move) gives the list made from it before: diff sees no subject change by reference.
    const policies = memo(this.canonicalLists, s.policies, () =>
      s.policies
        .map((p) => memo(this.canonicalSubjects, p, () => (this.subjectDeltas?.isVouchedSorted(p) || sortedEntries(p) ? p : (canonicalState({ ...EMPTY_STATE, policies: [p] }).policies[0] as SubjectPolicy))))
        .sort((a, b) => a.subject - b.subject),
    );
    // A part a merge made (the source's ipcache after every change) is in order already: 50,000 entries are not walked per change.
    const part = <K extends SharedPart | "policyGenerations">(k: K): NodeState[K] =>
      memo(this.canonicalParts, s[k], () =>
        mergedInCanonicalOrder(s[k]) || isSorted<NodeState[K][number]>(s[k], PART_ORDER[k] as (a: NodeState[K][number], b: NodeState[K][number]) => number) ? s[k] : canonicalState({ ...EMPTY_STATE, [k]: s[k] })[k],
      ) as NodeState[K];
    // TracingPolicies: a handful, sorted by key where the source builds them; sorted here for any other producer.
    const tracing = s.tracingPolicies && (memo(this.canonicalParts, s.tracingPolicies, () => canonicalState({ ...EMPTY_STATE, tracingPolicies: s.tracingPolicies }).tracingPolicies!) as NodeState["tracingPolicies"]);
    return { policies, ipcache: part("ipcache"), identities: part("identities"), rules: part("rules"), policyGenerations: part("policyGenerations"), ...(tracing ? { tracingPolicies: tracing } : {}) };
  }

  /** What changes `from` into `to` (both canonical), or null when nothing does. Subject policies and shared parts are matched by reference first. */
  diff(from: NodeState, to: NodeState): DeltaBody | null {
    if (from === to) return null; // an agent that ACKed the latest push holds the very object
    const policies = from.policies === to.policies ? NO_SUBJECT_CHANGE : this.subjectDiff(from, to);
    const ipc = this.partDiff("ipcache", from, to);
    const ids = this.partDiff("identities", from, to);
    const rules = this.partDiff("rules", from, to);
    const gens = this.generationDiff(from.policyGenerations, to.policyGenerations);
    const delta: DeltaBody = {
      subjects: policies.subjects,
      removedSubjects: policies.removedSubjects,
      ipcacheUpserts: ipc.ipcacheUpserts,
      ipcacheRemovals: ipc.ipcacheRemovals,
      identityUpserts: ids.identityUpserts,
      identityRemovals: ids.identityRemovals,
      ruleUpserts: rules.ruleUpserts,
      policyGenerationUpserts: gens.policyGenerationUpserts,
      policyGenerationRemovals: gens.policyGenerationRemovals,
      ...diffTracingPolicies(from.tracingPolicies, to.tracingPolicies),
    };
    const changed =
      delta.subjects.length + delta.removedSubjects.length + delta.ipcacheUpserts.length + delta.ipcacheRemovals.length + delta.identityUpserts.length + delta.identityRemovals.length + delta.ruleUpserts.length +
      delta.policyGenerationUpserts.length + delta.policyGenerationRemovals.length + (delta.tracingPolicyUpserts?.length ?? 0) + (delta.tracingPolicyRemovals?.length ?? 0) > 0;
    return changed ? delta : null;
  }

  /**
   * What of the subject policies moves from `from` to `to`. Per subject: the same object is no change; an object the compiler
   * made from the held one is its delta. Anything else goes through diffState: a subject new to the node (sent whole) or one
   * no link reaches (a resumed agent: the fallback).
   */
  private subjectDiff(from: NodeState, to: NodeState): Pick<DeltaBody, "subjects" | "removedSubjects"> {
    const fromBySubject = new Map(from.policies.map((p) => [p.subject, p]));
    const toSubjects = new Set(to.policies.map((p) => p.subject));
    const linked: SubjectDelta[] = [];
    const diffFrom = from.policies.filter((p) => !toSubjects.has(p.subject));
    const diffTo: SubjectPolicy[] = [];
    for (const p of to.policies) {
      const held = fromBySubject.get(p.subject);
      if (held === p) continue;
      const d = held && this.subjectDeltas?.between(held, p);
      if (d) linked.push(d);
      else {
        diffTo.push(p);
        if (held) diffFrom.push(held);
      }
    }
    const diffed = diffFrom.length === 0 && diffTo.length === 0 ? NO_SUBJECT_CHANGE : diffState({ ...EMPTY_STATE, policies: diffFrom }, { ...EMPTY_STATE, policies: diffTo });
    return { subjects: linked.length === 0 ? diffed.subjects : [...linked, ...diffed.subjects].sort((a, b) => a.subject - b.subject), removedSubjects: diffed.removedSubjects };
  }

  /** The policy generations that moved between two lists, once per pair however many nodes go from one to the other. */
  private generationDiff(from: readonly PolicyGeneration[], to: readonly PolicyGeneration[]): ReturnType<typeof diffPolicyGenerations> {
    let byTarget = this.generationDiffs.get(from);
    if (!byTarget) this.generationDiffs.set(from, (byTarget = new WeakMap()));
    return memo(byTarget, to, () => diffPolicyGenerations(from, to));
  }

  same(a: NodeState, b: NodeState): boolean {
    return this.diff(a, b) === null;
  }

  /**
   * One shared part's delta, once per (from, to) pair: the source's recorded deltas when they lead
   * from one to the other (the hot path: an agent one or a few changes behind). Only a pair they do
   * not link (an agent resuming from an older acknowledged version, or further behind than the
   * links reach, or parts no source recorded) is diffed whole, with entries shared by object left out first.
   */
  private partDiff(k: SharedPart, from: NodeState, to: NodeState): SharedPartDelta {
    if (from[k] === to[k]) return NO_PART_CHANGE;
    let byTarget = this.partDiffs.get(from[k]);
    if (!byTarget) this.partDiffs.set(from[k], (byTarget = new WeakMap()));
    return memo(byTarget, to[k], () => {
      const recorded = this.sharedDeltas?.between(k, from[k], to[k]);
      if (recorded) return recorded;
      const inFrom = memo(this.members, from[k], () => new Set<unknown>(from[k]));
      const inTo = memo(this.members, to[k], () => new Set<unknown>(to[k]));
      const a = (from[k] as readonly unknown[]).filter((e) => !inTo.has(e));
      const b = (to[k] as readonly unknown[]).filter((e) => !inFrom.has(e));
      return diffState({ ...EMPTY_STATE, [k]: a }, { ...EMPTY_STATE, [k]: b });
    });
  }
}

const NO_SUBJECT_CHANGE: Pick<DeltaBody, "subjects" | "removedSubjects"> = { subjects: [], removedSubjects: [] };

function memo<K extends object, V>(m: WeakMap<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) m.set(k, (v = make()));
  return v;
}

function sortedEntries(p: SubjectPolicy): boolean {
  for (let i = 1; i < p.entries.length; i++) if (compareEntries(p.entries[i - 1]!, p.entries[i]!) >= 0) return false;
  return true;
}

function isSorted<T>(items: readonly T[], cmp: (a: T, b: T) => number): boolean {
  for (let i = 1; i < items.length; i++) if (cmp(items[i - 1]!, items[i]!) >= 0) return false;
  return true;
}
