// Policy churn under continuous probes, for any cluster whose pods a PodProber reaches (the process-based one and the real pods): the policies, the API writes and the probe loops.
import assert from "node:assert/strict";
import { isNotFound, resourcePath, type KubeClient } from "../kube/kube.ts";
import { CCNPS, CNPS } from "../kube/resources.ts";
import { waitEnforced, type PodProber, type TestCluster } from "./harness.ts";

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
/** The clusterwide policies of the churn (namespaced ones go with their namespace). */
const CLUSTERWIDE = ["churn-default-deny", "noise-cluster"];

/**
 * The pods the churn watches, in `namespace`, all serving TCP 80 with their name: the empire's tiefighter must
 * reach the deathstars, the alliance's xwing must not.
 */
export const CHURN_LABELS = {
  deathstar: { org: "empire", class: "deathstar" },
  tiefighter: { org: "empire", class: "tiefighter" },
  xwing: { org: "alliance", class: "xwing" },
} as const;

type Specs = Record<string, unknown>[];

/** Every endpoint of the namespace selected both ways with an empty rule: default deny that allows still open. */
const defaultDeny = (namespace: string): Record<string, unknown> => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "churn-default-deny" },
  spec: { endpointSelector: { matchLabels: { "k8s:io.kubernetes.pod.namespace": namespace } }, ingress: [{}], egress: [{}] },
});

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

const cnp = (namespace: string, name: string, specs: Specs): Record<string, unknown> => ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace }, specs });

/** A deny for the alliance that default deny already gives: toggling it must never let the xwing through. */
const allianceDenied = (namespace: string): Record<string, unknown> =>
  cnp(namespace, "alliance-denied", [
    { endpointSelector: { matchLabels: { class: "deathstar" } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
  ]);

/** One API write of the churn; `i` picks which. Every state in between keeps both watched verdicts. */
function churnStep(kube: KubeClient, namespace: string, i: number, present: Set<string>): () => Promise<unknown> {
  const k = Math.floor(i / 5);
  const cnpPath = (name?: string): string => resourcePath(CNPS, namespace, name);
  const toggle = (name: string, body: Record<string, unknown>) => async (): Promise<unknown> => {
    if (present.delete(name)) return kube.delete(cnpPath(name));
    present.add(name);
    return kube.create(cnpPath(), body);
  };
  switch (i % 5) {
    case 0:
      return () => kube.mergePatch(cnpPath("empire-to-deathstar"), { specs: empireSpecs(k % 4, k) });
    case 1:
      return toggle("alliance-denied", allianceDenied(namespace));
    case 2:
      return toggle("empire-to-deathstar-copy", cnp(namespace, "empire-to-deathstar-copy", empireSpecs(0, 0)));
    case 3: {
      // Unrelated namespaced policies, created then edited: they select pods that do not exist.
      const name = `noise-${k % 10}`;
      const specs = [{ endpointSelector: { matchLabels: { class: `noise-${k}` } }, ingress: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: String(1 + (k % 1000)), protocol: "TCP" }] }] }] }];
      if (present.has(name)) return () => kube.mergePatch(cnpPath(name), { specs });
      present.add(name);
      return () => kube.create(cnpPath(), cnp(namespace, name, specs));
    }
    default: {
      // An unrelated clusterwide policy, edited in place.
      const spec = { endpointSelector: { matchLabels: { class: `nobody-${k}` } }, egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }] }] };
      if (present.has("noise-cluster")) return () => kube.mergePatch(resourcePath(CCNPS, undefined, "noise-cluster"), { spec });
      present.add("noise-cluster");
      return () => kube.create(resourcePath(CCNPS), { apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name: "noise-cluster" }, spec });
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
 * Probes `dst` at `ip` from `prober` until `running()` is false, `concurrency` at a time; `wrongIf` names
 * what a user would see as a wrong verdict.
 */
