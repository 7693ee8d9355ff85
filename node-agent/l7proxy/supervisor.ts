// The agent's side of the L7 proxy: which ports and rules its subjects' policies ask for, the proxy process kept running (outliving the agent), and the datapath serving a port only once the proxy listens on it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import pino from "pino";
import type { PolicyEntry, RuleTls, SubjectPolicy } from "../../core/model.ts";
import { httpRulesAt, tlsAt } from "../../core/policy/http-rules.ts";
import { alive, recordedPid, stopProcess } from "../recorded-process.ts";
import { membraneCommand } from "../self-command.ts";
import { DEFAULT_LIMITS, configText, parseProxyConfig, writeProxyConfig, type ProxyConfig, type ProxyLimits, type ProxyPortConfig } from "./config.ts";
import { FLOW_SOCKET_NAME } from "./flow-socket.ts";
import { EXTERNAL_FLOW_SOCKET_NAME, ExternalProxy, type ExternalProxyOptions } from "./external.ts";
import { portTlsFromRules, pruneMaterial } from "./tls.ts";

const log = pino({ name: "l7-supervisor", level: process.env.LOG_LEVEL ?? "info" });

/** What the proxy is given. */
export interface DesiredProxy {
  readonly config: ProxyConfig;
}

/**
 * The proxy configuration for a node's subjects: each allow entry with a proxy port serves that
 * port with the HTTP rules the subject's policy gives it (core/policy/http-rules.ts `httpRulesAt`:
 * the union of the HTTP rules of every rule allowing the entry's key, ORed, each naming its rule and
 * index), egress ones as the client's rules, ingress ones as the destination's (the datapath steers
 * a local client there, and the proxy's mark says the destination's rules were applied). A proxied
 * entry with no HTTP rules here (DNS, or none sent) is not this proxy's. A port whose rules carry TLS
 * gets its Secrets' material written under `tlsDir` (tls.ts portTlsFromRules; without it the port
 * refuses its connections).
 */
export function desiredProxy(policies: readonly SubjectPolicy[], addresses: ProxyAddresses, limits: ProxyLimits = DEFAULT_LIMITS, tlsDir?: string, httpNormalizePath = true): DesiredProxy {
  const ports = new Map<number, ProxyPortConfig>();
  for (const p of policies) {
    for (const e of [...p.entries, ...fqdnProxyEntries(p)]) {
      if (e.proxyPort === 0 || e.verdict !== "allow" || ports.has(e.proxyPort)) continue;
      const http = httpRulesAt(p, e);
      const rulesTls = tlsAt(p, e);
      // No HTTP rules: the port is this proxy's only when its rules carry serverNames alone (judged by the SNI).
      const sniOnly = http.length === 0 && rulesTls !== undefined && rulesTls !== "conflict" && !rulesTls.terminating && !rulesTls.originating && (rulesTls.serverNames?.length ?? 0) > 0;
      if (http.length === 0 && !sniOnly) continue;
      const tls = rulesTls === undefined ? undefined : sniOnly ? { serverNames: (rulesTls as RuleTls).serverNames! } : tlsDir ? portTlsFromRules(rulesTls, tlsDir) : { unavailable: "the agent has no directory for TLS material" };
      ports.set(e.proxyPort, { port: e.proxyPort, ...(e.direction === "ingress" ? { direction: "ingress" as const } : {}), http, ...(tls ? { tls } : {}) });
    }
  }
  return { config: { ...proxyAddresses(addresses), ports: [...ports.values()].sort((a, b) => a.port - b.port), limits, ...normalizing(httpNormalizePath) } };
}

/**
 * The proxied ports of a subject's toFQDNs rules, as the entries the DNS proxy writes for their learned
 * addresses will name them: served from the start, so the first connection after an answer finds them.
 */
