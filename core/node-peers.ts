// toNodes/fromNodes peers: which identity stands for a node's addresses, and the matcher that selects those identities by Node labels.
//
// Cilium (with --enable-node-selector-labels) gives every other node a node-local identity carrying its Node labels and
// the local node's labels to reserved:host, so a node selector picks nodes by label wherever it is enforced. Here a
// node's addresses keep reserved:remote-node (reserved:host on the node itself) in the ipcache, which every other rule
// and the VXLAN trust read; each node address also carries the node's host subject identity (core/host-endpoint.ts:
// reserved:host plus the Node's labels) in the ipBlock map, and the datapath's second look for a node peer that did
// not meet a deny (bpf/lib/ipblock.h) tries that identity's keys: an allow there opens what default deny would drop, a
// deny there (egressDeny/ingressDeny) wins over an allow. Only node selectors select these identities.
import type { LabelSet, Policy, Selector, Verdict } from "./model.ts";
import { isNodeHostIdentity } from "./host-endpoint.ts";
import { IDENTITY, identityScope } from "./identity.ts";
import { matchesSelector } from "./selector.ts";

/** Whether a node selector picks the node whose host subject has `labels` (its Node labels, under the k8s source). */
export function nodeSelected(selector: Selector, id: number, labels: LabelSet): boolean {
  return isNodeHostIdentity(id) && matchesSelector(selector, labels);
}

/** Whether the datapath looks a peer's address up again for a node identity: a node's own address is host or remote-node. */
export function isNodePeer(id: number): boolean {
  return id === IDENTITY.host || id === IDENTITY.remoteNode;
}

/** Whether an address's answer in the ipBlock map may be used for `peer` (bpf/lib/ipblock.h ipblock_applies). */
export function secondLookApplies(peer: number, answer: number): boolean {
  return identityScope(peer) === "cluster" ? !isNodeHostIdentity(answer) : isNodePeer(peer) && isNodeHostIdentity(answer);
}

/**
 * Whether the datapath takes the second look (bpf/lib/ipblock.h second_look_runs), given the first lookup's verdict
 * (undefined: a miss): for a pod peer only on a miss in an enforced direction (ipBlocks only allow); for a node peer
 * also after an allow, since toNodes/fromNodes in a deny section deny one node among those an allow of its
 * remote-node/host identity (or of every peer) lets through, and a deny wins. A deny found there replaces the allow.
 */
export function secondLookRuns(peer: number, first: Verdict | undefined, enforced: boolean): boolean {
  if (isNodePeer(peer)) return first !== "deny";
  return identityScope(peer) === "cluster" && first === undefined && enforced;
}

/** Whether any rule of the policies has a node selector peer (then a node's labels move pod subjects' entries too). */
export function usesNodePeers(policies: readonly Policy[]): boolean {
  return policies.some((p) => p.rules.some((r) => r.peers.some((peer) => peer.kind === "nodes")));
}
