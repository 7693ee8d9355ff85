// End to end with a client nobody here wrote: the real `hubble` CLI (v1.20.2, from the pinned Cilium module) against
// the local cluster's relay and one agent, compared with what the datapath did to real connections.
// Process-based cluster because: (b) the real `hubble` CLI could read the chart's relay on real pods (Service membrane-hubble-relay, mutual TLS, through kubectl port-forward), but no real-node test does yet; here the operator's relay listens on loopback
// without TLS. It stays process-based for the CI budget.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TestCluster, waitEnforced, type PodProber } from "./harness.ts";
import { devClusterPaths, loadDevClusterState } from "../localcluster/devcluster.ts";
import { hubbleBinary, jsonFlows, runHubble, type HubbleRun } from "../localcluster/hubble/cli.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import { CNPS } from "../kube/resources.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import type { HubbleFlow } from "../flowapi/hubble/types.ts";

const NODES = 2;
const tc = new TestCluster(`hb${process.pid % 100000}-`);

/** The empire story: deathstar (node 1) admits tiefighter (node 2) on 80; xwing (node 2) is denied on 80 by a deny rule, on 8080 by default deny. */
const policy = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "rule1", namespace: "default" },
  spec: {
    endpointSelector: { matchLabels: { class: "deathstar" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { org: "empire" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }],
    ingressDeny: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }],
  },
};

const hubble = (...args: string[]): Promise<HubbleRun> => runHubble(args, 60_000);

