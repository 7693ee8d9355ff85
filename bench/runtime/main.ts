// bench/runtime: what process visibility and TracingPolicy enforcement cost the processes of a pod, side by side in
// one run: short processes, file opens and TCP connects in two network namespaces (a pod the policies do not select,
// one they select) with nothing loaded vs with the exec/exit sensor on, its events exported, and the reference example,
// a file-open Override and a connect Override (on another port) enforced; rounds interleaved, order rotated, medians.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Registry } from "prom-client";

process.env.LOG_LEVEL ??= "warn";
const { NetnsFixture } = await import("../../node-agent/bpf/netns.ts");
const { ProcessVisibility } = await import("../../node-agent/runtime/visibility.ts");
const { RuntimeEnforcement } = await import("../../node-agent/runtime/enforcement.ts");
const { ConnectEnforcer } = await import("../../node-agent/runtime/connect-enforcer.ts");
const { BPFFS_ROOT, enableRunTimeStats, pinnedLinkRunStats } = await import("../../node-agent/bpf/loader.ts");
const { pino } = await import("pino");
type PodRef = import("../../node-agent/runtime/events.ts").PodRef;

const run = promisify(execFile);
const EXECS = Number(process.env.BENCH_EXECS ?? 2000); // per round, variant and pod
const OPENS = Number(process.env.BENCH_OPENS ?? 100_000); // per round, variant, pod and file
const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 20_000); // per round, variant and pod
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
/** Each pod's listener (on its own loopback); the connect policy refuses another port, FORBIDDEN_PORT. */
const LISTEN_PORT = 7070;
const FORBIDDEN_PORT = 7071;
const NETNS = `bench-runtime-${process.pid}`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const fixture = new NetnsFixture();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bench-runtime-"));
// A stand-in for /etc (the bench must not slow the machine's real /etc for everyone else): the policies watch
// its shadow and passwd; the workloads open a neighbour in the same directory (every open there is a permission
// event judged in user space) and a file elsewhere (never marked).
const etc = path.join(dir, "etc");
const elsewhere = path.join(dir, "data", "file");
const samedir = path.join(etc, "hostname");

type Workload = "exec" | "open" | "open_same_dir" | "connect";
const WORKLOADS: readonly Workload[] = ["exec", "open", "open_same_dir", "connect"];
type Pod = "unselected" | "selected";
const times: Record<"off" | "on", Record<Pod, Record<Workload, number[]>>> = {
  off: { unselected: { exec: [], open: [], open_same_dir: [], connect: [] }, selected: { exec: [], open: [], open_same_dir: [], connect: [] } },
  on: { unselected: { exec: [], open: [], open_same_dir: [], connect: [] }, selected: { exec: [], open: [], open_same_dir: [], connect: [] } },
};
const eventsPerSecond: number[] = [];
let lost = 0n;
let events = 0;
let judged = 0;
const netnsOf: Record<Pod, string> = { unselected: `${NETNS}-u`, selected: `${NETNS}-s` };
const CONNECT_SCOPE = `bench-runtime-${process.pid}-connect`;
/** ns per run of the connect4 program during each pod's connects (the kernel's run-time statistics, on only then). */
const hookNs: Record<Pod, number[]> = { unselected: [], selected: [] };

/** CPU seconds of each run: the workload's own (the shell and its children) and this process's meanwhile (the runtime's, when on). */
const cpu: Record<"off" | "on", Record<Pod, Record<Workload, { workload: number; runtime: number }[]>>> = {
  off: { unselected: { exec: [], open: [], open_same_dir: [], connect: [] }, selected: { exec: [], open: [], open_same_dir: [], connect: [] } },
  on: { unselected: { exec: [], open: [], open_same_dir: [], connect: [] }, selected: { exec: [], open: [], open_same_dir: [], connect: [] } },
};

/** bash's `times`: "0m0.010s 0m0.020s" lines (the shell's user and system time, then its children's): the sum in seconds. */
function cpuSecondsOf(times: string): number {
  let sum = 0;
  for (const m of times.matchAll(/(\d+)m([\d.]+)s/g)) sum += Number(m[1]) * 60 + Number(m[2]);
  return sum;
}

/**
 * Runs a workload in a pod's namespace: its wall seconds (the first measure), and its CPU seconds with this
 * process's CPU meanwhile recorded in `cpu`. Wall time is what a pod sees on an idle node; on this shared machine it
 * is mostly the other sessions' load, while CPU time (the workload's, including what the kernel programs add to its
 * execs and opens, plus the runtime's that handles their events) is what the runtime costs the node whatever the load.
 */
