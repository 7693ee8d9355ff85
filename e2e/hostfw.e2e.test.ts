// End to end, real packets to real listeners in the local cluster's node namespaces, agents run with the
// host firewall (`dev up --host-firewall`): the reference host firewall as a CCNP whose nodeSelector names
// a node label (SSH from the management network only, the kubelet port from nodes only, the rest dropped,
// replies to the node's own connections, loopback), a label change that moves a node into the policy with
// nothing restarted, and the lock-out guard under a deny-all host policy.
// Run under flock /tmp/membrane-kernel.lock (network namespaces, bpffs).
// Process-based cluster because: (a) the host firewall is switched on by `dev up --host-firewall`, which real nodes refuse (the chart's hostFirewall.enabled is only rendered, charts/chart.test.ts), and the test serves its own listeners on the nodes' SSH and
// kubelet ports (on a real node 10250 is the kubelet's) and adds a management host on the nodes' shared underlay bridge, which real nodes (point-to-point veths) do not have.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { TestCluster, waitEnforced, type PodProber } from "./harness.ts";
import { CCNPS } from "../kube/resources.ts";
import { resourcePath } from "../kube/kube.ts";
import { loadDevClusterState } from "../localcluster/devcluster.ts";
import { loadNodesState, run, terminateProcess } from "../localcluster/nodes.ts";
import { standaloneScript } from "../localcluster/standalone.ts";

const podServerSource = fileURLToPath(new URL("../localcluster/podserver.ts", import.meta.url));
const traceModule = fileURLToPath(new URL("../cli/trace.ts", import.meta.url));

const SSH = 22;
const KUBELET = 10250;
const EXTRA = 9999;
const OUTSIDE_WEB = 8080;
const API_SERVER = 6443;
const POD_PORT = 80;
/** The management network: its own CIDR on the nodes' underlay (on-link routes both ways). */
const MGMT_CIDR = "172.31.0.0/24";
const MGMT_IP = "172.31.0.5";
/** A host outside the cluster on the underlay, not a node. */
const OUTSIDE_IP = "172.30.0.200";
const LABEL = "membrane.io/e2e-host-firewall";
const PROBE_MS = 2_000;

const reference = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "host-reference" },
  spec: {
    nodeSelector: { matchLabels: { [LABEL]: "reference" } },
    ingress: [
      { fromCIDR: [MGMT_CIDR], toPorts: [{ ports: [{ port: String(SSH), protocol: "TCP" }] }] },
      { fromEntities: ["remote-node"], toPorts: [{ ports: [{ port: String(KUBELET), protocol: "TCP" }] }] },
    ],
  },
};

const denyAll = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "host-deny-all" },
  spec: { nodeSelector: {}, ingressDeny: [{ fromEntities: ["all"] }], egressDeny: [{ toEntities: ["all"] }] },
};

