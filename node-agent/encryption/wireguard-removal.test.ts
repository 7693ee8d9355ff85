// Encryption switched off: an agent started without --encryption removes the WireGuard device, rule and table an earlier agent with
// encryption left in the node's namespace (a real wireguard-go), and its CiliumNode on a real API server stops advertising the key.
// Run under flock /tmp/membrane-kernel.lock (network namespaces).
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { startControlPlane, type ControlPlane } from "../../localcluster/cluster.ts";
import { wireguardGoBinary } from "../../localcluster/wireguard/binary.ts";
import { KubeClient } from "../../kube/kube.ts";
import { alive } from "../recorded-process.ts";
import { capturingLogger } from "../testing/agent.ts";
import { startEncryption } from "./mode.ts";
import { newPrivateKey, publicKeyOf } from "./wireguard-keys.ts";
import { UAPI_DIR } from "./wireguard-uapi.ts";
import { RULE_PREF, WIREGUARD_TABLE, WireguardEncryption, wireguardIfname } from "./wireguard.ts";
import { removeWireguard } from "./wireguard-removal.ts";

const CRD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../crds/generated/ciliumnodes.cilium.io.yaml");
const NS = `wgoff${process.pid % 100000}`;
const NODE = `wgoff-${process.pid}`;
const IFNAME = wireguardIfname(NODE);
const PEER_IP = "172.30.9.3";

