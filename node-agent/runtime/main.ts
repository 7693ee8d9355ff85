// `membrane runtime`: process visibility and TracingPolicy enforcement as a process of its own on the node (issue
// #18 allows the agent or a process it manages): exec/exit and hook events to an export file, the policies from a
// polled file, each policy's status to a status file, metrics on /metrics and the live event stream on /v1/events.
import http from "node:http";
import os from "node:os";
import { pino } from "pino";
import fs from "node:fs";
import { Gauge, Registry } from "prom-client";
import type { RuntimeEvent } from "../../core/process-event.ts";
import { ConnectEnforcer } from "./connect-enforcer.ts";
import { ContainerCgroups } from "./containers.ts";
import { TracepointEnforcer } from "./tracepoint-enforcer.ts";
import { RuntimeEnforcement, policyKey } from "./enforcement.ts";
import type { PodRef } from "./events.ts";
import { PolledFile, parsePods, parsePolicies } from "./policy-source.ts";
import { parseFlags } from "../../kube/flags.ts";
import { RuntimeEventStream } from "./event-stream.ts";
import { TP_PROCS_MAX } from "./tracepoint-layout.ts";
import { ProcessVisibility } from "./visibility.ts";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { DEFAULT_RUNTIME_BPF_SCOPE, checkRuntimeBpfScope, runtimePinScopes } from "./pin-scopes.ts";

const USAGE = `usage: membrane runtime --export-file FILE [--policy-file FILE [--status-file FILE]] [--pods-file FILE]
                        [--node-name NAME] [--metrics-address HOST:PORT] [--cgroup-root DIR] [--pid-file FILE]
                        [--bpf-scope SCOPE] [--keep-sensors-on-exit[=true|false]] [--ready-file FILE]

  --export-file FILE         append every process_exec/process_exit/process_kprobe/process_lsm/process_tracepoint event (Tetragon's JSON) to FILE
  --policy-file FILE         enforce the TracingPolicies of this YAML file (polled; a file that does not parse keeps the last good one)
  --status-file FILE         write each policy's status here as JSON after every change (needs --policy-file)
  --pods-file FILE           the node's pods, {"pods": [{"netns", "namespace", "name", "labels", "containers"}]} (polled): events
                             name the pod and container, namespaced policies, podSelector and containerSelector select by them
  --node-name NAME           node_name of the events (default: the host name)
  --cgroup-root DIR          the host's cgroup v2 directory: connect hooks attach there, containers' cgroups are found under it
                             (default /sys/fs/cgroup/unified)
  --metrics-address ADDR     serve Prometheus metrics on http://ADDR/metrics and the live event stream on http://ADDR/v1/events
                             (membrane observe --type process --runtime-address ADDR; default 127.0.0.1:9964)
  --pid-file FILE            write this process's pid here at start, removed at its exit (an agent started with
                             --external-runtime finds the runtime of its state dir by it: the chart's membrane-runtime pod)
  --bpf-scope SCOPE          pin its maps and programs under /sys/fs/bpf/membrane/SCOPE, SCOPE-connect and SCOPE-tracepoint
                             (default ${DEFAULT_RUNTIME_BPF_SCOPE}; a runtime adopts only what one of the same scope left pinned)
  --keep-sensors-on-exit     at SIGTERM leave the connect and tracepoint programs pinned with their rules, enforcing, for the
                             next runtime to adopt (as Tetragon's flag; default false: they are removed). The file and exec
                             hooks (fanotify) end with the process whatever this says. Needs --policy-file; once that file
                             is gone (the agent's uninstall removes it) nothing is kept
  --ready-file FILE          exists while this runtime enforces the policy file as read (every policy applied: enforced, or
                             refused as Invalid or HookUnavailable; none LoadFailed), absent before and otherwise (the
                             chart's readiness probe: a rolling update removes the old pod only once the new one is ready)`;

