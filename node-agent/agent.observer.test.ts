// The agent's observer and metrics end to end: real distribution server, real maps and TCP between two test netns, read through `bin/membrane observe` and /metrics.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { Datapath } from "./bpf/datapath.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { NodeAgent } from "./agent.ts";
import { AgentTestbed, HOST_IP, HOST_PEER_ID, POD_ID, POD_IP, capturingLogger, stateAllowing, until, teardownAgentTest } from "./testing/agent.ts";
import { AgentMetrics } from "./metrics.ts";
import { parseAgentFlags } from "./flags.ts";
import type { Flow } from "../flowapi/flow.ts";

const execFileP = promisify(execFile);
const MEMBRANE = path.join(path.dirname(fileURLToPath(import.meta.url)), "../bin/membrane");
const DENY_RULE = 77;

/** Allows TCP 8080 and explicitly denies TCP 8081 with a CiliumNetworkPolicy egressDeny rule. */
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

describe("agent observer and metrics", () => {
  const tb = new AgentTestbed(`m8o${process.pid % 100000}`);
  const observerSocket = path.join(tb.dir, "hubble.sock");
  const exportFile = path.join(tb.dir, "flows.jsonl");
  let server: DistributionServer | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let metrics: AgentMetrics | undefined;
  let metricsPort = 0;
  let follower: ChildProcess | undefined;
  const followed: Flow[] = [];

  const report = () => server?.reports().find((r) => r.node === tb.node);
  const get = async (p: string): Promise<{ status: number; body: string }> => {
    const r = await fetch(`http://127.0.0.1:${metricsPort}${p}`);
    return { status: r.status, body: await r.text() };
  };
  /** The value of one sample in the Prometheus text, or undefined when absent. */
  const sample = (text: string, series: string): number | undefined => {
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  /** A TCP connect from the pod to the host peer, not awaited by the caller's clock. */
  const connect = (port: number) => tb.reaches(port);

  before(async () => {
    await tb.setUp();
    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    const port = await server.listen(0);
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
    const log = capturingLogger([]);
    agent = new NodeAgent({
      nodeName: tb.node,
      operator: `127.0.0.1:${port}`,
      tls: tb.agentTls(),
      datapath: dp,
      cniSocket: tb.socketPath,
      netns: tb.nsHost,
      log,
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
      observer: { hubble: { socketPath: observerSocket }, export: { path: exportFile, maxBytes: 1 << 20, keep: 2 } },
    });
    await agent.start();
    metrics = new AgentMetrics({ agent, datapath: dp, log });
    metricsPort = await metrics.start("127.0.0.1:0");
  });

  after(async () => {
    if (follower?.exitCode === null) follower.kill("SIGTERM");
    await metrics?.stop();
    await teardownAgentTest(tb, { agent, server, dp });
  });

  it("/readyz answers 200 once the stream is up and a state applied; /healthz 200", async () => {
    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    server!.publish(tb.node, stateAllowing([8080], 1));
    await until("snapshot acked", () => report()?.acked?.policyGenerations[0]?.generation === 1);
    assert.equal((await get("/healthz")).status, 200);
    assert.equal((await get("/readyz")).status, 200);
  });

  it("a connection denied by default deny appears in `membrane observe --verdict DROPPED -f` within a second, with pods, identities, port and 'default deny'", async () => {
    follower = spawn(MEMBRANE, ["observe", "--server", observerSocket, "--verdict", "DROPPED", "-f", "-o", "json"], { stdio: ["ignore", "pipe", "inherit"] });
    let partial = "";
    follower.stdout!.on("data", (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const l of lines) if (l.trim()) followed.push(JSON.parse(l) as Flow);
    });
    // A first denied connection proves the follower is attached (it arrives by replay or by stream).
    assert.equal(await connect(8081), false);
    await until("the follower prints the first drop", () => followed.length > 0, 15000);
    const seenPorts = new Set(followed.map((f) => f.source.port));

    const t0 = Date.now();
    const attempt = connect(8081);
    const flow = await until("a drop of the new connection", () => followed.find((f) => !seenPorts.has(f.source.port)), 3000);
    const elapsed = Date.now() - t0;
    console.log(`# drop printed by membrane observe ${elapsed} ms after the connect started`);
    assert.equal(await attempt, false);
    assert.ok(elapsed < 1000, `the drop was printed after ${elapsed} ms`);

    assert.equal(flow.verdict, "DROPPED");
    assert.equal(flow.type, "drop");
    assert.equal(flow.direction, "egress");
    assert.equal(flow.protocol, "TCP");
    assert.equal(flow.node, tb.node);
    assert.deepEqual({ ...flow.source, port: 0 }, { identity: POD_ID, labels: ["k8s:app=client"], namespace: "default", pod: "client", ip: POD_IP, port: 0 });
    assert.deepEqual(flow.destination, { identity: HOST_PEER_ID, labels: ["k8s:app=server"], ip: HOST_IP, port: 8081 });
    assert.equal(flow.dropReason, "policy denied (default deny)");
    assert.deepEqual(flow.decidedBy, { kind: "default-deny" });
    assert.ok(Math.abs(Date.parse(flow.time) - t0) < 5000, `flow time ${flow.time} is the packet's time`);
  });

  it("a connection denied by a deny rule names the policy and rule in `membrane observe` (table and json)", async () => {
    server!.publish(tb.node, stateDenying8081(2));
    await until("deny state acked", () => report()?.acked?.policyGenerations[0]?.generation === 2);
    const since = new Date().toISOString();
    assert.equal(await connect(8081), false);
    assert.equal(await connect(8080), true, "the allowed port still connects");
    const json = await execFileP(MEMBRANE, ["observe", "--server", observerSocket, "--verdict", "DROPPED", "--port", "8081", "--last", "1", "-o", "json"]);
    const flow = JSON.parse(json.stdout.trim()) as Flow;
    assert.ok(flow.time >= since, "the latest drop is the new connection's");
    assert.equal(flow.dropReason, "policy denied");
    assert.deepEqual(flow.decidedBy, { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deny-8081", rule: "spec.egressDeny[0]" });
    assert.equal(flow.source.pod, "client");
    const table = await execFileP(MEMBRANE, ["observe", "--server", observerSocket, "--verdict", "DROPPED", "--last", "1"]);
    assert.match(table.stdout, /default\/client:\d+ \(1100\)\s+10\.202\.0\.2:8081 \(2100\)\s+TCP\s+DROPPED\s+drop\s+policy denied\s+CiliumNetworkPolicy default\/deny-8081 spec\.egressDeny\[0\]/);
  });

  it("/metrics counts every drop by reason (kernel per-CPU counters) and by namespace, plus flows, map entries, endpoints, version and stream state", async () => {
    const { body } = await get("/metrics");
    const kernelDefault = sample(body, 'membrane_agent_drops_total{reason="policy denied (default deny)"}');
    const kernelRule = sample(body, 'membrane_agent_drops_total{reason="policy denied"}');
    const seen = agent!.observer!.buffer.counters().dropsByReason;
    assert.ok(kernelDefault !== undefined && kernelDefault >= 2, `default-deny drops counted: ${kernelDefault}`);
    assert.ok(kernelRule !== undefined && kernelRule >= 1, `rule drops counted: ${kernelRule}`);
    // The kernel counts every drop; the observer can only see as many events as the ring delivered.
    assert.ok(kernelDefault >= (seen["policy denied (default deny)"] ?? 0));
    assert.equal(sample(body, 'membrane_agent_dropped_flows_total{reason="policy denied",namespace="default"}'), seen["policy denied"]);
    assert.equal(sample(body, 'membrane_agent_flows_total{verdict="DROPPED"}'), agent!.observer!.buffer.counters().dropped);
    assert.equal(sample(body, "membrane_agent_policy_map_entries"), 2);
    assert.equal(sample(body, "membrane_agent_endpoints"), 1);
    assert.equal(sample(body, "membrane_agent_applied_version"), agent!.status().version);
    assert.equal(sample(body, "membrane_agent_stream_connected"), 1);
  });

  it("drops are exported as JSON lines", async () => {
    const lines = await until(
      "export flushed",
      () => {
        const ls = fs.existsSync(exportFile) ? fs.readFileSync(exportFile, "utf8").split("\n").filter(Boolean) : [];
        return ls.some((l) => (JSON.parse(l) as Flow).decidedBy?.kind === "rule") && ls;
      },
      3000,
    );
    assert.ok(lines.every((l) => (JSON.parse(l) as Flow).node === tb.node));
  });

  it("Hubble's dynamic metrics file: each family counts only the flows its includeFilters/excludeFilters select, with its context options; a changed file re-registers the families", async () => {
    const file = path.join(tb.dir, "hubble-metrics.yaml");
    fs.writeFileSync(file, [
      "metrics:",
      "- name: flow",
      "  contextOptions:",
      "  - {name: destinationContext, values: [pod, ip]}",
      "  includeFilters:",
      '  - destination_port: ["8081"]',
      "- name: drop",
      "  excludeFilters:",
      '  - destination_port: ["8081"]',
    ].join("\n"));
    // Monitor aggregation "maximum": the datapath reports drops only (the allowed connection to 8080 is no flow).
    const dynamic = new AgentMetrics({ agent: agent!, datapath: dp!, log: capturingLogger([]), hubbleMetricsFile: { path: file, reloadMs: 100 } });
    const started = Date.now();
    const port = await dynamic.start("127.0.0.1:0");
    const eventually = async <T>(what: string, f: () => Promise<T | undefined>): Promise<T> => {
      for (const end = Date.now() + 10_000; ; await new Promise((r) => setTimeout(r, 100))) {
        const v = await f();
        if (v !== undefined) return v;
        if (Date.now() > end) assert.fail(`timed out waiting for ${what}: ${(await scrape()).join("\n")}`);
      }
    };
    const scrape = async (): Promise<string[]> => (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split("\n").filter((l) => l.startsWith("hubble_"));
    try {
      assert.equal(await connect(8080), true);
      assert.equal(await connect(8081), false);
      assert.equal(await connect(8082), false, "default deny");
      const lines = await eventually("the three connections counted", async () => {
        const ls = await scrape();
        return ls.some((l) => l.startsWith("hubble_drop_total")) && ls.some((l) => l.startsWith("hubble_flows_processed_total")) ? ls : undefined;
      });
      const flows = lines.filter((l) => l.startsWith("hubble_flows_processed_total{"));
      assert.ok(flows.length > 0 && flows.every((l) => l.includes(`destination="${HOST_IP}"`)), `labelled by the destination's address (no pod): ${flows.join("\n")}`);
      // Every drop is kept in the ring: the counts must be exactly the flows each family's filters select.
      const total = (ls: string[], metric: string): number => ls.filter((l) => l.startsWith(`${metric}{`)).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
      const counted = async () => {
        const ls = await scrape();
        const seen = agent!.observer!.buffer.query((f) => Date.parse(f.time) >= started);
        return { flow: [total(ls, "hubble_flows_processed_total"), seen.filter((f) => f.destination.port === 8081).length], drop: [total(ls, "hubble_drop_total"), seen.filter((f) => f.verdict === "DROPPED" && f.destination.port !== 8081).length] };
      };
      await eventually("the counts settled", async () => {
        const c = await counted();
        return c.flow[0] === c.flow[1] && c.drop[0] === c.drop[1] ? true : undefined;
      });
      const c = await counted();
      assert.equal(c.flow[0], c.flow[1], "flow: exactly the flows to 8081");
      assert.equal(c.drop[0], c.drop[1], "drop: every drop but those to 8081");
      assert.ok(c.flow[0]! > 0 && c.drop[0]! > 0);
      const drops = lines.filter((l) => l.startsWith("hubble_drop_total{"));
      assert.ok(drops.some((l) => l.includes('reason="POLICY_DENIED"')), `the default-deny drop on 8082: ${drops.join("\n")}`);
      assert.ok(!drops.some((l) => l.includes('reason="POLICY_DENY"')), "the deny rule's drops on 8081 are excluded");
      assert.ok(!lines.some((l) => l.startsWith("hubble_policy_verdicts_total")), "a family the file does not name is not counted");
      // A new file: the old families go, the new one counts from zero.
      fs.writeFileSync(file, "metrics:\n- name: policy\n");
      await eventually("policy family registered", async () => ((await scrape()).some((l) => l.startsWith("hubble_flows_processed_total")) ? undefined : true));
      // Monitor aggregation "maximum" here: the datapath reports drops only, so the deny rule's verdict is what is counted.
      assert.equal(await connect(8081), false);
      const after = await eventually("the deny rule's verdict counted", async () => {
        const ls = await scrape();
        return ls.some((l) => l.startsWith('hubble_policy_verdicts_total{direction="egress",') && l.includes('action="dropped"')) ? ls : undefined;
      });
      assert.ok(!after.some((l) => l.startsWith("hubble_flows_processed_total") || l.startsWith("hubble_drop_total")), after.join("\n"));
    } finally {
      await dynamic.stop();
    }
  });

  it("with the operator gone /readyz answers 503 and the stream metric is 0; enforcement and counting go on", async () => {
    await server!.close();
    server = undefined;
    await until("agent sees the operator gone", () => !agent!.status().connected);
    assert.equal((await get("/readyz")).status, 503);
    assert.equal((await get("/healthz")).status, 200);
    const denied = 'membrane_agent_drops_total{reason="policy denied"}';
    const before = sample((await get("/metrics")).body, denied)!;
    assert.equal(await connect(8081), false);
    const body = (await get("/metrics")).body;
    assert.equal(sample(body, "membrane_agent_stream_connected"), 0);
    assert.ok(sample(body, denied)! > before, "the new drop is counted");
  });
});

describe("agent flags for the observer and metrics", () => {
  const required = ["--node-name", "n", "--operator", "127.0.0.1:9", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];

  it("defaults: the observer (Hubble's API) socket under /run/membrane, metrics on 127.0.0.1:9962, no export", () => {
    const r = parseAgentFlags(required);
    assert.ok(r.ok);
    assert.equal(r.flags.hubbleSocket, "/run/membrane/hubble.sock");
    assert.equal(r.flags.metricsAddress, "127.0.0.1:9962");
    assert.equal(r.flags.flowExport, undefined);
  });

  it("export with rotation limits, and bad values named by flag", () => {
    const r = parseAgentFlags([...required, "--flow-export", "/tmp/f.jsonl", "--flow-export-max-bytes", "4096", "--flow-export-files", "0", "--metrics-address", "[::1]:0"]);
    assert.ok(r.ok);
    assert.deepEqual(r.flags.flowExport, { path: "/tmp/f.jsonl", maxBytes: 4096, keep: 0, compress: false });
    assert.equal(r.flags.metricsAddress, "[::1]:0");
    assert.deepEqual(parseAgentFlags([...required, "--flow-export", "/f", "--flow-export-max-bytes", "0"]), { ok: false, error: '--flow-export-max-bytes: must be an integer >= 1, got "0"' });
    assert.deepEqual(parseAgentFlags([...required, "--flow-export-files", "3"]), { ok: false, error: "--flow-export-files: only with --flow-export-path" });
    assert.deepEqual(parseAgentFlags([...required, "--metrics-address", "9962"]), { ok: false, error: '--metrics-address: must be HOST:PORT, got "9962"' });
  });
});
