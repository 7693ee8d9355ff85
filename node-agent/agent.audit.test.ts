// Policy audit mode end to end: a real API server's Node and Pod annotations switch a running agent's real datapath, seen in `membrane observe`, metrics and the CiliumNode;
// and the same Node's labels on the agent's flows (Hubble's node_labels), read by the real hubble CLI.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { KubeClient, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";
import { Datapath } from "./bpf/datapath.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { NodeAgent } from "./agent.ts";
import { AuditModeWatch, AUDIT_MODE_ANNOTATION, type AuditModeAnnotations } from "./audit-mode.ts";
import { nodePodsInformer } from "./node-pods.ts";
import { PodIdentityWatch } from "./pod-identity-watch.ts";
import type { PodIdentityClaims } from "./pod-identity.ts";
import { PodContainersWatch, type PodContainers } from "./runtime/pod-containers.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import { NodeLabelsWatch } from "./node-labels.ts";
import { CiliumNodeHealth } from "./health.ts";
import { AgentMetrics } from "./metrics.ts";
import { AgentTestbed, HOST_PEER_ID, POD_ID, capturingLogger, stateAllowing, teardownAgentTest, until } from "./testing/agent.ts";
import type { Flow } from "../flowapi/flow.ts";
import { jsonFlows, runHubble } from "../localcluster/hubble/cli.ts";

const execFileP = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const MEMBRANE = path.join(here, "../bin/membrane");
const CRD = path.join(here, "../crds/generated/ciliumnodes.cilium.io.yaml");
const DENY_RULE = 77;

