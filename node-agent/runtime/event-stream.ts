// The runtime's live event stream: the last events kept in memory and every new one sent to the clients that follow,
// as Tetragon JSON lines over HTTP (GET /v1/events?follow=true&pod=&namespace=&binary=&last=N), filtered here by the
// same filter `membrane observe --type process` applies. A client that does not read fast enough loses events (counted
// and told in-band), never slows the runtime: the process that answers permission events must not wait on a socket.
import type http from "node:http";
import { Counter, Gauge, type Registry } from "prom-client";
import { matchesProcessFilter, type ProcessFilter, type RuntimeEvent } from "../../core/process-event.ts";

/** Events kept for a client that asks for the last ones. */
export const RECENT_EVENTS = 4096;
/** Bytes a follower may have unsent before its events are dropped. */
const MAX_PENDING_BYTES = 4 << 20;

interface Follower {
  readonly res: http.ServerResponse;
  readonly filter: ProcessFilter;
  lost: number;
}

export type StreamQuery = { readonly ok: true; readonly follow: boolean; readonly last: number; readonly filter: ProcessFilter } | { readonly ok: false; readonly error: string };

/** The query of GET /v1/events; an unknown parameter or a bad value is refused by name. */
export function parseStreamQuery(search: URLSearchParams): StreamQuery {
  const known = new Set(["follow", "last", "pod", "namespace", "binary"]);
  for (const k of search.keys()) if (!known.has(k)) return { ok: false, error: `${k}: unknown parameter (${[...known].join(", ")})` };
  const follow = search.get("follow") ?? "false";
  if (follow !== "true" && follow !== "false") return { ok: false, error: `follow: ${JSON.stringify(follow)} is not true or false` };
  const lastText = search.get("last") ?? String(RECENT_EVENTS);
  const last = Number(lastText);
  if (!Number.isInteger(last) || last < 0) return { ok: false, error: `last: ${JSON.stringify(lastText)} is not a count of events` };
  const filter: ProcessFilter = {};
  for (const k of ["pod", "namespace", "binary"] as const) {
    const v = search.get(k);
    if (v === "") return { ok: false, error: `${k}: empty` };
    if (v !== null) Object.assign(filter, { [k]: v });
  }
  return { ok: true, follow: follow === "true", last: Math.min(last, RECENT_EVENTS), filter };
}

export class RuntimeEventStream {
  /** The last RECENT_EVENTS events and their lines, a ring: `next` is where the next one goes. */
  private readonly recent: { e: RuntimeEvent; line: string }[] = [];
  private next = 0;
  private readonly followers = new Set<Follower>();
  private readonly dropped: Counter;

  constructor(registry: Registry) {
    this.dropped = new Counter({
      name: "membrane_process_stream_dropped_total",
      help: "Process events not sent to a following client that did not read fast enough.",
      registers: [registry],
    });
    const followers = this.followers;
    new Gauge({
      name: "membrane_process_stream_clients",
      help: "Clients following the live process event stream now.",
      registers: [registry],
      collect() {
        this.set(followers.size);
      },
    });
  }

  /** One event (with its JSON, written once for the export too): kept, and sent to every follower it matches. */
  push(e: RuntimeEvent, json: string = JSON.stringify(e)): void {
    const line = `${json}\n`;
    if (this.recent.length < RECENT_EVENTS) this.recent.push({ e, line });
    else this.recent[this.next] = { e, line };
    this.next = (this.next + 1) % RECENT_EVENTS;
    for (const f of this.followers) {
      if (!matchesProcessFilter(e, f.filter)) continue;
      if (f.res.writableLength > MAX_PENDING_BYTES) {
        f.lost++;
        this.dropped.inc();
        continue;
      }
      if (f.lost > 0) {
        // In-band, as Hubble's lost-events records: the client says how many it missed.
        f.res.write(`${JSON.stringify({ lost_events: f.lost })}\n`);
        f.lost = 0;
      }
      f.res.write(line);
    }
  }

  /** Serves GET /v1/events: the last matching events, then (follow=true) every new one until the client goes. */
  serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const q = parseStreamQuery(new URL(req.url ?? "/", "http://runtime").searchParams);
    if (!q.ok) return void res.writeHead(400, { "content-type": "text/plain" }).end(`${q.error}\n`);
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    const matching: string[] = [];
    const n = this.recent.length;
    for (let k = 1; k <= n && matching.length < q.last; k++) {
      const r = this.recent[(this.next - k + n) % n]!; // newest first
      if (matchesProcessFilter(r.e, q.filter)) matching.push(r.line);
    }
    if (matching.length > 0) res.write(matching.reverse().join(""));
    if (!q.follow) return void res.end();
    const f: Follower = { res, filter: q.filter, lost: 0 };
    this.followers.add(f);
    res.on("close", () => this.followers.delete(f));
  }

  /** Clients following now. */
  get following(): number {
    return this.followers.size;
  }

  close(): void {
    for (const f of this.followers) f.res.end();
    this.followers.clear();
  }
}
