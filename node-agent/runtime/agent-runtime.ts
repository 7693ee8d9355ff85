// The agent's runtime enforcer: `membrane runtime` kept running as a process of its own (detached, a pid file: an
// agent restart adopts it, so enforcement does not stop with the agent), driven by two files the agent writes (the
// node's TracingPolicies from the operator's stream, the node's pods) and read back through its status file as each
// policy's status on this node (for the stream's runtime report).
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { stringify } from "yaml";
import type { PodContainer } from "../../core/container.ts";
import type { TracingPolicyItem, TracingPolicyNodeStatus } from "../../core/wire.ts";
import { alive, recordedPid, stopProcess } from "../recorded-process.ts";
import { membraneCommand } from "../self-command.ts";
import { removeRuntimePins } from "./pin-scopes.ts";
import type { PodContainers } from "./pod-containers.ts";


/** A pod of this node as the runtime reads it: events name it, namespaced policies and podSelector select by it. */
export interface RuntimePod {
  /** Its network namespace: a path (stat'ed by the runtime) or an inode number. */
  readonly netns: string | number;
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Its containers from the pod's status (the agent's pod watch); absent until known, and for a process-based pod. */
  readonly containers?: readonly PodContainer[];
}

/** What the agent reports about its runtime enforcer (AgentStatus.runtime). */
export interface RuntimeEnforcerStatus {
  readonly running: boolean;
  readonly pid?: number;
  /** Policies it enforces / does not, of those written. */
  readonly enforced: number;
  readonly notEnforced: number;
  readonly error?: string;
  /** Where it serves /metrics and its live process events (membrane observe --type process --runtime-address). */
  readonly address?: string;
  /** What the runtime warns of while it runs (the kernel's matchBinaries set full). */
  readonly warning?: string;
}

export interface AgentRuntimeOptions {
  /** Where the policy, pods, status, pid, log and event files live (kept across agent restarts). */
  readonly stateDir: string;
  readonly nodeName: string;
  readonly log: Logger;
  /** Prometheus metrics of the runtime (default 127.0.0.1:0: any free port, several agents share a host in the local cluster). */
  readonly metricsAddress?: string;
  /** The host's cgroup v2 directory as this process sees it (the runtime's connect programs, containers' cgroups); default the runtime's. */
  readonly cgroupRoot?: string;
  /** How often the process is checked (restarted when gone) and its status file read (default 500 ms). */
  readonly checkIntervalMs?: number;
  /** How long a newly started runtime may take to write its first status (default 30 s: a loaded node starts Node slowly). */
  readonly startTimeoutMs?: number;
  /**
   * The runtime is a process of its own that this agent does not start, restart or stop (`--external-runtime`: the
   * chart's membrane-runtime pod, which reads the files this agent writes and writes its own pid file): the agent's
   * pod can be deleted or upgraded without its file and exec hooks lapsing.
   */
  readonly external?: boolean;
  /** The runtime's pin scope (its --bpf-scope; default the runtime's own, "runtime"): tests and the process-based local cluster give theirs. */
  readonly bpfScope?: string;
  /** How long shutdown() waits for an external runtime to end (its pod is deleted at the uninstall too; default 2 s). */
  readonly externalExitWaitMs?: number;
}

/** The runtime's status file: each policy by its runtime key (`name`, `namespace/name`). */
interface StatusFile {
  readonly address?: string;
  readonly warnings?: readonly string[];
  readonly policies: Readonly<Record<string, { enforced: boolean; reason?: string; message?: string; uid?: string; generation?: number }>>;
}

/** The runtime's key of a policy item (node-agent/runtime/enforcement.ts policyKey). */
const runtimeKey = (i: TracingPolicyItem): string => (i.policy.kind === "TracingPolicyNamespaced" ? `${i.policy.metadata.namespace ?? ""}/${i.policy.metadata.name}` : i.policy.metadata.name);

