// Proxy-port allocation: each L7 allow rule of a subject gets its own port on the node's proxy, stable while the rule lasts.

export interface ProxyPortRange {
  readonly first: number;
  readonly last: number;
}

export const DEFAULT_PROXY_PORTS: ProxyPortRange = { first: 10000, last: 19999 };

/** Hands out ports from an inclusive range, one per (subject, rule), and takes them back when a subject's rules go. */
export class ProxyPortAllocator {
  /** subject → ruleId → port */
  private readonly bySubject = new Map<number, Map<number, number>>();
  private readonly used = new Set<number>();

  constructor(private readonly range: ProxyPortRange = DEFAULT_PROXY_PORTS) {}

  /** The port of a subject's L7 rule, allocating the lowest free one the first time. Throws when the range is exhausted. */
  portFor(subject: number, ruleId: number): number {
    let ports = this.bySubject.get(subject);
    const have = ports?.get(ruleId);
    if (have !== undefined) return have;
    for (let p = this.range.first; p <= this.range.last; p++) {
      if (this.used.has(p)) continue;
      this.used.add(p);
      if (!ports) this.bySubject.set(subject, (ports = new Map()));
      ports.set(ruleId, p);
      return p;
    }
    throw new Error(`proxy port range ${this.range.first}-${this.range.last} exhausted`);
  }

  /** Frees the ports of a subject's rules that are not in `ruleIds` (all of them when it is empty). */
  retain(subject: number, ruleIds: ReadonlySet<number>): void {
    const ports = this.bySubject.get(subject);
    if (!ports) return;
    for (const [ruleId, p] of ports) {
      if (ruleIds.has(ruleId)) continue;
      ports.delete(ruleId);
      this.used.delete(p);
    }
    if (ports.size === 0) this.bySubject.delete(subject);
  }

  /** Ports in use. */
  get size(): number {
    return this.used.size;
  }
}
