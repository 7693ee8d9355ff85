// The agent with a small policy map: a state whose policy does not fit fails that pod closed (real TCP), is logged with the pod's name and counted in /metrics.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { Datapath } from "./datapath.ts";
import { DROP_REASON_CODES } from "./layout.ts";
import { callAgent } from "../cni/agent-socket.ts";
import { NodeAgent } from "../agent.ts";
import { AgentMetrics } from "../metrics.ts";
import { AgentTestbed, capturingLogger, stateAllowing, teardownAgentTest, until } from "../testing/agent.ts";

const POLICY_MAP_ENTRIES = 4;

describe("agent: a policy that does not fit the policy map", () => {
  const tb = new AgentTestbed(`m5o${process.pid % 100000}`);
  const agentLines: Record<string, unknown>[] = [];
  let server: DistributionServer | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let metrics: AgentMetrics | undefined;
  let metricsPort = 0;

  const report = () => server?.reports().find((r) => r.node === tb.node);
  const acked = (generation: number) => until(`generation ${generation} acked`, () => report()?.acked?.policyGenerations[0]?.generation === generation);
  const metric = async (series: string): Promise<number | undefined> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  before(async () => {
    await tb.setUp();
    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    const port = await server.listen(0);
    dp = Datapath.load(tb.scope, { policyMapEntries: POLICY_MAP_ENTRIES });
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
    const log = capturingLogger(agentLines);
    agent = new NodeAgent({
      nodeName: tb.node,
      operator: `127.0.0.1:${port}`,
      tls: tb.agentTls(),
      datapath: dp,
      cniSocket: tb.socketPath,
      netns: tb.nsHost,
      log,
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
    });
    await agent.start();
    metrics = new AgentMetrics({ agent, datapath: dp, log });
    metricsPort = await metrics.start("127.0.0.1:0");
  });

  after(async () => {
    await metrics?.stop();
    await teardownAgentTest(tb, { agent, server, dp });
  });

  it("a policy that fits is enforced as usual and nothing is failing", async () => {
    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    server!.publish(tb.node, stateAllowing([8080], 1));
    await acked(1);
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
    assert.equal(await metric("membrane_endpoint_policy_failed_endpoints"), 0);
    assert.equal(await metric("membrane_endpoint_policy_failures_total"), 0);
  });

  it("a policy of 6 entries in a 4-entry map: the pod drops everything (even its allowed port), the node keeps going, and it is logged and counted", async () => {
    const before = dp!.dropCount(DROP_REASON_CODES.DROP_POLICY_OVERFLOW as 12);
    server!.publish(tb.node, stateAllowing([8080, 8081, 9001, 9002, 9003, 9004], 2));
    await acked(2);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: false });
    assert.ok(dp!.dropCount(DROP_REASON_CODES.DROP_POLICY_OVERFLOW as 12) > before, "the drops are counted as POLICY_OVERFLOW");
    assert.equal(await metric("membrane_endpoint_policy_failed_endpoints"), 1);
    assert.equal(await metric("membrane_endpoint_policy_failures_total"), 1);
    const line = agentLines.find((l) => typeof l.msg === "string" && l.msg.startsWith("endpoint fails closed"));
    assert.equal(line?.namespace, "default");
    assert.equal(line?.name, "client");
    assert.match(String(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()), /membrane_agent_drops_total\{reason="policy did not fit the policy map \(endpoint fails closed\)"\} [1-9]/);
  });

  it("a later policy that fits lifts the failure: exactly its port connects again", async () => {
    server!.publish(tb.node, stateAllowing([8081], 3));
    await acked(3);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
    assert.equal(await metric("membrane_endpoint_policy_failed_endpoints"), 0);
    assert.equal(await metric("membrane_endpoint_policy_failures_total"), 1, "the counter keeps the past failure");
    assert.ok(agentLines.some((l) => l.msg === "endpoint policy installed; no longer failing closed" && l.name === "client"));
  });
});
