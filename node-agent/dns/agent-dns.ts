// The agent's DNS proxy: follows each applied state's DNS rules and toFQDNs selectors into the DNS service, and hands the agent every subject's learned entries.
import type { Logger } from "pino";
import type { PolicyEntry } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import type { DnsPortRules, RejectCode } from "../../core/dns/query-decision.ts";
import type { FqdnCacheOptions } from "../../core/dns/fqdn-cache.ts";
import type { Datapath } from "../bpf/datapath.ts";
import { DnsService, type DnsSubject } from "./service.ts";
import type { DnsFlow } from "./proxy.ts";
import { NetnsSockets } from "./netns-sockets.ts";

export interface AgentDnsOptions {
  readonly datapath: Datapath;
  /** The node's IPv4 address the proxy listens on and the datapath steers IPv4 pods' queries to (from --node-ip); absent on an IPv6-only node. */
  readonly proxyAddress?: string;
  /** The node's IPv6 address, the same for IPv6 pods (the IPv6 address of --node-ip, or --proxy-ipv6-address). */
  readonly proxyAddress6?: string;
  /** The learned names and addresses across restarts (in the agent's state directory). */
  readonly stateFile: string;
  readonly cache: FqdnCacheOptions;
  readonly rejectCode: RejectCode;
  readonly log: Logger;
  readonly onFlow?: (flow: DnsFlow) => void;
  /** The node's network namespace when the agent runs outside it (its sockets are opened there); the agent's own when absent. */
  readonly netns?: string;
}

/** What the agent asks of its DNS proxy (node-agent/agent.ts); `AgentDns` is the real one. */
export interface AgentDnsProxy {
  /**
   * Takes the state the maps hold, restores what was learned (writing subjects through
   * `rewriteSubject`), then listens. An answer's new entries go through `addLearned` (only the
   * added allows; false: it could not, and the subject is rewritten whole).
   */
  start(state: NodeState, rewriteSubject: (subject: number) => void, addLearned?: (subject: number, added: readonly PolicyEntry[]) => boolean): Promise<void>;
  /** Before a new state is written: its subjects' DNS rules and selectors (learnedEntries follows them) and new proxy ports served. */
  prepare(state: NodeState): void;
  /** After it is written: listen on new ports, let go of the ones no subject uses. */
  settle(): void;
  /** The entries of the addresses learned so far in a subject: its toFQDNs selectors', and its world and CIDR rules' (a learned address is a world peer). */
  learnedEntries(subject: number): readonly PolicyEntry[];
  /** The learned addresses' host prefixes, which a sweep of the ipcache must keep. */
  learnedPrefixes(): readonly string[];
  /** The names learned for an address, without their trailing dot (Hubble's source_names/destination_names); empty when none. */
  namesOf?(ip: string): readonly string[];
  /** Calls `listener` with every query the proxy handles from now on; returns the unsubscribe. */
  onFlow?(listener: (flow: DnsFlow) => void): () => void;
  stop(): Promise<void>;
}

export class AgentDns implements AgentDnsProxy {
  readonly service: DnsService;
  private rewrite: (subject: number) => void = () => {};
  private addLearned: (subject: number, added: readonly PolicyEntry[]) => boolean = () => false;
  private readonly sockets: NetnsSockets | undefined;
  private readonly flowListeners = new Set<(flow: DnsFlow) => void>();

  constructor(private readonly opts: AgentDnsOptions) {
    this.sockets = opts.netns === undefined ? undefined : new NetnsSockets(opts.netns, opts.log);
    this.service = new DnsService(opts.datapath, {
      ...(this.sockets ? { sockets: this.sockets } : {}),
      ...(opts.proxyAddress !== undefined ? { proxyAddress: opts.proxyAddress } : {}),
      ...(opts.proxyAddress6 !== undefined ? { proxyAddress6: opts.proxyAddress6 } : {}),
      cache: opts.cache,
      stateFile: opts.stateFile,
      rejectCode: opts.rejectCode,
      onFlow: (flow) => {
        opts.onFlow?.(flow);
        for (const l of this.flowListeners) l(flow);
      },
      // The agent owns the policy map: a learned address makes it rewrite the subject with its learned entries.
      installSubject: (subject) => this.rewrite(subject),
      addSubjectEntries: (subject, added) => this.addLearned(subject, added),
    });
  }

  async start(state: NodeState, rewriteSubject: (subject: number) => void, addLearned?: (subject: number, added: readonly PolicyEntry[]) => boolean): Promise<void> {
    this.rewrite = rewriteSubject;
    if (addLearned) this.addLearned = addLearned;
    await this.sockets?.start();
    this.prepare(state);
    await this.service.start();
    this.opts.log.info({ addresses: this.service.proxy.addresses(), ports: this.service.proxy.ports(), stateFile: this.opts.stateFile }, "DNS proxy started");
  }

  prepare(state: NodeState): void {
    const subjects = new Map<number, DnsSubject>();
    for (const p of state.policies) {
      if (!p.dns) continue;
      const dnsRules: DnsPortRules[] = p.dns.dnsRules.map((r) => ({ ruleId: r.ruleId, rules: r.rules.map((rule, index) => ({ ...rule, ruleId: r.ruleId, index })), ...(r.ports ? { ports: r.ports } : {}) }));
      subjects.set(p.subject, { policy: p, endpoints: [], dnsRules, fqdnSelectors: p.dns.fqdnSelectors });
    }
    this.service.replaceSubjects(subjects);
    // A learned address is a world peer of every subject: its world and CIDR rules' entries go to its identity too.
    this.service.fqdn.setNodeState(state);
  }

  settle(): void {
    this.service.syncPorts().catch((err: Error) => this.opts.log.error({ error: err.message }, "DNS proxy ports not opened; queries steered there fail until they are"));
  }

  learnedEntries(subject: number): readonly PolicyEntry[] {
    return this.service.fqdn.entriesFor(subject);
  }

  learnedPrefixes(): readonly string[] {
    return this.service.fqdn.prefixes();
  }

  namesOf(ip: string): readonly string[] {
    const names = this.service.fqdn.cache.namesOf(ip);
    return names.length === 0 ? names : names.map((n) => n.replace(/\.$/, ""));
  }

  onFlow(listener: (flow: DnsFlow) => void): () => void {
    this.flowListeners.add(listener);
    return () => this.flowListeners.delete(listener);
  }

  async stop(): Promise<void> {
    await this.service.stop();
    this.sockets?.stop();
  }
}
