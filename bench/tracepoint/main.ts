// bench/tracepoint: what a tracepoint rule's containerSelector costs per event, in the kernel. A sys_enter_openat
// Sigkill policy on a path nobody opens, for a pod by network namespace ("pod") or for one of its containers by cgroup
// v2 id ("container"); a process in the selected container opens /dev/null BENCH_OPENS times, and the program's run
// time (BPF_ENABLE_STATS, on only while measuring) is divided by its runs. "other_container": the same container
// policy, the opens from the pod's other container (the rule's cgroup differs: its arguments are never read).
// Rounds interleaved, order rotated, medians. The program runs on every openat of the machine while attached, so the
// runs include other processes' opens (reported: runs vs opens).
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

process.env.LOG_LEVEL ??= "warn";
const { NetnsFixture } = await import("../../node-agent/bpf/netns.ts");
const { enableRunTimeStats, programRunStats } = await import("../../node-agent/bpf/loader.ts");
const { CGROUP2_ROOT } = await import("../../node-agent/runtime/connect-enforcer.ts");
const { ContainerCgroups } = await import("../../node-agent/runtime/containers.ts");
const { RuntimeEnforcement } = await import("../../node-agent/runtime/enforcement.ts");
const { TracepointEnforcer } = await import("../../node-agent/runtime/tracepoint-enforcer.ts");
const { ProcessVisibility } = await import("../../node-agent/runtime/visibility.ts");
const { Registry } = await import("prom-client");
const { pino } = await import("pino");
type PodRef = import("../../node-agent/runtime/events.ts").PodRef;

const run = promisify(execFile);
const OPENS = Number(process.env.BENCH_OPENS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const NETNS = `bench-tp-${process.pid}`;
const SCOPE = `bench-tp-${process.pid}`;
const CGROUP_DIR = path.join(CGROUP2_ROOT, `membrane-bench-tp-${process.pid}`);
const APP_ID = "c1".repeat(32);
const SIDECAR_ID = "d2".repeat(32);
const cgroupOf = (id: string): string => path.join(CGROUP_DIR, "kubepods", "podbench", id);

type Variant = "pod" | "container" | "other_container";
const VARIANTS: readonly Variant[] = ["pod", "container", "other_container"];
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const policy = (containerSelector: unknown) => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name: "bench", namespace: "default" },
  spec: {
    ...(containerSelector ? { containerSelector } : {}),
    tracepoints: [{
      subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6, type: "string" }],
      selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: ["/nonexistent/membrane-bench-never-opened"] }], matchActions: [{ action: "Sigkill" }] }],
    }],
  },
});

const fixture = new NetnsFixture();
const dir = fs.mkdtempSync(path.join("/tmp", "membrane-bench-tp-"));
let engine: InstanceType<typeof RuntimeEnforcement> | undefined;
let visibility: InstanceType<typeof ProcessVisibility> | undefined;
const nsPerRun: Record<Variant, number[]> = { pod: [], container: [], other_container: [] };
const runsPerOpen: Record<Variant, number[]> = { pod: [], container: [], other_container: [] };
const loadStart = loadAverage();
try {
  fixture.addNetns(NETNS);
  for (const id of [APP_ID, SIDECAR_ID]) fs.mkdirSync(cgroupOf(id), { recursive: true });
  const pods = new Map<number, PodRef>([[fs.statSync(`/var/run/netns/${NETNS}`).ino, {
    namespace: "default", name: "bench", labels: { app: "bench" },
    containers: [{ id: APP_ID, name: "app", image: "busybox:1.36", imageId: "busybox@sha256:11" }, { id: SIDECAR_ID, name: "sidecar", image: "busybox:1.36", imageId: "busybox@sha256:11" }],
  }]]);
  const containers = new ContainerCgroups();
  const log = pino({ level: "silent" });
  visibility = new ProcessVisibility({ nodeName: "bench", exportFile: path.join(dir, "events.jsonl"), registry: new Registry(), resolvePod: (ino) => pods.get(ino), containers, scope: `${SCOPE}-proc` });
  visibility.start();
  const tracepoints = new TracepointEnforcer({ events: visibility.processes, nodeName: "bench", emit: () => {}, log, pods: () => pods, containers, scope: SCOPE });
  engine = new RuntimeEnforcement({ nodeName: "bench", events: visibility.processes, emit: () => {}, log, containers, pods: () => pods, tracepoints });
  const script = `import os\nfor _ in range(${OPENS}):\n  os.close(os.open("/dev/null", os.O_RDONLY))`;
  for (let round = 0; round < ROUNDS; round++) {
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]!);
    for (const v of order) {
      const status = engine.apply([policy(v === "pod" ? undefined : { matchLabels: { name: "app" } })]).get("default/bench");
      if (!status?.enforced) throw new Error(`the ${v} policy is not enforced: ${JSON.stringify(status)}`);
      const fd = tracepoints.programFd!;
      const stats = enableRunTimeStats();
      try {
        const before = programRunStats(fd);
        const cg = cgroupOf(v === "other_container" ? SIDECAR_ID : APP_ID);
        await run("sh", ["-c", `echo $$ > ${cg}/cgroup.procs && exec ip netns exec ${NETNS} /usr/bin/python3 -c "$0"`, script]);
        const after = programRunStats(fd);
        const runs = Number(after.runCount - before.runCount);
        nsPerRun[v].push(Number(after.runTimeNs - before.runTimeNs) / runs);
        runsPerOpen[v].push(runs / OPENS);
      } finally {
        stats.close();
      }
    }
  }
} finally {
  engine?.stop();
  visibility?.stop();
  fixture.cleanup();
  for (const d of [cgroupOf(APP_ID), cgroupOf(SIDECAR_ID), path.dirname(cgroupOf(APP_ID)), path.join(CGROUP_DIR, "kubepods"), CGROUP_DIR]) {
    try {
      fs.rmdirSync(d);
    } catch (err) {
      console.error(`cgroup ${d} not removed: ${String(err)}`);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

function loadAverage(): number {
  return Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
}

const r = (x: number): number => Math.round(x * 10) / 10;
console.log(JSON.stringify({
  bench: "tracepoint",
  opens: OPENS,
  rounds: ROUNDS,
  pod_ns_per_event: r(median(nsPerRun.pod)),
  container_ns_per_event: r(median(nsPerRun.container)),
  other_container_ns_per_event: r(median(nsPerRun.other_container)),
  container_extra_ns: r(median(nsPerRun.container) - median(nsPerRun.pod)),
  runs_per_open: { pod: r(median(runsPerOpen.pod) * 100) / 100, container: r(median(runsPerOpen.container) * 100) / 100, other_container: r(median(runsPerOpen.other_container) * 100) / 100 },
  samples_ns: nsPerRun,
  load: [loadStart, loadAverage()],
}));