function fqdnProxyEntries(p: SubjectPolicy): PolicyEntry[] {
  const out: PolicyEntry[] = [];
  for (const t of p.dns?.fqdnSelectors ?? []) {
    for (const port of t.ports) {
      if (!port.proxyPort) continue;
      out.push({ subject: p.subject, direction: "egress", peer: 0, proto: port.proto, port: port.port, portPrefixLen: port.portPrefixLen, verdict: "allow", proxyPort: port.proxyPort, ruleId: t.ruleId });
    }
  }
  return out;
}

/** The configuration's httpNormalizePath: written only when off (config.ts). */
function normalizing(on: boolean): Pick<ProxyConfig, "httpNormalizePath"> {
  return on ? {} : { httpNormalizePath: false };
}

/** The node addresses the proxy listens on and the datapath steers to: IPv4, IPv6, or both (an IPv6-only node has no IPv4 one). */
export interface ProxyAddresses {
  readonly address?: string;
  readonly address6?: string;
}

/** Only the addresses that are set (a configuration carries no undefined fields). */
function proxyAddresses(a: ProxyAddresses): ProxyAddresses {
  return { ...(a.address !== undefined ? { address: a.address } : {}), ...(a.address6 !== undefined ? { address6: a.address6 } : {}) };
}

/** The datapath's side of serving: the redirect's ports (node-agent/bpf/redirect.ts ProxyRedirect). */
export interface ServedPorts {
  setProxyAddress(ipv4: string | undefined, ipv6?: string): void;
  serve(port: number): void;
  unserve(port: number): void;
  /** Every port served now (the DNS proxy's too). */
  servedPorts(): number[];
}

export interface SupervisorOptions extends ProxyAddresses {
  /** Where the configuration, status, pid and log files live (kept across agent restarts). */
  readonly stateDir: string;
  readonly bpfScope: string;
  readonly pinRoot?: string;
  readonly limits?: ProxyLimits;
  /** Request paths normalized before they are judged and forwarded (--http-normalize-path; default true). */
  readonly httpNormalizePath?: boolean;
  readonly logFlows?: boolean;
  /** How long to wait for the proxy to listen on a new port before giving up on serving it. */
  readonly listenTimeoutMs?: number;
  /** How long a newly started proxy may take to report ready (default 30 s: a loaded node starts Node slowly). */
  readonly startTimeoutMs?: number;
  /**
   * A command the proxy is started under, which must exec it in place (same pid): e.g. `nsenter
   * --net=…` into the node's network namespace when the agent runs elsewhere.
   */
  readonly launcher?: readonly string[];
  /** How often the proxy process is checked (restarted when gone). */
  readonly checkIntervalMs?: number;
  /**
   * A proxy the agent does not own (external.ts, the chart's membrane-l7proxy DaemonSet): reached over the config
   * socket in this directory, never started or ended here. Absent: the supervisor starts the proxy itself.
   */
  readonly external?: ExternalProxyOptions;
}

/** What the proxy last reported: its pid, the ports it listens on, the configuration generation it applied. */
export interface ProxyReport {
  readonly pid: number;
  readonly ports: readonly number[];
  readonly generation?: number;
}

/** The proxy as the supervisor reaches it: a process it starts itself (EmbeddedProxy) or one of its own that connects to the agent (external.ts). */
export interface ProxyProcess {
  /** Starts it when gone (embedded) or waits for it on its socket (external); rejects when it cannot. */
  ensureRunning(): Promise<void>;
  /** Hands it the configuration just recorded in the configuration file (embedded: the file is the channel). */
  configure(config: ProxyConfig): void;
  /** Its pid while it runs (embedded) or is connected (external). */
  pid(): number | undefined;
  /** What it last reported. */
  report(): ProxyReport | undefined;
  /** Why it is down, for the agent's status. */
  downReason(): string;
  /** Stops watching it; it keeps running. */
  stop(): void;
  /** Ends it, when it is the agent's. */
  shutdown(): Promise<void>;
}