export class AgentRuntime {
  readonly policyFile: string;
  readonly podsFile: string;
  readonly statusFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly eventsFile: string;
  private items: readonly TracingPolicyItem[] = [];
  private timer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private error: string | undefined;
  private last = "";
  private wasRunning: boolean | undefined;
  private readonly listeners: (() => void)[] = [];
  /** Whether a runtime was running when startFromLastState() looked (undefined: it did not look). */
  private inherited: boolean | undefined;

  constructor(private readonly opts: AgentRuntimeOptions) {
    this.policyFile = path.join(opts.stateDir, "runtime-policies.yaml");
    this.podsFile = path.join(opts.stateDir, "runtime-pods.json");
    this.statusFile = path.join(opts.stateDir, "runtime-status.json");
    this.pidFile = path.join(opts.stateDir, "runtime.pid");
    this.logFile = path.join(opts.stateDir, "runtime.log");
    this.eventsFile = path.join(opts.stateDir, "runtime-events.log");
  }

  /**
   * Starts a runtime from the files an earlier agent wrote, without waiting for it, when none runs and both files are
   * there: start() then writes this agent's state into them and waits for that runtime.
   */
  startFromLastState(): void {
    if (this.opts.external) return; // its own pod runs it, from the files as they are
    this.inherited = this.pid() !== undefined;
    if (this.inherited || !fs.existsSync(this.policyFile) || !fs.existsSync(this.podsFile)) return;
    void this.ensureRunning().catch((err: unknown) => this.opts.log.error({ error: err instanceof Error ? err.message : String(err) }, "runtime enforcer not started from the last state: the agent's start tries again"));
  }

  /**
   * Writes the files for the state the agent holds, then adopts the runtime an earlier agent left running (by its
   * pid file: it kept enforcing meanwhile) or starts one; from then on checks it and restarts it when it is gone.
   */
  async start(items: readonly TracingPolicyItem[], pods: readonly RuntimePod[]): Promise<void> {
    fs.mkdirSync(this.opts.stateDir, { recursive: true });
    this.setPolicies(items);
    this.setPods(pods);
    this.timer = setInterval(() => this.check(), this.opts.checkIntervalMs ?? 500);
    this.timer.unref();
    const adopted = this.inherited ?? this.pid() !== undefined;
    if (this.opts.external) {
      // Not waited for: its pod may start after this agent; until it runs, the policies' status says EnforcerDown.
      this.check();
      this.opts.log.info({ pid: this.pid(), external: true, pidFile: this.pidFile, policies: items.length }, "runtime enforcer is a pod of its own: this agent writes its files");
      return;
    }
    try {
      await this.ensureRunning();
    } finally {
      this.check();
    }
    this.opts.log.info({ pid: this.pid(), adopted, fromLastState: this.inherited === false, policies: items.length }, "runtime enforcer running");
  }

  /** The node's TracingPolicies now: the policy file rewritten (atomically, only when it changes); the runtime polls it. */
  setPolicies(items: readonly TracingPolicyItem[]): void {
    this.items = items;
    // Each object with its uid and generation, so the runtime's status says which version it describes.
    const docs = items.map((i) => stringify({ ...i.policy, metadata: { ...i.policy.metadata, uid: i.uid, generation: i.generation } }));
    writeIfChanged(this.policyFile, docs.join("---\n"));
    this.check();
  }

  /** The node's pods now (the runtime polls the file). */
  setPods(pods: readonly RuntimePod[]): void {
    const sorted = [...pods].sort((a, b) => (a.namespace === b.namespace ? (a.name < b.name ? -1 : 1) : a.namespace < b.namespace ? -1 : 1));
    writeIfChanged(this.podsFile, `${JSON.stringify({ pods: sorted })}\n`);
  }