const ip = (...args: string[]): string => execFileSync("ip", ["-n", NS, ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString();
const deviceExists = (): boolean => spawnSync("ip", ["-n", NS, "link", "show", "dev", IFNAME]).status === 0;
const wireguardRule = (): boolean => ip("rule", "list", "pref", String(RULE_PREF)).includes(`lookup ${WIREGUARD_TABLE}`);
const wireguardTable = (): string => spawnSync("ip", ["-n", NS, "route", "show", "table", String(WIREGUARD_TABLE)], { encoding: "utf8" }).stdout.trim();

interface CiliumNodeView {
  spec?: { encryption?: { publicKey?: string } };
  status?: { conditions?: { type: string }[]; encryption?: { mode?: string } };
}

describe("encryption switched off removes what an earlier agent's WireGuard left", { timeout: 120_000 }, () => {
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  const stateDirs: string[] = [];
  const pids: number[] = [];
  const lines: Record<string, unknown>[] = [];
  const log = capturingLogger(lines);
  const datapath = { strict: true, nodes: ["172.30.9.3"] as readonly string[], setEncryptionStrict(s: boolean) { this.strict = s; }, setEncryptedNodes(n: readonly string[]) { this.nodes = n; }, ifindex: 0, setWireguardDevice(i: number) { this.ifindex = i; }, cidrs: ["10.9.1.0/24"] as readonly string[], setStrictCIDRs(c: readonly string[]) { this.cidrs = c; } };

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const ciliumNode = async (): Promise<CiliumNodeView> => JSON.parse(await kubectl(["get", "ciliumnode", NODE, "-o", "json"])) as CiliumNodeView;

  /** What an agent with `--encryption wireguard --encryption-strict` sets up and leaves running when it exits: device, peer route, blackhole, rule. */
  const earlierAgentWithWireguard = async (): Promise<{ stateDir: string; pid: number }> => {
    const stateDir = mkdtempSync(path.join(tmpdir(), "wgoff-"));
    stateDirs.push(stateDir);
    const wg = new WireguardEncryption({ nodeName: NODE, netns: NS, stateDir, binary: wireguardGoBinary(), vxlanPort: 8472, strict: true, datapath, log });
    await wg.start();
    const pid = Number.parseInt(readFileSync(path.join(stateDir, "wireguard-go.pid"), "utf8"), 10);
    pids.push(pid);
    await wg.setPeers([{ name: "peer", publicKey: publicKeyOf(newPrivateKey()).toString("base64"), internalIP: PEER_IP }]);
    wg.stop();
    return { stateDir, pid };
  };

  before(async () => {
    cp = await startControlPlane({ name: `wgoff${process.pid}` });
    await kubectl(["apply", "-f", CRD]);
    await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "-f", CRD]);
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    execFileSync("ip", ["netns", "add", NS]);
    ip("link", "set", "lo", "up");
  });

  after(async () => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
    spawnSync("ip", ["netns", "del", NS]);
    rmSync(path.join(UAPI_DIR, `${IFNAME}.sock`), { force: true });
    for (const d of stateDirs) rmSync(d, { recursive: true, force: true });
    client?.close();
    await cp?.stop();
  });

  it("an agent started without --encryption stops the device, removes its rule and table, resets the datapath's encryption, and withdraws the key from the CiliumNode", async () => {
    const { pid } = await earlierAgentWithWireguard();
    assert.ok(deviceExists() && wireguardRule(), "the earlier agent's device and rule are there");
    assert.match(wireguardTable(), new RegExp(`blackhole default[\\s\\S]*${PEER_IP.replaceAll(".", "\\.")} dev ${IFNAME}`));
    // What that agent published on its CiliumNode.
    const publicKey = publicKeyOf(newPrivateKey()).toString("base64");
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: NODE }, spec: { encryption: { publicKey } } }));
    const ready = { type: "EncryptionReady", status: "True", reason: "TunnelUp", message: "1 peer(s)", lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, "Z") };
    await kubectl(["patch", "ciliumnode", NODE, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { conditions: [ready], encryption: { mode: "wireguard", interface: IFNAME, peers: 1 } } })]);

    const started = await startEncryption({ mode: "disabled", strict: false, nodeName: NODE, netns: NS, stateDir: stateDirs[0]!, wireguardGo: "/nonexistent", wireguardRouting: "routed" }, client, datapath, log);
    assert.equal(started, undefined);
    assert.equal(alive(pid), false, "wireguard-go is stopped");
    assert.equal(deviceExists(), false, `${IFNAME} is gone`);
    assert.equal(wireguardRule(), false, "no rule sends VXLAN to the WireGuard table");
    assert.equal(wireguardTable(), "", "the table's peer routes and blackhole are gone");
    assert.equal(existsSync(path.join(UAPI_DIR, `${IFNAME}.sock`)), false, "no control socket left");
    assert.deepEqual({ strict: datapath.strict, nodes: datapath.nodes, cidrs: datapath.cidrs }, { strict: false, nodes: [], cidrs: [] }, "the datapath neither drops as UNENCRYPTED nor counts nodes as encrypted");
    const cn = await ciliumNode();
    assert.equal(cn.spec?.encryption?.publicKey, undefined, "the key is no longer advertised");
    assert.equal(cn.status?.conditions?.find((c) => c.type === "EncryptionReady"), undefined);
    assert.equal(cn.status?.encryption, undefined);
    const removal = lines.find((l) => l.msg === "encryption is off: the WireGuard device of an earlier run is removed");
    assert.deepEqual(removal?.removed, [`wireguard-go (pid ${pid})`, `rule ${RULE_PREF}`, `table ${WIREGUARD_TABLE}`]);
  });

  it("a second start without encryption finds nothing to remove and changes nothing", async () => {
    const before = lines.length;
    await startEncryption({ mode: "disabled", strict: false, nodeName: NODE, netns: NS, stateDir: stateDirs[0]!, wireguardGo: "/nonexistent", wireguardRouting: "routed" }, client, datapath, log);
    assert.equal(lines.slice(before).filter((l) => String(l.msg).startsWith("encryption is off")).length, 0);
  });

  it("with the pid file lost (a new state directory), the device, rule and table are still removed by name", async () => {
    const { pid } = await earlierAgentWithWireguard();
    const fresh = mkdtempSync(path.join(tmpdir(), "wgoff-"));
    stateDirs.push(fresh);
    const removed = await removeWireguard({ nodeName: NODE, netns: NS, stateDir: fresh, vxlanPort: 8472, log });
    assert.deepEqual(removed, [`device ${IFNAME}`, `rule ${RULE_PREF}`, `table ${WIREGUARD_TABLE}`]);
    assert.equal(deviceExists(), false);
    assert.equal(wireguardRule(), false);
    assert.equal(wireguardTable(), "");
    // wireguard-go notices its device is gone and exits.
    const until = Date.now() + 5_000;
    while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    assert.equal(alive(pid), false, "the device's wireguard-go exited with its device");
  });
});
