// Proxy-port allocation: each set of L7 rule parts a subject's redirects carry (one rule's DNS rules, or the union of the HTTP parts allowing one key) gets its own port on the node's proxy, stable while its rules last.

export interface ProxyPortRange {
  readonly first: number;
  readonly last: number;
}

export const DEFAULT_PROXY_PORTS: ProxyPortRange = { first: 10000, last: 19999 };

/**
 * One part of an L7 rule a proxy port serves: a rule's DNS (or other non-HTTP L7) rules over all its
 * toPorts (no `portRule`), or the HTTP rules of one of its toPorts entries (`portRule`: its index),
 * which judge only that entry's ports.
 */
export interface L7Part {
  readonly ruleId: number;
  readonly portRule?: number;
}

/** One allocated port and the parts whose traffic it carries (ascending by rule, then toPorts index). */
export interface ProxyPortSet {
  readonly parts: readonly L7Part[];
  readonly port: number;
}

/**
 * Hands out ports from an inclusive range, one per (subject, set of parts), and takes them back
 * when one of a set's rules goes. A set no entry names any more keeps its port while all its rules
 * last (a peer coming back gets the same port); the agent serves only the ports entries name.
 */
export class ProxyPortAllocator {
  /** subject → its sets, few per subject (linear search) */
  private readonly bySubject = new Map<number, ProxyPortSet[]>();
  private readonly used = new Set<number>();

  constructor(private readonly range: ProxyPortRange = DEFAULT_PROXY_PORTS) {}

  /**
   * The port of a subject's set of L7 parts (any order, no repeats), allocating the lowest free one
   * the first time. Throws when the range is exhausted.
   */
  portFor(subject: number, parts: readonly L7Part[]): number {
    const key = [...parts].sort(compareParts);
    let sets = this.bySubject.get(subject);
    const have = sets?.find((s) => sameParts(s.parts, key));
    if (have) return have.port;
    for (let p = this.range.first; p <= this.range.last; p++) {
      if (this.used.has(p)) continue;
      this.used.add(p);
      if (!sets) this.bySubject.set(subject, (sets = []));
      sets.push({ parts: key, port: p });
      return p;
    }
    throw new Error(`proxy port range ${this.range.first}-${this.range.last} exhausted`);
  }

  /** Frees the ports of a subject's sets holding a part of a rule not in `ruleIds` (all of them when it is empty). */
  retain(subject: number, ruleIds: ReadonlySet<number>): void {
    const sets = this.bySubject.get(subject);
    if (!sets) return;
    const kept = sets.filter((s) => s.parts.every((p) => ruleIds.has(p.ruleId)));
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

/** Whether a set serves one part (the same rule and the same toPorts entry, or both the whole rule). */
export function holdsPart(set: ProxyPortSet, part: L7Part): boolean {
  return set.parts.some((p) => p.ruleId === part.ruleId && p.portRule === part.portRule);
}

/** By rule, then toPorts index (a whole rule's part first). */
export function compareParts(a: L7Part, b: L7Part): number {
  return a.ruleId - b.ruleId || (a.portRule ?? -1) - (b.portRule ?? -1);
}

function sameParts(a: readonly L7Part[], b: readonly L7Part[]): boolean {
  return a.length === b.length && a.every((x, i) => compareParts(x, b[i]!) === 0);
}
