// The observer's memory: a ring of the most recent flows, per-connection sampling of forwarded flows, exact counters.
import { connectionKey, type Flow } from "../../flowapi/flow.ts";

export interface FlowBufferOptions {
  /** How many flows the ring holds; memory is bounded by this count. */
  readonly capacity: number;
  /** A connection's forwarded flows are kept at most once per this many ms (0 keeps every one). */
  readonly forwardedSampleMs?: number;
  /** How many connections the sampler remembers; the oldest is forgotten first. */
  readonly maxConnections?: number;
}

export interface FlowCounters {
  readonly forwarded: number;
  readonly dropped: number;
  /** Policy drops that audit mode let pass (never sampled out, like drops). */
  readonly audited: number;
  readonly dropsByReason: Readonly<Record<string, number>>;
  /** Forwarded flows counted but not kept because their connection was sampled recently. */
  readonly sampledOut: number;
  /** Flows pushed out of the ring by newer ones. */
  readonly evicted: number;
}

export type FlowListener = (f: Flow) => void;

/** Drops, audits and L7 flows are always kept in the ring and always counted; only forwarded L3/L4 flows are sampled. */
export class FlowBuffer {
  private readonly ring: (Flow | undefined)[];
  private next = 0;
  private size = 0;
  private readonly lastKept = new Map<string, number>();
  private readonly listeners = new Set<FlowListener>();
  private forwarded = 0;
  private dropped = 0;
  private audited = 0;
  private sampledOut = 0;
  private evicted = 0;
  private readonly dropsByReason = new Map<string, number>();
  private readonly sampleMs: number;
  private readonly maxConnections: number;

  constructor(opts: FlowBufferOptions) {
    if (!Number.isInteger(opts.capacity) || opts.capacity < 1) throw new RangeError(`capacity ${opts.capacity} must be a positive integer`);
    this.ring = new Array<Flow | undefined>(opts.capacity);
    this.sampleMs = opts.forwardedSampleMs ?? 0;
    this.maxConnections = opts.maxConnections ?? 65536;
  }

  /** Counts the flow and keeps it unless it is a forwarded flow of a connection kept less than the sample interval ago. */
  push(f: Flow, atMs: number = Date.parse(f.time)): boolean {
    if (f.verdict === "DROPPED") {
      this.dropped++;
      const reason = f.dropReason ?? "unknown";
      this.dropsByReason.set(reason, (this.dropsByReason.get(reason) ?? 0) + 1);
    } else if (f.verdict === "AUDIT") {
      this.audited++;
    } else {
      this.forwarded++;
      // A proxy's L7 flows are records of distinct exchanges (a request, its response), not packets of a connection: never sampled out.
      if (this.sampleMs > 0 && f.type !== "l7" && !this.admitForwarded(f, atMs)) {
        this.sampledOut++;
        return false;
      }
    }
    if (this.size === this.ring.length) this.evicted++;
    else this.size++;
    this.ring[this.next] = f;
    this.next = (this.next + 1) % this.ring.length;
    for (const l of this.listeners) l(f);
    return true;
  }

  private admitForwarded(f: Flow, atMs: number): boolean {
    const key = connectionKey(f);
    const last = this.lastKept.get(key);
    if (last !== undefined && atMs - last < this.sampleMs && atMs >= last) return false;
    this.lastKept.delete(key); // re-insert so Map order is least recently kept first
    this.lastKept.set(key, atMs);
    if (this.lastKept.size > this.maxConnections) this.lastKept.delete(this.lastKept.keys().next().value!);
    return true;
  }

  /** Kept flows, oldest first, that satisfy `match`; with `last`, only the most recent `last` of them. */
  query(match: (f: Flow) => boolean = () => true, last?: number): Flow[] {
    const out: Flow[] = [];
    const start = (this.next - this.size + this.ring.length) % this.ring.length;
    if (last !== undefined) {
      for (let i = this.size - 1; i >= 0 && out.length < last; i--) {
        const f = this.ring[(start + i) % this.ring.length]!;
        if (match(f)) out.push(f);
      }
      return out.reverse();
    }
    for (let i = 0; i < this.size; i++) {
      const f = this.ring[(start + i) % this.ring.length]!;
      if (match(f)) out.push(f);
    }
    return out;
  }

  /** Calls `listener` with every flow kept from now on; returns the unsubscribe function. */
  subscribe(listener: FlowListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get length(): number {
    return this.size;
  }

  get capacity(): number {
    return this.ring.length;
  }

  get trackedConnections(): number {
    return this.lastKept.size;
  }

  counters(): FlowCounters {
    return {
      forwarded: this.forwarded,
      dropped: this.dropped,
      audited: this.audited,
      dropsByReason: Object.fromEntries(this.dropsByReason),
      sampledOut: this.sampledOut,
      evicted: this.evicted,
    };
  }
}
