// The chart's hubble.export values become agent flags the agent itself accepts (parsed by its own flag parser), with the file's directory mounted.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseManifest, renderText, type K8sObject, kubeletArgs } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

interface Container {
  readonly name: string;
  readonly args: string[];
  readonly volumeMounts?: { name: string; mountPath: string }[];
}

function agentOf(objects: K8sObject[]): { container: Container; volumes: { name: string; hostPath?: { path: string } }[] } {
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as { spec: { template: { spec: { containers: Container[]; volumes: { name: string; hostPath?: { path: string } }[] } } } };
  const spec = ds.spec.template.spec;
  return { container: spec.containers.find((c) => c.name === "agent")!, volumes: spec.volumes };
}

/** The container's args as the kubelet hands them over: `$(VAR)` references expanded (a node's values). */
function argsOf(c: Container): string[] {
  return kubeletArgs(c.args);
}

/** The agent's own flag parser on the chart's args. */
function flagsOf(c: Container) {
  const parsed = parseAgentFlags(argsOf(c));
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags;
}

describe("chart hubble.export", () => {
  it("is off by default: no --hubble-export-* flag", async () => {
    const { container } = agentOf(parseManifest(await renderText()));
    assert.deepEqual(container.args.filter((a) => a.startsWith("--hubble-export")), []);
    assert.equal(flagsOf(container).hubbleExport, undefined);
  });

  it("passes the file, rotation, allow/deny lists and field mask to the agent, which accepts them, and mounts the directory", async () => {
    const { container, volumes } = agentOf(
      parseManifest(
        await renderText({
          "hubble.export.enabled": true,
          "hubble.export.filePath": "/var/log/membrane/hubble.log",
          "hubble.export.fileMaxSizeMb": 20,
          "hubble.export.fileMaxBackups": 3,
          "hubble.export.allowList[0].verdict[0]": "DROPPED",
          "hubble.export.allowList[1].source_pod[0]": "kube-system/",
          "hubble.export.denyList[0].destination_pod[0]": "default/noisy",
          "hubble.export.fieldMask": "{time,verdict,source.pod_name}",
        }),
      ),
    );
    const f = flagsOf(container).hubbleExport!;
    assert.deepEqual(f.file, { path: "/var/log/membrane/hubble.log", maxBytes: 20 * 1024 * 1024, keep: 3 });
    assert.deepEqual(f.allowList, [{ verdict: ["DROPPED"] }, { source_pod: ["kube-system/"] }]);
    assert.deepEqual(f.denyList, [{ destination_pod: ["default/noisy"] }]);
    assert.deepEqual(f.fieldMask, ["time", "verdict", "source.pod_name"]);
    assert.deepEqual(container.volumeMounts?.filter((m) => m.name === "hubble-export"), [{ name: "hubble-export", mountPath: "/var/log/membrane" }]);
    assert.equal(volumes.find((v) => v.name === "hubble-export")?.hostPath?.path, "/var/log/membrane");
  });

  it("aggregation: fieldAggregate and aggregationInterval become the agent's --hubble-export-fieldaggregate and interval", async () => {
    const { container } = agentOf(
      parseManifest(
        await renderText({
          "hubble.export.enabled": true,
          "hubble.export.fieldAggregate[0]": "source.namespace",
          "hubble.export.fieldAggregate[1]": "verdict",
          "hubble.export.aggregationInterval": "30s",
        }),
      ),
    );
    assert.deepEqual(flagsOf(container).hubbleExport?.aggregate, { fields: ["source.namespace", "verdict"], intervalMs: 30_000 });
    const off = agentOf(parseManifest(await renderText({ "hubble.export.enabled": true })));
    assert.equal(flagsOf(off.container).hubbleExport?.aggregate, undefined);
    assert.deepEqual(off.container.args.filter((a) => a.startsWith("--hubble-export-") && a.includes("aggregat")), []);
  });

  it("a filter field the agent refuses is refused at the agent's start, naming it", async () => {
    const { container } = agentOf(parseManifest(await renderText({ "hubble.export.enabled": true, "hubble.export.allowList[0].source_service[0]": "default/web" })));
    const parsed = parseAgentFlags(argsOf(container));
    assert.ok(!parsed.ok);
    assert.match(parsed.error, /^--hubble-export-allowlist: \[0\]\.source_service: not supported/);
  });
});
