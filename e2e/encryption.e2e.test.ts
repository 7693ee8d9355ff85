// End to end, real packets on two nodes: with WireGuard on, a cross-node HTTP request's marker never
// crosses the underlay in clear (and does with encryption off, so the test can fail); same-node traffic
// is unaffected; key rotation (also under a stream of connections: none dropped) and an agent kill -9
// keep cross-node traffic flowing and encrypted; in
// strict mode a node whose tunnel device is down sends nothing in clear (dropped as UNENCRYPTED) and is
// restored when it is back.
// Run under flock /tmp/membrane-kernel.lock (network namespaces, bpffs).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { TestCluster } from "./harness.ts";
import { Capture, type CaptureResult } from "./capture.ts";
import { startEchoServer, startStream } from "./tcp-stream.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { agentScope, devClusterPaths, loadDevClusterState, startAgents } from "../localcluster/devcluster.ts";
import { type LocalNode, loadNodesState, run, terminateProcess } from "../localcluster/nodes.ts";
import { Datapath } from "../node-agent/bpf/datapath.ts";
import { DROP_REASONS } from "../node-agent/bpf/layout.ts";
import { wireguardIfname } from "../node-agent/encryption/wireguard.ts";
import { hostIfname } from "../node-agent/cni/podnet.ts";
import { podMtu } from "../node-agent/mtu.ts";
import { jsonFlows, runHubble } from "../localcluster/hubble/cli.ts";
import type { HubbleFlow } from "../flowapi/hubble/types.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const PORT = 8080;
const NS = "enc";
const ECHO_PORT = 9090;

interface CiliumNodeView {
  metadata: { name: string };
  spec?: { encryption?: { publicKey?: string } };
  status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
}

