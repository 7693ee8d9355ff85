// A new pod's CNI ADD waits for the pod's identity and policy (--cni-identity-wait): real agent, distribution server, maps and packets from a pod netns.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { PROTO_NUMBER, type PolicyEntry } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { Datapath } from "./bpf/datapath.ts";
import { waitForLine } from "./bpf/netns.ts";
import { LAYOUT, encodeEndpointKey } from "./bpf/layout.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { INIT_IDENTITY, NodeAgent } from "./agent.ts";
import { podIdentityClaims } from "./pod-identity.ts";
import { AgentTestbed, HOST_IP, HOST_PEER_ID, POD_ID, POD_IP, capturingLogger, teardownAgentTest, until } from "./testing/agent.ts";

const run = promisify(execFile);
const UDP_PORT = 5300;
const UDP_SINK = `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", ${UDP_PORT}))
print("listening")
while True:
    data, (ip, _) = s.recvfrom(2048)
    print(f"datagram ${UDP_PORT} {ip} {data.decode().strip()}")`;
const WAIT_MS = 2500;

/**
 * The operator's state before it has learned the new pod's address: the pod's identity (its labels), its
 * policy (egress to the host peer on TCP 8080 and UDP 5300), but no ipcache entry for the pod.
 */
function stateBeforeTheAddress(): NodeState {
  const entry = (proto: number, port: number): PolicyEntry => ({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 });
  return {
    policies: [{ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries: [entry(PROTO_NUMBER.TCP, 8080), entry(PROTO_NUMBER.UDP, UDP_PORT)] }],
    ipcache: [{ prefix: `${HOST_IP}/32`, identity: HOST_PEER_ID }],
    identities: [
      { id: POD_ID, labels: ["k8s:app=client", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=default"] },
      { id: HOST_PEER_ID, labels: ["k8s:app=server"] },
    ],
    rules: [{ id: 1, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "client-out", ruleIndex: 0, path: "spec.egress[0]" } }],
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/client-out", uid: "u1", generation: 1 }],
  };
}

/** The pod object as the operator has annotated it. */
const annotatedPod = (name: string, identity = POD_ID) => ({
  metadata: { name, namespace: "default", labels: { app: "client" }, annotations: { "membrane.io/identity": String(identity) } },
  spec: { serviceAccountName: "default" },
});

describe("a new pod's CNI ADD waits for its identity", () => {
  const tb = new AgentTestbed(`m6w${process.pid % 100000}`);
  const lines: Record<string, unknown>[] = [];
  let server: DistributionServer | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let udpServer: ChildProcess | undefined;
  const received: string[] = [];

  const drops = (): bigint => Object.values(dp!.dropCounters().byReason).reduce((a, b) => a + b, 0n);
  /** The identity the endpoint map gives the pod's address (what the datapath judges its packets as). */
  const endpointIdentity = (): number | undefined => dp!.object.map("membrane_endpoints").lookup(encodeEndpointKey(POD_IP))?.readUInt32LE(LAYOUT.endpoint_value.fields.identity.offset);

  before(async () => {
    await tb.setUp();
    // The peer: prints each datagram (python starts in a fraction of the time a tsx probe takes).
    udpServer = spawn("ip", ["netns", "exec", tb.nsHost, "python3", "-u", "-c", UDP_SINK], { stdio: ["ignore", "pipe", "inherit"] });
    await waitForLine(udpServer, /^listening/, 15000);
    let partial = "";
    udpServer.stdout!.on("data", (d: Buffer) => {
      const parts = (partial + d.toString()).split("\n");
      partial = parts.pop() ?? "";
      received.push(...parts.filter((l) => l.startsWith("datagram")));
    });
    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    const port = await server.listen(0);
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
    agent = new NodeAgent({
      nodeName: tb.node, operator: `127.0.0.1:${port}`, tls: tb.agentTls(), datapath: dp, cniSocket: tb.socketPath, netns: tb.nsHost, nodeIP: "192.0.2.1", log: capturingLogger(lines),
      identityWaitMs: WAIT_MS,
      // No reconnect while the operator is stopped: each attempt leaves gRPC's 30 s waitForReady timer holding the process.
      backoff: { baseMs: 120_000, maxMs: 120_000, jitter: 0 },
    });
    await agent.start();
  });

  after(async () => {
    if (udpServer?.pid !== undefined && udpServer.exitCode === null) udpServer.kill();
    await teardownAgentTest(tb, { agent, server, dp });
  });

  it("the ADD answers once the pod object's identity and its policy are in: the pod's first UDP datagram arrives and its first TCP SYN is not dropped", async () => {
    server!.publish(tb.node, stateBeforeTheAddress());
    await until("the state acked", () => server!.reports().find((r) => r.node === tb.node)?.ackedVersion !== undefined);
    let answered = false;
    const add = callAgent(tb.socketPath, tb.addRequest()).finally(() => (answered = true));
    // Registered at reserved:init meanwhile: the pod object has no identity yet (the operator has not annotated it).
    await until("the endpoint registered", () => agent!.status().endpoints === 1);
    assert.equal(answered, false, "the ADD waits while the pod's identity is unknown");
    // The annotation of another namespace's identity, or one whose labels the pod does not carry, is not taken.
    agent!.setPodIdentityClaims(podIdentityClaims([{ ...annotatedPod("client"), metadata: { ...annotatedPod("client").metadata, labels: { app: "other" } } }]));
    assert.equal(answered, false, "an identity whose labels the pod does not carry resolves nothing");
    const before = drops();
    agent!.setPodIdentityClaims(podIdentityClaims([annotatedPod("client")]));
    assert.deepEqual(await add, { ok: true });
    assert.equal(endpointIdentity(), POD_ID, "the endpoint runs under the pod's identity");
    // The pod's very first packets, as a container that starts sending at once would.
    await run("ip", ["netns", "exec", tb.nsPod, "bash", "-c", `echo first > /dev/udp/${HOST_IP}/${UDP_PORT}`]);
    await until("the first datagram at the peer", () => received.find((l) => l === `datagram ${UDP_PORT} ${POD_IP} first`)).catch((err: Error) => {
      throw new Error(`${err.message}; the peer printed ${JSON.stringify(received)}; drops by reason ${JSON.stringify(dp!.dropCounters().byReason, (_k, v: unknown) => (typeof v === "bigint" ? Number(v) : v))}`);
    });
    assert.equal(await tb.reaches(8080), true, "TCP 8080 connects");
    assert.equal(drops(), before, "no packet of the pod was dropped (a dropped SYN would be counted before its retransmission connects)");
    assert.equal(await tb.reaches(8081), false, "the policy is enforced: 8081 is not allowed");
    const added = lines.find((l) => l.msg === "endpoint added");
    assert.equal(added?.identity, POD_ID);
    assert.equal(added?.resolved, true);
  });

  it("with the operator stopped, a pod it has not annotated starts after the wait at reserved:init, closed, and the agent logs it naming the pod; once its pod object names its identity, the endpoint takes it without another ADD", async () => {
    assert.deepEqual(await callAgent(tb.socketPath, tb.delRequest()), { ok: true });
    await server!.close();
    server = undefined;
    agent!.setPodIdentityClaims(podIdentityClaims([]));
    const request = { ...tb.addRequest(), pod: "late" };
    assert.deepEqual(await callAgent(tb.socketPath, request), { ok: true }, "the ADD succeeds: the pod starts");
    const warned = lines.find((l) => l.level === 40 && l.name === "late");
    assert.ok(warned, `one warning names the pod: ${JSON.stringify(lines.filter((l) => l.name === "late"))}`);
    assert.equal(warned.namespace, "default");
    assert.match(String(warned.msg), /reserved:init/);
    assert.ok(Number(warned.waitedMs) >= WAIT_MS - 50, `waited ${String(warned.waitedMs)} ms`); // timers may fire a few ms early
    assert.equal(endpointIdentity(), INIT_IDENTITY, "the endpoint is at reserved:init");
    const before = received.length;
    await run("ip", ["netns", "exec", tb.nsPod, "bash", "-c", `echo late > /dev/udp/${HOST_IP}/${UDP_PORT}`]);
    assert.equal(await tb.reaches(8080), false, "closed: nothing connects");
    assert.deepEqual(received.slice(before), [], "the datagram did not arrive");
    // The annotation written (the operator back): the last applied state knows the identity and its policy.
    agent!.setPodIdentityClaims(podIdentityClaims([annotatedPod("late")]));
    await until("the endpoint under the pod's identity", () => endpointIdentity() === POD_ID, 15_000);
    assert.equal(await tb.reaches(8080), true, "TCP 8080 connects");
  });
});