describe("host firewall on the local cluster's nodes (CCNP nodeSelector on node labels)", { timeout: 900_000 }, () => {
  const tc = new TestCluster(`hfw${process.pid % 10000}-`);
  const servers: ChildProcess[] = [];
  const extraNetns: string[] = [];
  const nodeIP = new Map<number, string>();
  let pods = new Map<string, string>();
  const p: Record<string, PodProber> = {};
  let underlay = "";

  const connects = async (from: PodProber, host: string, port: number): Promise<boolean> => (await from.probe(host, port, { timeoutMs: PROBE_MS })).verdict === "connected";

  /** Each probe's outcome, all at once: `[label, from, host, port]` → label → connected. */
  const outcomes = async (cases: readonly (readonly [string, PodProber, string, number])[]): Promise<Record<string, boolean>> => {
    const r = await Promise.all(cases.map(async ([label, from, host, port]) => [label, await connects(from, host, port)] as const));
    return Object.fromEntries(r);
  };

  /** A podserver (answers its name on each TCP port) inside `netns`; resolves once every port is bound. */
  const serve = async (netns: string, name: string, ports: readonly number[]): Promise<void> => {
    const script = await standaloneScript(podServerSource, join(tc.dir, "bin"));
    const child = spawn("ip", ["netns", "exec", netns, process.execPath, script, "--name", name, "--tcp", ports.join(",")], { stdio: ["ignore", "pipe", "pipe"] });
    servers.push(child);
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`podserver in ${netns} not ready: ${err}`)), 15_000);
      createInterface({ input: child.stdout! }).on("line", (l) => {
        if (l === "ready") {
          clearTimeout(t);
          resolve();
        }
      });
      child.once("exit", (code) => reject(new Error(`podserver in ${netns} exited ${code}: ${err}`)));
    });
  };

  /** A test host's netns on the underlay bridge with `cidr` (its address/prefix). */
  const addHost = async (name: string, cidr: string): Promise<string> => {
    const ns = `${tc.prefix}${name}`;
    await run("ip", ["netns", "add", ns]);
    extraNetns.push(ns);
    await run("ip", ["-n", underlay, "link", "add", `${name}0`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    await run("ip", ["-n", underlay, "link", "set", `${name}0`, "master", "br0", "up"]);
    await run("ip", ["-n", ns, "addr", "add", cidr, "dev", "eth0"]);
    await run("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
    return ns;
  };

  const apply = async (obj: object): Promise<string> => {
    const r = await tc.cp!.kubectl(["apply", "-f", "-"], JSON.stringify(obj));
    assert.equal(r.code, 0, r.stderr);
    return r.stderr;
  };

  /**
   * Waits until a probe gives `want`: the policy's status counts a node once it acknowledged the
   * generation, which every node holds (host policy or not), so the status alone does not say that a
   * label change reached the node's host subject yet.
   */
  const until = async (what: string, from: PodProber, host: string, port: number, want: boolean, ms = 30_000): Promise<void> => {
    const end = Date.now() + ms;
    while ((await connects(from, host, port)) !== want) {
      if (Date.now() > end) assert.fail(`${what}: still ${want ? "dropped" : "connected"} after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const agentPids = async (): Promise<number[]> => (await loadDevClusterState(tc.dir)).agents.map((a) => a.pid).sort();

  before(async () => {
    await tc.start(2, { hostFirewall: true });
    const nodes = (await loadNodesState(tc.dir))!;
    underlay = nodes.underlayNetns;
    nodes.nodes.forEach((n, i) => nodeIP.set(i + 1, n.internalIP));
    const args = (await loadDevClusterState(tc.dir)).hostFirewall;
    assert.equal(args, true, "the local cluster's agents run with the host firewall");

    pods = await tc.createPods({ hfw: {} }, [
      { namespace: "hfw", name: "pod-1", node: 1, labels: { app: "hfw" }, ports: [{ port: POD_PORT, protocol: "TCP" }] },
      { namespace: "hfw", name: "pod-2", node: 2, labels: { app: "hfw" }, ports: [{ port: POD_PORT, protocol: "TCP" }] },
    ]);
    const mgmt = await addHost("mgmt", `${MGMT_IP}/24`);
    const out = await addHost("out", `${OUTSIDE_IP}/24`);
    // The management network is not the underlay's subnet: on-link routes between it and node-1.
    await run("ip", ["-n", mgmt, "route", "add", nodes.underlayCIDR, "dev", "eth0"]);
    await run("ip", ["-n", tc.nodeName(1), "route", "add", MGMT_CIDR, "dev", "eth0"]);
    for (const i of [1, 2]) await serve(tc.nodeName(i), tc.nodeName(i), [SSH, KUBELET, EXTRA]);
    await serve(out, "outside", [OUTSIDE_WEB, API_SERVER]);
    p.mgmt = await tc.netnsProber(mgmt);
    p.out = await tc.netnsProber(out);
    p.node1 = await tc.netnsProber(tc.nodeName(1));
    p.node2 = await tc.netnsProber(tc.nodeName(2));
    p.pod1 = await tc.prober("hfw", "pod-1");
    p.pod2 = await tc.prober("hfw", "pod-2");
  });

  after(async () => {
    await tc.stopProbers();
    for (const s of servers) if (s.pid !== undefined && s.exitCode === null) await terminateProcess(s.pid, 2_000);
    for (const ns of extraNetns) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    await tc.stop();
  });

  it("without a host policy every listener of the nodes is reachable (the probes below can fail)", async () => {
    const n1 = nodeIP.get(1)!;
    const got = await outcomes([
      ["mgmt→22", p.mgmt!, n1, SSH],
      ["pod-2→22", p.pod2!, n1, SSH],
      ["pod-1→22 (its own node)", p.pod1!, n1, SSH],
      ["outside→10250", p.out!, n1, KUBELET],
      ["outside→9999", p.out!, n1, EXTRA],
      ["node-2→9999", p.node2!, n1, EXTRA],
    ]);
    assert.deepEqual(got, { "mgmt→22": true, "pod-2→22": true, "pod-1→22 (its own node)": true, "outside→10250": true, "outside→9999": true, "node-2→9999": true });
  });

  it("the reference host firewall as a CCNP on node-1's label: SSH only from the management network, the kubelet only from nodes, the extra port dropped, the node's own connections and loopback work; unlabelled node-2 stays open", async () => {
    await tc.kubectl(["label", "node", tc.nodeName(1), `${LABEL}=reference`]);
    await apply(reference);
    await waitEnforced(tc, CCNPS, undefined, "host-reference", 1);
    const [n1, n2] = [nodeIP.get(1)!, nodeIP.get(2)!];
    await until("outside→node-1:9999", p.out!, n1, EXTRA, false);
    const got = await outcomes([
      ["mgmt→22", p.mgmt!, n1, SSH],
      ["pod-2→22", p.pod2!, n1, SSH],
      ["pod-1→22 (its own node)", p.pod1!, n1, SSH],
      ["outside→22", p.out!, n1, SSH],
      ["node-2→10250", p.node2!, n1, KUBELET],
      ["outside→10250", p.out!, n1, KUBELET],
      ["mgmt→9999", p.mgmt!, n1, EXTRA],
      ["outside→9999", p.out!, n1, EXTRA],
      ["node-2→9999", p.node2!, n1, EXTRA],
      ["node-1→outside:8080", p.node1!, OUTSIDE_IP, OUTSIDE_WEB],
      ["node-1→127.0.0.1:9999", p.node1!, "127.0.0.1", EXTRA],
      ["outside→node-2:9999", p.out!, n2, EXTRA],
    ]);
    assert.deepEqual(got, {
      "mgmt→22": true,
      "pod-2→22": false,
      "pod-1→22 (its own node)": false,
      "outside→22": false,
      "node-2→10250": true,
      "outside→10250": false,
      "mgmt→9999": false,
      "outside→9999": false,
      "node-2→9999": false,
      "node-1→outside:8080": true,
      "node-1→127.0.0.1:9999": true,
      "outside→node-2:9999": true,
    });
  });

  it("policy trace --to-node names what decides each of those probes, and its verdict is the real packet's", async () => {
    /** `membrane policy trace … -o json` against this cluster, as a user runs it. */
    const trace = async (args: string[]): Promise<{ verdict: string; decided?: { subject: string; direction: string; rule: unknown } }> => {
      const script = `const { runTrace } = await import(${JSON.stringify(traceModule)}); process.exitCode = await runTrace(process.argv.slice(1));`;
      const r = await promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, "--", ...args, "--kubeconfig", tc.cp!.kubeconfig, "-o", "json"], {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
      });
      return JSON.parse(r.stdout) as { verdict: string; decided?: { subject: string; direction: string; rule: unknown } };
    };
    const [n1, n2] = [tc.nodeName(1), tc.nodeName(2)];
    const ref = { policyKind: "CiliumClusterwideNetworkPolicy", name: "host-reference" };
    const cases: [string, PodProber, string, number, string[], unknown][] = [
      ["mgmt→22", p.mgmt!, nodeIP.get(1)!, SSH, ["--from-ip", MGMT_IP, "--to-node", n1], { ...ref, path: "spec.ingress[0]" }],
      ["outside→22", p.out!, nodeIP.get(1)!, SSH, ["--from-ip", OUTSIDE_IP, "--to-node", n1], "default-deny"],
      ["node-2→10250", p.node2!, nodeIP.get(1)!, KUBELET, ["--from-node", n2, "--to-node", n1], { ...ref, path: "spec.ingress[1]" }],
      ["node-2→9999", p.node2!, nodeIP.get(1)!, EXTRA, ["--from-node", n2, "--to-ip", nodeIP.get(1)!], "default-deny"],
      ["pod-2→22", p.pod2!, nodeIP.get(1)!, SSH, ["--from", "hfw/pod-2", "--to-node", n1], "default-deny"],
      ["pod-1→22 (its own node)", p.pod1!, nodeIP.get(1)!, SSH, ["--from", "hfw/pod-1", "--to-node", n1], "default-deny"],
      ["outside→node-2:9999", p.out!, nodeIP.get(2)!, EXTRA, ["--from-ip", OUTSIDE_IP, "--to-node", n2], "no-policy"],
    ];
    for (const [what, from, host, port, args, rule] of cases) {
      const [t, real] = await Promise.all([trace([...args, "--port", String(port)]), connects(from, host, port)]);
      assert.equal(t.verdict === "allow", real, `${what}: trace says ${t.verdict}, the packet ${real ? "connected" : "was dropped"}`);
      assert.equal(t.decided?.direction, "ingress", what);
      assert.match(t.decided?.subject ?? "", /^host of node /, what);
      const got = t.decided?.rule as { policyKind?: string; name?: string; path?: string } | string | undefined;
      assert.deepEqual(typeof got === "object" ? { policyKind: got.policyKind, name: got.name, path: got.path } : got, rule, what);
    }
  });

  it("labelling node-2 moves it into the policy, and unlabelling out, with no agent restarted", async () => {
    const before = await agentPids();
    const n2 = nodeIP.get(2)!;
    await tc.kubectl(["label", "node", tc.nodeName(2), `${LABEL}=reference`]);
    await waitEnforced(tc, CCNPS, undefined, "host-reference", 2);
    await until("outside→node-2:9999 once labelled", p.out!, n2, EXTRA, false);
    assert.deepEqual(await outcomes([["outside→node-2:9999", p.out!, n2, EXTRA], ["node-1→node-2:10250", p.node1!, n2, KUBELET]]), { "outside→node-2:9999": false, "node-1→node-2:10250": true });
    await tc.kubectl(["label", "node", tc.nodeName(2), `${LABEL}-`]);
    await waitEnforced(tc, CCNPS, undefined, "host-reference", 1);
    await until("outside→node-2:9999 once unlabelled", p.out!, n2, EXTRA, true);
    assert.deepEqual(await agentPids(), before, "the same agent processes");
  });

  it("lock-out guard: a deny-all host policy on every node warns, and leaves the overlay (pod-to-pod across nodes), ICMP echo between nodes and the API server port working while everything else is cut", async () => {
    await tc.kubectl(["delete", "ccnp", "host-reference"]);
    const warnings = await apply(denyAll);
    assert.match(warnings, /lock-out guard/, "kubectl shows the admission warning");
    await waitEnforced(tc, CCNPS, undefined, "host-deny-all", 2);
    const [n1, n2] = [nodeIP.get(1)!, nodeIP.get(2)!];
    await until("mgmt→node-1:22 under deny-all", p.mgmt!, n1, SSH, false);
    const got = await outcomes([
      ["pod-1→pod-2", p.pod1!, pods.get("hfw/pod-2")!, POD_PORT],
      ["pod-2→pod-1", p.pod2!, pods.get("hfw/pod-1")!, POD_PORT],
      ["node-1→outside:6443", p.node1!, OUTSIDE_IP, API_SERVER],
      ["mgmt→22", p.mgmt!, n1, SSH],
      ["node-2→10250", p.node2!, n1, KUBELET],
      ["node-1→outside:8080", p.node1!, OUTSIDE_IP, OUTSIDE_WEB],
    ]);
    assert.deepEqual(got, {
      "pod-1→pod-2": true,
      "pod-2→pod-1": true,
      "node-1→outside:6443": true,
      "mgmt→22": false,
      "node-2→10250": false,
      "node-1→outside:8080": false,
    });
    await run("ip", ["netns", "exec", tc.nodeName(1), "ping", "-c", "1", "-W", "2", n2]);
    // The agent stream: the deny-all policy's own generation was acknowledged by both agents (above), and
    // so is a later edit (here the agents run in the root netns, so the stream does not cross eth0).
    const kube = await tc.kube();
    await kube.mergePatch(resourcePath(CCNPS, undefined, "host-deny-all"), { spec: { ...denyAll.spec, ingressDeny: [{ fromEntities: ["world"] }] } });
    await waitEnforced(tc, CCNPS, undefined, "host-deny-all", 2);
    await tc.kubectl(["delete", "ccnp", "host-deny-all"]);
  });
});
