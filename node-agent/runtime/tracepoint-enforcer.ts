// TracingPolicy tracepoints (syscalls/sys_enter_*, raw_syscalls/*) natively: bpf/tracepoint.c attached by perf
// events to every tracepoint the plans name, their selectors expanded into rules the program evaluates in the kernel
// (pod by network namespace, a containerSelector's containers by cgroup v2 id, matchPIDs, integer and string
// matchArgs); Sigkill and Signal are sent by the program
// itself, Post comes back through a ring buffer as Tetragon's process_tracepoint. matchBinaries is judged in the
// kernel too: the object's exec/fork/exit programs keep each process's set of matching values, seeded here from the
// running processes whenever the values change, so a binary no rule names sends nothing to user space. Every link is
// pinned with the maps, so the verdicts (Sigkill, Signal) outlive this process; the next enforcer attaches its program
// beside the pinned one and replaces the pin, then rewrites the rules.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import koffi from "koffi";
import type { Logger } from "pino";
import type { RuntimeEvent, TetragonArg } from "../../core/process-event.ts";
import { tracepointArgRead, TRACEPOINT_INT_OPERATORS, TRACEPOINT_STRING_OPERATORS, type TracepointArgRead, type TracepointFormat } from "../../core/tracepoint-format.ts";
import type { EnforcementPlan, HookPlan, SelectorPlan } from "../../core/tracing-enforcement.ts";
import { claimPins, ownsPins } from "./pin-owner.ts";
import { BPFFS_ROOT, BpfError, BpfObject, RingBufferReader, attachTpBtfPinned, pinLinkReplacing, unpinLink } from "../bpf/loader.ts";
import type { ContainerCgroups } from "./containers.ts";
import type { PodRef, ProcessEvents } from "./events.ts";
import { encodeListRange, netnsOf, refusalOf, selectedSubjects, subjectLists, type ListRange, type RuleSubject } from "./selection.ts";
import { readTracepointCatalogue, TRACEPOINT_SUBSYSTEMS, type TracepointCatalogue } from "./tracefs.ts";
import {
  TP_ACTION, TP_ARGS_MAX, TP_BINARIES_MAX, TP_F, TP_FILTERS_MAX, TP_HOOKS_MAX, TP_INDEX_F, TP_LAYOUT, TP_OP, TP_RULES_MAX, TP_STR_MAX, TP_SUBJECT, type TpBinary, type TpEvent, type TpFilter, type TpRule,
  decodeTpEvent, encodeTpBinary, encodeTpHook, encodeTpIndexKey, encodeTpRule, tpBinaryMatches, tpIndexKeySet,
} from "./tracepoint-layout.ts";

export const TRACEPOINT_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/tracepoint.o");

const libbpf = koffi.load("libbpf.so.1");
const libc = koffi.load("libc.so.6");
const linkCreate = libbpf.func("int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)") as (p: number, t: number, a: number, o: Buffer) => number;
const closeFd = libc.func("int close(int fd)") as (fd: number) => number;
/** The programs that keep each process's matchBinaries set (sched_process_exec/fork/exit). */
const BINARY_PROGRAMS = ["membrane_tp_exec", "membrane_tp_fork", "membrane_tp_exit"] as const;
const syscall = libc.func("long syscall(long number, ...)") as (...args: unknown[]) => number;
const SYS_PERF_EVENT_OPEN = process.arch === "arm64" ? 241 : 298;
const PERF_TYPE_TRACEPOINT = 2;
const PERF_FLAG_FD_CLOEXEC = 8;
const BPF_PERF_EVENT = 41;

const linkPin = (pinDir: string, name: string): string => path.join(pinDir, "links", name);
/** The pin of the link on one tracepoint (by its tracefs id). */
const tracepointLink = (pinDir: string, eventId: number): string => linkPin(pinDir, `tp-${eventId}`);

/** Removes the scope's pins: the links' last references, so its programs are detached (what an enforcer that is gone left). Returns whether there was anything. */
export function removeTracepointPins(scope: string, pinRoot = BPFFS_ROOT): boolean {
  const pinDir = path.join(pinRoot, scope);
  if (!fs.existsSync(pinDir)) return false;
  fs.rmSync(pinDir, { recursive: true, force: true });
  return true;
}

