// Benchmark: a simulated cluster at scale (default 1,000 nodes as light stream clients, 50,000 pods, 5,000 identities, 2,000 policies) against a real kube-apiserver and the operator as a child process; one real agent process with its node's share; identity GC of idle identities across an operator restart. Prints one JSON line.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { cleanupStack } from "../lib/cleanup.ts";
import { controlPlanePaths, startControlPlane } from "../../localcluster/cluster.ts";
import { ensureDatapathObject } from "../../localcluster/prerequisites.ts";
import { OPERATOR_BUNDLE as OPERATOR_BUNDLE_FILE, OperatorProcess } from "../../controllers/testing/operator-process.ts";
import { IDENTITY_ANNOTATION, IDENTITY_NUMBER_LABEL, securityLabelsMap } from "../../kube/objects.ts";
import { securityLabels } from "../../core/labels.ts";
import { BPFFS_ROOT } from "../../node-agent/bpf/loader.ts";
import { AGENT_NODE_OPTIONS } from "../../node-agent/flags.ts";
import { sslCredentials } from "../../kube/grpc-tls.ts";
import { flagError } from "../../kube/flags.ts";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import type { NodeState } from "../../core/wire.ts";
import { makeBenchPki } from "../realize/pki.ts";
import { Api, Hub, LiteAgent, PrefixIndex, heapMib, limited, liveHeapMib, percentile, procStats } from "../lib/sim.ts";
import { scalePolicies, type ScaleShape } from "./cluster.ts";

const log = pino({ name: "bench-scale" }, pino.destination({ fd: 2, sync: true }));
const CRD_DIR = fileURLToPath(new URL("../../crds/generated/", import.meta.url));
const MEMBRANE = fileURLToPath(new URL("../../bin/membrane", import.meta.url));
const BUNDLE = fileURLToPath(new URL("../../dist/membrane.mjs", import.meta.url));
const CHANGE_POLICY = { namespace: "ns-0", name: "bench-change" };
const CHANGE_KEY = `CiliumNetworkPolicy/${CHANGE_POLICY.namespace}/${CHANGE_POLICY.name}`;
/** Run the operator as shipped (the bundle, dist/membrane.mjs; `make build`) instead of through tsx as in a checkout (`make bench-scale` sets it). */
const OPERATOR_BUNDLE = process.env.BENCH_OPERATOR_BUNDLE === "1";
/** Where the first operator writes a V8 CPU profile (on its graceful stop, before the GC phase); none when unset. */
const PROFILE_DIR = process.env.BENCH_OPERATOR_CPU_PROF;

interface Flags extends ScaleShape {
  readonly idleIdentities: number;
  readonly changes: number;
  readonly concurrency: number;
  readonly steadySeconds: number;
  readonly realAgent: boolean;
  /** The real agent as shipped (the bundle), then through tsx; false: through tsx only (no `make build` needed). */
  readonly agentBundle: boolean;
  readonly kernelLock: string;
  /** Only the identity GC: pods get their identities, then idle identities are collected across an operator restart (no agents, policies or changes). */
  readonly gcOnly: boolean;
  /** The idle identities carry their number label, as the operator creates them (false: as older operators did, deleted one by one). */
  readonly idleLabelled: boolean;
  /** kube-apiserver --delete-collection-workers (undefined: its default, 1). */
  readonly deleteCollectionWorkers: number | undefined;
  /** Only what the real agent needs: node 0's one light agent follows the cluster as it fills, then the real agent replaces it (no steady state, changes or GC). */
  readonly agentOnly: boolean;
  /** A recorded node state (an agent's applied.json, BENCH_AGENT_RECORD) that the operator's distribution server streams to the real agent, instead of a cluster. */
  readonly agentReplay: string | undefined;
}

