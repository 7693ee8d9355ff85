// Hubble's metric options (`--hubble-metrics`, Cilium's syntax "dns:query;sourceContext=pod|ip drop flow"): which
// hubble_* families are on, and their context options — the extra labels (source, destination, labelsContext) and their values per flow.
import type { HubbleEndpoint, HubbleFlow } from "../../flowapi/hubble/types.ts";
import type { FlowMatch } from "../../flowapi/hubble/filter.ts";

/** The families Membrane counts, and the options each takes beside the context options. */
export const HUBBLE_METRIC_FAMILIES = {
  flow: [],
  drop: [],
  policy: [],
  dns: ["query", "ignoreAAAA"],
  http: [],
  httpV2: [],
} as const satisfies Record<string, readonly string[]>;
export type HubbleMetricFamily = keyof typeof HUBBLE_METRIC_FAMILIES;

/** What `--hubble-metrics` is when not given: every family, no context. */
export const DEFAULT_HUBBLE_METRICS = "flow drop policy dns http";

/** Cilium's context identifiers: what a `source`/`destination` label says about an endpoint. */
const IDENTIFIERS = ["identity", "namespace", "pod", "pod-name", "dns", "ip", "reserved-identity", "workload", "workload-name", "app"] as const;
type Identifier = (typeof IDENTIFIERS)[number];

/** labelsContext's labels, in the order they are added (Cilium's order). */
export const CONTEXT_LABELS = [
  "source_ip",
  "source_pod",
  "source_namespace",
  "source_workload",
  "source_workload_kind",
  "source_app",
  "destination_ip",
  "destination_pod",
  "destination_namespace",
  "destination_workload",
  "destination_workload_kind",
  "destination_app",
  "traffic_direction",
] as const;
type ContextLabel = (typeof CONTEXT_LABELS)[number];

/** Labels that name an app, most specific first, as Cilium reads them. */
const APP_LABELS = ["k8s:app.kubernetes.io/name", "k8s:k8s-app", "k8s:app"];

/** The extra labels of one metric family: their names, and their values for a flow (source and destination swapped for a response, when asked). */
export interface MetricContext {
  readonly labelNames: readonly string[];
  values(f: HubbleFlow, invert?: boolean): string[];
}

export interface HubbleMetricConfig {
  readonly family: HubbleMetricFamily;
  readonly context: MetricContext;
  /** The family's own options that were given (dns: query, ignoreAAAA). */
  readonly flags: ReadonlySet<string>;
  /** The flows the family counts (its includeFilters / excludeFilters, hubble-metrics-config.ts); absent: every flow. */
  readonly select?: FlowMatch;
}

type Parse<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

function appOf(labels: readonly string[] | undefined): string {
  for (const key of APP_LABELS) {
    const l = labels?.find((x) => x.startsWith(`${key}=`));
    if (l !== undefined && l.length > key.length + 1) return l.slice(key.length + 1);
  }
  return "";
}

function identifierValue(id: Identifier, f: HubbleFlow, source: boolean): string {
  const ep: HubbleEndpoint | undefined = source ? f.source : f.destination;
  const ns = ep?.namespace ?? "";
  const workload = ep?.workloads?.[0]?.name ?? "";
  switch (id) {
    case "namespace":
      return ns;
    case "identity":
      return (ep?.labels ?? []).join(",");
    case "pod":
      return ns !== "" ? `${ns}/${ep?.pod_name ?? ""}` : (ep?.pod_name ?? "");
    case "pod-name":
      return ep?.pod_name ?? "";
    case "dns":
      return ((source ? f.source_names : f.destination_names) ?? []).join(",");
    case "ip":
      return (source ? f.IP?.source : f.IP?.destination) ?? "";
    case "reserved-identity": {
      const labels = ep?.labels ?? [];
      return labels.includes("reserved:kube-apiserver") ? "reserved:kube-apiserver" : (labels.find((l) => l.startsWith("reserved:")) ?? "");
    }
    case "workload":
      return workload !== "" && ns !== "" ? `${ns}/${workload}` : workload;
    case "workload-name":
      return workload;
    case "app":
      return appOf(ep?.labels);
  }
}

function contextLabelValue(label: ContextLabel, f: HubbleFlow, invert: boolean): string {
  if (label === "traffic_direction") return f.traffic_direction ? f.traffic_direction.toLowerCase() : "unknown";
  const sourceSide = label.startsWith("source_") !== invert;
  const ep = sourceSide ? f.source : f.destination;
  switch (label.replace(/^(source|destination)_/, "")) {
    case "ip":
      return (sourceSide ? f.IP?.source : f.IP?.destination) ?? "";
    case "pod":
      return ep?.pod_name ?? "";
    case "namespace":
      return ep?.namespace ?? "";
    case "workload":
      return ep?.workloads?.[0]?.name ?? "";
    case "workload_kind":
      return ep?.workloads?.[0]?.kind ?? "";
    default:
      return appOf(ep?.labels);
  }
}

/** The first identifier with a value, as Cilium's `a|b` alternatives. */
function firstValue(ids: readonly Identifier[] | undefined, f: HubbleFlow, source: boolean): string {
  for (const id of ids ?? []) {
    const v = identifierValue(id, f, source);
    if (v !== "") return v;
  }
  return "";
}

interface ContextSpec {
  source?: Identifier[];
  sourceIngress?: Identifier[];
  sourceEgress?: Identifier[];
  destination?: Identifier[];
  destinationIngress?: Identifier[];
  destinationEgress?: Identifier[];
  labels?: Set<ContextLabel>;
}

