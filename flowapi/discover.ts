// Finds every agent's observer API in a cluster: the `membrane.io/observer-address` annotation of each CiliumNode.
import { KubeClient, listAll, type KubeObject } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";

/** Set by each agent on its CiliumNode: `unix:/path/to/socket` or `http://host:port`. */
export const OBSERVER_ADDRESS_ANNOTATION = "membrane.io/observer-address";

/** Set by each agent on its CiliumNode: where its Hubble Observer gRPC API listens, `unix:/path` or `host:port` (mutual TLS). */
export const HUBBLE_ADDRESS_ANNOTATION = "membrane.io/hubble-address";

/** Where to connect for an observer address: a unix socket or an HTTP host and port. */
export type ObserverEndpoint = { readonly socketPath: string } | { readonly host: string; readonly port: number };

/**
 * Parses an observer address: `unix:/path`, `/path` (a socket) or `http://host:port`.
 * Undefined when it is none of these (the caller names the field).
 */
export function parseObserverAddress(address: string): ObserverEndpoint | undefined {
  if (address.startsWith("unix:")) {
    const path = address.slice("unix:".length);
    return path.startsWith("/") ? { socketPath: path } : undefined;
  }
  if (address.startsWith("/")) return { socketPath: address };
  try {
    const u = new URL(address);
    if (u.protocol !== "http:" || u.hostname === "" || (u.pathname !== "/" && u.pathname !== "")) return undefined;
    // URL keeps the brackets of an IPv6 literal; net.connect wants the bare address.
    const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
    return { host, port: Number(u.port || 80) };
  } catch {
    return undefined;
  }
}

export interface DiscoveredObserver {
  readonly node: string;
  readonly address: string;
}

/** A node whose observer cannot be asked, and why (no annotation, or one that is not an address). */
export interface UnreachableNode {
  readonly node: string;
  readonly reason: string;
}

export interface ObserverDiscovery {
  readonly observers: readonly DiscoveredObserver[];
  readonly unreachable: readonly UnreachableNode[];
}

/** The observer part of a CiliumNode (only what discovery reads). */
export type CiliumNodeMeta = KubeObject;

/** Pure: which observers a list of CiliumNodes names, sorted by node name. */
export function observersOf(nodes: readonly CiliumNodeMeta[]): ObserverDiscovery {
  const observers: DiscoveredObserver[] = [];
  const unreachable: UnreachableNode[] = [];
  for (const n of [...nodes].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0))) {
    const node = n.metadata.name;
    const address = n.metadata.annotations?.[OBSERVER_ADDRESS_ANNOTATION];
    if (address === undefined || address === "") {
      unreachable.push({ node, reason: `metadata.annotations["${OBSERVER_ADDRESS_ANNOTATION}"]: not set (is the agent running on this node?)` });
    } else if (parseObserverAddress(address) === undefined) {
      unreachable.push({ node, reason: `metadata.annotations["${OBSERVER_ADDRESS_ANNOTATION}"]: "${address}" is not unix:/PATH or http://HOST:PORT` });
    } else {
      observers.push({ node, address });
    }
  }
  return { observers, unreachable };
}

/** Lists the cluster's CiliumNodes (all pages) and returns each node's observer address. */
export async function discoverObservers(client: KubeClient): Promise<ObserverDiscovery> {
  return observersOf(await listAll<CiliumNodeMeta>(client, CILIUM_NODES));
}

/** `discoverObservers` with a client from a kubeconfig (`path`, else $KUBECONFIG, ~/.kube/config, in-cluster). */
export async function discoverObserversFromKubeconfig(kubeconfig?: string): Promise<ObserverDiscovery> {
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    return await discoverObservers(client);
  } finally {
    client.close();
  }
}

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
