// The distribution server with simulated agents over real mutual TLS: snapshot, delta, ACK, NACK,
// resume after reconnect, a slow agent not blocking others, and certificate checks.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { type Downstream, type NodeState, type Upstream, STREAM_METHOD, decodeMessage, encodeMessage } from "../../core/wire.ts";
import { DistributionServer } from "./server.ts";
import { applyDelta, EMPTY_STATE, canonicalState } from "./nodestate.ts";

const log = pino({ level: "silent" });
let dir = "";
let server: DistributionServer | undefined;
let port = 0;

function openssl(args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
}

function issue(name: string, ext: string): void {
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`]);
  openssl(["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-out", `${name}.csr`]);
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.crt`]);
}

const read = (f: string): Buffer => fs.readFileSync(path.join(dir, f));

const Client = grpc.makeGenericClientConstructor(
  {
    Stream: {
      path: STREAM_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: encodeMessage,
      requestDeserialize: decodeMessage,
      responseSerialize: encodeMessage,
      responseDeserialize: decodeMessage,
    },
  },
  "Distribution",
);

/** A simulated agent: connects with its certificate, records what it receives and holds the applied state. */
class Agent {
  readonly received: Downstream[] = [];
  state: NodeState = EMPTY_STATE;
  version: number | undefined;
  status: grpc.StatusObject | undefined;
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<Upstream, Downstream>;

  constructor(cert: string, readonly node: string, opts: { lastAppliedVersion?: number; autoAck?: boolean; state?: NodeState } = {}) {
    if (opts.state) this.state = opts.state;
    this.version = opts.lastAppliedVersion;
    this.client = new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(read("ca.crt"), read(`${cert}.key`), read(`${cert}.crt`)));
    this.call = (this.client as unknown as { Stream: () => grpc.ClientDuplexStream<Upstream, Downstream> }).Stream();
    this.call.on("data", (m: Downstream) => {
      this.received.push(m);
      if (opts.autoAck !== false) this.ack(m);
    });
    this.call.on("status", (s: grpc.StatusObject) => (this.status = s));
    this.call.on("error", () => undefined);
    this.call.write({ type: "hello", node, ...(opts.lastAppliedVersion !== undefined ? { lastAppliedVersion: opts.lastAppliedVersion } : {}) });
  }

  apply(m: Downstream): void {
    if (m.type === "snapshot") this.state = canonicalState(m.state);
    else {
      assert.equal(m.baseVersion, this.version, "a delta applies on the version the agent holds");
      this.state = applyDelta(this.state, m);
    }
    this.version = m.version;
  }

  ack(m: Downstream): void {
    this.apply(m);
    this.call.write({ type: "ack", version: m.version, nonce: m.nonce });
  }

  nack(m: Downstream, error: string): void {
    this.call.write({ type: "nack", version: m.version, nonce: m.nonce, error });
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

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
  const agents: Agent[] = [];
  const agent = (...args: ConstructorParameters<typeof Agent>): Agent => {
    const a = new Agent(...args);
    agents.push(a);
    return a;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "distribution-test-"));
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"]);
    openssl(["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test-ca", "-days", "1", "-out", "ca.crt"]);
    issue("operator", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    for (const n of ["node-1", "node-2", "node-3"]) issue(n, "extendedKeyUsage=clientAuth\n");
    server = new DistributionServer({ ca: read("ca.crt"), cert: read("operator.crt"), key: read("operator.key") }, log);
    port = await server.listen(0);
  });

  after(async () => {
    for (const a of agents) a.close();
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
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

  it("refuses a client without a certificate at the TLS handshake", async () => {
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(read("ca.crt")));
    const call = (client as unknown as { Stream: () => grpc.ClientDuplexStream<Upstream, Downstream> }).Stream();
    const got: Downstream[] = [];
    call.on("data", (m: Downstream) => got.push(m));
    call.on("error", () => undefined);
    const st = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write({ type: "hello", node: "node-1" });
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