describe("transparent encryption with WireGuard between two nodes", { timeout: 900_000 }, () => {
  const tc = new TestCluster(`enc${process.pid % 10000}-`);
  const ips = new Map<string, string>();
  const podNetns = new Map<string, string>();
  const containerIds = new Map<string, string>();

  const node = (i: number): string => tc.nodeName(i);
  const ciliumNode = async (i: number): Promise<CiliumNodeView> => JSON.parse(await tc.kubectl(["get", "ciliumnode", node(i), "-o", "json"])) as CiliumNodeView;
  const encryptionReady = (cn: CiliumNodeView) => cn.status?.conditions?.find((c) => c.type === "EncryptionReady");
  const eventually = async <T>(what: string, f: () => Promise<T | undefined>, ms = 60_000): Promise<T> => {
    const end = Date.now() + ms;
    let last: unknown;
    for (;;) {
      try {
        const v = await f();
        if (v !== undefined) return v;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  /** curl inside the pod: an HTTP request whose path is the marker. Resolves with what the server answered ("" when nothing came back). */
  const request = (fromPod: string, toPod: string, marker: string, timeoutS = 3): Promise<string> =>
    new Promise((resolve) => {
      const url = `http://${ips.get(toPod)}:${PORT}/${marker}`;
      execFile("ip", ["netns", "exec", podNetns.get(fromPod)!, "curl", "-s", "--http0.9", "-m", String(timeoutS), url], (_err, stdout) => resolve(stdout.trim()));
    });

  /** The request from `fromPod` with a fresh marker, captured on the underlay interface (eth0) of node `captureNode`. */
  const capturedRequest = async (fromPod: string, toPod: string, captureNode: number, timeoutS = 3): Promise<{ answer: string; seen: CaptureResult }> => {
    const marker = `membrane-marker-${randomBytes(8).toString("hex")}`;
    const cap = await Capture.start(node(captureNode), "eth0", marker);
    const answer = await request(fromPod, toPod, marker, timeoutS);
    await new Promise((r) => setTimeout(r, 300));
    return { answer, seen: await cap.stop() };
  };

  /** Stops every agent by its recorded pid and starts them again with `encryption` (null: off). */
  const restartAgents = async (encryption: { mode: "wireguard"; strict: boolean } | null): Promise<void> => {
    const state = await loadDevClusterState(tc.dir);
    for (const a of state.agents) await terminateProcess(a.pid, 5_000);
    const nodes = (await loadNodesState(tc.dir))!.nodes;
    await startAgents(tc.dir, nodes, tc.cp!.kubeconfig, { encryption });
  };

  /** The MTU of a pod's eth0 and of its host-side veth on node `i`. */
  const mtus = async (pod: string, i: number): Promise<{ pod: number; host: number }> => {
    const mtu = (json: string): number => (JSON.parse(json) as { mtu: number }[])[0]!.mtu;
    return {
      pod: mtu(await run("ip", ["-n", podNetns.get(pod)!, "-j", "link", "show", "dev", "eth0"])),
      host: mtu(await run("ip", ["-n", node(i), "-j", "link", "show", "dev", hostIfname(containerIds.get(pod)!)])),
    };
  };

  /** One ping with DF whose IP packet is `size` bytes, between two pods: what the sender is told. */
  const dfPing = (fromPod: string, toPod: string, size: number): Promise<{ ok: boolean; output: string }> =>
    new Promise((resolve) =>
      execFile("ip", ["netns", "exec", podNetns.get(fromPod)!, "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", String(size - 28), ips.get(toPod)!], (err, stdout, stderr) => resolve({ ok: !err, output: `${stdout}${stderr}` })),
    );

  const bothTunnelsUp = async (): Promise<CiliumNodeView[]> =>
    eventually("both nodes EncryptionReady=True with one peer", async () => {
      const cns = [await ciliumNode(1), await ciliumNode(2)];
      return cns.every((cn) => encryptionReady(cn)?.reason === "TunnelUp" && /1 peer/.test(encryptionReady(cn)!.message) && cn.spec?.encryption?.publicKey) ? cns : undefined;
    });

  before(async () => {
    await tc.start(2);
    const got = await tc.createPods({ [NS]: {} }, [
      { namespace: NS, name: "server", node: 1, labels: { app: "server" }, ports: [{ port: PORT, protocol: "TCP" }] },
      { namespace: NS, name: "client-remote", node: 2, labels: { app: "client" }, ports: [] },
      { namespace: NS, name: "client-local", node: 1, labels: { app: "client" }, ports: [] },
    ]);
    const records = (await loadPodRecords(tc.dir)).pods;
    for (const p of ["server", "client-remote", "client-local"]) {
      ips.set(p, got.get(`${NS}/${p}`)!);
      podNetns.set(p, records[`${NS}/${p}`]!.netns);
      containerIds.set(p, records[`${NS}/${p}`]!.containerId);
    }
  });

  after(async () => {
    await tc.stop();
  });

  it("without encryption, the cross-node request's marker crosses the underlay in clear (VXLAN)", async () => {
    const { answer, seen } = await capturedRequest("client-remote", "server", 2);
    assert.equal(answer, "server", "the request reached the server");
    assert.ok(seen.markerFrames > 0, `the marker is visible on the underlay: ${JSON.stringify(seen)}`);
    assert.ok((seen.udpByPort["8472"] ?? 0) > 0, "carried by VXLAN in clear");
  });

  it("with WireGuard on, the marker never crosses the underlay in clear; the request still arrives; same-node traffic is unaffected", async () => {
    await restartAgents({ mode: "wireguard", strict: false });
    const cns = await bothTunnelsUp();
    assert.notEqual(cns[0]!.spec!.encryption!.publicKey, cns[1]!.spec!.encryption!.publicKey);
    const { answer, seen } = await eventually("an encrypted answer", async () => {
      const r = await capturedRequest("client-remote", "server", 2);
      return r.answer === "server" ? r : undefined;
    });
    assert.equal(answer, "server");
    assert.equal(seen.markerFrames, 0, `no frame on the underlay carries the marker: ${JSON.stringify(seen)}`);
    assert.equal(seen.udpByPort["8472"] ?? 0, 0, "no VXLAN in clear on the underlay");
    assert.ok((seen.udpByPort["51871"] ?? 0) > 0, "the request travelled as WireGuard");

    // Same node: nothing crosses the underlay at all, and the request works.
    const local = await capturedRequest("client-local", "server", 1);
    assert.equal(local.answer, "server");
    assert.equal(local.seen.markerFrames, 0);
    assert.equal(local.seen.udpByPort["51871"] ?? 0, 0, "same-node traffic does not enter the tunnel");
  });

  it("pods created before encryption was switched on get the WireGuard pod MTU on both veth ends: a DF packet one byte over it is refused in the pod, one at it crosses the tunnel", async () => {
    const wg = podMtu("wireguard");
    assert.deepEqual(await mtus("client-remote", 2), { pod: wg, host: wg });
    assert.deepEqual(await mtus("server", 1), { pod: wg, host: wg });
    const over = await dfPing("client-remote", "server", wg + 1);
    assert.equal(over.ok, false, over.output);
    assert.match(over.output, new RegExp(`mtu ?= ?${wg}`), "the pod is told the path MTU");
    const at = await dfPing("client-remote", "server", wg);
    assert.ok(at.ok, `a packet at the path MTU crosses the tunnel: ${at.output}`);
  });

  it("a pod wired from a network config older than the mode (the local cluster's still says 1450) is brought to the WireGuard pod MTU when the plugin registers it", async () => {
    const got = await tc.createPods({}, [{ namespace: NS, name: "late", node: 2, labels: { app: "client" }, ports: [] }]);
    const rec = (await loadPodRecords(tc.dir)).pods[`${NS}/late`]!;
    ips.set("late", got.get(`${NS}/late`)!);
    podNetns.set("late", rec.netns);
    containerIds.set("late", rec.containerId);
    const wg = podMtu("wireguard");
    await eventually("the late pod at the WireGuard pod MTU", async () => {
      const m = await mtus("late", 2);
      return m.pod === wg && m.host === wg ? m : undefined;
    }, 10_000);
    assert.ok((await dfPing("late", "server", wg)).ok);
  });

  it("flows say what crossed inside WireGuard (Hubble's IP.encrypted): the cross-node request's flows on both nodes, never the same-node one; hubble observe --encrypted/--unencrypted through the relay", async () => {
    const relay = (await loadDevClusterState(tc.dir)).hubbleRelay!;
    const since = new Date(Date.now() - 1).toISOString();
    assert.equal(await request("client-remote", "server", "encrypted-flows"), "server");
    assert.equal(await request("client-local", "server", "clear-flows"), "server");
    const observe = async (...args: string[]): Promise<HubbleFlow[]> => {
      const r = await runHubble(["observe", "--server", relay, "--since", since, "--to-pod", `${NS}/server`, ...args, "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      return jsonFlows(r.stdout);
    };
    const encrypted = await eventually("the remote client's flows on both nodes", async () => {
      const fs = await observe("--encrypted");
      return new Set(fs.map((f) => f.node_name)).size === 2 ? fs : undefined;
    }, 20_000);
    assert.ok(encrypted.every((f) => f.source.pod_name === "client-remote" && f.IP.encrypted === true), JSON.stringify(encrypted.map((f) => [f.node_name, f.source.pod_name, f.IP])));
    const clear = await observe("--unencrypted");
    assert.ok(clear.some((f) => f.source.pod_name === "client-local"), "the same-node request's flows");
    assert.ok(clear.every((f) => f.source.pod_name === "client-local"), JSON.stringify(clear.map((f) => [f.node_name, f.source.pod_name, f.IP])));
  });

  it("membrane encryption status lists each node's public key and EncryptionReady", async () => {
    // Peers come with the peer's configuration, the first handshake as it happens.
    const out = await eventually("membrane encryption status with peers and a handshake", async () => {
      const o = await run(MEMBRANE, ["encryption", "status", "--kubeconfig", tc.cp!.kubeconfig]);
      return [1, 2].every((i) => new RegExp(`${node(i)}\\s+-\\s+\\S+\\s+1\\s+\\d{4}-`).test(o)) ? o : undefined;
    }, 30_000).catch(() => run(MEMBRANE, ["encryption", "status", "--kubeconfig", tc.cp!.kubeconfig]));
    // Peers, the last handshake and the byte counters are as of each agent's last report.
    for (const i of [1, 2]) assert.match(out, new RegExp(`${node(i)}\\s+-\\s+[A-Za-z0-9+/]{43}=\\s+1\\s+\\S+\\s+\\d+\\s+\\d+\\s+True/TunnelUp`), out);
  });

  it("rotation: membrane encryption rotate --node gives that node a new key pair; cross-node traffic flows again, still encrypted", async () => {
    const before = (await ciliumNode(2)).spec!.encryption!.publicKey;
    await run(MEMBRANE, ["encryption", "rotate", "--node", node(2), "--kubeconfig", tc.cp!.kubeconfig]);
    await eventually("a new public key", async () => ((await ciliumNode(2)).spec?.encryption?.publicKey !== before ? true : undefined));
    const r = await eventually("an answer after the rotation", async () => {
      const x = await capturedRequest("client-remote", "server", 2);
      return x.answer === "server" ? x : undefined;
    }, 30_000);
    assert.equal(r.seen.markerFrames, 0, JSON.stringify(r.seen));
  });

  it("rotation under a stream of connections: an established connection exchanging data survives both nodes' rotations, and every new connection gets through", async () => {
    const echo = await startEchoServer(podNetns.get("server")!, ECHO_PORT);
    try {
      const stream = await startStream(podNetns.get("client-remote")!, ips.get("server")!, ECHO_PORT);
      await new Promise((r) => setTimeout(r, 2_000));
      const t0 = Date.now();
      for (const i of [2, 1]) {
        const before = (await ciliumNode(i)).spec!.encryption!.publicKey;
        await run(MEMBRANE, ["encryption", "rotate", "--node", node(i), "--kubeconfig", tc.cp!.kubeconfig]);
        await eventually(`node-${i}'s new public key`, async () => ((await ciliumNode(i)).spec?.encryption?.publicKey !== before ? true : undefined));
        await new Promise((r) => setTimeout(r, 5_000));
      }
      const rotatedMs = Date.now() - t0;
      const r = await stream.finish();
      console.log(`rotation under a stream (${rotatedMs} ms of rotations): ${JSON.stringify(r)}`);
      assert.equal(r.established.error, undefined, `the established connection survived: ${JSON.stringify(r)}`);
      assert.ok(r.established.sent > 50 && r.established.echoed >= r.established.sent - 1, `every line came back: ${JSON.stringify(r.established)}`);
      assert.equal(r.connections.failed, 0, `no new connection failed: ${JSON.stringify(r.connections)}`);
      assert.ok(r.connections.ok > 20, JSON.stringify(r.connections));
    } finally {
      echo.stop();
    }
  });

  it("agent kill -9: the tunnel outlives the agent, traffic stays encrypted while it is gone, and an established connection survives the kill and the restart", async () => {
    const echo = await startEchoServer(podNetns.get("server")!, ECHO_PORT);
    try {
      const stream = await startStream(podNetns.get("client-remote")!, ips.get("server")!, ECHO_PORT);
      const state = await loadDevClusterState(tc.dir);
      const a2 = state.agents.find((a) => a.node === node(2))!;
      process.kill(a2.pid, "SIGKILL");
      await eventually("agent gone", async () => (await run("ps", ["-o", "stat=", "-p", String(a2.pid)]).catch(() => "").then((s) => (s.trim() === "" || s.startsWith("Z") ? true : undefined))));
      const r = await capturedRequest("client-remote", "server", 2);
      assert.equal(r.answer, "server", "traffic flows with the agent dead");
      assert.equal(r.seen.markerFrames, 0, JSON.stringify(r.seen));
      await startAgents(tc.dir, (await loadNodesState(tc.dir))!.nodes, tc.cp!.kubeconfig);
      await bothTunnelsUp();
      await new Promise((res) => setTimeout(res, 3_000));
      const s = await stream.finish();
      console.log(`agent kill -9 and restart under a stream: ${JSON.stringify(s)}`);
      assert.equal(s.established.error, undefined, `the established connection survived: ${JSON.stringify(s)}`);
      assert.ok(s.established.echoed >= s.established.sent - 1, JSON.stringify(s.established));
      assert.equal(s.connections.failed, 0, JSON.stringify(s.connections));
    } finally {
      echo.stop();
    }
  });

  it("strict: with node-2's tunnel device down nothing crosses in clear, the datapath drops with reason UNENCRYPTED; restored when the device is back", async () => {
    await restartAgents({ mode: "wireguard", strict: true });
    await bothTunnelsUp();
    const ifname = wireguardIfname(node(2));
    await run("ip", ["-n", node(2), "link", "set", ifname, "down"]);
    try {
      await eventually("EncryptionReady=False/DeviceDown", async () => (encryptionReady(await ciliumNode(2))?.reason === "DeviceDown" ? true : undefined), 20_000).catch((e: unknown) => {
        const agentLog = readFileSync(join(devClusterPaths(tc.dir).agentDir(node(2)), "agent.log"), "utf8").split("\n").slice(-15).join("\n");
        throw new Error(`${(e as Error).message}; node-2's agent log ends: ${agentLog}`, { cause: e });
      });
      const r = await capturedRequest("client-remote", "server", 2, 2);
      assert.equal(r.answer, "", "no answer: the packets were dropped");
      assert.equal(r.seen.markerFrames, 0, `nothing in clear: ${JSON.stringify(r.seen)}`);
      assert.equal(r.seen.udpByPort["8472"] ?? 0, 0, "no VXLAN in clear");
      // The datapath dropped them before encapsulation, and says why: in flows and in the drop counters.
      const flows = await eventually("an UNENCRYPTED drop in the flows", async () => {
        const out = await run(MEMBRANE, ["observe", "--kubeconfig", tc.cp!.kubeconfig, "--verdict", "DROPPED", "--last", "50", "-o", "json"]);
        const fs = out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as { dropReason?: string; source?: { pod?: string } });
        return fs.some((f) => f.dropReason === DROP_REASONS[14]) ? fs : undefined;
      }, 20_000);
      assert.ok(flows.some((f) => f.dropReason?.startsWith("UNENCRYPTED") && f.source?.pod === "client-remote"), JSON.stringify(flows.slice(-3)));
      const dp = Datapath.load(agentScope({ name: node(2) } as LocalNode));
      try {
        assert.ok(Number(dp.dropCounters().byReason[DROP_REASONS[14]] ?? 0) > 0, "counted as UNENCRYPTED");
      } finally {
        dp.close();
      }
    } finally {
      await run("ip", ["-n", node(2), "link", "set", ifname, "up"]);
    }
    const back = await eventually("an answer with the device back", async () => {
      const x = await capturedRequest("client-remote", "server", 2);
      return x.answer === "server" ? x : undefined;
    }, 30_000);
    assert.equal(back.seen.markerFrames, 0);
  });
  it("encryption switched off: the agents remove the device, its rule and table, and withdraw the key; traffic flows over plain VXLAN", async () => {
    await restartAgents(null);
    for (const i of [1, 2]) {
      const ifname = wireguardIfname(node(i));
      assert.equal((await run("ip", ["-n", node(i), "-j", "link", "show"])).includes(ifname), false, `node-${i}: ${ifname} is gone`);
      assert.equal((await run("ip", ["-n", node(i), "rule", "list"])).includes("lookup 8472"), false, `node-${i}: no WireGuard rule`);
      assert.equal((await run("ip", ["-n", node(i), "route", "show", "table", "8472"])).trim(), "", `node-${i}: the WireGuard table is empty`);
      const cn = await eventually(`node-${i}'s CiliumNode without a key`, async () => {
        const c = await ciliumNode(i);
        return !c.spec?.encryption?.publicKey && !encryptionReady(c) ? c : undefined;
      }, 20_000);
      assert.equal(cn.spec?.encryption?.publicKey, undefined);
    }
    const r = await eventually("an answer over plain VXLAN", async () => {
      const x = await capturedRequest("client-remote", "server", 2);
      return x.answer === "server" ? x : undefined;
    }, 30_000);
    assert.ok(r.seen.markerFrames > 0 && (r.seen.udpByPort["8472"] ?? 0) > 0, `in clear again, as asked: ${JSON.stringify(r.seen)}`);
    // The pods get the MTU of a node without encryption back, and a full-size packet crosses again.
    const plain = podMtu("disabled");
    assert.deepEqual(await mtus("client-remote", 2), { pod: plain, host: plain });
    const full = await dfPing("client-remote", "server", plain);
    assert.ok(full.ok, `a ${plain}-byte DF packet crosses over plain VXLAN: ${full.output}`);
  });
});
