// The node agent against the real distribution server (mutual TLS) and real maps, judged by real TCP connections between two test netns.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { Datapath, MAPS } from "./bpf/datapath.ts";
import { type IpcacheEntry, encodeEndpointKey, encodeIpcacheValue } from "./bpf/layout.ts";
import { attachedProgramId } from "./bpf/loader.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { type AgentDatapath, NodeAgent } from "./agent.ts";
import { AgentTestbed, HOST_IP, POD_ID, POD_IP, capturingLogger, stateAllowing, until, teardownAgentTest } from "./testing/agent.ts";

const NODE_IP = "192.0.2.1"; // the pod's node in stateAllowing()
const REMOTE_NODE_IP = "192.0.2.9";
const REMOTE_POD = { prefix: "10.203.0.5/32", identity: 3000, node: REMOTE_NODE_IP };
const STALE: IpcacheEntry = { cidr: "10.66.0.0/16", identity: 99 };

describe("node agent", () => {
  const tb = new AgentTestbed(`m6a${process.pid % 100000}`);
  const agentLines: Record<string, unknown>[] = [];
  const serverLines: Record<string, unknown>[] = [];
  let server: DistributionServer | undefined;
  let port = 0;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  /** ipcache prefixes whose write fails, as a full map would. */
  const faults = new Set<string>();

  const report = () => server?.reports().find((r) => r.node === tb.node);
  const applied = (kind: string, version?: number) => agentLines.find((l) => l.msg === "state applied" && l.kind === kind && (version === undefined || l.version === version));
  const ipcacheHas = (e: IpcacheEntry): boolean => dp!.ipcacheValue(e.cidr)?.equals(encodeIpcacheValue(e)) ?? false;
  const attached = (direction: "ingress" | "egress") => attachedProgramId({ ifindex: tb.hostIfindex, direction, netns: tb.nsHost });

  before(async () => {
    await tb.setUp();
    server = new DistributionServer(tb.serverTls(), capturingLogger(serverLines));
    port = await server.listen(0);
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
    dp.setIpcache(STALE); // left by an agent that ran before: the first snapshot removes it
    agent = new NodeAgent({
      nodeName: tb.node,
      operator: `127.0.0.1:${port}`,
      tls: tb.agentTls(),
      datapath: withFaults(dp, faults),
      cniSocket: tb.socketPath,
      netns: tb.nsHost,
      nodeIP: NODE_IP,
      log: capturingLogger(agentLines),
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
    });
    await agent.start();
  });

  after(async () => {
    await teardownAgentTest(tb, { agent, server, dp });
  });

  it("a pod whose identity is not known yet is attached fail-closed: nothing connects", async () => {
    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    assert.ok(attached("ingress"), "from-container attached");
    assert.ok(attached("egress"), "to-container attached");
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: false });
    const added = agentLines.find((l) => l.msg === "endpoint added");
    assert.equal(added?.namespace, "default");
    assert.equal(added?.name, "client");
    assert.equal(added?.resolved, false);
  });

  it("a snapshot fills in the pod's identity and its policy: exactly TCP 8080 connects, and it is ACKed", async () => {
    server!.publish(tb.node, stateAllowing([8080], 1, [REMOTE_POD]));
    await until("snapshot acked", () => report()?.acked?.policyGenerations[0]?.generation === 1);
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
  });

  it("the ipcache holds the operator's prefixes, remote pods tunnelled to their node, nodes as trusted remote-node, this node as host, and nothing stale", () => {
    assert.ok(ipcacheHas({ cidr: `${POD_IP}/32`, identity: POD_ID }), "a local pod is not tunnelled");
    assert.ok(ipcacheHas({ cidr: REMOTE_POD.prefix, identity: REMOTE_POD.identity, tunnelEndpoint: REMOTE_NODE_IP }));
    assert.ok(ipcacheHas({ cidr: `${REMOTE_NODE_IP}/32`, identity: 6, node: true }), "the other node is trusted for VNIs");
    assert.ok(ipcacheHas({ cidr: `${NODE_IP}/32`, identity: 1 }), "this node is reserved:host");
    assert.equal(dp!.ipcacheValue(STALE.cidr), undefined, "the stale prefix is gone");
  });

  it("a repeated endpoint-add is harmless and keeps enforcing", async () => {
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    assert.equal(agent!.status().endpoints, 1);
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
  });

  it("a delta switches the allowed port and is ACKed", async () => {
    server!.publish(tb.node, stateAllowing([8081], 2));
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 2);
    assert.ok(applied("delta", report()?.ackedVersion), "the change travelled as a delta");
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
  });

  it("churn: 40 deltas that rewrite and toggle entries never interrupt a connection that every state allows", async () => {
    const probes = 60;
    const loop = spawn("ip", ["netns", "exec", tb.nsPod, "bash", "-c", `for i in $(seq 1 ${probes}); do timeout 1 bash -c 'exec 3<>/dev/tcp/${HOST_IP}/8080' && echo OK || echo FAIL; sleep 0.03; done`], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    loop.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const done = new Promise((r) => loop.once("exit", r));
    for (let g = 0; g < 40; g++) {
      const base = stateAllowing(g % 2 === 0 ? [8080, 8081] : [8080], 100 + g);
      const policy = base.policies[0]!;
      // The 8080 entry's value changes every time (another rule id), so each delta rewrites it.
      const state = { ...base, policies: [{ ...policy, entries: policy.entries.map((e) => (e.port === 8080 ? { ...e, ruleId: 5000 + g } : e)) }] };
      server!.publish(tb.node, state);
      await until(`generation ${100 + g}`, () => report()?.acked?.policyGenerations[0]?.generation === 100 + g);
    }
    await done;
    const lines = out.trim().split("\n");
    assert.equal(lines.length, probes);
    assert.deepEqual(lines.filter((l) => l !== "OK"), [], "every connection to the always-allowed port succeeded");
    server!.publish(tb.node, stateAllowing([8081], 2));
    await until("back to generation 2", () => report()?.acked?.policyGenerations[0]?.generation === 2);
  });

  it("a state that cannot be applied is NACKed with the error and the previous state stays in force", async () => {
    const before = agent!.status().version;
    server!.publish(tb.node, stateAllowing([8080, 8081], 3, [{ prefix: "10.9.0.0/40", identity: 77 }]));
    const r = await until("nack", () => report()?.nack);
    assert.match(r.error, /ipcache\[\d\] \(10\.9\.0\.0\/40\): invalid prefix length/);
    assert.equal(report()?.ackedVersion, before);
    assert.equal(agent!.status().version, before);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
  });

  it("a write that fails halfway is rolled back, NACKed with the error, and the previous state stays in force", async () => {
    const before = agent!.status().version;
    faults.add("10.77.0.0/16");
    server!.publish(tb.node, stateAllowing([8080, 8081], 31, [{ prefix: "10.77.0.0/16", identity: 78 }]));
    const r = await until("nack", () => report()?.nack?.state.policyGenerations[0]?.generation === 31 && report()?.nack);
    faults.clear();
    assert.match(r.error, /injected: ipcache map full at 10\.77\.0\.0\/16/);
    assert.equal(agent!.status().version, before);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true }, "the allow written before the failure was taken back");
  });

  it("with the operator gone the agent keeps enforcing its last state", async () => {
    server!.publish(tb.node, stateAllowing([8081], 4));
    await until("gen 4 acked", () => report()?.acked?.policyGenerations[0]?.generation === 4);
    const version = agent!.status().version;
    await server!.close();
    server = undefined;
    await until("agent sees the operator gone", () => !agent!.status().connected);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
    assert.equal(agent!.status().version, version);
    assert.equal(agent!.state().policyGenerations[0]?.generation, 4);
  });

  it("when the operator is back the agent reconnects with its last ACKed version and converges", async () => {
    const version = agent!.status().version!;
    serverLines.length = 0;
    server = new DistributionServer(tb.serverTls(), capturingLogger(serverLines));
    await server.listen(port);
    server.publish(tb.node, stateAllowing([8080], 5));
    await until("reconnected and acked", () => report()?.acked?.policyGenerations[0]?.generation === 5, 15000);
    const hello = serverLines.find((l) => l.msg === "agent connected");
    assert.equal(hello?.lastApplied, version, "the hello carried the last acknowledged version");
    assert.ok(report()!.ackedVersion! > version, "versions keep growing across the operator restart");
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
  });

  it("a dropped stream resumes from the last ACKed version with a delta, not a snapshot", async () => {
    const version = agent!.status().version!;
    serverLines.length = 0;
    agent!.reconnect();
    await until("resumed", () => serverLines.find((l) => l.msg === "agent connected" && l.lastApplied === version && l.resume === true));
    server!.publish(tb.node, stateAllowing([8080, 8081], 6));
    await until("delta after resume acked", () => report()?.acked?.policyGenerations[0]?.generation === 6);
    assert.ok(applied("delta", report()?.ackedVersion), "the change after resuming is a delta");
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: true });
  });

  it("an endpoint whose programs cannot be attached is refused with the reason and leaves no map entry", async () => {
    const ip = "10.202.0.77";
    const reply = await callAgent(tb.socketPath, { ...tb.addRequest(), containerId: `${tb.containerId}-bad`, hostIfindex: 999_999, ips: [ip] });
    assert.equal(reply.ok, false);
    assert.match(!reply.ok ? reply.error : "", /ifindex 999999/);
    assert.equal(dp!.object.map(MAPS.endpoints).lookup(encodeEndpointKey(ip)), undefined);
    assert.equal(agent!.status().endpoints, 1);
  });

  it("endpoint-del detaches the programs and forgets the pod; repeating it is harmless", async () => {
    assert.deepEqual(await callAgent(tb.socketPath, tb.delRequest()), { ok: true });
    assert.equal(attached("ingress"), undefined);
    assert.equal(attached("egress"), undefined);
    assert.equal(agent!.status().endpoints, 0);
    assert.deepEqual(await callAgent(tb.socketPath, tb.delRequest()), { ok: true });
    assert.ok(agentLines.some((l) => l.msg === "endpoint deleted" && l.namespace === "default" && l.name === "client"));
  });

  it("a cluster of 50,000 pods: a state larger than gRPC's default 4 MiB message limit is taken, written and ACKed, then shrinks back", async () => {
    const pods = Array.from({ length: 50_000 }, (_, i) => ({ prefix: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, identity: 3000 + (i % 5000), node: REMOTE_NODE_IP, pod: `ns-${i % 50}/pod-${i}` }));
    const big = stateAllowing([8080], 300, pods);
    assert.ok(Buffer.byteLength(JSON.stringify(big)) > 4 * 1024 * 1024, "the state is over 4 MiB");
    // It travels as a delta of 50,000 ipcache upserts: as large as the snapshot a new agent of that cluster gets.
    server!.publish(tb.node, big);
    await until("50,000-pod state acked", () => report()?.acked?.policyGenerations[0]?.generation === 300, 60_000);
    assert.equal(report()?.nack, undefined);
    assert.ok(ipcacheHas({ cidr: pods[49_999]!.prefix, identity: pods[49_999]!.identity, tunnelEndpoint: REMOTE_NODE_IP }));
    server!.publish(tb.node, stateAllowing([8080], 301));
    await until("small state acked", () => report()?.acked?.policyGenerations[0]?.generation === 301, 60_000);
    assert.equal(dp!.ipcacheValue(pods[0]!.prefix), undefined, "the pods' prefixes are gone again");
  });
});