  /**
   * The pods' containers of the pods file an earlier agent wrote (this state dir survives the agent's pod): a new
   * agent writes them again until its pod watch has synced, or its runtime would drop every containerSelector rule
   * (the pinned connect rules included) for as long as the API takes to answer.
   */
  writtenContainers(): PodContainers {
    const out = new Map<string, Map<string, readonly PodContainer[]>>();
    let pods: unknown;
    try {
      pods = (JSON.parse(fs.readFileSync(this.podsFile, "utf8")) as { pods?: unknown }).pods;
    } catch {
      return out; // none written yet, or unreadable: nothing to carry over
    }
    if (!Array.isArray(pods)) return out;
    for (const p of pods as Partial<RuntimePod>[]) {
      if (typeof p.namespace !== "string" || typeof p.name !== "string" || !Array.isArray(p.containers) || p.containers.length === 0) continue;
      const byName = out.get(p.namespace) ?? new Map<string, readonly PodContainer[]>();
      out.set(p.namespace, byName);
      byName.set(p.name, p.containers);
    }
    return out;
  }

  /**
   * Each written policy's status on this node: from the runtime's status file where it describes that uid and
   * generation; while the runtime is not running, every policy is not enforced (its fanotify marks and programs
   * went with it). A policy the runtime has not read yet is left out (the operator counts it as pending).
   */
  statuses(): TracingPolicyNodeStatus[] {
    const running = this.running();
    const file = running ? this.readStatus() : undefined;
    const out: TracingPolicyNodeStatus[] = [];
    for (const i of this.items) {
      const base = { key: i.key, uid: i.uid, generation: i.generation };
      if (!running) {
        out.push({ ...base, enforced: false, reason: "EnforcerDown", message: this.error ?? (this.opts.external ? "the runtime enforcer is not running (its pod, membrane-runtime, runs it: kubectl get pods -l app.kubernetes.io/component=runtime)" : "the runtime enforcer is not running (the agent restarts it)") });
        continue;
      }
      const s = file?.policies[runtimeKey(i)];
      if (!s || s.uid !== i.uid || s.generation !== i.generation) continue;
      out.push({ ...base, enforced: s.enforced === true, ...(s.enforced ? {} : { reason: s.reason ?? "NotEnforced", message: s.message ?? "" }) });
    }
    return out;
  }

  status(): RuntimeEnforcerStatus {
    const s = this.statuses();
    const pid = this.pid();
    const file = pid !== undefined ? this.readStatus() : undefined;
    const address = file?.address;
    const warning = Array.isArray(file?.warnings) && file.warnings.length > 0 ? file.warnings.join("; ") : undefined;
    return {
      running: pid !== undefined,
      ...(pid !== undefined ? { pid } : {}),
      ...(typeof address === "string" ? { address } : {}),
      ...(warning !== undefined ? { warning } : {}),
      enforced: s.filter((x) => x.enforced).length,
      notEnforced: s.filter((x) => !x.enforced).length,
      ...(this.error !== undefined ? { error: this.error } : {}),
    };
  }

  /** Where the running runtime serves its live events (loopback; the agent passes them on under its TLS), or undefined. */
  address(): string | undefined {
    if (this.pid() === undefined) return undefined;
    const a = this.readStatus()?.address;
    return typeof a === "string" ? a : undefined;
  }

  running(): boolean {
    return this.pid() !== undefined;
  }

  /** Calls `f` when statuses() may have changed (the runtime applied a change, died or came back). */
  onChange(f: () => void): void {
    this.listeners.push(f);
  }

  pid(): number | undefined {
    // The policy file's path in its argv: this agent's runtime, not another node's on the same host.
    return recordedPid(this.pidFile, this.policyFile);
  }

