// Hubble's dynamic metrics (`--hubble-dynamic-metrics-config-path`, Cilium's YAML): per metric family its context options and
// the FlowFilters that select the flows it counts (includeFilters / excludeFilters), read again while the agent runs.
import type { Logger } from "pino";
import { parse as parseYaml } from "yaml";
import { compileFlowFilters } from "../../flowapi/hubble/filter.ts";
import type { HubbleFlowFilter } from "../../flowapi/hubble/types.ts";
import { WatchedConfigFile } from "./config-file.ts";
import { HUBBLE_METRIC_FAMILIES, isHubbleMetricFamily, parseFamily, type HubbleMetricConfig, type HubbleMetricFamily } from "./hubble-context.ts";

export type HubbleMetricsConfig = ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>;
export type DynamicMetricsParse = { readonly ok: true; readonly value: HubbleMetricsConfig } | { readonly ok: false; readonly errors: string[] };

const KNOWN = new Set(["name", "contextOptions", "includeFilters", "excludeFilters"]);

const isMapping = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The file's text as metric families (an empty file: none). Context options are those of `--hubble-metrics`
 * (`{name: sourceContext, values: [pod, ip]}` is `sourceContext=pod|ip`; a name without values is a flag such as dns'
 * `query`); every error names its field (`metrics[1].includeFilters[0].source_service: …`).
 */
export function parseDynamicMetricsConfig(text: string): DynamicMetricsParse {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    return { ok: false, errors: [`not YAML: ${(err as Error).message}`] };
  }
  if (doc === null || doc === undefined) return { ok: true, value: new Map() };
  if (!isMapping(doc)) return { ok: false, errors: ["must be a mapping with metrics"] };
  const errors: string[] = [];
  for (const k of Object.keys(doc)) if (k !== "metrics") errors.push(`${k}: unknown field (metrics is the only one)`);
  const list = doc.metrics ?? [];
  if (!Array.isArray(list)) return { ok: false, errors: [...errors, "metrics: must be a list"] };
  const out = new Map<HubbleMetricFamily, HubbleMetricConfig>();
  list.forEach((raw: unknown, i) => {
    const at = `metrics[${i}]`;
    if (!isMapping(raw)) return void errors.push(`${at}: must be a mapping`);
    for (const k of Object.keys(raw)) if (!KNOWN.has(k)) errors.push(`${at}.${k}: unknown field`);
    const name = raw.name;
    if (typeof name !== "string" || name === "") return void errors.push(`${at}.name: required`);
    if (!isHubbleMetricFamily(name)) return void errors.push(`${at}.name: "${name}" is not a metric Membrane counts (${Object.keys(HUBBLE_METRIC_FAMILIES).join(", ")})`);
    if (out.has(name)) return void errors.push(`${at}.name: ${name} given twice`);
    if ((name === "http" && out.has("httpV2")) || (name === "httpV2" && out.has("http"))) return void errors.push(`${at}.name: http and httpV2 both write hubble_http_requests_total`);
    const options: string[] = [];
    const opts = raw.contextOptions ?? [];
    if (!Array.isArray(opts)) errors.push(`${at}.contextOptions: must be a list of {name, values}`);
    else
      opts.forEach((o: unknown, j) => {
        const values = isMapping(o) ? (o.values ?? []) : undefined;
        if (!isMapping(o) || typeof o.name !== "string" || !Array.isArray(values) || values.some((v) => typeof v !== "string" || /[;|,=]/.test(v))) {
          return void errors.push(`${at}.contextOptions[${j}]: must be {name, values: [identifier, …]}`);
        }
        const sep = o.name.toLowerCase() === "labelscontext" ? "," : "|";
        options.push(values.length > 0 ? `${o.name}=${(values as string[]).join(sep)}` : o.name);
      });
    const family = parseFamily(name, options.join(";"));
    if (!family.ok) return void errors.push(`${at}.contextOptions: ${family.error}`);
    const filters = (k: "includeFilters" | "excludeFilters"): HubbleFlowFilter[] | undefined => {
      const v = raw[k] ?? [];
      if (!Array.isArray(v) || v.some((x) => !isMapping(x))) {
        errors.push(`${at}.${k}: must be a list of FlowFilters`);
        return undefined;
      }
      return v as HubbleFlowFilter[];
    };
    const include = filters("includeFilters");
    const exclude = filters("excludeFilters");
    if (include === undefined || exclude === undefined) return;
    const compiled = compileFlowFilters(include, exclude);
    if (!compiled.ok) return void errors.push(`${at}.${compiled.error.replace(/^whitelist/, "includeFilters").replace(/^blacklist/, "excludeFilters")}`);
    out.set(name, include.length + exclude.length > 0 ? { ...family.value, select: compiled.match } : family.value);
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: out };
}

/**
 * The file kept in step with the metrics (config-file.ts): a change is applied at the next read (the families re-registered
 * with their new options and filters, their series starting again from zero, as Cilium's); a file that does not parse is
 * logged and the last good configuration stays; a missing file means no families.
 */
export function watchMetricsConfig(opts: { readonly path: string; readonly reloadMs?: number; readonly apply: (config: HubbleMetricsConfig) => void; readonly log: Logger }): WatchedConfigFile<HubbleMetricsConfig> {
  return new WatchedConfigFile({
    ...opts,
    what: "hubble metrics",
    parse: parseDynamicMetricsConfig,
    apply: (config) => {
      opts.apply(config);
      opts.log.info({ path: opts.path, metrics: [...config.keys()] }, "hubble metrics configured");
    },
  });
}
