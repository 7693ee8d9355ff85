// End to end, real packets on two nodes: with WireGuard on, a cross-node HTTP request's marker never
// crosses the underlay in clear (and does with encryption off, so the test can fail); same-node traffic
// is unaffected; key rotation (also under a stream of connections: none dropped) and an agent kill -9
// keep cross-node traffic flowing and encrypted; in
// strict mode a node whose tunnel device is down sends nothing in clear (dropped as UNENCRYPTED) and is
// restored when it is back.
// Run under flock /tmp/membrane-kernel.lock (network namespaces, bpffs).
// Process-based cluster because: (a) it switches WireGuard on, strict and off by restarting the agents by pid with `--encryption` flags that `dev up` refuses on real nodes (there the chart's encryption.enabled is a helm upgrade: realnode.test.ts
// "encryption.enabled with strictMode (WireGuard) by helm upgrade ..."), sets a peer's allowed IPs by hand through wireguard-go's UAPI socket in the host's /var/run/wireguard, and kills the agent by pid with a restart by hand.
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
import { UAPI_DIR, getDevice, uapi } from "../node-agent/encryption/wireguard-uapi.ts";
import { hostIfname } from "../node-agent/cni/podnet.ts";
import { podMtu } from "../node-agent/mtu.ts";
import { OVERLAY_DEVICE } from "../node-agent/overlay-device.ts";
import { jsonFlows, runHubble } from "../localcluster/hubble/cli.ts";
import type { HubbleFlow } from "../flowapi/hubble/types.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const PORT = 8080;
const NS = "enc";
const ECHO_PORT = 9090;
const WORLD = 2;
/** The server accepts only pods labelled app=client (both clients), whatever their node. */
const serverPolicy = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "server-from-clients", namespace: NS },
  spec: { endpointSelector: { matchLabels: { app: "server" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }] }] },
};
/** python3 -c SPOOFED_SYN SRC DST PORT: three TCP SYNs with source SRC, sent as raw IP (routed by the sender's table, here node-2's underlay). */
const SPOOFED_SYN = `
import socket, struct, sys, os
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def csum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
tcp = struct.pack("!HHIIBBHHH", 40000 + os.getpid() % 20000, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3): s.sendto(ip + tcp, (dst, 0))
`;

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

  interface DropFlow { source?: { ip?: string; identity?: number }; destination?: { ip?: string; port?: number }; dropReason?: string }
  const drops = async (): Promise<DropFlow[]> => {
    const out = await run(MEMBRANE, ["observe", "--kubeconfig", tc.cp!.kubeconfig, "--verdict", "DROPPED", "--to-pod", `${NS}/server`, "--last", "200", "-o", "json"]);
    return out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as DropFlow);
  };
  /** curl from node-2's namespace from `source` to the server, sent into node-2's WireGuard device: what came back. */
  const requestIntoTunnel = async (source: string): Promise<string> => {
    const wg = wireguardIfname(node(2));
    await run("ip", ["-n", node(2), "addr", "replace", `${source}/32`, "dev", "lo"]);
    await run("ip", ["-n", node(2), "route", "replace", `${ips.get("server")!}/32`, "dev", wg, "src", source]);
    try {
      return await new Promise<string>((resolve) => execFile("ip", ["netns", "exec", node(2), "curl", "-s", "--http0.9", "-m", "2", "--interface", source, `http://${ips.get("server")}:${PORT}/unknown-source`], (_e, stdout) => resolve(stdout.trim())));
    } finally {
      await run("ip", ["-n", node(2), "route", "del", `${ips.get("server")!}/32`, "dev", wg]).catch(() => undefined);
      await run("ip", ["-n", node(2), "addr", "del", `${source}/32`, "dev", "lo"]).catch(() => undefined);
    }
  };
  /** Node-1's WireGuard peer (node-2), read from its device, and a request that sets more allowed IPs on it (as an agent late with its ipcache would have). */
  const node1Peer = async (): Promise<{ socket: string; publicKey: string; allowedIPs: string[] }> => {
    const socket = join(UAPI_DIR, `${wireguardIfname(node(1))}.sock`);
    const peer = (await getDevice(socket)).peers[0]!;
    return { socket, publicKey: peer.publicKey, allowedIPs: [...peer.allowedIPs] };
  };
  /**
   * Node-2 sends a request to the server from an address of its pod range that no pod has. WireGuard accepts it
   * from node-2 only while node-1's peer lists it among node-2's allowed IPs (the agent lists its pods': this
   * one is added by hand); then the datapath meets a source the ipcache does not know: the drop flow when refused.
   */
  const unknownSourceRefused = async (): Promise<DropFlow | undefined> => {
    const unknown = ips.get("client-remote")!.replace(/\.\d+$/, ".250");
    const peer = await node1Peer();
    await uapi(peer.socket, `set=1\npublic_key=${peer.publicKey}\nallowed_ip=${unknown}/32\n\n`);
    try {
      if ((await requestIntoTunnel(unknown)) !== "") return undefined;
      await new Promise((r) => setTimeout(r, 500));
      return (await drops()).find((f) => f.source?.ip === unknown);
    } finally {
      await uapi(peer.socket, `set=1\npublic_key=${peer.publicKey}\nreplace_allowed_ips=true\n${peer.allowedIPs.map((a) => `allowed_ip=${a}\n`).join("")}\n`);
    }
  };
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

  it("routed: cross-node pod packets go into the WireGuard device without VXLAN (the overlay device sends nothing), the policy on the receiving node still sees the client's identity", async () => {
    const vxlanTx = async (i: number): Promise<number> => (JSON.parse(await run("ip", ["-n", node(i), "-s", "-j", "link", "show", "dev", OVERLAY_DEVICE])) as { stats64: { tx: { packets: number } } }[])[0]!.stats64.tx.packets;
    const before = [await vxlanTx(1), await vxlanTx(2)];
    const r = await capturedRequest("client-remote", "server", 2);
    assert.equal(r.answer, "server");
    assert.equal(r.seen.markerFrames, 0);
    assert.deepEqual([await vxlanTx(1), await vxlanTx(2)], before, "no packet entered the VXLAN device on either node");
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(serverPolicy));
    try {
      const allowed = await eventually("the client's request allowed by identity (app=client) under the policy", async () => {
        const a = await request("client-remote", "server", "allowed-by-identity");
        // The policy is in force once a source without that identity is refused.
        return a === "server" && (await unknownSourceRefused()) ? a : undefined;
      }, 60_000);
      assert.equal(allowed, "server");
    } finally {
      await tc.kubectl(["delete", "ciliumnetworkpolicy", "-n", NS, "server-from-clients", "--ignore-not-found"]);
    }
  });

  it("routed, fail closed: a source the ipcache does not know arriving from the WireGuard device is judged as world, and a remote pod's address spoofed on the underlay is world too, never that pod's identity", async () => {
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(serverPolicy));
    try {
      // WireGuard itself refuses a source outside the sending peer's allowed IPs (the agent lists its pods' addresses).
      const outside = ips.get("client-remote")!.replace(/\.\d+$/, ".251");
      assert.equal((await node1Peer()).allowedIPs.includes(`${outside}/32`), false);
      assert.equal(await requestIntoTunnel(outside), "", "an address node-2's peer may not send from gets nothing through");
      assert.equal((await drops()).some((f) => f.source?.ip === outside), false, "it never reached the datapath");
      // Listed but unknown to the ipcache: the datapath judges it as world, refused by the policy that allows app=client.
      const drop = await eventually("the unknown source's packets dropped as world", unknownSourceRefused, 60_000);
      assert.equal(drop.source?.identity, WORLD, JSON.stringify(drop));
      // From the underlay: a SYN from node-2's eth0 carrying client-remote's address (an allowed identity's) is not that identity.
      const spoofed = await eventually("the spoofed SYN dropped as world", async () => {
        await run("ip", ["netns", "exec", node(2), "python3", "-c", SPOOFED_SYN, ips.get("client-remote")!, ips.get("server")!, String(PORT)]);
        await new Promise((r) => setTimeout(r, 500));
        return (await drops()).find((f) => f.source?.ip === ips.get("client-remote") && f.destination?.port === PORT);
      }, 20_000);
      assert.equal(spoofed.source?.identity, WORLD, JSON.stringify(spoofed));
      assert.equal(await request("client-remote", "server", "still-allowed"), "server", "the real client-remote is still allowed");
    } finally {
      await tc.kubectl(["delete", "ciliumnetworkpolicy", "-n", NS, "server-from-clients", "--ignore-not-found"]);
    }
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
    // Right after the test above re-registered a pod at the new MTU, a first request can fail at once (CI-10 on d242fe8,
    // 105 ms into this test): each is retried until answered, as the rotation test's is.
    for (const [from, marker] of [["client-remote", "encrypted-flows"], ["client-local", "clear-flows"]] as const) {
      await eventually(`${from}'s request answered by the server`, async () => ((await request(from, "server", marker)) === "server" ? true : undefined), 30_000);
    }
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
    let stream: Awaited<ReturnType<typeof startStream>> | undefined;
    try {
      stream = await startStream(podNetns.get("client-remote")!, ips.get("server")!, ECHO_PORT);
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
      stream?.stop(); // a test that failed before finish(): its client would keep the test file from exiting
      echo.stop();
    }
  });

  it("agent kill -9: the tunnel outlives the agent, traffic stays encrypted while it is gone, and an established connection survives the kill and the restart", async () => {
    const echo = await startEchoServer(podNetns.get("server")!, ECHO_PORT);
    let stream: Awaited<ReturnType<typeof startStream>> | undefined;
    try {
      stream = await startStream(podNetns.get("client-remote")!, ips.get("server")!, ECHO_PORT);
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
      stream?.stop(); // a test that failed before finish(): its client would keep the test file from exiting
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
