// What the runtime's BPF enforcers (connect, tracepoint) share about the processes they judge: the network namespaces
// of the pods a policy selects (their programs compare the caller's), the host's, and signalling a process from here.
import fs from "node:fs";
import type { Logger } from "pino";
import { containerSelects } from "../../core/container.ts";
import { podSelects, policySelects, type EnforcementPlan } from "../../core/tracing-enforcement.ts";
import type { PodRef } from "./events.ts";

/** The network namespace inodes a plan's rules are for: every process (0), or the selected pods'. */
export function selectedNetns(plan: EnforcementPlan, pods: Iterable<readonly [number, PodRef]>): number[] {
  if (plan.namespace === undefined && plan.podSelector === undefined) return [0];
  const out: number[] = [];
  for (const [inode, pod] of pods) if (policySelects(plan, pod)) out.push(inode);
  return out;
}

/** Where a rule the kernel judges applies: a network namespace (0: any) and a cgroup v2 id (0n: any). */
export interface RuleSubject {
  readonly netns: number;
  readonly cgroup: bigint;
}

/**
 * The subjects of a plan's kernel rules: with a containerSelector, one per selected container (its pod's network
 * namespace and its own cgroup), and none for a pod without containers or a container whose cgroup is not found —
 * the policy then matches nothing there (fail closed: never every process of the pod); without one, the pods'
 * network namespaces as selectedNetns gives them.
 */
export function selectedSubjects(plan: EnforcementPlan, pods: Iterable<readonly [number, PodRef]>, cgroupOf: (containerId: string) => bigint | undefined): RuleSubject[] {
  if (plan.containerSelector === undefined) return selectedNetns(plan, pods).map((netns) => ({ netns, cgroup: 0n }));
  const out: RuleSubject[] = [];
  for (const [netns, pod] of pods) {
    if (!podSelects(plan, pod)) continue;
    for (const c of pod.containers ?? []) {
      if (!containerSelects(plan.containerSelector, c)) continue;
      const cgroup = cgroupOf(c.id);
      if (cgroup !== undefined) out.push({ netns, cgroup });
    }
  }
  return out;
}

/** One caller's list of the rules it can match: what the kernel looks up by the caller's cgroup, network namespace, or for every process. */
export interface SubjectList {
  readonly subject: "any" | "netns" | "cgroup";
  /** The network namespace inode or cgroup v2 id; 0n for every process. */
  readonly id: bigint;
  /** The rules' indexes, in the set's order. */
  readonly members: readonly number[];
  /** For a cgroup's list: its pod's network namespace (the cgroup's rules hold only there); 0 otherwise. */
  readonly netns: number;
}

/**
 * The lists a set of kernel rules (in order) is judged by, so that a caller looks at its own rules only: the
 * every-process rules (always, maybe empty); per network namespace with rules of its own, those and the every-process
 * ones; per cgroup with rules of its own, those, its pod's and the every-process ones — each in the set's order, so
 * the first rule of a hook that matches is the one it was in the whole set. A rule for every process or pod is copied
 * into each list that needs it (memory, not time: a caller reads one list). Throws for a cgroup selected in two
 * network namespaces (a container is in one pod).
 */
export function subjectLists(rules: readonly RuleSubject[]): SubjectList[] {
  const netnses = new Set<number>();
  const cgroups = new Map<bigint, number>();
  for (const r of rules) {
    if (r.cgroup !== 0n) {
      const netns = cgroups.get(r.cgroup);
      if (r.netns === 0 || (netns !== undefined && netns !== r.netns)) throw new Error(`cgroup ${r.cgroup} is selected in network namespace ${netns ?? 0} and ${r.netns}: a container's rules hold in its pod's network namespace only`);
      cgroups.set(r.cgroup, r.netns);
    } else if (r.netns !== 0) netnses.add(r.netns);
  }
  const where = (keep: (r: RuleSubject) => boolean): number[] => rules.flatMap((r, i) => (keep(r) ? [i] : []));
  const forPod = (r: RuleSubject, netns: number): boolean => r.cgroup === 0n && (r.netns === 0 || r.netns === netns);
  return [
    { subject: "any", id: 0n, members: where((r) => r.netns === 0 && r.cgroup === 0n), netns: 0 },
    ...[...netnses].map((netns): SubjectList => ({ subject: "netns", id: BigInt(netns >>> 0), members: where((r) => forPod(r, netns)), netns: 0 })),
    ...[...cgroups].map(([cgroup, netns]): SubjectList => ({ subject: "cgroup", id: cgroup, members: where((r) => forPod(r, netns) || r.cgroup === cgroup), netns })),
  ];
}

/** The network namespace inode of a process (1: the host's), or undefined when it is gone. */
export function netnsOf(pid: number): number | undefined {
  try {
    const m = /\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** kill(2) for an action the program could not take itself; a process already gone is logged, not thrown. */
export function signalProcess(pid: number, sig: number, log: Logger): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    log.warn({ pid, sig, err: String(err) }, "could not signal the process");
  }
}

/** Where a list's range of the rule array sits in both programs' index values (struct tp_index, struct connect_index). */
export interface ListRangeLayout {
  readonly size: number;
  readonly first: number;
  readonly count: number;
  readonly flags: number;
  readonly netns: number;
}

/** A list's range of the rule array, with flags (every-process keys) and the pod's network namespace (cgroup keys). */
export interface ListRange {
  readonly first: number;
  readonly count: number;
  readonly flags: number;
  readonly netns: number;
}

export function encodeListRange(L: ListRangeLayout, x: ListRange): Buffer {
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(x.first, L.first);
  b.writeUInt32LE(x.count, L.count);
  b.writeUInt32LE(x.flags, L.flags);
  b.writeUInt32LE(x.netns >>> 0, L.netns);
  return b;
}

/** Why `compile` refuses (its error's message), or undefined when it does not: a dry run before anything is written. */
export function refusalOf(compile: () => unknown): string | undefined {
  try {
    compile();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
