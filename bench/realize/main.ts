// Benchmark: a real kube-apiserver, the operator as a child process and N simulated agents on its mTLS stream; times a policy change until every agent ACKed it, and a new pod until its IP is in every agent's ipcache.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { cleanupStack } from "../lib/cleanup.ts";
import { controlPlanePaths, startControlPlane } from "../../localcluster/cluster.ts";
import { OPERATOR_BUNDLE as OPERATOR_BUNDLE_FILE, OperatorProcess } from "../../controllers/testing/operator-process.ts";
import { makeBenchPki, type BenchPki } from "./pki.ts";
import { sslCredentials } from "../../kube/grpc-tls.ts";
import { Api, Hub, LiteAgent, PrefixIndex, heapMib, limited, liveHeapMib, percentile, procStats, writeHeapSnapshot } from "../lib/sim.ts";

const log = pino({ name: "bench-realize" }, pino.destination({ fd: 2, sync: true }));
const envInt = (k: string, d: number): number => {
  const v = Number(process.env[k] ?? d);
  if (!Number.isInteger(v) || v < 0) throw new Error(`${k}: "${process.env[k]}" is not a non-negative integer`);
  return v;
};
const CHANGES = envInt("BENCH_CHANGES", 200);
const CHANGES_1000 = envInt("BENCH_CHANGES_1000", Math.min(CHANGES, 30));
/** Wall-clock caps per phase, so the whole run stays within ~6 minutes: measured changes, and setup (nodes, pods, agents settled). */
const PHASE_SECONDS = envInt("BENCH_PHASE_SECONDS", 50);
const SETUP_SECONDS = envInt("BENCH_SETUP_SECONDS", 90);
const SETUP_SECONDS_PER_NODE = 0.2;
const AGENT_COUNTS = (process.env.BENCH_AGENTS ?? "1,10,100,1000").split(",").map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_AGENTS: "${s}" is not a positive integer`);
  return n;
});
/** Where the operator writes a V8 CPU profile (on its graceful stop at the end); none when unset. */
const PROFILE_DIR = process.env.BENCH_OPERATOR_CPU_PROF;
/** Run the operator as shipped (the bundle, dist/membrane.mjs; `make build`) instead of through tsx as in a checkout. */
const OPERATOR_BUNDLE = process.env.BENCH_OPERATOR_BUNDLE === "1";
/** Where the operator's V8 heap snapshot at the end of each phase is written (realize-N<agents>.heapsnapshot); none when unset. */
const HEAP_SNAPSHOT_DIR = process.env.BENCH_OPERATOR_HEAP_SNAPSHOT;
const NS = "bench";
const POLICY = "web";
const POLICY_KEY = `CiliumNetworkPolicy/${NS}/${POLICY}`;
const CRD_DIR = fileURLToPath(new URL("../../crds/generated/", import.meta.url));

const nodeName = (i: number): string => `bench-node-${i}`;
const nodeIP = (i: number): string => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
let podCounter = 0;
const nextPodIP = (): string => {
  const c = ++podCounter;
  return `172.${16 + ((c >> 16) & 15)}.${(c >> 8) & 255}.${c & 255}`;
};

async function createPod(api: Api, name: string, node: string): Promise<string> {
  await api.call("POST", `/api/v1/namespaces/${NS}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { app: "web" } },
    spec: { nodeName: node, automountServiceAccountToken: false, containers: [{ name: "c", image: "example.invalid/none" }] },
  });
  const ip = nextPodIP();
  await api.call("PATCH", `/api/v1/namespaces/${NS}/pods/${name}/status`, { status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } }, "application/merge-patch+json");
  return `${ip}/32`;
}

let policyPort = 1000;
/** A server-side apply of the benchmark CNP with a new port (what `kubectl apply --server-side` sends); returns its new generation. */
async function applyPolicy(api: Api): Promise<number> {
  const port = String(++policyPort);
  const obj = await api.call(
    "PATCH",
    `/apis/cilium.io/v2/namespaces/${NS}/ciliumnetworkpolicies/${POLICY}?fieldManager=bench&force=true`,
    {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: POLICY, namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }], toPorts: [{ ports: [{ port, protocol: "TCP" }] }] }] },
    },
    "application/apply-patch+yaml",
  );
  return Number((obj.metadata as { generation?: number }).generation);
}

interface Phase {
  agents: number;
  policy_changes: number;
  pod_changes: number;
  p50_ms: number | null;
  p99_ms: number | null;
  pod_p50_ms: number | null;
  pod_p99_ms: number | null;
  operator_cpu_s: number;
  heap_mib: number | null;
  live_heap_mib: number | null;
  rss_mib: number;
  setup_s: number;
}