/** The tracepoints (tracefs ids) with a link pinned in the scope, this enforcer's or an earlier one's. */
function pinnedTracepoints(pinDir: string): number[] {
  try {
    return fs.readdirSync(path.join(pinDir, "links")).flatMap((n) => /^tp-(\d+)$/.exec(n)?.[1] ?? []).map(Number);
  } catch {
    return [];
  }
}

export interface TracepointEnforcerOptions {
  readonly events: ProcessEvents;
  readonly nodeName: string;
  readonly emit: (e: RuntimeEvent) => void;
  readonly log: Logger;
  /** The pods on this node by network namespace inode (a policy that selects pods gets rules for theirs). */
  readonly pods: () => Iterable<readonly [number, PodRef]>;
  /** Containers' cgroups, for a containerSelector (without it such a policy has no rule: it matches nothing). */
  readonly containers?: ContainerCgroups;
  /** Pin scope under /sys/fs/bpf/membrane (tests use their own). */
  readonly scope: string;
  readonly objectPath?: string;
  /** The tracepoints' formats (default: read from tracefs now, before any fanotify mark exists). */
  readonly catalogue?: TracepointCatalogue;
  /** Entries of the processes' matchBinaries sets (default TP_PROCS_MAX, 65,536; tests make it small to overflow it). */
  readonly procsMax?: number;
}

/** What a rule came from, to name it in events. */
interface RuleOrigin {
  readonly policy: string;
  readonly hook: HookPlan;
  readonly reads: readonly TracepointArgRead[];
}

export class TracepointEnforcer {
  private readonly catalogue: TracepointCatalogue;
  private obj: BpfObject | undefined;
  private reader: RingBufferReader | undefined;
  /** Tracepoints this enforcer attached its program to (pinned); others pinned in the scope are an earlier one's. */
  private readonly attached = new Set<number>();
  /** What the rule at each slot came from (both halves: an event read after its set was replaced is named after its own rule). */
  private origins = new Map<number, RuleOrigin>();
  private binaries: readonly TpBinary[] = [];
  /** Records the agent could not decode. */
  undecodable = 0;
  /** Records the ring delivered (tests: a call no rule selects must not reach user space). */
  records = 0;
  /** Running processes the seeding could not put in the full set (the kernel counts those of exec and fork). */
  private seedOverflows = 0n;

  constructor(private readonly opts: TracepointEnforcerOptions) {
    this.catalogue = opts.catalogue ?? readTracepointCatalogue();
  }

