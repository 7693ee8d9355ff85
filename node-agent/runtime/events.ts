// Process events in Tetragon's JSON shape (process_exec, process_exit, as `tetra getevents -o json` prints
// them) from the sensor's raw records: a process cache gives each event its parent and ancestors, /proc fills
// in what the kernel record does not carry (cwd) and processes that started before the sensor.
import fs from "node:fs";
import { constants as os } from "node:os";
import { tetragonContainer, type PodContainer } from "../../core/container.ts";
import type { ProcessEvent, TetragonProcess } from "../../core/process-event.ts";
import type { ContainerCgroups } from "./containers.ts";
import { podContainer } from "./containers.ts";
import type { RawProcessEvent } from "./layout.ts";

/** The pod a process belongs to; the local cluster's pods are told apart by their network namespace. */
export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  /** The pod's labels (a TracingPolicy's podSelector reads them). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Its containers from the pod's status (real nodes); absent for a process-based pod, whose events carry no container. */
  readonly containers?: readonly PodContainer[];
}

export type PodResolver = (netnsInode: number) => PodRef | undefined;

const MAX_ANCESTORS = 16;
/** Processes kept after their exit, for an enforcer's event that the ring hands over after the exit record (a process a program killed). */
const MAX_EXITED = 1024;
const SIGNAL_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(os.signals).map(([name, n]) => [n, name]));

export interface ProcessEventsOptions {
  readonly nodeName: string;
  readonly resolvePod?: PodResolver;
  /** Which container a process is in (by its cgroup); without it events carry no container. */
  readonly containers?: ContainerCgroups;
  /** Where /proc is (tests may point elsewhere). */
  readonly procRoot?: string;
}

/** Turns raw records into Tetragon events, keeping the process tree it has seen (and /proc's for older processes). */
export class ProcessEvents {
  private readonly cache = new Map<number, TetragonProcess>();
  /** Each cached process's parent pid as the kernel reported it at exec (or /proc when first read): the ancestor
   * walk of every exec then reads no /proc file for processes it has seen. */
  private readonly parents = new Map<number, number>();
  /** Recently exited processes with their parent pid, oldest first. */
  private readonly exited = new Map<number, { process: TetragonProcess; ppid: number }>();
  /** Reads what the sensor has not handed over yet (set by the sensor's owner); called before a pid is looked up in /proc. */
  catchUp: (() => void) | undefined;
  /** CLOCK_MONOTONIC (the kernel's ktime) to wall-clock nanoseconds. */
  private readonly bootOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  /** The same offset as whole milliseconds and the nanoseconds beyond them (Number arithmetic per event, not BigInt). */
  private readonly bootOffsetMs = Number(this.bootOffsetNs / 1_000_000n);
  private readonly bootOffsetSubNs = Number(this.bootOffsetNs % 1_000_000n);
  /** The last millisecond formatted, and its ISO text without the Z (events come in bursts within one millisecond). */
  private lastMs = -1;
  private lastIso = "";
  private readonly proc: string;

  constructor(private readonly opts: ProcessEventsOptions) {
    this.proc = opts.procRoot ?? "/proc";
  }

