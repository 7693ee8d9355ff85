// The node agent against the real distribution server (mutual TLS) and real maps, judged by real TCP connections between two test netns.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { pino, type Logger } from "pino";
import { PROTO_NUMBER, type PolicyEntry } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { type TestPki, makePki } from "../controllers/testing/pki.ts";
import { Datapath } from "./bpf/datapath.ts";
import { queryTc } from "./bpf/loader.ts";
import { NetnsFixture, ifindexIn, waitForLine } from "./bpf/netns.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { NodeAgent } from "./agent.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const PROBE = path.join(here, "bpf/probe.ts");

const tag = `m6a${process.pid % 100000}`;
const NODE = `${tag}-node`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IF = `${tag}p`;
const HOST_IF = `${tag}h`;
const POD_IP = "10.202.0.1";
const HOST_IP = "10.202.0.2";
const POD_ID = 1100;
const HOST_PEER_ID = 2100;
const CONTAINER = `${tag}-container`;

/** pino lines captured as objects, so tests can see what the agent and server logged. */
function capturingLogger(lines: Record<string, unknown>[]): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return pino({ level: "info" }, sink);
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 8000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP connect from the pod (bash's /dev/tcp, so no runtime start-up eats the timeout): true when the handshake completes. */
async function reaches(port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", NS_POD, "timeout", "1.5", "bash", "-c", `exec 3<>/dev/tcp/${HOST_IP}/${port}`]);
    return true;
  } catch {
    return false;
  }
}

async function verdicts(): Promise<{ 8080: boolean; 8081: boolean }> {
  const [a, b] = await Promise.all([reaches(8080), reaches(8081)]);
  return { 8080: a, 8081: b };
}

/** The pod may send TCP to the host peer on exactly `ports` (egress enforced). */
function stateAllowing(ports: number[], generation: number, extraIpcache: NodeState["ipcache"] = []): NodeState {
  const entries: PolicyEntry[] = ports.map((port) => ({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: port }));
  return {
    policies: [{ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries }],
    ipcache: [{ prefix: `${POD_IP}/32`, identity: POD_ID, node: "192.0.2.1" }, { prefix: `${HOST_IP}/32`, identity: HOST_PEER_ID }, ...extraIpcache],
    identities: [{ id: POD_ID, labels: ["k8s:app=client"] }, { id: HOST_PEER_ID, labels: ["k8s:app=server"] }],
    rules: ports.map((port) => ({ id: port, origin: { policyKind: "CiliumNetworkPolicy" as const, namespace: "default", name: `allow-${port}`, ruleIndex: 0, path: "spec.egress[0]" } })),
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/p", uid: "u1", generation }],
  };
}

