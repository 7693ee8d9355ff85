// toFQDNs on the node: learned addresses get local identities carrying their names, and each subject's toFQDNs selectors become policy entries for them.
import fs from "node:fs";
import path from "node:path";
import pino from "pino";
import { IdentityAllocator, MAX_LOCAL_IDENTITY, MIN_FQDN_IDENTITY, fqdnIdentityLabels } from "../../core/identity.ts";
import type { FqdnSelectorTerm, PolicyEntry } from "../../core/model.ts";
import { FqdnCache, type FqdnCacheOptions } from "../../core/dns/fqdn-cache.ts";
import { selectorMatches } from "../../core/dns/name-pattern.ts";
import type { LearnedAddress } from "../../core/dns/answers.ts";
import { decodeFqdnState, encodeFqdnState } from "../../core/dns/cache-state.ts";

const log = pino({ name: "fqdn-policy", level: process.env.LOG_LEVEL ?? "info" });

/** One toFQDNs peer of a subject's egress rule, with the ports it allows (as compiled: protocol number, port prefix). */
export type { FqdnSelectorTerm } from "../../core/model.ts";

/** Where the learned state goes: the datapath's ipcache and each subject's policy (its compiled entries plus these). */
export interface FqdnPolicyTarget {
  setAddressIdentity(ip: string, identity: number): void;
  deleteAddress(ip: string): void;
  /** Installs the subject's policy with `fqdnEntries` added to what the operator compiled; new allows before removals. */
  installSubject(subject: number, fqdnEntries: readonly PolicyEntry[]): void;
}

export interface FqdnPolicyOptions {
  readonly cache: FqdnCacheOptions;
  /** The state file (under the agent's state directory); absent: nothing is persisted. */
  readonly stateFile?: string;
}

/**
 * The node's learned names and what they open. `learn` runs before an answer is released to the pod:
 * when it returns, every address of the answer has its identity in the ipcache and the policy map
 * holds the entries of every subject whose toFQDNs selectors match one of its names, so the first
 * connection is never dropped. Entries are written before the ipcache (no packet sees an identity
 * whose allow is missing) and removed after it.
 */
export class FqdnPolicy {
  readonly cache: FqdnCache;
  private readonly identities = new IdentityAllocator({ min: MIN_FQDN_IDENTITY, max: MAX_LOCAL_IDENTITY });
  private readonly identityOf = new Map<string, number>();
  private readonly selectors = new Map<number, readonly FqdnSelectorTerm[]>();

  constructor(
    private readonly target: FqdnPolicyTarget,
    private readonly options: FqdnPolicyOptions,
  ) {
    this.cache = new FqdnCache(options.cache);
  }

  /** Reads the state file (if any) and writes what it holds to the datapath; call before the proxy answers. */
  restore(): number {
    const file = this.options.stateFile;
    if (!file || !fs.existsSync(file)) return 0;
    const decoded = decodeFqdnState(fs.readFileSync(file, "utf8"));
    if (!decoded.ok) {
      // A broken file loses what was learned (the pods will ask again), never the agent.
      log.error({ file, errors: decoded.errors }, "FQDN state file unreadable; starting empty");
      return 0;
    }
    for (const { ip, identity } of decoded.value.identities) {
      this.identities.bind(identity, ip);
      this.identityOf.set(ip, identity);
    }
    this.cache.restore(decoded.value.entries);
    const ips = this.cache.addresses();
    this.publish(ips, []);
    log.info({ file, addresses: ips.length, entries: decoded.value.entries.length }, "FQDN cache restored");
    return ips.length;
  }

  /**
   * A subject's toFQDNs selectors (as compiled); its entries follow at once, unless `install` is
   * false (the caller writes the subject's policy itself, reading entriesFor).
   */
  setSelectors(subject: number, terms: readonly FqdnSelectorTerm[], install = true): void {
    if (terms.length === 0) this.selectors.delete(subject);
    else this.selectors.set(subject, terms);
    if (install) this.target.installSubject(subject, this.entriesFor(subject));
  }