  /** The Tetragon event for one record (undefined for the exit of a process never seen and gone from /proc). */
  handle(e: RawProcessEvent): ProcessEvent | undefined {
    const time = this.wallTime(e.ktimeNs);
    if (e.type === "exec") {
      const parent = this.lookup(e.ppid);
      const process: TetragonProcess = {
        exec_id: this.execId(e.ktimeNs, e.pid),
        pid: e.pid,
        uid: e.uid,
        // The kernel's walk, or /proc when it stopped short (and "" for a process gone by now).
        cwd: e.cwd ?? this.readLink(`${e.pid}/cwd`),
        binary: e.filename ?? "",
        arguments: (e.argv ?? []).slice(1).join(" "),
        flags: "execve",
        start_time: time,
        ...this.pod(e.netns, e.pid, e.cgroupId),
        ...(parent ? { parent_exec_id: parent.exec_id } : {}),
        tid: e.tid,
      };
      this.cache.set(e.pid, process);
      this.parents.set(e.pid, e.ppid);
      const ancestors = this.ancestorsOf(parent);
      return {
        process_exec: { process, ...(parent ? { parent } : {}), ...(ancestors.length > 0 ? { ancestors } : {}) },
        node_name: this.opts.nodeName,
        time,
      };
    }
    const process = this.cache.get(e.pid) ?? this.fromProc(e.pid, e.netns);
    this.cache.delete(e.pid);
    this.parents.delete(e.pid);
    if (!process) return undefined;
    this.exited.delete(e.pid);
    this.exited.set(e.pid, { process, ppid: e.ppid });
    if (this.exited.size > MAX_EXITED) this.exited.delete(this.exited.keys().next().value!);
    const parent = process.parent_exec_id !== undefined ? this.lookup(e.ppid) : undefined;
    const signal = e.exitCode & 0x7f;
    return {
      process_exit: {
        process,
        ...(parent ? { parent } : {}),
        ...(signal !== 0 ? { signal: SIGNAL_NAMES.get(signal) ?? `signal ${signal}` } : {}),
        status: (e.exitCode >> 8) & 0xff,
        time,
      },
      node_name: this.opts.nodeName,
      time,
    };
  }

  /** A running process with its parent and ancestors (from the cache, or /proc), for an event about one of its calls. */
  describe(pid: number): { process: TetragonProcess; parent?: TetragonProcess; ancestors?: TetragonProcess[] } | undefined {
    // The sensor's ring is drained on a timer: the process's latest exec (or its exit) may still be waiting there,
    // and the cache may hold what it was before (`ip netns exec` is `ip` until it execs the command, same pid).
    this.catchUp?.();
    const gone = this.cache.has(pid) ? undefined : this.exited.get(pid);
    const process = gone?.process ?? this.lookup(pid);
    if (!process) return undefined;
    const ppid = gone?.ppid ?? this.ppidOf(pid);
    const parent = ppid !== undefined && ppid !== pid ? this.lookup(ppid) : undefined;
    const ancestors = this.ancestorsOf(parent);
    return { process, ...(parent ? { parent } : {}), ...(ancestors.length > 0 ? { ancestors } : {}) };
  }

  /** The binary a running process runs: the path its exec was given when the cache saw it, else /proc's exe link. */
  binaryOf(pid: number): string | undefined {
    this.catchUp?.();
    const cached = this.cache.get(pid)?.binary;
    if (cached !== undefined) return cached;
    const exe = this.readLink(`${pid}/exe`);
    return exe === "" ? undefined : exe;
  }

  /** The wall-clock time now, in the events' format. */
  now(): string {
    return this.wallTime(process.hrtime.bigint());
  }

  /** Processes the cache holds (they have exec'd or been read from /proc, and not exited). */
  get size(): number {
    return this.cache.size;
  }

  private lookup(pid: number): TetragonProcess | undefined {
    if (pid <= 0) return undefined;
    const hit = this.cache.get(pid);
    if (hit) return hit;
    const p = this.fromProc(pid);
    if (p) this.cache.set(pid, p);
    return p;
  }

  private ancestorsOf(parent: TetragonProcess | undefined): TetragonProcess[] {
    const out: TetragonProcess[] = [];
    let cur = parent;
    while (cur && out.length < MAX_ANCESTORS) {
      const ppid = this.ppidOf(cur.pid);
      const next = ppid !== undefined ? this.lookup(ppid) : undefined;
      if (!next || next.pid === cur.pid) break;
      out.push(next);
      cur = next;
    }
    return out;
  }