describe("node agent", () => {
  const fx = new NetnsFixture();
  const agentLines: Record<string, unknown>[] = [];
  const serverLines: Record<string, unknown>[] = [];
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-"));
  const socketPath = path.join(socketDir, "agent.sock");
  let pki: TestPki | undefined;
  let server: DistributionServer | undefined;
  let port = 0;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let hostIfindex = 0;

  const tls = (): { ca: Buffer; cert: Buffer; key: Buffer } => ({ ca: pki!.read("ca.crt"), cert: pki!.read("operator.crt"), key: pki!.read("operator.key") });
  const report = () => server?.reports().find((r) => r.node === NODE);
  const applied = (kind: string, version?: number) => agentLines.find((l) => l.msg === "state applied" && l.kind === kind && (version === undefined || l.version === version));
  const addEndpoint = () =>
    callAgent(socketPath, { op: "endpoint-add", containerId: CONTAINER, namespace: "default", pod: "client", ifname: "eth0", netns: `/var/run/netns/${NS_POD}`, hostIfname: HOST_IF, hostIfindex, ips: [POD_IP] });

  before(async () => {
    pki = makePki([NODE]);
    server = new DistributionServer(tls(), capturingLogger(serverLines));
    port = await server.listen(0);
    fx.addNetns(NS_POD);
    fx.addNetns(NS_HOST);
    fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_HOST, ifname: HOST_IF, cidr: `${HOST_IP}/24` });
    hostIfindex = ifindexIn(NS_HOST, HOST_IF);
    dp = Datapath.load(`test-${tag}`);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, eventsForwarded: false });
    await waitForLine(fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080", "8081"]), /^listening/, 15000);
    agent = new NodeAgent({
      nodeName: NODE,
      operator: `127.0.0.1:${port}`,
      tls: { ca: pki.read("ca.crt"), cert: pki.read(`${NODE}.crt`), key: pki.read(`${NODE}.key`) },
      datapath: dp,
      cniSocket: socketPath,
      netns: NS_HOST,
      log: capturingLogger(agentLines),
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
    });
    await agent.start();
  });

  after(async () => {
    await agent?.stop();
    await server?.close();
    try {
      if (dp && hostIfindex) dp.detachEndpoint(hostIfindex, NS_HOST);
    } catch {
      // the netns may already be gone
    }
    fx.cleanup();
    dp?.close();
    dp?.unpin();
    pki?.remove();
    fs.rmSync(socketDir, { recursive: true, force: true });
  });

  it("a pod whose identity is not known yet is attached fail-closed: nothing connects", async () => {
    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    assert.deepEqual(await addEndpoint(), { ok: true });
    assert.ok(queryTc({ ifindex: hostIfindex, direction: "ingress", netns: NS_HOST }), "from-container attached");
    assert.ok(queryTc({ ifindex: hostIfindex, direction: "egress", netns: NS_HOST }), "to-container attached");
    assert.deepEqual(await verdicts(), { 8080: false, 8081: false });
    const added = agentLines.find((l) => l.msg === "endpoint added");
    assert.equal(added?.namespace, "default");
    assert.equal(added?.name, "client");
    assert.equal(added?.resolved, false);
  });

  it("a snapshot fills in the pod's identity and its policy: exactly TCP 8080 connects, and it is ACKed", async () => {
    server!.publish(NODE, stateAllowing([8080], 1));
    await until("snapshot acked", () => report()?.acked?.policyGenerations[0]?.generation === 1);
    assert.deepEqual(await verdicts(), { 8080: true, 8081: false });
  });

  it("a repeated endpoint-add is harmless and keeps enforcing", async () => {
    assert.deepEqual(await addEndpoint(), { ok: true });
    assert.equal(agent!.status().endpoints, 1);
    assert.deepEqual(await verdicts(), { 8080: true, 8081: false });
  });

  it("a delta switches the allowed port and is ACKed", async () => {
    server!.publish(NODE, stateAllowing([8081], 2));
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 2);
    assert.ok(applied("delta", report()?.ackedVersion), "the change travelled as a delta");
    assert.deepEqual(await verdicts(), { 8080: false, 8081: true });
  });

  it("a state that cannot be applied is NACKed with the error and the previous state stays in force", async () => {
    const before = agent!.status().version;
    server!.publish(NODE, stateAllowing([8080, 8081], 3, [{ prefix: "10.9.0.0/40", identity: 77 }]));
    const r = await until("nack", () => report()?.nack);
    assert.match(r.error, /ipcache\[\d\] \(10\.9\.0\.0\/40\): invalid prefix length/);
    assert.equal(report()?.ackedVersion, before);
    assert.equal(agent!.status().version, before);
    assert.deepEqual(await verdicts(), { 8080: false, 8081: true });
  });

  it("with the operator gone the agent keeps enforcing its last state", async () => {
    server!.publish(NODE, stateAllowing([8081], 4));
    await until("gen 4 acked", () => report()?.acked?.policyGenerations[0]?.generation === 4);
    const version = agent!.status().version;
    await server!.close();
    server = undefined;
    await until("agent sees the operator gone", () => !agent!.status().connected);
    assert.deepEqual(await verdicts(), { 8080: false, 8081: true });
    assert.equal(agent!.status().version, version);
    assert.equal(agent!.state().policyGenerations[0]?.generation, 4);
  });

  it("when the operator is back the agent reconnects with its last ACKed version and converges", async () => {
    const version = agent!.status().version!;
    serverLines.length = 0;
    server = new DistributionServer(tls(), capturingLogger(serverLines));
    await server.listen(port);
    server.publish(NODE, stateAllowing([8080], 5));
    await until("reconnected and acked", () => report()?.acked?.policyGenerations[0]?.generation === 5, 15000);
    const hello = serverLines.find((l) => l.msg === "agent connected");
    assert.equal(hello?.lastApplied, version, "the hello carried the last acknowledged version");
    assert.ok(report()!.ackedVersion! > version, "versions keep growing across the operator restart");
    assert.deepEqual(await verdicts(), { 8080: true, 8081: false });
  });

  it("a dropped stream resumes from the last ACKed version with a delta, not a snapshot", async () => {
    const version = agent!.status().version!;
    serverLines.length = 0;
    agent!.reconnect();
    await until("resumed", () => serverLines.find((l) => l.msg === "agent connected" && l.lastApplied === version && l.resume === true));
    server!.publish(NODE, stateAllowing([8080, 8081], 6));
    await until("delta after resume acked", () => report()?.acked?.policyGenerations[0]?.generation === 6);
    assert.ok(applied("delta", report()?.ackedVersion), "the change after resuming is a delta");
    assert.deepEqual(await verdicts(), { 8080: true, 8081: true });
  });

  it("endpoint-del detaches the programs and forgets the pod; repeating it is harmless", async () => {
    const del = { op: "endpoint-del" as const, containerId: CONTAINER, ifname: "eth0", hostIfname: HOST_IF };
    assert.deepEqual(await callAgent(socketPath, del), { ok: true });
    assert.equal(queryTc({ ifindex: hostIfindex, direction: "ingress", netns: NS_HOST }), undefined);
    assert.equal(queryTc({ ifindex: hostIfindex, direction: "egress", netns: NS_HOST }), undefined);
    assert.equal(agent!.status().endpoints, 0);
    assert.deepEqual(await callAgent(socketPath, del), { ok: true });
    assert.ok(agentLines.some((l) => l.msg === "endpoint deleted" && l.namespace === "default" && l.name === "client"));
  });
});
