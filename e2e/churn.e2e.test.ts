// End to end: 1,000 policy updates through the API while continuous probes watch a pair that must stay allowed and a pair that must stay denied: zero wrong verdicts.
// The churn itself (policies, writes, probe loops) is e2e/churn.ts, shared with the real pods' version in localcluster/realnode/realnode.test.ts.
// Process-based cluster because: (c) its real-pod counterpart is realnode.test.ts "policy churn on real pods" (the same e2e/churn.ts: 100 updates in make test, 1,000 in make test-realnode-conformance); this file is make test's 1,000-update run, kept here for the CI budget.
import { after, before, describe, it } from "node:test";
import { CHURN_LABELS, assertChurnClean, churnUnderProbes } from "./churn.ts";
import { TestCluster } from "./harness.ts";

const NODES = 2;
const UPDATES = 1_000;

const tc = new TestCluster(`ch${process.pid % 100000}-`);
const ips = new Map<string, string>();

const pods = [
  { namespace: "default", name: "deathstar-1", node: 1, labels: CHURN_LABELS.deathstar, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "deathstar-2", node: 2, labels: CHURN_LABELS.deathstar, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "tiefighter-1", node: 1, labels: CHURN_LABELS.tiefighter, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "xwing-1", node: 1, labels: CHURN_LABELS.xwing, ports: [{ port: 80, protocol: "TCP" as const }] },
];

describe("policy churn under continuous probes (2 nodes, real packets)", { timeout: 6 * 60_000 }, () => {
  before(async () => {
    await tc.start(NODES);
    for (const [k, v] of await tc.createPods({ default: {} }, pods.map((p) => ({ ...p, labels: { ...p.labels } })))) ips.set(k, v);
  });

  after(() => tc.stop());

  it(`${UPDATES} policy updates through the API change neither an allowed nor a denied pair's verdict, on one node and across`, async (t) => {
    const outcome = await churnUnderProbes({
      cluster: tc,
      namespace: "default",
      nodes: NODES,
      updates: UPDATES,
      tiefighter: await tc.prober("default", "tiefighter-1"),
      xwing: await tc.prober("default", "xwing-1"),
      // Same node as the clients, and across.
      deathstars: ["deathstar-1", "deathstar-2"].map((name) => ({ name, ip: ips.get(`default/${name}`)! })),
    });
    t.diagnostic(outcome.summary);
    assertChurnClean(outcome, UPDATES);
  });
});
