// The agent's Hubble TCP server address as the chart writes it: one address whatever the node's family, read by the agent's own flag parser.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { kubeletArgs, NODE_A_ENV, parseManifest, renderText, type K8sObject } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

function agentArgs(objects: K8sObject[]): string[] {
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as { spec: { template: { spec: { containers: { name: string; args: string[] }[] } } } };
  const args = ds.spec.template.spec.containers.find((c) => c.name === "agent")!.args;
  return args[0] === "agent" ? args.slice(1) : args;
}

/** The args as the kubelet hands them to the agent on a node with this HOST_IP (`$(VAR)` expanded, HOST_IPS the same single-family node's; the operator Service's ClusterIP from the kubelet's service links). */
const onNode = (args: readonly string[], hostIP: string): string[] =>
  kubeletArgs(args, { ...NODE_A_ENV, HOST_IP: hostIP, HOST_IPS: hostIP });

describe("chart hubble agent server address", () => {
  it("an IPv4 and an IPv6 node each get their own address and the agent port, in canonical HOST:PORT (the default chart: both proxies on)", async () => {
    const args = agentArgs(parseManifest(await renderText({ "hubble.agentPort": 4244 })));
    for (const [hostIP, want] of [
      ["10.0.0.1", "10.0.0.1:4244"],
      ["fd00:10::1", "[fd00:10::1]:4244"],
    ] as const) {
      const parsed = parseAgentFlags(onNode(args, hostIP));
      assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
      assert.equal(parsed.flags.hubbleTcp?.address, want, hostIP);
    }
  });

  it("the agent reads HOST:PORT in every spelling and refuses what is not one", () => {
    const tls = ["--hubble-tls-cert=c", "--hubble-tls-key=k", "--hubble-tls-client-ca=ca"];
    const address = (a: string) => {
      const p = parseAgentFlags(["--node-name=n", "--operator=127.0.0.1:9890", "--tls-cert=c", "--tls-key=k", "--tls-ca=ca", `--hubble-listen-address=${a}`, ...tls]);
      return p.ok ? p.flags.hubbleTcp?.address : p.error;
    };
    assert.equal(address("127.0.0.1:4244"), "127.0.0.1:4244");
    assert.equal(address("[127.0.0.1]:4244"), "127.0.0.1:4244");
    assert.equal(address("[::1]:4244"), "[::1]:4244");
    assert.match(address("fd00::1:4244")!, /^--hubble-listen-address: must be HOST:PORT/);
  });
});
