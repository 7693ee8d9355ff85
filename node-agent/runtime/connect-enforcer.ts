// Connect hooks of TracingPolicies on cgroup/connect4 and connect6 (bpf/connect.c, attached by links to the cgroup v2
// root): the plans' selectors expanded into rules the program evaluates per connect(), and its reports turned into
// Tetragon events (and a kill for Sigkill and Signal, which these programs cannot send themselves). The links and the
// rule maps are pinned, so the verdicts outlive this process (a runtime killed with its agent's pod keeps refusing);
// the next enforcer swaps its program into the same links and rewrites the rules.
import net from "node:net";
import type { Logger } from "pino";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { HookCall, RuntimeEvent } from "../../core/process-event.ts";
import type { EnforcementPlan, HookPlan, SelectorPlan } from "../../core/tracing-enforcement.ts";
import { claimPins, ownsPins } from "./pin-owner.ts";
import { BPFFS_ROOT, BpfObject, RingBufferReader, attachCgroupLink, attachTpBtfPinned, detachCgroupLink, unpinLink } from "../bpf/loader.ts";
import {
  CONNECT_ACTION, CONNECT_F_ADDR_NOT, CONNECT_F_NOPOST, CONNECT_F_PORT_NOT, CONNECT_INDEX_F, CONNECT_LAYOUT, CONNECT_RULES_MAX, CONNECT_SLOTS, CONNECT_SUBJECT, type ConnectEvent, type ConnectRule,
  connectIndexKeySet, decodeConnectEvent, decodeRange, encodeConnectIndexKey, encodeConnectRule, encodeRange,
} from "./connect-layout.ts";
import type { PodRef, ProcessEvents } from "./events.ts";
import type { ContainerCgroups } from "./containers.ts";
import { encodeListRange, netnsOf, refusalOf, selectedSubjects, signalProcess, subjectLists, type RuleSubject, type SubjectList } from "./selection.ts";
import fs from "node:fs";

export const CONNECT_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/connect.o");
export const CGROUP2_ROOT = "/sys/fs/cgroup/unified";
const BPF_CGROUP_INET4_CONNECT = 10;
const BPF_CGROUP_INET6_CONNECT = 11;
const HOOKS = [["membrane_connect4", BPF_CGROUP_INET4_CONNECT], ["membrane_connect6", BPF_CGROUP_INET6_CONNECT]] as const;
/** Sends a Sigkill's or Signal's signal as the refused connect() returns (bpf/connect.c); pinned like the hooks. */
const EXIT_PROGRAM = "membrane_connect_exit";

/** Where a scope's link of one program is pinned (beside its maps). */
const linkPin = (pinDir: string, program: string): string => path.join(pinDir, "links", program);

/**
 * Detaches the connect programs whose links are pinned in the scope and removes its pins (maps included): what an
 * enforcer that is gone left enforcing. Returns whether there was anything.
 */
export function removeConnectPins(scope: string, pinRoot = BPFFS_ROOT): boolean {
  const pinDir = path.join(pinRoot, scope);
  if (!fs.existsSync(pinDir)) return false;
  for (const [name] of HOOKS) detachCgroupLink(linkPin(pinDir, name));
  fs.rmSync(pinDir, { recursive: true, force: true });
  return true;
}

export interface ConnectEnforcerOptions {
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
  readonly cgroupPath?: string;
}

/** What a rule came from, to name it in events. */
interface RuleOrigin {
  readonly policy: string;
  readonly hook: HookPlan;
}

export class ConnectEnforcer {
  private obj: BpfObject | undefined;
  private reader: RingBufferReader | undefined;
  /**
   * What each hook id of the rule set in force came from, and of the set before it: events are read after they were
   * made, and one made under the previous set is read once this set is in force (their ids are from the two halves of
   * the id space, so they never meet).
   */
  /** This enforcer attached its exit program (an earlier one's pinned link is replaced by the first set that signals). */
  private exitAttached = false;
  private origins = new Map<number, RuleOrigin>();
  private previousOrigins = new Map<number, RuleOrigin>();
  /** Records the agent could not decode. */
  undecodable = 0;
  /** Records whose rule belongs to no set this enforcer wrote (an earlier runtime's, read after it was replaced): no event. */
  unattributed = 0;

  constructor(private readonly opts: ConnectEnforcerOptions) {}