const CONTEXT_OPTIONS: Readonly<Record<string, keyof ContextSpec>> = {
  sourcecontext: "source",
  sourceingresscontext: "sourceIngress",
  sourceegresscontext: "sourceEgress",
  destinationcontext: "destination",
  destinationingresscontext: "destinationIngress",
  destinationegresscontext: "destinationEgress",
  labelscontext: "labels",
};

const CONTEXT_OPTION_NAMES = ["sourceContext", "sourceIngressContext", "sourceEgressContext", "destinationContext", "destinationIngressContext", "destinationEgressContext", "labelsContext"];

function contextOf(spec: ContextSpec): MetricContext {
  const labels = CONTEXT_LABELS.filter((l) => spec.labels?.has(l));
  const hasSource = spec.source !== undefined || spec.sourceIngress !== undefined || spec.sourceEgress !== undefined;
  const hasDestination = spec.destination !== undefined || spec.destinationIngress !== undefined || spec.destinationEgress !== undefined;
  const labelNames = [...labels, ...(hasSource ? ["source"] : []), ...(hasDestination ? ["destination"] : [])];
  if (labelNames.length === 0) return { labelNames, values: () => [] };
  return {
    labelNames,
    values(f, invert = false) {
      const out = labels.map((l) => contextLabelValue(l, f, invert));
      const ingress = f.traffic_direction === "INGRESS";
      const egress = f.traffic_direction === "EGRESS";
      const srcIds = (ingress ? spec.sourceIngress : egress ? spec.sourceEgress : undefined) ?? spec.source;
      const dstIds = (ingress ? spec.destinationIngress : egress ? spec.destinationEgress : undefined) ?? spec.destination;
      let src = firstValue(srcIds, f, true);
      let dst = firstValue(dstIds, f, false);
      if (invert) [src, dst] = [dst, src];
      if (hasSource) out.push(src);
      if (hasDestination) out.push(dst);
      return out;
    },
  };
}

/** One family's options ("query;sourceContext=pod|ip"); an error names the family and the option. */
export function parseFamily(family: HubbleMetricFamily, options: string): Parse<HubbleMetricConfig> {
  const spec: ContextSpec = {};
  const flags = new Set<string>();
  const own = HUBBLE_METRIC_FAMILIES[family] as readonly string[];
  for (const option of options.split(";")) {
    if (option === "") continue;
    const eq = option.indexOf("=");
    const name = eq < 0 ? option : option.slice(0, eq);
    const value = eq < 0 ? undefined : option.slice(eq + 1);
    const bad = (why: string): Parse<HubbleMetricConfig> => ({ ok: false, error: `${family}: ${name}: ${why}` });
    const key = CONTEXT_OPTIONS[name.toLowerCase()];
    if (key === "labels") {
      if (!value) return bad(`needs labels (${CONTEXT_LABELS.join(", ")})`);
      const set = new Set<ContextLabel>();
      for (const l of value.split(",")) {
        if (!(CONTEXT_LABELS as readonly string[]).includes(l)) return bad(`"${l}" is not one of ${CONTEXT_LABELS.join(", ")}`);
        set.add(l as ContextLabel);
      }
      spec.labels = set;
    } else if (key !== undefined) {
      if (!value) return bad(`needs identifiers (${IDENTIFIERS.join(", ")}, alternatives separated by |)`);
      const ids: Identifier[] = [];
      for (const id of value.split("|")) {
        if (!(IDENTIFIERS as readonly string[]).includes(id)) return bad(`"${id}" is not one of ${IDENTIFIERS.join(", ")}`);
        ids.push(id as Identifier);
      }
      spec[key] = ids;
    } else {
      const match = own.find((o) => o.toLowerCase() === name.toLowerCase());
      if (match === undefined) return bad(`not an option of ${family} (${[...own, ...CONTEXT_OPTION_NAMES].join(", ")})`);
      if (value !== undefined) return bad("takes no value");
      flags.add(match);
    }
  }
  return { ok: true, value: { family, context: contextOf(spec), flags } };
}

export function isHubbleMetricFamily(name: string): name is HubbleMetricFamily {
  return Object.hasOwn(HUBBLE_METRIC_FAMILIES, name);
}

/**
 * Parses `--hubble-metrics`: families separated by spaces (or commas between families), each `NAME` or
 * `NAME:OPTION;OPTION=VALUE`, as Cilium's agent reads its flag. An error names the family and option.
 */
export function parseHubbleMetrics(text: string): Parse<ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>> {
  const out = new Map<HubbleMetricFamily, HubbleMetricConfig>();
  for (const item of text.trim().split(/\s+/).filter((x) => x !== "")) {
    const colon = item.indexOf(":");
    const name = colon < 0 ? item : item.slice(0, colon);
    if (!isHubbleMetricFamily(name)) {
      return { ok: false, error: `"${name}" is not a metric Membrane counts (${Object.keys(HUBBLE_METRIC_FAMILIES).join(", ")})` };
    }
    const family = name as HubbleMetricFamily;
    if (out.has(family)) return { ok: false, error: `${family}: given twice` };
    if (family === "http" && out.has("httpV2")) return { ok: false, error: "http: not together with httpV2 (both write hubble_http_requests_total)" };
    if (family === "httpV2" && out.has("http")) return { ok: false, error: "httpV2: not together with http (both write hubble_http_requests_total)" };
    const parsed = parseFamily(family, colon < 0 ? "" : item.slice(colon + 1));
    if (!parsed.ok) return parsed;
    out.set(family, parsed.value);
  }
  return { ok: true, value: out };
}
