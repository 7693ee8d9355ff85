// The cluster ipcache kept per event: who claims each prefix (pod addresses, node addresses, policy
// CIDR prefixes) and the entry the strongest claim gives it; an event costs O(what it moves), and
// take() hands back what moved since the last take as the delta every node is sent.
import { canonicalPrefix, hostPrefix } from "./cidr.ts";
import { IDENTITY } from "./identity.ts";
import { comparePrefixes, mergeIPCache, sameIPCacheEntry } from "./nodestate.ts";
import type { IPCacheEntry } from "./wire.ts";
import type { Workload } from "./workload.ts";

/** What of a pod the ipcache holds: its identity, the node it runs on (name), its addresses and its workload (for flows). */
export interface PodAddresses {
  readonly identity: number;
  readonly node?: string;
  readonly ips: readonly string[];
  readonly workload?: Workload;
}

/** A node's address as CiliumNode lists it (InternalIP is the tunnel endpoint of its pods). */
export interface NodeAddress {
  readonly type: string;
  readonly ip: string;
}

/** What moved since the last take: the ipcache (sorted by prefix, unchanged entries as the same objects) and its delta. */
export interface IPCacheChange {
  readonly entries: readonly IPCacheEntry[];
  readonly upserts: readonly IPCacheEntry[];
  readonly removals: readonly string[];
}

interface PodClaim {
  readonly identity: number;
  readonly node: string | undefined;
  readonly workload: Workload | undefined;
  readonly prefixes: readonly string[];
  /** Its addresses in canonical form (how a Service's backends name them). */
  readonly addresses: readonly string[];
}

interface NodeClaim {
  readonly internal: string | undefined;
  /** prefix → the address that gave it (the first of the node's addresses with that prefix). */
  readonly prefixes: ReadonlyMap<string, string>;
  /** The node's host subject identity, which its addresses carry as their ipBlock identity for toNodes/fromNodes (core/node-peers.ts). */
  readonly identity: number | undefined;
}

/**
 * Who claims one prefix; a pod beats a node, a node beats a policy CIDR, and within a kind the smallest key wins.
 * A kind's set exists only while someone of that kind claims the prefix (nearly every prefix has one kind of claimant).
 */
interface Claims {
  pods?: Set<string>;
  nodes?: Set<string>;
}

export class ClusterIPCache {
  private readonly pods = new Map<string, PodClaim>();
  private readonly nodes = new Map<string, NodeClaim>();
  private readonly cidrs = new Map<string, number>();
  private readonly ipBlocks = new Map<string, number>();
  private readonly claims = new Map<string, Claims>();
  /** canonical address → the pods that have it. */
  private readonly podsByAddress = new Map<string, Set<string>>();
  /** node name → the pods on it (their entries carry the node's InternalIP). */
  private readonly podsOnNode = new Map<string, Set<string>>();
  private readonly current = new Map<string, IPCacheEntry>();
  private readonly touched = new Set<string>();
  private sorted: readonly IPCacheEntry[] = [];

  /** Sets (or, with undefined, removes) the addresses of the pod `key` (`namespace/name`). */
  setPod(key: string, pod: PodAddresses | undefined): void {
    const old = this.pods.get(key);
    if (old) {
      for (const p of old.prefixes) this.unclaim(p, "pods", key);
      for (const a of old.addresses) deleteFrom(this.podsByAddress, a, key);
      if (old.node !== undefined) deleteFrom(this.podsOnNode, old.node, key);
    }
    if (!pod || pod.ips.length === 0) {
      this.pods.delete(key);
      return;
    }
    const prefixes = [...new Set(pod.ips.map(hostPrefix))];
    const node = pod.node || undefined;
    const addresses = [...new Set(pod.ips.map(canonicalAddress).filter((a): a is string => a !== undefined))];
    this.pods.set(key, { identity: pod.identity, node, workload: pod.workload, prefixes, addresses });
    for (const p of prefixes) this.claim(p, "pods", key);
    for (const a of addresses) addTo(this.podsByAddress, a, key);
    if (node !== undefined) addTo(this.podsOnNode, node, key);
  }

  /**
   * Sets (or removes) the addresses of the node `name` and the identity node selectors know it by (`identity`, its host
   * subject's); a new InternalIP moves the entries of its pods.
   */
  setNode(name: string, addresses: readonly NodeAddress[] | undefined, identity?: number): void {
    const old = this.nodes.get(name);
    if (old) for (const p of old.prefixes.keys()) this.unclaim(p, "nodes", name);
    const prefixes = new Map<string, string>();
    for (const a of addresses ?? []) if (!prefixes.has(hostPrefix(a.ip))) prefixes.set(hostPrefix(a.ip), a.ip);
    const internal = addresses?.find((a) => a.type === "InternalIP")?.ip;
    if (addresses === undefined) this.nodes.delete(name);
    else this.nodes.set(name, { internal, prefixes, identity });
    for (const p of prefixes.keys()) this.claim(p, "nodes", name);
    if (old?.internal !== internal) for (const pod of this.podsOnNode.get(name) ?? []) for (const p of this.pods.get(pod)!.prefixes) this.touched.add(p);
  }

  /** Sets (or removes) the CIDR identity of a prefix a policy names. */
  setCIDR(prefix: string, identity: number | undefined): void {
    if (identity === undefined) this.cidrs.delete(prefix);
    else this.cidrs.set(prefix, identity);
    this.touched.add(prefix);
  }