async function probeLoop(prober: PodProber, dst: string, ip: string, timeoutMs: number, concurrency: number, paceMs: number, running: () => boolean, wrongIf: (verdict: string, reply: string | undefined) => boolean): Promise<LoopStats> {
  const stats: LoopStats = { probes: 0, wrong: [], verdicts: {}, maxConnectMs: 0 };
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (running()) {
        const t0 = Date.now();
        const r = await prober.probe(ip, 80, { timeoutMs });
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

export interface ChurnRun {
  cluster: Pick<TestCluster, "kube">;
  /** The namespace of the watched pods (CHURN_LABELS); the churn's namespaced policies go there. */
  namespace: string;
  nodes: number;
  updates: number;
  tiefighter: PodProber;
  xwing: PodProber;
  /** The deathstars watched (name, address), each probed by both. */
  deathstars: readonly { name: string; ip: string }[];
}

/** What a churn run saw: `summary` (writes, timings, every loop's probe counts and verdicts) goes in every failure message. */
export interface ChurnOutcome {
  writes: number;
  writeError: unknown;
  probes: number;
  summary: string;
  wrong: string[];
  /** Loops that ran fewer than 20 probes (the churn then says little), with their counts. */
  thin: string[];
}

/**
 * Default deny for the namespace and the empire's allow, enforced on every node; the starting point checked (the
 * tiefighter connects, the xwing does not); then `updates` API writes in LANES lanes while each prober loops on each
 * deathstar, until the last write is enforced everywhere and two seconds more.
 */
export async function churnUnderProbes(run: ChurnRun): Promise<ChurnOutcome> {
  const kube = await run.cluster.kube();
  await kube.create(resourcePath(CCNPS), defaultDeny(run.namespace));
  await kube.create(resourcePath(CNPS, run.namespace), cnp(run.namespace, "empire-to-deathstar", empireSpecs(0, 0)));
  await waitEnforced(run.cluster, CCNPS, undefined, "churn-default-deny", run.nodes);
  await waitEnforced(run.cluster, CNPS, run.namespace, "empire-to-deathstar", run.nodes);
  // The starting point holds before churn begins: otherwise a wrong verdict would say nothing about churn.
  for (const d of run.deathstars) {
    assert.equal((await run.tiefighter.probe(d.ip, 80, { timeoutMs: 2_000 })).verdict, "connected", `${run.tiefighter.pod} -> ${d.name} before churn`);
    assert.notEqual((await run.xwing.probe(d.ip, 80, { timeoutMs: 1_000 })).verdict, "connected", `${run.xwing.pod} -> ${d.name} before churn`);
  }

  let running = true;
  const loops = run.deathstars.flatMap((d) => [
    probeLoop(run.tiefighter, d.name, d.ip, ALLOWED_TIMEOUT_MS, 1, ALLOWED_PACE_MS, () => running, (v, reply) => v !== "connected" || reply !== d.name),
    probeLoop(run.xwing, d.name, d.ip, DENIED_TIMEOUT_MS, DENIED_CONCURRENCY, 0, () => running, (v) => v === "connected"),
  ]);
  const present = new Set<string>(["empire-to-deathstar"]);
  const started = Date.now();
  let writes = 0;
  let writeError: unknown;
  // One lane per kind of write (each lane edits its own objects in order), so API latency overlaps.
  await Promise.all(
    Array.from({ length: LANES }, async (_, lane) => {
      for (let i = lane; i < run.updates && writeError === undefined; i += LANES) {
        try {
          await churnStep(kube, run.namespace, i, present)();
          writes++;
        } catch (e) {
          writeError ??= new Error(`write ${i}: ${String(e)}`);
        }
      }
    }),
  );
  const applyMs = Date.now() - started;
  // Let the last updates reach every agent, and keep probing while they are applied.
  await waitEnforced(run.cluster, CNPS, run.namespace, "empire-to-deathstar", run.nodes, 120_000).finally(async () => {
    await new Promise((r) => setTimeout(r, 2_000));
    running = false;
  });
  const stats = await Promise.all(loops);
  const names = run.deathstars.flatMap((d) => [`${run.tiefighter.pod} -> ${d.name} (must connect)`, `${run.xwing.pod} -> ${d.name} (must not)`]);
  const probes = stats.reduce((n, s) => n + s.probes, 0);
  const lines = stats.map((s, i) => `${names[i]}: ${s.probes} probes ${JSON.stringify(s.verdicts)}, slowest connect ${s.maxConnectMs} ms`);
  return {
    writes,
    writeError,
    probes,
    summary: `${writes} API writes in ${applyMs} ms, converged after ${Date.now() - started} ms; ${probes} probes\n${lines.join("\n")}`,
    wrong: stats.flatMap((s) => s.wrong),
    thin: stats.flatMap((s, i) => (s.probes >= 20 ? [] : [`${names[i]}: only ${s.probes} probes ran`])),
  };
}

/** What a user would notice: a write the API refused, a wrong verdict, or too few probes to tell. */
export function assertChurnClean(outcome: ChurnOutcome, updates: number): void {
  assert.equal(outcome.writes, updates, `not every API write succeeded: ${String(outcome.writeError)}\n${outcome.summary}`);
  assert.deepEqual(outcome.wrong, [], `wrong verdicts during churn\n${outcome.summary}`);
  assert.deepEqual(outcome.thin, [], `too few probes to tell\n${outcome.summary}`);
}

/** Removes every policy of a churn run (the clusterwide ones by name, the namespace's CNPs); for a cluster that outlives the test. */
export async function removeChurnPolicies(kube: KubeClient, namespace: string): Promise<void> {
  const ignoreMissing = (e: unknown): undefined => {
    if (isNotFound(e)) return undefined;
    throw e;
  };
  for (const name of CLUSTERWIDE) await kube.delete(resourcePath(CCNPS, undefined, name)).catch(ignoreMissing);
  const cnps = await kube.get<{ items: { metadata: { name: string } }[] }>(resourcePath(CNPS, namespace));
  for (const o of cnps.items) await kube.delete(resourcePath(CNPS, namespace, o.metadata.name)).catch(ignoreMissing);
}
