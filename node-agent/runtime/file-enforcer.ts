// Exec and file hooks of TracingPolicies on fanotify permission events: marks only where the policies' paths can
// be (the directories of Equal paths, the trees under Prefix paths; whole filesystems only when a selector names
// no such path), each open or exec judged by the policies' selectors, answered allow or deny, the opener killed for
// Sigkill, and an event in Tetragon's shape for every call a selector posts.
import fs from "node:fs";
import path from "node:path";
import { constants as osConstants } from "node:os";
import type { Logger } from "pino";
import type { HookCall, RuntimeEvent, TetragonArg } from "../../core/process-event.ts";
import { decideCall, pathMatches, policySelects, type CallSubject, type EnforcementPlan, type HookPlan, type NamespaceType, type SelectorPlan } from "../../core/tracing-enforcement.ts";
import { podContainer, type ContainerCgroups } from "./containers.ts";
import type { PodRef, PodResolver, ProcessEvents } from "./events.ts";
import { FAN_OPEN_EXEC_PERM, FAN_OPEN_PERM, FanotifyGroup, type MarkScope, type PermissionEvent } from "./fanotify.ts";

/** A Prefix tree with more directories than this is marked as its whole filesystem instead. */
const MAX_TREE_DIRECTORIES = 4096;
const PSEUDO_FILESYSTEMS = new Set([
  "proc", "sysfs", "cgroup", "cgroup2", "bpf", "debugfs", "tracefs", "devpts", "mqueue", "securityfs", "pstore", "configfs",
  "fusectl", "hugetlbfs", "nsfs", "autofs", "binfmt_misc", "rpc_pipefs", "efivarfs", "ramfs",
]);
const NAMESPACES: readonly NamespaceType[] = ["Uts", "Ipc", "Mnt", "Pid", "Net", "Time", "Cgroup", "User"];

export interface FileEnforcerOptions {
  readonly events: ProcessEvents;
  readonly resolvePod?: PodResolver;
  readonly containers?: ContainerCgroups;
  /**
   * The node's pods by network namespace inode. Their containers' own root filesystems (each in its mount namespace, as
   * the kubelet makes them) are marked too, through `/proc/PID/root` of a process of each container the policy selects:
   * a mark made in this process's mount namespace alone sees only the files this process sees.
   */
  readonly pods?: () => ReadonlyMap<number, PodRef>;
  readonly nodeName: string;
  readonly emit: (e: RuntimeEvent) => void;
  readonly log: Logger;
  readonly procRoot?: string;
}

/** A mark the policies need: path, scope, and the events (open, exec). */
interface Mark {
  readonly path: string;
  readonly scope: MarkScope;
  readonly mask: bigint;
}

export class FileEnforcer {
  private group: FanotifyGroup | undefined;
  private plans = new Map<string, EnforcementPlan>();
  /** The marks in place: scope → path → mask. */
  private marks = new Map<MarkScope, Map<string, bigint>>();
  private readonly proc: string;
  private readonly hostNamespaces: Partial<Record<NamespaceType, number>>;
  /** Calls judged, by decision (tests and metrics). */
  readonly counts = { allowed: 0, denied: 0, killed: 0, posted: 0 };
  /** Judging failures logged, by message (judgingFailed). */
  private readonly failures = new Map<string, { at: number; since: number }>();

  constructor(private readonly opts: FileEnforcerOptions) {
    this.proc = opts.procRoot ?? "/proc";
    this.hostNamespaces = this.namespacesOf(1);
  }

  /** Sets the policies' exec and file hooks (key → plan); marks what they need and removes what none needs. Throws when a mark cannot be placed. */
  set(plans: ReadonlyMap<string, EnforcementPlan>): void {
    const relevant = new Map([...plans].filter(([, p]) => p.hooks.some(isFileHook)).map(([k, p]) => [k, withResolvedPaths(p)] as const));
    const wanted = new Map<MarkScope, Map<string, bigint>>();
    for (const plan of relevant.values()) for (const m of marksFor(plan, this.containerRoots(plan))) {
      const byPath = wanted.get(m.scope) ?? new Map<string, bigint>();
      wanted.set(m.scope, byPath);
      byPath.set(m.path, (byPath.get(m.path) ?? 0n) | m.mask);
    }
    if (relevant.size > 0 && this.group === undefined) this.group = new FanotifyGroup((e) => this.judge(e), (err, e) => this.judgingFailed(err, e), (err) => this.readFailed(err));
    const group = this.group;
    if (group !== undefined) {
      // New marks first, then removals: a path both old and new policies name is never unmarked in between.
      this.plans = relevant;
      for (const [scope, byPath] of wanted) for (const [p, mask] of byPath) {
        const had = this.marks.get(scope)?.get(p) ?? 0n;
        if ((had & mask) !== mask) group.mark(p, mask, scope);
      }
      for (const [scope, byPath] of this.marks) for (const [p, had] of byPath) {
        const kept = wanted.get(scope)?.get(p) ?? 0n;
        const gone = had & ~kept;
        if (gone !== 0n) {
          try {
            group.unmark(p, gone, scope, kept === 0n);
          } catch (err) {
            this.opts.log.debug({ path: p, err: String(err) }, "unmark failed (the path is gone)");
          }
        }
      }
    }
    this.marks = wanted;
    if (relevant.size === 0) this.close();
  }

