// What each node should hold, from the operator's caches: the core compiler is kept current from
// identities and parsed policies; a node's state is the compiled policy of the identities its pods
// have, the cluster ipcache (pod IP → identity, node), identity labels and the rule table.
import type { LabelSet, Policy } from "../../core/model.ts";
import { PolicyCompiler, policyKey } from "../../core/compiler.ts";
import { IDENTITY, RESERVED_IDENTITIES } from "../../core/identity.ts";
import { formatLabel } from "../../core/labels.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import type { IPCacheEntry, NodeState, PolicyGeneration } from "../../core/wire.ts";
import type { Informer, InformerEvent } from "../runtime/informer.ts";
import type { KubeObject } from "../runtime/kube.ts";
import { IDENTITY_ANNOTATION, type IdentityObject, type PodObject, labelSetOfIdentity, podNeedsIdentity } from "../identity.ts";
import { type NodeObject, nodeAddresses } from "../node.ts";
import type { Enforcement, PolicyObject } from "../policy.ts";
import type { NodeReport } from "./server.ts";

export class NodeStateSource {
  readonly compiler = new PolicyCompiler();
  private readonly identityLabels = new Map<number, LabelSet>();
  /** policy key → the uid and generation whose parts the compiler holds (the last valid one). */
  private readonly compiled = new Map<string, PolicyGeneration>();

  constructor(
    private readonly pods: Informer<PodObject>,
    private readonly nodes: Informer<NodeObject>,
  ) {
    for (const r of RESERVED_IDENTITIES) {
      this.compiler.upsertIdentity(r.id, r.labels);
      this.identityLabels.set(r.id, r.labels);
    }
  }

  /** Informer handler for CiliumIdentity objects. */
  readonly onIdentity = (ev: InformerEvent<IdentityObject>): void => {
    const n = Number(ev.obj.metadata.name);
    if (!Number.isInteger(n)) return;
    if (ev.type === "delete") {
      this.compiler.removeIdentity(n);
      this.identityLabels.delete(n);
      return;
    }
    const labels = labelSetOfIdentity(ev.obj);
    this.identityLabels.set(n, labels);
    this.compiler.upsertIdentity(n, labels);
  };

  /**
   * Informer handler for policies. An object that no longer parses keeps its last valid version in
   * force (fail closed: a broken edit never silently drops a default-deny); deletion removes it.
   */
  readonly onPolicy = (ev: InformerEvent<PolicyObject>): void => {
    const key = policyKey({ kind: (ev.obj.kind ?? "") as Policy["kind"], namespace: ev.obj.metadata.namespace, name: ev.obj.metadata.name });
    if (ev.type === "delete") {
      this.compiler.removePolicy(key);
      this.compiled.delete(key);
      return;
    }
    const parsed = parsePolicyObject(ev.obj);
    if (!parsed.ok) return;
    this.compiler.upsertPolicy(key, parsed.value);
    this.compiled.set(key, { key, uid: ev.obj.metadata.uid ?? "", generation: ev.obj.metadata.generation ?? 0 });
  };

  private identityOf(pod: PodObject): number | undefined {
    const n = Number(pod.metadata.annotations?.[IDENTITY_ANNOTATION]);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  private nodeIP(name: string | undefined): string | undefined {
    if (!name) return undefined;
    const node = this.nodes.get(name);
    return node ? nodeAddresses(node).find((a) => a.type === "InternalIP")?.ip : undefined;
  }

  ipcache(): IPCacheEntry[] {
    const out = new Map<string, IPCacheEntry>();
    for (const node of this.nodes.list()) {
      for (const a of nodeAddresses(node)) out.set(hostPrefix(a.ip), { prefix: hostPrefix(a.ip), identity: IDENTITY.remoteNode, node: a.ip });
    }
    for (const pod of this.pods.list()) {
      const id = this.identityOf(pod);
      if (id === undefined || !podNeedsIdentity(pod)) continue;
      const node = this.nodeIP(pod.spec?.nodeName);
      for (const ip of podIPs(pod)) out.set(hostPrefix(ip), { prefix: hostPrefix(ip), identity: id, ...(node ? { node } : {}), pod: `${pod.metadata.namespace ?? ""}/${pod.metadata.name}` });
    }
    return [...out.values()];
  }

  /** The full desired state of `node`. */
  stateFor(node: string): NodeState {
    const hosted = new Set<number>();
    for (const pod of this.pods.list()) {
      if (pod.spec?.nodeName !== node || !podNeedsIdentity(pod)) continue;
      const id = this.identityOf(pod);
      if (id !== undefined) hosted.add(id);
    }
    const policies = [...hosted].sort((a, b) => a - b).map((id) => this.compiler.snapshot(id));
    const rules = [...this.compiler.ruleTable()].map(([id, origin]) => ({ id, origin }));
    const identities = [...this.identityLabels].map(([id, labels]) => ({ id, labels: labels.labels.map(formatLabel) }));
    return { policies, ipcache: this.ipcache(), identities, rules, policyGenerations: [...this.compiled.values()] };
  }

  /** How many of `nodes` enforce this generation of `obj`, and which refused it. */
  enforcement(obj: KubeObject, nodes: ReadonlySet<string>, reports: readonly NodeReport[]): Enforcement {
    const key = policyKey({ kind: (obj.kind ?? "") as Policy["kind"], namespace: obj.metadata.namespace, name: obj.metadata.name });
    const has = (state: NodeState | undefined): boolean =>
      state?.policyGenerations.some((g) => g.key === key && g.uid === obj.metadata.uid && g.generation >= (obj.metadata.generation ?? 0)) ?? false;
    let acknowledged = 0;
    const refused: { node: string; message: string }[] = [];
    for (const r of reports) {
      if (!nodes.has(r.node)) continue;
      if (has(r.acked)) acknowledged++;
      else if (r.nack && has(r.nack.state)) refused.push({ node: r.node, message: r.nack.error });
    }
    return { acknowledged, refused };
  }
}

function podIPs(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
}

function hostPrefix(ip: string): string {
  return ip.includes(":") ? `${ip}/128` : `${ip}/32`;
}
