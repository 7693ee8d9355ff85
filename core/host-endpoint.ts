// Each node's host endpoint as the compiler sees it: a subject identity of its own (reserved:host plus the node's labels) that CCNP nodeSelectors match, sent to its node as reserved:host; also the peer toNodes/fromNodes select.
import type { LabelSet, PolicyEntry } from "./model.ts";
import { IDENTITY, LOCAL_IDENTITY_FLAG, MAX_CLUSTER_IDENTITY } from "./identity.ts";
import { LABEL_SOURCE, label, labelSetFrom } from "./labels.ts";

/**
 * Node host subjects live between the cluster and the local scopes, numbers no packet carries. As a
 * subject each node receives its own as reserved:host. As a peer only node selectors (toNodes/fromNodes)
 * select one (the selector cache keeps every other matcher away): the datapath reaches it by its node's
 * addresses in the ipBlock map (core/node-peers.ts).
 */
export const MIN_NODE_HOST_IDENTITY = MAX_CLUSTER_IDENTITY + 1;
export const MAX_NODE_HOST_IDENTITY = LOCAL_IDENTITY_FLAG - 1;

export function isNodeHostIdentity(id: number): boolean {
  return Number.isInteger(id) && id >= MIN_NODE_HOST_IDENTITY && id <= MAX_NODE_HOST_IDENTITY;
}

/**
 * The labels a nodeSelector sees for a node, as Cilium gives its host endpoint: `reserved:host` and
 * each label of the Node object under the `k8s` source (a bare selector key matches any source).
 */
export function nodeHostLabels(nodeLabels: Readonly<Record<string, string>> | undefined): LabelSet {
  const out = [label(LABEL_SOURCE.reserved, "host")];
  for (const [k, v] of Object.entries(nodeLabels ?? {})) out.push(label(LABEL_SOURCE.k8s, k, v));
  return labelSetFrom(out);
}

/** One node host subject number per node name, reused after its node is gone. */
export class NodeHostIdentities {
  private readonly byNode = new Map<string, number>();
  private readonly free: number[] = [];
  private next = MIN_NODE_HOST_IDENTITY;

  idOf(node: string): number | undefined {
    return this.byNode.get(node);
  }

  /** The node's number, taken on first use; throws when the range is used up (16 million nodes: a bug). */
  acquire(node: string): number {
    let id = this.byNode.get(node);
    if (id !== undefined) return id;
    id = this.free.pop() ?? this.next++;
    if (id > MAX_NODE_HOST_IDENTITY) throw new Error(`node host subjects exhausted at node ${node}`);
    this.byNode.set(node, id);
    return id;
  }

  /** Gives the node's number back; the number it had (undefined if none). */
  release(node: string): number | undefined {
    const id = this.byNode.get(node);
    if (id === undefined) return undefined;
    this.byNode.delete(node);
    this.free.push(id);
    return id;
  }
}

const asHost = (e: PolicyEntry): PolicyEntry => ({ ...e, subject: IDENTITY.host });

/** A node host subject's compiled policy (or delta) as its node holds it: subject reserved:host. */
export function asHostSubject<T extends { readonly subject: number; readonly entries: readonly PolicyEntry[] }>(p: T): T {
  return { ...p, subject: IDENTITY.host, entries: p.entries.map(asHost) };
}

export function asHostDelta<T extends { readonly subject: number; readonly added: readonly PolicyEntry[]; readonly removed: readonly PolicyEntry[] }>(d: T): T {
  return { ...d, subject: IDENTITY.host, added: d.added.map(asHost), removed: d.removed.map(asHost) };
}
