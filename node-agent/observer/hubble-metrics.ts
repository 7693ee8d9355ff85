// Flow metrics under Hubble's names and labels (Cilium's pkg/hubble/metrics flow, drop, policy, dns and http handlers), so a
// dashboard written for Hubble reads Membrane's agents unchanged. L3/L4 families are counted from every flow the observer
// handles; dns and http from the proxies' L7 flows (`observe` hands them to `observeL7` in Hubble's shape). Context options: hubble-context.ts.
import { Counter, Histogram, type Registry } from "prom-client";
import type { Flow } from "../../flowapi/flow.ts";
import { ciliumDropReason, DNS_RCODE_TEXT, toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import type { HubbleFlow } from "../../flowapi/hubble/types.ts";
import { DEFAULT_HUBBLE_METRICS, parseHubbleMetrics, type HubbleMetricConfig, type HubbleMetricFamily, type MetricContext } from "./hubble-context.ts";

/** An L7 flow's protocol as Hubble names it. */
function l7Protocol(f: Flow): string {
  return f.l7?.dns ? "DNS" : f.l7?.http ? "HTTP" : "Unknown L7";
}

/** Hubble's protocol label (Cilium's FlowProtocol): the L7 protocol of a proxy's flow, else the L4 of the flow, as Hubble spells it. */
function hubbleProtocol(f: Flow): string {
  if (f.type === "l7") return l7Protocol(f);
  switch (f.protocol) {
    case "ICMP":
      return "ICMPv4";
    case "TCP":
    case "UDP":
    case "SCTP":
    case "ICMPv6":
    case "VRRP":
    case "IGMP":
      return f.protocol;
    default:
      return "Unknown flow";
  }
}

/** Hubble's type and subtype labels for our kinds of flow (a trace is observed at the endpoint; an L7 flow names its protocol). */
function typeLabels(f: Flow): { type: string; subtype: string } {
  if (f.type === "l7") return { type: "L7", subtype: l7Protocol(f) };
  if (f.type === "drop") return { type: "Drop", subtype: "" };
  if (f.type === "policy-verdict") return { type: "PolicyVerdict", subtype: "" };
  return { type: "Trace", subtype: f.direction === "ingress" ? "to-endpoint" : "from-endpoint" };
}


/** Which side of an HTTP exchange saw it: an egress record is the client's, an ingress one the server's. */
function reporter(f: HubbleFlow): string {
  return f.traffic_direction === "EGRESS" ? "client" : f.traffic_direction === "INGRESS" ? "server" : "unknown";
}

type Labels = Record<string, string>;

/** The context label values of one family as a label object, the flow in Hubble's shape made only when there are some. */
function contextLabels(ctx: MetricContext, f: () => HubbleFlow, invert = false): Labels {
  if (ctx.labelNames.length === 0) return {};
  const v = ctx.values(f(), invert);
  return Object.fromEntries(ctx.labelNames.map((n, i) => [n, v[i]!]));
}

export class HubbleMetrics {
  private config: ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig> = new Map();
  private flows?: Counter<string>;
  private drops?: Counter<string>;
  private verdicts?: Counter<string>;
  private dns?: { queries: Counter<string>; responses: Counter<string>; responseTypes: Counter<string>; query: boolean; ignoreAAAA: boolean };
  private http?: { v2: boolean; requests: Counter<string>; responses?: Counter<string>; duration: Histogram<string> };
  /** The metric names registered for the current configuration (removed from the registry when it changes). */
  private registered: string[] = [];

  /**
   * `config`: the parsed `--hubble-metrics` (default: every family, no context). `openMetrics` (Cilium's
   * --enable-hubble-open-metrics, the registry then speaks OpenMetrics): the http family's samples carry the trace id of
   * the last traced request as an exemplar (`# {traceID="…"}`), as Cilium's http handler adds them.
   */
  constructor(
    private readonly registry: Registry,
    config?: ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>,
    private readonly options: { readonly openMetrics?: boolean } = {},
  ) {
    if (config === undefined) {
      const d = parseHubbleMetrics(DEFAULT_HUBBLE_METRICS);
      if (!d.ok) throw new Error(d.error);
      config = d.value;
    }
    this.reconfigure(config);
  }

  /**
   * Counts under a new configuration from now on (the dynamic metrics file changed): the families' metrics are registered
   * again with their new labels, so their series start from zero, as Cilium's do when its config changes.
   */
  reconfigure(config: ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>): void {
    for (const name of this.registered) this.registry.removeSingleMetric(name);
    this.flows = this.drops = this.verdicts = this.dns = this.http = undefined;
    this.config = config;
    const registry = this.registry;
    const registers = [registry];
    const ctx = (family: HubbleMetricFamily): readonly string[] => config.get(family)!.context.labelNames;
    if (config.has("flow")) this.flows = new Counter({ name: "hubble_flows_processed_total", help: "Total number of flows processed", labelNames: ["protocol", "type", "subtype", "verdict", ...ctx("flow")], registers });
    if (config.has("drop")) this.drops = new Counter({ name: "hubble_drop_total", help: "Number of drops", labelNames: [...ctx("drop"), "reason", "protocol"], registers });
    if (config.has("policy")) this.verdicts = new Counter({ name: "hubble_policy_verdicts_total", help: "Number of policy verdict events", labelNames: ["direction", "match", "action", ...ctx("policy")], registers });
    const dns = config.get("dns");
    if (dns) {
      const query = dns.flags.has("query");
      const common = [...dns.context.labelNames, "rcode", "qtypes", "ips_returned", ...(query ? ["query"] : [])];
      this.dns = {
        query,
        ignoreAAAA: dns.flags.has("ignoreAAAA"),
        queries: new Counter({ name: "hubble_dns_queries_total", help: "Number of DNS queries observed", labelNames: common, registers }),
        responses: new Counter({ name: "hubble_dns_responses_total", help: "Number of DNS responses observed", labelNames: common, registers }),
        responseTypes: new Counter({ name: "hubble_dns_response_types_total", help: "Number of DNS response types observed", labelNames: [...dns.context.labelNames, "type", "qtypes", ...(query ? ["query"] : [])], registers }),
      };
    }
    const http = config.get("http") ?? config.get("httpV2");
    const enableExemplars = this.options.openMetrics === true;
    if (http) {
      const v2 = config.has("httpV2");
      const c = http.context.labelNames;
      this.http = {
        v2,
        requests: new Counter({ name: "hubble_http_requests_total", help: "Count of HTTP requests", labelNames: [...c, "method", "protocol", ...(v2 ? ["status"] : []), "reporter"], registers, enableExemplars }),
        ...(v2 ? {} : { responses: new Counter({ name: "hubble_http_responses_total", help: "Count of HTTP responses", labelNames: [...c, "method", "protocol", "status", "reporter"], registers, enableExemplars }) }),
        duration: new Histogram({ name: "hubble_http_request_duration_seconds", help: "Quantiles of HTTP request duration in seconds", labelNames: [...c, "method", "reporter"], registers, enableExemplars }),
      };
    }
    this.registered = registry.getMetricsAsArray().map((m) => m.name).filter((n) => n.startsWith("hubble_"));
  }

  /** Whether a family counts this flow: its filters (dynamic metrics) select it, or it has none. */
  private selects(family: HubbleMetricFamily, f: () => HubbleFlow): boolean {
    const select = this.config.get(family)?.select;
    return select === undefined || select(f());
  }

  private ctx(family: HubbleMetricFamily): MetricContext {
    return this.config.get(family)!.context;
  }

  /** Counts one flow; called for every flow, kept in the ring or not (a proxy's L7 flow also feeds the dns and http families). */
  readonly observe = (f: Flow): void => {
    let hubble: HubbleFlow | undefined;
    const h = (): HubbleFlow => (hubble ??= toHubbleFlow(f));
    const protocol = hubbleProtocol(f);
    if (this.flows && this.selects("flow", h)) this.flows.inc({ protocol, ...typeLabels(f), verdict: f.verdict, ...contextLabels(this.ctx("flow"), h) });
    if (f.verdict === "DROPPED" && this.drops && this.selects("drop", h)) this.drops.inc({ ...contextLabels(this.ctx("drop"), h), reason: (f.dropReason !== undefined ? ciliumDropReason(f.dropReason)?.name : undefined) ?? "DROP_REASON_UNKNOWN", protocol });
    // A verdict a policy gave (a rule, or default deny), whether the packet passed or not; match as Cilium lowercases
    // its PolicyMatchType ("l3-l4", "all", …), "none" where no part of a rule is reported (drops, default deny).
    if (f.type === "l7") {
      // As Cilium's policy handler counts a proxy's records: every one (request and response), its match the L7 protocol ("l7/http", "l7/dns").
      if (this.verdicts && this.selects("policy", h)) this.verdicts.inc({ direction: f.direction, match: `l7/${f.l7?.dns ? "dns" : f.l7?.http ? "http" : ""}`, action: f.verdict.toLowerCase(), ...contextLabels(this.ctx("policy"), h) });
      this.observeL7(h());
      return;
    }
    if (f.decidedBy !== undefined && this.verdicts && this.selects("policy", h)) this.verdicts.inc({ direction: f.direction, match: f.policyMatch?.toLowerCase() ?? "none", action: f.verdict.toLowerCase(), ...contextLabels(this.ctx("policy"), h) });
  };

  /** One more in `c`; with exemplars on (OpenMetrics), a traced request's id is the sample's exemplar. */
  private count(c: Counter<string>, labels: Labels, traceId: string | undefined): void {
    if (this.options.openMetrics === true) c.inc({ labels, value: 1, ...(traceId !== undefined ? { exemplarLabels: { traceID: traceId } } : {}) });
    else c.inc(labels);
  }

  private time(h: Histogram<string>, labels: Labels, seconds: number, traceId: string | undefined): void {
    if (this.options.openMetrics === true) h.observe({ labels, value: seconds, ...(traceId !== undefined ? { exemplarLabels: { traceID: traceId } } : {}) });
    else h.observe(labels, seconds);
  }

  /** Counts one L7 record in Hubble's shape (`Type: "L7"`, `l7.dns` or `l7.http`): a DNS or HTTP proxy's flow. */
  readonly observeL7 = (f: HubbleFlow): void => {
    const dns = f.l7?.dns;
    if (dns !== undefined && this.dns !== undefined) {
      if (!this.selects("dns", () => f)) return;
      const d = this.dns;
      const qtypes = dns.qtypes ?? [];
      if (d.ignoreAAAA && qtypes.length === 1 && qtypes[0] === "AAAA") return;
      const ctx = contextLabels(this.ctx("dns"), () => f);
      const q: Labels = d.query ? { query: dns.query } : {};
      // Labels in the order Hubble registers them (prom-client prints them as given).
      const series = (rcode: string): Labels => ({ ...ctx, rcode, qtypes: qtypes.join(","), ips_returned: String(dns.ips?.length ?? 0), ...q });
      if (f.verdict === "DROPPED") d.queries.inc(series("Policy denied"));
      else if (f.is_reply?.value !== true) d.queries.inc(series(""));
      else {
        d.responses.inc(series(DNS_RCODE_TEXT[Number(dns.rcode ?? 0)] ?? ""));
        for (const type of dns.rrtypes ?? []) d.responseTypes.inc({ ...ctx, type, qtypes: qtypes.join(","), ...q });
      }
      return;
    }
    const http = f.l7?.http;
    if (http !== undefined && this.http !== undefined) {
      const t = f.l7!.type;
      const H = this.http;
      const family = H.v2 ? "httpV2" : "http";
      if (!this.selects(family, () => f)) return;
      const who = reporter(f);
      const seconds = Number(f.l7!.latency_ns ?? 0) / 1e9;
      const trace = f.trace_context?.parent?.trace_id || undefined;
      if (H.v2) {
        // One series per exchange, from its response, labelled as the request was (source and destination swapped back).
        if (t !== "RESPONSE") return;
        const ctx = contextLabels(this.ctx(family), () => f, true);
        this.count(H.requests, { ...ctx, method: http.method, protocol: http.protocol, status: String(http.code ?? 0), reporter: who }, trace);
        this.time(H.duration, { ...ctx, method: http.method, reporter: who }, seconds, trace);
        return;
      }
      const ctx = contextLabels(this.ctx(family), () => f);
      if (t === "REQUEST") this.count(H.requests, { ...ctx, method: http.method, protocol: http.protocol, reporter: who }, trace);
      else if (t === "RESPONSE") {
        this.count(H.responses!, { ...ctx, method: http.method, protocol: http.protocol, status: String(http.code ?? 0), reporter: who }, trace);
        this.time(H.duration, { ...ctx, method: http.method, reporter: who }, seconds, trace);
      }
    }
  };
}