  /** The rules of the plans' connect hooks in the program's terms, and each caller's list of them. */
  private compile(plans: ReadonlyMap<string, EnforcementPlan>): { rules: ConnectRule[]; origins: Map<number, RuleOrigin>; lists: SubjectList[]; order: number[] } {
    const rules: ConnectRule[] = [];
    const origins = new Map<number, RuleOrigin>();
    let hookId = 0;
    let policyIndex = 0;
    const hostNet = netnsOf(1);
    for (const [, plan] of plans) {
      const hooks = plan.hooks.filter((h) => h.meaning === "connect");
      if (hooks.length === 0) continue;
      policyIndex++;
      const containers = this.opts.containers;
      const subjects = selectedSubjects(plan, this.opts.pods(), (id) => containers?.cgroupIdOf(id));
      for (const hook of hooks) {
        hookId++;
        const selectors: readonly (SelectorPlan | undefined)[] = hook.selectors.length > 0 ? hook.selectors : [undefined];
        selectors.forEach((s, i) => {
          for (const r of expand(s, `${hook.path}.selectors[${i}]`, subjects, hostNet)) rules.push({ ...r, hook: hookId, policy: policyIndex });
        });
        origins.set(hookId, { policy: plan.name, hook });
      }
    }
    // Each caller's list (its cgroup's, its pod's or every process's rules), in the set's order: a connect reads one.
    const lists = subjectLists(rules);
    const order = lists.flatMap((l) => l.members);
    if (order.length > CONNECT_RULES_MAX) {
      const copies = order.length === rules.length ? "" : ` (${order.length} with the rules for every process or pod copied into each pod's and container's list)`;
      throw new Error(`connect hooks expand to ${rules.length} rules${copies}; this node holds ${CONNECT_RULES_MAX}`);
    }
    return { rules, origins, lists, order };
  }

  /** Why these plans' connect hooks cannot be served together (a selector the programs cannot evaluate, beyond the node's rules), without writing anything. */
  check(plans: ReadonlyMap<string, EnforcementPlan>): string | undefined {
    return refusalOf(() => this.compile(plans));
  }

  /** Writes the rules of exactly these plans' connect hooks (loading and attaching the programs on first use, detaching them when none is left). Throws naming the field a rule cannot express. */
  set(plans: ReadonlyMap<string, EnforcementPlan>): void {
    const { rules, origins, lists, order } = this.compile(plans);
    if (rules.length === 0 && ![...plans.values()].some((p) => p.hooks.some((h) => h.meaning === "connect"))) {
      this.reader?.drain(); // the last set's events, named before its origins go
      this.close();
      return;
    }
    this.start();
    const obj = this.obj!;
    const countMap = obj.map("membrane_connect_count");
    const rulesMap = obj.map("membrane_connect_rules");
    const inForce = decodeRange(countMap.lookup(u32(0))?.readUInt32LE(0) ?? 0);
    // This set's hook ids differ from those of the set in force and of the one before (events name their rule's id, and
    // one made under the set in force may be read after this one replaced it): the two halves of the id space alternate.
    const inForceHook = inForce.count > 0 ? rulesMap.lookup(u32(inForce.first))?.readUInt32LE(CONNECT_LAYOUT.rule.hook) : undefined;
    const base = inForceHook !== undefined && inForceHook < HOOK_ID_HALF ? HOOK_ID_HALF : 0;
    // Events waiting in the ring were made under the set in force or the one before it; read them while both are
    // known: the one before's ids are the half this set takes.
    this.reader?.drain();
    // The new set goes beside the one in force, then one write switches to it: a connect is judged by one whole set
    // (no rule of either missing meanwhile, none rewritten while a program reads it). With no free room beside it (the
    // two together beyond the map), it is written over the set in force: for a moment a connect may meet half of each.
    // The exit program costs every syscall on the node (~90 ns here: syscall exits take the traced path), so it runs
    // only while a rule sends a signal, and is attached before such a rule is in force and removed after none is.
    const signals = rules.some((r) => r.action === CONNECT_ACTION.Sigkill || (r.action === CONNECT_ACTION.Signal && r.signal !== 0));
    if (signals && !this.exitAttached) {
      attachTpBtfPinned(obj.programFd(EXIT_PROGRAM), linkPin(obj.pinDir, EXIT_PROGRAM));
      this.exitAttached = true;
    }
    const first = placeBeside(inForce, order.length);
    order.forEach((i, at) => rulesMap.update(u32(first + at), encodeConnectRule({ ...rules[i]!, hook: rules[i]!.hook + base })));
    // The lists' keys name the set by its first slot; keys of sets before the one in force go (none is read any more),
    // and all of them when the new set is written over the one in force (no room beside it).
    const index = obj.map("membrane_connect_index");
    const over = inForce.count > 0 && first < inForce.first + inForce.count && inForce.first < first + order.length;
    for (const key of index.keys()) if (over || inForce.count === 0 || connectIndexKeySet(key) !== inForce.first) index.delete(key);
    const flags = (lists.some((l) => l.subject === "netns") ? CONNECT_INDEX_F.netns : 0) | (lists.some((l) => l.subject === "cgroup") ? CONNECT_INDEX_F.cgroup : 0);
    let at = first;
    for (const l of lists) {
      index.update(encodeConnectIndexKey({ setFirst: first, subject: CONNECT_SUBJECT[l.subject], id: l.id }), encodeListRange(CONNECT_LAYOUT.index, { first: at, count: l.members.length, flags: l.subject === "any" ? flags : 0, netns: l.netns }));
      at += l.members.length;
    }
    this.previousOrigins = this.origins;
    this.origins = new Map([...origins].map(([id, o]) => [id + base, o]));
    countMap.update(u32(0), u32(encodeRange({ first, count: order.length })));
    if (!signals) {
      // Also an earlier enforcer's (adopted): its rules that signalled are gone now.
      unpinLink(linkPin(obj.pinDir, EXIT_PROGRAM));
      this.exitAttached = false;
    }
  }

