// toFQDNs on the node: learned addresses get local identities carrying their names, and each subject's toFQDNs selectors become policy entries for them.
import fs from "node:fs";
import path from "node:path";
import pino from "pino";
import { IdentityAllocator, MAX_LOCAL_IDENTITY, MIN_FQDN_IDENTITY, fqdnIdentityLabels } from "../../core/identity.ts";
import type { FqdnSelectorTerm, PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import { FqdnCache, type FqdnCacheEntry, type FqdnCacheOptions } from "../../core/dns/fqdn-cache.ts";
import { selectorMatches } from "../../core/dns/name-pattern.ts";
import type { LearnedAddress } from "../../core/dns/answers.ts";
import { decodeFqdnStateWithJournal, encodeFqdnState, type AddressIdentity } from "../../core/dns/cache-state.ts";
import { LearnedAddressPeers, learnedPeerEntries, learnedPeerSubject, ruleOrder, type LearnedPeerSubject } from "../../core/dns/learned-peer.ts";
import type { NodeState } from "../../core/wire.ts";

const log = pino({ name: "fqdn-policy", level: process.env.LOG_LEVEL ?? "info" });

/** One toFQDNs peer of a subject's egress rule, with the ports it allows (as compiled: protocol number, port prefix). */
export type { FqdnSelectorTerm } from "../../core/model.ts";

/** Where the learned state goes: the datapath's ipcache and each subject's policy (its compiled entries plus these). */
export interface FqdnPolicyTarget {
  setAddressIdentity(ip: string, identity: number): void;
  deleteAddress(ip: string): void;
  /** Installs the subject's policy with `fqdnEntries` added to what the operator compiled; new allows before removals. */
  installSubject(subject: number, fqdnEntries: readonly PolicyEntry[]): void;
  /**
   * Adds newly learned allows to what the subject holds, touching nothing else (an answer only ever
   * adds). Absent, or when it returns false, the subject is installed whole instead.
   */
  addSubjectEntries?(subject: number, added: readonly PolicyEntry[]): boolean;
}

/** The node's received policies and ipcache as the learned addresses' identities see them (setNodeState). */
interface NodeView {
  readonly policies: ReadonlyMap<number, SubjectPolicy>;
  /** Each subject's policy split for learnedPeerEntries, made when first asked. */
  readonly subjects: Map<number, LearnedPeerSubject>;
  readonly compareRules: (a: number, b: number) => number;
  readonly peers: LearnedAddressPeers;
  /** Each learned address's place in the world (LearnedAddressPeers.peerOf), filled as asked. */
  readonly peerOf: Map<string, number>;
}

export interface FqdnPolicyOptions {
  readonly cache: FqdnCacheOptions;
  /** The state file (under the agent's state directory; its journal beside it, `.journal`); absent: nothing is persisted. */
  readonly stateFile?: string;
}

/** Journal lines before the snapshot is written anew: at least this many, and at least as many as the snapshot's entries (so rewriting it costs O(1) per line). */
const MIN_JOURNAL_LINES = 1000;
/** A refreshed deadline is journaled once it is this much later than the journaled one (a hot name is not a write per query). */
const JOURNAL_REFRESH_MS = 1000;

/**
 * The node's learned names and what they open. `learn` runs before an answer is released to the pod:
 * when it returns, every address of the answer has its identity in the ipcache and the policy map
 * holds the entries of every subject whose toFQDNs selectors match one of its names, so the first
 * connection is never dropped. Entries are written before the ipcache (no packet sees an identity
 * whose allow is missing) and removed after it. What an answer taught is on disk (a line appended to
 * the journal) before `learn` returns, so an agent killed right after releasing the answer restores it.
 */
export class FqdnPolicy {
  readonly cache: FqdnCache;
  private readonly identities = new IdentityAllocator({ min: MIN_FQDN_IDENTITY, max: MAX_LOCAL_IDENTITY });
  private readonly identityOf = new Map<string, number>();
  private readonly selectors = new Map<number, readonly FqdnSelectorTerm[]>();
  /** The snapshot's number; journal lines carry it. */
  private seq = 0;
  private journalLines = 0;
  /** Whether this process wrote (or read) a snapshot: journal lines without one would be lost. */
  private snapshotOnDisk = false;
  private snapshotEntries = 0;
  /** The deadline on disk per name and address (so a refresh is journaled only when it matters). */
  private readonly journaled = new Map<string, Map<string, number>>();
  /** Absent (a service that writes its own subjects): only the toFQDNs selectors give learned addresses entries. */
  private view: NodeView | undefined;
  /** Subjects whose learned entries were not empty when last asked (a forgotten address must be taken out of them). */
  private readonly withEntries = new Set<number>();

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
    const journal = fs.existsSync(journalOf(file)) ? fs.readFileSync(journalOf(file), "utf8") : "";
    const decoded = decodeFqdnStateWithJournal(fs.readFileSync(file, "utf8"), journal);
    if (!decoded.ok) {
      // A broken file loses what was learned (the pods will ask again), never the agent.
      log.error({ file, errors: decoded.errors }, "FQDN state file unreadable; starting empty");
      return 0;
    }
    this.seq = decoded.value.seq;
    this.snapshotOnDisk = true;
    for (const { ip, identity } of decoded.value.identities) {
      this.identities.bind(identity, ip);
      this.identityOf.set(ip, identity);
    }
    this.cache.restore(decoded.value.entries);
    const ips = this.cache.addresses();
    this.publish(ips, []);
    this.persist(); // one snapshot again, the journal empty
    log.info({ file, addresses: ips.length, entries: decoded.value.entries.length, journalLines: journal.split("\n").length - 1 }, "FQDN cache restored");
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

  /**
   * The node's state as the agent writes it (its subjects' policies, the ipcache, the rule table): a learned address's
   * identity is a world peer (core/dns/learned-peer.ts), so every subject gets the entries its world and CIDR rules
   * give that address, merged with its toFQDNs ones. The caller writes the subjects (entriesFor).
   */
  setNodeState(state: Pick<NodeState, "policies" | "ipcache" | "rules">): void {
    this.view = { policies: new Map(state.policies.map((p) => [p.subject, p])), subjects: new Map(), compareRules: ruleOrder(state.rules), peers: new LearnedAddressPeers(state.ipcache), peerOf: new Map() };
  }

  /** The learned addresses as host prefixes, so a sweep of the ipcache keeps them. */
  prefixes(): string[] {
    return [...this.identityOf.keys()].map((ip) => `${ip}/${ip.includes(":") ? 128 : 32}`);
  }

  /**
   * Records an answer's addresses and makes them usable; returns when the datapath has them and the
   * journal on disk has what was new. Only what the answer added is written: identities of new
   * addresses, each subject's entries for the addresses that gained a name, then the ipcache.
   */
  learn(addresses: readonly LearnedAddress[], now: number, source?: string): void {
    // Most answers repeat what is known (a deadline moves on): nothing is published then, and only a deadline due is journaled.
    let changed: Set<string> | undefined;
    const journaled: FqdnCacheEntry[] = [];
    for (const a of addresses) {
      for (const name of a.names) {
        const r = this.cache.learn(name, [{ ip: a.ip, ttl: a.ttl }], now, source);
        for (const ip of r.changed) (changed ??= new Set()).add(ip);
        for (const e of r.updated) if (this.needsJournal(e)) journaled.push(e);
      }
    }
    this.journal(journaled, changed ? this.publishLearned([...changed]) : []);
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

  /** The entries of every learned address the subject holds now: its toFQDNs selectors', and its world and CIDR rules' (setNodeState). */
  entriesFor(subject: number): PolicyEntry[] {
    const out = this.entriesForAddresses(subject, this.cache.addresses());
    if (out.length > 0) this.withEntries.add(subject);
    else this.withEntries.delete(subject);
    return out;
  }

  /** The subjects that may hold learned entries: with the node's state, every one of its subjects. */
  private subjects(): Iterable<number> {
    return this.view ? this.view.policies.keys() : this.selectors.keys();
  }

  /** The entries of these learned addresses in the subject. */
  private entriesForAddresses(subject: number, ips: Iterable<string>): PolicyEntry[] {
    const terms = this.selectors.get(subject) ?? [];
    const view = this.view;
    if (!view) return this.fqdnEntries(subject, terms, ips);
    const policy = view.policies.get(subject);
    if (!policy) return [];
    let s = view.subjects.get(subject);
    if (!s) view.subjects.set(subject, (s = learnedPeerSubject(policy, view.compareRules)));
    const out: PolicyEntry[] = [];
    for (const ip of ips) {
      const learned = this.identityOf.get(ip);
      if (learned === undefined) continue;
      let peer = view.peerOf.get(ip);
      if (peer === undefined) view.peerOf.set(ip, (peer = view.peers.peerOf(ip)));
      // Most subjects have neither a toFQDNs selector nor entries of the address's world peer: the world class answers.
      if (terms.length === 0 && !s.own.egress.has(peer) && !s.own.ingress.has(peer)) continue;
      const names = this.cache.namesOf(ip);
      for (const direction of ["ingress", "egress"] as const) {
        const es = learnedPeerEntries(s, direction, learned, peer, names, terms, ip.includes(":") ? 6 : 4);
        if (es) out.push(...es);
      }
    }
    return out;
  }

  /** The entries the subject's toFQDNs selectors alone give it for these addresses (no node state). */
  private fqdnEntries(subject: number, terms: readonly FqdnSelectorTerm[], ips: Iterable<string>): PolicyEntry[] {
    const out: PolicyEntry[] = [];
    for (const ip of ips) {
      const peer = this.identityOf.get(ip);
      if (peer === undefined) continue;
      const names = this.cache.namesOf(ip);
      for (const t of terms) {
        if (!names.some((n) => selectorMatches(n, t))) continue;
        for (const p of t.ports) {
          // A port with HTTP rules is steered to the L7 proxy, which judges each request (its rules travel in the subject's http part).
          out.push({ subject, direction: "egress", peer, proto: p.proto, port: p.port, portPrefixLen: p.portPrefixLen, verdict: "allow", proxyPort: p.proxyPort ?? 0, ruleId: t.ruleId });
        }
      }
    }
    return out;
  }

  /**
   * An answer's new addresses (or addresses with a new name): identities, then each subject's added
   * entries (the whole subject only when the target cannot add), then the ipcache. Returns the
   * identities it allocated.
   */
  private publishLearned(changed: readonly string[]): AddressIdentity[] {
    const allocated = this.allocate(changed);
    for (const subject of this.subjects()) {
      const added = this.entriesForAddresses(subject, changed);
      if (added.length === 0) continue;
      this.withEntries.add(subject);
      if (!this.target.addSubjectEntries?.(subject, added)) this.target.installSubject(subject, this.entriesFor(subject));
    }
    for (const ip of changed) {
      const id = this.identityOf.get(ip);
      if (id !== undefined) this.target.setAddressIdentity(ip, id);
    }
    return allocated;
  }

  private allocate(ips: readonly string[]): AddressIdentity[] {
    const allocated: AddressIdentity[] = [];
    for (const ip of ips) {
      if (this.identityOf.has(ip)) continue;
      const r = this.identities.allocate(ip);
      if (!r.ok) {
        // Fail closed: the address stays world and connections to it are refused by policy.
        log.error({ ip, error: r.errors[0]?.message }, "no identity left for a learned address");
        continue;
      }
      this.identityOf.set(ip, r.value.id);
      allocated.push({ ip, identity: r.value.id });
    }
    return allocated;
  }

  /** Identities first, then the subjects' entries, then the ipcache; removals the other way round. */
  private publish(changed: readonly string[], removed: readonly string[]): void {
    this.allocate(changed);
    for (const ip of removed) this.target.deleteAddress(ip);
    // Every subject holding learned entries now or before (a subject whose world peer lost an address loses its copy).
    for (const subject of new Set([...this.subjects(), ...this.withEntries])) {
      const had = this.withEntries.has(subject);
      const entries = this.entriesFor(subject);
      if (had || entries.length > 0 || this.selectors.has(subject)) this.target.installSubject(subject, entries);
    }
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

  /** Whether the entry's deadline is later on disk than the journal has it by enough to write it (and notes it as written). */
  private needsJournal(e: FqdnCacheEntry): boolean {
    let ips = this.journaled.get(e.name);
    if (!ips) this.journaled.set(e.name, (ips = new Map()));
    const onDisk = ips.get(e.ip);
    if (onDisk !== undefined && e.expiresAt - onDisk < JOURNAL_REFRESH_MS) return false;
    ips.set(e.ip, e.expiresAt);
    return true;
  }

  /** Appends what an answer taught to the journal (one line, one write), or writes the snapshot anew when the journal has grown enough. */
  private journal(entries: readonly FqdnCacheEntry[], identities: readonly AddressIdentity[]): void {
    const file = this.options.stateFile;
    if (!file || (entries.length === 0 && identities.length === 0)) return;
    if (!this.snapshotOnDisk || this.journalLines >= Math.max(MIN_JOURNAL_LINES, this.snapshotEntries)) return this.persist();
    fs.appendFileSync(journalOf(file), encodeFqdnState(entries, identities, this.seq));
    this.journalLines++;
  }

  /** Writes the whole state as a new snapshot, then empties the journal. */
  private persist(): void {
    const file = this.options.stateFile;
    if (!file) return;
    const identities = [...this.identityOf].map(([ip, identity]) => ({ ip, identity }));
    const entries = this.cache.entries();
    // Write-then-rename: a crash mid-write leaves the previous file, never half of one. The journal's
    // lines carry the old seq, so a crash before it is emptied leaves lines the restore ignores.
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.seq++;
    fs.writeFileSync(`${file}.tmp`, encodeFqdnState(entries, identities, this.seq));
    fs.renameSync(`${file}.tmp`, file);
    fs.rmSync(journalOf(file), { force: true });
    this.snapshotOnDisk = true;
    this.journalLines = 0;
    this.snapshotEntries = entries.length;
    this.journaled.clear();
    for (const e of entries) {
      let ips = this.journaled.get(e.name);
      if (!ips) this.journaled.set(e.name, (ips = new Map()));
      ips.set(e.ip, e.expiresAt);
    }
  }
}

function journalOf(stateFile: string): string {
  return `${stateFile}.journal`;
}