  /** Serves exactly these plans' tracepoint hooks (loading the program on first use, detaching it from every tracepoint none names). Throws naming the field a rule cannot express. */
  set(plans: ReadonlyMap<string, EnforcementPlan>): void {
    const compiled = this.compile(plans);
    // None to serve and nothing loaded: what an enforcer that died left pinned goes (its rules are of deleted policies),
    // not what a newer runtime beside this one adopted.
    if (compiled.hooks.length === 0 && this.obj === undefined) {
      if (ownsPins(path.join(BPFFS_ROOT, this.opts.scope))) removeTracepointPins(this.opts.scope);
      return;
    }
    // Loaded once (the verifier takes ~0.4 s here) and kept while this enforcer lives; without tracepoints nothing is attached.
    this.start();
    const obj = this.obj!;
    if (!sameBinaries(compiled.binaries, this.binaries)) this.setBinaries(compiled.binaries);
    // The new set goes into the half of the maps the set in force does not use, then one word switches to it: an
    // event is judged by one whole set, none of its rules rewritten while a program reads it.
    const inForceWord = obj.map("membrane_tp_in_force");
    const inForce = (inForceWord.lookup(u32(0))?.readUInt32LE(0) ?? 0) - 1;
    const set = inForce === 0 ? 1 : 0;
    // Events waiting in the ring may be of the half about to be rewritten: read them while their origins are known.
    this.reader?.drain();
    const index = obj.map("membrane_tp_index");
    for (const key of index.keys()) if (tpIndexKeySet(key) === set) index.delete(key);
    const rulesMap = obj.map("membrane_tp_rules");
    compiled.hooks.forEach((h, i) => obj.map("membrane_tp_hooks").update(u32(set * TP_HOOKS_MAX + i), encodeTpHook(h)));
    compiled.lists.order.forEach((i, at) => {
      const r = compiled.rules[i]!;
      rulesMap.update(u32(set * TP_RULES_MAX + at), encodeTpRule({ ...r, hook: set * TP_HOOKS_MAX + r.hook }));
    });
    for (const x of compiled.lists.index) index.update(encodeTpIndexKey({ ...x, set }), encodeListRange(TP_LAYOUT.index, { ...x, first: set * TP_RULES_MAX + x.first }));
    for (const slot of this.origins.keys()) if (Math.floor(slot / TP_RULES_MAX) === set) this.origins.delete(slot);
    compiled.lists.order.forEach((i, at) => this.origins.set(set * TP_RULES_MAX + at, compiled.origins[i]!));
    inForceWord.update(u32(0), u32(compiled.rules.length > 0 ? set + 1 : 0));
    // Then the tracepoints this program is not on yet (an earlier runtime's link on one is replaced now, its program
    // detached: the rules it will judge are written already). A failure leaves the new set in force without it.
    const wantedIds = new Set(compiled.hooks.map((h) => h.eventId));
    for (const id of wantedIds) {
      if (this.attached.has(id)) continue;
      attach(obj.programFd("membrane_tracepoint"), id, tracepointLink(obj.pinDir, id));
      this.attached.add(id);
    }
    for (const id of pinnedTracepoints(obj.pinDir)) {
      if (wantedIds.has(id)) continue;
      unpinLink(tracepointLink(obj.pinDir, id)); // freed now: this program may be attached to it again at the next set
      this.attached.delete(id);
    }
  }

  /** Why the plan's tracepoints cannot be served here (a tracepoint this kernel lacks, an argument or operator the program does not read), naming the field. */
  unavailable(plan: EnforcementPlan): string | undefined {
    return this.check(new Map([["", plan]]));
  }

  /** Why these plans' tracepoints cannot be served together (beyond the node's rules, hooks or matchBinaries values), without writing anything. */
  check(plans: ReadonlyMap<string, EnforcementPlan>): string | undefined {
    return refusalOf(() => this.compile(plans));
  }

  /**
   * Processes whose binary matches a matchBinaries value but whose set did not fit in membrane_tp_procs (more such
   * processes alive than its entries): they match no value, so an In selector misses them and a NotIn one holds for
   * them. Counted since this enforcer started; the runtime reports it as a metric and a warning in its status.
   */
  binarySetOverflows(): bigint {
    return (this.obj?.map("membrane_tp_procs_full").lookupPerCpuSum(Buffer.alloc(4)) ?? 0n) + this.seedOverflows;
  }

  /** Events the ring could not take. */
  lost(): bigint {
    return this.obj?.map("membrane_tp_lost").lookupPerCpuSum(Buffer.alloc(4)) ?? 0n;
  }

  /** Consumes what the ring holds now (tests). */
  drain(): number {
    return this.reader?.drain() ?? 0;
  }

  /** The tracepoint program's fd while it is loaded (bench/tracepoint reads its run time). */
  get programFd(): number | undefined {
    return this.obj?.programFd("membrane_tracepoint");
  }

  /** Tracepoints the program is attached to now (tests count them). */
  get attachedTracepoints(): number {
    return pinnedTracepoints(path.join(BPFFS_ROOT, this.opts.scope)).length;
  }

  /** Detaches the programs and removes the pins, also those an earlier enforcer of this scope left: unless a newer runtime has adopted them meanwhile (pin-owner.ts). */
  close(): void {
    this.release();
    if (ownsPins(path.join(BPFFS_ROOT, this.opts.scope))) removeTracepointPins(this.opts.scope);
    else this.opts.log.info({ scope: this.opts.scope }, "tracepoint programs left pinned: a newer runtime adopted them");
  }

