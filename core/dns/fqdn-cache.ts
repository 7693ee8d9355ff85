// What the DNS proxy learned: name → addresses with their deadlines, the names of every address, and when an address may be forgotten.
import { normalizeDnsName } from "./name-pattern.ts";

export interface FqdnCacheOptions {
  /** An answer's TTL is raised to at least this (Cilium's --tofqdns-min-ttl). */
  readonly minTtlSeconds: number;
  /** At most this many addresses per name; the ones that expire first go (--tofqdns-endpoint-max-ip-per-hostname). */
  readonly maxAddressesPerName: number;
  /** How long after its TTL an entry stays, so a connection opened at the last moment still finds it. */
  readonly graceSeconds: number;
}

export const DEFAULT_FQDN_CACHE_OPTIONS: FqdnCacheOptions = { minTtlSeconds: 0, maxAddressesPerName: 50, graceSeconds: 5 };

/** One learned (name, address) pair. Names are stored normalized: lower case, trailing dot. */
export interface FqdnCacheEntry {
  readonly name: string;
  readonly ip: string;
  /** Epoch milliseconds when the answer's (raised) TTL runs out. */
  readonly expiresAt: number;
  /** The pod whose lookup taught it (`namespace/name`), when known. */
  readonly source?: string;
}

/** Addresses whose set of names changed (gained or lost one) and addresses that no longer have any. */
export interface CacheChange {
  readonly changed: readonly string[];
  readonly removed: readonly string[];
}

/** What an answer changed: addresses that gained a name, and every entry it added or gave a later deadline (what a journal must keep). */
export interface LearnChange extends CacheChange {
  readonly updated: readonly FqdnCacheEntry[];
}

export class FqdnCache {
  private readonly byName = new Map<string, Map<string, FqdnCacheEntry>>();
  private readonly byIp = new Map<string, Set<string>>();

  constructor(readonly options: FqdnCacheOptions = DEFAULT_FQDN_CACHE_OPTIONS) {
    if (!(options.maxAddressesPerName >= 1)) throw new Error("maxAddressesPerName must be at least 1");
  }

  /**
   * Records an answer: `name` resolved to each address with its TTL at `now`. An address already
   * known for the name gets the later deadline. Returns the addresses whose names changed (new ones
   * included). Addresses pushed over the per-name limit are not removed at once: they expire now and
   * go through the grace period (and the in-use check) like any other.
   */
  learn(name: string, answers: readonly { readonly ip: string; readonly ttl: number }[], now: number, source?: string): LearnChange {
    const n = normalizeDnsName(name);
    let ips = this.byName.get(n);
    if (!ips) this.byName.set(n, (ips = new Map()));
    const changed: string[] = [];
    const updated: FqdnCacheEntry[] = [];
    for (const a of answers) {
      const ttl = Math.max(a.ttl, this.options.minTtlSeconds);
      const expiresAt = now + ttl * 1000;
      const have = ips.get(a.ip);
      if (have && have.expiresAt >= expiresAt) continue;
      const from = source ?? have?.source;
      const entry: FqdnCacheEntry = from !== undefined ? { name: n, ip: a.ip, expiresAt, source: from } : { name: n, ip: a.ip, expiresAt };
      ips.set(a.ip, entry);
      updated.push(entry);
      let names = this.byIp.get(a.ip);
      if (!names) this.byIp.set(a.ip, (names = new Set()));
      if (!names.has(n)) {
        names.add(n);
        changed.push(a.ip);
      }
    }
    if (ips.size > this.options.maxAddressesPerName) this.enforceLimit(ips, now);
    return { changed, removed: [], updated };
  }

  /** Over the per-name limit: the entries that run out first expire now (they still get the grace period). */
  private enforceLimit(ips: Map<string, FqdnCacheEntry>, now: number): void {
    const live = [...ips.values()].filter((e) => e.expiresAt > now);
    const excess = live.length - this.options.maxAddressesPerName;
    if (excess <= 0) return;
    live.sort((a, b) => a.expiresAt - b.expiresAt || a.ip.localeCompare(b.ip));
    for (const e of live.slice(0, excess)) ips.set(e.ip, { ...e, expiresAt: now });
  }

  /** The names an address was learned for, sorted (its identity's `fqdn:` labels). */
  namesOf(ip: string): string[] {
    return [...(this.byIp.get(ip) ?? [])].sort();
  }

  /** The addresses learned for a name, sorted. */
  addressesOf(name: string): string[] {
    return [...(this.byName.get(normalizeDnsName(name))?.keys() ?? [])].sort();
  }

  /** Every address with at least one name. */
  addresses(): string[] {
    return [...this.byIp.keys()].sort();
  }

  /** Every entry, by name then address. */
  entries(): FqdnCacheEntry[] {
    const out: FqdnCacheEntry[] = [];
    for (const ips of this.byName.values()) out.push(...ips.values());
    return out.sort((a, b) => a.name.localeCompare(b.name) || a.ip.localeCompare(b.ip));
  }

  /**
   * Forgets every entry whose deadline plus the grace period has passed, unless a connection to its
   * address still lives (`inUse`). Returns the addresses that lost a name and those left with none.
   */
  gc(now: number, inUse: (ip: string) => boolean): CacheChange {
    const graceMs = this.options.graceSeconds * 1000;
    const touched = new Set<string>();
    for (const [name, ips] of this.byName) {
      for (const [ip, e] of ips) {
        if (e.expiresAt + graceMs > now || inUse(ip)) continue;
        ips.delete(ip);
        this.byIp.get(ip)?.delete(name);
        touched.add(ip);
      }
      if (ips.size === 0) this.byName.delete(name);
    }
    const changed: string[] = [];
    const removed: string[] = [];
    for (const ip of touched) {
      if (this.byIp.get(ip)?.size) changed.push(ip);
      else {
        this.byIp.delete(ip);
        removed.push(ip);
      }
    }
    return { changed: changed.sort(), removed: removed.sort() };
  }

  /** Adds entries as they were (restored state): the later deadline wins for a pair seen twice. */
  restore(entries: readonly FqdnCacheEntry[]): void {
    for (const e of entries) {
      const name = normalizeDnsName(e.name);
      let ips = this.byName.get(name);
      if (!ips) this.byName.set(name, (ips = new Map()));
      const have = ips.get(e.ip);
      if (have && have.expiresAt >= e.expiresAt) continue;
      ips.set(e.ip, { ...e, name });
      let names = this.byIp.get(e.ip);
      if (!names) this.byIp.set(e.ip, (names = new Set()));
      names.add(name);
    }
  }
}