  /** `/proc/PID/root` of a process of each container on this node that the plan selects (its own root filesystem). */
  private containerRoots(plan: EnforcementPlan): string[] {
    const pods = this.opts.pods?.();
    const cgroups = this.opts.containers;
    if (pods === undefined || cgroups === undefined) return [];
    const roots: string[] = [];
    for (const pod of pods.values()) {
      for (const container of pod.containers ?? []) {
        if (!policySelects(plan, { ...pod, container })) continue;
        const pid = cgroups.processIn(container.id);
        if (pid !== undefined) roots.push(`${this.proc}/${pid}/root`);
      }
    }
    return roots;
  }

  /** The fanotify group's fd, if one is open (tests count them). */
  get groupFd(): number | undefined {
    return this.group?.groupFd;
  }

  /** Answers what is pending now (tests; the group also drains when readable). */
  drain(): number {
    return this.group?.drain() ?? 0;
  }

  close(): void {
    this.group?.close();
    this.group = undefined;
    this.marks = new Map();
    this.plans = new Map();
  }

  /**
   * A permission event whose judging threw: it was denied (fail closed) and no event could be posted, so the log says
   * why: the first of each message, then at most one a minute with how many more were denied since.
   */
  private judgingFailed(err: unknown, e: PermissionEvent): void {
    this.failed(err, { pid: e.pid }, "deniedSinceLast", "permission event denied without a verdict: judging it failed");
  }

  /** A drain of the group that stopped on an error; the group goes on answering at its next readable event. */
  private readFailed(err: unknown): void {
    this.failed(err, {}, "failedSinceLast", "reading the fanotify group failed (the kernel denies an event it cannot hand over); reading on");
  }

  /** Logs the first failure of each message, then at most one a minute with the count since. */
  private failed(err: unknown, fields: Record<string, unknown>, countName: string, msg: string): void {
    const message = err instanceof Error ? err.message : String(err);
    const now = Date.now();
    const seen = this.failures.get(message);
    if (seen !== undefined && now - seen.at < 60_000) {
      seen.since++;
      return;
    }
    if (this.failures.size >= 64) this.failures.clear(); // messages that name pids or paths: keep the map bounded
    this.failures.set(message, { at: now, since: 0 });
    const stack = err instanceof Error ? err.stack?.split("\n").slice(1, 4).map((l) => l.trim()).join(" < ") : undefined;
    this.opts.log.error({ ...fields, err: message, ...(stack ? { at: stack } : {}), [countName]: seen?.since ?? 0 }, msg);
  }

  /** One permission event: allow (true) or deny, after the actions of every policy whose selector matches. */
  private judge(e: PermissionEvent): boolean {
    // The agent's own opens are never judged: it would wait on itself.
    if (e.pid === process.pid) return true;
    const exec = (e.mask & FAN_OPEN_EXEC_PERM) !== 0n;
    const filePath = readLink(`${this.proc}/self/fd/${e.fd}`);
    let subject: CallSubject | undefined;
    let allow = true;
    for (const plan of this.plans.values()) {
      for (const hook of plan.hooks) {
        if (hook.meaning !== (exec ? "exec" : "file")) continue;
        // The path filters alone rule most opens out (a neighbour of a watched file): no /proc reads for them.
        if (!pathMayMatch(hook, filePath)) continue;
        subject ??= this.subject(e.pid, filePath);
        if (!policySelects(plan, subject.pod)) break;
        const d = decideCall(hook, subject);
        if (d === undefined) continue;
        const kill = d.actions.some((a) => a.action === "Sigkill");
        const override = d.actions.some((a) => a.action === "Override");
        const signal = d.actions.find((a) => a.action === "Signal")?.signal;
        if (d.post) this.post(plan, hook, e.pid, filePath, kill ? "KPROBE_ACTION_SIGKILL" : override ? "KPROBE_ACTION_OVERRIDE" : signal !== undefined ? "KPROBE_ACTION_SIGNAL" : "KPROBE_ACTION_POST");
        if (kill) {
          this.signal(e.pid, osConstants.signals.SIGKILL);
          this.counts.killed++;
        } else if (signal !== undefined) {
          this.signal(e.pid, signal);
        }
        if (kill || override) allow = false;
      }
    }
    if (allow) this.counts.allowed++;
    else this.counts.denied++;
    return allow;
  }