async function workload(pod: Pod, w: Workload, variant?: "off" | "on"): Promise<number> {
  // A connect is bash's own (/dev/tcp: socket, connect, close; no process): the hook's cost lands in the shell's
  // system time. One that fails is counted, and fails the bench (nothing the policies do may refuse it).
  const script =
    w === "exec"
      ? `for ((i=0;i<${EXECS};i++)); do /bin/true; done; times`
      : w === "connect"
        ? `f=0; for ((i=0;i<${CONNECTS};i++)); do : < /dev/tcp/127.0.0.1/${LISTEN_PORT} || ((f++)); done 2>/dev/null; echo "failed $f"; times`
        : `for ((i=0;i<${OPENS};i++)); do : < ${w === "open" ? elsewhere : samedir}; done; times`;
  const start = process.hrtime.bigint();
  const ownBefore = process.cpuUsage();
  const { stdout } = await run("ip", ["netns", "exec", netnsOf[pod], "/bin/bash", "-c", script]);
  const own = process.cpuUsage(ownBefore);
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  const failed = /^failed (\d+)$/m.exec(stdout);
  if (w === "connect" && failed?.[1] !== "0") throw new Error(`${pod} pod${variant ? `, ${variant}` : ""}: ${failed?.[1] ?? "?"} of ${CONNECTS} connects to its listener failed: ${stdout}`);
  if (variant !== undefined) cpu[variant][pod][w].push({ workload: cpuSecondsOf(stdout), runtime: (own.user + own.system) / 1e6 });
  return wall;
}

// BENCH_POLICIES=0: visibility alone (what the policies add is then the difference between two runs).
const WITH_POLICIES = process.env.BENCH_POLICIES !== "0";
const policies = !WITH_POLICIES ? [] : [
  // The reference example, on the stand-in /etc: Sigkill for a process of a pod in default that opens shadow or passwd.
  {
    apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicyNamespaced", metadata: { name: "monitor-sensitive-files", namespace: "default" },
    spec: { kprobes: [{ call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }], selectors: [{ matchArgs: [{ index: 1, operator: "Prefix", values: [path.join(etc, "shadow"), path.join(etc, "passwd")] }], matchActions: [{ action: "Sigkill" }] }] }] },
  },
  // A file-open Override on one path, for the pods of default.
  {
    apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicyNamespaced", metadata: { name: "deny-one-path", namespace: "default" },
    spec: { lsmhooks: [{ hook: "file_open", args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [path.join(etc, "secret")] }], matchActions: [{ action: "Override", argError: -1 }] }] }] },
  },
  // A connect Override on another port, for the pods of default: the cgroup/connect programs judge every connect on
  // the node (the unselected pod's finds no rule list; the selected pod's evaluates this rule and passes).
  {
    apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicyNamespaced", metadata: { name: "deny-one-port", namespace: "default" },
    spec: { kprobes: [{ call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }], selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: [String(FORBIDDEN_PORT)] }], matchActions: [{ action: "Override", argError: -1 }] }] }] },
  },
];

/** A TCP listener on the pod's loopback that accepts and closes each connection (a python3 process in its namespace). */
async function listen(netns: string): Promise<ChildProcess> {
  const server = `import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(("127.0.0.1", ${LISTEN_PORT}))\ns.listen(4096)\nprint("ready", flush=True)\nwhile True:\n  s.accept()[0].close()`;
  // ip netns exec execs python3 itself: the child's pid is the listener's.
  const child = spawn("ip", ["netns", "exec", netns, "/usr/bin/python3", "-c", server], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`the listener in ${netns} exited (${code}) before it was ready`)));
  });
  return child;
}

/** What a connect from the pod to the forbidden port gets: bash's error message (EPERM when the Override refuses it). */
async function forbiddenConnect(pod: Pod): Promise<string> {
  const r = await run("ip", ["netns", "exec", netnsOf[pod], "/bin/bash", "-c", `: < /dev/tcp/127.0.0.1/${FORBIDDEN_PORT} 2>&1 || true`]).catch((err: { stdout?: string; stderr?: string }) => err);
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim();
}
const listeners: ChildProcess[] = [];

