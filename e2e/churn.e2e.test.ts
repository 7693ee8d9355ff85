// End to end: 1,000 policy updates through the API while continuous probes watch a pair that must stay allowed and a pair that must stay denied: zero wrong verdicts.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { resourcePath, type KubeClient } from "../kube/kube.ts";
import { CCNPS, CNPS } from "../kube/resources.ts";
import { TestCluster, waitEnforced, type PodProber } from "./harness.ts";

const NODES = 2;
const UPDATES = 1_000;
/** An allowed connection completes in milliseconds; a dropped SYN is retransmitted after 1 s, so this catches even one lost packet. */
const ALLOWED_TIMEOUT_MS = 1_000;
/** A denied probe that connects does so at once; a short timeout lets the denied loop send many SYNs. */
const DENIED_TIMEOUT_MS = 500;
const DENIED_CONCURRENCY = 4;
/**
 * Pause between two allowed probes: ≤100 connections/s per pair keeps the sockets left in
 * TIME_WAIT far below the ephemeral port range, and leaves CPU to the cluster under test.
 */
const ALLOWED_PACE_MS = 10;
/** Writes in flight at once: churnStep's kinds of write, one lane each (i % 5). */
const LANES = 5;

const tc = new TestCluster(`ch${process.pid % 100000}-`);
const ips = new Map<string, string>();
let kube: KubeClient | undefined;

const pods = [
  { namespace: "default", name: "deathstar-1", node: 1, labels: { org: "empire", class: "deathstar" }, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "deathstar-2", node: 2, labels: { org: "empire", class: "deathstar" }, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "tiefighter-1", node: 1, labels: { org: "empire", class: "tiefighter" }, ports: [{ port: 80, protocol: "TCP" as const }] },
  { namespace: "default", name: "xwing-1", node: 1, labels: { org: "alliance", class: "xwing" }, ports: [{ port: 80, protocol: "TCP" as const }] },
];

/** Every endpoint selected both ways with an empty rule: default deny that allows still open. */
const defaultDeny = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "churn-default-deny" },
  spec: { endpointSelector: {}, ingress: [{}], egress: [{}] },
};

type Specs = Record<string, unknown>[];

/**
 * The variants of "the empire reaches the deathstar on TCP 80": each allows exactly that between the
 * watched pods, written differently (extra ports, selectors that match nobody, matchExpressions).
 */
function empireSpecs(variant: number, k: number): Specs {
  const ports = (extra: boolean): unknown[] => [{ ports: [{ port: "80", protocol: "TCP" }, ...(extra ? [{ port: String(8000 + k), protocol: "TCP" }] : [])] }];
  const deathstar = variant === 3 ? { matchExpressions: [{ key: "class", operator: "In", values: ["deathstar"] }] } : { matchLabels: { class: "deathstar" } };
  const empire = variant === 3 ? { matchExpressions: [{ key: "org", operator: "In", values: ["empire"] }] } : { matchLabels: { org: "empire" } };
  const ghost = variant === 2 ? [{ matchLabels: { class: `ghost-${k}` } }] : [];
  return [
    { endpointSelector: deathstar, ingress: [{ fromEndpoints: [empire, ...ghost], toPorts: ports(variant === 1) }] },
    { endpointSelector: empire, egress: [{ toEndpoints: [deathstar, ...ghost], toPorts: ports(variant === 1) }] },
  ];
}

const cnp = (name: string, specs: Specs): Record<string, unknown> => ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "default" }, specs });

/** A deny for the alliance that default deny already gives: toggling it must never let the xwing through. */
const allianceDenied = cnp("alliance-denied", [
  { endpointSelector: { matchLabels: { class: "deathstar" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
]);

/** One API write of the churn; `i` picks which. Every state in between keeps both watched verdicts. */
function churnStep(i: number, present: Set<string>): () => Promise<unknown> {
  const k = Math.floor(i / 5);
  const cnpPath = (name?: string): string => resourcePath(CNPS, "default", name);
  const toggle = (name: string, body: Record<string, unknown>) => async (): Promise<unknown> => {
    if (present.delete(name)) return kube!.delete(cnpPath(name));
    present.add(name);
    return kube!.create(cnpPath(), body);
  };
  switch (i % 5) {
    case 0:
      return () => kube!.mergePatch(cnpPath("empire-to-deathstar"), { specs: empireSpecs(k % 4, k) });
    case 1:
      return toggle("alliance-denied", allianceDenied);
    case 2:
      return toggle("empire-to-deathstar-copy", cnp("empire-to-deathstar-copy", empireSpecs(0, 0)));
    case 3: {
      // Unrelated namespaced policies, created then edited: they select pods that do not exist.
      const name = `noise-${k % 10}`;
      const specs = [{ endpointSelector: { matchLabels: { class: `noise-${k}` } }, ingress: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: String(1 + (k % 1000)), protocol: "TCP" }] }] }] }];
      if (present.has(name)) return () => kube!.mergePatch(cnpPath(name), { specs });
      present.add(name);
      return () => kube!.create(cnpPath(), cnp(name, specs));
    }
    default: {
      // An unrelated clusterwide policy, edited in place.
      const spec = { endpointSelector: { matchLabels: { class: `nobody-${k}` } }, egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }] }] };
      if (present.has("noise-cluster")) return () => kube!.mergePatch(resourcePath(CCNPS, undefined, "noise-cluster"), { spec });
      present.add("noise-cluster");
      return () => kube!.create(resourcePath(CCNPS), { apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "noise-cluster" }, spec });
    }
  }
}

