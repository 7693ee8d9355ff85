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
