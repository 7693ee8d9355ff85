// Local nodes and pods against a real API server and real network namespaces: scheduling, CNI wiring, status, probes, teardown.
// Process-based cluster because: (a) it tests the process-based cluster's own nodes and stand-in kubelet (scheduling, CNI wiring, pod servers and their restart count, teardown from the recorded state).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { devExec, probeFromPod, runDevProbe } from "../cli/dev-pods.ts";
import { isProcessAlive, startControlPlane, type ControlPlane } from "./cluster.ts";
import { LocalKubelet, loadPodRecords, removeRecordedPods, type Pod } from "./kubelet.ts";
import { createNodes, destroyNodes, listNetns, loadNodesState, netnsExists, planNodes, run, type NodesState } from "./nodes.ts";

const prefix = `t${process.pid}-`;
const NS = "demo";

const listOurNetns = (): Promise<string[]> => listNetns(prefix);

function podManifest(name: string, node?: string): object {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS, labels: { app: name } },
    spec: {
      automountServiceAccountToken: false,
      ...(node ? { nodeSelector: { "kubernetes.io/hostname": `${prefix}${node}` } } : {}),
      containers: [
        {
          name: "main",
          image: "any/image:ignored",
          ports: [
            { containerPort: 80, protocol: "TCP" },
            { containerPort: 53, protocol: "UDP" },
          ],
        },
      ],
    },
  };
}

describe("planNodes", () => {
  test("names nodes <prefix>node-i with consecutive underlay addresses and default pod CIDRs", () => {
    const plan = planNodes({ prefix: "x-", count: 2 });
    assert.ok(plan.ok);
    assert.deepEqual(
      plan.nodes.map((n) => [n.name, n.internalIP, n.podCIDR]),
      [
        ["x-node-1", "172.30.0.2", "10.244.1.0/24"],
        ["x-node-2", "172.30.0.3", "10.244.2.0/24"],
      ],
    );
  });
  test("bad options are refused with the field named", () => {
    const plan = planNodes({ prefix: "X", count: 2, podCIDRs: ["10.0.0.0/16", "10.0.1.0/24"], underlayCIDR: "nope" });
    assert.ok(!plan.ok);
    assert.ok(plan.errors.some((e) => e.startsWith("prefix:")));
    assert.ok(plan.errors.some((e) => e.startsWith("underlayCIDR:")));
    assert.ok(plan.errors.some((e) => e.startsWith("podCIDRs[1]:") && e.includes("overlaps")));
  });
});