  private subject(pid: number, filePath: string): CallSubject {
    const netns = this.namespacesOf(pid);
    const inPod = netns.Net !== undefined ? this.opts.resolvePod?.(netns.Net) : undefined;
    // The container the process is in (its cgroup), for containerSelector; a pod without containers has none.
    const container = inPod?.containers !== undefined && inPod.containers.length > 0 ? podContainer(inPod, this.opts.containers?.ofPid(pid)) : undefined;
    const pod = inPod !== undefined ? { ...inPod, ...(container ? { container } : {}) } : undefined;
    const nsPid = /^NSpid:.*\s(\d+)$/m.exec(readFile(`${this.proc}/${pid}/status`))?.[1];
    return {
      pid,
      ...(nsPid !== undefined ? { nsPid: Number(nsPid) } : {}),
      binary: readLink(`${this.proc}/${pid}/exe`),
      namespaces: netns,
      hostNamespaces: this.hostNamespaces,
      ...(pod ? { pod } : {}),
      path: filePath,
    };
  }

  private namespacesOf(pid: number): Partial<Record<NamespaceType, number>> {
    const out: Partial<Record<NamespaceType, number>> = {};
    for (const ns of NAMESPACES) {
      const m = /\[(\d+)\]$/.exec(readLink(`${this.proc}/${pid}/ns/${ns.toLowerCase()}`));
      if (m) out[ns] = Number(m[1]);
    }
    return out;
  }

  private post(plan: EnforcementPlan, hook: HookPlan, pid: number, filePath: string, action: string): void {
    const described = this.opts.events.describe(pid);
    if (!described) return;
    const call: HookCall = { ...described, function_name: hook.name, args: hookArgs(hook, filePath), action, policy_name: plan.name };
    const time = this.opts.events.now();
    this.counts.posted++;
    this.opts.emit(hook.kind === "lsmhooks" ? { process_lsm: call, node_name: this.opts.nodeName, time } : { process_kprobe: call, node_name: this.opts.nodeName, time });
  }

  private signal(pid: number, sig: number): void {
    try {
      process.kill(pid, sig);
    } catch (err) {
      this.opts.log.warn({ pid, sig, err: String(err) }, "could not signal the process");
    }
  }
}

/**
 * The plan with each Equal/Prefix (and Not…) path value also in its resolved form: fanotify names the file opened,
 * symlinks followed (`/bin/sh` is `/usr/bin/dash` on a merged-/usr system), so a value naming a symlink would
 * otherwise never match. Both forms stay (a value is never dropped).
 */
function withResolvedPaths(plan: EnforcementPlan): EnforcementPlan {
  const resolve = (v: string, prefix: boolean): string[] => {
    if (!v.startsWith("/")) return [v];
    try {
      const real = prefix && !v.endsWith("/") ? path.join(fs.realpathSync(path.dirname(v)), path.basename(v)) : `${fs.realpathSync(v)}${v.endsWith("/") && v !== "/" ? "/" : ""}`;
      return real === v ? [v] : [v, real];
    } catch {
      return [v]; // not there (yet): matched as written
    }
  };
  const hooks = plan.hooks.map((h) =>
    !isFileHook(h)
      ? h
      : {
          ...h,
          selectors: h.selectors.map((s) => ({
            ...s,
            args: s.args.map((a) => {
              const op = a.operator.replace(/^Not/, "");
              return op === "Equal" || op === "Prefix" ? { ...a, values: [...new Set(a.values.flatMap((v) => resolve(v, op === "Prefix")))] } : a;
            }),
          })),
        },
  );
  return { ...plan, hooks };
}

/** Whether some selector of the hook can match a call on this path (its path filters all hold), before the process is read. */
function pathMayMatch(hook: HookPlan, filePath: string): boolean {
  return hook.selectors.length === 0 || hook.selectors.some((s) => s.args.every((a) => pathMatches(a.operator, a.values, filePath)));
}

/** The event's args: the declared path arguments with the file's path (other arguments are not read here). */
function hookArgs(hook: HookPlan, filePath: string): TetragonArg[] {
  const out: TetragonArg[] = [];
  for (const a of hook.args) {
    if (a.type === "file") out.push({ file_arg: { path: filePath } });
    else if (a.type === "path" || a.type === "dentry") out.push({ path_arg: { path: filePath } });
    else if (a.type === "linux_binprm") out.push({ linux_binprm_arg: { path: filePath } });
    else if (a.type === "string" || a.type === "filename" || a.type === "char_buf") out.push({ string_arg: filePath });
  }
  if (out.length === 0) out.push({ file_arg: { path: filePath } });
  return out;
}