/**
 * Keeps the node's L7 proxy configured for the agent: `membrane l7proxy` started by the supervisor (embedded:
 * detached and recorded in a pid file, so an agent restart finds and keeps it) or a proxy of its own that connects
 * to the agent (external.ts). Either way an agent restart does not drop proxied connections; `stop()` leaves the
 * proxy running, `shutdown()` ends an embedded one. A port is served in the datapath only after the proxy reports
 * listening on it, and unserved before the proxy drops it. While the proxy is down the served ports stay served:
 * their connections fail, never bypass (key decision 8).
 */
export class L7ProxySupervisor {
  readonly configFile: string;
  readonly statusFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** The ports this supervisor served (kept across agent restarts: the map also holds the DNS proxy's). */
  readonly servedFile: string;
  /** Where the agent receives the proxy's flows (flow-socket.ts). */
  readonly flowSocket: string;
  private served = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  /** Where the TLS material of the proxy's ports is written (0700, files 0600). */
  readonly tlsDir: string;
  /** The configuration last written (its ports' rules are kept while they are still served). */
  private written: ProxyConfig | undefined;
  /** The proxy process, embedded or external. */
  readonly proxy: ProxyProcess;

  constructor(
    private readonly datapath: ServedPorts,
    private readonly opts: SupervisorOptions,
  ) {
    this.configFile = path.join(opts.stateDir, "l7proxy.json");
    this.statusFile = path.join(opts.stateDir, "l7proxy.status.json");
    this.pidFile = path.join(opts.stateDir, "l7proxy.pid");
    this.logFile = path.join(opts.stateDir, "l7proxy.log");
    this.servedFile = path.join(opts.stateDir, "l7proxy.served.json");
    // An external proxy reads the material where it meets the agent (its pod mounts that directory, not the agent's state).
    this.tlsDir = opts.external ? path.join(opts.external.socketDir, "tls") : path.join(opts.stateDir, "l7proxy-tls");
    if (opts.external) {
      this.flowSocket = path.join(opts.external.socketDir, EXTERNAL_FLOW_SOCKET_NAME);
      this.proxy = new ExternalProxy(opts.external);
    } else {
      this.flowSocket = path.join(opts.stateDir, FLOW_SOCKET_NAME);
      this.proxy = new EmbeddedProxy({ ...opts, configFile: this.configFile, statusFile: this.statusFile, pidFile: this.pidFile, logFile: this.logFile, flowSocket: this.flowSocket });
    }
  }

  /** Adopts a running proxy (after an agent restart) or starts one (or waits for an external one) with the current (or an empty) configuration. */
  async start(): Promise<void> {
    fs.mkdirSync(this.opts.stateDir, { recursive: true });
    this.datapath.setProxyAddress(this.opts.address, this.opts.address6);
    // A proxy an earlier agent started itself would hold the ports the external one must listen on.
    const leftover = this.opts.external ? recordedPid(this.pidFile, "l7proxy") : undefined;
    if (leftover !== undefined) {
      log.info({ pid: leftover }, "L7 proxy started by an earlier agent stopped: the proxy is external now");
      await stopProcess(leftover, 5_000);
    }
    if (!fs.existsSync(this.configFile)) this.write({ ...proxyAddresses(this.opts), ports: [], limits: this.opts.limits ?? DEFAULT_LIMITS, ...normalizing(this.opts.httpNormalizePath ?? true) });
    else {
      this.written = readConfig(this.configFile);
      // An external proxy is sent it when it connects (a restarted agent re-sends what it last gave).
      if (this.written) this.proxy.configure(this.written);
    }
    // What an earlier agent served stays served, as far as the datapath still serves it.
    const inMap = new Set(this.datapath.servedPorts());
    this.served = new Set(this.recordedServed().filter((p) => inMap.has(p)));
    // Watching first: a proxy that does not start now is tried again (its ports meanwhile fail closed).
    this.timer = setInterval(() => void this.proxy.ensureRunning().catch((err: unknown) => log.error({ err: String(err) }, "L7 proxy not restarted")), this.opts.checkIntervalMs ?? 1000);
    this.timer.unref();
    await this.proxy.ensureRunning();
  }

  /**
   * Gives the proxy the rules of the node's subjects now: `prepare` then `settle` (tests and a
   * caller that writes no policy entries in between).
   */
  async setPolicies(policies: readonly SubjectPolicy[]): Promise<DesiredProxy> {
    const want = await this.prepare(policies);
    this.settle(policies);
    return want;
  }

  /**
   * Before entries naming new proxy ports are written: the proxy is given the new rules (ports
   * still served keep theirs until `settle`) and each new port is served once the proxy listens on
   * it. When the proxy does not listen in time the new ports are served all the same (their
   * connections fail, never bypass: key decision 8) and the error is thrown for the caller to report.
   */
  async prepare(policies: readonly SubjectPolicy[]): Promise<DesiredProxy> {
    const want = desiredProxy(policies, this.opts, this.opts.limits, this.tlsDir, this.opts.httpNormalizePath);
    const ports = new Set(want.config.ports.map((p) => p.port));
    // Ports that go keep their rules until the entries naming them are gone (settle): no window.
    const keep = (this.written?.ports ?? []).filter((p) => !ports.has(p.port) && this.served.has(p.port));
    const changed = this.write({ ...want.config, ports: [...want.config.ports, ...keep].sort((a, b) => a.port - b.port) });
    const fresh = [...ports].filter((p) => !this.served.has(p));
    // New rules on a served port are in force before the entries that need them are written, as a new port is listened on.
    if (fresh.length || changed) {
      try {
        await this.waitApplied(fresh);
      } finally {
        for (const p of fresh) {
          this.datapath.serve(p);
          this.served.add(p);
        }
        this.recordServed();
      }
    }
    return want;
  }

  /** After the entries are written: ports no entry names any more are unserved, then dropped by the proxy. */
  settle(policies: readonly SubjectPolicy[]): void {
    const want = desiredProxy(policies, this.opts, this.opts.limits, this.tlsDir, this.opts.httpNormalizePath);
    const ports = new Set(want.config.ports.map((p) => p.port));
    for (const p of [...this.served]) {
      if (ports.has(p)) continue;
      this.datapath.unserve(p);
      this.served.delete(p);
    }
    this.recordServed();
    this.write(want.config);
    pruneMaterial(this.tlsDir, want.config);
    log.info({ ports: [...this.served].sort((a, b) => a - b) }, "L7 proxy ports");
  }

  /** Whether the proxy runs (or is connected) and has reported since it started. */
  running(): boolean {
    const pid = this.pid();
    return pid !== undefined && this.status()?.pid === pid;
  }

  /** Why the proxy is down (for status), when it is. */
  downReason(): string {
    return this.proxy.downReason();
  }

  /**
   * Writes `config` as the next generation, unless the file's text would say the same as now, and hands it to the
   * proxy; whether it wrote. The file is also the record a restarted agent re-sends an external proxy.
   */
  private write(config: ProxyConfig): boolean {
    const generation = this.written?.generation ?? 0;
    if (this.written && configText({ ...config, generation }) === configText(this.written)) return false;
    const next = { ...config, generation: generation + 1 };
    writeProxyConfig(this.configFile, next);
    this.written = next;
    this.proxy.configure(next);
    return true;
  }

  servedPorts(): number[] {
    return [...this.served].sort((a, b) => a - b);
  }

  /** The running proxy's pid, if any. */
  pid(): number | undefined {
    return this.proxy.pid();
  }

  /** Stops watching; the proxy keeps running (an agent restart adopts it). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.proxy.stop();
  }

  /** Stops an embedded proxy too (uninstall, tests). Its ports stay served: their traffic fails closed. */
  async shutdown(): Promise<void> {
    this.stop();
    await this.proxy.shutdown();
  }

  /** The ports an earlier supervisor recorded as served (before that file existed: what its proxy listened on). */
  private recordedServed(): number[] {
    try {
      return (JSON.parse(readText(this.servedFile) ?? "") as { ports: number[] }).ports.filter((p) => Number.isInteger(p));
    } catch {
      return [...(this.status()?.ports ?? [])];
    }
  }

  private recordServed(): void {
    const tmp = `${this.servedFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ ports: this.servedPorts() })}\n`);
    fs.renameSync(tmp, this.servedFile);
  }