  /** Closes this process's fds only: the pinned links keep acting on the rules as written (a process that exits without close). */
  release(): void {
    this.reader?.stop();
    this.reader = undefined;
    this.attached.clear();
    this.binaries = [];
    this.obj?.close();
    this.obj = undefined;
    this.origins = new Map();
  }

  private start(): void {
    if (this.obj) return;
    this.obj = BpfObject.load(this.opts.objectPath ?? TRACEPOINT_OBJECT, { scope: this.opts.scope, ...(this.opts.procsMax !== undefined ? { maxEntries: { membrane_tp_procs: this.opts.procsMax } } : {}) });
    const pinDir = this.obj.pinDir;
    try {
      // An earlier enforcer's programs still attached (it died): its rules and processes' sets keep being used until
      // set() rewrites them. Otherwise pinned maps left without programs hold nothing of this process's.
      if (!fs.existsSync(linkPin(pinDir, BINARY_PROGRAMS[0]))) {
        this.obj.map("membrane_tp_in_force").update(u32(0), u32(0));
        this.obj.map("membrane_tp_index").clear();
        this.obj.map("membrane_tp_count").update(u32(1), u32(0));
        this.obj.map("membrane_tp_procs").clear();
      }
      for (const name of BINARY_PROGRAMS) attachTpBtfPinned(this.obj.programFd(name), linkPin(pinDir, name));
      claimPins(pinDir);
      this.reader = new RingBufferReader(this.obj.map("membrane_tp_events"), (rec) => {
        this.records++;
        const e = decodeTpEvent(rec);
        if (e) this.report(e);
        else this.undecodable++;
      });
      this.reader.start();
    } catch (err) {
      // What was pinned stays (an adopted program keeps acting; set() was not reached, so no rule of this one is written).
      this.release();
      throw err;
    }
  }

  /** The hooks and rules of the plans' tracepoints, in the program's terms. */
  private compile(plans: ReadonlyMap<string, EnforcementPlan>): { hooks: { eventId: number; args: TracepointArgRead[] }[]; rules: TpRule[]; lists: RuleLists; origins: RuleOrigin[]; binaries: TpBinary[] } {
    const hooks: { eventId: number; args: TracepointArgRead[] }[] = [];
    const rules: TpRule[] = [];
    const origins: RuleOrigin[] = [];
    const binaries: TpBinary[] = [];
    const bitOf = (v: TpBinary): bigint => {
      let i = binaries.findIndex((b) => b.op === v.op && b.value === v.value);
      if (i < 0) i = binaries.push(v) - 1;
      return 1n << BigInt(i);
    };
    for (const plan of plans.values()) {
      const tracepoints = plan.hooks.filter((h) => h.meaning === "tracepoint");
      if (tracepoints.length === 0) continue;
      const containers = this.opts.containers;
      const subjects = selectedSubjects(plan, this.opts.pods(), (id) => containers?.cgroupIdOf(id));
      for (const hook of tracepoints) {
        const format = this.formatOf(hook);
        const reads = hook.args.map((a, i) => {
          const r = tracepointArgRead(format, a.index, a.type);
          if (typeof r === "string") throw new Error(`${hook.path}.args[${i}]: ${r}`);
          return r;
        });
        if (reads.length > TP_ARGS_MAX) throw new Error(`${hook.path}.args: lists ${reads.length} arguments; this node's tracepoint program reads ${TP_ARGS_MAX}`);
        const hookIndex = hooks.length;
        hooks.push({ eventId: format.id, args: reads });
        const selectors: readonly (SelectorPlan | undefined)[] = hook.selectors.length > 0 ? hook.selectors : [undefined];
        selectors.forEach((s, j) => {
          const at = `${hook.path}.selectors[${j}]`;
          for (const r of expand(s, at, reads, subjects, hookIndex, bitOf)) {
            rules.push(r);
            origins.push({ policy: plan.name, hook, reads });
          }
        });
      }
    }
    if (hooks.length > TP_HOOKS_MAX) throw new Error(`${hooks.length} tracepoint hooks; this node holds ${TP_HOOKS_MAX}`);
    if (binaries.length > TP_BINARIES_MAX) throw new Error(`tracepoint selectors name ${binaries.length} matchBinaries values; this node holds ${TP_BINARIES_MAX}`);
    const lists = ruleLists(hooks, rules);
    if (lists.order.length > TP_RULES_MAX) {
      const copies = lists.order.length === rules.length ? "" : ` (${lists.order.length} with the rules for every process or pod copied into each pod's and container's list)`;
      throw new Error(`tracepoint hooks expand to ${rules.length} rules${copies}; this node holds ${TP_RULES_MAX}`);
    }
    return { hooks, rules, lists, origins, binaries };
  }

