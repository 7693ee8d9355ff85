// The agent's side of the L7 proxy: which ports and rules its subjects' policies ask for, the proxy process kept running (outliving the agent), and the datapath serving a port only once the proxy listens on it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import type { SubjectPolicy } from "../../core/model.ts";
import type { HttpRuleRef } from "../../core/l7/http-decision.ts";
import { alive, recordedPid, stopProcess } from "../recorded-process.ts";
import { DEFAULT_LIMITS, writeProxyConfig, type ProxyConfig, type ProxyLimits } from "./config.ts";

const log = pino({ name: "l7-supervisor", level: process.env.LOG_LEVEL ?? "info" });
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = path.join(ROOT, "cli/main.ts");
// The TypeScript loader bin/membrane runs every command with.
const TSX = path.join(ROOT, "node_modules/tsx/dist/esm/index.mjs");

/** What the proxy is given and what is left out, and why. */
export interface DesiredProxy {
  readonly config: ProxyConfig;
  /** Rules whose traffic the datapath cannot steer yet (ingress): named so status can say so. */
  readonly notSteered: readonly { readonly subject: number; readonly ruleId: number; readonly reason: string }[];
}

/**
 * The proxy configuration for a node's subjects: each egress entry with a proxy port serves that
 * port with the HTTP rules of its rule (indexes as in its `toPorts[].rules.http` over all toPorts).
 * A proxied entry whose rule has no HTTP rules here (DNS, or none sent) is not this proxy's.
 */
export function desiredProxy(policies: readonly SubjectPolicy[], address: string, limits: ProxyLimits = DEFAULT_LIMITS): DesiredProxy {
  const ports = new Map<number, HttpRuleRef[]>();
  const notSteered: { subject: number; ruleId: number; reason: string }[] = [];
  for (const p of policies) {
    const byRule = new Map((p.http ?? []).map((r) => [r.ruleId, r]));
    for (const r of p.http ?? []) {
      if (r.direction === "ingress") notSteered.push({ subject: p.subject, ruleId: r.ruleId, reason: "ingress traffic is not steered to the proxy yet" });
    }
    for (const e of p.entries) {
      if (e.proxyPort === 0 || e.direction !== "egress" || e.verdict !== "allow") continue;
      const r = byRule.get(e.ruleId);
      if (!r || r.direction !== "egress" || ports.has(e.proxyPort)) continue;
      ports.set(e.proxyPort, r.rules.map((rule, index) => ({ ruleId: r.ruleId, index, rule })));
    }
  }
  const list = [...ports].sort((a, b) => a[0] - b[0]).map(([port, http]) => ({ port, http }));
  return { config: { address, ports: list, limits }, notSteered };
}

/** The datapath's side of serving: the redirect's ports (node-agent/bpf/redirect.ts ProxyRedirect). */
export interface ServedPorts {
  setProxyAddress(ipv4: string): void;
  serve(port: number): void;
  unserve(port: number): void;
}

export interface SupervisorOptions {
  /** Where the configuration, status, pid and log files live (kept across agent restarts). */
  readonly stateDir: string;
  /** The node address the proxy listens on and the datapath steers to. */
  readonly address: string;
  readonly bpfScope: string;
  readonly pinRoot?: string;
  readonly limits?: ProxyLimits;
  readonly logFlows?: boolean;
  /** How long to wait for the proxy to listen on a new port before giving up on serving it. */
  readonly listenTimeoutMs?: number;
  /**
   * A command the proxy is started under, which must exec it in place (same pid): e.g. `nsenter
   * --net=…` into the node's network namespace when the agent runs elsewhere.
   */
  readonly launcher?: readonly string[];
  /** How often the proxy process is checked (restarted when gone). */
  readonly checkIntervalMs?: number;
}

/**
 * Keeps `membrane l7proxy` running for the agent. The process is detached and recorded in a pid
 * file, so an agent restart finds and keeps it (proxied connections are not dropped); `stop()`
 * leaves it running, `shutdown()` ends it. A port is served in the datapath only after the proxy
 * reports listening on it, and unserved before the proxy drops it. While the proxy is down the
 * served ports stay served: their connections fail, never bypass (key decision 8).
 */
export class L7ProxySupervisor {
  readonly configFile: string;
  readonly statusFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  private served = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;

  constructor(
    private readonly datapath: ServedPorts,
    private readonly opts: SupervisorOptions,
  ) {
    this.configFile = path.join(opts.stateDir, "l7proxy.json");
    this.statusFile = path.join(opts.stateDir, "l7proxy.status.json");
    this.pidFile = path.join(opts.stateDir, "l7proxy.pid");
    this.logFile = path.join(opts.stateDir, "l7proxy.log");
  }