describe("local nodes and pods", { timeout: 10 * 60_000 }, () => {
  let cp: ControlPlane | undefined;
  let dir = "";
  let nodes: NodesState | undefined;
  let kubelet: LocalKubelet | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const res = await cp!.kubectl(args, input);
    assert.equal(res.code, 0, `kubectl ${args.join(" ")}: ${res.stderr}`);
    return res.stdout;
  };
  const getPod = async (name: string): Promise<Pod> => JSON.parse(await kubectl(["get", "pod", "-n", NS, name, "-o", "json"])) as Pod;
  const waitRunning = async (name: string): Promise<Pod> => {
    const until = Date.now() + 90_000;
    for (;;) {
      const pod = await getPod(name);
      const ready = pod.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
      if (pod.status?.phase === "Running" && pod.status.podIP && ready) return pod;
      if (Date.now() > until) assert.fail(`pod ${name} not Running: ${JSON.stringify(pod.status)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), `${prefix}cluster-`));
    cp = await startControlPlane({ name: `${prefix}cp` });
    nodes = await createNodes({ prefix, count: 2, dir, kubeconfig: cp.kubeconfig });
    kubelet = new LocalKubelet({ nodes, kubeconfig: cp.kubeconfig });
    await kubelet.start();
    await kubectl(["create", "namespace", NS]);
    // No controller-manager runs: the ServiceAccount admission plugin needs the default account to exist.
    await kubectl(["create", "serviceaccount", "default", "-n", NS]);
  });

  after(async () => {
    await kubelet?.stop({ removePods: true }).catch(() => undefined);
    if (nodes) await destroyNodes(nodes, cp?.kubeconfig).catch(() => undefined);
    // Whatever is still there with our unique prefix is ours: remove it, even after a failure above.
    for (const ns of await listOurNetns()) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    await cp?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("each node is a netns on the underlay with a Node object, and no VXLAN device until its agent makes one", async () => {
    for (const node of nodes!.nodes) {
      assert.ok(await netnsExists(node.netns));
      const links = JSON.parse(await run("ip", ["-n", node.netns, "-d", "-j", "link", "show"])) as { ifname: string; linkinfo?: { info_kind?: string } }[];
      assert.deepEqual(links.filter((l) => l.linkinfo?.info_kind === "vxlan").map((l) => l.ifname), [], "the agent's --tunnel-device would collide with one made here");
      const obj = JSON.parse(await kubectl(["get", "node", node.name, "-o", "json"])) as { spec: { podCIDR: string }; status: { addresses: { type: string; address: string }[] } };
      assert.equal(obj.spec.podCIDR, node.podCIDR);
      assert.deepEqual(obj.status.addresses.find((a) => a.type === "InternalIP")?.address, node.internalIP);
    }
    const [n1, n2] = nodes!.nodes;
    await run("ip", ["netns", "exec", n1!.netns, "ping", "-c1", "-W2", n2!.internalIP]);
  });

  test("createNodes refuses a netns name that already exists, leaves it alone and removes what it had made", async () => {
    const other = `${prefix}x-`;
    const otherDir = await mkdtemp(join(tmpdir(), `${other}cluster-`));
    await run("ip", ["netns", "add", `${other}node-1`]);
    try {
      await assert.rejects(createNodes({ prefix: other, count: 1, dir: otherDir, kubeconfig: cp!.kubeconfig }), /already exists/);
      assert.deepEqual(await listNetns(other), [`${other}node-1`]);
      assert.deepEqual(readdirSync(otherDir), []);
    } finally {
      await run("ip", ["netns", "del", `${other}node-1`]);
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  test("pods are bound (nodeSelector honoured, else round-robin), wired, and report Running with a podIP", async () => {
    const manifests = [podManifest("a1", "node-1"), podManifest("a2", "node-1"), podManifest("b1", "node-2"), podManifest("c1")];
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: manifests }));
    const pods = await Promise.all(["a1", "a2", "b1", "c1"].map(waitRunning));
    const byName = Object.fromEntries(pods.map((p) => [p.metadata.name, p]));
    assert.equal(byName.a1!.spec.nodeName, `${prefix}node-1`);
    assert.equal(byName.a2!.spec.nodeName, `${prefix}node-1`);
    assert.equal(byName.b1!.spec.nodeName, `${prefix}node-2`);
    assert.ok(nodes!.nodes.some((n) => n.name === byName.c1!.spec.nodeName));
    for (const p of pods) {
      const node = nodes!.nodes.find((n) => n.name === p.spec.nodeName)!;
      assert.equal(p.status?.hostIP, node.internalIP);
      assert.ok(p.status?.podIP?.startsWith(node.podCIDR.split(".").slice(0, 3).join(".") + "."), `${p.metadata.name} ${p.status?.podIP} in ${node.podCIDR}`);
    }
    assert.equal(new Set(pods.map((p) => p.status?.podIP)).size, pods.length, "pod IPs are distinct");
  });

  test("pod to pod TCP and UDP, same node and across nodes, answer with the peer's pod name", async () => {
    const a2 = (await getPod("a2")).status!.podIP!;
    const b1 = (await getPod("b1")).status!.podIP!;
    const cases = [
      { to: "a2", ip: a2, udp: false },
      { to: "a2", ip: a2, udp: true },
      { to: "b1", ip: b1, udp: false },
      { to: "b1", ip: b1, udp: true },
    ];
    for (const c of cases) {
      const r = await probeFromPod(NS, "a1", c.ip, c.udp ? 53 : 80, { udp: c.udp }, dir);
      assert.deepEqual(r, { verdict: "connected", reply: c.to }, `a1 -> ${c.to} ${c.udp ? "udp" : "tcp"}`);
    }
    const back = await probeFromPod(NS, "b1", (await getPod("a1")).status!.podIP!, 80, {}, dir);
    assert.deepEqual(back, { verdict: "connected", reply: "a1" });
  });

  test("dev probe prints connected, refused or timeout", async () => {
    const b1 = (await getPod("b1")).status!.podIP!;
    const printed = async (args: string[]): Promise<{ code: number; out: string }> => {
      const write = process.stdout.write.bind(process.stdout);
      let out = "";
      process.stdout.write = ((chunk: string | Uint8Array) => {
        out += chunk.toString();
        return true;
      }) as typeof process.stdout.write;
      try {
        const code = await runDevProbe(args, dir);
        return { code, out };
      } finally {
        process.stdout.write = write;
      }
    };
    assert.deepEqual(await printed([`${NS}/a1`, b1, "80"]), { code: 0, out: "connected\n" });
    assert.deepEqual(await printed([`${NS}/a1`, b1, "81"]), { code: 1, out: "refused\n" });
    assert.deepEqual(await printed([`${NS}/a1`, b1, "54", "--udp"]), { code: 1, out: "refused\n" });
    // An address in node-2's pod CIDR that no pod holds: nothing answers.
    assert.deepEqual(await printed([`${NS}/a1`, nodes!.nodes[1]!.podCIDR.replace(/0\/24$/, "250"), "80"]), { code: 1, out: "timeout\n" });
    assert.equal(await runDevProbe([`${NS}/nope`, b1, "80"], dir), 2);
  });

  test("dev exec runs the command inside the pod's network namespace", async () => {
    const ip = (await getPod("a1")).status!.podIP!;
    assert.equal(await devExec(NS, "a1", ["sh", "-c", `ip -4 -o addr show dev eth0 | grep -q ' ${ip}/'`], dir), 0);
    assert.equal(await devExec(NS, "b1", ["sh", "-c", `ip -4 -o addr show dev eth0 | grep -q ' ${ip}/'`], dir), 1);
  });

  test("a pod server that dies is restarted and the restart is counted in the pod's status", async () => {
    const before = (await loadPodRecords(dir)).pods[`${NS}/b1`]!;
    process.kill(before.pid!, "SIGKILL"); // the server our kubelet started, by its recorded pid
    const until = Date.now() + 60_000;
    for (;;) {
      const pod = await getPod("b1");
      if (pod.status?.containerStatuses?.[0]?.restartCount === 1) break;
      if (Date.now() > until) assert.fail(`b1 not restarted: ${JSON.stringify(pod.status)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.deepEqual(await probeFromPod(NS, "a1", (await getPod("b1")).status!.podIP!, 80, {}, dir), { verdict: "connected", reply: "b1" });
  });

  test("deleting a pod kills its server, removes its netns and then the Pod object", async () => {
    const rec = (await loadPodRecords(dir)).pods[`${NS}/a2`]!;
    assert.ok(rec.pid !== undefined && isProcessAlive(rec.pid));
    assert.ok(await netnsExists(rec.netns));
    await kubectl(["delete", "pod", "-n", NS, "a2", "--timeout=60s"]);
    assert.equal((await cp!.kubectl(["get", "pod", "-n", NS, "a2"])).code, 1, "the Pod object is gone");
    assert.equal(isProcessAlive(rec.pid), false);
    assert.equal(await netnsExists(rec.netns), false);
    assert.equal((await loadPodRecords(dir)).pods[`${NS}/a2`], undefined);
  });

  test("after the kubelet is gone, the recorded state alone removes every netns, link, process and file", async () => {
    const records = Object.values((await loadPodRecords(dir)).pods);
    assert.ok(records.length >= 3);
    // Stopping without removePods leaves the pods running, as a crashed kubelet would: `dev down` then has only the files.
    await kubelet!.stop();
    kubelet = undefined;
    await removeRecordedPods(dir);
    const recorded = await loadNodesState(dir);
    assert.ok(recorded);
    await destroyNodes(recorded, cp!.kubeconfig);
    nodes = undefined;
    for (const r of records) assert.equal(isProcessAlive(r.pid!), false, `pod server ${r.name} (pid ${r.pid})`);
    assert.deepEqual(await listOurNetns(), []);
    assert.equal((await cp!.kubectl(["get", "node", `${prefix}node-1`])).code, 1, "Node object removed");
    assert.deepEqual(readdirSync(dir), []);
  });
});
