// End to end, real packets on two nodes: with WireGuard on, a cross-node HTTP request's marker never
// crosses the underlay in clear (and does with encryption off, so the test can fail); same-node traffic
// is unaffected; key rotation and an agent kill -9 keep cross-node traffic flowing and encrypted; in
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
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { agentScope, devClusterPaths, loadDevClusterState, startAgents } from "../localcluster/devcluster.ts";
import { type LocalNode, loadNodesState, run, terminateProcess } from "../localcluster/nodes.ts";
import { Datapath } from "../node-agent/bpf/datapath.ts";
import { DROP_REASONS } from "../node-agent/bpf/layout.ts";
import { wireguardIfname } from "../node-agent/encryption/wireguard.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const PORT = 8080;
const NS = "enc";

interface CiliumNodeView {
  metadata: { name: string };
  spec?: { encryption?: { publicKey?: string } };
  status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
}

describe("transparent encryption with WireGuard between two nodes", { timeout: 900_000 }, () => {
  const tc = new TestCluster(`enc${process.pid % 10000}-`);
  const ips = new Map<string, string>();
  const podNetns = new Map<string, string>();

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

  it("agent kill -9: the tunnel outlives the agent and traffic stays encrypted while it is gone", async () => {
    const state = await loadDevClusterState(tc.dir);
    const a2 = state.agents.find((a) => a.node === node(2))!;
    process.kill(a2.pid, "SIGKILL");
    await eventually("agent gone", async () => (await run("ps", ["-o", "stat=", "-p", String(a2.pid)]).catch(() => "").then((s) => (s.trim() === "" || s.startsWith("Z") ? true : undefined))));
    const r = await capturedRequest("client-remote", "server", 2);
    assert.equal(r.answer, "server", "traffic flows with the agent dead");
    assert.equal(r.seen.markerFrames, 0, JSON.stringify(r.seen));
    await startAgents(tc.dir, (await loadNodesState(tc.dir))!.nodes, tc.cp!.kubeconfig);
    await bothTunnelsUp();
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
});