  /** Adopts a running proxy (after an agent restart) or starts one with the current (or an empty) configuration. */
  async start(): Promise<void> {
    fs.mkdirSync(this.opts.stateDir, { recursive: true });
    this.datapath.setProxyAddress(this.opts.address);
    if (!fs.existsSync(this.configFile)) writeProxyConfig(this.configFile, { address: this.opts.address, ports: [], limits: this.opts.limits ?? DEFAULT_LIMITS });
    // What an earlier agent served stays served: those are the ports the running proxy listens on.
    this.served = new Set(this.status()?.ports ?? []);
    await this.ensureRunning();
    this.timer = setInterval(() => void this.ensureRunning().catch((err: unknown) => log.error({ err: String(err) }, "L7 proxy not restarted")), this.opts.checkIntervalMs ?? 1000);
    this.timer.unref();
  }

  /**
   * Gives the proxy the rules of the node's subjects now: ports that go are unserved first, the new
   * file is written, and ports that come are served once the proxy listens on them. Returns what
   * could not be steered.
   */
  async setPolicies(policies: readonly SubjectPolicy[]): Promise<DesiredProxy> {
    const want = desiredProxy(policies, this.opts.address, this.opts.limits);
    const ports = new Set(want.config.ports.map((p) => p.port));
    for (const p of [...this.served]) {
      if (ports.has(p)) continue;
      this.datapath.unserve(p);
      this.served.delete(p);
    }
    writeProxyConfig(this.configFile, want.config);
    const fresh = [...ports].filter((p) => !this.served.has(p));
    if (fresh.length) {
      await this.waitListening(fresh);
      for (const p of fresh) {
        this.datapath.serve(p);
        this.served.add(p);
      }
    }
    log.info({ ports: [...this.served].sort((a, b) => a - b), notSteered: want.notSteered }, "L7 proxy ports");
    return want;
  }

  servedPorts(): number[] {
    return [...this.served].sort((a, b) => a - b);
  }

  /** The running proxy's pid, if any. */
  pid(): number | undefined {
    return recordedPid(this.pidFile, "l7proxy");
  }

  /** Stops watching; the proxy keeps running (an agent restart adopts it). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Stops the proxy too (uninstall, tests). Its ports stay served: their traffic fails closed. */
  async shutdown(): Promise<void> {
    this.stop();
    const pid = this.pid();
    if (pid === undefined) return;
    await stopProcess(pid, 5_000);
  }

  private status(): { pid: number; ports: number[] } | undefined {
    try {
      return JSON.parse(readText(this.statusFile) ?? "") as { pid: number; ports: number[] };
    } catch {
      return undefined;
    }
  }

  private async waitListening(ports: readonly number[]): Promise<void> {
    const deadline = Date.now() + (this.opts.listenTimeoutMs ?? 10_000);
    for (;;) {
      const s = this.status();
      const pid = this.pid();
      if (s && s.pid === pid && ports.every((p) => s.ports.includes(p))) return;
      if (Date.now() > deadline) throw new Error(`the L7 proxy did not listen on ${ports.join(", ")} within ${this.opts.listenTimeoutMs ?? 10_000} ms (see ${this.logFile})`);
      await sleep(25);
    }
  }

  private ensureRunning(): Promise<void> {
    this.starting ??= this.spawnIfGone().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async spawnIfGone(): Promise<void> {
    if (this.pid() !== undefined) return;
    const out = fs.openSync(this.logFile, "a");
    const args = [
      "--import", TSX,
      CLI,
      "l7proxy",
      "--config", this.configFile,
      "--status-file", this.statusFile,
      "--bpf-scope", this.opts.bpfScope,
      ...(this.opts.pinRoot ? ["--pin-root", this.opts.pinRoot] : []),
      ...(this.opts.logFlows ? ["--log-flows"] : []),
    ];
    // Detached, its own session and output: it outlives the agent (key decision 8).
    const [cmd, ...pre] = [...(this.opts.launcher ?? []), process.execPath];
    const child = spawn(cmd!, [...pre, ...args], { detached: true, stdio: ["ignore", out, out] });
    fs.closeSync(out);
    if (child.pid === undefined) throw new Error("the L7 proxy did not start");
    child.unref();
    fs.writeFileSync(this.pidFile, `${child.pid}\n`);
    log.info({ pid: child.pid }, "L7 proxy started");
    // Ready when it reports the configuration applied.
    const deadline = Date.now() + (this.opts.listenTimeoutMs ?? 10_000);
    while (this.status()?.pid !== child.pid) {
      if (!alive(child.pid)) throw new Error(`the L7 proxy exited at start (see ${this.logFile})`);
      if (Date.now() > deadline) throw new Error(`the L7 proxy did not become ready (see ${this.logFile})`);
      await sleep(25);
    }
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
