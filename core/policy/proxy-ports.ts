// Proxy-port allocation: each set of L7 allow rules a subject's redirects carry (one rule, or the union of HTTP rules on one key) gets its own port on the node's proxy, stable while its rules last.

export interface ProxyPortRange {
  readonly first: number;
  readonly last: number;
}

export const DEFAULT_PROXY_PORTS: ProxyPortRange = { first: 10000, last: 19999 };

/** One allocated port and the rules whose traffic it carries (ascending rule ids). */
export interface ProxyPortSet {
  readonly ruleIds: readonly number[];
  readonly port: number;
}

/**
 * Hands out ports from an inclusive range, one per (subject, set of rules), and takes them back
 * when one of a set's rules goes. A set no entry names any more keeps its port while all its rules
 * last (a peer coming back gets the same port); the agent serves only the ports entries name.
 */
export class ProxyPortAllocator {
  /** subject → its sets, few per subject (linear search) */
  private readonly bySubject = new Map<number, ProxyPortSet[]>();
  private readonly used = new Set<number>();

  constructor(private readonly range: ProxyPortRange = DEFAULT_PROXY_PORTS) {}

  /**
   * The port of a subject's set of L7 rules (any order, no repeats), allocating the lowest free one
   * the first time. Throws when the range is exhausted.
   */
  portFor(subject: number, ruleIds: readonly number[]): number {
    const key = [...ruleIds].sort((a, b) => a - b);
    let sets = this.bySubject.get(subject);
    const have = sets?.find((s) => sameIds(s.ruleIds, key));
    if (have) return have.port;
    for (let p = this.range.first; p <= this.range.last; p++) {
      if (this.used.has(p)) continue;
      this.used.add(p);
      if (!sets) this.bySubject.set(subject, (sets = []));
      sets.push({ ruleIds: key, port: p });
      return p;
    }
    throw new Error(`proxy port range ${this.range.first}-${this.range.last} exhausted`);
  }

  /** Frees the ports of a subject's sets holding a rule not in `ruleIds` (all of them when it is empty). */
  retain(subject: number, ruleIds: ReadonlySet<number>): void {
    const sets = this.bySubject.get(subject);
    if (!sets) return;
    const kept = sets.filter((s) => s.ruleIds.every((id) => ruleIds.has(id)));
    for (const s of sets) if (!kept.includes(s)) this.used.delete(s.port);
    if (kept.length === 0) this.bySubject.delete(subject);
    else this.bySubject.set(subject, kept);
  }

  /** A subject's allocated sets, by port. */
  setsOf(subject: number): readonly ProxyPortSet[] {
    return [...(this.bySubject.get(subject) ?? [])].sort((a, b) => a.port - b.port);
  }

  /** Ports in use. */
  get size(): number {
    return this.used.size;
  }
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
