// The chart's Grafana dashboard reads only what the agents export: every metric (and every label it groups by) in its
// queries is one the agent's /metrics registry has, with Hubble's metric families all on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { AgentMetrics } from "../node-agent/metrics.ts";
import { NodeAgent, type AgentDatapath } from "../node-agent/agent.ts";
import { parseHubbleMetrics } from "../node-agent/observer/hubble-context.ts";

const DASHBOARD = fileURLToPath(new URL("./membrane/files/hubble-dashboard.json", import.meta.url));

interface Panel {
  readonly title: string;
  readonly targets?: readonly { readonly expr: string }[];
  readonly panels?: readonly Panel[];
}

/** The agent's exported metrics: name → label names, from a real AgentMetrics registry (not scraped: names only). */
function exported(spec: string): Map<string, readonly string[]> {
  const config = parseHubbleMetrics(spec);
  assert.ok(config.ok);
  const log = pino({ level: "silent" });
  const agent = new NodeAgent({ nodeName: "n", operator: "127.0.0.1:1", tls: { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) }, datapath: {} as AgentDatapath, cniSocket: "/nonexistent/agent.sock", log });
  const metrics = new AgentMetrics({ agent, datapath: { dropCounters: () => ({ byReason: {}, lostEvents: 0n }) } as never, log, hubbleMetrics: config.value });
  return new Map((metrics.registry.getMetricsAsArray() as unknown as { name: string; labelNames?: string[] }[]).map((m) => [m.name, m.labelNames ?? []]));
}

/** Every series a PromQL expression reads, with the labels it groups by in the aggregation around it. */
function references(expr: string): { metric: string; by: string[] }[] {
  const out: { metric: string; by: string[] }[] = [];
  for (const m of expr.matchAll(/\b((?:hubble|membrane)_[a-z0-9_]+)\b/g)) {
    // The nearest "by (…)" before the metric is its grouping.
    const before = expr.slice(0, m.index);
    const by = [...before.matchAll(/by \(([^)]*)\)/g)].at(-1)?.[1] ?? "";
    out.push({ metric: m[1]!, by: by.split(",").map((x) => x.trim()).filter((x) => x !== "") });
  }
  return out;
}

test("every metric and grouping label in the Grafana dashboard is one the agents export", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: Panel[]; templating: { list: { query?: unknown }[] } };
  const have = exported("flow drop policy dns http");
  const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
  for (const v of dashboard.templating.list) if (typeof v.query === "string") exprs.push({ panel: "variables", expr: v.query });
  assert.ok(exprs.length >= 10, "the dashboard has queries");
  const seen = new Set<string>();
  for (const { panel, expr } of exprs) {
    const refs = references(expr);
    assert.ok(refs.length > 0 || panel === "variables", `${panel}: ${expr} reads no metric`);
    for (const { metric, by } of refs) {
      // A histogram is exported under its base name; PromQL reads its _bucket/_sum/_count series.
      const base = have.has(metric) ? metric : metric.replace(/_(bucket|sum|count)$/, "");
      assert.ok(have.has(base), `${panel}: ${metric} is not exported by the agents (they export: ${[...have.keys()].sort().join(", ")})`);
      seen.add(base);
      const labels = new Set([...have.get(base)!, ...(base !== metric && metric.endsWith("_bucket") ? ["le"] : [])]);
      for (const l of by) assert.ok(labels.has(l), `${panel}: ${metric} has no label ${l} (it has ${[...labels].join(", ")})`);
    }
  }
  for (const family of ["hubble_flows_processed_total", "hubble_drop_total", "hubble_policy_verdicts_total", "hubble_dns_queries_total", "hubble_http_requests_total", "hubble_http_request_duration_seconds"]) {
    assert.ok(seen.has(family), `the dashboard shows ${family}`);
  }
});

test("the check fails for a metric nobody exports and for a label a metric does not have", () => {
  const have = exported("flow drop policy dns http");
  assert.equal(have.has("hubble_tcp_flags_total"), false, "a Hubble family Membrane does not count is not exported");
  assert.deepEqual(references('sum by (reason, node) (rate(hubble_drop_total[5m]))'), [{ metric: "hubble_drop_total", by: ["reason", "node"] }]);
  assert.equal(have.get("hubble_drop_total")!.includes("node"), false);
  // With the dns family off (--hubble-metrics without it), its metrics are not exported.
  assert.equal(exported("flow drop policy").has("hubble_dns_queries_total"), false);
});
