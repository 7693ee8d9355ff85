// The chart's runtime values: off by default (no --enable-runtime, no host PID namespace, no runtime pod); on, by
// default the membrane-runtime DaemonSet runs `membrane runtime` in a pod of its own (host PID namespace) from the
// files the agent writes in the state directory both mount (the agent's --external-runtime, as its parser reads it),
// so an agent pod's deletion does not end it; runtime.mode=embedded: the agent runs it in its own container.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { daemonSetPod, hostDirAt, kubeletArgs, parseManifest, renderText, renderedAgentFlags } from "../localcluster/chart.ts";
import { AgentRuntime } from "../node-agent/runtime/agent-runtime.ts";
import { parseRuntimeArgs } from "../node-agent/runtime/main.ts";

describe("chart runtime", () => {
  it("is off by default: no runtime enforcer, no runtime pod, the agent pod keeps its own PID namespace", async () => {
    const objects = parseManifest(await renderText());
    assert.equal(renderedAgentFlags(objects).runtime, false);
    assert.equal(daemonSetPod(objects, "membrane-agent")!.hostPID, undefined);
    assert.equal(daemonSetPod(objects, "membrane-runtime"), undefined);
  });

  it("runtime.enabled=true: the membrane-runtime DaemonSet runs it (host PID namespace) from the files the agent writes in the host directory both mount; the agent starts none (--external-runtime)", async () => {
    const objects = parseManifest(await renderText({ "runtime.enabled": true }));
    const flags = renderedAgentFlags(objects);
    assert.equal(flags.runtime, true);
    assert.equal(flags.runtimeExternal, true, "the agent neither starts nor stops it");
    const agentPod = daemonSetPod(objects, "membrane-agent")!;
    assert.equal(agentPod.hostPID, true, "the agent finds the runtime's pid");
    const pod = daemonSetPod(objects, "membrane-runtime");
    assert.ok(pod, "the DaemonSet is rendered");
    assert.equal(pod.hostPID, true, "it judges every process of the node");
    assert.equal(pod.hostNetwork, true, "its event stream on the node's loopback, where the agent reads it");
    assert.equal(pod.automountServiceAccountToken, false, "it talks to no API server");
    const runtime = pod.containers[0]!;
    assert.equal(runtime.args[0], "runtime");
    const parsed = parseRuntimeArgs(kubeletArgs(runtime.args.slice(1)));
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
    // The files of the agent's state dir, as the agent names them (it finds the runtime by the pid file and the policy file's path in its argv).
    const files = new AgentRuntime({ stateDir: flags.stateDir, nodeName: "node-a", log: pino({ level: "silent" }), external: true });
    assert.deepEqual(
      [parsed.value.policyFile, parsed.value.podsFile, parsed.value.statusFile, parsed.value.pidFile, parsed.value.exportFile],
      [files.policyFile, files.podsFile, files.statusFile, files.pidFile, files.eventsFile],
    );
    assert.ok(runtime.args.includes(files.policyFile), "the policy file's path is an argument of its own");
    assert.equal(parsed.value.nodeName, "node-a");
    assert.equal(parsed.value.cgroupRoot, "/host/cgroupv2");
    const agent = agentPod.containers.find((c) => c.name === "agent")!;
    assert.equal(hostDirAt(pod, runtime, "/var/run/membrane"), "/var/run/membrane");
    assert.equal(hostDirAt(agentPod, agent, "/var/run/membrane"), "/var/run/membrane", "the same host directory in both pods");
    assert.ok(flags.stateDir.startsWith("/var/run/membrane/"));
    assert.equal(hostDirAt(pod, runtime, "/host/cgroupv2"), "/sys/fs/cgroup");
    assert.equal(hostDirAt(pod, runtime, "/sys/fs/bpf"), "/sys/fs/bpf", "its programs pinned in the host's bpffs");
  });

  it("rolls membrane-runtime with the new pod beside the old one (maxSurge 1, maxUnavailable 0: no hostPort forbids it), the old one deleted only once the new one's runtime is ready: its probe tests the --ready-file the runtime writes in the pod's own filesystem", async () => {
    const objects = parseManifest(await renderText({ "runtime.enabled": true }));
    const ds = objects.find((o) => o.kind === "DaemonSet" && o.metadata.name === "membrane-runtime") as unknown as { spec: { updateStrategy: unknown } };
    assert.deepEqual(ds.spec.updateStrategy, { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
    const pod = daemonSetPod(objects, "membrane-runtime")!;
    const runtime = pod.containers[0]! as typeof pod.containers[0] & { ports?: unknown[]; readinessProbe?: { exec?: { command: string[] } } };
    assert.equal(runtime.ports, undefined, "a declared port on a host-network pod is a hostPort, which forbids a second pod on the node");
    const parsed = parseRuntimeArgs(kubeletArgs(runtime.args.slice(1)));
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
    assert.ok(parsed.value.readyFile?.startsWith("/tmp/"), `in the container's own filesystem: ${parsed.value.readyFile}`);
    assert.equal(hostDirAt(pod, runtime, "/tmp"), undefined, "not a host directory both pods would share");
    assert.deepEqual(runtime.readinessProbe?.exec?.command, ["test", "-e", parsed.value.readyFile]);
  });

  it("runtime.keepSensorsOnExit: the runtime pod's --keep-sensors-on-exit (off by default, as Tetragon's)", async () => {
    const keepOf = async (values: Record<string, boolean>): Promise<boolean> => {
      const pod = daemonSetPod(parseManifest(await renderText({ "runtime.enabled": true, ...values })), "membrane-runtime")!;
      const parsed = parseRuntimeArgs(kubeletArgs(pod.containers[0]!.args.slice(1)));
      assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
      // The production pin scope whatever this says: a new runtime adopts what the old pod (or an older version) kept.
      assert.equal(parsed.value.bpfScope, "runtime");
      return parsed.value.keepSensorsOnExit;
    };
    assert.equal(await keepOf({}), false);
    assert.equal(await keepOf({ "runtime.keepSensorsOnExit": true }), true);
  });

  it("runtime.mode=embedded: no runtime pod; the agent runs it in its container (--enable-runtime, hostPID)", async () => {
    const objects = parseManifest(await renderText({ "runtime.enabled": true, "runtime.mode": "embedded" }));
    assert.equal(daemonSetPod(objects, "membrane-runtime"), undefined);
    const flags = renderedAgentFlags(objects);
    assert.equal(flags.runtime, true);
    assert.equal(flags.runtimeExternal, false);
    assert.equal(daemonSetPod(objects, "membrane-agent")!.hostPID, true);
  });
});