try {
  fixture.addNetns(netnsOf.unselected);
  fixture.addNetns(netnsOf.selected);
  for (const pod of ["unselected", "selected"] as const) listeners.push(await listen(netnsOf[pod]));
  fs.mkdirSync(etc);
  fs.mkdirSync(path.dirname(elsewhere));
  for (const f of [elsewhere, samedir, path.join(etc, "shadow"), path.join(etc, "passwd"), path.join(etc, "secret")]) fs.writeFileSync(f, "x\n");
  const pods = new Map<number, PodRef>([
    [fs.statSync(`/var/run/netns/${netnsOf.unselected}`).ino, { namespace: "other", name: "bench" }],
    [fs.statSync(`/var/run/netns/${netnsOf.selected}`).ino, { namespace: "default", name: "bench" }],
  ]);
  const resolvePod = (ino: number): PodRef | undefined => pods.get(ino);
  for (const pod of ["unselected", "selected"] as const) for (const w of WORKLOADS) await workload(pod, w); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (const variant of r % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const)) {
      if (variant === "off") {
        for (const pod of ["unselected", "selected"] as const) for (const w of WORKLOADS) times.off[pod][w].push(await workload(pod, w, "off"));
        continue;
      }
      let seen = 0;
      const v = new ProcessVisibility({ nodeName: "bench", exportFile: path.join(dir, `events-${r}.log`), registry: new Registry(), scope: `bench-runtime-${process.pid}`, onEvent: () => seen++, resolvePod });
      v.start();
      const log = pino({ level: "warn" });
      const connect = new ConnectEnforcer({ events: v.processes, nodeName: "bench", emit: (e) => v.emit(e), log, pods: () => pods, scope: CONNECT_SCOPE });
      const engine = new RuntimeEnforcement({ nodeName: "bench", events: v.processes, emit: (e) => v.emit(e), log, resolvePod, connect });
      try {
        const status = engine.apply(policies);
        const refused = [...status].filter(([, s]) => !s.enforced);
        if (refused.length > 0) throw new Error(`policies not enforced: ${JSON.stringify(refused)}`);
        if (WITH_POLICIES) {
          // The connect rule is in force where it should be, and only there.
          const [selected, unselected] = [await forbiddenConnect("selected"), await forbiddenConnect("unselected")];
          if (!/not permitted/i.test(selected) || !/refused/i.test(unselected)) throw new Error(`round ${r}: a connect to port ${FORBIDDEN_PORT}: selected pod ${JSON.stringify(selected)} (want EPERM), unselected ${JSON.stringify(unselected)} (want refused)`);
        }
        // Uncounted: the first events name processes the cache does not know yet (the pods' shells and their
        // ancestors, read from /proc once); that start-up work would otherwise land on whichever pod runs first.
        for (const pod of ["unselected", "selected"] as const) await run("ip", ["netns", "exec", netnsOf[pod], "/bin/bash", "-c", "for ((i=0;i<200;i++)); do /bin/true; done"]);
        v.drain();
        const before = engine.fileCounts.allowed + engine.fileCounts.denied;
        let execSeconds = 0;
        for (const pod of ["unselected", "selected"] as const) {
          for (const w of WORKLOADS) {
            // The connect4 program's own cost per run, while this pod connects (any other connect on the machine meanwhile
            // is in it too); the statistics cost every BPF program ~tens of ns while on, so only around these runs.
            const stats = w === "connect" && WITH_POLICIES ? enableRunTimeStats() : undefined;
            const link = path.join(BPFFS_ROOT, CONNECT_SCOPE, "links", "membrane_connect4");
            const before = stats ? pinnedLinkRunStats(link) : undefined;
            const t = await workload(pod, w, "on");
            const after = stats ? pinnedLinkRunStats(link) : undefined;
            stats?.close();
            if (before && after && after.runCount > before.runCount) hookNs[pod].push(Number(after.runTimeNs - before.runTimeNs) / Number(after.runCount - before.runCount));
            times.on[pod][w].push(t);
            if (w === "exec") execSeconds += t;
          }
        }
        v.drain();
        // Every /bin/true is an exec and an exit (plus bash's own): fewer means events were lost.
        if (seen < 4 * EXECS) throw new Error(`round ${r}: ${seen} events for ${2 * EXECS} processes`);
        const checks = engine.fileCounts.allowed + engine.fileCounts.denied - before;
        // Every open of the neighbour in the watched directory, in both pods, was judged: none skipped.
        if (WITH_POLICIES && checks < 2 * OPENS) throw new Error(`round ${r}: ${checks} permission checks for ${2 * OPENS} opens in the watched directory`);
        judged += checks;
        eventsPerSecond.push(seen / execSeconds);
        events += seen;
      } finally {
        engine.stop();
        v.drain();
        lost += v.lost();
        v.stop();
      }
    }
  }
} finally {
  for (const l of listeners) l.kill();
  fixture.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Median over rounds of (time with nothing loaded ÷ time with visibility and the policies): ≥ 0.95 means ≤ 5 % overhead. */
const ratio = (pod: Pod, w: Workload): number => Number(median(times.off[pod][w].map((t, i) => t / times.on[pod][w][i]!)).toFixed(3));
/**
 * The same ratio in CPU time: (workload CPU with nothing loaded) ÷ (workload CPU with everything on + the runtime's CPU
 * meanwhile); the bench process's own CPU with nothing loaded is subtracted from both sides' runtime share (it is the
 * bench waiting on a child, not the runtime).
 */
const cpuRatio = (pod: Pod, w: Workload): number =>
  Number(median(cpu.off[pod][w].map((off, i) => {
    const on = cpu.on[pod][w][i]!;
    return off.workload / (on.workload + Math.max(0, on.runtime - off.runtime));
  })).toFixed(3));
/** Median µs of CPU per exec (workload + runtime) with nothing loaded and with everything on. */
const cpuPerExecUs = (variant: "off" | "on", pod: Pod): number =>
  Math.round(median(cpu[variant][pod].exec.map((c, i) => c.workload + (variant === "on" ? Math.max(0, c.runtime - cpu.off[pod].exec[i]!.runtime) : 0))) / EXECS * 1e6);
const execCpuRatio = cpuRatio("unselected", "exec");
const openCpuRatio = cpuRatio("unselected", "open");
const perSecond = (variant: "off" | "on", pod: Pod, w: Workload): number => Math.round((w === "exec" ? EXECS : w === "connect" ? CONNECTS : OPENS) / median(times[variant][pod][w]));
/** Median µs of the workload's CPU per connect (the shell's: the hook runs in its connect()). */
const cpuPerConnectUs = (variant: "off" | "on", pod: Pod): number => Number((median(cpu[variant][pod].connect.map((c) => c.workload)) / CONNECTS * 1e6).toFixed(2));
console.log(
  JSON.stringify({
    bench: "runtime",
    policies: WITH_POLICIES,
    exec_ratio: ratio("unselected", "exec"),
    open_ratio: ratio("unselected", "open"),
    open_same_dir_ratio: ratio("unselected", "open_same_dir"),
    selected_exec_ratio: ratio("selected", "exec"),
    selected_open_ratio: ratio("selected", "open_same_dir"),
    connect_ratio: ratio("unselected", "connect"),
    selected_connect_ratio: ratio("selected", "connect"),
    exec_cpu_ratio: execCpuRatio,
    open_cpu_ratio: openCpuRatio,
    open_same_dir_cpu_ratio: cpuRatio("unselected", "open_same_dir"),
    selected_exec_cpu_ratio: cpuRatio("selected", "exec"),
    selected_open_cpu_ratio: cpuRatio("selected", "open_same_dir"),
    connect_cpu_ratio: cpuRatio("unselected", "connect"),
    selected_connect_cpu_ratio: cpuRatio("selected", "connect"),
    connect_cpu_us_off: cpuPerConnectUs("off", "unselected"),
    connect_cpu_us_on: cpuPerConnectUs("on", "unselected"),
    selected_connect_cpu_us_on: cpuPerConnectUs("on", "selected"),
    connect_hook_ns: hookNs.unselected.length > 0 ? Math.round(median(hookNs.unselected)) : null,
    selected_connect_hook_ns: hookNs.selected.length > 0 ? Math.round(median(hookNs.selected)) : null,
    exec_cpu_us_off: cpuPerExecUs("off", "unselected"),
    exec_cpu_us_on: cpuPerExecUs("on", "unselected"),
    // The issue's targets on the pod no policy selects, judged in CPU time (see workload()): overhead = 1 / ratio - 1.
    exec_overhead_cpu: Number((1 / execCpuRatio - 1).toFixed(3)),
    open_overhead_cpu: Number((1 / openCpuRatio - 1).toFixed(3)),
    exec_target_met: 1 / execCpuRatio - 1 <= 0.1,
    open_target_met: 1 / openCpuRatio - 1 <= 0.05,
    events_per_s: Math.round(median(eventsPerSecond)),
    execs_per_s_off: perSecond("off", "unselected", "exec"),
    execs_per_s_on: perSecond("on", "unselected", "exec"),
    opens_per_s_off: perSecond("off", "unselected", "open"),
    opens_per_s_on: perSecond("on", "unselected", "open"),
    opens_same_dir_per_s_off: perSecond("off", "unselected", "open_same_dir"),
    opens_same_dir_per_s_on: perSecond("on", "unselected", "open_same_dir"),
    selected_opens_per_s_on: perSecond("on", "selected", "open_same_dir"),
    connects_per_s_off: perSecond("off", "unselected", "connect"),
    connects_per_s_on: perSecond("on", "unselected", "connect"),
    selected_connects_per_s_on: perSecond("on", "selected", "connect"),
    execs_per_round: EXECS,
    opens_per_round: OPENS,
    connects_per_round: CONNECTS,
    rounds: ROUNDS,
    events,
    permission_checks: judged,
    lost: Number(lost),
    load_avg_1m: Number(os.loadavg()[0]!.toFixed(2)),
  }),
);
