// The DNS proxy's own metrics: queries by verdict and response code, and the time from a query's arrival to its answer leaving the proxy (the server's time included).
import { Counter, Histogram, type Registry } from "prom-client";
import type { DnsFlow } from "./proxy.ts";

/** Buckets in seconds: a denied query is answered in well under a millisecond, a forwarded one waits on the server. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class DnsProxyMetrics {
  private readonly queries: Counter<"verdict" | "rcode">;
  private readonly latency: Histogram<"verdict">;

  constructor(registry: Registry) {
    this.queries = new Counter({
      name: "membrane_dns_proxy_queries_total",
      help: "Queries the node's DNS proxy handled, by verdict (allowed: forwarded to the server asked; denied: a DNS rule refused it; error: malformed or the server did not answer) and the response code the pod got (empty without an answer).",
      labelNames: ["verdict", "rcode"] as const,
      registers: [registry],
    });
    this.latency = new Histogram({
      name: "membrane_dns_proxy_latency_seconds",
      help: "From a query's arrival at the DNS proxy to its answer leaving it, by verdict: for an allowed query the server's time is included, a denied one is answered by the proxy alone.",
      labelNames: ["verdict"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
  }

  /** Counts one proxied query (the proxy's onFlow). */
  readonly observe = (f: DnsFlow): void => {
    this.queries.inc({ verdict: f.verdict, rcode: f.rcode ?? "" });
    this.latency.observe({ verdict: f.verdict }, f.latencyMs / 1000);
  };
}
