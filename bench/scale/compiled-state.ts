// The operator's compiled state at bench/scale's policy mix, in process (no API server, no agents): what the compiler and the distribution's source hold, and which rules make the entries. Prints one JSON line.
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { PolicyCompiler, policyKey } from "../../core/compiler.ts";
import { RESERVED_IDENTITIES } from "../../core/identity.ts";
import { securityLabels } from "../../core/labels.ts";
import type { LabelSet, Policy } from "../../core/model.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { NodeStateSource } from "../../controllers/distribution/source.ts";
import type { NodeObject } from "../../controllers/node.ts";
import type { PolicyObject } from "../../controllers/policy.ts";
import { keyOf } from "../../kube/informer.ts";
import { securityLabelsMap, type IdentityObject, type PodObject } from "../../kube/objects.ts";
import { appsPerNamespace, scalePolicies, type ScaleShape } from "./cluster.ts";
import { cache, liveHeapMiB } from "./in-process.ts";

/** bpf/lib/policy.h's POLICY_MAP_ENTRIES: what one node's policy map holds. */
const POLICY_MAP_ENTRIES = 262_144;

const { values } = parseArgs({
  options: {
    ...Object.fromEntries(["identities", "pods", "policies", "namespaces", "nodes", "batch"].map((k) => [k, { type: "string" as const }])),
    // The CCNPs' egress to the world by family: every third `world-ipv4`, every third `world-ipv6` (the mix has none of them).
    "family-entities": { type: "boolean" as const },
    // Compile world-ipv4/-ipv6 per peer, as before their classes (what an agent without worldFamilyClass gets).
    "family-per-peer": { type: "boolean" as const },
  },
});
const familyEntities = values["family-entities"] === true;
const familyPerPeer = values["family-per-peer"] === true;
const defaults: Record<string, number> = { identities: 300, policies: 500, namespaces: 20, nodes: 20, batch: 10 };
const n: Record<string, number> = {};
for (const k of [...Object.keys(defaults), "pods"]) {
  const raw = (values as Record<string, string | boolean | undefined>)[k];
  if (raw === undefined || typeof raw === "boolean") continue;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: ${raw} is not a positive integer`);
  n[k] = v;
}
const ids = n.identities ?? defaults.identities!;
const shape: ScaleShape = { identities: ids, pods: n.pods ?? ids, policies: n.policies ?? defaults.policies!, namespaces: n.namespaces ?? defaults.namespaces!, nodes: n.nodes ?? defaults.nodes! };
const batch = n.batch ?? defaults.batch!;
const load = [loadavg()[0]!];

/** Identity i (256 + i): app and namespace as bench/scale's pods carry them. */
function identityLabels(i: number): LabelSet {
  const ns = i % shape.namespaces;
  return securityLabels({ podLabels: { app: `app-${Math.floor(i / shape.namespaces)}` }, namespace: `ns-${ns}`, namespaceLabels: { team: `team-${ns % 5}` } });
}
/** `--family-entities`: the CCNP's `toEntities: [world]` egress as `[world-ipv4]` or `[world-ipv6]` for two in three of them. */
function byFamily(body: Record<string, unknown>, j: number): Record<string, unknown> {
  const spec = body.spec as { egress?: { toEntities?: string[] }[] } | undefined;
  if (!familyEntities || body.kind !== "CiliumClusterwideNetworkPolicy" || j % 3 === 0 || !spec?.egress) return body;
  const entity = j % 3 === 1 ? "world-ipv4" : "world-ipv6";
  return { ...body, spec: { ...spec, egress: spec.egress.map((r) => (r.toEntities?.includes("world") ? { ...r, toEntities: [entity] } : r)) } };
}
const policyObjects: PolicyObject[] = scalePolicies(shape).map((o, j) => {
  const body = byFamily(o.body, j) as unknown as PolicyObject;
  const namespace = o.path.includes("/namespaces/") ? o.path.split("/")[5] : undefined;
  return { ...body, metadata: { ...body.metadata, ...(namespace ? { namespace } : {}), uid: body.metadata.name, generation: 1 } };
});

// 1. The compiler alone: its live heap, its entries by the rule that made them, and how many subjects compile alike.
const heap0 = liveHeapMiB();
let t = performance.now();
const compiler = new PolicyCompiler();
if (familyPerPeer) compiler.setWorldFamilyClass(false);
for (const r of RESERVED_IDENTITIES) compiler.upsertIdentity(r.id, r.labels);
for (const o of policyObjects) {
  const parsed = parsePolicyObject(o);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const byKey = new Map<string, Policy[]>();
  for (const p of parsed.value) byKey.set(policyKey(p), [...(byKey.get(policyKey(p)) ?? []), p]);
  for (const [key, parts] of byKey) compiler.upsertPolicy(key, parts);
}
for (let i = 0; i < ids; i++) compiler.upsertIdentity(256 + i, identityLabels(i));
const compilerSeconds = (performance.now() - t) / 1000;
const compilerHeap = liveHeapMiB() - heap0;
const entries = compiler.entryCount();
const byRule = new Map<string, number>();
const alike = new Set<string>();
const table = compiler.ruleTable();
for (const s of compiler.subjectIds()) {
  const p = compiler.snapshot(s);
  alike.add(`${p.ingressEnforced} ${p.egressEnforced} ` + p.entries.map((e) => `${e.direction} ${e.peer} ${e.proto} ${e.port}/${e.portPrefixLen} ${e.verdict} ${e.proxyPort} ${e.ruleId}`).join(","));
  for (const e of p.entries) {
    const o = table.get(e.ruleId);
    const rule = o ? `${o.policyKind} ${o.path}`.replace(/^(\S+ \S+?)\[\d+\]$/, "$1") : "default";
    byRule.set(rule, (byRule.get(rule) ?? 0) + 1);
  }
}
const subjects = compiler.subjectIds().length;
load.push(loadavg()[0]!);

// 2. The distribution's source as the operator runs it: policies, then identities and their pods in bursts of `batch`, every node's state read after each.
const nodeName = (i: number): string => `scale-node-${i}`;
const nodes = cache<NodeObject>(Array.from({ length: shape.nodes }, (_, i) => ({ metadata: { name: nodeName(i) }, status: { addresses: [{ type: "InternalIP", address: `100.64.${i >> 8}.${i & 255}` }] } })));
const pods = cache<PodObject>([]);
const heap1 = liveHeapMiB();
t = performance.now();
const source = new NodeStateSource(pods, nodes);
if (familyPerPeer) source.setWorldFamilyClass(false);
for (const obj of policyObjects) source.onPolicy({ type: "add", obj });
const readAll = (): void => {
  for (let i = 0; i < shape.nodes; i++) source.stateFor(nodeName(i));
};
readAll();
let next = 0;
for (let p = 0; p < shape.pods; p++) {
  const i = p % ids;
  if (i === next) {
    const obj: IdentityObject = { metadata: { name: String(256 + i) }, "security-labels": securityLabelsMap(identityLabels(i)) };
    source.onIdentity({ type: "add", obj });
    next++;
  }
  const ip = `172.${16 + ((p >> 16) & 15)}.${(p >> 8) & 255}.${p & 255}`;
  const pod: PodObject = {
    metadata: { name: `p-${p}`, namespace: `ns-${i % shape.namespaces}`, labels: { app: `app-${Math.floor(i / shape.namespaces)}` }, annotations: { "membrane.io/identity": String(256 + i) } },
    spec: { nodeName: nodeName(Math.floor((p * shape.nodes) / shape.pods)) },
    status: { phase: "Running", podIP: ip },
  };
  pods.m.set(keyOf(pod), pod);
  source.onPod({ type: "add", obj: pod });
  if ((p + 1) % batch === 0 || p === shape.pods - 1) {
    readAll();
    await new Promise((r) => setImmediate(r)); // a replaced subject policy's base is held by a WeakRef until the job ends, as in the operator
  }
}
const sourceSeconds = (performance.now() - t) / 1000;
let maxNodeEntries = 0;
for (let i = 0; i < shape.nodes; i++) maxNodeEntries = Math.max(maxNodeEntries, source.stateFor(nodeName(i)).policies.reduce((k, sp) => k + sp.entries.length, 0));
await new Promise((r) => setImmediate(r));
const sourceHeap = liveHeapMiB() - heap1;
load.push(loadavg()[0]!);

console.log(
  JSON.stringify({
    bench: "scale-compiled-state",
    shape: { ...shape, apps_per_namespace: appsPerNamespace(shape), batch, family_entities: familyEntities, family_per_peer: familyPerPeer },
    subjects,
    entries,
    entries_per_subject_per_peer: Math.round((entries / subjects / (ids + RESERVED_IDENTITIES.length)) * 10) / 10,
    distinct_compiled_policies: alike.size,
    entries_by_rule: Object.fromEntries([...byRule].sort((a, b) => b[1] - a[1])),
    compiler_live_heap_mib: compilerHeap,
    compiler_s: Math.round(compilerSeconds * 10) / 10,
    source_live_heap_mib: sourceHeap,
    source_s: Math.round(sourceSeconds * 10) / 10,
    max_node_entries: maxNodeEntries,
    policy_map_entries: POLICY_MAP_ENTRIES,
    rss_mib: Math.round(process.memoryUsage().rss / 2 ** 20),
    load_1m: load.map((l) => Math.round(l * 10) / 10),
  }),
);
