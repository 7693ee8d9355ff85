// Where the whole machine's CPU goes during a bench's measured window: each named process of the bench, the kernel's own threads,
// the busy time no live process accounts for (irq/softirq work that ran on the idle task, and processes that ended inside the
// window: on a shared machine mostly other users' short commands), and every other process (other users' load, left out).
import { spawn } from "node:child_process";
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

/** Clock ticks per second of /proc's times (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;
const TICK_MICROS = 1e6 / CLOCK_TICKS;

/** The machine's busy time so far in µs: /proc/stat's user, nice, system, irq, softirq and steal over all CPUs. */
function machineBusyMicros(): number {
  const cpu = fs.readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  return (user + nice + system + irq + softirq + steal) * TICK_MICROS;
}

/** A process's CPU time so far (user and system, µs) and its flags word, from /proc/PID/stat. */
export function processTimes(pid: number): { user: number; system: number; flags: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // The fields after the command's closing parenthesis: flags is the 7th there, utime and stime the 12th and 13th.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(f[11]) * TICK_MICROS, system: Number(f[12]) * TICK_MICROS, flags: Number(f[6]) };
}

/** Every live process's CPU time so far (user + system, µs) and whether it is a kernel thread. */
function processMicros(): Map<number, { micros: number; kthread: boolean }> {
  const out = new Map<number, { micros: number; kthread: boolean }>();
  for (const name of fs.readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    let t: ReturnType<typeof processTimes>;
    try {
      t = processTimes(pid);
    } catch {
      continue; // gone since the listing
    }
    const PF_KTHREAD = 0x200000;
    out.set(pid, { micros: t.user + t.system, kthread: (t.flags & PF_KTHREAD) !== 0 });
  }
  return out;
}

/** One window's CPU in µs: each named part, the kernel's threads, the busy time no live process accounts for, and the other processes. */
export interface CpuSplit {
  parts: Record<string, number>;
  kernel: number;
  unaccounted: number;
  other: number;
  /** The window's wall time, µs. */
  wall: number;
}

/** A window opened by `cpuWindow`; `close()` reads the machine again and splits what it spent. */
export interface CpuWindow {
  close(): CpuSplit;
}

/** Opens a window over the machine; `parts` names the bench's processes (a part may be several pids). */
export function cpuWindow(parts: Record<string, readonly number[]>): CpuWindow {
  const wall0 = performance.now();
  const machine0 = machineBusyMicros();
  const procs0 = processMicros();
  return {
    close(): CpuSplit {
      const machine = machineBusyMicros() - machine0;
      const procs = processMicros();
      const owner = new Map<number, string>();
      for (const [part, pids] of Object.entries(parts)) for (const pid of pids) owner.set(pid, part);
      const split: CpuSplit = { parts: Object.fromEntries(Object.keys(parts).map((p) => [p, 0])), kernel: 0, unaccounted: 0, other: 0, wall: (performance.now() - wall0) * 1000 };
      let accounted = 0;
      for (const [pid, now] of procs) {
        // A process born inside the window counts from zero.
        const used = now.micros - (procs0.get(pid)?.micros ?? 0);
        if (used <= 0) continue;
        accounted += used;
        const part = owner.get(pid);
        if (part !== undefined) split.parts[part]! += used;
        else if (now.kthread) split.kernel += used;
        else split.other += used;
      }
      split.unaccounted = Math.max(0, machine - accounted);
      return split;
    },
  };
}

/**
 * µs per request of each part and their sum (`machine`: the bench's processes and the kernel's threads; the unaccounted time
 * and the other processes are shown apart), rounded to 0.1 µs; `busy_cores`:
 * how many of the machine's CPUs the bench's parts kept busy on average (at saturation on an idle machine, all of them when CPU is the bound).
 */
export function perRequest(split: CpuSplit, requests: number): Record<string, number> {
  const r = (x: number): number => Math.round((x / requests) * 10) / 10;
  const parts = Object.fromEntries(Object.entries(split.parts).map(([k, v]) => [k, r(v)]));
  const machine = Object.values(split.parts).reduce((a, b) => a + b, 0) + split.kernel;
  return { machine: r(machine), ...parts, kernel: r(split.kernel), unaccounted: r(split.unaccounted), other_processes: r(split.other), busy_cores: Math.round((machine / split.wall) * 100) / 100 };
}

/** Sums windows part by part. */
export function addSplits(a: CpuSplit, b: CpuSplit): CpuSplit {
  const parts = { ...a.parts };
  for (const [k, v] of Object.entries(b.parts)) parts[k] = (parts[k] ?? 0) + v;
  return { parts, kernel: a.kernel + b.kernel, unaccounted: a.unaccounted + b.unaccounted, other: a.other + b.other, wall: a.wall + b.wall };
}

/** What a loadgen printed last (its JSON summary) and the machine's CPU between its `measuring` and `measured` lines. */
export interface MeasuredRun<T> {
  result: T;
  split: CpuSplit;
}

/**
 * Runs a loadgen (`argv`, its pid the loadgen's own: `ip netns exec` execs it) that prints a line `measuring` when its measured
 * window opens and `measured` when it closes, then one JSON line; `parts()` names the bench's other processes at that moment.
 */
export function measuredRun<T>(argv: readonly string[], cwd: string, parts: () => Record<string, readonly number[]>): Promise<MeasuredRun<T>> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ["ignore", "pipe", "inherit"] });
    let window: CpuWindow | undefined;
    let split: CpuSplit | undefined;
    let last = "";
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line === "measuring") window = cpuWindow({ ...parts(), loadgen: [child.pid!] });
      else if (line === "measured") split = window?.close();
      else if (line.trim()) last = line;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`${argv.join(" ")} exited ${code}`));
      else if (!split) reject(new Error(`${argv.join(" ")} printed no measured window`));
      else resolve({ result: JSON.parse(last) as T, split });
    });
  });
}
