// End to end: the local cluster's kube-scheduler and kube-controller-manager do their jobs beside the process-based nodes — Deployments, DaemonSets, EndpointSlices, ServiceAccount tokens, kube-root-ca.crt, namespace deletion, garbage collection — and leave the harness's own pods alone; `dev down` then stops exactly what it started.
// Process-based cluster because: (a) it tests the process-based cluster itself: the scheduler and controller manager beside the stand-in kubelet's nodes, leaving its pods alone (no node lifecycle or eviction acting on process nodes);
// on real nodes the same controllers are exercised by realnode.test.ts (a Deployment's pod, the agent DaemonSet, a Service's EndpointSlices through kube-proxy);
// and `dev down` of the process-based cluster it started: the operator and agents by their recorded pids, their pinned maps, the nodes and every file.
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { devNodesDown } from "../cli/dev-pods.ts";
import { controllerProcesses, isProcessAlive } from "../localcluster/cluster.ts";
import { loadDevClusterState } from "../localcluster/devcluster.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { listNetns } from "../localcluster/nodes.ts";
import { BPFFS_ROOT } from "../node-agent/bpf/loader.ts";
import { TestCluster } from "./harness.ts";
import { parsePrefix, prefixContains } from "../core/cidr.ts";

const prefix = `kc${process.pid % 100000}-`;
const NS = "shop";
const tc = new TestCluster(prefix);

interface PodView {
  metadata: { name: string; namespace: string; uid: string; labels?: Record<string, string>; ownerReferences?: { kind: string; name: string; uid: string }[] };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}
interface List<T> {
  items: T[];
}

const kubectl = (args: string[], input?: string): Promise<string> => tc.kubectl(args, input);
const apply = (obj: object): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));
const getJson = async <T>(args: string[]): Promise<T> => JSON.parse(await kubectl([...args, "-o", "json"])) as T;

