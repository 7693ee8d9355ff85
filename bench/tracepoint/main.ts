// bench/tracepoint: what a tracepoint rule's containerSelector costs per event, in the kernel. A sys_enter_openat
// Sigkill policy on a path nobody opens, for a pod by network namespace ("pod") or for one of its containers by cgroup
// v2 id ("container"); a process in the selected container opens /dev/null BENCH_OPENS times, and the program's run
// time (BPF_ENABLE_STATS, on only while measuring) is divided by its runs. "other_container": the same container
// policy, the opens from the pod's other container (the rule's cgroup differs: its arguments are never read).
// "pod_many" and "container_many": the same, on a node that also holds a node's worth of other pods on the same
// tracepoint (110 pods × 3 containers: 330 container rules and 330 pod rules), to show an event reads its caller's
// own rules only (issue #18: before, every event scanned every rule, and a node held 256).
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

type Variant = "pod" | "container" | "other_container" | "pod_many" | "container_many";
const VARIANTS: readonly Variant[] = ["pod", "container", "other_container", "pod_many", "container_many"];
/** The other pods of the *_many variants: rules only (no process runs there), so their network namespaces are made-up inodes; their containers' cgroups are real directories (a container's rule needs its cgroup id). */
const OTHER_PODS = Number(process.env.BENCH_OTHER_PODS ?? 110);
const otherId = (i: number, c: number): string => `${i.toString(16).padStart(4, "0")}${c.toString(16).padStart(4, "0")}`.padEnd(64, "f");
const otherCgroup = (i: number, c: number): string => path.join(CGROUP_DIR, "kubepods", `podother${i}`, otherId(i, c));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const policy = (containerSelector: unknown, name = "bench", podSelector: unknown = { matchLabels: { app: "bench" } }, values = ["/nonexistent/membrane-bench-never-opened"]) => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name, namespace: "default" },
  spec: {
    podSelector,
    ...(containerSelector ? { containerSelector } : {}),
    tracepoints: [{
      subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6, type: "string" }],
      selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values }], matchActions: [{ action: "Sigkill" }] }],
    }],
  },
});
const others = { matchLabels: { app: "other" } };
const otherPolicies = [
  policy(undefined, "other-pods", others, [1, 2, 3].map((k) => `/nonexistent/membrane-bench-other-${k}`)),
  policy({ matchExpressions: [{ key: "name", operator: "In", values: ["c0", "c1", "c2"] }] }, "other-containers", others),
];

const fixture = new NetnsFixture();
const dir = fs.mkdtempSync(path.join("/tmp", "membrane-bench-tp-"));
let engine: InstanceType<typeof RuntimeEnforcement> | undefined;
let visibility: InstanceType<typeof ProcessVisibility> | undefined;
const nsPerRun: Record<Variant, number[]> = { pod: [], container: [], other_container: [], pod_many: [], container_many: [] };
const runsPerOpen: Record<Variant, number[]> = { pod: [], container: [], other_container: [], pod_many: [], container_many: [] };
const loadStart = loadAverage();
try {
  fixture.addNetns(NETNS);
  for (const id of [APP_ID, SIDECAR_ID]) fs.mkdirSync(cgroupOf(id), { recursive: true });
  for (let i = 0; i < OTHER_PODS; i++) for (let c = 0; c < 3; c++) fs.mkdirSync(otherCgroup(i, c), { recursive: true });
  const pods = new Map<number, PodRef>([[fs.statSync(`/var/run/netns/${NETNS}`).ino, {
    namespace: "default", name: "bench", labels: { app: "bench" },
    containers: [{ id: APP_ID, name: "app", image: "busybox:1.36", imageId: "busybox@sha256:11" }, { id: SIDECAR_ID, name: "sidecar", image: "busybox:1.36", imageId: "busybox@sha256:11" }],
  }], ...Array.from({ length: OTHER_PODS }, (_, i): [number, PodRef] => [4_000_000_000 + i, {
    namespace: "default", name: `other-${i}`, labels: { app: "other" },
    containers: [0, 1, 2].map((c) => ({ id: otherId(i, c), name: `c${c}`, image: "busybox:1.36", imageId: "busybox@sha256:11" })),
  }])]);
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
      const statuses = engine.apply([policy(v === "pod" || v === "pod_many" ? undefined : { matchLabels: { name: "app" } }), ...(v.endsWith("_many") ? otherPolicies : [])]);
      for (const [name, status] of statuses) if (!status.enforced) throw new Error(`the ${v} variant's policy ${name} is not enforced: ${JSON.stringify(status)}`);
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
  const others = Array.from({ length: OTHER_PODS }, (_, i) => [0, 1, 2].map((c) => otherCgroup(i, c)).concat(path.dirname(otherCgroup(i, 0)))).flat();
  for (const d of [...others, cgroupOf(APP_ID), cgroupOf(SIDECAR_ID), path.dirname(cgroupOf(APP_ID)), path.join(CGROUP_DIR, "kubepods"), CGROUP_DIR]) {
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
  pod_many_ns_per_event: r(median(nsPerRun.pod_many)),
  container_many_ns_per_event: r(median(nsPerRun.container_many)),
  many_rules: { pod: 3 * OTHER_PODS, container: 3 * OTHER_PODS },
  runs_per_open: Object.fromEntries(VARIANTS.map((v) => [v, Math.round(median(runsPerOpen[v]) * 1000) / 1000])),
  samples_ns: nsPerRun,
  load: [loadStart, loadAverage()],
}));
