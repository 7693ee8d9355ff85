// What publishing every node costs after one pod's change, in process: the distribution's pass over the nodes (each node's state from the source, its canonical form, its delta from the state it held), at bench/scale's shape. One JSON line.
// Usage: node --import tsx bench/scale/publish-pass.ts [checkout] [--nodes 1000] [--pods 50000] [--identities 1000] [--policies 500] [--rounds 50] — another checkout's code for a side-by-side run (default: this one).
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { securityLabels } from "../../core/labels.ts";
import type { LabelSet } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import type { NodeObject } from "../../controllers/node.ts";
import type { PolicyObject } from "../../controllers/policy.ts";
import { keyOf, type Informer } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";
import { securityLabelsMap, type PodObject } from "../../kube/objects.ts";
import { scalePolicies, type ScaleShape } from "./cluster.ts";

const { values, positionals } = parseArgs({ options: Object.fromEntries(["nodes", "pods", "identities", "policies", "rounds"].map((k) => [k, { type: "string" as const }])), allowPositionals: true });
const root = positionals[0] ?? fileURLToPath(new URL("../..", import.meta.url));
const num = (k: string, d: number): number => Number((values as Record<string, string | undefined>)[k] ?? d);
const shape: ScaleShape = { nodes: num("nodes", 1000), pods: num("pods", 50_000), identities: num("identities", 1000), policies: num("policies", 500), namespaces: 50 };
const rounds = num("rounds", 50);
// Imported from `root` so that a run against another checkout measures its code.
const { NodeStateSource } = (await import(`${root}/controllers/distribution/source.ts`)) as typeof import("../../controllers/distribution/source.ts");
const { StateDiffer } = (await import(`${root}/controllers/distribution/differ.ts`)) as typeof import("../../controllers/distribution/differ.ts");

/** An informer's read side over a map (what NodeStateSource reads). */
function cache<T extends KubeObject>(items: readonly T[]): Informer<T> & { readonly m: Map<string, T> } {
  const m = new Map(items.map((i) => [keyOf(i), i]));
  return { m, get: (k: string) => m.get(k), list: () => [...m.values()] } as unknown as Informer<T> & { readonly m: Map<string, T> };
}
const nodeName = (i: number): string => `scale-node-${i}`;
const ip = (c: number): string => `172.${16 + ((c >> 16) & 15)}.${(c >> 8) & 255}.${c & 255}`;
/** Identity i (256 + i) and pod p as bench/scale makes them. */
const identityLabels = (i: number): LabelSet => securityLabels({ podLabels: { app: `app-${Math.floor(i / shape.namespaces)}` }, namespace: `ns-${i % shape.namespaces}`, namespaceLabels: { team: `team-${(i % shape.namespaces) % 5}` } });
const podOf = (name: string, p: number, node: string): PodObject => {
  const i = p % shape.identities;
  return {
    metadata: { name, namespace: `ns-${i % shape.namespaces}`, labels: { app: `app-${Math.floor(i / shape.namespaces)}` }, annotations: { "membrane.io/identity": String(256 + i) } },
    spec: { nodeName: node },
    status: { phase: "Running", podIP: ip(p + 1) },
  };
};

const t0 = performance.now();
const nodes = cache<NodeObject>(Array.from({ length: shape.nodes }, (_, i) => ({ metadata: { name: nodeName(i) }, status: { addresses: [{ type: "InternalIP", address: `100.64.${i >> 8}.${i & 255}` }] } })));
const pods = cache<PodObject>([]);
const source = new NodeStateSource(pods, nodes);
const differ = new StateDiffer();
differ.subjectDeltas = source.subjectDeltas;
differ.sharedDeltas = source.sharedDeltas;
for (const o of scalePolicies(shape)) {
  const namespace = o.path.includes("/namespaces/") ? o.path.split("/")[5] : undefined;
  const body = o.body as unknown as PolicyObject;
  source.onPolicy({ type: "add", obj: { ...body, metadata: { ...body.metadata, ...(namespace ? { namespace } : {}), uid: body.metadata.name, generation: 1 } } });
}
for (let i = 0; i < shape.identities; i++) source.onIdentity({ type: "add", obj: { metadata: { name: String(256 + i) }, "security-labels": securityLabelsMap(identityLabels(i)) } });
for (let p = 0; p < shape.pods; p++) {
  const pod = podOf(`p-${p}`, p, nodeName(Math.floor((p * shape.nodes) / shape.pods)));
  pods.m.set(keyOf(pod), pod);
  source.onPod({ type: "add", obj: pod });
}
// What each node's agent holds: the last state published, acknowledged at once.
const held = new Map<string, NodeState>();
const pass = (): number => {
  let sent = 0;
  for (let n = 0; n < shape.nodes; n++) {
    const node = nodeName(n);
    const target = differ.canonical(source.stateFor(node));
    const from = held.get(node);
    if (from && differ.diff(from, target)) sent++;
    held.set(node, target);
  }
  return sent;
};
pass();
const setupS = (performance.now() - t0) / 1000;
let total = 0;
let worst = 0;
for (let r = 0; r < rounds; r++) {
  const pod = podOf(`new-${r}`, shape.pods + r, nodeName(r % shape.nodes));
  pods.m.set(keyOf(pod), pod);
  source.onPod({ type: "add", obj: pod });
  const t = performance.now();
  const sent = pass();
  const ms = performance.now() - t;
  total += ms;
  worst = Math.max(worst, ms);
  if (sent !== shape.nodes) throw new Error(`round ${r}: ${sent} of ${shape.nodes} nodes had a delta`);
  await new Promise((resolve) => setImmediate(resolve)); // a replaced part's base is held by a WeakRef until the job ends, as in the operator
}
const round1 = (x: number): number => Math.round(x * 10) / 10;
console.log(
  JSON.stringify({
    bench: "scale-publish-pass",
    checkout: root,
    shape: { nodes: shape.nodes, pods: shape.pods, identities: shape.identities, policies: shape.policies },
    rounds,
    pass_ms: round1(total / rounds),
    pass_max_ms: round1(worst),
    per_node_us: round1((total / rounds / shape.nodes) * 1000),
    setup_s: round1(setupS),
    load_1m: round1(loadavg()[0]!),
  }),
);
