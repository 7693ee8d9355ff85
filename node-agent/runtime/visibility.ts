// Process visibility on a node, Tetragon's default: the sensor's records (and the enforcers' events) as Tetragon
// JSON events, one line each appended to an export file (what `membrane observe --type process --input-file` reads), counted in metrics.
import fs from "node:fs";
import { Counter, Gauge, type Registry } from "prom-client";
import { eventType, type RuntimeEvent, type TetragonProcess } from "../../core/process-event.ts";
import type { ContainerCgroups } from "./containers.ts";
import { ProcessEvents, type PodResolver } from "./events.ts";
import { ProcessSensor } from "./sensor.ts";

export interface ProcessVisibilityOptions {
  readonly nodeName: string;
  /** JSON lines of process_exec/process_exit events are appended here. */
  readonly exportFile: string;
  readonly registry: Registry;
  readonly resolvePod?: PodResolver;
  /** Which container a process is in: events then name it (Tetragon's process.pod.container). */
  readonly containers?: ContainerCgroups;
  /** The sensor's pin scope (its maps) under /sys/fs/bpf/membrane (`membrane runtime`: pin-scopes.ts). */
  readonly scope: string;
  /** Also called for every event, with its JSON line (the runtime's live stream). */
  readonly onEvent?: (e: RuntimeEvent, json: string) => void;
}

export class ProcessVisibility {
  private readonly sensor: ProcessSensor;
  private readonly events: ProcessEvents;
  private fd: number | undefined;
  private pending: string[] = [];
  private readonly counted: Counter<"type">;

  constructor(private readonly opts: ProcessVisibilityOptions) {
    this.events = new ProcessEvents({ nodeName: opts.nodeName, ...(opts.resolvePod ? { resolvePod: opts.resolvePod } : {}), ...(opts.containers ? { containers: opts.containers } : {}) });
    this.counted = new Counter({
      name: "membrane_process_events_total",
      help: "Process events exported, by Tetragon event type (process_exec, process_exit, process_kprobe, process_lsm, process_tracepoint).",
      labelNames: ["type"],
      registers: [opts.registry],
    });
    const sensor = (this.sensor = new ProcessSensor({ scope: opts.scope }, (raw) => {
      const e = this.events.handle(raw);
      if (e) this.emit(e);
    }));
    this.events.catchUp = () => void sensor.drain();
    new Gauge({
      name: "membrane_process_events_lost",
      help: "Process events the kernel could not queue because the ring buffer was full, since the sensor started.",
      registers: [opts.registry],
      collect() {
        this.set(Number(sensor.lost()));
      },
    });
    const events = this.events;
    new Gauge({
      name: "membrane_process_cache_size",
      help: "Processes the agent keeps for parent and ancestor lookups.",
      registers: [opts.registry],
      collect() {
        this.set(events.size);
      },
    });
  }

  start(): void {
    this.fd = fs.openSync(this.opts.exportFile, "a");
    try {
      this.sensor.start();
    } catch (err) {
      fs.closeSync(this.fd);
      this.fd = undefined;
      throw err;
    }
  }

  /** Events the kernel could not queue (ring full) since start. */
  lost(): bigint {
    return this.sensor.lost();
  }

  /** Consumes what the ring holds now. */
  drain(): number {
    const n = this.sensor.drain();
    this.flush();
    return n;
  }

  /** Writes the events emitted since the last write (tests call it to read the file at once). */
  flush(): void {
    if (this.fd === undefined || this.pending.length === 0) return;
    fs.writeSync(this.fd, `${this.pending.join("\n")}\n`);
    this.pending = [];
  }

  stop(): void {
    this.flush();
    this.sensor.stop();
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  /** The process tree the events are built from (enforcement's events use the same). */
  get processes(): ProcessEvents {
    return this.events;
  }

  /** Exports one event (the sensor's, or an enforcer's process_kprobe/process_lsm/process_tracepoint) to the file and the metrics. */
  emit(e: RuntimeEvent): void {
    this.counted.inc({ type: eventType(e) });
    const json = eventJson(e);
    if (this.fd !== undefined) {
      // One write per turn of the event loop, not per event: a burst of execs is thousands of events a second.
      this.pending.push(json);
      if (this.pending.length === 1) setImmediate(() => this.flush());
    }
    this.opts.onEvent?.(e, json);
  }
}

/** Each process's JSON, written once: an exec event repeats its parent and ancestors, which earlier events wrote already. */
const processJson = new WeakMap<TetragonProcess, string>();

function jsonOf(p: TetragonProcess): string {
  let s = processJson.get(p);
  if (s === undefined) {
    s = JSON.stringify(p);
    processJson.set(p, s);
  }
  return s;
}

/**
 * JSON.stringify(e), with the processes in it (the process cache's objects, never changed once made) serialised once
 * each: the ancestors of an exec event are most of its text.
 */
export function eventJson(e: RuntimeEvent): string {
  const type = eventType(e);
  const body = (e as unknown as Record<string, Record<string, unknown>>)[type]!;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(body)) {
    if (v === undefined) continue;
    if (k === "process" || k === "parent") parts.push(`"${k}":${jsonOf(v as TetragonProcess)}`);
    else if (k === "ancestors") parts.push(`"ancestors":[${(v as TetragonProcess[]).map(jsonOf).join(",")}]`);
    else parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  }
  return `{"${type}":{${parts.join(",")}},"node_name":${JSON.stringify(e.node_name)},"time":${JSON.stringify(e.time)}}`;
}