  /** Whether the exit program that sends Sigkill's and Signal's signals is attached (tests). */
  get signalling(): boolean {
    return fs.existsSync(linkPin(path.join(BPFFS_ROOT, this.opts.scope), EXIT_PROGRAM));
  }

  /** Events the ring could not take. */
  lost(): bigint {
    return this.obj?.map("membrane_connect_lost").lookupPerCpuSum(Buffer.alloc(4)) ?? 0n;
  }

  /** Consumes what the ring holds now (tests). */
  drain(): number {
    return this.reader?.drain() ?? 0;
  }

  /** The links pinned now, this enforcer's or adopted (tests count them). */
  get attached(): number {
    return HOOKS.filter(([name]) => fs.existsSync(linkPin(path.join(BPFFS_ROOT, this.opts.scope), name))).length;
  }

  /**
   * Detaches the programs and removes the pins, also those an earlier enforcer of this scope left (no connect hook is
   * enforced any more): unless a newer runtime has adopted them meanwhile (pin-owner.ts), whose they are now.
   */
  close(): void {
    this.release();
    const pinDir = path.join(BPFFS_ROOT, this.opts.scope);
    if (ownsPins(pinDir)) removeConnectPins(this.opts.scope);
    else this.opts.log.info({ scope: this.opts.scope }, "connect programs left pinned: a newer runtime adopted them");
  }

  /** Closes this process's fds only: the pinned links keep refusing with the rules as written (a process that exits without close). */
  release(): void {
    this.exitAttached = false;
    this.reader?.stop();
    this.reader = undefined;
    this.obj?.close();
    this.obj = undefined;
    this.origins = new Map();
    this.previousOrigins = new Map();
  }

  private start(): void {
    if (this.obj) return;
    // Pinned maps and links an enforcer that died left are reused: its rules keep being enforced until set() rewrites them.
    const obj = BpfObject.load(this.opts.objectPath ?? CONNECT_OBJECT, { scope: this.opts.scope });
    this.obj = obj;
    try {
      // A link already pinned gets the new program in place (no connect() meets the hook without one).
      for (const [name, type] of HOOKS) attachCgroupLink(obj.programFd(name), this.opts.cgroupPath ?? CGROUP2_ROOT, type, linkPin(obj.pinDir, name), false);
      claimPins(obj.pinDir);
      this.reader = new RingBufferReader(obj.map("membrane_connect_events"), (rec) => {
        const e = decodeConnectEvent(rec);
        if (e) this.report(e);
        else this.undecodable++;
      });
      this.reader.start();
    } catch (err) {
      // What was pinned stays (an adopted link keeps its program and rules; a new one with no rules refuses nothing).
      this.release();
      throw err;
    }
  }

