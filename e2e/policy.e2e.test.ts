// End to end: `dev up --nodes 2` (operator + an agent per node), pods on both nodes, and policies applied with kubectl drop or pass real packets.
// Process-based cluster because: (b) its checks could run on real pods (the pinned policy map and drop counters read inside the node's mount namespace, the spoofed address added in the pod's network namespace; realnode.test.ts has a cross-node CNP
// drop and pass); it stays process-based for the CI budget. Its last test (`dev down` stops exactly what it started) is about the process-based cluster itself.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { devNodesDown, probeFromPod } from "../cli/dev-pods.ts";
import { isProcessAlive } from "../localcluster/cluster.ts";
import { TestCluster, type PodProber } from "./harness.ts";
import { listNetns, run } from "../localcluster/nodes.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { Datapath, MAPS } from "../node-agent/bpf/datapath.ts";
import { BPFFS_ROOT, closePinnedMap, openPinnedMap } from "../node-agent/bpf/loader.ts";
import { CONST, decodePolicyKey } from "../node-agent/bpf/layout.ts";
import { loadDevClusterState } from "../localcluster/devcluster.ts";

const prefix = `p${process.pid % 100000}-`;
const seedFile = fileURLToPath(new URL("../crds/examples/seed.yaml", import.meta.url));

interface TestPod {
  name: string;
  node: number;
  labels: Record<string, string>;
  ip?: string;
}

const pods: TestPod[] = [1, 2].flatMap((i) => [
  { name: `deathstar-${i}`, node: i, labels: { org: "empire", class: "deathstar" } },
  { name: `tiefighter-${i}`, node: i, labels: { org: "empire", class: "tiefighter" } },
  { name: `xwing-${i}`, node: i, labels: { org: "alliance", class: "xwing" } },
]);
/** Every ordered pair of distinct pods, probed on TCP 80 (every pod serves it). */
const pairs = pods.flatMap((src) => pods.filter((dst) => dst !== src).map((dst) => ({ src, dst })));
const key = (src: TestPod, dst: TestPod): string => `${src.name}->${dst.name}`;

