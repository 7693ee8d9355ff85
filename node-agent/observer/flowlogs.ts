// Hubble's dynamic exporter (`--hubble-flowlogs-config-path`): a YAML file of named flow logs, each an export in Hubble's
// format with its own filters, field mask, rotation and end time, read again while the agent runs. Cilium's file format.
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { parse as parseYaml } from "yaml";
import type { Flow } from "../../flowapi/flow.ts";
import { compileFlowFilters } from "../../flowapi/hubble/filter.ts";
import type { GetFlowsResponse, HubbleFlowFilter } from "../../flowapi/hubble/types.ts";
import { HubbleExporter } from "./hubble-export.ts";
import { WatchedConfigFile } from "./config-file.ts";
import { parseDuration } from "../../core/duration.ts";

/** One flow log of the file (Cilium's FlowLogConfig, the fields Membrane serves). */
export interface FlowLogConfig {
  readonly name: string;
  readonly filePath: string;
  readonly fieldMask: readonly string[];
  readonly includeFilters: readonly HubbleFlowFilter[];
  readonly excludeFilters: readonly HubbleFlowFilter[];
  /** MiB before rotation (0: Hubble's default, 10). */
  readonly fileMaxSizeMb: number;
  /** Rotated files kept (0: Hubble's default, 5). */
  readonly fileMaxBackups: number;
  readonly fileCompress: boolean;
  /** After this time (ms since the epoch) the log writes nothing more. */
  readonly endMs?: number;
  /** Cilium's aggregation (fieldAggregate, aggregationInterval): flows folded by these fields, written every interval. */
  readonly aggregate?: { readonly fields: readonly string[]; readonly intervalMs: number };
}

export type FlowLogsParse = { readonly ok: true; readonly flowLogs: FlowLogConfig[] } | { readonly ok: false; readonly errors: string[] };

const KNOWN = new Set(["name", "filePath", "fieldMask", "fieldAggregate", "aggregationInterval", "includeFilters", "excludeFilters", "fileMaxSizeMb", "fileMaxBackups", "fileCompress", "end"]);

