// Writes a synthetic node state at issue #21's size (an agent's applied.json) for bench/scale's --agent-replay: no cluster needed.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import type { IPCacheEntry, IdentityLabels, NodeState } from "../../core/wire.ts";
import { flagError } from "../../kube/flags.ts";

/** The cluster's shape, as bench/scale's defaults: pods spread over nodes (consecutive pods on one node, each another identity). */
export interface SyntheticShape {
  readonly pods: number;
  readonly nodes: number;
  readonly identities: number;
  readonly namespaces: number;
  /** Per subject (an identity of node 0's pods): its ingress and its egress allows each name this many peer identities (0: no policies). */
  readonly peersPerSubject: number;
}

const nodeIP = (i: number): string => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const podIP = (c: number): string => `172.${16 + ((c >> 16) & 15)}.${(c >> 8) & 255}.${c & 255}`;
const FIRST_IDENTITY = 256;

/**
 * The state the operator would send node 0 (scale-node-0): every pod's /32 with its identity, node and
 * name, every node's address as remote-node, every identity's labels, and for the identities of node
 * 0's pods a policy allowing TCP 8080 in from and out to `peersPerSubject` identities each.
 */
export function syntheticState(s: SyntheticShape): NodeState {
  const ipcache: IPCacheEntry[] = [];
  const node0Identities = new Set<number>();
  for (let p = 0; p < s.pods; p++) {
    const i = p % s.identities;
    const node = Math.floor((p * s.nodes) / s.pods);
    const identity = FIRST_IDENTITY + i;
    if (node === 0) node0Identities.add(identity);
    ipcache.push({ prefix: `${podIP(p + 1)}/32`, identity, node: nodeIP(node), pod: `ns-${i % s.namespaces}/p-${p}` });
  }
  for (let n = 0; n < s.nodes; n++) ipcache.push({ prefix: `${nodeIP(n)}/32`, identity: 6, node: nodeIP(n) }); // reserved:remote-node
  const identities: IdentityLabels[] = Array.from({ length: s.identities }, (_, i) => ({
    id: FIRST_IDENTITY + i,
    labels: [`k8s:app=app-${Math.floor(i / s.namespaces)}`, `k8s:io.kubernetes.pod.namespace=ns-${i % s.namespaces}`, "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.cilium.k8s.policy.cluster=default"],
  }));
  const policies: SubjectPolicy[] = [];
  const rules: NodeState["rules"][number][] = [];
  if (s.peersPerSubject > 0) {
    rules.push({ id: 1, origin: { policyKind: "CiliumNetworkPolicy", namespace: "ns-0", name: "synthetic-in", ruleIndex: 0, path: "spec.ingress[0]" } });
    rules.push({ id: 2, origin: { policyKind: "CiliumNetworkPolicy", namespace: "ns-0", name: "synthetic-out", ruleIndex: 0, path: "spec.egress[0]" } });
    for (const subject of [...node0Identities].sort((a, b) => a - b)) {
      const entries: PolicyEntry[] = [];
      for (let k = 0; k < s.peersPerSubject; k++) {
        const peer = FIRST_IDENTITY + ((subject - FIRST_IDENTITY + 1 + k) % s.identities);
        entries.push({ subject, direction: "ingress", peer, proto: 6, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 });
        entries.push({ subject, direction: "egress", peer, proto: 6, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 2 });
      }
      policies.push({ subject, ingressEnforced: true, egressEnforced: true, entries });
    }
  }
  const policyGenerations = s.peersPerSubject > 0 ? ["synthetic-in", "synthetic-out"].map((name) => ({ key: `CiliumNetworkPolicy/ns-0/${name}`, uid: `uid-${name}`, generation: 1 })) : [];
  return { policies, ipcache, identities, rules, policyGenerations };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let v: Record<string, string | undefined>;
  try {
    v = parseArgs({ options: Object.fromEntries(["out", "pods", "nodes", "identities", "namespaces", "peers-per-subject"].map((k) => [k, { type: "string" as const }])), strict: true }).values as Record<string, string | undefined>;
  } catch (e) {
    process.stderr.write(`synthetic-state: ${flagError(e)}\n`);
    process.exit(2);
  }
  const defaults: Record<string, number> = { pods: 50_000, nodes: 1000, identities: 5000, namespaces: 50, "peers-per-subject": 100 };
  const n: Record<string, number> = {};
  for (const [k, d] of Object.entries(defaults)) {
    n[k] = v[k] === undefined ? d : Number(v[k]);
    const min = k === "peers-per-subject" ? 0 : 1;
    if (!Number.isInteger(n[k]) || n[k]! < min) {
      process.stderr.write(`synthetic-state: --${k}: "${v[k]}" is not an integer ≥ ${min}\n`);
      process.exit(2);
    }
  }
  if (!v.out) {
    process.stderr.write("synthetic-state: --out: the file to write is required\n");
    process.exit(2);
  }
  const state = syntheticState({ pods: n.pods!, nodes: n.nodes!, identities: n.identities!, namespaces: n.namespaces!, peersPerSubject: n["peers-per-subject"]! });
  writeFileSync(v.out, JSON.stringify({ version: 1, state, policyEnforcementMode: "default" }));
  process.stdout.write(`${JSON.stringify({ out: v.out, ipcache: state.ipcache.length, identities: state.identities.length, subjects: state.policies.length, entries: state.policies.reduce((a, p) => a + p.entries.length, 0) })}\n`);
}