/** The policy under test: one CNP, two specs (deathstar's ingress from the empire, the empire's egress to the deathstar). */
const empireToDeathstar = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "empire-to-deathstar", namespace: "default" },
  specs: [
    { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [{ matchLabels: { org: "empire" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
    { endpointSelector: { matchLabels: { org: "empire" } }, egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
  ],
};
/** Every endpoint selected both ways with an empty rule: default deny without a deny rule, so allows still apply. */
const allowOnlyDefaultDeny = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "default-deny-allow-only" },
  spec: { endpointSelector: {}, ingress: [{}], egress: [{}] },
};

const tc = new TestCluster(prefix);
/** One long-lived prober per pod, by pod name: a probe costs a socket, not a process start. */
const probers = new Map<string, PodProber>();
const kubectl = (args: string[], input?: string): Promise<string> => tc.kubectl(args, input);

/** The set of pairs that connect, all probed at once. */
async function connectedPairs(): Promise<Set<string>> {
  const out = new Set<string>();
  await Promise.all(
    pairs.map(async (p) => {
      const r = await probers.get(p.src.name)!.probe(p.dst.ip!, 80, { timeoutMs: 1_000 });
      if (r.verdict === "connected") out.add(key(p.src, p.dst));
    }),
  );
  return out;
}

/** Waits until the operator reports the policy acknowledged by every node it concerns (its Enforced condition). */
async function enforced(resource: string, namespace?: string): Promise<void> {
  await kubectl(["wait", resource, ...(namespace ? ["-n", namespace] : []), "--for=condition=Enforced", "--timeout=60s"]);
}

/** Polls the full matrix until exactly `expected` connects; fails with the difference at the deadline. */
async function converges(what: string, expected: (src: TestPod, dst: TestPod) => boolean, ms = 90_000): Promise<void> {
  const want = new Set(pairs.filter((p) => expected(p.src, p.dst)).map((p) => key(p.src, p.dst)));
  const end = Date.now() + ms;
  for (;;) {
    const got = await connectedPairs();
    const extra = [...got].filter((k) => !want.has(k));
    const missing = [...want].filter((k) => !got.has(k));
    if (extra.length === 0 && missing.length === 0) return;
    if (Date.now() > end) assert.fail(`${what}: after ${ms} ms, connected but should not: [${extra.join(", ")}]; should connect but did not: [${missing.join(", ")}]`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

describe("policy end to end (2 nodes, real packets)", { timeout: 6 * 60_000 }, () => {
  before(async () => {
    await tc.start(2);
    const ips = await tc.createPods({ default: {} }, pods.map((p) => ({ namespace: "default", name: p.name, node: p.node, labels: p.labels, ports: [{ port: 80, protocol: "TCP" }] })));
    for (const p of pods) p.ip = ips.get(`default/${p.name}`);
    for (const p of pods) probers.set(p.name, await tc.prober("default", p.name));
  });

  after(() => tc.stop());

  it("with no policy every pod reaches every other, on the same node and across nodes", async () => {
    await converges("no policy", () => true);
  });

  it("an explicitly empty fromEndpoints next to toPorts selects no peer (Cilium 1.15+): nothing reaches the deathstars, everything else still connects", async () => {
    const emptyPeers = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "deathstar-empty-peers", namespace: "default" },
      spec: { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
    };
    await kubectl(["apply", "-f", "-"], JSON.stringify(emptyPeers));
    await enforced("ciliumnetworkpolicy/deathstar-empty-peers", "default");
    await converges("empty fromEndpoints", (_src, dst) => dst.labels.class !== "deathstar");
    await kubectl(["delete", "ciliumnetworkpolicy", "deathstar-empty-peers", "-n", "default"]);
    await converges("empty fromEndpoints removed", () => true);
  });

  it("a CCNP letting the deathstars take TCP 80 from the whole cluster holds one entry per deathstar identity on each node (not one per pod identity); a deny of the xwings beside it wins for them, on one node and across", async () => {
    const fromCluster = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "deathstar-from-cluster" },
      spec: {
        endpointSelector: { matchLabels: { class: "deathstar" } },
        ingress: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }],
        ingressDeny: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }],
      },
    };
    await kubectl(["apply", "-f", "-"], JSON.stringify(fromCluster));
    await enforced("ciliumclusterwidenetworkpolicy/deathstar-from-cluster");
    await converges("deathstars from the cluster but the xwings", (src, dst) => !(dst.labels.class === "deathstar" && src.labels.class === "xwing"));
    for (const node of [1, 2]) {
      const m = openPinnedMap(join(BPFFS_ROOT, `${prefix}node-${node}`, MAPS.policy), "policy");
      try {
        const keys = m.keys().map(decodePolicyKey);
        const subjects = new Set(keys.filter((k) => k.peer === CONST.IDENTITY_CLASS_CLUSTER).map((k) => k.subject));
        assert.equal(subjects.size, 1, `node-${node}: the deathstars' identity has the class entry`);
        const ingress = keys.filter((k) => subjects.has(k.subject) && k.direction === "ingress").map((k) => [k.peer === CONST.IDENTITY_CLASS_CLUSTER ? "class" : "peer", k.proto, k.port]);
        assert.deepEqual(ingress.sort(), [["class", 6, 80], ["peer", 6, 80]], `node-${node}: the class's allow and the xwings' deny, nothing per pod identity`);
      } finally {
        closePinnedMap(m);
      }
    }
    await kubectl(["delete", "ciliumclusterwidenetworkpolicy", "deathstar-from-cluster"]);
    await converges("deathstar-from-cluster removed", () => true);
  });

  it("a NetworkPolicy letting the xwings send TCP 80 to every pod of every namespace holds one every-pod entry per xwing identity on each node (not one per pod identity); a deny of the deathstars beside it wins for them, on one node and across", async () => {
    const toEveryPod = {
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "xwing-to-every-pod", namespace: "default" },
      spec: { podSelector: { matchLabels: { class: "xwing" } }, policyTypes: ["Egress"], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ protocol: "TCP", port: 80 }] }] },
    };
    const noDeathstar = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "xwing-no-deathstar", namespace: "default" },
      spec: { endpointSelector: { matchLabels: { class: "xwing" } }, egressDeny: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
    };
    await kubectl(["apply", "-f", "-"], JSON.stringify(toEveryPod));
    await kubectl(["apply", "-f", "-"], JSON.stringify(noDeathstar));
    // A NetworkPolicy has no Enforced condition: the map is read until the NetworkPolicy's entry is there.
    await enforced("ciliumnetworkpolicy/xwing-no-deathstar", "default");
    await converges("xwings to every pod but the deathstars", (src, dst) => !(src.labels.class === "xwing" && dst.labels.class === "deathstar"));
    const xwingEgress = (node: number): { subjects: number; egress: (string | number)[][] } => {
      const m = openPinnedMap(join(BPFFS_ROOT, `${prefix}node-${node}`, MAPS.policy), "policy");
      try {
        const keys = m.keys().map(decodePolicyKey);
        const subjects = new Set(keys.filter((k) => k.peer === CONST.IDENTITY_CLASS_PODS).map((k) => k.subject));
        const egress = keys.filter((k) => subjects.has(k.subject) && k.direction === "egress").map((k) => [k.peer === CONST.IDENTITY_CLASS_PODS ? "every pod" : "peer", k.proto, k.port]);
        return { subjects: subjects.size, egress: egress.sort() };
      } finally {
        closePinnedMap(m);
      }
    };
    for (const node of [1, 2]) {
      const end = Date.now() + 30_000;
      while (xwingEgress(node).subjects === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 500));
      const { subjects, egress } = xwingEgress(node);
      assert.equal(subjects, 1, `node-${node}: the xwings' identity has the every-pod entry`);
      assert.deepEqual(egress, [["every pod", 6, 80], ["peer", 6, 80]], `node-${node}: the class's allow and the deathstars' deny, nothing per pod identity`);
    }
    await kubectl(["delete", "networkpolicy", "xwing-to-every-pod", "-n", "default"]);
    await kubectl(["delete", "ciliumnetworkpolicy", "xwing-no-deathstar", "-n", "default"]);
    await converges("xwing-to-every-pod removed", () => true);
  });

  it("a CNP letting the xwings reach the world on TCP 443 and IPv4 addresses on TCP 80 holds one world class entry and one world-ipv4 class entry per key for the xwing identity on each node (not one per world identity), and lets the xwings reach no pod", async () => {
    const toWorld = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "xwing-to-world", namespace: "default" },
      spec: {
        endpointSelector: { matchLabels: { class: "xwing" } },
        egress: [
          { toEntities: ["world"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
          { toEntities: ["world-ipv4"], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] },
        ],
      },
    };
    await kubectl(["apply", "-f", "-"], JSON.stringify(toWorld));
    await enforced("ciliumnetworkpolicy/xwing-to-world", "default");
    await converges("the xwings reach no pod (a pod is not the world)", (src) => src.labels.class !== "xwing");
    for (const node of [1, 2]) {
      const m = openPinnedMap(join(BPFFS_ROOT, `${prefix}node-${node}`, MAPS.policy), "policy");
      try {
        const keys = m.keys().map(decodePolicyKey);
        const subjects = new Set(keys.filter((k) => k.peer === CONST.IDENTITY_CLASS_WORLD).map((k) => k.subject));
        assert.equal(subjects.size, 1, `node-${node}: the xwings' identity has the world class entry`);
        const name = (peer: number): string | number => (peer === CONST.IDENTITY_CLASS_WORLD ? "world" : peer === CONST.IDENTITY_CLASS_WORLD_IPV4 ? "world-ipv4" : peer);
        const egress = keys.filter((k) => subjects.has(k.subject) && k.direction === "egress").map((k) => [name(k.peer), k.proto, k.port]);
        // The world-ipv4 class holds the world rule's key too (an IPv4 peer is in both entities); reserved:world and world-ipv6 get the world class's.
        assert.deepEqual(egress.sort(), [["world", 6, 443], ["world-ipv4", 6, 443], ["world-ipv4", 6, 80]].sort(), `node-${node}: one entry per key for the world and world-ipv4, none per world identity (reserved world, world-ipv4, world-ipv6)`);
      } finally {
        closePinnedMap(m);
      }
    }
    await kubectl(["delete", "ciliumnetworkpolicy", "xwing-to-world", "-n", "default"]);
    await converges("xwing-to-world removed", () => true);
  });

  it("the seed's default-deny-all, applied with kubectl: nothing connects", async () => {
    const denyAll = parseAllDocuments(readFileSync(seedFile, "utf8"))
      .map((d) => d.toJSON() as { kind: string; metadata: { name: string } })
      .find((d) => d.kind === "CiliumClusterwideNetworkPolicy" && d.metadata.name === "default-deny-all");
    assert.ok(denyAll, "seed.yaml holds default-deny-all");
    await kubectl(["apply", "-f", "-"], JSON.stringify(denyAll));
    await converges("default-deny-all", () => false);
  });

  it("a CNP allowing org=empire to reach class=deathstar on TCP 80 does not punch through default-deny-all (deny wins, as in Cilium)", async () => {
    await kubectl(["apply", "-f", "-"], JSON.stringify(empireToDeathstar));
    await enforced("ciliumnetworkpolicy/empire-to-deathstar", "default");
    await converges("empire -> deathstar under default-deny-all", () => false, 5_000);
  });

  it("with default-deny-all replaced by an allow-only default deny, exactly empire -> deathstar connects, on one node and across (identity in the VNI); the xwing stays denied", async () => {
    await kubectl(["apply", "-f", "-"], JSON.stringify(allowOnlyDefaultDeny));
    await kubectl(["delete", "ciliumclusterwidenetworkpolicy", "default-deny-all"]);
    await converges("empire -> deathstar", (src, dst) => src.labels.org === "empire" && dst.labels.class === "deathstar");
  });

  it("a pod that sends with another pod's source address is dropped, and the drop is counted as a spoofed source", async () => {
    const [xwing, tie, deathstar] = ["xwing-1", "tiefighter-1", "deathstar-1"].map((n) => pods.find((p) => p.name === n)!);
    assert.equal((await probeFromPod("default", tie!.name, deathstar!.ip!, 80, { timeoutMs: 1_000 }, tc.dir)).verdict, "connected", "the real tiefighter is allowed");
    const netns = (await loadPodRecords(tc.dir)).pods[`default/${xwing!.name}`]!.netns;
    await run("ip", ["-n", netns, "addr", "add", `${tie!.ip}/32`, "dev", "eth0"]);
    const spoofed = async (): Promise<string> => {
      const script = `const s=require("net").connect({host:${JSON.stringify(deathstar!.ip)},port:80,localAddress:${JSON.stringify(tie!.ip)},timeout:1000});s.on("connect",()=>{console.log("connected");process.exit(0)});s.on("timeout",()=>{console.log("timeout");process.exit(0)});s.on("error",(e)=>{console.log(e.code);process.exit(0)});`;
      return (await run("ip", ["netns", "exec", netns, process.execPath, "-e", script])).trim();
    };
    const spoofCount = (): bigint => {
      const dp = Datapath.load(`${prefix}node-1`);
      try {
        return dp.dropCounters().byReason["spoofed source"] ?? 0n;
      } finally {
        dp.close();
      }
    };
    const before = spoofCount();
    assert.equal(await spoofed(), "timeout", "the xwing posing as the tiefighter does not get through");
    assert.ok(spoofCount() > before, "the datapath counted the drop as a spoofed source");
  });

  it("dev down stops exactly the operator and agents it started, and removes their pinned maps, the nodes and every file", async () => {
    await tc.stopProbers();
    const procs = await loadDevClusterState(tc.dir);
    const pids = [procs.operatorPid!, ...procs.agents.map((a) => a.pid)];
    assert.equal(pids.length, 3);
    assert.ok(pids.every(isProcessAlive), "operator and both agents run");
    await devNodesDown(tc.dir, tc.cp!.kubeconfig);
    assert.deepEqual(pids.filter(isProcessAlive), []);
    assert.deepEqual(procs.agents.filter((a) => existsSync(join(BPFFS_ROOT, a.scope))), []);
    assert.deepEqual(await listNetns(prefix), []);
    assert.deepEqual(readdirSync(tc.dir), []);
  });
});