/** Parses the flags; a bad value names its flag. */
export function parseScaleFlags(args: readonly string[]): { ok: true; flags: Flags } | { ok: false; error: string } {
  let v: Record<string, string | undefined>;
  try {
    v = parseArgs({
      args: [...args],
      options: Object.fromEntries(
        ["nodes", "pods", "identities", "policies", "namespaces", "idle-identities", "changes", "concurrency", "steady-seconds", "real-agent", "kernel-lock", "gc-only", "agent-bundle", "idle-labelled", "delete-collection-workers", "agent-only", "agent-replay"].map((k) => [k, { type: "string" as const }]),
      ),
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | undefined>;
  } catch (e) {
    return { ok: false, error: flagError(e) };
  }
  const ints: Record<string, number> = {};
  const defaults: Record<string, number> = { nodes: 1000, pods: 50_000, identities: 5000, policies: 2000, namespaces: 50, "idle-identities": 60_000, changes: 30, concurrency: 32, "steady-seconds": 30 };
  for (const [k, d] of Object.entries(defaults)) {
    const raw = v[k];
    const n = raw === undefined ? d : Number(raw);
    const min = k === "idle-identities" || k === "changes" ? 0 : 1;
    if (!Number.isInteger(n) || n < min) return { ok: false, error: `--${k}: "${raw}" is not an integer ≥ ${min}` };
    ints[k] = n;
  }
  const shape = { nodes: ints.nodes!, pods: ints.pods!, identities: ints.identities!, policies: ints.policies!, namespaces: ints.namespaces! };
  if (shape.pods < shape.nodes) return { ok: false, error: `--pods: ${shape.pods} is fewer than --nodes ${shape.nodes} (every node hosts pods)` };
  if (shape.identities > shape.pods) return { ok: false, error: `--identities: ${shape.identities} is more than --pods ${shape.pods} (every identity has a pod)` };
  if (shape.namespaces > shape.identities) return { ok: false, error: `--namespaces: ${shape.namespaces} is more than --identities ${shape.identities}` };
  // Cluster identities are 256…65535: the ones in use (allocated from 256 up) and the idle ones (from 65535 down) must not meet.
  if (shape.identities + ints["idle-identities"]! + 256 > 65_535) return { ok: false, error: `--idle-identities: ${ints["idle-identities"]} with --identities ${shape.identities} leaves no room in 256…65535` };
  const realAgent = v["real-agent"] ?? "true";
  if (realAgent !== "true" && realAgent !== "false") return { ok: false, error: `--real-agent: "${realAgent}" is not true or false` };
  const agentBundle = v["agent-bundle"] ?? "true";
  if (agentBundle !== "true" && agentBundle !== "false") return { ok: false, error: `--agent-bundle: "${agentBundle}" is not true or false` };
  const gcOnly = v["gc-only"] ?? "false";
  if (gcOnly !== "true" && gcOnly !== "false") return { ok: false, error: `--gc-only: "${gcOnly}" is not true or false` };
  const idleLabelled = v["idle-labelled"] ?? "true";
  if (idleLabelled !== "true" && idleLabelled !== "false") return { ok: false, error: `--idle-labelled: "${idleLabelled}" is not true or false` };
  const agentOnly = v["agent-only"] ?? "false";
  if (agentOnly !== "true" && agentOnly !== "false") return { ok: false, error: `--agent-only: "${agentOnly}" is not true or false` };
  if (agentOnly === "true" && (gcOnly === "true" || realAgent === "false")) return { ok: false, error: "--agent-only: measures the real agent, so neither --gc-only true nor --real-agent false goes with it" };
  const dcw = v["delete-collection-workers"] === undefined ? undefined : Number(v["delete-collection-workers"]);
  if (dcw !== undefined && (!Number.isInteger(dcw) || dcw < 1)) return { ok: false, error: `--delete-collection-workers: "${v["delete-collection-workers"]}" is not an integer ≥ 1` };
  return {
    ok: true,
    flags: {
      ...shape,
      idleIdentities: ints["idle-identities"]!,
      changes: ints.changes!,
      concurrency: ints.concurrency!,
      steadySeconds: ints["steady-seconds"]!,
      realAgent: realAgent === "true",
      kernelLock: v["kernel-lock"] ?? "/tmp/membrane-kernel.lock",
      gcOnly: gcOnly === "true",
      agentBundle: agentBundle === "true",
      idleLabelled: idleLabelled === "true",
      deleteCollectionWorkers: dcw,
      agentOnly: agentOnly === "true",
      agentReplay: v["agent-replay"],
    },
  };
}

const nodeName = (i: number): string => `scale-node-${i}`;
const nodeIP = (i: number): string => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const podIP = (c: number): string => `172.${16 + ((c >> 16) & 15)}.${(c >> 8) & 255}.${c & 255}`;
const round = (x: number, digits = 1): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** Where pod `p` goes: its namespace and app label (together its identity) and node; consecutive pods are on one node, each with another identity. */
function podPlace(s: ScaleShape, p: number): { ns: string; app: string; node: string } {
  const i = p % s.identities;
  return { ns: `ns-${i % s.namespaces}`, app: `app-${Math.floor(i / s.namespaces)}`, node: nodeName(Math.floor((p * s.nodes) / s.pods)) };
}

async function createPod(api: Api, name: string, place: { ns: string; app: string; node: string }, ip: string): Promise<void> {
  await api.call("POST", `/api/v1/namespaces/${place.ns}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { app: place.app } },
    spec: { nodeName: place.node, automountServiceAccountToken: false, containers: [{ name: "c", image: "example.invalid/none" }] },
  });
  await api.call("PATCH", `/api/v1/namespaces/${place.ns}/pods/${name}/status`, { status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } }, "application/merge-patch+json");
}

let changePort = 1000;
/** A server-side apply of the measured CNP with a new port; returns its new generation. */
async function applyChangePolicy(api: Api): Promise<number> {
  const obj = await api.call(
    "PATCH",
    `/apis/cilium.io/v2/namespaces/${CHANGE_POLICY.namespace}/ciliumnetworkpolicies/${CHANGE_POLICY.name}?fieldManager=bench&force=true`,
    {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: CHANGE_POLICY,
      spec: { endpointSelector: { matchLabels: { app: "app-0" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "app-1" } }], toPorts: [{ ports: [{ port: String(++changePort), protocol: "TCP" }] }] }] },
    },
    "application/apply-patch+yaml",
  );
  return Number((obj.metadata as { generation?: number }).generation);
}

/** The API server's request counters (not WATCH: a watch is counted once when it starts), summed per "VERB resource". */
async function apiRequests(api: Api): Promise<Map<string, number>> {
  const text = await api.text("GET", "/metrics");
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("apiserver_request_total{")) continue;
    const verb = /verb="([^"]*)"/.exec(line)?.[1] ?? "";
    const resource = /[{,]resource="([^"]*)"/.exec(line)?.[1] ?? "";
    const sub = /subresource="([^"]*)"/.exec(line)?.[1] ?? "";
    if (verb === "WATCH" || resource === "") continue;
    const k = `${verb} ${resource}${sub ? `/${sub}` : ""}`;
    out.set(k, (out.get(k) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return out;
}

/** How many reconciles the operator's `controller` has finished (its /metrics, every result). */
async function reconcileCount(op: OperatorProcess, controller: string): Promise<number> {
  const port = await op.healthPort();
  const body = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.text());
  let n = 0;
  for (const line of body.split("\n")) if (line.startsWith("membrane_operator_reconcile_total{") && line.includes(`controller="${controller}"`)) n += Number(line.slice(line.lastIndexOf(" ") + 1));
  return n;
}

/** The number of CiliumIdentity objects (one list call of one item: the API server counts the rest). */
async function identityCount(api: Api): Promise<number> {
  const l = await api.call("GET", "/apis/cilium.io/v2/ciliumidentities?limit=1");
  const meta = l.metadata as { remainingItemCount?: number };
  return (l.items as unknown[]).length + (meta.remainingItemCount ?? 0);
}

/** Every pod's identity annotation (pod name → identity number). */
async function podIdentities(api: Api): Promise<Map<string, string>> {
  const l = await api.call("GET", "/api/v1/pods");
  const out = new Map<string, string>();
  for (const p of l.items as { metadata: { namespace: string; name: string; annotations?: Record<string, string> } }[]) {
    const n = p.metadata.annotations?.[IDENTITY_ANNOTATION];
    if (n !== undefined) out.set(`${p.metadata.namespace}/${p.metadata.name}`, n);
  }
  return out;
}

/** The names (numbers) of every CiliumIdentity. */
async function identityNames(api: Api): Promise<Set<string>> {
  const l = await api.call("GET", "/apis/cilium.io/v2/ciliumidentities");
  return new Set((l.items as { metadata: { name: string } }[]).map((o) => o.metadata.name));
}

/** Holds the kernel lock (flock(1) around a process that waits on its stdin) until release() closes that stdin. */
async function holdLock(path: string): Promise<{ release: () => Promise<void> }> {
  const child = spawn("flock", [path, "sh", "-c", "echo locked; exec cat >/dev/null"], { stdio: ["pipe", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`flock ${path} exited with ${code}`)));
    child.stdout.once("data", () => resolve());
  });
  child.removeAllListeners("exit");
  return {
    release: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.stdin.end();
      }),
  };
}

/** One `membrane agent` process; resolves its metrics port once it logs it. */
class RealAgent {
  readonly child: ChildProcess;
  private lines = "";
  readonly started = performance.now();
  /** When the agent wrote its first output (its first log line: Node has started and loaded the agent's code). */
  firstOutputAt: number | undefined;
  private port: number | undefined;
  /** `command`: how to run `membrane` (bin/membrane, or node with a bundle). */
  constructor(command: readonly string[], args: string[], env: Record<string, string>) {
    this.child = spawn(command[0]!, [...command.slice(1), "agent", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    const take = (d: Buffer): void => {
      this.firstOutputAt ??= performance.now();
      this.lines = (this.lines + d.toString()).slice(-200_000);
    };
    this.child.stdout?.on("data", take);
    this.child.stderr?.on("data", take);
  }
  /** Polls /readyz (ready once connected with a state applied); the time from spawn to the first 200. */
  async ready(timeoutMs: number): Promise<number> {
    const end = performance.now() + timeoutMs;
    let port: number | undefined;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`agent exited with ${this.child.exitCode}: ${this.lines.slice(-2000)}`);
      if (performance.now() > end) throw new Error(`agent not ready after ${timeoutMs} ms: ${this.lines.slice(-2000)}`);
      port ??= Number(/"msg":"metrics serving"[^\n]*"address":"127\.0\.0\.1:(\d+)"|"address":"127\.0\.0\.1:(\d+)"[^\n]*"msg":"metrics serving"/.exec(this.lines)?.slice(1).find((x) => x) ?? NaN) || undefined;
      if (port !== undefined) {
        const ok = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
        if (ok) {
          this.port = port;
          return performance.now() - this.started;
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  /** What the agent wrote on stdout and stderr (the last 200 KB). */
  get output(): string {
    return this.lines;
  }
  /** Its log lines with this message (JSON lines; anything else is skipped). */
  logLines(msg: string): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.lines.split("\n")) {
      if (!line.includes(`"msg":"${msg}"`)) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by the 200 KB window
      }
    }
    return out;
  }
  /** The agent's ipcache entries as its /metrics counts them (null when it does not say). */
  async ipcacheEntries(): Promise<number | null> {
    const body = await fetch(`http://127.0.0.1:${this.port}/metrics`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text(), () => "");
    const m = /^membrane_agent_ipcache_entries(?:\{[^}]*\})? (\S+)/m.exec(body);
    return m ? Number(m[1]) : null;
  }
  stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const force = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
      this.child.once("exit", () => {
        clearTimeout(force);
        resolve();
      });
      this.child.kill("SIGTERM");
    });
  }
}