/** Allows TCP 8080 and denies TCP 8081 with an egressDeny rule (the testbed's host serves both). */
function stateDenying8081(generation: number): NodeState {
  const base = stateAllowing([8080], generation);
  const p = base.policies[0]!;
  const deny = { subject: POD_ID, direction: "egress" as const, peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 8081, portPrefixLen: 16, verdict: "deny" as const, proxyPort: 0, ruleId: DENY_RULE };
  return {
    ...base,
    policies: [{ ...p, entries: [...p.entries, deny] }],
    rules: [...base.rules, { id: DENY_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deny-8081", ruleIndex: 0, path: "spec.egressDeny[0]" } }],
  };
}

describe("policy audit mode by annotation on a running agent", { timeout: 300_000 }, () => {
  const tb = new AgentTestbed(`aua${process.pid % 100000}`);
  const hubbleSocket = path.join(tb.dir, "hubble.sock");
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  let server: DistributionServer | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let watch: AuditModeWatch | undefined;
  let labelsWatch: NodeLabelsWatch | undefined;
  let health: CiliumNodeHealth | undefined;
  let metrics: AgentMetrics | undefined;
  let metricsPort = 0;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const eventually = async <T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await f();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const observe = async (...args: string[]): Promise<Flow[]> => {
    const r = await execFileP(MEMBRANE, ["observe", "--server", hubbleSocket, "-o", "json", ...args]);
    return r.stdout.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as Flow);
  };
  const metricsText = async (): Promise<string> => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const sample = (text: string, series: string): number => Number(text.split("\n").find((l) => l.startsWith(series + " "))?.slice(series.length + 1) ?? 0);
  const report = () => server?.reports().find((r) => r.node === tb.node);

  before(async () => {
    await tb.setUp();
    cp = await startControlPlane({ name: `audit${process.pid}` });
    await kubectl(["apply", "-f", CRD]);
    await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "-f", CRD]);
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: tb.node } }));
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: tb.node }, spec: {} }));
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: "default" } }));
    // The pod the testbed's endpoint stands for, scheduled to this node (nothing runs it: only its annotations matter).
    await kubectl(["apply", "-f", "-"], JSON.stringify({
      apiVersion: "v1", kind: "Pod", metadata: { name: "client", namespace: "default" },
      spec: { nodeName: tb.node, automountServiceAccountToken: false, containers: [{ name: "c", image: "none" }] },
    }));
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);

    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    const port = await server.listen(0);
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
    const log = capturingLogger([]);
    agent = new NodeAgent({
      nodeName: tb.node, operator: `127.0.0.1:${port}`, tls: tb.agentTls(), datapath: dp, cniSocket: tb.socketPath, netns: tb.nsHost, log,
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
      observer: { hubble: { socketPath: hubbleSocket } },
    });
    await agent.start();
    metrics = new AgentMetrics({ agent, datapath: dp, log });
    metricsPort = await metrics.start("127.0.0.1:0");
    health = new CiliumNodeHealth({
      client, nodeName: tb.node, status: () => agent!.status(), onStatus: (f) => agent!.onStatus(f), datapath: "test", agentVersion: "0.0.0-test", log,
      backoff: { baseMs: 100, maxMs: 500, jitter: 0 },
    });
    health.start();
    watch = new AuditModeWatch({ client, nodeName: tb.node, apply: (a) => agent!.setAuditAnnotations(a), log });
    watch.start();
    await watch.synced();
    labelsWatch = new NodeLabelsWatch({ client, nodeName: tb.node, apply: (l) => agent!.setNodeLabels(l), log });
    labelsWatch.start();

    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    server.publish(tb.node, stateDenying8081(1));
    await until("deny state acked", () => report()?.acked?.policyGenerations[0]?.generation === 1);
  });

  after(async () => {
    await watch?.stop();
    await labelsWatch?.stop();
    await health?.stop();
    await metrics?.stop();
    client?.close();
    await teardownAgentTest(tb, { agent, server, dp });
    await cp?.stop();
  });

  it("enforcing: the denied port is dropped and the CiliumNode says the node is not in audit mode", async () => {
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
    const agentStatus = await eventually("status.agent.policyAuditMode false", async () => {
      const a = (await client!.get<{ status?: { agent?: { policyAuditMode?: boolean } } }>(resourcePath(CILIUM_NODES, undefined, tb.node))).status?.agent;
      return a?.policyAuditMode === false ? a : undefined;
    });
    assert.equal(agentStatus.policyAuditMode, false);
  });

  it("the Node's annotation puts the whole node in audit mode: the denied connection passes, `membrane observe` shows it as AUDIT with its rule, metrics count it, kubectl get ciliumnode shows it", async () => {
    await kubectl(["annotate", "node", tb.node, `${AUDIT_MODE_ANNOTATION}=true`]);
    await until("node audit mode applied", () => agent!.status().policyAuditMode, 15_000);
    const since = new Date().toISOString();
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: true });

    const audits = await eventually("an AUDIT flow for 8081", async () => {
      const fs = await observe("--verdict", "AUDIT", "--port", "8081", "--since", since);
      return fs.length > 0 ? fs : undefined;
    });
    const f = audits.at(-1)!;
    assert.deepEqual([f.verdict, f.type, f.direction, f.destination.port, f.dropReason], ["AUDIT", "policy-verdict", "egress", 8081, "policy denied"]);
    assert.deepEqual(f.decidedBy, { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deny-8081", rule: "spec.egressDeny[0]" });
    assert.equal(f.policyMatch, "L3-L4", "the deny entry names a peer, a protocol and a port");
    assert.equal((await observe("--verdict", "DROPPED", "--port", "8081", "--since", since)).length, 0, "nothing dropped");

    // The real hubble CLI filters on Hubble's own verdict AUDIT.
    const h = await runHubble(["observe", "--server", `unix://${hubbleSocket}`, "--verdict", "AUDIT", "--port", "8081", "-o", "json"]);
    assert.equal(h.code, 0, h.stderr);
    const hf = jsonFlows(h.stdout).at(-1);
    assert.equal(hf?.verdict, "AUDIT");
    assert.deepEqual(hf?.egress_denied_by?.map((p) => p.name), ["deny-8081"]);

    const m = await metricsText();
    assert.ok(sample(m, 'membrane_agent_flows_total{verdict="AUDIT"}') >= 1, "membrane_agent_flows_total AUDIT");
    assert.ok(sample(m, 'membrane_agent_policy_audits_total{reason="policy denied"}') >= 1, "membrane_agent_policy_audits_total");
    assert.ok(sample(m, 'hubble_policy_verdicts_total{direction="egress",match="l3-l4",action="audit"}') >= 1, `hubble_policy_verdicts_total action=audit:\n${m.split("\n").filter((l) => l.startsWith("hubble_policy_verdicts_total")).join("\n")}`);

    await eventually("status.agent.policyAuditMode true", async () => {
      const a = (await client!.get<{ status?: { agent?: { policyAuditMode?: boolean } } }>(resourcePath(CILIUM_NODES, undefined, tb.node))).status?.agent;
      return a?.policyAuditMode === true ? a : undefined;
    });
    // Columns are aligned text (empty ones are blank): read the row under the header.
    const [header, row] = (await kubectl(["get", "ciliumnode", tb.node])).split("\n");
    const column = header!.indexOf("POLICYAUDIT");
    assert.ok(column >= 0, `kubectl get ciliumnode has a POLICYAUDIT column: ${header}`);
    assert.equal(row!.slice(column).split(/\s+/)[0], "true", `${header}\n${row}`);
    const ready = header!.indexOf("READY");
    assert.ok(ready >= 0, `kubectl get ciliumnode has a READY column: ${header}`);
    assert.equal(row!.slice(ready).split(/\s+/)[0], "True", `the agent's Ready condition in its column:\n${header}\n${row}`);
  });

  it("removing the Node's annotation enforces again, with the same agent (no restart)", async () => {
    await kubectl(["annotate", "node", tb.node, `${AUDIT_MODE_ANNOTATION}-`]);
    await until("node audit mode off", () => !agent!.status().policyAuditMode, 15_000);
    assert.equal(dp!.policyAuditMode(), false);
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
  });

  it("a Pod's annotation audits only that endpoint; \"false\" enforces it again", async () => {
    await kubectl(["annotate", "pod", "-n", "default", "client", `${AUDIT_MODE_ANNOTATION}=true`]);
    await until("endpoint audit mode applied", () => agent!.status().auditedEndpoints === 1, 15_000);
    assert.equal(agent!.status().policyAuditMode, false, "the node stays enforcing");
    const since = new Date().toISOString();
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: true });
    await eventually("an AUDIT flow for the pod", async () => ((await observe("--verdict", "AUDIT", "--port", "8081", "--since", since)).length > 0 ? true : undefined));
    await kubectl(["annotate", "--overwrite", "pod", "-n", "default", "client", `${AUDIT_MODE_ANNOTATION}=false`]);
    await until("endpoint audit mode off", () => agent!.status().auditedEndpoints === 0, 15_000);
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
  });

  it("flows carry the Node's labels as they are when the flow is seen: hubble observe --node-label selects by them (a label selector), and a relabel shows on the next flows", async () => {
    const node = (labels: string[]): Promise<ReturnType<typeof jsonFlows>> =>
      runHubble(["observe", "--server", `unix://${hubbleSocket}`, ...labels.flatMap((l) => ["--node-label", l]), "--port", "8080", "--since", since, "-o", "json"]).then((r) => {
        assert.equal(r.code, 0, r.stderr);
        return jsonFlows(r.stdout);
      });
    let since = new Date().toISOString();
    await kubectl(["label", "--overwrite", "node", tb.node, "topology.kubernetes.io/zone=zone-a", "membrane.test/tier=edge"]);
    const zoneA = await eventually("a flow carrying zone-a", async () => {
      await tb.verdicts();
      const fs = await node(["topology.kubernetes.io/zone=zone-a"]);
      return fs.length > 0 ? fs : undefined;
    });
    assert.ok(zoneA.every((f) => f.node_labels?.includes("topology.kubernetes.io/zone=zone-a") && f.node_labels.includes("membrane.test/tier=edge")), JSON.stringify(zoneA[0]?.node_labels));
    // From here on every flow carries the labels.
    since = new Date().toISOString();
    await tb.verdicts();
    await eventually("the next flows", async () => ((await node(["topology.kubernetes.io/zone in (zone-a, zone-b), membrane.test/tier"])).length > 0 ? true : undefined));
    assert.deepEqual(await node(["topology.kubernetes.io/zone=zone-b"]), [], "another zone's label selects none");
    assert.deepEqual(await node(["!membrane.test/tier"]), [], "a key the node has");
    since = new Date().toISOString();
    await kubectl(["label", "--overwrite", "node", tb.node, "topology.kubernetes.io/zone=zone-b"]);
    await eventually("a flow carrying zone-b", async () => {
      await tb.verdicts();
      return (await node(["topology.kubernetes.io/zone=zone-b"])).length > 0 ? true : undefined;
    });
    // Our own CLI, on flows made once zone-b arrived: the same filter, and the labels read back from Hubble's flows.
    const after = new Date().toISOString();
    await tb.verdicts();
    const ours = await eventually("membrane observe --node-label", async () => {
      const fs = await observe("--node-label", "topology.kubernetes.io/zone=zone-b", "--port", "8080", "--since", after);
      return fs.length > 0 ? fs : undefined;
    });
    assert.ok(ours.every((f) => f.nodeLabels?.includes("topology.kubernetes.io/zone=zone-b")), JSON.stringify(ours.at(-1)));
    assert.deepEqual(await observe("--node-label", "topology.kubernetes.io/zone=zone-a", "--port", "8080", "--since", after), []);
  });

  it("flows name the device they were seen on (the pod's host-side veth: index and name) and say they were not encrypted: hubble observe --interface / --unencrypted select them, --encrypted none", async () => {
    const since = new Date().toISOString();
    await tb.verdicts();
    const observeHubble = async (...args: string[]): Promise<ReturnType<typeof jsonFlows>> => {
      const r = await runHubble(["observe", "--server", `unix://${hubbleSocket}`, "--port", "8080", "--since", since, ...args, "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      return jsonFlows(r.stdout);
    };
    const onVeth = await eventually("a flow on the pod's veth", async () => {
      const fs = await observeHubble("--interface", tb.hostIf);
      return fs.length > 0 ? fs : undefined;
    });
    assert.deepEqual([...new Set(onVeth.map((f) => JSON.stringify(f.interface)))], [JSON.stringify({ index: tb.hostIfindex, name: tb.hostIf })]);
    assert.deepEqual(await observeHubble("--interface", "eth9"), []);
    assert.equal((await observeHubble("--unencrypted")).length, (await observeHubble()).length, "no encryption here: every flow is unencrypted");
    assert.deepEqual(await observeHubble("--encrypted"), []);
    assert.ok((await observe("--port", "8080", "--since", since)).every((f) => f.interface?.name === tb.hostIf && f.encrypted === undefined), "membrane observe reads the device back");
  });

  it("the node's pods are listed and watched once for the agent's three pod consumers (audit annotations, identity claims, containers), and each gets what it needs", async () => {
    let podWatches = 0;
    let podLists = 0;
    // The real client, its requests for the node's pods counted.
    const counting = Object.create(client!) as KubeClient;
    counting.watch = ((p: string, ...rest: unknown[]) => {
      if (p.includes("/pods")) podWatches++;
      return (client!.watch as (...a: unknown[]) => Promise<void>).call(counting, p, ...rest);
    }) as KubeClient["watch"];
    counting.get = ((p: string, ...rest: unknown[]) => {
      if (p.includes("/pods?")) podLists++;
      return (client!.get as (...a: unknown[]) => Promise<unknown>).call(counting, p, ...rest);
    }) as KubeClient["get"];
    const log = capturingLogger([]);
    const shared = nodePodsInformer(counting, tb.node, log);
    const audits: AuditModeAnnotations[] = [];
    const claims: PodIdentityClaims[] = [];
    const containers: PodContainers[] = [];
    const consumers = [
      new AuditModeWatch({ client: counting, nodeName: tb.node, apply: (a) => audits.push(a), log, pods: shared }),
      new PodIdentityWatch({ client: counting, nodeName: tb.node, apply: (c) => claims.push(c), log, pods: shared }),
      new PodContainersWatch({ client: counting, nodeName: tb.node, apply: (c) => containers.push(c), log, pods: shared }),
    ];
    try {
      for (const c of consumers) c.start();
      shared.start();
      await kubectl(["annotate", "pod", "-n", "default", "client", "--overwrite", `${AUDIT_MODE_ANNOTATION}=true`, `${IDENTITY_ANNOTATION}=4242`]);
      await until("the audit watch sees the pod annotated", () => audits.at(-1)?.pods.get("default")?.has("client"));
      await until("the identity watch sees the pod's claim", () => claims.at(-1)?.get("default")?.get("client")?.identity === 4242);
      await until("the containers watch handed over the pods' containers (none: no kubelet runs them)", () => containers.length > 0);
      assert.equal(podLists, 1, "one LIST of the node's pods for the three");
      assert.equal(podWatches, 1, "one WATCH of the node's pods for the three");
    } finally {
      await Promise.all(consumers.map((c) => c.stop()));
      await shared.stop();
      await kubectl(["annotate", "pod", "-n", "default", "client", `${AUDIT_MODE_ANNOTATION}-`, `${IDENTITY_ANNOTATION}-`]);
    }
  });
});