  private report(e: ConnectEvent): void {
    const origin = this.origins.get(e.hook) ?? this.previousOrigins.get(e.hook);
    // The kernel sent the signal as connect() returned (membrane_connect_exit). A SIGKILL again from here covers a
    // connect that did not return through connect/sendto/sendmsg (io_uring); a Signal is not repeated (a handler would
    // run twice).
    if (e.action === CONNECT_ACTION.Sigkill) this.kill(e.pid, 9);
    if (origin === undefined) {
      this.unattributed++;
      return;
    }
    const described = this.opts.events.describe(e.pid);
    if (!described) return;
    const family = e.family === 2 ? "AF_INET" : "AF_INET6";
    const daddr = e.family === 2 ? [...e.addr.subarray(0, 4)].join(".") : ipv6(e.addr);
    const protocol = e.protocol === 6 ? "IPPROTO_TCP" : e.protocol === 17 ? "IPPROTO_UDP" : `${e.protocol}`;
    const declared = origin.hook.args[0]?.type ?? "sock";
    const action = { [CONNECT_ACTION.Post]: "KPROBE_ACTION_POST", [CONNECT_ACTION.Override]: "KPROBE_ACTION_OVERRIDE", [CONNECT_ACTION.Sigkill]: "KPROBE_ACTION_SIGKILL", [CONNECT_ACTION.Signal]: "KPROBE_ACTION_SIGNAL" }[e.action] ?? "KPROBE_ACTION_POST";
    const call: HookCall = {
      ...described,
      function_name: origin.hook.name,
      args: [declared === "sockaddr" ? { sockaddr_arg: { family, addr: daddr, port: e.port } } : { sock_arg: { family, protocol, daddr, dport: e.port } }],
      action,
      policy_name: origin.policy,
    };
    const time = this.opts.events.now();
    this.opts.emit(origin.hook.kind === "lsmhooks" ? { process_lsm: call, node_name: this.opts.nodeName, time } : { process_kprobe: call, node_name: this.opts.nodeName, time });
  }

  private kill(pid: number, sig: number): void {
    signalProcess(pid, sig, this.opts.log);
  }
}

/** Half the hook id space: consecutive rule sets use the two halves in turn. */
const HOOK_ID_HALF = 1 << 30;