export interface RuntimeConfig {
  readonly exportFile: string;
  readonly policyFile?: string;
  readonly statusFile?: string;
  readonly podsFile?: string;
  readonly cgroupRoot?: string;
  readonly pidFile?: string;
  /** Exists while this runtime enforces the policy file as read (the pod's readiness). */
  readonly readyFile?: string;
  /** Its pins' scope (pin-scopes.ts). */
  readonly bpfScope: string;
  /** At SIGTERM its connect and tracepoint programs stay pinned, enforcing, for the next runtime. */
  readonly keepSensorsOnExit: boolean;
  readonly nodeName: string;
  readonly metricsHost: string;
  readonly metricsPort: number;
}

export function parseRuntimeArgs(args: readonly string[]): { ok: true; value: RuntimeConfig } | { ok: false; error: string } {
  const flags = parseFlags({
    // A bare boolean flag reads as =true (the agent's flags do the same), so =false can be written too.
    args: args.map((a) => (a === "--keep-sensors-on-exit" ? "--keep-sensors-on-exit=true" : a)),
    options: {
      "export-file": { type: "string" }, "node-name": { type: "string" }, "metrics-address": { type: "string" },
      "policy-file": { type: "string" }, "status-file": { type: "string" }, "pods-file": { type: "string" }, "cgroup-root": { type: "string" }, "pid-file": { type: "string" }, "ready-file": { type: "string" },
      "bpf-scope": { type: "string" }, "keep-sensors-on-exit": { type: "string" },
    },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  if (v["export-file"] === undefined || v["export-file"] === "") return { ok: false, error: "--export-file: required (where the events go)" };
  const address = v["metrics-address"] ?? "127.0.0.1:9964";
  const m = /^(.+):(\d{1,5})$/.exec(address);
  const port = Number(m?.[2]);
  if (!m || port > 65535) return { ok: false, error: `--metrics-address: "${address}" is not HOST:PORT` };
  for (const f of ["policy-file", "status-file", "pods-file", "pid-file", "ready-file"] as const) if (v[f] === "") return { ok: false, error: `--${f}: empty path` };
  const cgroupRoot = v["cgroup-root"];
  if (cgroupRoot !== undefined && !cgroupRoot.startsWith("/")) return { ok: false, error: `--cgroup-root: an absolute path is required, got ${JSON.stringify(cgroupRoot)}` };
  if (v["status-file"] !== undefined && v["policy-file"] === undefined) return { ok: false, error: "--status-file: needs --policy-file (the statuses are the policies')" };
  const bpfScope = v["bpf-scope"] ?? DEFAULT_RUNTIME_BPF_SCOPE;
  const badScope = checkRuntimeBpfScope("--bpf-scope", bpfScope);
  if (badScope !== undefined) return { ok: false, error: badScope };
  const keep = v["keep-sensors-on-exit"];
  if (keep !== undefined && keep !== "true" && keep !== "false") return { ok: false, error: `--keep-sensors-on-exit: must be true or false, got ${JSON.stringify(keep)}` };
  if (keep === "true" && v["policy-file"] === undefined) return { ok: false, error: "--keep-sensors-on-exit: needs --policy-file (what is kept enforces its policies until the next runtime reads it)" };
  return {
    ok: true,
    value: {
      exportFile: v["export-file"],
      ...(v["policy-file"] !== undefined ? { policyFile: v["policy-file"] } : {}),
      ...(v["status-file"] !== undefined ? { statusFile: v["status-file"] } : {}),
      ...(v["pods-file"] !== undefined ? { podsFile: v["pods-file"] } : {}),
      ...(cgroupRoot !== undefined ? { cgroupRoot } : {}),
      ...(v["pid-file"] !== undefined ? { pidFile: v["pid-file"] } : {}),
      ...(v["ready-file"] !== undefined ? { readyFile: v["ready-file"] } : {}),
      bpfScope,
      keepSensorsOnExit: keep === "true",
      nodeName: v["node-name"] || os.hostname(),
      metricsHost: m[1]!,
      metricsPort: port,
    },
  };
}

/** `membrane runtime …`: runs until SIGTERM or SIGINT; the exit code. */
export async function run(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const parsed = parseRuntimeArgs(args);
  if (!parsed.ok) {
    process.stderr.write(`membrane runtime: ${parsed.error}\n${USAGE}\n`);
    return 2;
  }
  const cfg = parsed.value;
  const log = pino({ name: "runtime" });
  // A status an earlier runtime left describes that one (its file and exec hooks ended with it): gone before an agent
  // can find this pid, which would otherwise read it as this runtime's until the first apply rewrites it. Unless that
  // runtime still runs beside this one (the chart's surge rollout): it enforces those policies until this one's first
  // apply replaces its status, and removing it would show them pending on this node meanwhile.
  if (cfg.statusFile !== undefined && !earlierRuntimeRunning(cfg.pidFile)) fs.rmSync(cfg.statusFile, { force: true });
  if (cfg.readyFile !== undefined) fs.rmSync(cfg.readyFile, { force: true });
  // Before anything is applied: an agent that finds no runtime by it says EnforcerDown.
  if (cfg.pidFile !== undefined) fs.writeFileSync(cfg.pidFile, `${process.pid}\n`);
  const removePidFile = (): void => {
    const file = cfg.pidFile;
    if (file === undefined) return;
    try {
      if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.rmSync(file, { force: true });
    } catch {
      // gone already
    }
  };
  const registry = new Registry();
  let pods = new Map<number, PodRef>();
  const resolvePod = (inode: number): PodRef | undefined => pods.get(inode);
  const stream = new RuntimeEventStream(registry);
  // Containers by their cgroups (real nodes: the kubelet's per-container cgroups, the pods file's container statuses).
  const containers = new ContainerCgroups(cfg.cgroupRoot !== undefined ? { cgroupRoot: cfg.cgroupRoot } : {});
  const scopes = runtimePinScopes(cfg.bpfScope);
  const visibility = new ProcessVisibility({ nodeName: cfg.nodeName, exportFile: cfg.exportFile, registry, resolvePod, containers, scope: scopes.sensor, onEvent: (e, json) => stream.push(e, json) });
  try {
    visibility.start();
  } catch (err) {
    process.stderr.write(`membrane runtime: ${err instanceof Error ? err.message : String(err)}\n`);
    removePidFile();
    return 1;
  }
  const emit = (e: RuntimeEvent): void => visibility.emit(e);
  const connect = new ConnectEnforcer({ events: visibility.processes, nodeName: cfg.nodeName, emit, log, pods: () => pods, containers, scope: scopes.connect, ...(cfg.cgroupRoot !== undefined ? { cgroupPath: cfg.cgroupRoot } : {}) });
  // Constructed before any policy is applied: it reads the tracepoints' formats from tracefs in a child process.
  const tracepoints = new TracepointEnforcer({ events: visibility.processes, nodeName: cfg.nodeName, emit, log, pods: () => pods, containers, scope: scopes.tracepoint });
  const engine = new RuntimeEnforcement({ nodeName: cfg.nodeName, events: visibility.processes, emit, log, resolvePod, containers, pods: () => pods, connect, tracepoints });
  const enforced = new Gauge({
    name: "membrane_tracing_policies",
    help: "TracingPolicies of the policy file, by whether this node enforces them.",
    labelNames: ["enforced"],
    registers: [registry],
  });
  let policies: unknown[] = [];
  let applying = Promise.resolve();
  const apply = (): void => {
    const statuses = engine.apply(policies);
    const all = [...statuses.values()];
    enforced.set({ enforced: "true" }, all.filter((s) => s.enforced).length);
    enforced.set({ enforced: "false" }, all.filter((s) => !s.enforced).length);
    for (const [key, st] of statuses) {
      if (st.enforced) log.info({ policy: key, hooks: st.hooks }, "tracing policy enforced");
      else log.error({ policy: key, reason: st.reason, message: st.message }, "tracing policy not enforced");
    }
    lastStatuses = statuses;
    writeStatus();
    // Ready (the pod's probe) once the policies as read are in force: a refusal of the policy itself (Invalid,
    // HookUnavailable) is every runtime's, while LoadFailed (the kernel refused this one's marks or programs) keeps an
    // older runtime beside it, enforcing, until an apply succeeds.
    setReady(policiesRead || cfg.policyFile === undefined ? all.every((st) => st.enforced || st.reason !== "LoadFailed") : false);
  };
  let ready: boolean | undefined;
  const setReady = (now: boolean): void => {
    const file = cfg.readyFile;
    if (file === undefined || now === ready) return;
    ready = now;
    log.info({ ready: now, readyFile: file }, now ? "runtime ready: it enforces the policy file as read" : "runtime not ready: a policy failed to load");
    applying = applying
      .then(() => (now ? fs.promises.writeFile(file, `${process.pid}\n`) : fs.promises.rm(file, { force: true })))
      .catch((err: unknown) => log.error({ err: String(err), file }, "ready file not written"));
  };
  let lastStatuses: ReturnType<typeof engine.apply> = new Map();
  let overflows = 0n;
  // The node's warning while processes whose binary matches a tracepoint's matchBinaries value did not fit in the
  // kernel's set (they match no value: an In selector misses them): on each policy that uses one and on the node.
  const overflowWarning = (): string | undefined =>
    overflows === 0n ? undefined : `${overflows} process(es) whose binary matches a matchBinaries value did not fit in the kernel's set of ${TP_PROCS_MAX} and match no value (an In selector misses them, a NotIn one holds): fewer matching processes, or narrower values`;
  const writeStatus = (): void => {
    const file = cfg.statusFile;
    if (file === undefined) return;
    // Asynchronous: this process must never wait on an open itself (the file may be in a marked directory).
    // Each status names the uid and generation it is of (metadata of the object read), so a reader knows which version it describes.
    const versions = new Map(policies.map((o) => [policyKey(o), objectVersion(o)]));
    const warning = overflowWarning();
    const binaryUsers = new Set(policies.filter(usesTracepointBinaries).map(policyKey));
    const body = `${JSON.stringify({
      node: cfg.nodeName,
      address,
      ...(warning !== undefined ? { warnings: [warning] } : {}),
      policies: Object.fromEntries([...lastStatuses].map(([k, st]) => [k, { ...st, ...versions.get(k), ...(warning !== undefined && binaryUsers.has(k) ? { warning } : {}) }])),
    })}\n`;
    const tmp = `${file}.${process.pid}.tmp`;
    applying = applying
      // A newer runtime beside this one (the chart's surge rollout) has written its pid: the status file is its own.
      .then(async () => (cfg.pidFile === undefined ? undefined : (await fs.promises.readFile(cfg.pidFile, "utf8").catch(() => "")).trim()))
      .then(async (owner) => {
        if (owner !== undefined && owner !== "" && owner !== String(process.pid)) return;
        await fs.promises.writeFile(tmp, body);
        await fs.promises.rename(tmp, file);
      })
      .catch((err: unknown) => log.error({ err: String(err), file }, "status file not written"));
  };
  new Gauge({
    name: "membrane_tracepoint_binary_set_overflows",
    help: "Processes whose binary matches a tracepoint policy's matchBinaries value that did not fit in the kernel's set (they match no value), since the runtime started.",
    registers: [registry],
    collect() {
      this.set(Number(tracepoints.binarySetOverflows()));
    },
  });
  const overflowCheck = setInterval(() => {
    const now = tracepoints.binarySetOverflows();
    if (now === overflows) return;
    overflows = now;
    log.error({ overflows: Number(now), capacity: TP_PROCS_MAX }, "matchBinaries set full: processes of a matching binary match no value");
    writeStatus();
  }, 1000);
  overflowCheck.unref();
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && (req.url === "/v1/events" || req.url?.startsWith("/v1/events?"))) return stream.serve(req, res);
    if (req.url !== "/metrics") return void res.writeHead(404).end();
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(cfg.metricsPort, cfg.metricsHost, resolve);
    });
  } catch (err) {
    process.stderr.write(`membrane runtime: --metrics-address ${cfg.metricsHost}:${cfg.metricsPort}: ${err instanceof Error ? err.message : String(err)}\n`);
    engine.stop();
    visibility.stop();
    removePidFile();
    return 1;
  }
  const bound = server.address();
  const address = bound !== null && typeof bound === "object" ? `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}` : `${cfg.metricsHost}:${cfg.metricsPort}`;
  const sources: PolledFile[] = [];
  let policiesRead = false;
  if (cfg.podsFile !== undefined) {
    const file = cfg.podsFile;
    sources.push(new PolledFile(file, (text) => {
      const r = parsePods(text === "" ? '{"pods": []}' : text, file);
      if (!r.ok) return void log.error({ error: r.error }, "pods file refused: the last good one stays");
      pods = r.value;
      // New containers' cgroups are found before the policies are applied to them.
      containers.refresh();
      log.info({ pods: pods.size, containers: [...pods.values()].reduce((n, p) => n + (p.containers?.length ?? 0), 0) }, "pods read");
      // podSelector and namespaced policies follow the pods; not before the policy file is read: an apply of no policies
      // would remove the programs an earlier runtime left pinned, which keep enforcing until this one has the policies.
      if (policiesRead) apply();
    }));
  }
  if (cfg.policyFile !== undefined) {
    const file = cfg.policyFile;
    sources.push(new PolledFile(file, (text) => {
      const r = parsePolicies(text, file);
      if (!r.ok) return void log.error({ error: r.error }, "policy file refused: the last good one stays");
      policies = r.value;
      policiesRead = true;
      apply();
    }));
  }
  for (const s of sources) await s.start();
  // No policies to read: the connect and tracepoint programs a runtime that died left pinned (still acting) go.
  if (cfg.policyFile === undefined) apply();
  log.info({ exportFile: cfg.exportFile, policyFile: cfg.policyFile, node: cfg.nodeName, address }, "runtime running: /metrics and the live event stream /v1/events");
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  for (const s of sources) s.stop();
  clearInterval(overflowCheck);
  stream.close();
  if (cfg.readyFile !== undefined) await fs.promises.rm(cfg.readyFile, { force: true }).catch(() => undefined);
  // Kept only for a next runtime of the same policy file: the agent's uninstall removes that file first, and then
  // nothing is kept (a stat, not an open: it cannot wait on this process's own permission events).
  const keep = cfg.keepSensorsOnExit && cfg.policyFile !== undefined && (await fs.promises.stat(cfg.policyFile).then(() => true, () => false));
  if (keep) engine.release();
  else engine.stop();
  visibility.stop();
  server.close();
  await applying;
  if (keep) {
    // Left as after a SIGKILL: it tells an agent's uninstall that a runtime of this state dir left programs pinned.
    log.info({ scopes: [scopes.connect, scopes.tracepoint], pidFile: cfg.pidFile }, "runtime stopped: its connect and tracepoint programs stay pinned and enforcing for the next runtime (--keep-sensors-on-exit); its file and exec hooks ended with it");
    return 0;
  }
  removePidFile();
  // Its scopes are gone: at an uninstall its pod may end after the agent's, which left the directory to it.
  try {
    fs.rmdirSync(BPFFS_ROOT);
  } catch {
    // the agent's scopes are there, or it is gone already
  }
  log.info("runtime stopped");
  return 0;
}

