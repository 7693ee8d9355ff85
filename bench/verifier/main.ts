// bench/verifier: how close each shipped eBPF program comes to the verifier's limit on this kernel. Every object
// `make -C bpf` builds is loaded as the agent and runtime load it (node-agent/bpf/verifier.ts: BpfObject.load with the
// kernel's BPF_LOG_STATS log), and each program's `processed N insns` is reported with its share of the limit; the
// datapath once more with a small policy map (the agent's --policy-map-max: a hash map, so the count should not move).
// The largest share is the figure to watch (node-agent/bpf/verifier.test.ts guards it). Root; loads eBPF: under flock
// /tmp/membrane-kernel.lock on a shared machine. ~5 s idle.
import fs from "node:fs";
import os from "node:os";

process.env.LOG_LEVEL ??= "warn";
const { measureObject, measureShippedObjects, shippedObjects } = await import("../../node-agent/bpf/verifier.ts");

const loadAverage = (): number => Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
const loadStart = loadAverage();
const pinRoot = `/sys/fs/bpf/membrane-bench-verifier-${process.pid}`;
const started = Date.now();
const objects = measureShippedObjects(pinRoot);

const RESIZED_POLICY_MAP = 1024;
fs.mkdirSync(pinRoot, { recursive: true });
let resized;
try {
  resized = measureObject(shippedObjects().find((o) => o.name === "datapath")!.path, { pinRoot, scope: "datapath-resized", maxEntries: { membrane_policy: RESIZED_POLICY_MAP } });
} finally {
  fs.rmSync(pinRoot, { recursive: true, force: true });
}
const seconds = (Date.now() - started) / 1000;

const errors = [...objects, resized].filter((o) => o.error).map((o) => `${o.object}: ${o.error}`);
const programs: Record<string, { processed: number | null; share: number | null; peak_states: number | null; verification_ms: number | null }> = {};
let tightest = { program: "", share: 0 };
for (const o of objects) {
  for (const p of o.programs) {
    const name = `${o.object}/${p.program}`;
    const share = p.stats ? p.stats.processed / p.stats.limit : null;
    programs[name] = {
      processed: p.stats?.processed ?? null,
      share: share === null ? null : Math.round(share * 10000) / 10000,
      peak_states: p.stats?.peakStates ?? null,
      verification_ms: p.stats?.verificationUs === undefined ? null : Math.round(p.stats.verificationUs / 100) / 10,
    };
    if (share !== null && share > tightest.share) tightest = { program: name, share };
  }
}
const dpDefault = new Map(objects.find((o) => o.object === "datapath")?.programs.map((p) => [p.program, p.stats?.processed]) ?? []);
const resizedDiffers = resized.programs.filter((p) => p.stats?.processed !== dpDefault.get(p.program)).map((p) => p.program);

console.log(JSON.stringify({
  bench: "verifier",
  kernel: os.release(),
  limit: objects.flatMap((o) => o.programs).find((p) => p.stats)?.stats?.limit ?? null,
  programs,
  max_share: Math.round(tightest.share * 10000) / 10000,
  tightest: tightest.program,
  over_half: Object.entries(programs).filter(([, p]) => (p.share ?? 0) > 0.5).map(([name]) => name),
  policy_map_resized: { max_entries: RESIZED_POLICY_MAP, programs_whose_count_differs: resizedDiffers },
  errors,
  seconds: Math.round(seconds * 10) / 10,
  load: [loadStart, loadAverage()],
}));
if (errors.length) process.exitCode = 1;