  private formatOf(hook: HookPlan): TracepointFormat {
    const tp = hook.tracepoint!;
    if (tp.raw) throw new Error(`${hook.path}.raw: raw tracepoints (raw: true) are not served by this node; write raw: false (the tracepoint's format fields are read)`);
    if (!(TRACEPOINT_SUBSYSTEMS as readonly string[]).includes(tp.subsystem)) {
      throw new Error(`${hook.path}.subsystem: ${tp.subsystem} tracepoints are not served by this node (${TRACEPOINT_SUBSYSTEMS.join(", ")} are)`);
    }
    if (!this.catalogue.ok) throw new Error(`${hook.path}: ${this.catalogue.error}`);
    const f = this.catalogue.formats.get(`${tp.subsystem}/${tp.event}`);
    if (f === undefined) throw new Error(`${hook.path}.event: tracepoint ${tp.subsystem}/${tp.event} does not exist on this kernel (no events/${tp.subsystem}/${tp.event} in tracefs)`);
    return f;
  }

  private report(e: TpEvent): void {
    const origin = this.origins.get(e.rule);
    if (origin === undefined) return;
    const described = this.opts.events.describe(e.pid);
    if (!described) return;
    const tp = origin.hook.tracepoint!;
    const action = e.action === TP_ACTION.Sigkill ? "KPROBE_ACTION_SIGKILL" : e.action === TP_ACTION.Signal ? "KPROBE_ACTION_SIGNAL" : "KPROBE_ACTION_POST";
    const args: TetragonArg[] = origin.reads.map((r, i) => eventArg(r, origin.hook.args[i]?.type ?? "auto", e.ints[i] ?? 0n, e.strs[i] ?? ""));
    this.opts.emit({
      process_tracepoint: { ...described, subsys: tp.subsystem, event: tp.event, args, action, policy_name: origin.policy },
      node_name: this.opts.nodeName,
      time: this.opts.events.now(),
    });
  }

  /**
   * Loads the matchBinaries values and seeds the set of every running process (the exec program judges those that
   * exec from now on): the process cache's binary (the path exec was given) or, for one it never saw, /proc's exe.
   */
  private setBinaries(binaries: readonly TpBinary[]): void {
    const obj = this.obj!;
    const procs = obj.map("membrane_tp_procs");
    const count = obj.map("membrane_tp_count");
    count.update(u32(1), u32(0));
    binaries.forEach((b, i) => obj.map("membrane_tp_binaries").update(u32(i), encodeTpBinary(b)));
    count.update(u32(1), u32(binaries.length));
    this.binaries = binaries;
    if (binaries.length === 0) {
      procs.clear();
      return;
    }
    const live = new Set<number>();
    for (const name of fs.readdirSync("/proc")) {
      const pid = Number(name);
      if (!Number.isInteger(pid) || pid <= 0) continue;
      const binary = this.opts.events.binaryOf(pid);
      if (binary === undefined) continue;
      let bits = 0n;
      binaries.forEach((b, i) => {
        if (tpBinaryMatches(b, binary)) bits |= 1n << BigInt(i);
      });
      if (bits === 0n) continue;
      const value = Buffer.alloc(8);
      value.writeBigUInt64LE(bits);
      live.add(pid);
      try {
        procs.update(u32(pid), value);
      } catch {
        this.seedOverflows++; // the set is full: counted and reported, as the kernel counts its own
      }
    }
    for (const key of procs.keys()) if (!live.has(key.readUInt32LE(0))) procs.delete(key);
  }
}