/** Whether a policy object has a tracepoint selector with matchBinaries (the kernel's binary set serves those). */
function usesTracepointBinaries(o: unknown): boolean {
  const tps = (o as { spec?: { tracepoints?: unknown } } | undefined)?.spec?.tracepoints;
  return Array.isArray(tps) && tps.some((t) => Array.isArray((t as { selectors?: unknown }).selectors) && ((t as { selectors: unknown[] }).selectors).some((sel) => Array.isArray((sel as { matchBinaries?: unknown }).matchBinaries) && (sel as { matchBinaries: unknown[] }).matchBinaries.length > 0));
}

/** The uid and generation of a policy object, where its metadata has them. */
function objectVersion(o: unknown): { uid?: string; generation?: number } {
  const m = (o as { metadata?: { uid?: unknown; generation?: unknown } } | undefined)?.metadata;
  return { ...(typeof m?.uid === "string" ? { uid: m.uid } : {}), ...(typeof m?.generation === "number" ? { generation: m.generation } : {}) };
}

if (process.argv[1] === new URL(import.meta.url).pathname) void run(process.argv.slice(2)).then((code) => (process.exitCode = code));

/** Whether the pid file names another live `membrane runtime` process (read before this one writes its own pid). */
export function earlierRuntimeRunning(pidFile: string | undefined): boolean {
  if (pidFile === undefined) return false;
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    // A reused pid is some other program: only a runtime's own command line counts.
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("runtime");
  } catch {
    return false;
  }
}
