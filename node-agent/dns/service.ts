// The node's DNS service: the proxy, the FQDN policy and the datapath's redirect wired together, with their lifecycle.
import pino from "pino";
import type { PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import { dnsRulesOn, type DnsPortRules, type DnsRuleRef, type RejectCode } from "../../core/dns/query-decision.ts";
import type { FqdnCacheOptions } from "../../core/dns/fqdn-cache.ts";
import type { Datapath } from "../bpf/datapath.ts";
import { DnsProxy, type DnsFlow } from "./proxy.ts";
import { FqdnPolicy, type FqdnSelectorTerm } from "./fqdn-policy.ts";
import type { SocketFactory } from "./netns-sockets.ts";

const log = pino({ name: "dns-service", level: process.env.LOG_LEVEL ?? "info" });

/** Rule lists kept per policy entry (one per port and protocol asked). */
const MAX_RULE_LISTS_PER_ENTRY = 1024;

export interface DnsServiceOptions {
  /** The node's IPv4 address the proxy listens on and the datapath steers IPv4 pods' queries to; absent on an IPv6-only node. */
  readonly proxyAddress?: string;
  /** The node's IPv6 address, the same for IPv6 pods; absent: their queries to a proxy port are dropped. */
  readonly proxyAddress6?: string;
  readonly cache: FqdnCacheOptions;
  readonly stateFile?: string;
  readonly rejectCode?: RejectCode;
  readonly gcIntervalMs?: number;
  readonly onFlow?: (flow: DnsFlow) => void;
  /**
   * Writes a subject's policy with these learned entries added, when another owner (the agent)
   * writes the policy map; absent, the service writes its subjects' policies itself.
   */
  readonly installSubject?: (subject: number, fqdnEntries: readonly PolicyEntry[]) => void;
  /** Adds a subject's newly learned entries, when another owner writes the policy map (false: it could not, install whole). */
  readonly addSubjectEntries?: (subject: number, added: readonly PolicyEntry[]) => boolean;
  /** Where the proxy's sockets are opened (the node's network namespace); this process's when absent. */
  readonly sockets?: SocketFactory;
}

/**
 * What the agent hands over per subject: its compiled policy (to which learned entries are added),
 * its endpoints, its DNS rules per proxy port and its toFQDNs selectors.
 */
export interface DnsSubject {
  readonly policy: SubjectPolicy;
  readonly endpoints: readonly { readonly ip: string; readonly ifindex: number }[];
  /** The DNS rules of each toPorts entry with its ports; the entry with a proxy port names their rule (ruleId). */
  readonly dnsRules: readonly DnsPortRules[];
  readonly fqdnSelectors: readonly FqdnSelectorTerm[];
}

export class DnsService {
  readonly fqdn: FqdnPolicy;
  readonly proxy: DnsProxy;
  private readonly subjects = new Map<number, DnsSubject>();
  /**
   * The DNS rules the proxy asked for, per subject, entry rule and (port << 8 | protocol): the same
   * list for every query until the subject changes, so the proxy's decision compiles it once.
   */
  private readonly rulesAsked = new Map<number, Map<number, Map<number, readonly DnsRuleRef[]>>>();
  /** The ports this service marked served in the datapath (another proxy may serve others). */
  private readonly served = new Set<number>();
  private gcTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dp: Datapath,
    private readonly opts: DnsServiceOptions,
  ) {
    this.fqdn = new FqdnPolicy(
      {
        setAddressIdentity: (ip, identity) => dp.setIpcache({ cidr: `${ip}/${ip.includes(":") ? 128 : 32}`, identity }),
        deleteAddress: (ip) => dp.deleteIpcache(`${ip}/${ip.includes(":") ? 128 : 32}`),
        installSubject: opts.installSubject ?? ((subject, entries) => this.install(subject, entries)),
        addSubjectEntries: opts.installSubject ? (opts.addSubjectEntries ?? (() => false)) : (subject, added) => this.addEntries(subject, added),
      },
      { cache: opts.cache, ...(opts.stateFile ? { stateFile: opts.stateFile } : {}) },
    );
    this.proxy = new DnsProxy({
      ...(opts.proxyAddress !== undefined ? { address: opts.proxyAddress } : {}),
      ...(opts.proxyAddress6 !== undefined ? { address6: opts.proxyAddress6 } : {}),
      originalDestination: (ip, port, proto) => dp.redirect.originalDestination(ip, port, proto),
      rules: (subject, ruleId, port, proto) => this.rulesOn(subject, ruleId, port, proto),
      learn: (addresses, from) => this.fqdn.learn(addresses, Date.now(), from.sourceIp),
      ...(opts.onFlow ? { onFlow: opts.onFlow } : {}),
      ...(opts.rejectCode ? { rejectCode: opts.rejectCode } : {}),
      ...(opts.sockets ? { sockets: opts.sockets } : {}),
    });
  }

  /** Restores the learned state into the datapath, then opens the proxy: no answer before the restore. */
  async start(): Promise<void> {
    this.dp.redirect.setProxyAddress(this.opts.proxyAddress, this.opts.proxyAddress6);
    this.fqdn.restore();
    await this.syncPorts();
    this.gcTimer = setInterval(() => this.gc(), this.opts.gcIntervalMs ?? 1000);
    this.gcTimer.unref();
  }

  /** Sets (or with undefined, forgets) a subject's DNS-relevant policy. */
  async setSubject(subject: number, s: DnsSubject | undefined): Promise<void> {
    if (s) this.subjects.set(subject, s);
    else this.subjects.delete(subject);
    this.rulesAsked.delete(subject);
    this.fqdn.setSelectors(subject, s?.fqdnSelectors ?? []);
    await this.syncPorts();
  }

  /**
   * Replaces every subject at once without writing their policies (the caller writes them, with
   * fqdn.entriesFor), and marks each new proxy port served at once: until the proxy listens there,
   * a query steered to it fails (never bypasses). Then call syncPorts to listen and to let go of
   * the ports no subject uses.
   */
  replaceSubjects(subjects: ReadonlyMap<number, DnsSubject>): void {
    for (const s of this.subjects.keys()) if (!subjects.has(s)) this.fqdn.setSelectors(s, [], false);
    this.subjects.clear();
    this.rulesAsked.clear();
    for (const [subject, s] of subjects) {
      this.subjects.set(subject, s);
      this.fqdn.setSelectors(subject, s.fqdnSelectors, false);
    }
    for (const port of this.wantedPorts()) this.serve(port);
  }

  /** Forgets expired names whose addresses no connection uses any more. */
  gc(now = Date.now()): string[] {
    // Conntrack is read (a syscall per entry) only when a name has expired past its grace period, not on every tick.
    let live: Set<string> | undefined;
    return this.fqdn.gc(now, (ip) => (live ??= this.dp.liveEgressDestinations()).has(ip));
  }

  async stop(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    // The ports stay served in the datapath: while the proxy is away, redirected queries fail (never bypass).
    await this.proxy.stop();
  }

  /** The DNS rules judging a query of `subject` steered by its entry of rule `ruleId`, sent to `port` over `proto`. */
  private rulesOn(subject: number, ruleId: number, port: number, proto: number): readonly DnsRuleRef[] {
    let byRule = this.rulesAsked.get(subject);
    if (!byRule) this.rulesAsked.set(subject, (byRule = new Map()));
    let byPort = byRule.get(ruleId);
    if (!byPort) byRule.set(ruleId, (byPort = new Map()));
    const key = (port << 8) | proto;
    let rules = byPort.get(key);
    if (!rules) {
      // Bounded: an entry with a port range steers up to 65,536 ports.
      if (byPort.size >= MAX_RULE_LISTS_PER_ENTRY) byPort.clear();
      byPort.set(key, (rules = dnsRulesOn(this.subjects.get(subject)?.dnsRules ?? [], ruleId, port, proto)));
    }
    return rules;
  }

  private wantedPorts(): Set<number> {
    const want = new Set<number>();
    for (const s of this.subjects.values()) {
      for (const e of s.policy.entries) if (e.proxyPort !== 0 && s.dnsRules.some((r) => r.ruleId === e.ruleId)) want.add(e.proxyPort);
    }
    return want;
  }

  /** Listens on every proxy port a subject's DNS rules use, marks them served, and stops the others (of this service's only). */
  async syncPorts(): Promise<void> {
    const want = this.wantedPorts();
    for (const port of want) {
      // Listen before the datapath steers anything there.
      await this.proxy.listen(port);
      this.serve(port);
    }
    for (const port of new Set([...this.proxy.ports(), ...this.served])) {
      if (want.has(port)) continue;
      this.dp.redirect.unserve(port);
      this.served.delete(port);
      await this.proxy.unlisten(port);
    }
    log.debug({ ports: [...want] }, "DNS proxy ports");
  }

  private serve(port: number): void {
    this.dp.redirect.serve(port);
    this.served.add(port);
  }

  /** Only the new allows go into the map (the lens widens for them); false when the subject must be installed whole. */
  private addEntries(subject: number, added: readonly PolicyEntry[]): boolean {
    const s = this.subjects.get(subject);
    if (!s) return true; // not this node's subject: nothing to write
    return this.dp.addSubjectEntries({ ...s.policy, entries: added }, added);
  }

  private install(subject: number, fqdnEntries: readonly PolicyEntry[]): void {
    const s = this.subjects.get(subject);
    if (!s) return;
    const r = this.dp.setSubjectPolicy({ ...s.policy, entries: [...s.policy.entries, ...fqdnEntries] }, s.endpoints);
    if (!r.installed) log.error({ subject, reason: r.reason }, "policy with learned FQDN entries not installed");
  }
}
