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
  count: number;
  firstMs: number;
  lastMs: number;
}

/** The losses of one stream since it last told them, per source. */
export class LostEvents {
  private readonly bySource = new Map<LostEventSource, Tally>();

  /** Counts `count` events lost at `source`, the first at `firstMs` and the last at `lastMs`. */
  add(source: LostEventSource, count: number, firstMs: number, lastMs: number = firstMs): void {
    if (count <= 0) return;
    const t = this.bySource.get(source);
    if (t === undefined) {
      this.bySource.set(source, { count, firstMs: Math.min(firstMs, lastMs), lastMs: Math.max(firstMs, lastMs) });
      return;
    }
    t.count += count;
    t.firstMs = Math.min(t.firstMs, firstMs);
    t.lastMs = Math.max(t.lastMs, lastMs);
  }

  /** Counts what a LostEvent told (one a reader passes on and could not write), keeping its source and times. */
  addEvent(e: HubbleLostEvent, atMs: number): void {
    this.add(e.source, Number(e.num_events_lost), msOf(e.first) ?? atMs, msOf(e.last) ?? atMs);
  }

  /** Whether there are losses not told yet. */
  get pending(): boolean {
    return this.bySource.size > 0;
  }

  /**
   * The responses that tell the losses counted since the last take, one per source, and forgets them. Each is
   * timed at its last lost event, so it sorts where the loss happened among the flows (and a relay resuming
   * from the last time it passed on repeats nothing).
   */
  take(node: string): GetFlowsResponse[] {
    const out: GetFlowsResponse[] = [];
    for (const [source, t] of this.bySource) {
      out.push({
        lost_events: { source, num_events_lost: t.count, first: timestampOf(t.firstMs), last: timestampOf(t.lastMs) },
        node_name: node,
        time: timestampOf(t.lastMs),
      });
    }
    this.bySource.clear();
    return out;
  }
}
