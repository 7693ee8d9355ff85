// TracingPolicy enforcement on a node: policies (Kubernetes objects, from a file or the agent) read into
// enforcement plans, their exec and file hooks handed to the fanotify enforcer, their connect hooks to the
// cgroup/connect enforcer and their tracepoints to the tracepoint program; each policy's status says whether it is enforced here or exactly why not.
import type { Logger } from "pino";
import type { RuntimeEvent } from "../../core/process-event.ts";
import { enforcementPlan, type EnforcementPlan } from "../../core/tracing-enforcement.ts";
import type { ContainerCgroups } from "./containers.ts";
import type { PodRef, PodResolver, ProcessEvents } from "./events.ts";
import { FileEnforcer } from "./file-enforcer.ts";

export type PolicyStatus =
  | { readonly enforced: true; readonly hooks: number }
  | { readonly enforced: false; readonly reason: "HookUnavailable" | "Invalid" | "LoadFailed"; readonly message: string };

/** The part of the engine that serves connect hooks (cgroup/connect4/6); absent, connect hooks are refused. */
export interface HookEnforcer {
  /** Serves exactly these plans' hooks of its kind; throws when it cannot (nothing half-applied is left). */
  set(plans: ReadonlyMap<string, EnforcementPlan>): void;
  /** Why this node cannot serve the plan's hooks of its kind (HookUnavailable), before anything is loaded. */
  unavailable?(plan: EnforcementPlan): string | undefined;
  /** Why these plans' hooks cannot be served together (beyond the node's rules), found without writing anything. */
  check?(plans: ReadonlyMap<string, EnforcementPlan>): string | undefined;
  close(): void;
  /** Closes this process's fds only: what is pinned keeps acting on the rules as written, for the next runtime to adopt. */
  release?(): void;
}

export interface RuntimeEnforcementOptions {
  readonly nodeName: string;
  readonly events: ProcessEvents;
  readonly emit: (e: RuntimeEvent) => void;
  readonly log: Logger;
  readonly resolvePod?: PodResolver;
  /** Which container a process is in (containerSelector on exec and file hooks); without it such a policy selects nothing. */
  readonly containers?: ContainerCgroups;
  /** The node's pods by network namespace inode: exec and file hooks mark their containers' own root filesystems too. */
  readonly pods?: () => ReadonlyMap<number, PodRef>;
  readonly connect?: HookEnforcer;
  /** The part that serves tracepoints (bpf/tracepoint.c); absent, tracepoint hooks are refused. */
  readonly tracepoints?: HookEnforcer;
}

/** The key of a policy object: `namespace/name` for TracingPolicyNamespaced, `name` for TracingPolicy. */
export function policyKey(obj: unknown): string {
  const meta = (obj as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | undefined)?.metadata;
  const name = typeof meta?.name === "string" ? meta.name : "";
  const ns = (obj as { kind?: unknown }).kind === "TracingPolicyNamespaced" && typeof meta?.namespace === "string" ? meta.namespace : undefined;
  return ns !== undefined ? `${ns}/${name}` : name;
}

export class RuntimeEnforcement {
  private readonly files: FileEnforcer;
  private plans = new Map<string, EnforcementPlan>();
  private readonly statuses = new Map<string, PolicyStatus>();

  constructor(private readonly opts: RuntimeEnforcementOptions) {
    this.files = new FileEnforcer({
      events: opts.events,
      nodeName: opts.nodeName,
      emit: opts.emit,
      log: opts.log,
      ...(opts.resolvePod ? { resolvePod: opts.resolvePod } : {}),
      ...(opts.containers ? { containers: opts.containers } : {}),
      ...(opts.pods ? { pods: opts.pods } : {}),
    });
  }

