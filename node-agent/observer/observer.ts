// The agent's observer in one piece: datapath events → enrich → ring (+ export) → Hubble's Observer API.
import type { Logger } from "pino";
import type { VerdictEvent } from "../bpf/layout.ts";
import type { Flow } from "../../flowapi/flow.ts";
import { FlowBuffer, type FlowBufferOptions } from "./buffer.ts";
import { FlowExporter, type FlowExporterOptions } from "./export.ts";
import { enrich, type EnrichLookups } from "./enrich.ts";
import { HubbleServer, type HubbleListen } from "./hubble-server.ts";
import { HubbleExporter, type HubbleExportOptions } from "./hubble-export.ts";
import { DynamicFlowLogs } from "./flowlogs.ts";
import { LostEvents } from "../../flowapi/hubble/lost.ts";

export interface ObserverOptions {
  readonly lookups: EnrichLookups;
  readonly buffer: FlowBufferOptions;
  /** Export every flow (sampled-out forwarded flows included) as JSON lines; see README.md. */
  readonly export?: FlowExporterOptions;
  /** Also export in Hubble's exporter format (hubble-export.ts). */
  readonly hubbleExport?: HubbleExportOptions;
  /** Hubble's dynamic exporter: the YAML file of flow logs, read again every `reloadMs` (flowlogs.ts). */
  readonly flowLogs?: { readonly path: string; readonly reloadMs?: number };
  /** Where to serve Hubble's Observer gRPC API (hubble-server.ts): the one API of the ring (`membrane observe`, `hubble`, the relay). */
  readonly hubble: HubbleListen;
  /** The datapath's count of events lost to a full ring buffer (never reset); its growth is told to followers. */
  /** The kernel's count of events lost to a full ring, per CPU (index = CPU). */
  readonly lostEvents?: () => readonly bigint[];
  /** How often that count is read (default LOST_EVENTS_CHECK_MS). */
  readonly lostEventsCheckMs?: number;
  readonly log: Logger;
}

/** How often the observer reads the datapath's lost-event count. */
export const LOST_EVENTS_CHECK_MS = 1000;

/**
 * Use: `const obs = new Observer(opts); await obs.start(); datapath.onEvents(obs.handle)`.
 * `handle` is synchronous and does no I/O beyond buffered export writes, so it keeps up with the ring.
 */
export class Observer {
  readonly buffer: FlowBuffer;
  private hubbleServer: HubbleServer | null = null;
  private exporter: FlowExporter | null = null;
  private hubbleExporter: HubbleExporter | null = null;
  private flowLogs: DynamicFlowLogs | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private lostTimer: NodeJS.Timeout | null = null;
  /** Where Hubble's API listens (`unix:/path`, `host:port`). */
  hubbleAddresses: readonly string[] = [];

  constructor(private readonly opts: ObserverOptions) {
    this.buffer = new FlowBuffer(opts.buffer);
  }

  async start(): Promise<void> {
    if (this.opts.export) this.exporter = new FlowExporter(this.opts.export);
    if (this.opts.hubbleExport) this.hubbleExporter = new HubbleExporter(this.opts.hubbleExport);
    if (this.opts.flowLogs) {
      this.flowLogs = new DynamicFlowLogs({ path: this.opts.flowLogs.path, ...(this.opts.flowLogs.reloadMs !== undefined ? { reloadMs: this.opts.flowLogs.reloadMs } : {}), log: this.opts.log });
      this.flowLogs.start();
    }
    if (this.exporter || this.hubbleExporter || this.flowLogs) {
      // Buffered lines reach the file within a second even when traffic is light.
      this.flushTimer = setInterval(() => {
        this.exporter?.flush();
        this.hubbleExporter?.flush();
        this.flowLogs?.flush();
      }, 1000);
      this.flushTimer.unref();
    }
    const hubble = new HubbleServer(this.buffer, this.opts.lookups.node, this.opts.log);
    try {
      this.hubbleAddresses = await hubble.start(this.opts.hubble);
      this.hubbleServer = hubble;
    } catch (err) {
      await hubble.stop();
      throw new Error(`Hubble API not served on ${this.opts.hubble.socketPath ?? this.opts.hubble.tcp?.address}: ${(err as Error).message}`, { cause: err });
    }
    if (this.opts.lostEvents) this.watchLostEvents(this.opts.lostEvents);
    this.opts.log.info({ addresses: this.hubbleAddresses, capacity: this.buffer.capacity, export: this.opts.export?.path }, "observer listening");
  }

