// The agent's edge: a malformed message from the operator is NACKed with its reason and changes no map (real maps, a raw gRPC stream).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { DISTRIBUTION_SERVICE, type Downstream, type Upstream } from "../core/wire.ts";
import { Datapath, MAPS } from "./bpf/datapath.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { NodeAgent } from "./agent.ts";
import { AgentTestbed, capturingLogger, stateAllowing, until, teardownAgentTest } from "./testing/agent.ts";

type Stream = grpc.ServerDuplexStream<Upstream, unknown>;

/** An operator stand-in that sends whatever the test writes, valid or not, and records what the agent answers. */
class RawOperator {
  private readonly server = new grpc.Server();
  stream: Stream | undefined;
  readonly answers: Upstream[] = [];

  constructor(private readonly tls: { ca: Buffer; cert: Buffer; key: Buffer }) {
    this.server.addService(DISTRIBUTION_SERVICE as grpc.ServiceDefinition, {
      Stream: (stream: Stream) => {
        this.stream = stream;
        stream.on("data", (m: Upstream) => this.answers.push(m));
        stream.on("error", () => undefined);
      },
    });
  }

  listen(): Promise<number> {
    const creds = grpc.ServerCredentials.createSsl(this.tls.ca, [{ cert_chain: this.tls.cert, private_key: this.tls.key }], true);
    return new Promise((resolve, reject) => this.server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))));
  }

  send(m: unknown): void {
    this.stream!.write(m);
  }

  answerTo(nonce: string): Upstream | undefined {
    return this.answers.find((a) => (a.type === "ack" || a.type === "nack") && a.nonce === nonce);
  }

  close(): Promise<void> {
    this.stream?.end();
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

describe("agent edge validation", () => {
  const tb = new AgentTestbed(`m6e${process.pid % 100000}`);
  let op: RawOperator | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;

  /** Every entry of every map the agent writes, as hex, so "no map changed" is a plain comparison. */
  const maps = (): Record<string, string[]> => {
    const out: Record<string, string[]> = {};
    for (const name of [MAPS.policy, MAPS.policyLens, MAPS.ipcache, MAPS.ipcacheHosts, MAPS.endpoints]) {
      const m = dp!.object.map(name);
      out[name] = m.keys().map((k) => `${k.toString("hex")}=${m.lookup(k)?.toString("hex") ?? ""}`).sort();
    }
    return out;
  };

  before(async () => {
    await tb.setUp();
    op = new RawOperator(tb.serverTls());
    const port = await op.listen();
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
    agent = new NodeAgent({
      nodeName: tb.node,
      operator: `127.0.0.1:${port}`,
      tls: tb.agentTls(),
      datapath: dp,
      cniSocket: tb.socketPath,
      netns: tb.nsHost,
      log: capturingLogger([]),
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
    });
    await agent.start();
    await until("hello", () => op!.answers.some((a) => a.type === "hello"));
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    const good: Downstream = { type: "snapshot", version: 1, nonce: "good", state: stateAllowing([8080], 1) };
    op.send(good);
    await until("snapshot acked", () => op!.answerTo("good"));
    assert.equal(op.answerTo("good")?.type, "ack");
  });

  after(async () => {
    await op?.close();
    await teardownAgentTest(tb, { agent, dp });
  });

  const malformed: [string, unknown, RegExp][] = [
    ["an entry port out of range", { type: "snapshot", version: 2, nonce: "bad-port", state: { ...stateAllowing([70000], 2) } }, /^malformed message: state\.policies\[0\]\.entries\[0\]\.port: must be an integer from 0 to 65535$/],
    ["a delta without its ipcache removals", { type: "delta", version: 2, baseVersion: 1, nonce: "bad-delta", subjects: [], removedSubjects: [], ipcacheUpserts: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [], policyGenerationUpserts: [], policyGenerationRemovals: [] }, /^malformed message: ipcacheRemovals: must be a list$/],
    ["a delta writing another subject's entries", { type: "delta", version: 2, baseVersion: 1, nonce: "bad-subject", subjects: [{ subject: 1100, ingressEnforced: false, egressEnforced: true, added: [{ ...stateAllowing([9090], 2).policies[0]!.entries[0]!, subject: 4242 }], removed: [] }], removedSubjects: [], ipcacheUpserts: [], ipcacheRemovals: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [], policyGenerationUpserts: [], policyGenerationRemovals: [] }, /^malformed message: subjects\[0\]\.added\[0\]\.subject: must be the subject 1100, not 4242$/],
    // A TracingPolicy the operator sends goes through Tetragon's loader rules at the edge: a bad one refuses the whole state.
    [
      "a state whose TracingPolicy breaks Tetragon's rules (along with a new port)",
      {
        type: "snapshot", version: 2, nonce: "bad-tracing",
        state: {
          ...stateAllowing([8081], 2),
          tracingPolicies: [{ key: "TracingPolicy/p", uid: "u", generation: 1, policy: { apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "p" }, spec: { lsmhooks: [{ hook: "file_open", selectors: [{ matchActions: [{ action: "FollowFD" }] }] }] } } }],
        },
      },
      /^malformed message: state\.tracingPolicies\[0\]\.policy\.spec\.lsmhooks\[0\]\.selectors\[0\]\.matchActions\[0\]\.action: FollowFD was removed from Tetragon/,
    ],
    ["an unknown message type", { type: "patch", version: 2, nonce: "bad-type" }, /^malformed message: type: must be snapshot or delta, not "patch"$/],
  ];

  for (const [what, message, reason] of malformed) {
    it(`${what} is NACKed with the reason and no map changes`, async () => {
      const before = maps();
      const version = agent!.status().version;
      const nonce = (message as { nonce: string }).nonce;
      op!.send(message);
      const answer = await until("answer", () => op!.answerTo(nonce));
      assert.equal(answer.type, "nack");
      assert.match(answer.type === "nack" ? answer.error : "", reason);
      assert.deepEqual(maps(), before, "no map changed");
      assert.equal(agent!.status().version, version, "the agent still holds its last applied version");
      assert.match(agent!.status().lastError ?? "", reason);
      assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false }, "the last good state keeps enforcing");
    });
  }

  it("after a refusal a valid message applies as usual", async () => {
    op!.send({ type: "snapshot", version: 3, nonce: "good-again", state: stateAllowing([8081], 3) } satisfies Downstream);
    await until("ack", () => op!.answerTo("good-again"));
    assert.equal(op!.answerTo("good-again")?.type, "ack");
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
  });
});