interface LoopStats {
  probes: number;
  wrong: string[];
  verdicts: Record<string, number>;
  maxConnectMs: number;
}

/**
 * Probes `dst` from `prober` until `running()` is false, `concurrency` at a time; `wrongIf` names
 * what a user would see as a wrong verdict.
 */
async function probeLoop(prober: PodProber, dst: string, timeoutMs: number, concurrency: number, paceMs: number, running: () => boolean, wrongIf: (verdict: string, reply: string | undefined) => boolean): Promise<LoopStats> {
  const stats: LoopStats = { probes: 0, wrong: [], verdicts: {}, maxConnectMs: 0 };
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (running()) {
        const t0 = Date.now();
        const r = await prober.probe(ips.get(`default/${dst}`)!, 80, { timeoutMs });
        const ms = Date.now() - t0;
        stats.probes++;
        stats.verdicts[r.verdict] = (stats.verdicts[r.verdict] ?? 0) + 1;
        if (r.verdict === "connected") stats.maxConnectMs = Math.max(stats.maxConnectMs, ms);
        if (wrongIf(r.verdict, r.reply) && stats.wrong.length < 20) stats.wrong.push(`${new Date(t0).toISOString()} ${prober.pod} -> ${dst}: ${r.verdict}${r.reply !== undefined ? ` (${r.reply})` : ""} after ${ms} ms`);
        if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
      }
    }),
  );
  return stats;
}

describe("policy churn under continuous probes (2 nodes, real packets)", { timeout: 6 * 60_000 }, () => {
  before(async () => {
    await tc.start(NODES);
    for (const [k, v] of await tc.createPods({ default: {} }, pods)) ips.set(k, v);
    kube = await tc.kube();
  });

  after(() => tc.stop());

  it(`${UPDATES} policy updates through the API change neither an allowed nor a denied pair's verdict, on one node and across`, async (t) => {
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: [defaultDeny, cnp("empire-to-deathstar", empireSpecs(0, 0))] }));
    await waitEnforced(tc, CCNPS, undefined, "churn-default-deny", NODES);
    await waitEnforced(tc, CNPS, "default", "empire-to-deathstar", NODES);

    const tie = await tc.prober("default", "tiefighter-1");
    const xwing = await tc.prober("default", "xwing-1");
    const watched = ["deathstar-1", "deathstar-2"]; // same node as the clients, and across
    // The starting point holds before churn begins: otherwise a wrong verdict would say nothing about churn.
    for (const dst of watched) {
      assert.equal((await tie.probe(ips.get(`default/${dst}`)!, 80, { timeoutMs: 2_000 })).verdict, "connected", `tiefighter-1 -> ${dst} before churn`);
      assert.notEqual((await xwing.probe(ips.get(`default/${dst}`)!, 80, { timeoutMs: 1_000 })).verdict, "connected", `xwing-1 -> ${dst} before churn`);
    }

    let running = true;
    const loops = watched.flatMap((dst) => [
      probeLoop(tie, dst, ALLOWED_TIMEOUT_MS, 1, ALLOWED_PACE_MS, () => running, (v, reply) => v !== "connected" || reply !== dst),
      probeLoop(xwing, dst, DENIED_TIMEOUT_MS, DENIED_CONCURRENCY, 0, () => running, (v) => v === "connected"),
    ]);
    const present = new Set<string>(["empire-to-deathstar"]);
    const started = Date.now();
    let writes = 0;
    let writeError: unknown;
    try {
      // One lane per kind of write (each lane edits its own objects in order), so API latency overlaps.
      await Promise.all(
        Array.from({ length: LANES }, async (_, lane) => {
          for (let i = lane; i < UPDATES && writeError === undefined; i += LANES) {
            try {
              await churnStep(i, present)();
              writes++;
            } catch (e) {
              writeError ??= new Error(`write ${i}: ${String(e)}`);
            }
          }
        }),
      );
    } finally {
      const applyMs = Date.now() - started;
      // Let the last updates reach both agents, and keep probing while they are applied.
      await waitEnforced(tc, CNPS, "default", "empire-to-deathstar", NODES, 120_000).finally(async () => {
        await new Promise((r) => setTimeout(r, 2_000));
        running = false;
      });
      const stats = await Promise.all(loops);
      const names = watched.flatMap((dst) => [`tiefighter-1 -> ${dst} (must connect)`, `xwing-1 -> ${dst} (must not)`]);
      const summary = stats.map((s, i) => `${names[i]}: ${s.probes} probes ${JSON.stringify(s.verdicts)}, slowest connect ${s.maxConnectMs} ms`).join("\n");
      t.diagnostic(`${writes} API writes in ${applyMs} ms, converged after ${Date.now() - started} ms; ${stats.reduce((n, s) => n + s.probes, 0)} probes\n${summary}`);
      assert.equal(writes, UPDATES, `not every API write succeeded: ${String(writeError)}`);
      assert.deepEqual(stats.flatMap((s) => s.wrong), [], "wrong verdicts during churn");
      for (const [i, s] of stats.entries()) assert.ok(s.probes >= 20, `${names[i]}: only ${s.probes} probes ran`);
    }
  });
});