describe("the hubble CLI against the local cluster (relay and one agent)", () => {
  let tiefighter: PodProber | undefined;
  let xwing: PodProber | undefined;
  let relay = "";
  let agent1 = "";
  const ips = new Map<string, string>();
  const identities = new Map<string, number>();
  const followers: ChildProcess[] = [];

  before(async () => {
    await tc.start(NODES);
    const got = await tc.createPods({ default: {} }, [
      { namespace: "default", name: "deathstar", node: 1, labels: { class: "deathstar", org: "empire" }, ports: [80, 8080].map((port) => ({ port, protocol: "TCP" as const })) },
      // On the other node: deathstar's agent then judges the connection as new at its ingress and reports rule1.
      { namespace: "default", name: "tiefighter", node: 2, labels: { class: "tiefighter", org: "empire" }, ports: [] },
      { namespace: "default", name: "xwing", node: 2, labels: { class: "xwing", org: "alliance" }, ports: [] },
    ]);
    for (const [k, v] of got) ips.set(k, v);
    for (const pod of ["deathstar", "tiefighter", "xwing"]) {
      const end = Date.now() + 30_000;
      for (;;) {
        const p = JSON.parse(await tc.kubectl(["get", "pod", "-n", "default", pod, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
        const id = p.metadata.annotations?.[IDENTITY_ANNOTATION];
        if (id !== undefined) {
          identities.set(pod, Number(id));
          break;
        }
        if (Date.now() > end) assert.fail(`default/${pod} has no identity annotation`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(policy));
    await waitEnforced(tc, CNPS, "default", "rule1", 1);
    tiefighter = await tc.prober("default", "tiefighter");
    xwing = await tc.prober("default", "xwing");
    relay = (await loadDevClusterState(tc.dir)).hubbleRelay ?? assert.fail("dev up recorded no hubble relay address");
    agent1 = `unix://${join(devClusterPaths(tc.dir).agentDir(tc.nodeName(1)), "hubble.sock")}`;
    // The relay finds the agents through their CiliumNodes: wait until both published their Hubble address.
    const end = Date.now() + 30_000;
    for (let i = 1; i <= NODES; i++) {
      for (;;) {
        const cn = JSON.parse(await tc.kubectl(["get", "ciliumnode", tc.nodeName(i), "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
        if (cn.metadata.annotations?.[HUBBLE_ADDRESS_ANNOTATION] !== undefined) break;
        if (Date.now() > end) assert.fail(`${tc.nodeName(i)}: no ${HUBBLE_ADDRESS_ANNOTATION}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });

  after(async () => {
    for (const f of followers) f.kill();
    await tc.stop();
  });

  it("hubble status and hubble list nodes through the relay see both nodes connected", async () => {
    const status = await hubble("status", "--server", relay);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /Healthcheck \(via .*\): Ok/);
    assert.match(status.stdout, new RegExp(`Connected Nodes: ${NODES}/${NODES}`));
    const nodes = JSON.parse((await hubble("list", "nodes", "--server", relay, "-o", "json")).stdout) as { name: string; state: string }[];
    assert.deepEqual(
      nodes.map((n) => [n.name, n.state]),
      [1, 2].map((i) => [tc.nodeName(i), "NODE_CONNECTED"]),
    );
    const one = await hubble("status", "--server", agent1);
    assert.equal(one.code, 0, one.stderr);
  });

  it("hubble observe -f --verdict DROPPED --from-pod default/xwing prints the drop provoked while it follows, with the deny rule", async () => {
    const child = spawn(hubbleBinary(), ["observe", "--server", relay, "-f", "--verdict", "DROPPED", "--from-pod", "default/xwing", "-o", "jsonpb"], { stdio: ["ignore", "pipe", "pipe"] });
    followers.push(child);
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    // `-f` replays nothing: probe until a drop shows up (the stream may open after the first probe).
    const end = Date.now() + 30_000;
    while (!jsonFlows(out).some((f) => f.l4?.TCP?.destination_port === 80)) {
      assert.notEqual((await xwing!.probe(ips.get("default/deathstar")!, 80, { timeoutMs: 500 })).verdict, "connected");
      if (Date.now() > end) assert.fail(`no drop printed; stdout ${out}`);
    }
    const f = jsonFlows(out).find((x) => x.l4?.TCP?.destination_port === 80)!;
    assert.equal(f.verdict, "DROPPED");
    assert.equal(f.drop_reason_desc, "POLICY_DENY");
    assert.equal(f.traffic_direction, "INGRESS");
    assert.equal(f.node_name, tc.nodeName(1), "the deathstar's node judged it");
    assert.deepEqual([f.source.namespace, f.source.pod_name, f.source.identity, f.IP.source], ["default", "xwing", identities.get("xwing"), ips.get("default/xwing")]);
    assert.deepEqual([f.destination.pod_name, f.destination.identity, f.IP.destination], ["deathstar", identities.get("deathstar"), ips.get("default/deathstar")]);
    assert.ok(f.source.labels?.includes("k8s:org=alliance"), JSON.stringify(f.source.labels));
    assert.deepEqual(
      f.ingress_denied_by?.map((p) => [p.kind, p.namespace, p.name]),
      [["CiliumNetworkPolicy", "default", "rule1"]],
    );
    assert.ok(f.ingress_denied_by?.[0]?.labels.includes("membrane:rule=spec.ingressDeny[0]"));
    assert.ok(jsonFlows(out).every((x) => x.source.pod_name === "xwing" && x.verdict === "DROPPED"));
  });

  it("default deny and an allow, through the relay and against one agent: --last, --to-label, --protocol tcp --port 80, -o json", async () => {
    const deathstar = ips.get("default/deathstar")!;
    assert.notEqual((await xwing!.probe(deathstar, 8080, { timeoutMs: 500 })).verdict, "connected");
    assert.equal((await tiefighter!.probe(deathstar, 80, { timeoutMs: 3000 })).verdict, "connected");
    const end = Date.now() + 15_000;
    let flows: HubbleFlow[];
    // Deathstar's node judges the connection to 8080 at its ingress; xwing's node may report its egress too (no policy
    // there: a forwarded trace), earlier in time, so the drop is looked for by its direction.
    const isDefaultDeny = (f: HubbleFlow): boolean => f.l4?.TCP?.destination_port === 8080 && f.traffic_direction === "INGRESS";
    // xwing's refused SYNs of the test before are many flows: look for these two in a wider window.
    for (;;) {
      flows = jsonFlows((await hubble("observe", "--server", relay, "--last", "500", "-o", "json")).stdout);
      if (flows.some(isDefaultDeny) && flows.some((f) => f.verdict === "FORWARDED" && f.source.pod_name === "tiefighter" && f.traffic_direction === "INGRESS")) break;
      if (Date.now() > end) assert.fail(`not both flows in --last 500: ${JSON.stringify(flows)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // --last 20: the newest 20 of the cluster, in time order, across both nodes.
    const last20 = jsonFlows((await hubble("observe", "--server", relay, "--last", "20", "-o", "json")).stdout);
    assert.ok(last20.length <= 20 && last20.length >= Math.min(20, flows.length), `${last20.length} flows of ${flows.length}`);
    const times = last20.map((f) => Date.parse(f.time as unknown as string));
    assert.deepEqual(times, [...times].sort((a, b) => a - b), "merged by time");
    assert.ok(times.at(-1)! >= Math.max(...flows.map((f) => Date.parse(f.time as unknown as string))), "the newest flows");
    const defaultDeny = flows.find(isDefaultDeny)!;
    assert.deepEqual([defaultDeny.verdict, defaultDeny.drop_reason_desc, defaultDeny.source.pod_name], ["DROPPED", "POLICY_DENIED", "xwing"]);
    assert.deepEqual(defaultDeny.ingress_denied_by?.map((p) => p.kind), ["DefaultDeny"]);
    // Node 2 reports the connection at tiefighter's egress (no policy there: a trace), node 1 at deathstar's
    // ingress, where rule1 allowed it.
    const allowed = flows.find((f) => f.verdict === "FORWARDED" && f.source.pod_name === "tiefighter" && f.destination.pod_name === "deathstar" && f.traffic_direction === "INGRESS")!;
    const egress = flows.find((f) => f.verdict === "FORWARDED" && f.source.pod_name === "tiefighter" && f.traffic_direction === "EGRESS");
    if (egress !== undefined) assert.equal(egress.egress_allowed_by, undefined, "no policy selects tiefighter's egress");
    assert.deepEqual([allowed.source.identity, allowed.destination.identity, allowed.l4?.TCP?.destination_port], [identities.get("tiefighter"), identities.get("deathstar"), 80]);
    assert.deepEqual(allowed.ingress_allowed_by?.map((p) => [p.kind, p.name]), [["CiliumNetworkPolicy", "rule1"]]);
    assert.equal(allowed.policy_match_type, 2, "rule1 matched by the peer's identity and port 80: Cilium's L3-L4");
    assert.equal(allowed.is_reply?.value ?? false, false);

    for (const server of [relay, agent1]) {
      const label = jsonFlows((await hubble("observe", "--server", server, "--to-label", "class=deathstar", "--last", "100", "-o", "json")).stdout);
      assert.ok(label.length > 0 && label.every((f) => f.destination.pod_name === "deathstar"), `${server}: ${JSON.stringify(label)}`);
      const tcp80 = jsonFlows((await hubble("observe", "--server", server, "--protocol", "tcp", "--port", "80", "--last", "100", "-o", "jsonpb")).stdout);
      assert.ok(tcp80.length > 0, server);
      assert.ok(tcp80.every((f) => f.l4?.TCP !== undefined && (f.l4.TCP.destination_port === 80 || f.l4.TCP.source_port === 80)), JSON.stringify(tcp80));
      assert.ok(tcp80.some((f) => f.source.pod_name === "tiefighter" && f.verdict === "FORWARDED"), `${server}: the allowed connection`);
    }
    // The agent of node 1 judged every deathstar ingress: its own flows name it.
    const one = jsonFlows((await hubble("observe", "--server", agent1, "--last", "100", "-o", "json")).stdout);
    assert.ok(one.every((f) => f.node_name === tc.nodeName(1)));
  });

  it("a Deployment's pod is named with its workload (Deployment, through its ReplicaSet) and hubble observe --from-workload selects its flows", async () => {
    const deployment = {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "squadron", namespace: "default" },
      spec: {
        replicas: 1,
        selector: { matchLabels: { fleet: "squadron" } },
        template: {
          metadata: { labels: { fleet: "squadron", class: "tiefighter", org: "empire" } },
          spec: { nodeName: tc.nodeName(2), automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] },
        },
      },
    };
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(deployment));
    // The controller manager creates the ReplicaSet and its pod; the operator gives the pod an identity.
    let pod = "";
    const end = Date.now() + 60_000;
    for (;;) {
      const list = JSON.parse(await tc.kubectl(["get", "pods", "-n", "default", "-l", "fleet=squadron", "-o", "json"])) as {
        items: { metadata: { name: string; annotations?: Record<string, string> }; status: { podIP?: string; conditions?: { type: string; status: string }[] } }[];
      };
      const p = list.items[0];
      if (p?.status.podIP && p.metadata.annotations?.[IDENTITY_ANNOTATION] && p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True")) {
        pod = p.metadata.name;
        break;
      }
      if (Date.now() > end) assert.fail(`the squadron Deployment has no ready pod with an identity: ${JSON.stringify(list.items)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.match(pod, /^squadron-[a-z0-9]+-[a-z0-9]+$/, "a pod of the Deployment's ReplicaSet");
    const squadron = await tc.prober("default", pod);
    const deathstar = ips.get("default/deathstar")!;
    const wanted = (f: HubbleFlow): boolean => f.source.pod_name === pod && f.destination.pod_name === "deathstar" && f.traffic_direction === "INGRESS";
    let flows: HubbleFlow[];
    const seen = Date.now() + 30_000;
    // Probe until node 1's agent knows the pod's workload from the ipcache the operator sent (it follows the pod's creation).
    for (;;) {
      assert.equal((await squadron.probe(deathstar, 80, { timeoutMs: 3000 })).verdict, "connected");
      flows = jsonFlows((await hubble("observe", "--server", relay, "--from-workload", "Deployment/squadron", "--last", "100", "-o", "jsonpb")).stdout);
      if (flows.some(wanted)) break;
      if (Date.now() > seen) assert.fail(`no ingress flow of ${pod} with its workload through the relay: ${JSON.stringify(flows)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(flows.every((f) => f.source.workloads?.some((w) => w.kind === "Deployment" && w.name === "squadron")), JSON.stringify(flows));
    const f = flows.find(wanted)!;
    assert.deepEqual(f.source.workloads, [{ kind: "Deployment", name: "squadron" }]);
    assert.equal(f.verdict, "FORWARDED");
    assert.deepEqual(f.ingress_allowed_by?.map((p) => p.name), ["rule1"]);
    assert.equal(f.destination.workloads, undefined, "a pod created by hand has no workload");
    // Against the agent that judged it, by name alone; and a kind it does not have selects none of its flows.
    const byName = jsonFlows((await hubble("observe", "--server", agent1, "--from-workload", "squadron", "--last", "100", "-o", "json")).stdout);
    assert.ok(byName.some(wanted), JSON.stringify(byName));
    const otherKind = jsonFlows((await hubble("observe", "--server", relay, "--from-workload", "StatefulSet/squadron", "--last", "100", "-o", "json")).stdout);
    assert.deepEqual(otherKind, []);
    await tc.kubectl(["delete", "deployment", "-n", "default", "squadron", "--wait=false"]);
  });

  it("each agent's flows carry its own Node's labels: --node-label through the relay selects one node's flows, a set-based selector both", async () => {
    for (const i of [1, 2]) await tc.kubectl(["label", "--overwrite", "node", tc.nodeName(i), `membrane.test/zone=zone-${i}`]);
    const deathstar = ips.get("default/deathstar")!;
    const zone = async (selector: string): Promise<HubbleFlow[]> => jsonFlows((await hubble("observe", "--server", relay, "--node-label", selector, "--last", "200", "-o", "json")).stdout);
    const end = Date.now() + 30_000;
    let one: HubbleFlow[] = [];
    let two: HubbleFlow[] = [];
    // The tiefighter's connection is reported by both nodes (its egress on node 2, deathstar's ingress on node 1).
    while (one.length === 0 || two.length === 0) {
      if (Date.now() > end) assert.fail(`zone-1: ${one.length} flows, zone-2: ${two.length}`);
      assert.equal((await tiefighter!.probe(deathstar, 80, { timeoutMs: 3000 })).verdict, "connected");
      [one, two] = [await zone("membrane.test/zone=zone-1"), await zone("membrane.test/zone=zone-2")];
    }
    assert.ok(one.every((f) => f.node_name === tc.nodeName(1) && f.node_labels?.includes("membrane.test/zone=zone-1")), JSON.stringify(one.at(-1)));
    assert.ok(two.every((f) => f.node_name === tc.nodeName(2)), JSON.stringify(two.at(-1)));
    const both = new Set((await zone("membrane.test/zone in (zone-1, zone-2)")).map((f) => f.node_name));
    assert.deepEqual([...both].sort(), [tc.nodeName(1), tc.nodeName(2)].sort());
  });

  it("an unsupported filter is an error naming it, through the relay and against one agent", async () => {
    for (const server of [relay, agent1]) {
      const r = await hubble("observe", "--server", server, "--to-service", "empire/deathstar");
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /InvalidArgument.*destination_service: not supported/, `${server}: ${r.stderr}`);
    }
  });
});
