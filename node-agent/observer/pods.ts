// Which pod holds an address, for naming both ends of a flow: local pods from the CNI, remote ones from the ipcache's `pod`.
import { familyBits, formatIP, parseIP, parsePrefix, prefixContains, type Prefix } from "../../core/cidr.ts";
import type { IPCacheEntry } from "../../core/wire.ts";
import type { Workload } from "../../core/workload.ts";

export interface PodRef {
  readonly namespace: string;
  readonly pod: string;
  /** Its workload, when the operator named one (the CNI's registrations do not know it). */
  readonly workload?: Workload;
}

/** `namespace/name` as the operator writes it in an ipcache entry; undefined when either part is missing. */
export function parsePodRef(s: string): PodRef | undefined {
  const slash = s.indexOf("/");
  if (slash <= 0 || slash === s.length - 1) return undefined;
  return { namespace: s.slice(0, slash), pod: s.slice(slash + 1) };
}

/** The canonical text of an address (RFC 5952 for IPv6), so an event's address and the ipcache's agree. */
export function canonicalAddress(ip: string): string {
  if (!ip.includes(":")) return ip; // IPv4 text from the datapath is already canonical
  const p = parseIP(ip);
  return p === undefined ? ip : formatIP(p.family, p.addr);
}

/** Address → pod for every single-address ipcache entry that names its pod (every pod in the cluster, on any node). */
export function podsFromIpcache(ipcache: readonly IPCacheEntry[]): Map<string, PodRef> {
  const out = new Map<string, PodRef>();
  for (const e of ipcache) {
    if (e.pod === undefined) continue;
    const p = parsePrefix(e.prefix);
    if (p === undefined || p.bits !== (p.family === 4 ? 32 : 128)) continue; // pods hold single addresses
    const ref = parsePodRef(e.pod);
    if (ref !== undefined) out.set(formatIP(p.family, p.addr), e.workload !== undefined ? { ...ref, workload: e.workload } : ref);
  }
  return out;
}

/**
 * The pod behind `ip`: this node's own registration first (known the moment the CNI adds the pod),
 * then the cluster-wide ipcache (remote pods, and local ones the CNI did not name). The workload is
 * the ipcache's, when it names the same pod.
 */
export function podByAddress(ip: string, local: ReadonlyMap<string, PodRef>, cluster: ReadonlyMap<string, PodRef>): PodRef | undefined {
  const key = local.has(ip) || cluster.has(ip) || !ip.includes(":") ? ip : canonicalAddress(ip);
  const own = local.get(key);
  const known = cluster.get(key);
  if (own === undefined) return known;
  return known?.workload !== undefined && own.workload === undefined && known.namespace === own.namespace && known.pod === own.pod ? { ...own, workload: known.workload } : own;
}

/**
 * Address → identity by the ipcache's longest matching prefix (what the datapath would find), for the peers
 * of a proxy's flows, which carry no identity of their own; undefined when no prefix holds the address.
 */
export function identityIndex(ipcache: readonly IPCacheEntry[]): (ip: string) => number | undefined {
  const entry = ipcacheIndex(ipcache);
  return (ip) => entry(ip)?.identity;
}

/** Address → the ipcache entry of its longest matching prefix (its identity, and the node that hosts it, if remote). */
export function ipcacheIndex(ipcache: readonly IPCacheEntry[]): (ip: string) => IPCacheEntry | undefined {
  const hosts = new Map<string, IPCacheEntry>();
  const prefixes: { prefix: Prefix; entry: IPCacheEntry }[] = [];
  for (const e of ipcache) {
    const p = parsePrefix(e.prefix);
    if (p === undefined) continue;
    if (p.bits === familyBits(p.family)) hosts.set(formatIP(p.family, p.addr), e);
    else prefixes.push({ prefix: p, entry: e });
  }
  prefixes.sort((a, b) => b.prefix.bits - a.prefix.bits);
  return (ip) => {
    const a = parseIP(ip);
    if (a === undefined) return undefined;
    const host = hosts.get(formatIP(a.family, a.addr));
    if (host !== undefined) return host;
    const asPrefix = { ...a, bits: familyBits(a.family) };
    return prefixes.find((x) => x.prefix.family === a.family && prefixContains(x.prefix, asPrefix))?.entry;
  };
}
