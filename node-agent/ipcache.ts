// The ipcache as the datapath holds it, derived from the operator's: whole for a snapshot, and per
// delta only for the prefixes the delta touches (its own, and the node addresses its entries name).
import { hostPrefix } from "../core/cidr.ts";
import { IDENTITY } from "../core/identity.ts";
import type { IPCacheEntry, NodeState } from "../core/wire.ts";
import type { IPBlockEntry, IpcacheEntry } from "./bpf/layout.ts";

const HOST_IDENTITY = IDENTITY.host;
const REMOTE_NODE_IDENTITY = IDENTITY.remoteNode;

/** Another (IPv4) node: a trusted source of VNI identities and the tunnel endpoint of its pods. */
const otherNode = (node: string | undefined, nodeIP: string | undefined): node is string => node !== undefined && node !== nodeIP && !node.includes(":");

/** The last result per operator ipcache (an applied state's is asked for when it is validated, written and replaced). */
const derived = new WeakMap<readonly IPCacheEntry[], { readonly nodeIP: string | undefined; readonly entries: readonly IpcacheEntry[] }>();

/**
 * The ipcache as the datapath needs it: the operator's prefixes (tunnelled to their node unless it
 * is this one), plus every other node that hosts a pod as `reserved:remote-node` with the node flag
 * (VNIs from it are trusted), plus this node as `reserved:host`. The operator's own entries win.
 * Computed once per ipcache array and node address (a 51,000-entry snapshot's is asked for three times).
 */
export function datapathIpcache(s: NodeState, nodeIP?: string): readonly IpcacheEntry[] {
  const memo = derived.get(s.ipcache);
  if (memo && memo.nodeIP === nodeIP) return memo.entries;
  const entries = deriveDatapathIpcache(s, nodeIP);
  derived.set(s.ipcache, { nodeIP, entries });
  return entries;
}

function deriveDatapathIpcache(s: NodeState, nodeIP: string | undefined): IpcacheEntry[] {
  const out = new Map<string, IpcacheEntry>();
  for (const e of s.ipcache) {
    if (otherNode(e.node, nodeIP)) out.set(hostPrefix(e.node), { cidr: hostPrefix(e.node), identity: REMOTE_NODE_IDENTITY, node: true });
  }
  if (nodeIP) out.set(hostPrefix(nodeIP), { cidr: hostPrefix(nodeIP), identity: HOST_IDENTITY });
  for (const e of s.ipcache) {
    const v = fromOperator(e, nodeIP);
    if (v) out.set(e.prefix, v);
  }
  return [...out.values()];
}

/**
 * What the operator's entry makes of its own prefix: a node's own address (the operator sends each
 * one as remote-node) keeps the node flag and is no tunnel endpoint, and for this node yields to
 * reserved:host (undefined); any other prefix is tunnelled to its node unless that is this one.
 */
function fromOperator(e: IPCacheEntry, nodeIP: string | undefined): IpcacheEntry | undefined {
  if (e.node !== undefined && e.prefix === hostPrefix(e.node)) return otherNode(e.node, nodeIP) ? { cidr: e.prefix, identity: e.identity, node: true } : undefined;
  return { cidr: e.prefix, identity: e.identity, ...(otherNode(e.node, nodeIP) ? { tunnelEndpoint: e.node } : {}) };
}

/**
 * The pod prefixes (IPv4) of every other node, by node address: what a WireGuard peer is allowed to send
 * and is sent when pod packets are routed into the device without VXLAN. A node's own address is not one.
 */
export function remotePodPrefixes(ipcache: readonly IPCacheEntry[], nodeIP?: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of ipcache) {
    if (!otherNode(e.node, nodeIP) || e.prefix === hostPrefix(e.node) || e.prefix.includes(":")) continue;
    const list = out.get(e.node) ?? [];
    list.push(e.prefix);
    out.set(e.node, list);
  }
  for (const list of out.values()) list.sort();
  return out;
}

export function sameIpcacheEntry(a: IpcacheEntry, b: IpcacheEntry): boolean {
  return a.cidr === b.cidr && a.identity === b.identity && a.tunnelEndpoint === b.tunnelEndpoint && a.node === b.node;
}

/** The NetworkPolicy ipBlock prefixes and their ipBlock identities (the operator sends them on the ipcache entries). */
export function datapathIPBlocks(s: NodeState): IPBlockEntry[] {
  return s.ipcache.flatMap((e) => (e.ipBlockIdentity === undefined ? [] : [{ cidr: e.prefix, identity: e.ipBlockIdentity }]));
}

/** The ipBlock map writes from one whole list to the next (a snapshot sets every entry). */
export function ipBlockWrites(from: readonly IPBlockEntry[], to: readonly IPBlockEntry[], snapshot: boolean): Pick<IpcacheWrites, "setBlocks" | "removeBlocks"> {
  const old = new Map(from.map((e) => [e.cidr, e.identity]));
  const keep = new Set(to.map((e) => e.cidr));
  return { setBlocks: to.filter((e) => snapshot || old.get(e.cidr) !== e.identity), removeBlocks: [...old.keys()].filter((cidr) => !keep.has(cidr)) };
}