  private status(): ProxyReport | undefined {
    return this.proxy.report();
  }

  /** Until the proxy reports the configuration last written in force and listens on `ports`. */
  private async waitApplied(ports: readonly number[]): Promise<void> {
    const deadline = Date.now() + (this.opts.listenTimeoutMs ?? 10_000);
    const generation = this.written?.generation ?? 0;
    for (;;) {
      const s = this.status();
      const pid = this.pid();
      if (s && s.pid === pid && (s.generation ?? 0) >= generation && ports.every((p) => s.ports.includes(p))) return;
      if (Date.now() > deadline) {
        const where = this.opts.external ? (pid === undefined ? this.downReason() : `the external proxy, pid ${pid}`) : `see ${this.logFile}`;
        throw new Error(`the L7 proxy did not apply configuration ${generation}${ports.length ? ` (listening on ${ports.join(", ")})` : ""} within ${this.opts.listenTimeoutMs ?? 10_000} ms (${where})`);
      }
      await sleep(25);
    }
  }
}

interface EmbeddedProxyOptions extends SupervisorOptions {
  readonly configFile: string;
  readonly statusFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly flowSocket: string;
}

/** `membrane l7proxy` started by the supervisor: detached, recorded in a pid file, configured by the file the supervisor writes, reporting in its status file. */
class EmbeddedProxy implements ProxyProcess {
  private starting: Promise<void> | undefined;

