// The chart's runtime.enabled value: off by default (no --enable-runtime, no host PID namespace); on, the agent runs the
// runtime enforcer (a flag its own parser accepts) and shares the host's PID namespace to judge every process.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseManifest, renderText, type K8sObject, kubeletArgs } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

interface PodSpec {
  readonly hostPID?: boolean;
  readonly containers: { readonly name: string; readonly args: string[] }[];
}

function agentPod(objects: K8sObject[]): PodSpec {
  const ds = objects.find((o) => o.kind === "DaemonSet" && o.metadata.name === "membrane-agent") as unknown as { spec: { template: { spec: PodSpec } } };
  return ds.spec.template.spec;
}

/** The agent's flags as its parser reads them (downward-API variables given a node's values). */
function runtimeFlag(pod: PodSpec): boolean {
  const parsed = parseAgentFlags(kubeletArgs(pod.containers.find((c) => c.name === "agent")!.args));
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags.runtime;
}

describe("chart runtime", () => {
  it("is off by default: no runtime enforcer, the agent pod keeps its own PID namespace", async () => {
    const pod = agentPod(parseManifest(await renderText()));
    assert.equal(runtimeFlag(pod), false);
    assert.equal(pod.hostPID, undefined);
  });

  it("runtime.enabled=true: --enable-runtime and hostPID", async () => {
    const pod = agentPod(parseManifest(await renderText({ "runtime.enabled": true })));
    assert.equal(runtimeFlag(pod), true);
    assert.equal(pod.hostPID, true);
  });
});
