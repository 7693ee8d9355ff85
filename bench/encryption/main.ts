// bench/encryption: bulk throughput and new connections/s between two local nodes, side by side in one
// run: (a) plain, node namespace to node namespace over the underlay; (b) a bare wireguard-go tunnel
// between the same two namespaces, no Membrane; (c) Membrane with WireGuard on, pod to pod across the
// nodes (routed: pod packets into the device without VXLAN, the default); and (d) a bare VXLAN device
// carried by (b), no Membrane: what VXLAN inside the userspace tunnel costs by itself. Then, unless
// BENCH_VXLAN_MODE=0, the agents restart with --wireguard-routing vxlan (the identity in the VNI inside
// the tunnel) and (c') is measured interleaved with (b) again. Prints one JSON line. Needs root (netns, bpffs):
// run it under flock /tmp/membrane-kernel.lock.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { devClusterUp, devNodesDown } from "../../cli/dev-pods.ts";
import { loadDevClusterState, startAgents } from "../../localcluster/devcluster.ts";
import { startControlPlane, type ControlPlane } from "../../localcluster/cluster.ts";
import { ensureDatapathObject } from "../../localcluster/prerequisites.ts";
import { loadPodRecords } from "../../localcluster/kubelet.ts";
import { listNetns, loadNodesState, run, terminateProcess } from "../../localcluster/nodes.ts";
import { wireguardGoBinary } from "../../localcluster/wireguard/binary.ts";
import { newPrivateKey, publicKeyOf } from "../../node-agent/encryption/wireguard-keys.ts";
import { setRequest, uapi, UAPI_DIR } from "../../node-agent/encryption/wireguard-uapi.ts";
import { UNDERLAY_MTU, podMtu, wireguardMtu } from "../../node-agent/mtu.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PORT = 5301;
const TUNNEL_PORT = 51900;
const BARE_VXLAN_PORT = 4790;
const VXLAN_MODE = process.env.BENCH_VXLAN_MODE !== "0";