  /** Sets (or removes) the ipBlock identity of a prefix a NetworkPolicy ipBlock names (core/ipblock.ts): it rides on the prefix's entry. */
  setIPBlock(prefix: string, identity: number | undefined): void {
    if (identity === undefined) this.ipBlocks.delete(prefix);
    else this.ipBlocks.set(prefix, identity);
    this.touched.add(prefix);
  }

  /** The identity of the pod that has the address `ip` (in any spelling; the smallest pod key when several do), or undefined. */
  podIdentity(ip: string): number | undefined {
    const a = canonicalAddress(ip);
    const pod = a === undefined ? undefined : smallest(this.podsByAddress.get(a) ?? new Set());
    return pod === undefined ? undefined : this.pods.get(pod)!.identity;
  }

  /** The whole ipcache, sorted by prefix, as of the last take. */
  entries(): readonly IPCacheEntry[] {
    return this.sorted;
  }

  /** What moved since the last take (entries compared by value: one set back as it was is no change and keeps its object), or undefined when nothing did. */
  take(): IPCacheChange | undefined {
    this.settle();
    const upserts: IPCacheEntry[] = [];
    const removals: string[] = [];
    for (const [prefix, before] of this.before) {
      const now = this.current.get(prefix);
      if (now === undefined) {
        if (before !== undefined) removals.push(prefix);
      } else if (before === undefined || !sameIPCacheEntry(before, now)) upserts.push(now);
      else this.current.set(prefix, before);
    }
    this.before.clear();
    if (upserts.length === 0 && removals.length === 0) return undefined;
    upserts.sort((a, b) => comparePrefixes(a.prefix, b.prefix));
    removals.sort(comparePrefixes);
    this.sorted = mergeIPCache(this.sorted, upserts, removals);
    return { entries: this.sorted, upserts, removals };
  }

  /** Each prefix's entry as of the last take, for the prefixes recomputed since (undefined: it had none). */
  private readonly before = new Map<string, IPCacheEntry | undefined>();

  /** Recomputes the entries of the prefixes touched since the last call. */
  private settle(): void {
    for (const prefix of this.touched) {
      const old = this.current.get(prefix);
      if (!this.before.has(prefix)) this.before.set(prefix, old);
      const now = this.entryOf(prefix);
      if (now === undefined) this.current.delete(prefix);
      else if (old === undefined || !sameIPCacheEntry(old, now)) this.current.set(prefix, now);
    }
    this.touched.clear();
  }

  /**
   * The strongest claim on `prefix`, as an entry, with its second identity: a node's address carries the node's (for
   * node selectors), any other prefix its ipBlock identity when a NetworkPolicy ipBlock names it. A node's exact
   * address as an ipBlock loses nothing: the datapath never uses an ipBlock identity for a node peer.
   */
  private entryOf(prefix: string): IPCacheEntry | undefined {
    const e = this.claimedEntry(prefix);
    const node = e !== undefined && e.pod === undefined && e.identity === IDENTITY.remoteNode ? this.claims.get(prefix)?.nodes : undefined;
    const ipBlockIdentity = node !== undefined ? this.nodes.get(smallest(node) ?? "")?.identity : this.ipBlocks.get(prefix);
    // Every ipBlock prefix has a CIDR identity too (or is a pod's or a node's address), so it has an entry.
    return e === undefined || ipBlockIdentity === undefined ? e : { ...e, ipBlockIdentity };
  }

  private claimedEntry(prefix: string): IPCacheEntry | undefined {
    const c = this.claims.get(prefix);
    const pod = c?.pods && smallest(c.pods);
    if (pod !== undefined) {
      const claim = this.pods.get(pod)!;
      const node = claim.node === undefined ? undefined : this.nodes.get(claim.node)?.internal;
      return { prefix, identity: claim.identity, ...(node ? { node } : {}), pod, ...(claim.workload ? { workload: claim.workload } : {}) };
    }
    const node = c?.nodes && smallest(c.nodes);
    if (node !== undefined) return { prefix, identity: IDENTITY.remoteNode, node: this.nodes.get(node)!.prefixes.get(prefix)! };
    const cidr = this.cidrs.get(prefix);
    return cidr === undefined ? undefined : { prefix, identity: cidr };
  }

  private claim(prefix: string, kind: keyof Claims, key: string): void {
    let c = this.claims.get(prefix);
    if (!c) this.claims.set(prefix, (c = {}));
    (c[kind] ??= new Set()).add(key);
    this.touched.add(prefix);
  }

  private unclaim(prefix: string, kind: keyof Claims, key: string): void {
    const c = this.claims.get(prefix);
    if (!c) return;
    const set = c[kind];
    if (set?.delete(key) && set.size === 0) c[kind] = undefined;
    if (c.pods === undefined && c.nodes === undefined) this.claims.delete(prefix);
    this.touched.add(prefix);
  }
}

function canonicalAddress(ip: string): string | undefined {
  const p = canonicalPrefix(hostPrefix(ip));
  return p?.slice(0, p.indexOf("/"));
}

function smallest(keys: ReadonlySet<string>): string | undefined {
  let min: string | undefined;
  for (const k of keys) if (min === undefined || k < min) min = k;
  return min;
}

function addTo(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function deleteFrom(m: Map<string, Set<string>>, k: string, v: string): void {
  const s = m.get(k);
  if (s?.delete(v) && s.size === 0) m.delete(k);
}
