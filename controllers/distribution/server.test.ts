// The distribution server with simulated agents over real mutual TLS: snapshot, delta, ACK, NACK,
// resume after reconnect, a slow agent not blocking others, and certificate checks.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { Downstream, NodeState, Upstream } from "../../core/wire.ts";
import { AgentClient, DistributionClient } from "../testing/agent.ts";
import { type TestPki, makePki } from "../../kube/testing/pki.ts";
import { DistributionServer, type MovedPolicies, movedPolicies } from "./server.ts";
import { canonicalState } from "../../core/nodestate.ts";
import { sslChannelOptions, sslCredentials } from "../../kube/grpc-tls.ts";

const log = pino({ level: "silent" });
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let port = 0;
const read = (f: string): Buffer => (pki as TestPki).read(f);

async function until<T>(what: string, f: () => T | undefined | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function stateWith(ids: number[], gen = 1): NodeState {
  return {
    policies: ids.map((id) => ({
      subject: id,
      ingressEnforced: true,
      egressEnforced: false,
      entries: [{ subject: id, direction: "ingress", peer: 300, proto: 6, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 }],
    })),
    ipcache: ids.map((id, i) => ({ prefix: `10.0.0.${i + 1}/32`, identity: id, node: "192.0.2.1" })),
    identities: ids.map((id) => ({ id, labels: [`k8s:app=a${id}`] })),
    rules: [{ id: 1, origin: { policyKind: "CiliumNetworkPolicy", namespace: "ns", name: "p", ruleIndex: 0, path: "spec.ingress[0]" } }],
    policyGenerations: [{ key: "CiliumNetworkPolicy/ns/p", uid: "u1", generation: gen }],
  };
}

describe("distribution server", () => {
  const agents: AgentClient[] = [];
  const agent = (cert: string, node: string, opts: ConstructorParameters<typeof AgentClient>[3] = {}): AgentClient => {
    const a = new AgentClient(`127.0.0.1:${port}`, { ca: read("ca.crt"), cert: read(`${cert}.crt`), key: read(`${cert}.key`) }, node, opts);
    agents.push(a);
    return a;
  };

  before(async () => {
    pki = await makePki(["node-1", "node-2", "node-3"]);
    server = new DistributionServer({ ca: read("ca.crt"), cert: read("operator.crt"), key: read("operator.key") }, log);
    port = await server.listen(0);
  });

  after(async () => {
    for (const a of agents) a.close();
    await server?.close();
    pki?.remove();
  });

  it("sends a snapshot, then deltas after each ACK, and the agent's state follows", async () => {
    const s = server as DistributionServer;
    s.publish("node-1", stateWith([256]));
    const a = agent("node-1", "node-1");
    await until("snapshot", () => a.received.length === 1);
    assert.equal(a.received[0]?.type, "snapshot");
    s.publish("node-1", stateWith([256, 257], 2));
    await until("delta", () => a.received.length === 2);
    const d = a.received[1];
    assert.equal(d?.type, "delta");
    assert.ok(d && d.type === "delta" && d.subjects.map((x) => x.subject).join() === "257", "only the new subject travels");
    assert.deepEqual(a.state, canonicalState(stateWith([256, 257], 2)));
    await until("ack recorded", () => s.reports().find((r) => r.node === "node-1")?.ackedVersion === d?.version);
    assert.equal(s.reports().find((r) => r.node === "node-1")?.acked?.policyGenerations[0]?.generation, 2);
    a.close();
  });

  it("held until releaseStates(): an agent that says hello before the operator's first states gets nothing, then what was published meanwhile, never an empty state", async () => {
    const held = new DistributionServer({ ca: read("ca.crt"), cert: read("operator.crt"), key: read("operator.key") }, log);
    held.holdStates();
    const heldPort = await held.listen(0);
    const a = new AgentClient(`127.0.0.1:${heldPort}`, { ca: read("ca.crt"), cert: read("node-3.crt"), key: read("node-3.key") }, "node-3", { lastAppliedVersion: 7, state: stateWith([256]) });
    try {
      await until("the agent's hello", () => held.reports().find((r) => r.node === "node-3")?.connected);
      held.publish("node-3", stateWith([256, 257]));
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(a.received, [], "nothing while held (without the hold: a snapshot of the empty state, the node not published yet)");
      held.releaseStates();
      await until("the published state", () => a.received.length === 1);
      assert.equal((a.received[0] as Downstream | undefined)?.type, "snapshot");
      assert.deepEqual(a.state, canonicalState(stateWith([256, 257])));
    } finally {
      a.close();
      await held.close();
    }
  });

  it("a report names the policies whose acknowledged generation moved (every one on a first ack, none on an ipcache-only change)", async () => {
    const s = server as DistributionServer;
    const seen: MovedPolicies[] = [];
    s.onReport((node, moved) => node === "node-3" && seen.push(moved));
    const first = stateWith([256], 4);
    s.publish("node-3", first);
    const a = agent("node-3", "node-3");
    await until("first ack", () => seen.length === 1);
    s.publish("node-3", { ...first, ipcache: [...first.ipcache, { prefix: "10.9.9.9/32", identity: 256 }] });
    await until("ipcache-only ack", () => seen.length === 2);
    const other = { key: "CiliumNetworkPolicy/ns/q", uid: "u2", generation: 1 };
    s.publish("node-3", { ...stateWith([256], 5), policyGenerations: [...stateWith([256], 5).policyGenerations, other] });
    await until("generation ack", () => seen.length === 3);
    // q unchanged, p removed: only p.
    s.publish("node-3", { ...stateWith([256], 5), policyGenerations: [other] });
    await until("removal ack", () => seen.length === 4);
    assert.deepEqual(
      seen.map((m) => (m === "all" ? m : [...m].sort())),
      ["all", [], ["CiliumNetworkPolicy/ns/p", "CiliumNetworkPolicy/ns/q"], ["CiliumNetworkPolicy/ns/p"]],
    );
    a.close();
  });

  it("movedPolicies: a changed uid or generation, an added or removed key; the same list moves none", () => {
    const p = { key: "CiliumNetworkPolicy/ns/p", uid: "u1", generation: 1 };
    const q = { key: "CiliumNetworkPolicy/ns/q", uid: "u2", generation: 3 };
    const list = [p, q];
    assert.deepEqual([...movedPolicies(list, list)], []);
    assert.deepEqual([...movedPolicies(list, [p, { ...q }])], [], "equal entries in another list");
    assert.deepEqual([...movedPolicies(list, [p, { ...q, generation: 4 }])], [q.key]);
    assert.deepEqual([...movedPolicies(list, [{ ...p, uid: "u9" }, q])], [p.key], "recreated under the same name");
    assert.deepEqual([...movedPolicies([p], list)], [q.key]);
    assert.deepEqual([...movedPolicies(list, [q])], [p.key]);
  });

  it("answers() is one list until an agent answers, then a new one with that answer", async () => {
    const s = server as DistributionServer;
    const before = s.answers();
    assert.equal(s.answers(), before, "asked again with nothing new: the same list");
    s.publish("node-2", stateWith([300], 7));
    const a = agent("node-2", "node-2");
    await until("acked", () => s.answers().find((r) => r.node === "node-2")?.acked?.policyGenerations[0]?.generation === 7);
    const after = s.answers();
    assert.notEqual(after, before);
    assert.equal(s.answers(), after);
    s.publish("node-2", stateWith([300], 8));
    await until("next ack", () => s.answers().find((r) => r.node === "node-2")?.acked?.policyGenerations[0]?.generation === 8);
    a.close();
  });

  it("a NACK keeps the last good state, is reported, and the next change comes as a snapshot", async () => {
    const s = server as DistributionServer;
    s.publish("node-2", stateWith([300]));
    const a = agent("node-2", "node-2", { autoAck: false });
    await until("snapshot", () => a.received.length === 1);
    a.ack(a.received[0] as Downstream);
    s.publish("node-2", stateWith([300, 301], 2));
    await until("delta", () => a.received.length === 2);
    a.nack(a.received[1] as Downstream, "policy map full for identity 301");
    const report = await until("nack", () => s.reports().find((r) => r.node === "node-2" && r.nack));
    assert.equal(report.nack?.error, "policy map full for identity 301");
    assert.equal(report.ackedVersion, a.received[0]?.version, "acknowledged state unchanged");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(a.received.length, 2, "the refused state is not resent");
    s.publish("node-2", stateWith([300], 3));
    await until("snapshot after nack", () => a.received.length === 3);
    assert.equal(a.received[2]?.type, "snapshot");
    a.ack(a.received[2] as Downstream);
    await until("nack cleared", () => s.reports().find((r) => r.node === "node-2" && !r.nack && r.ackedVersion === a.received[2]?.version));
    a.close();
  });

  it("a reconnecting agent resumes from its last acknowledged version with a delta; an unknown version gets a snapshot", async () => {
    const s = server as DistributionServer;
    s.publish("node-3", stateWith([400]));
    const first = agent("node-3", "node-3");
    await until("snapshot", () => first.received.length === 1);
    await until("ack", () => s.reports().find((r) => r.node === "node-3")?.ackedVersion === first.version);
    first.close();
    await until("disconnected", () => s.reports().find((r) => r.node === "node-3")?.connected === false);
    s.publish("node-3", stateWith([400, 401], 2));
    const again = agent("node-3", "node-3", { lastAppliedVersion: first.version, state: first.state });
    await until("resume", () => again.received.length === 1);
    assert.equal(again.received[0]?.type, "delta");
    assert.deepEqual(again.state, canonicalState(stateWith([400, 401], 2)));
    again.close();
    const stranger = agent("node-3", "node-3", { lastAppliedVersion: 9999 });
    await until("snapshot", () => stranger.received.length === 1);
    assert.equal(stranger.received[0]?.type, "snapshot");
    assert.ok((stranger.received[0]?.version ?? 0) > 9999, "versions only grow");
    stranger.close();
  });

  it("a slow agent holds one message and never delays the others", async () => {
    const s = server as DistributionServer;
    const slow = agent("node-1", "node-1", { autoAck: false });
    const fast = agent("node-2", "node-2");
    await until("both connected", () => slow.received.length === 1 && fast.received.length >= 1);
    const fastBefore = fast.received.length;
    for (let g = 10; g < 30; g++) {
      s.publish("node-1", stateWith([256, g + 1000], g));
      s.publish("node-2", stateWith([300, g + 1000], g));
      await until(`fast agent got generation ${g}`, () => fast.state.policyGenerations[0]?.generation === g);
    }
    assert.ok(fast.received.length - fastBefore >= 20);
    assert.equal(slow.received.length, 1, "nothing more until the slow agent acknowledges");
    // When it finally acknowledges, it gets one delta straight to the latest state.
    slow.ack(slow.received[0] as Downstream);
    await until("slow catches up", () => slow.received.length === 2);
    slow.apply(slow.received[1] as Downstream);
    assert.deepEqual(slow.state, canonicalState(stateWith([256, 1029], 29)));
    slow.close();
    fast.close();
  });

  it("an agent that looks up the cluster class but not the every-pod class's entries turns only everyPodClassEverywhere off, until its node's next agent says it", async () => {
    let moved = 0;
    server!.onClusterClass(() => moved++);
    await until("every agent so far looks up both classes", () => server!.clusterClassEverywhere() && server!.everyPodClassEverywhere());
    const older = agent("node-3", "node-3", { everyPodClass: false });
    await until("an agent without the every-pod class known", () => !server!.everyPodClassEverywhere());
    assert.equal(server!.clusterClassEverywhere(), true, "the cluster class stays");
    assert.ok(moved >= 1, "the listener was told");
    older.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server!.everyPodClassEverywhere(), false, "a node mid-upgrade keeps its older agent's word");
    const upgraded = agent("node-3", "node-3", { everyPodClass: true });
    await until("the upgraded agent's hello", () => server!.everyPodClassEverywhere());
    upgraded.close();
  });

  it("an agent that looks up the other classes but not the world class's entries turns only worldClassEverywhere off, until its node's next agent says it", async () => {
    let moved = 0;
    server!.onClusterClass(() => moved++);
    await until("every agent so far looks up every class", () => server!.clusterClassEverywhere() && server!.everyPodClassEverywhere() && server!.worldClassEverywhere());
    const older = agent("node-3", "node-3", { worldClass: false });
    await until("an agent without the world class known", () => !server!.worldClassEverywhere());
    assert.equal(server!.clusterClassEverywhere() && server!.everyPodClassEverywhere(), true, "the other classes stay");
    assert.ok(moved >= 1, "the listener was told");
    older.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server!.worldClassEverywhere(), false, "a node mid-upgrade keeps its older agent's word");
    const upgraded = agent("node-3", "node-3", { worldClass: true });
    await until("the upgraded agent's hello", () => server!.worldClassEverywhere());
    upgraded.close();
  });

  it("an agent that looks up the world class but not the world-ipv4/-ipv6 classes' entries turns only worldFamilyClassEverywhere off, until its node's next agent says it", async () => {
    let moved = 0;
    server!.onClusterClass(() => moved++);
    await until("every agent so far looks up every class", () => server!.worldClassEverywhere() && server!.worldFamilyClassEverywhere());
    const older = agent("node-3", "node-3", { worldFamilyClass: false });
    await until("an agent without the family classes known", () => !server!.worldFamilyClassEverywhere());
    assert.equal(server!.clusterClassEverywhere() && server!.everyPodClassEverywhere() && server!.worldClassEverywhere(), true, "the other classes stay");
    assert.ok(moved >= 1, "the listener was told");
    older.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server!.worldFamilyClassEverywhere(), false, "a node mid-upgrade keeps its older agent's word");
    const upgraded = agent("node-3", "node-3", { worldFamilyClass: true });
    await until("the upgraded agent's hello", () => server!.worldFamilyClassEverywhere());
    upgraded.close();
  });

  it("an agent whose hello does not say clusterClass (one from before class entries) turns clusterClassEverywhere off, also once it disconnected, until its node's next agent says it or the node is forgotten", async () => {
    let moved = 0;
    server!.onClusterClass(() => moved++);
    await until("every agent so far looks up class entries", () => server!.clusterClassEverywhere());
    const old = agent("node-3", "node-3", { clusterClass: false });
    await until("an old agent known", () => !server!.clusterClassEverywhere());
    assert.ok(moved >= 1, "the listener was told");
    old.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server!.clusterClassEverywhere(), false, "a node mid-upgrade keeps its old agent's word");
    const upgraded = agent("node-3", "node-3", { clusterClass: true });
    await until("the upgraded agent's hello", () => server!.clusterClassEverywhere());
    upgraded.close();
    agent("node-3", "node-3", { clusterClass: false });
    await until("an old agent again", () => !server!.clusterClassEverywhere());
    const before = moved;
    server!.forget("node-3");
    assert.equal(server!.clusterClassEverywhere(), true, "a forgotten node's agent counts no more");
    assert.ok(moved > before, "the listener was told");
  });

  it("refuses a client without a certificate at the TLS handshake", async () => {
    const client = new DistributionClient(`127.0.0.1:${port}`, sslCredentials(`127.0.0.1:${port}`, read("ca.crt")), sslChannelOptions(`127.0.0.1:${port}`));
    const call = (client as unknown as { Stream: () => grpc.ClientDuplexStream<Upstream, Downstream> }).Stream();
    const got: Downstream[] = [];
    call.on("data", (m: Downstream) => got.push(m));
    call.on("error", () => undefined);
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write({ type: "hello", node: "node-1" });
    const st = await status;
    assert.equal(st.code, grpc.status.UNAVAILABLE);
    assert.equal(got.length, 0);
    client.close();
  });

  it("refuses an agent whose hello names another node than its certificate", async () => {
    const a = agent("node-1", "node-2");
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.PERMISSION_DENIED);
    assert.match(st.details, /certificate is for node-1, not node-2/);
  });
});