/** What realAgentFigures needs: the operator's (or a replay's) stream address, the bench's PKI files in `dir`. */
interface RealAgentRun {
  readonly address: string;
  readonly node: string;
  readonly dir: string;
  readonly pki: Awaited<ReturnType<typeof makeBenchPki>>;
  readonly kernelLock: string;
  readonly agentBundle: boolean;
  readonly cleanups: (() => unknown)[];
  readonly out: Record<string, unknown>;
}

/**
 * One real `membrane agent` for `node` against `address`: time to /readyz, RSS and its ipcache, on a first start and on
 * restarts, as shipped (the bundle), BENCH_AGENT_BUNDLE_BEFORE's bundle beside it, and through tsx; the figures go into `out`.
 */
async function realAgentFigures(r: RealAgentRun): Promise<void> {
  const { address, node, dir, pki, cleanups, out } = r;
  const f = { kernelLock: r.kernelLock, agentBundle: r.agentBundle };
  await ensureDatapathObject();
  if (f.agentBundle && !existsSync(BUNDLE)) throw new Error(`${BUNDLE} does not exist: run make build (make bench-scale does)`);
  writeFileSync(join(dir, `${node}.crt`), await pki.clientCert(node));
  const args = (scope: string, state: string): string[] => [
    "--node-name", node, "--operator", address, "--tls-cert", join(dir, `${node}.crt`), "--tls-key", join(dir, "client.key"), "--tls-ca", join(dir, "ca.crt"),
    "--bpf-scope", scope, "--state-dir", state, "--cni-socket", join(state, "agent.sock"),
    "--hubble-socket", join(state, "hubble.sock"), "--metrics-address", "127.0.0.1:0", "--log-level", "info",
  ];
  // The agent pins maps in bpffs, which kernel tests share: hold their lock meanwhile ("none": the caller holds it, e.g. a test run under flock).
  const lock = f.kernelLock === "none" ? { release: async () => undefined } : await holdLock(f.kernelLock);
  cleanups.push(() => lock.release());
  // BENCH_AGENT_CPU_PROF=DIR: V8 CPU profiles of the restarts (written when each stops). Not of first starts: the profiler's signal
  // interrupts the kernel verifier there (EAGAIN); a restart reuses the verified programs. BENCH_AGENT_RESNAPSHOT=1 makes each
  // restart apply the whole snapshot again (its applied.json removed), which profiles the snapshot path without the verifier.
  const prof = process.env.BENCH_AGENT_CPU_PROF ? `--cpu-prof --cpu-prof-dir ${process.env.BENCH_AGENT_CPU_PROF}` : "";
  const resnapshot = process.env.BENCH_AGENT_RESNAPSHOT === "1";
  // As shipped (the bundle, dist/membrane.mjs), BENCH_AGENT_BUNDLE_BEFORE's bundle beside it (another tree's dist/membrane.mjs: before/after
  // in one run), then through tsx as `bin/membrane` runs in a checkout (--agent-bundle false: tsx only). Each has its own pins and state.
  const before = process.env.BENCH_AGENT_BUNDLE_BEFORE;
  // This tree's agent runs with the Node options the chart gives it (AGENT_NODE_OPTIONS); BENCH_AGENT_BUNDLE_BEFORE's with none,
  // as trees before them shipped. BENCH_AGENT_TSX=0 leaves the tsx variant out.
  const modes: { prefix: string; command: string[]; env: Record<string, string> }[] = f.agentBundle
    ? [
        { prefix: "", command: [MEMBRANE], env: { MEMBRANE_BUNDLE: "1", NODE_OPTIONS: AGENT_NODE_OPTIONS } },
        ...(before ? [{ prefix: "before_", command: [process.execPath, before], env: { NODE_OPTIONS: "" } }] : []),
        ...(process.env.BENCH_AGENT_TSX === "0" ? [] : [{ prefix: "tsx_", command: [MEMBRANE], env: { MEMBRANE_BUNDLE: "", NODE_OPTIONS: AGENT_NODE_OPTIONS } }]),
      ]
    : [{ prefix: "", command: [MEMBRANE], env: { MEMBRANE_BUNDLE: "", NODE_OPTIONS: AGENT_NODE_OPTIONS } }];
  const restarts = Number(process.env.BENCH_AGENT_RESTARTS ?? 3);
  const runs = modes.map((m, k) => {
    const scope = `bench-scale-${process.pid}-${k}`;
    const state = join(dir, `agent-${k}`);
    mkdirSync(state, { recursive: true });
    // What Datapath.unpin removes: the scope's pins (nothing of it is attached: the agent has no endpoints).
    cleanups.push(() => rmSync(join(BPFFS_ROOT, scope), { recursive: true, force: true }));
    return { ...m, state, args: args(scope, state), ready: [] as number[], fromLog: [] as number[], reused: 0, rss: [] as number[], peak: [] as number[] };
  });
  let agent: RealAgent | undefined;
  cleanups.push(() => agent?.stop());
  let started = 0;
  /**
   * One start of `run`'s agent: time to /readyz from spawn and from its first log line, how long its first state took from the
   * stream's connection to applied, whether it reused the pinned programs; then its RSS once a delta after the snapshot and a GC
   * had time (5 s).
   */
  const start = async (run: (typeof runs)[number], restart: boolean): Promise<{ readyS: number; fromLogS: number; applyS: number | null; reused: boolean; rssMib: number; peakMib: number; ipcache: number | null }> => {
    if (restart && resnapshot) rmSync(join(run.state, "applied.json"), { force: true });
    agent = new RealAgent(run.command, run.args, { ...run.env, ...(restart && prof ? { NODE_OPTIONS: `${run.env.NODE_OPTIONS ?? ""} ${prof}`.trim() } : {}) });
    const readyMs = await agent.ready(300_000);
    const readyS = round(readyMs / 1000, 2);
    const fromLogS = round((agent.started + readyMs - (agent.firstOutputAt ?? agent.started)) / 1000, 2);
    await new Promise((r) => setTimeout(r, 5000));
    const st = procStats(agent.child.pid!);
    const ipcache = await agent.ipcacheEntries();
    await agent.stop();
    const connected = agent.logLines("operator stream connected")[0]?.time;
    const applied = agent.logLines("state applied")[0]?.time;
    const applyS = typeof connected === "number" && typeof applied === "number" ? round((applied - connected) / 1000, 2) : null;
    const reused = agent.logLines("bpf programs reused: same object and settings as the pinned ones, not verified again").length > 0;
    // BENCH_AGENT_LOG_DIR=DIR: each start's log lines (the last 200 KB), to see where its time to ready went.
    if (process.env.BENCH_AGENT_LOG_DIR) writeFileSync(join(process.env.BENCH_AGENT_LOG_DIR, `agent-${run.prefix || "bundle_"}${++started}.log`), agent.output);
    return { readyS, fromLogS, applyS, reused, rssMib: st.rssMib, peakMib: st.hwmMib, ipcache };
  };
  // Each variant's first start (it creates the pinned maps), then its restarts, before the next variant: the operator resumes
  // an agent only from the version it last acknowledged, so variants interleaved on one node would each get a snapshot.
  for (const run of runs) {
    const first = await start(run, false);
    out[`agent_${run.prefix}first_ready_s`] = first.readyS;
    out[`agent_${run.prefix}first_ready_from_log_s`] = first.fromLogS;
    out[`agent_${run.prefix}first_apply_s`] = first.applyS;
    out[`agent_${run.prefix}rss_first_mib`] = Math.round(first.rssMib);
    out[`agent_${run.prefix}peak_rss_first_mib`] = Math.round(first.peakMib);
    out[`agent_${run.prefix}ipcache_entries`] = first.ipcache;
    run.rss.push(first.rssMib);
    log.info({ agent: run.prefix || "bundle", ...first }, "real agent first start");
    for (let i = 0; i < restarts; i++) {
      const s = await start(run, true);
      run.ready.push(s.readyS);
      run.fromLog.push(s.fromLogS);
      if (s.reused) run.reused++;
      run.rss.push(s.rssMib);
      run.peak.push(s.peakMib);
      log.info({ agent: run.prefix || "bundle", restart: i, ...s }, "real agent restart");
    }
  }
  // BENCH_AGENT_RECORD=FILE: the state the first variant's agent acknowledged (its applied.json), for --agent-replay.
  if (process.env.BENCH_AGENT_RECORD) writeFileSync(process.env.BENCH_AGENT_RECORD, readFileSync(join(dir, "agent-0", "applied.json")));
  const median = (xs: readonly number[]): number => round([...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN, 2);
  for (const run of runs) {
    out[`agent_${run.prefix}ready_s`] = median(run.ready);
    out[`agent_${run.prefix}ready_all_s`] = run.ready;
    out[`agent_${run.prefix}ready_from_log_s`] = median(run.fromLog);
    out[`agent_${run.prefix}ready_from_log_all_s`] = run.fromLog;
    out[`agent_${run.prefix}restarts_reused`] = run.reused;
    out[`agent_${run.prefix}rss_mib`] = Math.round(Math.max(...run.rss));
    out[`agent_${run.prefix}peak_rss_mib`] = Math.round(Math.max(...run.peak));
  }
  await lock.release();
}

async function main(): Promise<void> {
  const parsed = parseScaleFlags(process.argv.slice(2));
  if (!parsed.ok) {
    process.stderr.write(`bench/scale: ${parsed.error}\n`);
    process.exit(2);
  }
  const f = parsed.flags;
  const started = Date.now();
  const { cleanups, cleanup } = cleanupStack(log);
  const out: Record<string, unknown> = { bench: "scale" };
  const loads: number[] = [];
  const sampleLoad = (): void => void loads.push(loadavg()[0] ?? 0);
  const loadTimer = setInterval(sampleLoad, 5000);
  sampleLoad();
  try {
    if (f.agentReplay !== undefined) await replay(f, f.agentReplay, cleanups, out);
    else await cluster(f, cleanups, out);
  } catch (e) {
    log.error({ err: e instanceof Error ? e.message : String(e) }, "benchmark failed");
    out.error = e instanceof Error ? e.message : String(e);
    process.exitCode = 1;
  } finally {
    clearInterval(loadTimer);
    sampleLoad();
    await cleanup();
  }
  process.stdout.write(
    JSON.stringify({
      ...out,
      operator: OPERATOR_BUNDLE ? "bundle" : "tsx",
      agent_runs: f.realAgent ? (f.agentBundle ? `bundle (agent_*)${process.env.BENCH_AGENT_BUNDLE_BEFORE ? `, ${process.env.BENCH_AGENT_BUNDLE_BEFORE} (agent_before_*)` : ""}${process.env.BENCH_AGENT_TSX === "0" ? "" : ", tsx (agent_tsx_*)"}` : "tsx") : null,
      ...(f.agentReplay ? { agent_replay: f.agentReplay } : {}),
      shape: { nodes: f.nodes, pods: f.pods, identities: f.identities, policies: f.policies, namespaces: f.namespaces, idle_identities: f.idleIdentities, changes: f.changes },
      load_avg_1m: { min: round(Math.min(...loads)), max: round(Math.max(...loads)), mean: round(loads.reduce((a, b) => a + b, 0) / loads.length) },
      total_s: round((Date.now() - started) / 1000),
      method:
        "policy: server-side apply of one CNP (new port) until every agent ACKed that generation; pod: POST + status PATCH until its /32 is in every agent's ipcache; steady state: API server request counters (not WATCH) and operator CPU over the window; agent: spawn → /readyz (median of the restarts), RSS 5 s after ready; replay: the operator's distribution server streams a recorded node state; GC: idle CiliumIdentities created with the operator down, time from its restart until they are gone",
    }) + "\n",
  );
}

/** --agent-replay: the operator's distribution server (the same class, in this process) holds the recorded state for node 0's real agent; no cluster. */
async function replay(f: Flags, file: string, cleanups: (() => unknown)[], out: Record<string, unknown>): Promise<void> {
  const raw = JSON.parse(readFileSync(file, "utf8")) as { state?: NodeState };
  if (!raw.state || !Array.isArray(raw.state.ipcache)) throw new Error(`${file}: not an agent's applied.json (no state.ipcache)`);
  out.replay_ipcache = raw.state.ipcache.length;
  out.replay_subjects = raw.state.policies.length;
  out.replay_entries = raw.state.policies.reduce((n, p) => n + p.entries.length, 0);
  const pki = await makeBenchPki();
  const dir = mkdtempSync(join(tmpdir(), "membrane-bench-scale-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, b] of [["ca.crt", pki.ca], ["client.key", pki.clientKey]] as const) writeFileSync(join(dir, name), b);
  const server = new DistributionServer({ ca: pki.ca, cert: pki.serverCert, key: pki.serverKey }, log);
  cleanups.push(() => server.close());
  const port = await server.listen(0);
  const node = nodeName(0);
  server.publish(node, raw.state);
  await realAgentFigures({ address: `127.0.0.1:${port}`, node, dir, pki, kernelLock: f.kernelLock, agentBundle: f.agentBundle, cleanups, out });
}

/** The cluster: a real API server and operator, simulated agents, and what the flags ask for. */
async function cluster(f: Flags, cleanups: (() => unknown)[], out: Record<string, unknown>): Promise<void> {
  {
    if (OPERATOR_BUNDLE && !existsSync(OPERATOR_BUNDLE_FILE)) throw new Error(`BENCH_OPERATOR_BUNDLE=1: ${OPERATOR_BUNDLE_FILE} does not exist: run make build (make bench-scale does)`);
    const cp = await startControlPlane({ name: "bench-scale", ...(f.deleteCollectionWorkers ? { apiserverArgs: [`--delete-collection-workers=${f.deleteCollectionWorkers}`] } : {}) });
    cleanups.push(() => cp.stop());
    const kubectl = async (args: string[], input?: string): Promise<void> => {
      const r = await cp.kubectl(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    };
    for (const file of readdirSync(CRD_DIR).filter((x) => x.endsWith(".yaml"))) await kubectl(["apply", "-f", join(CRD_DIR, file)]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    const paths = controlPlanePaths(cp.dir);
    const api = new Api(cp.server, { ca: readFileSync(paths.caFile), cert: readFileSync(paths.adminCert), key: readFileSync(paths.adminKey) }, f.concurrency);
    cleanups.push(() => api.close());
    const noDeadline = Number.POSITIVE_INFINITY;
    const nsIdx = Array.from({ length: f.namespaces }, (_, i) => i);
    // No controller-manager here: each namespace's default ServiceAccount is created with it (pods need one).
    await limited(nsIdx, f.concurrency, noDeadline, async (i) => {
      await api.call("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: `ns-${i}`, labels: { team: `team-${i % 5}` } } });
      await api.call("POST", `/api/v1/namespaces/ns-${i}/serviceaccounts`, { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default" } });
    });
    let t = performance.now();
    await limited(Array.from({ length: f.nodes }, (_, i) => i), f.concurrency, noDeadline, (i) =>
      api.call("POST", "/api/v1/nodes", { apiVersion: "v1", kind: "Node", metadata: { name: nodeName(i) }, status: { addresses: [{ type: "InternalIP", address: nodeIP(i) }] } }),
    );
    out.nodes_create_s = round((performance.now() - t) / 1000);

    const pki = await makeBenchPki();
    const dir = mkdtempSync(join(tmpdir(), "membrane-bench-scale-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    for (const [file, b] of [["ca.crt", pki.ca], ["operator.crt", pki.serverCert], ["operator.key", pki.serverKey], ["client.key", pki.clientKey]] as const) writeFileSync(join(dir, file), b);
    const operatorArgs = [
      "--leader-elect", "false", "--pod-cidr-pool", "10.0.0.0/8", "--node-cidr-mask-size", "24", "--log-level", "info", "--identity-gc-grace", "5s",
      "--distribution-port", "0", "--tls-ca", join(dir, "ca.crt"), "--tls-cert", join(dir, "operator.crt"), "--tls-key", join(dir, "operator.key"),
    ];
    const startOperator = (name: string, profile = false): OperatorProcess => {
      const op = new OperatorProcess(name, cp.kubeconfig, operatorArgs, ["--inspect=127.0.0.1:0", "--max-old-space-size=8192", ...(profile && PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", PROFILE_DIR] : [])], OPERATOR_BUNDLE);
      cleanups.push(async () => {
        const force = setTimeout(() => void op.stop("SIGKILL"), 10_000);
        await op.stop("SIGTERM");
        clearTimeout(force);
      });
      return op;
    };
    let op = startOperator("bench-scale-operator", !f.gcOnly);
    const port = (await op.waitForLog((l) => l.msg === "distribution stream listening", 120_000)).port as number;
    await op.waitForLog((l) => l.msg === "operator running", 120_000);
    const address = `127.0.0.1:${port}`;

    if (f.gcOnly) {
      // The GC part alone: the pods get their identities (the ones GC must keep), nothing else runs.
      const sweeps0 = await reconcileCount(op, "identity-gc");
      t = performance.now();
      await limited(Array.from({ length: f.pods }, (_, p) => p), f.concurrency, noDeadline, (p) => createPod(api, `p-${p}`, podPlace(f, p), podIP(p + 1)));
      out.pods_create_s = round((performance.now() - t) / 1000);
      // Every label set's identity exists (counted, not listed: a list of every pod per poll loads a busy API server).
      let identities: number;
      while ((identities = await identityCount(api)) < f.identities && performance.now() - t < 900_000) await new Promise((r) => setTimeout(r, 2000));
      const window = (performance.now() - t) / 1000;
      // What the identity churn (every identity created while the pods arrive) cost the GC: its sweeps, each a walk over every identity.
      out.gc_sweeps_churn = (await reconcileCount(op, "identity-gc")) - sweeps0;
      out.gc_sweeps_per_s_churn = round((out.gc_sweeps_churn as number) / window, 2);
      out.gc_churn_window_s = round(window);
      out.identities = identities;
      if (identities < f.identities) throw new Error(`${identities} of ${f.identities} identities after 900 s`);
      while ((await podIdentities(api)).size < f.pods) {
        if (performance.now() - t > 1_200_000) throw new Error("pods did not get their identities within 1,200 s");
        await new Promise((r) => setTimeout(r, 2000));
      }
      out.pods_ready_s = round((performance.now() - t) / 1000);
    } else {
      // The agents first: they follow the cluster as it fills, as a real cluster's would.
      const hub = new Hub();
      const prefixes = new PrefixIndex();
      cleanups.push(() => hub.agents.forEach((a) => a.close()));
      t = performance.now();
      for (let i = 0; i < (f.agentOnly ? 1 : f.nodes); i++) {
        hub.agents.push(new LiteAgent(address, sslCredentials(address, pki.ca, pki.clientKey, await pki.clientCert(nodeName(i))), nodeName(i), prefixes, hub.onUpdate, log));
        if (i % 50 === 49) await new Promise((r) => setTimeout(r, 200)); // spread the TLS handshakes
      }
      await hub.waitAll("agents connect", (a) => a.messages > 0, 300_000);
      out.agents_connect_s = round((performance.now() - t) / 1000);
      log.info({ agents: hub.agents.length, s: out.agents_connect_s }, "agents connected");

      t = performance.now();
      const policies = scalePolicies(f);
      await limited(policies, f.concurrency, noDeadline, (p) => api.call("POST", p.path, p.body));
      await applyChangePolicy(api);
      out.policies_create_s = round((performance.now() - t) / 1000);
      log.info({ policies: policies.length, s: out.policies_create_s }, "policies created");

      const pods = Array.from({ length: f.pods }, (_, p) => p);
      for (const p of pods) prefixes.track(`${podIP(p + 1)}/32`);
      t = performance.now();
      let lastLog = t;
      let made = 0;
      await limited(pods, f.concurrency, noDeadline, async (p) => {
        await createPod(api, `p-${p}`, podPlace(f, p), podIP(p + 1));
        if (++made % 1000 === 0 && performance.now() - lastLog > 10_000) {
          lastLog = performance.now();
          log.info({ pods: made, s: round((lastLog - t) / 1000), agentsWithAll: hub.agents.filter((a) => a.tracked >= f.pods).length }, "creating pods");
        }
      });
      out.pods_create_s = round((performance.now() - t) / 1000);
      log.info({ pods: f.pods, s: out.pods_create_s }, "pods created; waiting for every agent to hold every pod and policy");
      // Every policy compiles (one generation each, plus the measured one) and every pod reaches every ipcache.
      await hub.waitAll("every pod in every ipcache, every policy on every node", (a) => a.tracked >= f.pods && a.generationCount >= policies.length + 1, 1_800_000);
      out.pods_ready_s = round((performance.now() - t) / 1000);
      out.identities = await identityCount(api);
      log.info({ s: out.pods_ready_s, identities: out.identities }, "cluster settled");

      // Steady state: nothing changes; what does the operator cost, and what does it ask of the API server?
      if (!f.agentOnly) {
      await new Promise((r) => setTimeout(r, 10_000));
      const before = await apiRequests(api);
      const cpu0 = procStats(op.pid).cpuS;
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, f.steadySeconds * 1000));
      const after = await apiRequests(api);
      const window = (performance.now() - t0) / 1000;
      const steadyCpu = procStats(op.pid).cpuS - cpu0;
      const delta: Record<string, number> = {};
      for (const [k, n] of after) if (n - (before.get(k) ?? 0) > 0) delta[k] = n - (before.get(k) ?? 0);
      out.operator_api_rps = round(Object.values(delta).reduce((a, b) => a + b, 0) / window, 2);
      out.operator_api_requests = delta;
      out.operator_cpu_pct = round((steadyCpu / window) * 100, 1);
      out.operator_heap_mib = await heapMib(op);
      out.operator_live_heap_mib = await liveHeapMib(op, log, 60_000);
      out.operator_rss_mib = Math.round(procStats(op.pid).rssMib);
      log.info({ rps: out.operator_api_rps, requests: delta, cpu: out.operator_cpu_pct, heap: out.operator_heap_mib, live: out.operator_live_heap_mib }, "steady state");

      // Changes, one at a time: a policy (until every agent ACKed its generation), then a new pod (until its /32 is in every ipcache).
      const policyMs: number[] = [];
      const podMs: number[] = [];
      const cpuChanges = procStats(op.pid).cpuS;
      for (let c = 0; c < f.changes; c++) {
        let s = performance.now();
        const g = await applyChangePolicy(api);
        policyMs.push((await hub.waitAll(`policy generation ${g}`, (a) => a.generationOf(CHANGE_KEY) >= g, 300_000)) - s);
        const ip = podIP(f.pods + 1 + c);
        prefixes.track(`${ip}/32`);
        s = performance.now();
        await createPod(api, `new-${c}`, podPlace(f, c), ip);
        podMs.push((await hub.waitAll(`pod ${ip} in every ipcache`, (a) => a.has(`${ip}/32`), 300_000)) - s);
      }
      out.changes = policyMs.length;
      out.policy_p50_ms = percentile(policyMs, 0.5);
      out.policy_p99_ms = percentile(policyMs, 0.99);
      out.pod_p50_ms = percentile(podMs, 0.5);
      out.pod_p99_ms = percentile(podMs, 0.99);
      out.operator_cpu_s_changes = round(procStats(op.pid).cpuS - cpuChanges, 2);
      log.info({ policy: policyMs.map((x) => Math.round(x)), pod: podMs.map((x) => Math.round(x)) }, "changes measured");
      }

      if (f.realAgent) {
        // One real agent in place of node 0's simulated one: its RSS with the full ipcache and its node's policies, and its time to ready after a restart.
        hub.agents.shift()?.close();
        await realAgentFigures({ address, node: nodeName(0), dir, pki, kernelLock: f.kernelLock, agentBundle: f.agentBundle, cleanups, out });
      } else {
        out.agent_rss_mib = null;
        out.agent_ready_s = null;
      }
      for (const a of hub.agents.splice(0)) a.close();
    }

    // Identity GC: with the operator down, idle identities appear (e.g. left by deleted workloads); the restarted operator collects them.
    await op.stop("SIGTERM");
    if (f.idleIdentities > 0 && !f.agentOnly) {
      t = performance.now();
      const idle = Array.from({ length: f.idleIdentities }, (_, k) => 65_535 - k);
      await limited(idle, f.concurrency, noDeadline, (n) =>
        api.call("POST", "/apis/cilium.io/v2/ciliumidentities", {
          apiVersion: "cilium.io/v2",
          kind: "CiliumIdentity",
          metadata: { name: String(n), ...(f.idleLabelled ? { labels: { [IDENTITY_NUMBER_LABEL]: String(n) } } : {}) },
          // As the operator labels an identity (a deleted workload's): a cluster identity without this cluster's label is out of
          // the cluster and every-pod classes, which turns their entries off for every subject (compiled per peer: the 8 GiB OOM).
          "security-labels": securityLabelsMap(securityLabels({ podLabels: { app: `idle-${n}` }, namespace: "gone", namespaceLabels: { "kubernetes.io/metadata.name": "gone" } })),
        }),
      );
      out.idle_create_s = round((performance.now() - t) / 1000);
      const total = await identityCount(api);
      log.info({ idle: f.idleIdentities, total, s: out.idle_create_s }, "idle identities created; starting the operator again");
      const requestsBeforeGc = await apiRequests(api);
      t = performance.now();
      const restartEpoch = Date.now();
      op = startOperator("bench-scale-operator-2", f.gcOnly); // with --gc-only, BENCH_OPERATOR_CPU_PROF profiles this one (the collector)
      await op.waitForLog((l) => l.msg === "operator running", 300_000);
      out.operator_restart_running_s = round((performance.now() - t) / 1000);
      const cap = 900_000;
      let left = total;
      // The restarted operator's heap while it collects (its /metrics each second; RSS peak from the kernel's high-water mark).
      let heapMax = 0;
      while (left > total - f.idleIdentities && performance.now() - t < cap) {
        await new Promise((r) => setTimeout(r, 1000));
        left = await identityCount(api);
        heapMax = Math.max(heapMax, (await heapMib(op)) ?? 0);
      }
      out.operator_restart_heap_max_mib = heapMax;
      out.operator_restart_rss_max_mib = op.running ? Math.round(procStats(op.pid).hwmMib) : null;
      out.gc_60k_s = left <= total - f.idleIdentities ? round((performance.now() - t) / 1000) : null;
      if (out.gc_60k_s !== null) out.gc_per_s = Math.round(f.idleIdentities / (out.gc_60k_s as number));
      if (out.gc_60k_s === null) out.gc_left = left - (total - f.idleIdentities);
      out.gc_idle = f.idleIdentities;
      out.gc_idle_labelled = f.idleLabelled;
      out.delete_collection_workers = f.deleteCollectionWorkers ?? 1;
      // What the GC asked of the API server: its writes, per verb and resource.
      const gcRequests = await apiRequests(api);
      out.gc_api_requests = Object.fromEntries([...gcRequests].filter(([k]) => /ciliumidentities|configmaps/.test(k) && !k.startsWith("GET") && !k.startsWith("LIST")).map(([k, n]) => [k, n - (requestsBeforeGc.get(k) ?? 0)]).filter(([, n]) => (n as number) > 0));
      out.gc_reconcile_errors = op.logs.filter((l) => l.msg === "reconcile failed").length;
      // Where the time went, from the restarted operator's log times (s after its spawn): its distribution's first compile
      // done, its GC's first deletes sent (the grace over), its last batch deleted.
      const logAt = (msg: string, last = false): number | null => {
        const lines = op.logs.filter((l) => l.msg === msg && (msg !== "controller started" || l.controller === "distribution"));
        const at = lines[last ? lines.length - 1 : 0]?.time;
        return typeof at === "number" ? round((at - restartEpoch) / 1000) : null;
      };
      if (process.env.BENCH_GC_LOG) writeFileSync(process.env.BENCH_GC_LOG, op.logs.map((l) => JSON.stringify(l)).join("\n"));
      out.gc_restart_compiled_s = logAt("controller started");
      out.gc_collect_start_s = logAt("collecting identities");
      out.gc_last_batch_s = logAt("identities collected", true);
      // What GC must not do: delete an identity a pod still carries.
      const inUse = await podIdentities(api);
      const remaining = await identityNames(api);
      out.gc_deleted_in_use = [...inUse.values()].filter((n) => !remaining.has(n)).length;
      if (out.gc_deleted_in_use !== 0) throw new Error(`identity GC deleted ${String(out.gc_deleted_in_use)} identities that pods carry`);
      log.info({ s: out.gc_60k_s, left: left - (total - f.idleIdentities) }, "identity GC");
    } else {
      out.gc_60k_s = null;
    }
    if (f.agentOnly) out.agent_only = true;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
