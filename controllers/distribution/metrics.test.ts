// The operator's distribution and policy-enforcement metrics as Prometheus scrapes them: nodes by stream state, NACKs per node, policies by enforcement state.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { Downstream, NodeState } from "../../core/wire.ts";
import { EMPTY_STATE } from "../../core/nodestate.ts";
import { AgentClient } from "../testing/agent.ts";
import { eventually } from "../testing/operator-process.ts";
import { type TestPki, makePki } from "../../kube/testing/pki.ts";
import { OperatorMetrics } from "../../kube/metrics.ts";
import { HealthServer } from "../../kube/server.ts";
import { DistributionServer, nodeStreamState } from "./server.ts";
import { enforcementState, policyConditions } from "../policy.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";

/** A CNP with an HTTP rule: valid, but this build does not enforce L7 rules yet. */
const l7Policy = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "api", namespace: "default" },
  spec: {
    endpointSelector: { matchLabels: { app: "api" } },
    ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] }],
  },
};

const metrics = new OperatorMetrics();
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let http: HealthServer | undefined;
let port = 0;
let httpPort = 0;
const agents: AgentClient[] = [];

/** Polls often: these waits are for in-process streams, not for controllers. */
const until = <T>(what: string, f: () => T | undefined | false): Promise<T> => eventually(what, () => f() || undefined, 5000, 20);

/** Scrapes /metrics over HTTP, as Prometheus does, and returns the sample lines of `name`. */
async function scrape(name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\S+?)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? "", Number(m[3]));
  }
  return out;
}

const withGeneration = (gen: number): NodeState => ({ ...EMPTY_STATE, policyGenerations: [{ key: "CiliumNetworkPolicy/ns/p", uid: "u", generation: gen }] });

describe("operator metrics", () => {
  const agent = (node: string, opts: ConstructorParameters<typeof AgentClient>[3] = {}): AgentClient => {
    const p = pki as TestPki;
    const a = new AgentClient(`127.0.0.1:${port}`, { ca: p.read("ca.crt"), cert: p.read(`${node}.crt`), key: p.read(`${node}.key`) }, node, opts);
    agents.push(a);
    return a;
  };

  before(async () => {
    pki = await makePki(["m-1", "m-2", "m-3"]);
    const p = pki;
    server = new DistributionServer({ ca: p.read("ca.crt"), cert: p.read("operator.crt"), key: p.read("operator.key") }, pino({ level: "silent" }), 10_000, undefined, {
      nack: (node) => metrics.nacks.inc({ node }),
    });
    const s = server;
    metrics.observeNodes(() => s.reports().map(nodeStreamState));
    port = await server.listen(0);
    http = new HealthServer(metrics.registry, () => true);
    httpPort = await http.listen(0);
  });

  after(async () => {
    for (const a of agents) a.close();
    await server?.close();
    await http?.close();
    pki?.remove();
  });

  it("counts nodes as acked, behind, nacked and disconnected, and NACKs per node", async () => {
    const s = server as DistributionServer;
    assert.deepEqual(Object.fromEntries(await scrape("membrane_operator_nodes")), {
      '{state="acked"}': 0,
      '{state="behind"}': 0,
      '{state="nacked"}': 0,
      '{state="disconnected"}': 0,
    });
    s.publish("m-1", withGeneration(1));
    s.publish("m-2", withGeneration(1));
    s.publish("m-3", withGeneration(1));
    const acking = agent("m-1");
    const refusing = agent("m-2", { autoAck: false });
    const leaving = agent("m-3");
    await until("m-1 and m-3 acked", () => s.reports().filter((r) => r.upToDate).length === 2);
    await until("m-2 got its snapshot", () => refusing.received.length === 1);
    refusing.nack(refusing.received[0] as Downstream, "policy map full");
    await until("nack", () => s.reports().find((r) => r.node === "m-2")?.nack);
    leaving.close();
    await until("m-3 gone", () => s.reports().find((r) => r.node === "m-3")?.connected === false);
    // A new desired state m-1 has not acknowledged yet: it is behind until it does.
    s.publish("m-1", withGeneration(2));
    const now = await scrape("membrane_operator_nodes");
    assert.equal(now.get('{state="nacked"}'), 1);
    assert.equal(now.get('{state="disconnected"}'), 1);
    assert.equal((now.get('{state="acked"}') ?? 0) + (now.get('{state="behind"}') ?? 0), 1);
    await until("m-1 acks generation 2", () => acking.state.policyGenerations[0]?.generation === 2 && s.reports().find((r) => r.node === "m-1")?.upToDate);
    assert.equal((await scrape("membrane_operator_nodes")).get('{state="acked"}'), 1);
    assert.deepEqual(Object.fromEntries(await scrape("membrane_operator_nacks_total")), { '{node="m-2"}': 1 });
  });

  it("policies by enforcement state follow the Enforced condition", async () => {
    const ok = { ok: true as const, value: [] };
    const bad = { ok: false as const, errors: [{ path: "spec", message: "x" }] };
    assert.equal(enforcementState(policyConditions(ok, 1, 2, { acknowledged: 2, refused: [] })), "enforced");
    assert.equal(enforcementState(policyConditions(ok, 1, 2, { acknowledged: 1, refused: [] })), "pending");
    assert.equal(enforcementState(policyConditions(ok, 1, 2, { acknowledged: 1, refused: [{ node: "n", message: "full" }] })), "refused");
    assert.equal(enforcementState(policyConditions(bad, 1, 2, { acknowledged: 0, refused: [] })), "invalid");
    // A policy whose L7 rules this build does not enforce is "partial", not "pending", whatever the nodes acknowledged.
    const l7 = parsePolicyObject(l7Policy);
    assert.ok(l7.ok);
    assert.equal(enforcementState(policyConditions(l7, 1, 2, { acknowledged: 2, refused: [] })), "partial");
    metrics.policyEnforcement.set({ kind: "CiliumNetworkPolicy", state: "refused" }, 1);
    assert.equal((await scrape("membrane_operator_policies_enforcement")).get('{kind="CiliumNetworkPolicy",state="refused"}'), 1);
  });
});