/** The map writes that move the datapath's ipcache (and its ipBlock map, bpf/lib/ipblock.h) from one state to the next. */
export interface IpcacheWrites {
  readonly set: readonly IpcacheEntry[];
  readonly remove: readonly string[];
  readonly setBlocks: readonly IPBlockEntry[];
  readonly removeBlocks: readonly string[];
}

/** The operator's ipcache delta, as a wire delta carries it. */
export interface IPCacheDelta {
  readonly ipcacheUpserts: readonly IPCacheEntry[];
  readonly ipcacheRemovals: readonly string[];
}

/**
 * The operator's ipcache of one state by prefix, with how many entries name each node: what a delta
 * needs to find the datapath entries it moves without a pass over the whole table. Built once from a
 * state (a snapshot, a restart), then moved along with each applied delta.
 */
export class IpcacheIndex {
  private readonly byPrefix = new Map<string, IPCacheEntry>();
  private readonly nodeRefs = new Map<string, number>();

  constructor(
    /** The state's ipcache array this index describes (the agent rebuilds it when it holds another). */
    public of: readonly IPCacheEntry[],
    private readonly nodeIP: string | undefined,
  ) {
    for (const e of of) this.put(e);
  }

  /** The entry of `prefix` in the described state. */
  get(prefix: string): IPCacheEntry | undefined {
    return this.byPrefix.get(prefix);
  }

  /** The datapath writes `d` makes, computed from the prefixes it touches only (nothing here changes). */
  writes(d: IPCacheDelta): IpcacheWrites {
    const after = new Map<string, IPCacheEntry | undefined>();
    const refsAfter = new Map<string, number>();
    const touched = new Set<string>();
    const ref = (node: string | undefined, by: number): void => {
      if (node === undefined) return;
      refsAfter.set(node, (refsAfter.get(node) ?? this.nodeRefs.get(node) ?? 0) + by);
      touched.add(hostPrefix(node));
    };
    const move = (prefix: string, e: IPCacheEntry | undefined): void => {
      const old = after.has(prefix) ? after.get(prefix) : this.byPrefix.get(prefix);
      ref(old?.node, -1);
      ref(e?.node, +1);
      after.set(prefix, e);
      touched.add(prefix);
    };
    for (const e of d.ipcacheUpserts) move(e.prefix, e);
    for (const p of d.ipcacheRemovals) move(p, undefined);
    // The ipBlock identity rides on the delta's own prefixes only.
    const setBlocks: IPBlockEntry[] = [];
    const removeBlocks: string[] = [];
    for (const [prefix, e] of after) {
      const before = this.byPrefix.get(prefix)?.ipBlockIdentity;
      const now = e?.ipBlockIdentity;
      if (now !== undefined && now !== before) setBlocks.push({ cidr: prefix, identity: now });
      else if (now === undefined && before !== undefined) removeBlocks.push(prefix);
    }
    const set: IpcacheEntry[] = [];
    const remove: string[] = [];
    for (const cidr of touched) {
      const before = this.valueAt(cidr, (p) => this.byPrefix.get(p), (n) => this.nodeRefs.get(n) ?? 0);
      const now = this.valueAt(cidr, (p) => (after.has(p) ? after.get(p) : this.byPrefix.get(p)), (n) => refsAfter.get(n) ?? this.nodeRefs.get(n) ?? 0);
      if (now && (!before || !sameIpcacheEntry(before, now))) set.push(now);
      else if (!now && before) remove.push(cidr);
    }
    return { set, remove, setBlocks, removeBlocks };
  }

  /** Moves the index to the state after `d` (whose ipcache array is `of`). */
  apply(d: IPCacheDelta, of: readonly IPCacheEntry[]): void {
    for (const e of d.ipcacheUpserts) {
      this.drop(e.prefix);
      this.put(e);
    }
    for (const p of d.ipcacheRemovals) this.drop(p);
    this.of = of;
  }

  /** The datapath's entry for `cidr`, as datapathIpcache would give it, from lookups into one state. */
  private valueAt(cidr: string, entry: (prefix: string) => IPCacheEntry | undefined, refs: (node: string) => number): IpcacheEntry | undefined {
    const e = entry(cidr);
    const own = e && fromOperator(e, this.nodeIP);
    if (own) return own;
    if (this.nodeIP && cidr === hostPrefix(this.nodeIP)) return { cidr, identity: HOST_IDENTITY };
    // A node address named by some entry: the prefix is the address and /32 (otherNode is IPv4 only).
    const node = cidr.endsWith("/32") ? cidr.slice(0, -3) : undefined;
    if (node !== undefined && otherNode(node, this.nodeIP) && refs(node) > 0) return { cidr, identity: REMOTE_NODE_IDENTITY, node: true };
    return undefined;
  }

  private put(e: IPCacheEntry): void {
    this.byPrefix.set(e.prefix, e);
    if (e.node !== undefined) this.nodeRefs.set(e.node, (this.nodeRefs.get(e.node) ?? 0) + 1);
  }

  private drop(prefix: string): void {
    const old = this.byPrefix.get(prefix);
    if (!old) return;
    this.byPrefix.delete(prefix);
    if (old.node === undefined) return;
    const n = (this.nodeRefs.get(old.node) ?? 0) - 1;
    if (n > 0) this.nodeRefs.set(old.node, n);
    else this.nodeRefs.delete(old.node);
  }
}
