// The chart's hubble.export.dynamic values: a ConfigMap of flow logs the agent's own parser accepts, the agent flag that
// points at it, and each log's directory mounted from the node once.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { parseManifest, renderText, type K8sObject, kubeletArgs } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";
import { parseFlowLogsConfig } from "../node-agent/observer/flowlogs.ts";

interface Container {
  readonly name: string;
  readonly args: string[];
  readonly volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Volume {
  readonly name: string;
  readonly hostPath?: { path: string; type?: string };
  readonly configMap?: { name: string; optional?: boolean };
}

function agentOf(objects: K8sObject[]): { container: Container; volumes: Volume[] } {
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as { spec: { template: { spec: { containers: Container[]; volumes: Volume[] } } } };
  const spec = ds.spec.template.spec;
  return { container: spec.containers.find((c) => c.name === "agent")!, volumes: spec.volumes };
}

function flowLogsConfigMap(objects: K8sObject[], name = "membrane-flowlog-config"): string | undefined {
  const cm = objects.find((o) => o.kind === "ConfigMap" && (o.metadata as { name: string }).name === name) as unknown as { data: Record<string, string> } | undefined;
  return cm?.data["flowlogs.yaml"];
}

/** The agent's own flag parser on the chart's args (`$(VAR)` expanded as the kubelet does). */
function flagsOf(c: Container) {
  const parsed = parseAgentFlags(kubeletArgs(c.args));
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags;
}

/** Where a volume is mounted in the container. */
const mountOf = (c: Container, volume: string): string | undefined => c.volumeMounts?.find((m) => m.name === volume)?.mountPath;

describe("chart hubble.export.dynamic", () => {
  it("is off by default: no flag, no ConfigMap, no volume", async () => {
    const objects = parseManifest(await renderText());
    const { container, volumes } = agentOf(objects);
    assert.equal(flagsOf(container).hubbleFlowLogs, undefined);
    assert.equal(flowLogsConfigMap(objects), undefined);
    assert.deepEqual(volumes.filter((v) => v.name.startsWith("hubble-flowlog")), []);
  });

  it("enabled: the agent reads the ConfigMap's flowlogs.yaml at the path its flag names, the default log parses, its directory is the node's", async () => {
    const objects = parseManifest(await renderText({ "hubble.export.dynamic.enabled": true }));
    const { container, volumes } = agentOf(objects);
    const file = flagsOf(container).hubbleFlowLogs!;
    assert.equal(mountOf(container, "hubble-flowlogs-config"), path.dirname(file));
    assert.deepEqual(volumes.find((v) => v.name === "hubble-flowlogs-config")?.configMap, { name: "membrane-flowlog-config", optional: true });
    const text = flowLogsConfigMap(objects);
    assert.ok(text !== undefined, "the ConfigMap holds flowlogs.yaml");
    assert.equal(path.basename(file), "flowlogs.yaml");
    const parsed = parseFlowLogsConfig(text);
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.errors.join("; "));
    assert.deepEqual(
      parsed.flowLogs.map((l) => [l.name, l.filePath, l.fileMaxSizeMb, l.fileMaxBackups, l.fileCompress]),
      [["all", "/var/run/membrane/hubble/events.log", 10, 5, false]],
    );
    assert.equal(mountOf(container, "hubble-flowlog-0"), "/var/run/membrane/hubble");
    assert.deepEqual(volumes.find((v) => v.name === "hubble-flowlog-0")?.hostPath, { path: "/var/run/membrane/hubble", type: "DirectoryOrCreate" });
  });

  it("several logs: filters, field mask and end reach the agent's parser as written; each directory is mounted once, none twice", async () => {
    const objects = parseManifest(
      await renderText({
        "hubble.export.dynamic.enabled": true,
        "hubble.export.enabled": true,
        "hubble.export.filePath": "/var/log/membrane/static.log",
        "hubble.export.dynamic.config.content[0].name": "drops",
        "hubble.export.dynamic.config.content[0].filePath": "/var/log/flows/drops.log",
        "hubble.export.dynamic.config.content[0].includeFilters[0].verdict[0]": "DROPPED",
        "hubble.export.dynamic.config.content[0].excludeFilters[0].source_pod[0]": "kube-system/",
        "hubble.export.dynamic.config.content[0].fieldMask[0]": "time",
        "hubble.export.dynamic.config.content[0].fieldMask[1]": "source.pod_name",
        "hubble.export.dynamic.config.content[0].end": "2030-10-09T23:59:59-07:00",
        "hubble.export.dynamic.config.content[1].name": "web",
        "hubble.export.dynamic.config.content[1].filePath": "/var/log/flows/web.log",
        "hubble.export.dynamic.config.content[1].includeFilters[0].destination_workload[0].name": "web",
        "hubble.export.dynamic.config.content[1].fileCompress": true,
        "hubble.export.dynamic.config.content[2].name": "beside-static",
        "hubble.export.dynamic.config.content[2].filePath": "/var/log/membrane/beside.log",
      }),
    );
    const parsed = parseFlowLogsConfig(flowLogsConfigMap(objects)!);
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.errors.join("; "));
    const [drops, web, beside] = parsed.flowLogs;
    assert.deepEqual(drops!.includeFilters, [{ verdict: ["DROPPED"] }]);
    assert.deepEqual(drops!.excludeFilters, [{ source_pod: ["kube-system/"] }]);
    assert.deepEqual(drops!.fieldMask, ["time", "source.pod_name"]);
    assert.equal(drops!.endMs, Date.parse("2030-10-09T23:59:59-07:00"));
    assert.deepEqual(web!.includeFilters, [{ destination_workload: [{ name: "web" }] }]);
    assert.equal(web!.fileCompress, true);
    assert.equal(beside!.filePath, "/var/log/membrane/beside.log");
    const { container, volumes } = agentOf(objects);
    const mountPaths = (container.volumeMounts ?? []).map((m) => m.mountPath);
    assert.deepEqual(mountPaths.filter((p, i) => mountPaths.indexOf(p) !== i), [], "no directory mounted twice");
    assert.ok(mountPaths.includes("/var/log/flows") && mountPaths.includes("/var/log/membrane"), mountPaths.join(" "));
    assert.deepEqual(
      volumes.filter((v) => v.name.startsWith("hubble-flowlog-")).map((v) => v.hostPath?.path),
      ["/var/log/flows"],
      "the static export's directory is mounted already",
    );
  });

