// Finds every agent's Hubble Observer API in a cluster: the `membrane.io/hubble-address` annotation of each CiliumNode.
import { KubeClient, listAll, type KubeObject } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";

/** Set by each agent on its CiliumNode: where its Hubble Observer gRPC API listens, `unix:/path` or `host:port` (mutual TLS). */
export const HUBBLE_ADDRESS_ANNOTATION = "membrane.io/hubble-address";

/** The part of a CiliumNode discovery reads. */
export type CiliumNodeMeta = KubeObject;

/** A node's Hubble API address (`membrane.io/hubble-address`), or why there is none. */
export type HubblePeer = { readonly node: string; readonly address: string } | { readonly node: string; readonly address?: undefined; readonly reason: string };

/** Pure: the Hubble address each CiliumNode names, sorted by node name. */
export function hubblePeersOf(nodes: readonly CiliumNodeMeta[]): HubblePeer[] {
  return [...nodes]
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0))
    .map((n): HubblePeer => {
      const address = n.metadata.annotations?.[HUBBLE_ADDRESS_ANNOTATION];
      if (address === undefined || address === "") return { node: n.metadata.name, reason: `metadata.annotations["${HUBBLE_ADDRESS_ANNOTATION}"]: not set (is the agent running on this node?)` };
      if (!address.startsWith("unix:/") && parseHostPortLoose(address) === undefined) {
        return { node: n.metadata.name, reason: `metadata.annotations["${HUBBLE_ADDRESS_ANNOTATION}"]: "${address}" is not unix:/PATH or HOST:PORT` };
      }
      return { node: n.metadata.name, address };
    });
}

function parseHostPortLoose(s: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(s);
  return m && Number(m[2]) <= 65535 ? { host: m[1]!, port: Number(m[2]) } : undefined;
}

/** Lists the cluster's CiliumNodes (all pages) and returns each node's Hubble address. */
export async function discoverHubblePeers(client: KubeClient): Promise<HubblePeer[]> {
  return hubblePeersOf(await listAll<CiliumNodeMeta>(client, CILIUM_NODES));
}
