// The chart's l7Proxy values: by default the membrane-l7proxy DaemonSet (host network, NET_ADMIN and BPF only, no API token) that the agent configures over the socket directory both mount (--external-l7-proxy, as its own parser reads it); embedded: no DaemonSet, the agent starts the proxy; off: no proxy at all.
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { daemonSetPod, hostDirAt, parseManifest, renderText, renderedAgentFlags } from "../localcluster/chart.ts";

describe("chart l7Proxy", () => {
  it("by default the proxy is the membrane-l7proxy DaemonSet: host network, root with NET_ADMIN and BPF only, no API token, meeting the agent in the host directory both mount", async () => {
    const objects = parseManifest(await renderText());
    const flags = renderedAgentFlags(objects);
    assert.equal(flags.l7Proxy, true);
    assert.deepEqual(flags.l7ProxyExternal, { socketDir: "/var/run/membrane/l7proxy" }, "the agent starts no proxy: --external-l7-proxy");
    assert.equal(flags.httpNormalizePath, true, "no extraConfig: paths normalized (the agent's default)");
    const pod = daemonSetPod(objects, "membrane-l7proxy");
    assert.ok(pod, "the DaemonSet is rendered");
    assert.equal(pod.hostNetwork, true, "it listens on the node's address");
    assert.equal(pod.automountServiceAccountToken, false);
    const proxy = pod.containers[0]!;
    assert.equal(proxy.args[0], "l7proxy");
    assert.deepEqual(proxy.securityContext, { runAsUser: 0, allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "BPF"] } });
    const socket = proxy.args.find((a) => a.startsWith("--agent-socket="))!.slice("--agent-socket=".length);
    assert.equal(socket, path.join(flags.l7ProxyExternal!.socketDir, "config.sock"), "the proxy dials the socket the agent listens on");
    assert.ok(proxy.args.includes(`--flow-socket=${path.join(flags.l7ProxyExternal!.socketDir, "flows.sock")}`), "its flows reach the agent");
    assert.ok(proxy.args.includes("--bpf-scope=$(NODE_NAME)"), "the agent's maps, pinned under the node's name");
    const agentPod = daemonSetPod(objects, "membrane-agent")!;
    const agent = agentPod.containers.find((c) => c.name === "agent")!;
    const dir = flags.l7ProxyExternal!.socketDir;
    assert.equal(hostDirAt(pod, proxy, dir), dir);
    assert.equal(hostDirAt(agentPod, agent, dir), dir, "the same host directory in both pods");
    assert.equal(hostDirAt(pod, proxy, "/sys/fs/bpf"), "/sys/fs/bpf", "the pinned maps");
  });

  it("l7Proxy.mode=embedded: no DaemonSet, the agent starts the proxy in its container", async () => {
    const objects = parseManifest(await renderText({ "l7Proxy.mode": "embedded" }));
    assert.equal(daemonSetPod(objects, "membrane-l7proxy"), undefined);
    const flags = renderedAgentFlags(objects);
    assert.equal(flags.l7Proxy, true);
    assert.equal(flags.l7ProxyExternal, undefined);
  });

  it("l7Proxy.enabled=false: no proxy at all (--enable-l7-proxy=false)", async () => {
    const objects = parseManifest(await renderText({ "l7Proxy.enabled": false }));
    assert.equal(daemonSetPod(objects, "membrane-l7proxy"), undefined);
    assert.equal(renderedAgentFlags(objects).l7Proxy, false);
  });

  it("extraConfig.http-normalize-path (Cilium's cilium-config key): passed to the agent as --http-normalize-path (unset: the agent's default, normalized); other extraConfig keys refused", async () => {
    assert.equal(renderedAgentFlags(parseManifest(await renderText({ "extraConfig.http-normalize-path": false }))).httpNormalizePath, false);
    await assert.rejects(renderText({ "extraConfig.enable-bpf-masquerade": true }), /extraConfig/);
  });
});