function sameBinaries(a: readonly TpBinary[], b: readonly TpBinary[]): boolean {
  return a.length === b.length && a.every((x, i) => x.op === b[i]!.op && x.value === b[i]!.value);
}

/** An argument as Tetragon's JSON carries it. */
function eventArg(r: TracepointArgRead, type: string, int: bigint, str: string): TetragonArg {
  if (r.kind === "string") return { string_arg: str };
  if (r.size <= 4) return r.signed ? { int_arg: Number(int) } : { uint_arg: Number(BigInt.asUintN(32, int)) };
  if (type === "size_t" || type === "uint64" || !r.signed) return { size_arg: BigInt.asUintN(64, int).toString() };
  return { long_arg: int.toString() };
}

const INT_OPS: Readonly<Record<string, { op: number; negate: boolean }>> = {
  Equal: { op: TP_OP.Equal, negate: false }, NotEqual: { op: TP_OP.Equal, negate: true },
  GreaterThan: { op: TP_OP.GT, negate: false }, GT: { op: TP_OP.GT, negate: false },
  LessThan: { op: TP_OP.LT, negate: false }, LT: { op: TP_OP.LT, negate: false }, Mask: { op: TP_OP.Mask, negate: false },
};
const BINARY_OPS: Readonly<Record<string, { op: number; negate: boolean }>> = {
  In: { op: TP_OP.Equal, negate: false }, NotIn: { op: TP_OP.Equal, negate: true },
  Prefix: { op: TP_OP.Prefix, negate: false }, NotPrefix: { op: TP_OP.Prefix, negate: true },
  Postfix: { op: TP_OP.Postfix, negate: false }, NotPostfix: { op: TP_OP.Postfix, negate: true },
};
const STRING_OPS: Readonly<Record<string, { op: number; negate: boolean }>> = {
  Equal: { op: TP_OP.Equal, negate: false }, NotEqual: { op: TP_OP.Equal, negate: true },
  Prefix: { op: TP_OP.Prefix, negate: false }, NotPrefix: { op: TP_OP.Prefix, negate: true },
  Postfix: { op: TP_OP.Postfix, negate: false }, NotPostfix: { op: TP_OP.Postfix, negate: true },
};

/**
 * A selector's rules: one per subject (a pod's network namespace, or a selected container's: its pod's and its own
 * cgroup v2 id) × pid × value of each positive argument filter (the program ORs
 * the rules of a hook, each rule ANDs its filters; a negated filter with several values is one filter per value).
 * matchBinaries entries are ANDed (Tetragon's rule for the entries of a selector), their values ORed: the first
 * positive entry is one "any of" mask, each further positive entry one value per rule (an "all of" bit), and every
 * negative entry's values one "none of" mask.
 */
