// Flow export in Hubble's exporter format: JSON lines of GetFlowsResponse (protojson: RFC 3339 times, enum names,
// proto field names), with Hubble's allow/deny lists of FlowFilters and field mask, rotated like our own export.
import type { Flow } from "../../flowapi/flow.ts";
import { compileFlowFilters, type FlowMatch } from "../../flowapi/hubble/filter.ts";
import { fieldMask } from "../../flowapi/hubble/getflows.ts";
import type { HubbleFlow, HubbleFlowFilter, Timestamp } from "../../flowapi/hubble/types.ts";
import { FlowExporter, type FlowExporterOptions } from "./export.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";

export interface HubbleExportOptions {
  readonly file: FlowExporterOptions;
  readonly allowList?: readonly HubbleFlowFilter[];
  readonly denyList?: readonly HubbleFlowFilter[];
  readonly fieldMask?: readonly string[];
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

  constructor(opts: HubbleExportOptions) {
    const filters = compileFlowFilters(opts.allowList ?? [], opts.denyList ?? []);
    if (!filters.ok) throw new Error(`hubble export: ${filters.error}`);
    this.match = filters.match;
    this.mask = opts.fieldMask && opts.fieldMask.length > 0 ? fieldMask(opts.fieldMask) : undefined;
    this.file = new FlowExporter(opts.file);
  }

  write(flow: Flow): void {
    const h = toHubbleFlow(flow);
    if (!this.match(h)) return;
    const out = this.mask ? this.mask(h) : h;
    this.file.writeLine(JSON.stringify({ flow: protojsonFlow(out), node_name: h.node_name, time: rfc3339(h.time) }));
  }

  flush(): void {
    this.file.flush();
  }

  close(): void {
    this.file.close();
  }
}