/** Exec and file hooks are this enforcer's (connect hooks and tracepoints have programs of their own). */
const isFileHook = (h: HookPlan): boolean => h.meaning === "exec" || h.meaning === "file";

/**
 * The marks a policy's exec and file hooks need, in this process's root and in each of `roots` (other mount
 * namespaces' roots, `/proc/PID/root`): the same paths resolved under each.
 */
export function marksFor(plan: EnforcementPlan, roots: readonly string[] = []): Mark[] {
  const out: Mark[] = [];
  for (const hook of plan.hooks) {
    if (!isFileHook(hook)) continue;
    const mask = hook.meaning === "exec" ? FAN_OPEN_EXEC_PERM : FAN_OPEN_PERM;
    const selectors: readonly (SelectorPlan | undefined)[] = hook.selectors.length > 0 ? hook.selectors : [undefined];
    for (const s of selectors) {
      // A filesystem is marked once per selector, through the first root that shows it.
      const seenDevices = new Set<string>();
      for (const root of ["", ...roots]) {
        const scoped = s !== undefined ? scopedPaths(s, root) : undefined;
        if (scoped === undefined) {
          for (const fsRoot of filesystems(root, seenDevices)) out.push({ path: fsRoot, scope: "filesystem", mask });
          continue;
        }
        for (const m of scoped) out.push({ ...m, mask });
      }
    }
  }
  return out;
}

/** Where a selector's positive path filter (Equal or Prefix, the tightest one) can match under `root`; undefined when it has none. */
function scopedPaths(s: SelectorPlan, root: string): Omit<Mark, "mask">[] | undefined {
  const filter = s.args.find((a) => a.operator === "Equal") ?? s.args.find((a) => a.operator === "Prefix");
  if (filter === undefined) return undefined;
  const out: Omit<Mark, "mask">[] = [];
  for (const v of filter.values) {
    if (!v.startsWith("/")) return undefined; // a relative path can be anywhere
    if (filter.operator === "Equal") {
      // The directory, not the file: a file replaced (a new inode) is still judged.
      out.push({ path: existingDirectory(path.dirname(v), root), scope: "directory" });
      continue;
    }
    const base = v.endsWith("/") ? v.replace(/\/+$/, "") || "/" : path.dirname(v);
    const tree = directoriesUnder(existingDirectory(base, root), `${root}${v}`);
    if (tree === undefined) return undefined;
    for (const d of tree) out.push({ path: d, scope: "directory" });
  }
  return out;
}

/** The nearest existing ancestor directory of `p` under `root` (a policy may name a path created later), with the root. */
function existingDirectory(p: string, root: string): string {
  let cur = p;
  while (cur !== "/" && !isDirectory(`${root}${cur}`)) cur = path.dirname(cur);
  return cur === "/" && root !== "" ? root : `${root}${cur}`;
}

/** Every directory under `base` whose files can start with `prefix` (base included); undefined when too many. */
function directoriesUnder(base: string, prefix: string): string[] | undefined {
  const out: string[] = [];
  const stack = [base];
  while (stack.length > 0) {
    const d = stack.pop()!;
    out.push(d);
    if (out.length > MAX_TREE_DIRECTORIES) return undefined;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const child = path.join(d, e.name);
      if (pathMatches("Prefix", [prefix], `${child}/`) || prefix.startsWith(`${child}/`)) stack.push(child);
    }
  }
  return out;
}

/**
 * One mount point per real (not pseudo) filesystem of a mount namespace: this process's (root ""), or the one whose
 * root is `root` (`/proc/PID/root`, its mount table `/proc/PID/mountinfo`); a filesystem in `seen` already is skipped.
 */
function filesystems(root: string, seen: Set<string>): string[] {
  const out: string[] = [];
  const table = root === "" ? "/proc/self/mountinfo" : `${path.dirname(root)}/mountinfo`;
  for (const line of readFile(table).split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    if (sep < 0) continue;
    const device = f[2] ?? "";
    const mountPoint = (f[4] ?? "").replace(/\\040/g, " ");
    const type = f[sep + 1] ?? "";
    if (PSEUDO_FILESYSTEMS.has(type) || seen.has(device)) continue;
    seen.add(device);
    out.push(mountPoint === "/" && root !== "" ? root : `${root}${mountPoint}`);
  }
  return out;
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function readLink(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return "";
  }
}

function readFile(p: string): string {
  try {
    return fs.readFileSync(p, "utf8");
  } catch {
    return "";
  }
}