/** Where a set of n rules goes: a range of the map apart from the set in force (the far half first), else slot 0. */
function placeBeside(inForce: { first: number; count: number }, n: number): number {
  const apart = (at: number): boolean => at + n <= CONNECT_SLOTS && (inForce.count === 0 || at + n <= inForce.first || at >= inForce.first + inForce.count);
  const half = CONNECT_SLOTS / 2;
  return [inForce.first >= half ? 0 : half, inForce.first >= half ? half : 0, inForce.first + inForce.count, 0].find(apart) ?? 0;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** A selector's rules: one per network namespace × port value × address value (the program ORs rules of a hook). */
function expand(s: SelectorPlan | undefined, path: string, subjects: readonly RuleSubject[], hostNet: number | undefined): Omit<ConnectRule, "hook" | "policy">[] {
  const unsupported = (what: string): Error => new Error(`${path}: ${what} on a connect hook is not evaluated by the cgroup/connect programs (they see the caller's network namespace and the destination only)`);
  // Each pod's network namespace (0: every process), with the cgroups of its selected containers (0n: any).
  const cgroups = new Map<number, bigint[]>();
  for (const x of subjects) cgroups.set(x.netns, [...(cgroups.get(x.netns) ?? []), x.cgroup]);
  let netns = [...cgroups.keys()];
  let ports: { lo: number; hi: number; not: boolean }[] = [{ lo: 0, hi: 65535, not: false }];
  let addrs: { addr: Buffer; len: number; not: boolean }[] = [{ addr: Buffer.alloc(16), len: 0, not: false }];
  let family = 0;
  let action: number = CONNECT_ACTION.Post;
  let signal = 0;
  let nopost = false;
  if (s !== undefined) {
    if (s.binaries.length > 0) throw unsupported("matchBinaries");
    if (s.pids.length > 0) throw unsupported("matchPIDs");
    if (s.names.length > 0) throw unsupported("matchNames (use a TracingPolicyNamespaced or podSelector)");
    for (const n of s.namespaces) {
      if (n.namespace !== "Net") throw unsupported(`matchNamespaces ${n.namespace}`);
      const listed = n.values.map((v) => (v === "host_ns" ? hostNet : Number(v)));
      netns = n.operator === "In"
        ? (netns.includes(0) ? listed.filter((x): x is number => x !== undefined) : netns.filter((x) => listed.includes(x)))
        : netns.includes(0) ? (() => { throw unsupported("matchNamespaces Net NotIn for every process"); })() : netns.filter((x) => !listed.includes(x));
    }
    let portFilters = 0;
    let addrFilters = 0;
    for (const a of s.args) {
      const single = (): void => {
        if (a.values.length !== 1) throw unsupported(`${a.operator} with ${a.values.length} values (one is supported)`);
      };
      switch (a.operator) {
        case "DPort":
        case "NotDPort":
          if (a.operator === "NotDPort") single();
          portFilters++;
          ports = a.values.map((v) => {
            const [lo, hi] = v.split(":").map(Number);
            return { lo: lo ?? 0, hi: hi ?? lo ?? 0, not: a.operator === "NotDPort" };
          });
          break;
        case "DPortPriv":
        case "NotDPortPriv":
          portFilters++;
          ports = [a.operator === "DPortPriv" ? { lo: 0, hi: 1023, not: false } : { lo: 1024, hi: 65535, not: false }];
          break;
        case "DAddr":
        case "NotDAddr":
          if (a.operator === "NotDAddr") single();
          addrFilters++;
          addrs = a.values.map((v) => ({ ...prefixOf(v, path), not: a.operator === "NotDAddr" }));
          break;
        case "Family":
          family = a.values.includes("AF_INET6") || a.values.includes("10") ? (a.values.length > 1 ? 0 : 10) : 2;
          break;
        default:
          throw unsupported(`matchArgs operator ${a.operator}`);
      }
    }
    if (portFilters > 1 || addrFilters > 1) throw unsupported("more than one port or address filter in one selector");
    const acts = s.actions.map((x) => x.action);
    action = acts.includes("Sigkill") ? CONNECT_ACTION.Sigkill : acts.includes("Override") ? CONNECT_ACTION.Override : acts.includes("Signal") ? CONNECT_ACTION.Signal : CONNECT_ACTION.Post;
    signal = s.actions.find((x) => x.action === "Signal")?.signal ?? 0;
    nopost = acts.includes("NoPost");
  }
  const out: Omit<ConnectRule, "hook" | "policy">[] = [];
  for (const n of netns) for (const cgroup of cgroups.get(n) ?? [0n]) for (const p of ports) for (const a of addrs) {
    out.push({
      netns: n, cgroup, portLo: p.lo, portHi: p.hi, family, action, signal,
      flags: (p.not ? CONNECT_F_PORT_NOT : 0) | (a.not ? CONNECT_F_ADDR_NOT : 0) | (nopost ? CONNECT_F_NOPOST : 0),
      addr: a.addr, prefixLen: a.len,
    });
  }
  return out;
}

function prefixOf(v: string, path: string): { addr: Buffer; len: number } {
  const [ip, bits] = v.split("/");
  const addr = Buffer.alloc(16);
  if (net.isIPv4(ip ?? "")) {
    ip!.split(".").forEach((o, i) => addr.writeUInt8(Number(o), i));
    return { addr, len: bits === undefined ? 32 : Number(bits) };
  }
  if (net.isIPv6(ip ?? "")) {
    const sl = new net.SocketAddress({ address: ip!, family: "ipv6" });
    const full = expandIpv6(sl.address);
    full.forEach((h, i) => addr.writeUInt16BE(h, i * 2));
    return { addr, len: bits === undefined ? 128 : Number(bits) };
  }
  throw new Error(`${path}: ${JSON.stringify(v)} is not an address or prefix`);
}

function expandIpv6(a: string): number[] {
  const [head, tail] = a.split("::");
  const h = head ? head.split(":").map((x) => parseInt(x, 16)) : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":").map((x) => parseInt(x, 16)) : [];
  return tail === undefined ? h : [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

function ipv6(b: Buffer): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return parts.join(":");
}