  /** The learned addresses as host prefixes, so a sweep of the ipcache keeps them. */
  prefixes(): string[] {
    return [...this.identityOf.keys()].map((ip) => `${ip}/${ip.includes(":") ? 128 : 32}`);
  }

  /** Records an answer's addresses and makes them usable; returns when the datapath has them. */
  learn(addresses: readonly LearnedAddress[], now: number, source?: string): void {
    const changed = new Set<string>();
    for (const a of addresses) {
      for (const name of a.names) for (const ip of this.cache.learn(name, [{ ip: a.ip, ttl: a.ttl }], now, source).changed) changed.add(ip);
    }
    if (changed.size) {
      this.publish([...changed], []);
      this.persist();
    }
  }

  /** Forgets what expired (after the grace period) unless a connection to it lives; returns the addresses removed. */
  gc(now: number, inUse: (ip: string) => boolean): string[] {
    const r = this.cache.gc(now, inUse);
    if (r.changed.length || r.removed.length) {
      this.publish(r.changed, r.removed);
      this.persist();
    }
    return [...r.removed];
  }

  /** The identity of a learned address. */
  identity(ip: string): number | undefined {
    return this.identityOf.get(ip);
  }

  /** The labels of a learned address's identity (its CIDR labels and one fqdn: label per name). */
  labelsOf(ip: string): string[] {
    return fqdnIdentityLabels(ip, this.cache.namesOf(ip)).labels.map((l) => `${l.source}:${l.key}`);
  }

  /** The entries the subject's toFQDNs selectors give it for every learned address now. */
  entriesFor(subject: number): PolicyEntry[] {
    const terms = this.selectors.get(subject);
    if (!terms) return [];
    const out: PolicyEntry[] = [];
    for (const ip of this.cache.addresses()) {
      const peer = this.identityOf.get(ip);
      if (peer === undefined) continue;
      const names = this.cache.namesOf(ip);
      for (const t of terms) {
        if (!names.some((n) => selectorMatches(n, t))) continue;
        for (const p of t.ports) {
          out.push({ subject, direction: "egress", peer, proto: p.proto, port: p.port, portPrefixLen: p.portPrefixLen, verdict: "allow", proxyPort: 0, ruleId: t.ruleId });
        }
      }
    }
    return out;
  }

  /** Identities first, then the subjects' entries, then the ipcache; removals the other way round. */
  private publish(changed: readonly string[], removed: readonly string[]): void {
    for (const ip of changed) {
      if (this.identityOf.has(ip)) continue;
      const r = this.identities.allocate(ip);
      if (!r.ok) {
        // Fail closed: the address stays world and connections to it are refused by policy.
        log.error({ ip, error: r.errors[0]?.message }, "no identity left for a learned address");
        continue;
      }
      this.identityOf.set(ip, r.value.id);
    }
    for (const ip of removed) this.target.deleteAddress(ip);
    for (const subject of this.selectors.keys()) this.target.installSubject(subject, this.entriesFor(subject));
    for (const ip of changed) {
      const id = this.identityOf.get(ip);
      if (id !== undefined) this.target.setAddressIdentity(ip, id);
    }
    for (const ip of removed) {
      const id = this.identityOf.get(ip);
      this.identityOf.delete(ip);
      if (id !== undefined) this.identities.release(id);
    }
  }

  private persist(): void {
    const file = this.options.stateFile;
    if (!file) return;
    const identities = [...this.identityOf].map(([ip, identity]) => ({ ip, identity }));
    // Write-then-rename: a crash mid-write leaves the previous file, never half of one.
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(`${file}.tmp`, encodeFqdnState(this.cache.entries(), identities));
    fs.renameSync(`${file}.tmp`, file);
  }
}