  constructor(private readonly opts: EmbeddedProxyOptions) {}

  ensureRunning(): Promise<void> {
    this.starting ??= this.spawnIfGone().finally(() => (this.starting = undefined));
    return this.starting;
  }

  /** The proxy reads the file the supervisor wrote. */
  configure(): void {}

  pid(): number | undefined {
    return recordedPid(this.opts.pidFile, "l7proxy");
  }

  report(): ProxyReport | undefined {
    try {
      return JSON.parse(readText(this.opts.statusFile) ?? "") as ProxyReport;
    } catch {
      return undefined;
    }
  }

  downReason(): string {
    return "the L7 proxy process is not running (the supervisor restarts it)";
  }

  stop(): void {}

  async shutdown(): Promise<void> {
    const pid = this.pid();
    if (pid === undefined) return;
    await stopProcess(pid, 5_000);
  }

  private async spawnIfGone(): Promise<void> {
    if (this.pid() !== undefined) return;
    const out = fs.openSync(this.opts.logFile, "a");
    const args = [
      ...membraneCommand(),
      "l7proxy",
      "--config", this.opts.configFile,
      "--status-file", this.opts.statusFile,
      "--flow-socket", this.opts.flowSocket,
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
    fs.writeFileSync(this.opts.pidFile, `${child.pid}\n`);
    log.info({ pid: child.pid }, "L7 proxy started");
    // Ready when it reports the configuration applied.
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    while (this.report()?.pid !== child.pid) {
      if (!alive(child.pid)) throw new Error(`the L7 proxy exited at start (see ${this.opts.logFile})`);
      if (Date.now() > deadline) throw new Error(`the L7 proxy did not become ready (see ${this.opts.logFile})`);
      await sleep(25);
    }
  }
}

function readConfig(file: string): ProxyConfig | undefined {
  const r = parseProxyConfig(readText(file) ?? "");
  return r.ok ? r.value : undefined;
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