/** Reads the file's text; every error names its field (`flowLogs[1].filePath: required`). */
export function parseFlowLogsConfig(text: string): FlowLogsParse {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    return { ok: false, errors: [`not YAML: ${(err as Error).message}`] };
  }
  if (doc === null || doc === undefined) return { ok: true, flowLogs: [] };
  if (typeof doc !== "object" || Array.isArray(doc)) return { ok: false, errors: ["must be a mapping with flowLogs"] };
  const errors: string[] = [];
  for (const k of Object.keys(doc)) if (k !== "flowLogs") errors.push(`${k}: unknown field (flowLogs is the only one)`);
  const list = (doc as { flowLogs?: unknown }).flowLogs ?? [];
  if (!Array.isArray(list)) return { ok: false, errors: [...errors, "flowLogs: must be a list"] };
  const out: FlowLogConfig[] = [];
  const names = new Set<string>();
  const paths = new Set<string>();
  list.forEach((raw: unknown, i) => {
    const at = `flowLogs[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return void errors.push(`${at}: must be a mapping`);
    const o = raw as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!KNOWN.has(k)) errors.push(`${at}.${k}: unknown field`);
    const str = (k: string): string | undefined => (typeof o[k] === "string" && o[k] !== "" ? (o[k] as string) : undefined);
    const name = str("name");
    const filePath = str("filePath");
    if (name === undefined) errors.push(`${at}.name: required`);
    else if (names.has(name)) errors.push(`${at}.name: duplicated flow log name ${name}`);
    else names.add(name);
    if (filePath === undefined) errors.push(`${at}.filePath: required`);
    else if (paths.has(filePath)) errors.push(`${at}.filePath: duplicated flow log path ${filePath}`);
    else paths.add(filePath);
    const strings = (k: string): string[] => {
      const v = o[k] ?? [];
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
        errors.push(`${at}.${k}: must be a list of strings`);
        return [];
      }
      return v as string[];
    };
    const filters = (k: string): HubbleFlowFilter[] => {
      const v = o[k] ?? [];
      if (!Array.isArray(v) || v.some((x) => typeof x !== "object" || x === null || Array.isArray(x))) {
        errors.push(`${at}.${k}: must be a list of FlowFilters`);
        return [];
      }
      const check = compileFlowFilters(v as HubbleFlowFilter[]);
      if (!check.ok) errors.push(`${at}.${k}${check.error.replace(/^whitelist/, "")}`);
      return v as HubbleFlowFilter[];
    };
    const count = (k: string): number => {
      const v = o[k] ?? 0;
      if (!Number.isInteger(v) || (v as number) < 0) {
        errors.push(`${at}.${k}: must be a whole number ≥ 0`);
        return 0;
      }
      return v as number;
    };
    const fieldMask = strings("fieldMask");
    for (const p of fieldMask) if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(p)) errors.push(`${at}.fieldMask: "${p}" is not a field path`);
    // Aggregation (Cilium's): both or neither, since one without the other would do nothing.
    const fieldAggregate = o.fieldAggregate === null ? [] : strings("fieldAggregate");
    for (const p of fieldAggregate) if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(p)) errors.push(`${at}.fieldAggregate: "${p}" is not a field path`);
    let intervalMs = 0;
    if (o.aggregationInterval !== undefined && o.aggregationInterval !== null) {
      const ms = typeof o.aggregationInterval === "string" ? parseDuration(o.aggregationInterval) : undefined;
      if (ms === undefined) errors.push(`${at}.aggregationInterval: not a duration ("30s", "1m")`);
      else intervalMs = ms;
    }
    if (fieldAggregate.length > 0 && intervalMs <= 0) errors.push(`${at}.aggregationInterval: required (more than 0s) with fieldAggregate`);
    if (fieldAggregate.length === 0 && intervalMs > 0) errors.push(`${at}.fieldAggregate: required with aggregationInterval (the fields flows are folded by)`);
    const includeFilters = filters("includeFilters");
    const excludeFilters = filters("excludeFilters");
    const fileMaxSizeMb = count("fileMaxSizeMb");
    const fileMaxBackups = count("fileMaxBackups");
    if (o.fileCompress !== undefined && typeof o.fileCompress !== "boolean") errors.push(`${at}.fileCompress: must be true or false`);
    let endMs: number | undefined;
    if (o.end !== undefined && o.end !== null) {
      endMs = o.end instanceof Date ? o.end.getTime() : typeof o.end === "string" && /^\d{4}-\d\d-\d\dT/.test(o.end) ? Date.parse(o.end) : NaN;
      if (Number.isNaN(endMs)) errors.push(`${at}.end: not an RFC 3339 time`);
    }
    if (name !== undefined && filePath !== undefined) {
      out.push({
        name,
        filePath,
        fieldMask,
        includeFilters,
        excludeFilters,
        fileMaxSizeMb,
        fileMaxBackups,
        fileCompress: o.fileCompress === true,
        ...(endMs !== undefined ? { endMs } : {}),
        ...(fieldAggregate.length > 0 && intervalMs > 0 ? { aggregate: { fields: fieldAggregate, intervalMs } } : {}),
      });
    }
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, flowLogs: out };
}

export interface DynamicFlowLogsOptions {
  /** The YAML file (Cilium's `--hubble-flowlogs-config-path`). */
  readonly path: string;
  /** How often the file is read again (Cilium reloads on a ticker too). */
  readonly reloadMs?: number;
  readonly log: Logger;
  readonly now?: () => number;
}

/**
 * The flow logs the file names, kept in step with it: a log added, changed or removed in the file is opened, reopened
 * or closed at the next read; a file that does not parse is logged with its errors and the last good set keeps
 * running; a missing file means no flow logs.
 */
export class DynamicFlowLogs {
  private readonly running = new Map<string, { config: FlowLogConfig; exporter: HubbleExporter }>();
  private readonly file: WatchedConfigFile<FlowLogConfig[]>;
  private readonly now: () => number;

  constructor(private readonly opts: DynamicFlowLogsOptions) {
    this.now = opts.now ?? Date.now;
    this.file = new WatchedConfigFile({
      path: opts.path,
      ...(opts.reloadMs !== undefined ? { reloadMs: opts.reloadMs } : {}),
      what: "hubble flow logs",
      log: opts.log,
      parse: (text) => {
        const parsed = parseFlowLogsConfig(text);
        return parsed.ok ? { ok: true, value: parsed.flowLogs } : parsed;
      },
      apply: (flowLogs) => this.apply(flowLogs),
    });
  }

  start(): void {
    this.file.start();
  }

  /** Reads the file again and applies it (also called by the timer). */
  reload(): void {
    this.file.reload();
  }

  private apply(flowLogs: readonly FlowLogConfig[]): void {
    const wanted = new Map(flowLogs.map((c) => [c.name, c]));
    for (const [name, r] of this.running) {
      if (isDeepStrictEqual(wanted.get(name), r.config)) continue;
      r.exporter.close();
      this.running.delete(name);
    }
    for (const [name, config] of wanted) {
      if (this.running.has(name)) continue;
      const exporter = new HubbleExporter({
        file: { path: config.filePath, maxBytes: (config.fileMaxSizeMb || 10) * 1024 * 1024, keep: config.fileMaxBackups || 5, compress: config.fileCompress },
        allowList: config.includeFilters,
        denyList: config.excludeFilters,
        fieldMask: config.fieldMask,
        ...(config.aggregate ? { aggregate: config.aggregate } : {}),
      });
      this.running.set(name, { config, exporter });
    }
    this.opts.log.info({ path: this.opts.path, flowLogs: [...this.running.keys()] }, "hubble flow logs configured");
  }

  /** The names of the flow logs running now. */
  names(): string[] {
    return [...this.running.keys()];
  }

  write(flow: Flow): void {
    if (this.running.size === 0) return;
    const now = this.now();
    for (const [name, r] of this.running) {
      if (r.config.endMs !== undefined && now > r.config.endMs) {
        // Past its end: closed for good (until the file changes it).
        r.exporter.close();
        this.running.delete(name);
        continue;
      }
      r.exporter.write(flow);
    }
  }

  /** A LostEvent response, to every running log (those with include filters leave it out, as Cilium's do). */
  writeLost(r: GetFlowsResponse): void {
    for (const l of this.running.values()) l.exporter.writeLost(r);
  }

  flush(): void {
    for (const r of this.running.values()) r.exporter.flush();
  }

  stop(): void {
    this.file.stop();
    for (const r of this.running.values()) r.exporter.close();
    this.running.clear();
  }
}