async function main(): Promise<void> {
  if (OPERATOR_BUNDLE && !existsSync(OPERATOR_BUNDLE_FILE)) throw new Error(`BENCH_OPERATOR_BUNDLE=1: ${OPERATOR_BUNDLE_FILE} does not exist: run make build`);
  const started = Date.now();
  const { cleanups, cleanup } = cleanupStack(log);
  const phases: Phase[] = [];
  const skipped: Record<string, string> = {};
  let operatorCpu = 0;
  let peakRss = 0;
  try {
    const cp = await startControlPlane({ name: "bench-realize" });
    cleanups.push(() => cp.stop());
    const kubectl = async (args: string[], input?: string): Promise<void> => {
      const r = await cp.kubectl(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    };
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", join(CRD_DIR, f)]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } }));
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: NS } }));
    const paths = controlPlanePaths(cp.dir);
    const api = new Api(cp.server, { ca: readFileSync(paths.caFile), cert: readFileSync(paths.adminCert), key: readFileSync(paths.adminKey) });
    cleanups.push(() => api.close());
    await applyPolicy(api);

    const pkiStart = performance.now();
    const pki: BenchPki = await makeBenchPki();
    let certMs = performance.now() - pkiStart;
    const dir = mkdtempSync(join(tmpdir(), "membrane-bench-realize-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    for (const [f, b] of [["ca.crt", pki.ca], ["operator.crt", pki.serverCert], ["operator.key", pki.serverKey]] as const) writeFileSync(join(dir, f), b);
    const op = new OperatorProcess("bench-operator", cp.kubeconfig, [
      "--leader-elect", "false", "--pod-cidr-pool", "10.0.0.0/8", "--node-cidr-mask-size", "24", "--log-level", "info",
      "--distribution-port", "0", "--tls-ca", join(dir, "ca.crt"), "--tls-cert", join(dir, "operator.crt"), "--tls-key", join(dir, "operator.key"),
    ], ["--inspect=127.0.0.1:0", ...(PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", PROFILE_DIR] : [])], OPERATOR_BUNDLE);
    // Graceful first (so e.g. NODE_OPTIONS=--cpu-prof can write its profile), then by force.
    cleanups.push(async () => {
      const force = setTimeout(() => void op.stop("SIGKILL"), 10_000);
      await op.stop("SIGTERM");
      clearTimeout(force);
    });
    const port = (await op.waitForLog((l) => l.msg === "distribution stream listening")).port as number;
    await op.waitForLog((l) => l.msg === "operator running");
    const cpuAtStart = procStats(op.pid).cpuS;
    const hub = new Hub();
    const prefixes = new PrefixIndex();
    cleanups.push(() => hub.agents.forEach((a) => a.close()));
    const hostPrefixes: string[] = [];

    for (const n of AGENT_COUNTS.sort((a, b) => a - b)) {
      if (hub.agents.length > n) continue;
      const phaseStart = performance.now();
      // Creating 900 nodes and pods is bound by the API server, not by what is measured: the cap grows with the count.
      const setupDeadline = phaseStart + Math.max(SETUP_SECONDS, (n - hub.agents.length) * SETUP_SECONDS_PER_NODE) * 1000;
      const cpuSetup = procStats(op.pid).cpuS;
      const have = hub.agents.length;
      const fresh = Array.from({ length: n - have }, (_, k) => have + k);
      log.info({ agents: n, adding: fresh.length }, "phase: creating nodes, pods and agents");
      try {
        // Nodes (the operator's node controller adds their CiliumNodes), one app=web pod per node with an IP.
        await limited(fresh, 16, setupDeadline, (i) => api.call("POST", "/api/v1/nodes", { apiVersion: "v1", kind: "Node", metadata: { name: nodeName(i) }, status: { addresses: [{ type: "InternalIP", address: nodeIP(i) }] } }));
        await limited(fresh, 16, setupDeadline, async (i) => void hostPrefixes.push(await createPod(api, `host-${i}`, nodeName(i))));
        const t0 = performance.now();
        const certs = await Promise.all(fresh.map((i) => pki.clientCert(nodeName(i))));
        certMs += performance.now() - t0;
        const address = `127.0.0.1:${port}`;
        for (const [k, i] of fresh.entries()) {
          hub.agents.push(new LiteAgent(address, sslCredentials(address, pki.ca, pki.clientKey, certs[k]), nodeName(i), prefixes, hub.onUpdate, log));
          if (k % 50 === 49) await new Promise((r) => setTimeout(r, 200)); // spread the TLS handshakes
        }
        const generation = await applyPolicy(api);
        await hub.waitAll(`${n} agents settle`, (a) => a.generationOf(POLICY_KEY) >= generation && hostPrefixes.every((p) => a.has(p)), Math.max(1000, setupDeadline - performance.now()));
      } catch (e) {
        const st = procStats(op.pid);
        const settled = hub.agents.filter((a) => a.messages > 0).length;
        skipped[String(n)] =
          `setup did not finish within max(BENCH_SETUP_SECONDS=${SETUP_SECONDS}, ${SETUP_SECONDS_PER_NODE} s per new node): ${(e as Error).message}; ${settled}/${hub.agents.length} agents had received state, ` +
          `${hub.agents.reduce((x, a) => x + a.reconnects, 0)} stream reconnects; operator used ${(st.cpuS - cpuSetup).toFixed(1)} s CPU in this setup, RSS ${Math.round(st.rssMib)} MiB, heap ${(await heapMib(op)) ?? "unknown (no /metrics answer within 5 s)"} MiB`;
        log.warn({ agents: n, reason: skipped[String(n)] }, "phase abandoned; larger N skipped");
        for (const m of AGENT_COUNTS) if (m > n) skipped[String(m)] = `not run: N=${n} could not be set up in time`;
        break;
      }
      const setupS = (performance.now() - phaseStart) / 1000;
      log.info({ agents: n, setup_s: setupS }, "phase: agents hold the current state; measuring");

      // Interleaved: a policy change, then a new pod; each waits until every agent has it.
      const budget = n >= 1000 ? CHANGES_1000 : CHANGES;
      const deadline = performance.now() + PHASE_SECONDS * 1000;
      const cpuBefore = procStats(op.pid).cpuS;
      const policyMs: number[] = [];
      const podMs: number[] = [];
      const timeout = Math.max(30_000, n * 60);
      for (let c = 0; c < budget && performance.now() < deadline; c++) {
        let start = performance.now();
        const g = await applyPolicy(api);
        policyMs.push((await hub.waitAll(`policy generation ${g}`, (a) => a.generationOf(POLICY_KEY) >= g, timeout)) - start);
        start = performance.now();
        const prefix = await createPod(api, `new-${n}-${c}`, nodeName(c % n));
        podMs.push((await hub.waitAll(`pod ${prefix} in ipcache`, (a) => a.has(prefix), timeout)) - start);
        hostPrefixes.push(prefix);
      }
      const after = procStats(op.pid);
      peakRss = Math.max(peakRss, after.hwmMib);
      const phase: Phase = {
        agents: n,
        policy_changes: policyMs.length,
        pod_changes: podMs.length,
        p50_ms: percentile(policyMs, 0.5),
        p99_ms: percentile(policyMs, 0.99),
        pod_p50_ms: percentile(podMs, 0.5),
        pod_p99_ms: percentile(podMs, 0.99),
        operator_cpu_s: Math.round((after.cpuS - cpuBefore) * 100) / 100,
        heap_mib: await heapMib(op),
        live_heap_mib: await liveHeapMib(op, log),
        rss_mib: Math.round(after.rssMib),
        setup_s: Math.round(setupS * 10) / 10,
      };
      phases.push(phase);
      log.info(phase, "phase done");
      if (HEAP_SNAPSHOT_DIR) await writeHeapSnapshot(op, join(HEAP_SNAPSHOT_DIR, `realize-N${n}.heapsnapshot`), log);
    }
    operatorCpu = procStats(op.pid).cpuS - cpuAtStart;
    log.info({ cert_ms: Math.round(certMs), total_s: (Date.now() - started) / 1000 }, "done");
  } catch (e) {
    log.error({ err: e instanceof Error ? e.message : String(e) }, "benchmark failed");
    const done = new Set(phases.map((p) => p.agents));
    for (const n of AGENT_COUNTS) if (!done.has(n)) skipped[String(n)] ??= `failed: ${e instanceof Error ? e.message : String(e)}`;
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
  const by = (k: keyof Phase): Record<string, number | null> => Object.fromEntries(["1", "10", "100", "1000", ...AGENT_COUNTS.map(String)].map((n) => [n, (phases.find((p) => String(p.agents) === n)?.[k] as number | null | undefined) ?? null]));
  for (const n of ["1", "10", "100", "1000"]) if (!phases.some((p) => String(p.agents) === n) && !skipped[n]) skipped[n] = "not requested (BENCH_AGENTS)";
  const heaps = phases.map((p) => p.heap_mib).filter((h): h is number => h !== null);
  const liveHeaps = phases.map((p) => p.live_heap_mib).filter((h): h is number => h !== null);
  process.stdout.write(
    JSON.stringify({
      bench: "realize",
      p99_ms_by_agents: by("p99_ms"),
      p50_ms_by_agents: by("p50_ms"),
      pod_p99_ms_by_agents: by("pod_p99_ms"),
      pod_p50_ms_by_agents: by("pod_p50_ms"),
      changes_by_agents: by("policy_changes"),
      pod_changes_by_agents: by("pod_changes"),
      heap_mib: heaps.length > 0 ? Math.max(...heaps) : null,
      live_heap_mib: liveHeaps.length > 0 ? Math.max(...liveHeaps) : null,
      rss_peak_mib: Math.round(peakRss),
      operator_cpu_s: Math.round(operatorCpu * 100) / 100,
      operator_cpu_s_by_agents: by("operator_cpu_s"),
      heap_mib_by_agents: by("heap_mib"),
      live_heap_mib_by_agents: by("live_heap_mib"),
      setup_s_by_agents: by("setup_s"),
      ...(Object.keys(skipped).length > 0 ? { skipped } : {}),
      operator: OPERATOR_BUNDLE ? "bundle" : "tsx",
      load_avg_1m: Math.round((loadavg()[0] ?? 0) * 10) / 10,
      total_s: Math.round((Date.now() - started) / 100) / 10,
      method: "policy: server-side apply PATCH of one CNP (new port each time) until every agent ACKed that generation; pod: POST + status PATCH (IP) until its /32 is in every agent's ipcache; sequential changes",
    }) + "\n",
  );
}

await main();