const log = (msg: string): void => void process.stderr.write(`bench/encryption: ${msg}\n`);
const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function runIn(netns: string, cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("ip", ["netns", "exec", netns, cmd, ...args], { timeout: 120_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(" ")} in ${netns}: ${stderr || err.message}`)) : resolve(stdout))),
  );
}

interface Path {
  readonly name: string;
  readonly clientNetns: string;
  readonly serverNetns: string;
  readonly serverIP: string;
}

async function measure(bin: string, p: Path): Promise<{ gbps: number; connPerSec: number }> {
  const bulk = (await runIn(p.clientNetns, bin, ["bulk", p.serverIP, String(PORT), String(SECONDS)])).trim().split(/\s+/).map(Number);
  const conn = (await runIn(p.clientNetns, bin, ["connrate", p.serverIP, String(PORT), String(SECONDS)])).trim().split(/\s+/).map(Number);
  return { gbps: bulk[0]! / 1e9, connPerSec: conn[0]! };
}

/** IP fragments the namespace's stack has created so far (/proc/net/snmp Ip: FragCreates). */
async function fragmentsCreated(netns: string): Promise<number> {
  const lines = (await runIn(netns, "cat", ["/proc/net/snmp"])).split("\n").filter((l) => l.startsWith("Ip:"));
  const [names, values] = [lines[0]!.split(/\s+/), lines[1]!.split(/\s+/)];
  return Number(values[names.indexOf("FragCreates")]);
}

async function main(): Promise<void> {
  const dir = path.join(root, ".cache", "bench-encryption");
  fs.mkdirSync(dir, { recursive: true });
  const bin = path.join(dir, "tcpbench");
  execFileSync("clang", ["-O2", "-Wall", "-Werror", "-o", bin, path.join(root, "bench", "datapath", "tcpbench.c")], { stdio: "inherit" });
  const wg = wireguardGoBinary();
  const prefix = `benc${process.pid % 10000}-`;
  const clusterDir = await mkdtemp(path.join(tmpdir(), `${prefix}dev-`));
  let cp: ControlPlane | undefined;
  const servers: ChildProcess[] = [];
  const tunnels: { ifname: string; pid: number }[] = [];
  try {
    log("starting two nodes with WireGuard on");
    await ensureDatapathObject();
    cp = await startControlPlane({ name: `${prefix}cp` });
    await devClusterUp(clusterDir, cp.kubeconfig, cp.kubectl, 2, { prefix, encryption: { mode: "wireguard", strict: false } });
    const kubectl = async (args: string[], input?: string): Promise<string> => {
      const r = await cp!.kubectl(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    const pod = (name: string, node: number) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: "bench", labels: { app: name } },
      spec: { nodeName: `${prefix}node-${node}`, automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] },
    });
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "bench" } },
      { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: "bench" } },
      pod("server", 1),
      pod("client", 2),
    ] }));
    await kubectl(["wait", "pod", "--all", "-n", "bench", "--for=condition=Ready", "--timeout=120s"]);
    const serverIP = (JSON.parse(await kubectl(["get", "pod", "-n", "bench", "server", "-o", "json"])) as { status: { podIP: string } }).status.podIP;
    // Both nodes' tunnels up, each with its peer, before anything is measured.
    const tunnelsUp = async (): Promise<void> => {
      for (let t = 0; ; t++) {
        const cns = JSON.parse(await kubectl(["get", "ciliumnodes", "-o", "json"])) as { items: { status?: { conditions?: { type: string; reason: string; message: string }[] } }[] };
        if (cns.items.length === 2 && cns.items.every((c) => c.status?.conditions?.some((x) => x.type === "EncryptionReady" && x.reason === "TunnelUp" && /1 peer/.test(x.message)))) break;
        if (t > 240) throw new Error("the nodes' WireGuard tunnels did not come up");
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    await tunnelsUp();
    const pods = (await loadPodRecords(clusterDir)).pods;
    const nodes = (await loadNodesState(clusterDir))!.nodes;
    const [n1, n2] = [nodes[0]!, nodes[1]!];

    // (b) a bare tunnel of the same implementation between the node namespaces: addresses 10.77.0.1/2.
    const keys = [newPrivateKey(), newPrivateKey()];
    for (const [i, n] of [n1, n2].entries()) {
      const ifname = `mbrbench${process.pid % 10000}${i}`;
      const child = spawn("nsenter", [`--net=/var/run/netns/${n.netns}`, wg, "-f", ifname], { detached: true, stdio: "ignore" });
      child.unref();
      tunnels.push({ ifname, pid: child.pid! });
      const sock = path.join(UAPI_DIR, `${ifname}.sock`);
      for (let t = 0; !fs.existsSync(sock); t++) {
        if (t > 200) throw new Error(`${ifname}: no control socket`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const peer = i === 0 ? n2 : n1;
      await uapi(sock, setRequest({ privateKey: keys[i]!, listenPort: TUNNEL_PORT, peers: [{ publicKey: publicKeyOf(keys[1 - i]!), endpoint: `${peer.internalIP}:${TUNNEL_PORT}`, allowedIPs: [`10.77.0.${2 - i}/32`] }] }));
      execFileSync("ip", ["-n", n.netns, "addr", "add", `10.77.0.${i + 1}/24`, "dev", ifname]);
      execFileSync("ip", ["-n", n.netns, "link", "set", ifname, "up", "mtu", String(wireguardMtu())]);
    }
    // (d) VXLAN over (b): addresses 10.78.0.1/2, the pods' MTU, no Membrane programs on it.
    for (const [i, n] of [n1, n2].entries()) {
      execFileSync("ip", ["-n", n.netns, "link", "add", "mbrbenchvx", "type", "vxlan", "id", "77", "local", `10.77.0.${i + 1}`, "remote", `10.77.0.${2 - i}`, "dstport", String(BARE_VXLAN_PORT)]);
      execFileSync("ip", ["-n", n.netns, "link", "set", "mbrbenchvx", "up", "mtu", String(podMtu("wireguard", UNDERLAY_MTU, "vxlan"))]);
      execFileSync("ip", ["-n", n.netns, "addr", "add", `10.78.0.${i + 1}/24`, "dev", "mbrbenchvx"]);
    }

    const paths: Path[] = [
      { name: "plain", clientNetns: n2.netns, serverNetns: n1.netns, serverIP: n1.internalIP },
      { name: "tunnel", clientNetns: n2.netns, serverNetns: n1.netns, serverIP: "10.77.0.1" },
      { name: "vxlan_tunnel", clientNetns: n2.netns, serverNetns: n1.netns, serverIP: "10.78.0.1" },
      { name: "membrane", clientNetns: pods["bench/client"]!.netns, serverNetns: pods["bench/server"]!.netns, serverIP },
    ];
    for (const ns of new Set(paths.map((p) => p.serverNetns))) {
      const s = spawn("ip", ["netns", "exec", ns, bin, "server", String(PORT)], { stdio: "ignore" });
      servers.push(s);
    }
    await new Promise((r) => setTimeout(r, 500));
    const results = new Map(paths.map((p) => [p.name, { gbps: [] as number[], conn: [] as number[] }]));
    // Rounds interleave the variants, so the machine's load of the moment falls on each alike.
    const podMtus = await Promise.all([pods["bench/client"]!.netns, pods["bench/server"]!.netns].map(async (ns) => (JSON.parse(await runIn(ns, "ip", ["-j", "link", "show", "dev", "eth0"])) as { mtu: number }[])[0]!.mtu));
    let fragments = 0;
    const loads: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const p of paths) {
        const before = p.name === "membrane" ? await fragmentsCreated(n2.netns) : 0;
        loads.push(Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
        const m = await measure(bin, p);
        if (p.name === "membrane") fragments += (await fragmentsCreated(n2.netns)) - before;
        results.get(p.name)!.gbps.push(m.gbps);
        results.get(p.name)!.conn.push(m.connPerSec);
        log(`round ${r + 1} ${p.name}: ${m.gbps.toFixed(2)} Gbit/s, ${Math.round(m.connPerSec)} conn/s`);
      }
    }
    // (c') the same pods with VXLAN inside the tunnel (the previous design), against (b) measured again in the same rounds.
    let vxlanMode: Record<string, number> | undefined;
    if (VXLAN_MODE) {
      log("restarting the agents with --wireguard-routing vxlan");
      for (const a of (await loadDevClusterState(clusterDir)).agents) await terminateProcess(a.pid, 5_000);
      await startAgents(clusterDir, nodes, cp.kubeconfig, { encryption: { mode: "wireguard", strict: false, routing: "vxlan" } });
      await tunnelsUp();
      await new Promise((r) => setTimeout(r, 2_000));
      const second = [{ ...paths[1]!, name: "tunnel_again" }, { ...paths[3]!, name: "membrane_vxlan" }];
      for (const p of second) results.set(p.name, { gbps: [], conn: [] });
      for (let r = 0; r < ROUNDS; r++) {
        for (const p of second) {
          loads.push(Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
          const m = await measure(bin, p);
          results.get(p.name)!.gbps.push(m.gbps);
          results.get(p.name)!.conn.push(m.connPerSec);
          log(`round ${r + 1} ${p.name}: ${m.gbps.toFixed(2)} Gbit/s, ${Math.round(m.connPerSec)} conn/s`);
        }
      }
      const m2 = (name: string, k: "gbps" | "conn"): number => median(results.get(name)![k]);
      const vxPodMtu = (JSON.parse(await runIn(pods["bench/client"]!.netns, "ip", ["-j", "link", "show", "dev", "eth0"])) as { mtu: number }[])[0]!.mtu;
      vxlanMode = {
        vxlan_mode_gbps: Number(m2("membrane_vxlan", "gbps").toFixed(3)),
        vxlan_mode_tunnel_gbps: Number(m2("tunnel_again", "gbps").toFixed(3)),
        vxlan_mode_ratio_vs_tunnel: Number((m2("membrane_vxlan", "gbps") / m2("tunnel_again", "gbps")).toFixed(3)),
        vxlan_mode_conn_ratio_vs_tunnel: Number((m2("membrane_vxlan", "conn") / m2("tunnel_again", "conn")).toFixed(3)),
        vxlan_mode_pod_mtu: vxPodMtu,
      };
    }
    const med = (name: string, k: "gbps" | "conn"): number => median(results.get(name)![k]);
    const round = (x: number, d = 3): number => Number(x.toFixed(d));
    console.log(
      JSON.stringify({
        bench: "encryption",
        gbps: round(med("membrane", "gbps")),
        tunnel_gbps: round(med("tunnel", "gbps")),
        plain_gbps: round(med("plain", "gbps")),
        ratio_vs_tunnel: round(med("membrane", "gbps") / med("tunnel", "gbps")),
        ratio_vs_plain: round(med("membrane", "gbps") / med("plain", "gbps")),
        vxlan_tunnel_gbps: round(med("vxlan_tunnel", "gbps")),
        ratio_vs_vxlan_tunnel: round(med("membrane", "gbps") / med("vxlan_tunnel", "gbps")),
        conn_per_sec: Math.round(med("membrane", "conn")),
        tunnel_conn_per_sec: Math.round(med("tunnel", "conn")),
        plain_conn_per_sec: Math.round(med("plain", "conn")),
        conn_ratio_vs_tunnel: round(med("membrane", "conn") / med("tunnel", "conn")),
        conn_ratio_vs_plain: round(med("membrane", "conn") / med("plain", "conn")),
        vxlan_tunnel_conn_per_sec: Math.round(med("vxlan_tunnel", "conn")),
        conn_ratio_vs_vxlan_tunnel: round(med("membrane", "conn") / med("vxlan_tunnel", "conn")),
        pod_mtu: Math.min(...podMtus),
        underlay_fragments: fragments,
        load_avg_1m: { min: Math.min(...loads), max: Math.max(...loads) },
        rounds: ROUNDS,
        seconds: SECONDS,
        implementation: "wireguard-go (userspace)",
        routing: "routed",
        ...vxlanMode,
      }),
    );
  } finally {
    for (const s of servers) if (s.pid !== undefined && s.exitCode === null) s.kill("SIGTERM");
    for (const t of tunnels) {
      try {
        process.kill(t.pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    await devNodesDown(clusterDir, cp?.kubeconfig).catch(() => undefined);
    for (const ns of await listNetns(prefix)) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    await cp?.stop();
    await rm(clusterDir, { recursive: true, force: true });
  }
}

await main();