function expand(s: SelectorPlan | undefined, at: string, reads: readonly TracepointArgRead[], subjects: readonly RuleSubject[], hook: number, bitOf: (v: TpBinary) => bigint): TpRule[] {
  const refuse = (what: string): Error => new Error(`${at}.${what}`);
  let targets = [...subjects];
  // Every process (no pod or container chosen): netns 0 and cgroup 0n, the only subject then.
  const everyProcess = (): boolean => targets.some((x) => x.netns === 0);
  let pids: { pid: number; not: boolean }[] = [{ pid: 0, not: false }];
  let action: number = TP_ACTION.Post;
  let signal = 0;
  let flags = 0;
  let binaries = 0n;
  let binariesNone = 0n;
  let binaryChoices: bigint[] = [0n];
  const fixed: TpFilter[] = [];
  let choices: TpFilter[][] = [[]];
  if (s !== undefined) {
    if (s.names.length > 0) throw refuse("matchNames: not served on tracepoints (use a TracingPolicyNamespaced or podSelector)");
    for (const n of s.namespaces) {
      if (n.namespace !== "Net") throw refuse(`matchNamespaces: ${n.namespace} namespaces are not read by the tracepoint program (Net is: a pod is its network namespace)`);
      const listed = n.values.map((v) => (v === "host_ns" ? netnsOf(1) : Number(v))).filter((x): x is number => x !== undefined && Number.isInteger(x));
      if (n.operator === "In") targets = everyProcess() ? listed.map((netns) => ({ netns, cgroup: 0n })) : targets.filter((x) => listed.includes(x.netns));
      else if (everyProcess()) throw refuse("matchNamespaces: Net NotIn for every process is not served (select pods with podSelector instead)");
      else targets = targets.filter((x) => !listed.includes(x.netns));
    }
    for (const p of s.pids) {
      if (p.isNamespacePID) throw refuse("matchPIDs: isNamespacePID is not served on tracepoints (the program sees host pids)");
      if (p.operator === "In") pids = p.values.map((pid) => ({ pid, not: false }));
      else if (p.values.length === 1) pids = [{ pid: p.values[0]!, not: true }];
      else throw refuse(`matchPIDs: NotIn with ${p.values.length} values (one is served)`);
    }
    s.args.forEach((a, k) => {
      const where = `matchArgs[${k}]`;
      const read = reads[a.index ?? -1];
      if (read === undefined) throw refuse(`${where}.index: argument ${String(a.index)} is not listed in args`);
      const ops = read.kind === "string" ? STRING_OPS : INT_OPS;
      const op = ops[a.operator];
      if (op === undefined) {
        const served = read.kind === "string" ? TRACEPOINT_STRING_OPERATORS : TRACEPOINT_INT_OPERATORS;
        throw refuse(`${where}.operator: ${a.operator} on ${read.kind === "string" ? "a string" : "an integer"} argument (${read.field}) is not evaluated by the tracepoint program (${served.join(", ")} are)`);
      }
      const filters = a.values.map((v, i) => {
        if (read.kind === "string") {
          if (Buffer.byteLength(v) >= TP_STR_MAX) throw refuse(`${where}.values[${i}]: longer than ${TP_STR_MAX - 1} bytes`);
          return { arg: a.index!, op: op.op, negate: op.negate, value: 0n, str: v };
        }
        const n = parseInteger(v);
        if (n === undefined) throw refuse(`${where}.values[${i}]: ${JSON.stringify(v)} is not an integer`);
        return { arg: a.index!, op: op.op, negate: op.negate, value: n };
      });
      if (op.negate) fixed.push(...filters);
      else if (op.op === TP_OP.Mask) fixed.push({ ...filters[0]!, value: filters.reduce((m, f) => m | f.value, 0n) });
      else choices = choices.flatMap((c) => filters.map((f) => [...c, f]));
    });
    if (fixed.length + (choices[0]?.length ?? 0) > TP_FILTERS_MAX) throw refuse(`matchArgs: ${fixed.length + (choices[0]?.length ?? 0)} filters in one selector; the tracepoint program evaluates ${TP_FILTERS_MAX}`);
    const acts = s.actions.map((x) => x.action);
    action = acts.includes("Sigkill") ? TP_ACTION.Sigkill : acts.includes("Signal") ? TP_ACTION.Signal : TP_ACTION.Post;
    signal = s.actions.find((x) => x.action === "Signal")?.signal ?? 0;
    flags = acts.includes("NoPost") ? TP_F.nopost : 0;
    let positives = 0;
    s.binaries.forEach((b, k) => {
      const op = BINARY_OPS[b.operator];
      if (op === undefined) throw refuse(`matchBinaries[${k}].operator: ${b.operator} is not evaluated by the tracepoint program (${Object.keys(BINARY_OPS).join(", ")} are)`);
      const bits = b.values.map((v, i) => {
        if (Buffer.byteLength(v) >= TP_STR_MAX) throw refuse(`matchBinaries[${k}].values[${i}]: longer than ${TP_STR_MAX - 1} bytes`);
        return bitOf({ op: op.op, value: v });
      });
      if (op.negate) binariesNone = bits.reduce((m, bit) => m | bit, binariesNone);
      else if (positives++ === 0) binaries = bits.reduce((m, bit) => m | bit, 0n);
      else binaryChoices = binaryChoices.flatMap((all) => bits.map((bit) => all | bit));
    });
  }
  const out: TpRule[] = [];
  for (const t of targets) for (const p of pids) for (const c of choices) for (const binariesAll of binaryChoices) {
    out.push({ hook, netns: t.netns, cgroup: t.cgroup, pid: p.pid, action, signal, flags: flags | (p.not ? TP_F.pidNot : 0), binaries, binariesAll, binariesNone, filters: [...fixed, ...c] });
  }
  return out;
}

