// Events a reader did not get, counted until they can be told: Hubble's LostEvent (`lost_events` of a GetFlowsResponse,
// which `hubble observe` prints as EVENTS LOST). Shared by the agent's server and the relay.
import { decodeFlowsResponse } from "./batch.ts";
import { msOf, timestampOf, type GetFlowsResponse, type HubbleLostEvent, type LostEventSource } from "./types.ts";

/**
 * The first byte of an encoded GetFlowsResponse holding `lost_events` (field 3, length-delimited): fields are
 * written in number order (encode.ts, as protobufjs), and a LostEvent response has no `flow` (field 1).
 */
const LOST_EVENTS_TAG = (3 << 3) | 2;

/** The LostEvent a response tells, if it is one; an encoded response is decoded only when its first tag says so. */
export function lostEventOf(r: GetFlowsResponse | Buffer): HubbleLostEvent | undefined {
  if (!Buffer.isBuffer(r)) return r.lost_events;
  return r[0] === LOST_EVENTS_TAG ? decodeFlowsResponse(r).lost_events : undefined;
}

interface Tally {
  readonly source: LostEventSource;
  /** The node whose events were lost, when not the teller's own (a relay passing on a node's loss, or losing its flows). */
  readonly node?: string;
  /** The CPU they were lost on (PERF_EVENT_RING_BUFFER: the per-CPU count that grew). */
  readonly cpu?: number;
  count: number;
  firstMs: number;
  lastMs: number;
}

/** Where events were lost: the place, and when known the node and the CPU. */
export interface LostAt {
  readonly node?: string;
  readonly cpu?: number;
}

/** The losses of one stream since it last told them, per source (and node and CPU, when known). */
export class LostEvents {
  private readonly tallies: Tally[] = [];

  /** Counts `count` events lost at `source`, the first at `firstMs` and the last at `lastMs`. */
  add(source: LostEventSource, count: number, firstMs: number, lastMs: number = firstMs, at: LostAt = {}): void {
    if (count <= 0) return;
    const t = this.tallies.find((x) => x.source === source && x.node === at.node && x.cpu === at.cpu);
    if (t === undefined) {
      this.tallies.push({ source, ...(at.node !== undefined ? { node: at.node } : {}), ...(at.cpu !== undefined ? { cpu: at.cpu } : {}), count, firstMs: Math.min(firstMs, lastMs), lastMs: Math.max(firstMs, lastMs) });
      return;
    }
    t.count += count;
    t.firstMs = Math.min(t.firstMs, firstMs);
    t.lastMs = Math.max(t.lastMs, lastMs);
  }

  /** Counts what a LostEvent of `node` told (one a reader passes on and could not write), keeping its source, CPU and times. */
  addEvent(e: HubbleLostEvent, atMs: number, node?: string): void {
    const cpu = e.cpu?.value;
    this.add(e.source, Number(e.num_events_lost), msOf(e.first) ?? atMs, msOf(e.last) ?? atMs, { ...(node !== undefined && node !== "" ? { node } : {}), ...(cpu !== undefined ? { cpu: Number(cpu) } : {}) });
  }

  /** Whether there are losses not told yet. */
  get pending(): boolean {
    return this.tallies.length > 0;
  }

  /**
   * The responses that tell the losses counted since the last take, one per source (node, CPU), and forgets them. Each
   * names the node whose events were lost (`node` when the tally has none: the teller's own) and is timed at its last
   * lost event, so it sorts where the loss happened among the flows (and a relay resuming from the last time it passed
   * on repeats nothing).
   */
  take(node: string): GetFlowsResponse[] {
    const out = this.tallies.map((t) => ({
      lost_events: { source: t.source, num_events_lost: t.count, ...(t.cpu !== undefined ? { cpu: { value: t.cpu } } : {}), first: timestampOf(t.firstMs), last: timestampOf(t.lastMs) },
      node_name: t.node ?? node,
      time: timestampOf(t.lastMs),
    }));
    this.tallies.length = 0;
    return out;
  }
}