  /** A process that started before the sensor (or whose exec the sensor did not see), from /proc. */
  private fromProc(pid: number, netns?: number): TetragonProcess | undefined {
    const stat = this.readFile(`${pid}/stat`);
    if (stat === undefined) return undefined;
    const status = this.readFile(`${pid}/status`) ?? "";
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    const argv = (this.readFile(`${pid}/cmdline`) ?? "").split("\0").filter((a, i, all) => a !== "" || i < all.length - 1);
    const ppid = this.ppidOf(pid);
    const parent = ppid !== undefined && ppid !== pid ? this.cache.get(ppid) : undefined;
    const ns = netns ?? this.netnsOf(pid);
    return {
      exec_id: this.execId(this.startTicks(stat), pid),
      pid,
      uid,
      cwd: this.readLink(`${pid}/cwd`),
      binary: this.readLink(`${pid}/exe`),
      arguments: argv.slice(1).join(" "),
      flags: "procFS",
      start_time: "",
      ...(ns !== undefined ? this.pod(ns, pid) : {}),
      ...(parent ? { parent_exec_id: parent.exec_id } : {}),
      tid: pid,
    };
  }

  private ppidOf(pid: number): number | undefined {
    const known = this.parents.get(pid);
    if (known !== undefined) return known;
    const stat = this.readFile(`${pid}/stat`);
    if (stat === undefined) return undefined;
    // The command name may hold spaces and parentheses: fields follow the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ppid = Number(fields[1]);
    if (!Number.isInteger(ppid)) return undefined;
    if (this.cache.has(pid)) this.parents.set(pid, ppid);
    return ppid;
  }

  private startTicks(stat: string): bigint {
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return BigInt(fields[19] ?? 0);
  }

  private netnsOf(pid: number): number | undefined {
    const m = /^net:\[(\d+)\]$/.exec(this.readLink(`${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  }

  private pod(netns: number, pid: number, cgroupId?: bigint): Pick<TetragonProcess, "pod"> {
    const p = this.opts.resolvePod?.(netns);
    if (!p) return {};
    const resolver = this.opts.containers;
    // Only a pod with containers in its status is looked up (a process-based pod has none: no /proc or cgroup read).
    const c = resolver !== undefined && p.containers !== undefined && p.containers.length > 0
      ? podContainer(p, (cgroupId !== undefined ? resolver.ofCgroupId(cgroupId) : undefined) ?? resolver.ofPid(pid))
      : undefined;
    return { pod: { namespace: p.namespace, name: p.name, ...(c ? { container: tetragonContainer(c, this.nsPid(pid)) } : {}) } };
  }

  /** The pid in the process's innermost pid namespace (the container's), while it runs. */
  private nsPid(pid: number): number | undefined {
    const m = /^NSpid:.*\s(\d+)$/m.exec(this.readFile(`${pid}/status`) ?? "");
    return m ? Number(m[1]) : undefined;
  }

  private execId(start: bigint, pid: number): string {
    return Buffer.from(`${this.opts.nodeName}:${start}:${pid}`).toString("base64");
  }

  private wallTime(ktimeNs: bigint): string {
    // ktime in ns is exact as a Number for 104 days of uptime (2^53 ns), and within a few ns for years after.
    const k = Number(ktimeNs);
    let sub = (k % 1_000_000) + this.bootOffsetSubNs;
    let ms = Math.floor(k / 1_000_000) + this.bootOffsetMs;
    if (sub >= 1_000_000) {
      sub -= 1_000_000;
      ms++;
    }
    if (ms !== this.lastMs) {
      this.lastMs = ms;
      this.lastIso = new Date(ms).toISOString().slice(0, -1);
    }
    return `${this.lastIso}${String(Math.floor(sub)).padStart(6, "0")}Z`;
  }


  private readFile(rel: string): string | undefined {
    try {
      return fs.readFileSync(`${this.proc}/${rel}`, "utf8");
    } catch {
      return undefined;
    }
  }

  private readLink(rel: string): string {
    try {
      return fs.readlinkSync(`${this.proc}/${rel}`);
    } catch {
      return "";
    }
  }
}