/** Tetragon's integer values: decimal (signed) or 0x hex. */
function parseInteger(v: string): bigint | undefined {
  if (!/^-?(0x[0-9a-fA-F]+|\d+)$/.test(v.trim())) return undefined;
  const t = v.trim();
  return t.startsWith("-") ? -BigInt(t.slice(1)) : BigInt(t);
}

/** The lists of a rule set (set-relative): the rules' indexes in slot order, and the index keys naming their ranges. */
export interface RuleLists {
  readonly order: readonly number[];
  readonly index: readonly (ListRange & { readonly eventId: number; readonly subject: number; readonly id: bigint })[];
}

/** Each caller's list of the rules it can match (subjectLists), per tracepoint; every tracepoint gets its every-process key, flagged with the subjects it has lists of. */
export function ruleLists(hooks: readonly { eventId: number }[], rules: readonly TpRule[]): RuleLists {
  const order: number[] = [];
  const index: (ListRange & { eventId: number; subject: number; id: bigint })[] = [];
  const byEvent = new Map<number, number[]>();
  rules.forEach((r, i) => {
    const id = hooks[r.hook]!.eventId;
    byEvent.set(id, [...(byEvent.get(id) ?? []), i]);
  });
  for (const [eventId, all] of byEvent) {
    const lists = subjectLists(all.map((i) => rules[i]!));
    const flags = (lists.some((l) => l.subject === "netns") ? TP_INDEX_F.netns : 0) | (lists.some((l) => l.subject === "cgroup") ? TP_INDEX_F.cgroup : 0);
    for (const l of lists) {
      index.push({ eventId, subject: TP_SUBJECT[l.subject], id: l.id, first: order.length, count: l.members.length, flags: l.subject === "any" ? flags : 0, netns: l.netns });
      order.push(...l.members.map((m) => all[m]!));
    }
  }
  return { order, index };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** perf_event_open on the tracepoint (any CPU: a BPF program on a tracepoint runs wherever it fires) and a BPF link to it, pinned (the link holds the perf event). */
function attach(progFd: number, eventId: number, pinPath: string): void {
  const attr = Buffer.alloc(128); // struct perf_event_attr (PERF_ATTR_SIZE_VER7)
  attr.writeUInt32LE(PERF_TYPE_TRACEPOINT, 0);
  attr.writeUInt32LE(128, 4);
  attr.writeBigUInt64LE(BigInt(eventId), 8);
  attr.writeBigUInt64LE(1n, 16); // sample_period
  attr.writeUInt32LE(1, 48); // wakeup_events
  const perfFd = Number(syscall(SYS_PERF_EVENT_OPEN, "void *", attr, "int", -1, "int", 0, "int", -1, "unsigned long", PERF_FLAG_FD_CLOEXEC));
  if (perfFd < 0) throw new BpfError(`perf_event_open on tracepoint ${eventId}`, koffi.errno());
  // struct bpf_link_create_opts (libbpf 1.1): sz, then perf_event.bpf_cookie at 32 — the program's way to know the tracepoint.
  const opts = Buffer.alloc(64);
  opts.writeBigUInt64LE(64n, 0);
  opts.writeBigUInt64LE(BigInt(eventId), 32);
  const linkFd = linkCreate(progFd, perfFd, BPF_PERF_EVENT, opts);
  if (linkFd < 0) {
    closeFd(perfFd);
    throw new BpfError(`attach the tracepoint program to tracepoint ${eventId}`, -linkFd);
  }
  try {
    pinLinkReplacing(linkFd, pinPath);
  } finally {
    closeFd(linkFd);
    closeFd(perfFd);
  }
}