  /** Makes the loaded set exactly these policies (level-triggered); returns each one's status. */
  apply(objects: readonly unknown[]): ReadonlyMap<string, PolicyStatus> {
    const wanted = new Map<string, EnforcementPlan>();
    this.statuses.clear();
    for (const obj of objects) {
      const key = policyKey(obj);
      const plan = enforcementPlan(obj);
      if (!plan.ok) {
        this.statuses.set(key, { enforced: false, reason: plan.reason, message: plan.errors.map((e) => `${e.path}: ${e.message}`).join("; ") });
        continue;
      }
      if (plan.value.hooks.some((h) => h.meaning === "connect") && this.opts.connect === undefined) {
        const where = plan.value.hooks.filter((h) => h.meaning === "connect").map((h) => `${h.path} (${h.name})`).join(", ");
        this.statuses.set(key, { enforced: false, reason: "HookUnavailable", message: `${where}: connect hooks need the cgroup/connect programs, which this runtime does not run` });
        continue;
      }
      if (plan.value.hooks.some((h) => h.meaning === "tracepoint") && this.opts.tracepoints === undefined) {
        const where = plan.value.hooks.filter((h) => h.meaning === "tracepoint").map((h) => `${h.path} (${h.name})`).join(", ");
        this.statuses.set(key, { enforced: false, reason: "HookUnavailable", message: `${where}: tracepoints need the tracepoint program, which this runtime does not run` });
        continue;
      }
      const why = this.opts.tracepoints?.unavailable?.(plan.value) ?? this.opts.connect?.unavailable?.(plan.value);
      if (why !== undefined) {
        this.statuses.set(key, { enforced: false, reason: "HookUnavailable", message: why });
        continue;
      }
      wanted.set(key, plan.value);
    }
    // One policy that cannot be placed must not take the others down: try all, then drop the failing ones one by one.
    for (;;) {
      const failed = this.place(wanted);
      if (failed === undefined) break;
      wanted.delete(failed.key);
      this.statuses.set(failed.key, { enforced: false, reason: "LoadFailed", message: failed.message });
    }
    for (const [key, plan] of wanted) this.statuses.set(key, { enforced: true, hooks: plan.hooks.length });
    this.plans = wanted;
    return new Map(this.statuses);
  }

  /** Each policy's status since the last apply. */
  status(): ReadonlyMap<string, PolicyStatus> {
    return new Map(this.statuses);
  }

  /** The fanotify group's fd while file or exec hooks are loaded (tests count fds). */
  get fanotifyFd(): number | undefined {
    return this.files.groupFd;
  }

  /** Calls judged by the file enforcer. */
  get fileCounts(): FileEnforcer["counts"] {
    return this.files.counts;
  }

  drain(): void {
    this.files.drain();
  }

  stop(): void {
    this.files.close();
    this.opts.connect?.close();
    this.opts.tracepoints?.close();
    this.plans = new Map();
  }

  /**
   * Stops this process's part only (`--keep-sensors-on-exit`): the pinned connect and tracepoint programs go on with
   * their rules, as after a SIGKILL, and the next runtime adopts them. The file and exec hooks end here: a fanotify
   * group lives only as long as its fd, and cannot be pinned.
   */
  release(): void {
    this.files.close();
    this.opts.connect?.release?.();
    this.opts.tracepoints?.release?.();
    this.plans = new Map();
  }

  /** Places the plans; on failure names the first policy that could not be (tried alone). */
  private place(plans: Map<string, EnforcementPlan>): { key: string; message: string } | undefined {
    // What does not fit is found before anything is written: trying each policy alone in the kernel would leave the
    // others unenforced for that moment.
    const refused = this.check(plans);
    if (refused !== undefined) return refused;
    try {
      this.files.set(plans);
      this.opts.connect?.set(plans);
      this.opts.tracepoints?.set(plans);
      return undefined;
    } catch (err) {
      for (const [key, plan] of plans) {
        try {
          this.files.set(new Map([[key, plan]]));
          this.opts.connect?.set(new Map([[key, plan]]));
          this.opts.tracepoints?.set(new Map([[key, plan]]));
        } catch (alone) {
          return { key, message: alone instanceof Error ? alone.message : String(alone) };
        }
      }
      return { key: [...plans.keys()][0] ?? "", message: err instanceof Error ? err.message : String(err) };
    }
  }

  /** The policy to refuse when the plans do not fit together (one that does not fit alone, else the first), without writing. */
  private check(plans: ReadonlyMap<string, EnforcementPlan>): { key: string; message: string } | undefined {
    const why = (p: ReadonlyMap<string, EnforcementPlan>): string | undefined => this.opts.connect?.check?.(p) ?? this.opts.tracepoints?.check?.(p);
    const together = why(plans);
    if (together === undefined) return undefined;
    for (const [key, plan] of plans) {
      const alone = why(new Map([[key, plan]]));
      if (alone !== undefined) return { key, message: alone };
    }
    return { key: [...plans.keys()][0] ?? "", message: together };
  }
}