  /**
   * Tells following clients and the Hubble exports when the datapath's ring buffer was full (Hubble's LostEvent,
   * PERF_EVENT_RING_BUFFER):
   * the count's growth since the last read, lost between that read and this one. Losses before the start (the
   * pinned counter outlives agents) are not told.
   */
  private watchLostEvents(read: () => readonly bigint[]): void {
    let seen = read();
    let seenAt = Date.now();
    this.lostTimer = setInterval(() => {
      let now: readonly bigint[];
      try {
        now = read();
      } catch (err) {
        this.opts.log.warn({ err: String(err) }, "lost events not read");
        return;
      }
      const at = Date.now();
      // One LostEvent per CPU whose count grew: the CPU the datapath could not put its records in the ring on.
      const told = new LostEvents();
      now.forEach((n, cpu) => {
        const lost = Number(n - (seen[cpu] ?? 0n));
        if (lost <= 0) return;
        this.opts.log.warn({ lost, cpu }, "datapath events lost: the ring buffer was full");
        this.hubbleServer?.reportLost("PERF_EVENT_RING_BUFFER", lost, seenAt, at, { cpu });
        told.add("PERF_EVENT_RING_BUFFER", lost, seenAt, at, { cpu });
      });
      for (const r of told.take(this.opts.lookups.node)) {
        this.hubbleExporter?.writeLost(r);
        this.flowLogs?.writeLost(r);
      }
      seen = now;
      seenAt = at;
    }, this.opts.lostEventsCheckMs ?? LOST_EVENTS_CHECK_MS);
    this.lostTimer.unref();
  }

  private readonly everyFlow = new Set<(f: Flow) => void>();

  /** Calls `listener` with every flow handled from now on, kept in the ring or sampled out (for counting); returns the unsubscribe. */
  onEveryFlow(listener: (f: Flow) => void): () => void {
    this.everyFlow.add(listener);
    return () => this.everyFlow.delete(listener);
  }

  readonly handle = (e: VerdictEvent): void => {
    this.record(enrich(e, this.opts.lookups));
  };

  /** A flow enriched elsewhere (a proxy's L7 flow) on the same path as the datapath's: exports, listeners, the ring. */
  readonly record = (flow: Flow): void => {
    this.exporter?.write(flow);
    this.hubbleExporter?.write(flow);
    this.flowLogs?.write(flow);
    for (const l of this.everyFlow) l(flow);
    this.buffer.push(flow);
  };

  async stop(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = null;
    if (this.lostTimer) clearInterval(this.lostTimer);
    this.lostTimer = null;
    this.exporter?.close();
    this.exporter = null;
    this.hubbleExporter?.close();
    this.hubbleExporter = null;
    this.flowLogs?.stop();
    this.flowLogs = null;
    await this.hubbleServer?.stop();
    this.hubbleServer = null;
    this.opts.log.info({ counters: this.buffer.counters() }, "observer stopped");
  }
}

/**
 * Maps bpf_ktime_get_ns() (CLOCK_MONOTONIC) to wall-clock time. Node's hrtime reads the same clock,
 * so one offset taken now converts every event; it is taken once so flows keep their order.
 */
export function monotonicWallClock(): (monotonicNs: bigint) => Date {
  const offsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  return (ns) => new Date(Number((ns + offsetNs) / 1_000_000n));
}
