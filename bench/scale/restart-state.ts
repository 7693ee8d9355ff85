// The restarted operator's first compile, in process: the distribution's source synced from full caches (bench/scale's shape plus `--idle` identities no pod carries), then every node's state read, as the operator's start does (before its GC's first sweep). Prints one JSON line.
// Usage: node --import tsx bench/scale/restart-state.ts [--nodes 1000] [--pods 50000] [--identities 5000] [--policies 2000] [--idle 60000] [--idle-labels full|bare] [--stray 0]
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { securityLabels } from "../../core/labels.ts";
import type { LabelSet } from "../../core/model.ts";
import type { NodeObject } from "../../controllers/node.ts";
import type { PolicyObject } from "../../controllers/policy.ts";
import { securityLabelsMap, type IdentityObject, type PodObject } from "../../kube/objects.ts";
import { NodeStateSource } from "../../controllers/distribution/source.ts";
import { scalePolicies, type ScaleShape } from "./cluster.ts";
import { cache, liveHeapMiB } from "./in-process.ts";

const { values } = parseArgs({ options: Object.fromEntries(["nodes", "pods", "identities", "policies", "idle", "idle-labels", "stray"].map((k) => [k, { type: "string" as const }])) });
const num = (k: string, d: number): number => Number((values as Record<string, string | undefined>)[k] ?? d);
const shape: ScaleShape = { nodes: num("nodes", 1000), pods: num("pods", 50_000), identities: num("identities", 5000), policies: num("policies", 2000), namespaces: 50 };
const idle = num("idle", 60_000);
// --idle-labels bare: as bench/scale made them before (app and namespace only, no cluster label); full: as the operator makes them.
const bare = (values as Record<string, string | undefined>)["idle-labels"] === "bare";
// --stray N: only the first N idle identities bare (a hand-written CiliumIdentity among the operator's).
const stray = bare ? idle : Math.min(idle, num("stray", 0));

const nodeName = (i: number): string => `scale-node-${i}`;
const identityLabels = (i: number): LabelSet => securityLabels({ podLabels: { app: `app-${Math.floor(i / shape.namespaces)}` }, namespace: `ns-${i % shape.namespaces}`, namespaceLabels: { team: `team-${(i % shape.namespaces) % 5}` } });
const identities: IdentityObject[] = Array.from({ length: shape.identities }, (_, i) => ({ metadata: { name: String(256 + i) }, "security-labels": securityLabelsMap(identityLabels(i)) }));
for (let k = 0; k < idle; k++) identities.push({ metadata: { name: String(65_535 - k) }, "security-labels": k < stray ? { "k8s:app": `idle-${65_535 - k}`, "k8s:io.kubernetes.pod.namespace": "gone" } : securityLabelsMap(securityLabels({ podLabels: { app: `idle-${65_535 - k}` }, namespace: "gone", namespaceLabels: {}, serviceAccount: "default" })) });
const pods: PodObject[] = Array.from({ length: shape.pods }, (_, p) => {
  const i = p % shape.identities;
  return {
    metadata: { name: `p-${p}`, namespace: `ns-${i % shape.namespaces}`, labels: { app: `app-${Math.floor(i / shape.namespaces)}` }, annotations: { "membrane.io/identity": String(256 + i) } },
    spec: { nodeName: nodeName(Math.floor((p * shape.nodes) / shape.pods)) },
    status: { phase: "Running", podIP: `172.${16 + ((p >> 16) & 15)}.${(p >> 8) & 255}.${p & 255}` },
  };
});
const policies: PolicyObject[] = scalePolicies(shape).map((o) => {
  const namespace = o.path.includes("/namespaces/") ? o.path.split("/")[5] : undefined;
  const body = o.body as unknown as PolicyObject;
  return { ...body, metadata: { ...body.metadata, ...(namespace ? { namespace } : {}), uid: body.metadata.name, generation: 1 } };
});
const nodes: NodeObject[] = Array.from({ length: shape.nodes }, (_, i) => ({ metadata: { name: nodeName(i) }, status: { addresses: [{ type: "InternalIP", address: `100.64.${i >> 8}.${i & 255}` }] } }));
const heap0 = liveHeapMiB();
let t = performance.now();
const source = new NodeStateSource(cache(pods), cache(nodes));
source.sync({ identities: cache(identities), policies: [cache(policies)] });
const syncS = (performance.now() - t) / 1000;
const syncRss = process.memoryUsage().rss;
t = performance.now();
for (let i = 0; i < shape.nodes; i++) source.stateFor(nodeName(i));
const statesS = (performance.now() - t) / 1000;
const round1 = (x: number): number => Math.round(x * 10) / 10;
console.log(
  JSON.stringify({
    bench: "scale-restart-state",
    shape,
    idle,
    idle_labels: bare ? "bare" : "full",
    stray,
    sync_s: round1(syncS),
    states_s: round1(statesS),
    live_heap_mib: liveHeapMiB() - heap0,
    rss_mib_after_sync: Math.round(syncRss / 2 ** 20),
    load_1m: round1(loadavg()[0]!),
  }),
);
