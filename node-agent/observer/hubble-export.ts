// Flow export in Hubble's exporter format: JSON lines of GetFlowsResponse (protojson: RFC 3339 times, enum names,
// proto field names), with Hubble's allow/deny lists of FlowFilters and field mask, rotated like our own export.
import type { Flow } from "../../flowapi/flow.ts";
import { compileFlowFilters, type FlowMatch } from "../../flowapi/hubble/filter.ts";
import { fieldMask } from "../../flowapi/hubble/getflows.ts";
import type { GetFlowsResponse, HubbleFlow, HubbleFlowFilter, Timestamp } from "../../flowapi/hubble/types.ts";
import { FlowExporter, type FlowExporterOptions } from "./export.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import { FlowAggregator } from "./flow-aggregate.ts";

export interface HubbleExportOptions {
  readonly file: FlowExporterOptions;
  readonly allowList?: readonly HubbleFlowFilter[];
  readonly denyList?: readonly HubbleFlowFilter[];
  readonly fieldMask?: readonly string[];
  /**
   * Cilium's aggregation: flows agreeing on these fields are written as one, with their counts, every `intervalMs`
   * (the field mask is not applied then, as in Cilium; lost events are written as they come).
   */
  readonly aggregate?: { readonly fields: readonly string[]; readonly intervalMs: number };
}

/** An RFC 3339 time with nanoseconds, as protojson writes a Timestamp. */
function rfc3339(t: Timestamp): string {
  const base = new Date(t.seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "");
  return t.nanos === 0 ? `${base}Z` : `${base}.${String(t.nanos).padStart(9, "0")}Z`;
}

/** A Hubble flow in protojson form: Timestamps as strings, BoolValue as its value; the rest is already plain. */
export function protojsonFlow(f: HubbleFlow): Record<string, unknown> {
  const { time, is_reply, ...rest } = f;
  return { ...(time !== undefined ? { time: rfc3339(time) } : {}), ...rest, ...(is_reply !== undefined ? { is_reply: is_reply.value } : {}) };
}

/** Parses Hubble's allow/deny list flag: FlowFilter JSON objects (proto field names), as an array or separated by commas or spaces. */
export function parseFilterList(flag: string, text: string): { ok: true; filters: HubbleFlowFilter[] } | { ok: false; error: string } {
  const t = text.trim();
  let parsed: unknown;
  try {
    parsed = JSON.parse(t.startsWith("[") ? t : `[${t.replace(/\}\s*,?\s*\{/g, "},{")}]`);
  } catch (err) {
    return { ok: false, error: `--${flag}: not FlowFilter JSON: ${(err as Error).message}` };
  }
  if (!Array.isArray(parsed) || parsed.some((x) => typeof x !== "object" || x === null || Array.isArray(x))) return { ok: false, error: `--${flag}: must be FlowFilter objects` };
  const filters = parsed as HubbleFlowFilter[];
  const check = compileFlowFilters(filters);
  if (!check.ok) return { ok: false, error: `--${flag}: ${check.error.replace(/^whitelist/, "")}` };
  return { ok: true, filters };
}

export class HubbleExporter {
  private readonly file: FlowExporter;
  private readonly match: FlowMatch;
  private readonly mask: ((f: HubbleFlow) => HubbleFlow) | undefined;
  /** As Cilium's exporter: filters judge flows, so with an allow list a LostEvent (no flow) matches none of it. */
  private readonly exportsLost: boolean;
  private readonly aggregator: FlowAggregator | undefined;
  private readonly aggregateTimer: NodeJS.Timeout | undefined;

  constructor(opts: HubbleExportOptions) {
    const filters = compileFlowFilters(opts.allowList ?? [], opts.denyList ?? []);
    if (!filters.ok) throw new Error(`hubble export: ${filters.error}`);
    this.match = filters.match;
    this.mask = opts.fieldMask && opts.fieldMask.length > 0 ? fieldMask(opts.fieldMask) : undefined;
    this.file = new FlowExporter(opts.file);
    this.exportsLost = (opts.allowList ?? []).length === 0;
    if (opts.aggregate !== undefined) {
      this.aggregator = new FlowAggregator(opts.aggregate.fields);
      this.aggregateTimer = setInterval(() => this.writeAggregates(), opts.aggregate.intervalMs);
      this.aggregateTimer.unref();
    }
  }

  private writeAggregates(): void {
    for (const a of this.aggregator?.take() ?? []) this.writeFlowLine(a);
  }

  private writeFlowLine(h: HubbleFlow): void {
    this.file.writeLine(JSON.stringify({ flow: protojsonFlow(h), ...(h.node_name !== undefined ? { node_name: h.node_name } : {}), time: rfc3339(h.time) }));
  }

  /** A LostEvent response (flowapi/hubble/lost.ts), as Cilium's exporter writes one: `hubble observe --input-file` prints EVENTS LOST. */
  writeLost(r: GetFlowsResponse): void {
    const l = r.lost_events;
    if (l === undefined || !this.exportsLost) return;
    const lost = {
      source: l.source,
      num_events_lost: String(l.num_events_lost), // uint64: a string in protojson
      ...(l.cpu !== undefined ? { cpu: l.cpu.value } : {}),
      ...(l.first !== undefined ? { first: rfc3339(l.first) } : {}),
      ...(l.last !== undefined ? { last: rfc3339(l.last) } : {}),
    };
    this.file.writeLine(JSON.stringify({ lost_events: lost, node_name: r.node_name, time: rfc3339(r.time) }));
  }

  write(flow: Flow): void {
    const h = toHubbleFlow(flow);
    if (!this.match(h)) return;
    if (this.aggregator !== undefined) return this.aggregator.add(h);
    const out = this.mask ? this.mask(h) : h;
    this.file.writeLine(JSON.stringify({ flow: protojsonFlow(out), node_name: h.node_name, time: rfc3339(h.time) }));
  }

  flush(): void {
    this.file.flush();
  }

  /** Writes what is aggregated so far (as Cilium flushes on stop), then closes the file. */
  close(): void {
    if (this.aggregateTimer !== undefined) clearInterval(this.aggregateTimer);
    this.writeAggregates();
    this.file.close();
  }
}