/** Polls `check` until it returns a value (not undefined); fails with the last reason at the deadline. */
async function eventually<T>(what: string, check: () => Promise<T | string>, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await check();
    if (typeof r !== "string") return r;
    if (Date.now() > end) assert.fail(`${what}: not after ${ms} ms: ${r}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

const web = (replicas: number): object => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "web", namespace: NS },
  spec: {
    replicas,
    selector: { matchLabels: { app: "web" } },
    template: {
      metadata: { labels: { app: "web" } },
      spec: { automountServiceAccountToken: false, containers: [{ name: "main", image: "any", ports: [{ containerPort: 80, protocol: "TCP" }] }] },
    },
  },
});

describe("the local cluster's scheduler and controller manager (2 process nodes)", { timeout: 10 * 60_000 }, () => {
  before(async () => {
    await tc.start(2);
  });

  after(async () => {
    await tc.stop();
  });

  it("runs kube-scheduler and kube-controller-manager as children of the control plane, each holding its leader Lease", async () => {
    const children = controllerProcesses(tc.cp!.pid);
    assert.deepEqual(children.map((c) => c.component), ["kube-controller-manager", "kube-scheduler"]);
    for (const lease of ["kube-scheduler", "kube-controller-manager"]) {
      await eventually(`the ${lease} Lease has a holder`, async () => {
        const l = await getJson<{ spec: { holderIdentity?: string; renewTime?: string } }>(["get", "lease", "-n", "kube-system", lease]).catch((e: Error) => e.message);
        return typeof l === "string" ? l : l.spec.holderIdentity ? l : `no holder yet: ${JSON.stringify(l.spec)}`;
      });
    }
  });

  let fixed: { uid: string; ip: string; createdAt: number } | undefined;
  it("creates the harness's pods (nodeName set, in a namespace whose default ServiceAccount the controller manager makes)", async () => {
    const ips = await tc.createPods({ [NS]: { team: "shop" } }, [
      { namespace: NS, name: "client", node: 1, labels: { app: "client" }, ports: [] },
      { namespace: NS, name: "fixed", node: 2, labels: { app: "fixed" }, ports: [{ port: 80, protocol: "TCP" }] },
    ]);
    const p = await getJson<PodView>(["get", "pod", "-n", NS, "fixed"]);
    fixed = { uid: p.metadata.uid, ip: ips.get(`${NS}/fixed`)!, createdAt: Date.now() };
  });

  it("a Deployment gets a ReplicaSet whose Pods the local kubelet runs on the nodes", async () => {
    await apply(web(2));
    const pods = await eventually("2 web pods Running with an IP", async () => {
      const l = await getJson<List<PodView>>(["get", "pods", "-n", NS, "-l", "app=web"]);
      const running = l.items.filter((p) => p.status.phase === "Running" && p.status.podIP);
      return running.length === 2 && l.items.length === 2 ? l.items : `${l.items.length} pods, ${running.length} running`;
    });
    const rs = await getJson<List<{ metadata: { name: string; ownerReferences?: { kind: string; name: string }[] }; status: { readyReplicas?: number } }>>(["get", "replicasets", "-n", NS, "-l", "app=web"]);
    assert.equal(rs.items.length, 1, "one ReplicaSet");
    assert.deepEqual(rs.items[0]!.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`), ["Deployment/web"]);
    for (const p of pods) {
      assert.deepEqual(p.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`), [`ReplicaSet/${rs.items[0]!.metadata.name}`]);
      assert.ok([tc.nodeName(1), tc.nodeName(2)].includes(p.spec.nodeName ?? ""), `${p.metadata.name} on a local node: ${p.spec.nodeName}`);
    }
    const records = (await loadPodRecords(tc.dir)).pods;
    for (const p of pods) assert.equal(records[`${NS}/${p.metadata.name}`]?.ip, p.status.podIP, `${p.metadata.name} has a netns and a pod server`);
    await kubectl(["rollout", "status", "deployment/web", "-n", NS, "--timeout=90s"]);
  });

  it("a Service selecting the Deployment's pods gets an EndpointSlice from the EndpointSlice controller with their addresses", async () => {
    await apply({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: NS }, spec: { selector: { app: "web" }, ports: [{ port: 80, protocol: "TCP" }] } });
    const podIPs = (await getJson<List<PodView>>(["get", "pods", "-n", NS, "-l", "app=web"])).items.map((p) => p.status.podIP!).sort();
    await eventually("the slice lists both pods, ready", async () => {
      const slices = await getJson<List<{ metadata: { labels: Record<string, string> }; endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[] }>>(["get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=web"]);
      const managed = slices.items.filter((s) => s.metadata.labels["endpointslice.kubernetes.io/managed-by"] === "endpointslice-controller.k8s.io");
      const ready = managed.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready === true).flatMap((e) => e.addresses)).sort();
      return ready.join() === podIPs.join() ? true : `ready addresses [${ready.join(", ")}], want [${podIPs.join(", ")}]`;
    });
  });

  it("a DaemonSet gets one pod per node, each on its own node", async () => {
    await apply({
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "per-node", namespace: NS },
      spec: {
        selector: { matchLabels: { app: "per-node" } },
        template: { metadata: { labels: { app: "per-node" } }, spec: { automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] } },
      },
    });
    const pods = await eventually("a Running per-node pod on each node", async () => {
      const l = await getJson<List<PodView>>(["get", "pods", "-n", NS, "-l", "app=per-node"]);
      const nodes = l.items.filter((p) => p.status.phase === "Running").map((p) => p.spec.nodeName ?? "").sort();
      return nodes.join() === [tc.nodeName(1), tc.nodeName(2)].join() ? l.items : `running on [${nodes.join(", ")}] of ${l.items.length} pods`;
    });
    assert.equal(pods.length, 2);
  });

  it("every pod's address lies in its node's CiliumNode spec.ipam.podCIDRs (the operator runs --ipam kubernetes, as the nodes' ranges are the Nodes' own)", async () => {
    const pods = (await getJson<List<PodView>>(["get", "pods", "-n", NS])).items.filter((p) => p.status.podIP && p.spec.nodeName);
    assert.ok(pods.length >= 6, `the pods made above: ${pods.length}`);
    for (const i of [1, 2]) {
      const node = await getJson<{ spec: { podCIDRs?: string[] } }>(["get", "node", tc.nodeName(i)]);
      const cn = await eventually(`CiliumNode ${tc.nodeName(i)}`, async () =>
        getJson<{ spec: { ipam?: { podCIDRs?: string[] } } }>(["get", "ciliumnode", tc.nodeName(i)]).catch((e: Error) => e.message),
      );
      const cidrs = cn.spec.ipam?.podCIDRs ?? [];
      assert.deepEqual(cidrs, node.spec.podCIDRs, `${tc.nodeName(i)}: the CiliumNode's pod CIDRs are the Node's`);
      for (const p of pods.filter((x) => x.spec.nodeName === tc.nodeName(i))) {
        const ip = parsePrefix(p.status.podIP!)!;
        assert.ok(cidrs.some((c) => prefixContains(parsePrefix(c)!, ip)), `${p.metadata.name} (${p.status.podIP}) inside ${tc.nodeName(i)}'s CiliumNode [${cidrs.join(", ")}]`);
      }
    }
  });

  it("the scheduler judges a pod no node can take: PodScheduled=False, Unschedulable, with its reasons", async () => {
    await apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "nowhere", namespace: NS },
      spec: { nodeSelector: { "example.com/no-such-node": "true" }, automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] },
    });
    const cond = await eventually("PodScheduled=False", async () => {
      const p = await getJson<PodView>(["get", "pod", "-n", NS, "nowhere"]);
      const c = p.status.conditions?.find((x) => x.type === "PodScheduled");
      return c?.status === "False" ? c : `conditions ${JSON.stringify(p.status.conditions ?? [])}`;
    });
    assert.equal(cond.reason, "Unschedulable");
    assert.match(cond.message ?? "", /0\/2 nodes are available/);
    await kubectl(["delete", "pod", "-n", NS, "nowhere", "--wait=true"]);
  });

  it("issues ServiceAccount tokens (kubectl create token) that the API server accepts as that account", async () => {
    const token = (await kubectl(["create", "token", "default", "-n", NS, "--duration=10m"])).trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, "a JWT");
    const out = await kubectl(["create", "-o", "json", "-f", "-"], JSON.stringify({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token } }));
    const status = (JSON.parse(out) as { status: { authenticated?: boolean; user?: { username?: string } } }).status;
    assert.equal(status.authenticated, true, JSON.stringify(status));
    assert.equal(status.user?.username, `system:serviceaccount:${NS}:default`);
  });

  it("publishes the cluster CA as the kube-root-ca.crt ConfigMap in every namespace", async () => {
    const ca = await readFile(tc.cp!.caFile, "utf8");
    const cm = await eventually("kube-root-ca.crt in the namespace", async () => {
      const r = await tc.cp!.kubectl(["get", "configmap", "-n", NS, "kube-root-ca.crt", "-o", "json"]);
      return r.code === 0 ? (JSON.parse(r.stdout) as { data: Record<string, string> }) : r.stderr;
    });
    assert.equal(cm.data["ca.crt"]?.trim(), ca.trim());
  });

  it("deleting the Deployment takes its ReplicaSet and pods with it (garbage collector)", async () => {
    await kubectl(["delete", "deployment", "-n", NS, "web", "--cascade=background"]);
    await eventually("no ReplicaSet and no pod of web", async () => {
      const rs = await getJson<List<unknown>>(["get", "replicasets", "-n", NS, "-l", "app=web"]);
      const pods = await getJson<List<unknown>>(["get", "pods", "-n", NS, "-l", "app=web"]);
      return rs.items.length + pods.items.length === 0 ? true : `${rs.items.length} ReplicaSets, ${pods.items.length} pods left`;
    });
  });

  it("the harness's pod is untouched a minute later: the same object, node and address (no node lifecycle, eviction or pod GC acts on process nodes)", async () => {
    assert.ok(fixed, "created above");
    // Longer than the node monitor's grace period (50 s) after which a node without heartbeats would be marked NotReady.
    const wait = fixed.createdAt + 60_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const now = await getJson<PodView>(["get", "pod", "-n", NS, "fixed"]);
    assert.equal(now.metadata.uid, fixed.uid, "the same pod object");
    assert.equal(now.spec.nodeName, tc.nodeName(2));
    assert.equal(now.status.podIP, fixed.ip);
    assert.equal(now.status.phase, "Running");
    const nodes = await getJson<List<{ metadata: { name: string }; spec: { taints?: { key: string; effect: string }[] } }>>(["get", "nodes"]);
    for (const n of nodes.items) assert.deepEqual(n.spec.taints ?? [], [], `${n.metadata.name}: no taint (not-ready, unreachable)`);
  });

  it("a namespace deletion completes: its pods are torn down on the nodes and the namespace is gone", async () => {
    const before = Object.keys((await loadPodRecords(tc.dir)).pods).filter((k) => k.startsWith(`${NS}/`));
    for (const pod of ["client", "fixed", "per-node"]) assert.ok(before.some((k) => k.startsWith(`${NS}/${pod}`)), `${pod} runs on a node: ${before.join(", ")}`);
    await kubectl(["delete", "namespace", NS, "--wait=false"]);
    await kubectl(["wait", "--for=delete", `namespace/${NS}`, "--timeout=120s"]);
    const left = Object.keys((await loadPodRecords(tc.dir)).pods).filter((k) => k.startsWith(`${NS}/`));
    assert.deepEqual(left, [], "no pod of the namespace is left on a node");
  });

  // Last: it takes the cluster down (after() then finds nothing left to stop).
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
