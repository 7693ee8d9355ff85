// The chart's hubble.metrics.dynamic values: a ConfigMap of metric families the agent's own parser accepts, and the agent
// flag that points at it in place of --hubble-metrics; hubble.metrics.enableOpenMetrics and its flag.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { parseManifest, renderText, type K8sObject, kubeletArgs } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";
import { parseDynamicMetricsConfig } from "../node-agent/observer/hubble-metrics-config.ts";

interface Container {
  readonly name: string;
  readonly args: string[];
  readonly volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

function agentOf(objects: K8sObject[]): { container: Container; volumes: { name: string; configMap?: { name: string; optional?: boolean } }[] } {
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as { spec: { template: { spec: { containers: Container[]; volumes: { name: string }[] } } } };
  const spec = ds.spec.template.spec;
  return { container: spec.containers.find((c) => c.name === "agent")!, volumes: spec.volumes };
}

function flagsOf(c: Container) {
  const parsed = parseAgentFlags(kubeletArgs(c.args));
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags;
}

const configMapText = (objects: K8sObject[]): string | undefined =>
  (objects.find((o) => o.kind === "ConfigMap" && (o.metadata as { name: string }).name === "membrane-dynamic-metrics-config") as unknown as { data: Record<string, string> } | undefined)?.data["dynamic-metrics.yaml"];

describe("chart hubble.metrics.dynamic", () => {
  it("off by default: --hubble-metrics from hubble.metrics.enabled, no ConfigMap", async () => {
    const objects = parseManifest(await renderText());
    const flags = flagsOf(agentOf(objects).container);
    assert.equal(flags.hubbleDynamicMetrics, undefined);
    assert.deepEqual([...flags.hubbleMetrics.keys()], ["flow", "drop", "policy", "dns", "http"]);
    assert.equal(configMapText(objects), undefined);
  });

  it("enabled: the agent reads the ConfigMap's file at the path its flag names (no --hubble-metrics), and its own parser accepts the metrics with their filters", async () => {
    const objects = parseManifest(
      await renderText({
        "hubble.metrics.dynamic.enabled": true,
        "hubble.metrics.dynamic.config.content[0].name": "flow",
        "hubble.metrics.dynamic.config.content[0].contextOptions[0].name": "sourceContext",
        "hubble.metrics.dynamic.config.content[0].contextOptions[0].values[0]": "pod",
        "hubble.metrics.dynamic.config.content[0].includeFilters[0].source_pod[0]": "shop/",
        "hubble.metrics.dynamic.config.content[1].name": "drop",
        "hubble.metrics.dynamic.config.content[1].excludeFilters[0].source_pod[0]": "kube-system/",
      }),
    );
    const { container, volumes } = agentOf(objects);
    const flags = flagsOf(container);
    const file = flags.hubbleDynamicMetrics!;
    assert.equal(container.volumeMounts?.find((m) => m.name === "hubble-dynamic-metrics-config")?.mountPath, path.dirname(file));
    assert.deepEqual(volumes.find((v) => v.name === "hubble-dynamic-metrics-config")?.configMap, { name: "membrane-dynamic-metrics-config", optional: true });
    assert.equal(path.basename(file), "dynamic-metrics.yaml");
    const parsed = parseDynamicMetricsConfig(configMapText(objects)!);
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.errors.join("; "));
    assert.deepEqual([...parsed.value.keys()], ["flow", "drop"]);
    assert.deepEqual(parsed.value.get("flow")!.context.labelNames, ["source"]);
    assert.ok(parsed.value.get("flow")!.select !== undefined && parsed.value.get("drop")!.select !== undefined);
  });

  it("hubble.metrics.enableOpenMetrics: the agent's flag, off by default", async () => {
    assert.equal(flagsOf(agentOf(parseManifest(await renderText())).container).hubbleOpenMetrics, undefined);
    assert.equal(flagsOf(agentOf(parseManifest(await renderText({ "hubble.metrics.enableOpenMetrics": true }))).container).hubbleOpenMetrics, true);
  });
});