  it("a field the agent refuses renders, and the agent's parser names it (aggregation without its interval, an unsupported filter)", async () => {
    const objects = parseManifest(
      await renderText({
        "hubble.export.dynamic.enabled": true,
        "hubble.export.dynamic.config.content[0].name": "agg",
        "hubble.export.dynamic.config.content[0].filePath": "/var/log/flows/agg.log",
        "hubble.export.dynamic.config.content[0].fieldAggregate[0]": "source",
        "hubble.export.dynamic.config.content[0].includeFilters[0].source_service[0]": "default/web",
      }),
    );
    const parsed = parseFlowLogsConfig(flowLogsConfigMap(objects)!);
    assert.ok(!parsed.ok);
    assert.ok(parsed.errors.some((e) => e.startsWith("flowLogs[0].aggregationInterval: required")), parsed.errors.join("; "));
    assert.ok(parsed.errors.some((e) => e.startsWith("flowLogs[0].includeFilters[0].source_service: not supported")), parsed.errors.join("; "));
  });

  it("createConfigMap false: the agent reads the ConfigMap named, which the chart does not write (nor mount directories for)", async () => {
    const objects = parseManifest(await renderText({ "hubble.export.dynamic.enabled": true, "hubble.export.dynamic.config.createConfigMap": false, "hubble.export.dynamic.config.configMapName": "my-flowlogs" }));
    const { container, volumes } = agentOf(objects);
    assert.ok(flagsOf(container).hubbleFlowLogs !== undefined);
    assert.deepEqual(volumes.find((v) => v.name === "hubble-flowlogs-config")?.configMap, { name: "my-flowlogs", optional: true });
    assert.equal(flowLogsConfigMap(objects, "my-flowlogs"), undefined);
    assert.deepEqual(volumes.filter((v) => v.name.startsWith("hubble-flowlog-")), []);
  });

  it("a log without an absolute filePath is refused by the values schema, naming it", async () => {
    await assert.rejects(
      renderText({ "hubble.export.dynamic.enabled": true, "hubble.export.dynamic.config.content[0].name": "x", "hubble.export.dynamic.config.content[0].filePath": "relative.log" }),
      /\/hubble\/export\/dynamic\/config\/content\/0\/filePath/,
    );
  });
});