  /** Stops watching; the runtime keeps enforcing and the next agent adopts it. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Stops the runtime too (the enforcer switched off, uninstall, tests): its programs and marks are removed at its
   * SIGTERM; the connect and tracepoint programs a runtime of this state dir left pinned (killed, or stopped with
   * --keep-sensors-on-exit: both leave its pid file) go too.
   */
  async shutdown(): Promise<void> {
    this.stop();
    if (this.opts.external) {
      // A runtime of its own pod ends with that pod (uninstall deletes its DaemonSet too). Its policy file goes first:
      // a runtime still running then reads no policy and removes its programs, and one with --keep-sensors-on-exit
      // keeps nothing at its SIGTERM from now on. One that stopped before, keeping them, left its pid file: below.
      fs.rmSync(this.policyFile, { force: true });
      const pid = this.pid();
      const until = Date.now() + (this.opts.externalExitWaitMs ?? 2_000);
      while (pid !== undefined && alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      if (pid !== undefined && alive(pid)) {
        this.opts.log.info({ pid }, "runtime enforcer still running: it removes its programs itself (its policy file is gone)");
        return;
      }
    } else {
      const pid = this.pid();
      if (pid !== undefined) await stopProcess(pid, 10_000);
    }
    // Only where this state dir's runtime ran: the process-based local cluster's nodes share one bpffs.
    if (fs.existsSync(this.pidFile)) {
      const removed = removeRuntimePins(this.opts.bpfScope);
      if (removed.length > 0) this.opts.log.info({ scopes: removed }, "runtime enforcer's pinned programs removed");
      fs.rmSync(this.pidFile, { force: true });
    }
  }

  /** Restarts a runtime that is gone; tells the listeners when the statuses moved. */
  private check(): void {
    if (this.timer !== undefined && !this.opts.external && !this.running()) {
      void this.ensureRunning().catch((err: unknown) => {
        this.error = err instanceof Error ? err.message : String(err);
        this.opts.log.error({ error: this.error }, "runtime enforcer not restarted: TracingPolicies are not enforced on this node until it runs");
      });
    }
    const running = this.running();
    if (running !== this.wasRunning) {
      if (running === false && this.wasRunning === true) this.opts.log.error({ pidFile: this.pidFile, ...(this.opts.external ? { external: true } : { log: this.logFile }) }, "runtime enforcer down: TracingPolicies are not enforced until it is back");
      this.wasRunning = running;
    }
    const now = JSON.stringify(this.statuses());
    if (now === this.last) return;
    this.last = now;
    for (const f of this.listeners) f();
  }

  private ensureRunning(): Promise<void> {
    this.starting ??= this.spawnIfGone().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async spawnIfGone(): Promise<void> {
    if (this.pid() !== undefined) return;
    const out = fs.openSync(this.logFile, "a");
    const args = [
      ...membraneCommand(),
      "runtime",
      "--export-file", this.eventsFile,
      "--policy-file", this.policyFile,
      "--status-file", this.statusFile,
      "--pods-file", this.podsFile,
      "--node-name", this.opts.nodeName,
      "--metrics-address", this.opts.metricsAddress ?? "127.0.0.1:0",
      ...(this.opts.cgroupRoot !== undefined ? ["--cgroup-root", this.opts.cgroupRoot] : []),
      ...(this.opts.bpfScope !== undefined ? ["--bpf-scope", this.opts.bpfScope] : []),
    ];
    // A status of an earlier runtime says nothing of this one.
    fs.rmSync(this.statusFile, { force: true });
    // Detached, its own session and output: it outlives the agent.
    const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", out, out] });
    fs.closeSync(out);
    if (child.pid === undefined) throw new Error("the runtime enforcer did not start");
    child.unref();
    fs.writeFileSync(this.pidFile, `${child.pid}\n`);
    this.opts.log.info({ pid: child.pid }, "runtime enforcer started");
    // Ready when it has written its first status (it has read the policy file).
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    while (!fs.existsSync(this.statusFile)) {
      if (!alive(child.pid)) throw new Error(`the runtime enforcer exited at start (see ${this.logFile})`);
      if (Date.now() > deadline) throw new Error(`the runtime enforcer wrote no status within ${this.opts.startTimeoutMs ?? 30_000} ms (see ${this.logFile})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    this.error = undefined;
  }

  private readStatus(): StatusFile | undefined {
    try {
      const v = JSON.parse(fs.readFileSync(this.statusFile, "utf8")) as StatusFile;
      return typeof v.policies === "object" && v.policies !== null ? v : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Writes `text` to `file` through a rename (a poller never reads half a file), unless it holds that text already. */
function writeIfChanged(file: string, text: string): void {
  try {
    if (fs.readFileSync(file, "utf8") === text) return;
  } catch {
    // absent: written below
  }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