/** The real datapath, except that writing an ipcache prefix in `faults` fails. */
function withFaults(dp: Datapath, faults: ReadonlySet<string>): AgentDatapath {
  return {
    object: dp.object,
    setSubjectPolicy: (p, e) => dp.setSubjectPolicy(p, e),
    addSubjectEntries: (p, added) => dp.addSubjectEntries(p, added),
    removeSubjectEntries: (p, removed) => dp.removeSubjectEntries(p, removed),
    setIpcache: (e) => {
      if (faults.has(e.cidr)) throw new Error(`injected: ipcache map full at ${e.cidr}`);
      dp.setIpcache(e);
    },
    setIpcacheMany: (es) => {
      for (const e of es) if (faults.has(e.cidr)) throw new Error(`injected: ipcache map full at ${e.cidr}`);
      dp.setIpcacheMany(es);
    },
    deleteIpcache: (c) => dp.deleteIpcache(c),
    pruneIpcache: (keep) => dp.pruneIpcache(keep),
    setIPBlock: (e) => dp.setIPBlock(e),
    deleteIPBlock: (c) => dp.deleteIPBlock(c),
    pruneIPBlocks: (keep) => dp.pruneIPBlocks(keep),
    setEndpoint: (e) => dp.setEndpoint(e),
    deleteEndpoint: (ip) => dp.deleteEndpoint(ip),
    attachEndpoint: (i, n) => dp.attachEndpoint(i, n),
    detachEndpoint: (i, n) => dp.detachEndpoint(i, n),
  };
}
