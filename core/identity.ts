// Numeric security identities: the reserved ones, the cluster and local CIDR scopes, CIDR labels, and the allocator.
import type { Label, LabelSet, Result } from "./model.ts";
import { LABEL_SOURCE, label, labelSetFrom } from "./labels.ts";
import { coveringPrefixes, formatPrefix, parsePrefix, type IPFamily, type Prefix } from "./cidr.ts";

export interface ReservedIdentity {
  readonly id: number;
  readonly name: string;
  readonly labels: LabelSet;
}

/** Cilium's reserved identity numbers (below 256): the one table every component reads them from. */
export const IDENTITY = {
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  remoteNode: 6,
  kubeAPIServer: 7,
  ingress: 8,
  worldIPv4: 9,
  worldIPv6: 10,
} as const;

/** Each reserved identity's label name (`reserved:<name>`), as policies write it in entities and selectors. */
const RESERVED_NAMES: Readonly<Record<keyof typeof IDENTITY, string>> = {
  host: "host",
  world: "world",
  unmanaged: "unmanaged",
  health: "health",
  init: "init",
  remoteNode: "remote-node",
  kubeAPIServer: "kube-apiserver",
  ingress: "ingress",
  worldIPv4: "world-ipv4",
  worldIPv6: "world-ipv6",
};

/** The reserved identities, each labelled `reserved:<name>`, in number order. */
export const RESERVED_IDENTITIES: readonly ReservedIdentity[] = Object.freeze(
  (Object.keys(IDENTITY) as (keyof typeof IDENTITY)[])
    .map((k) => Object.freeze({ id: IDENTITY[k], name: RESERVED_NAMES[k], labels: labelSetFrom([label(LABEL_SOURCE.reserved, RESERVED_NAMES[k])]) }))
    .sort((a, b) => a.id - b.id),
);

const byName = new Map(RESERVED_IDENTITIES.map((r) => [r.name, r]));
const byId = new Map(RESERVED_IDENTITIES.map((r) => [r.id, r]));

export function reservedIdentityByName(name: string): ReservedIdentity | undefined {
  return byName.get(name);
}

export function reservedIdentityById(id: number): ReservedIdentity | undefined {
  return byId.get(id);
}

/**
 * Whether a subject is enforced both ways whatever selects it: reserved:init, an endpoint whose labels are not known yet
 * (Cilium's computePolicyEnforcementAndRules: default deny). The policies that select it (an init policy) only open.
 */
export function alwaysEnforced(subject: number): boolean {
  return subject === IDENTITY.init;
}

/**
 * The `cluster` entity as a peer class (issue #21): a rule whose peers are exactly the entity compiles to entries for
 * this reserved peer instead of one per identity, and the datapath looks them up for every peer in the class, between
 * the peer's own entries and the wildcard's (core/policy/mapstate.ts lookup, bpf/lib/policy.h). Never allocated.
 */
export const CLUSTER_CLASS_PEER = 255;

/** The reserved identities of the `cluster` entity (core/entities.ts): every reserved one but the world's. */
const RESERVED_IN_CLUSTER: ReadonlySet<number> = new Set([IDENTITY.host, IDENTITY.unmanaged, IDENTITY.health, IDENTITY.init, IDENTITY.remoteNode, IDENTITY.kubeAPIServer, IDENTITY.ingress]);

/**
 * Whether a peer identity is in the `cluster` class by its number, as the datapath decides it: a cluster identity
 * (every pod identity carries this cluster's label) or a reserved one in the cluster. The compiler checks that the
 * identities it knows agree with the entity's labels, and compiles no class entries while one does not.
 */
export function inClusterClass(id: number): boolean {
  return identityScope(id) === "cluster" || RESERVED_IN_CLUSTER.has(id);
}

/**
 * Every pod of the cluster as a peer class (issue #21): a rule whose peers are a selector of every pod
 * (`namespaceSelector: {}`, `toEndpoints: [{matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]}]`: every
 * identity with a namespace, so no reserved one) compiles to entries for this reserved peer instead of one per pod
 * identity. For a pod peer (inEveryPodClass) of a subject with such entries the datapath probes this class's keys after
 * the peer's own, instead of the cluster class's (its entries hold the cluster entity's rules too), then the wildcard's.
 */
export const EVERY_POD_CLASS_PEER = 254;

/** Whether a peer identity is in the "every pod" class by its number, as the datapath decides it: a cluster identity. */
export function inEveryPodClass(id: number): boolean {
  return identityScope(id) === "cluster";
}

/**
 * The `world` entity as a peer class (issue #21): a rule whose peers are exactly `toEntities/fromEntities: [world]`
 * compiles to entries for this reserved peer instead of one per CIDR identity. For a peer in the class by number
 * (inWorldClass) the datapath probes its keys after the peer's own, then the wildcard's. Never allocated.
 */
export const WORLD_CLASS_PEER = 253;

/**
 * Whether a peer identity is in the `world` class by its number, as the datapath decides it: the reserved world
 * identities (world, world-ipv4, world-ipv6) and the local scope: the operator's CIDR identities, whose labels carry
 * their family's world label, its ipBlock identities, which do not but are never a packet's peer (the datapath only
 * tries their own keys, after a pod's lookup), and the agents' FQDN identities, whose labels carry the world label of
 * the address's family too (fqdnIdentityLabels; the agent writes them the entries the class's do not give them,
 * core/dns/learned-peer.ts).
 */
export function inWorldClass(id: number): boolean {
  return id === IDENTITY.world || id === IDENTITY.worldIPv4 || id === IDENTITY.worldIPv6 || (id >= MIN_LOCAL_IDENTITY && id <= MAX_LOCAL_IDENTITY);
}

/**
 * The `world-ipv4` and `world-ipv6` entities as peer classes (issue #21): the templates of a world peer of that family
 * matched by exactly the direction's `world` and `world-ipv4` (or `world-ipv6`) entity terms, held once per key for
 * this reserved peer. For a world peer other than reserved:world the datapath probes the class of the packet's family
 * when the subject direction has its entries (a lens bit per family), else the world class. Never allocated.
 */
export const WORLD_IPV4_CLASS_PEER = 252;
export const WORLD_IPV6_CLASS_PEER = 251;


/**
 * The address family of a world peer, as the datapath knows it from the packet: world-ipv4/-ipv6 by number, a CIDR or
 * FQDN identity by its family's world label (cidrLabels; an address's identity only ever meets packets of its family).
 * Undefined for reserved:world (an unknown address of either family: the world class answers for it) and for an
 * identity with neither or both labels (the compiler then compiles no family class entries: strayFamilyIds).
 */
export function worldFamilyOf(id: number, labels?: LabelSet): IPFamily | undefined {
  if (id === IDENTITY.worldIPv4) return 4;
  if (id === IDENTITY.worldIPv6) return 6;
  if (labels === undefined || id === IDENTITY.world) return undefined;
  const v4 = labels.labels.some((l) => l.source === LABEL_SOURCE.reserved && l.key === "world-ipv4");
  const v6 = labels.labels.some((l) => l.source === LABEL_SOURCE.reserved && l.key === "world-ipv6");
  return v4 === v6 ? undefined : v4 ? 4 : 6;
}

/**
 * The identity of an address outside the ipcache (no pod, node or policy prefix holds it), as Cilium gives it and the
 * datapath reads it (bpf/lib/ipcache.h ipcache_unknown_identity): on a dual-stack node its family's world identity,
 * reserved:world-ipv4 or reserved:world-ipv6 (which `world` selects, and only its own family's entity); on a
 * single-stack node reserved:world in either family, which neither family entity selects. An unknown family:
 * reserved:world (fail closed).
 */
export function unknownAddressIdentity(family: IPFamily | undefined, dualStack: boolean): number {
  if (!dualStack) return IDENTITY.world;
  return family === 4 ? IDENTITY.worldIPv4 : family === 6 ? IDENTITY.worldIPv6 : IDENTITY.world;
}

/**
 * The class whose entries answer for `peer` after its own keys, in the datapath's order (bpf/lib/policy.h
 * policy_lookup): for a peer in the world class, its family's world class when it has a family (`family`: the
 * packet's, as in the datapath; without it world-ipv4/-ipv6 have theirs) other than reserved:world's and the subject direction has that class's
 * entries, else the world class when it has its entries; the every-pod class for a pod peer when it has its entries
 * (they hold the cluster entity's rules too), else the cluster class for a peer in it when it has its entries;
 * undefined: none. The world classes and the other two never hold the same peer.
 */
export function answeringClass(peer: number, hasEntriesOf: (classPeer: number) => boolean, family?: IPFamily): number | undefined {
  if (inWorldClass(peer)) {
    const fam = peer === IDENTITY.world ? undefined : (family ?? worldFamilyOf(peer));
    const familyClass = fam === 4 ? WORLD_IPV4_CLASS_PEER : fam === 6 ? WORLD_IPV6_CLASS_PEER : undefined;
    if (familyClass !== undefined && hasEntriesOf(familyClass)) return familyClass;
    return hasEntriesOf(WORLD_CLASS_PEER) ? WORLD_CLASS_PEER : undefined;
  }
  if (inEveryPodClass(peer) && hasEntriesOf(EVERY_POD_CLASS_PEER)) return EVERY_POD_CLASS_PEER;
  if (inClusterClass(peer) && hasEntriesOf(CLUSTER_CLASS_PEER)) return CLUSTER_CLASS_PEER;
  return undefined;
}

/** Numbers below this are reserved. */
export const MIN_CLUSTER_IDENTITY = 256;
export const MAX_CLUSTER_IDENTITY = 65535;
/** Local (node-scoped) identities, e.g. CIDR identities: flag bit 24 set; never sent as pod identities. */
export const LOCAL_IDENTITY_FLAG = 1 << 24;
export const MIN_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG;
export const MAX_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG + (1 << 24) - 1;
/**
 * The upper half of the local scope belongs to the agents: each gives the addresses its DNS proxy
 * learned identities of its own there (node-agent/dns/fqdn-policy.ts), so they never meet the
 * operator's CIDR and ipBlock identities in the lower half.
 */
export const MIN_FQDN_IDENTITY = LOCAL_IDENTITY_FLAG + (1 << 23);

export type IdentityScope = "reserved" | "cluster" | "local" | "invalid";

export function identityScope(id: number): IdentityScope {
  if (!Number.isInteger(id) || id <= 0) return "invalid";
  if (id < MIN_CLUSTER_IDENTITY) return "reserved";
  if (id <= MAX_CLUSTER_IDENTITY) return "cluster";
  if (id >= MIN_LOCAL_IDENTITY && id <= MAX_LOCAL_IDENTITY) return "local";
  return "invalid";
}

// ---------------------------------------------------------------------------------------------
// CIDR labels
// ---------------------------------------------------------------------------------------------

/**
 * The key of a `cidr:` label. IPv6 colons would read as a source delimiter, so, as in Cilium,
 * they become '-' (with a '0' added where the text would start or end with one).
 */
export function cidrLabelKey(p: Prefix): string {
  const text = formatPrefix(p);
  const slash = text.indexOf("/");
  let addr = text.slice(0, slash);
  if (p.family === 6) {
    if (addr.startsWith(":")) addr = `0${addr}`;
    if (addr.endsWith(":")) addr = `${addr}0`;
    addr = addr.replace(/:/g, "-");
  }
  return `${addr}${text.slice(slash)}`;
}

/** The prefix a `cidr:`/`ipblock:` label key stands for (the inverse of cidrLabelKey); undefined when it is not one. */
export function prefixOfLabelKey(key: string): Prefix | undefined {
  return parsePrefix(key.includes(".") || key.includes(":") ? key : key.replace(/-/g, ":"));
}

/**
 * The labels of a CIDR identity, as Cilium gives them: a `cidr:` label for the prefix and for every
 * prefix that contains it (so a `toCIDR: 10.0.0.0/8` selector matches the identity of
 * `10.1.2.0/24`), plus the world label of its family (CIDR identities are outside the cluster).
 * A malformed prefix yields the empty set.
 */
export function cidrLabels(prefix: string | Prefix): LabelSet {
  const p = typeof prefix === "string" ? parsePrefix(prefix) : prefix;
  if (p === undefined) return labelSetFrom([]);
  const labels: Label[] = coveringPrefixes(p).map((c) => label(LABEL_SOURCE.cidr, cidrLabelKey(c)));
  labels.push(label(LABEL_SOURCE.reserved, p.family === 4 ? "world-ipv4" : "world-ipv6"));
  return labelSetFrom(labels);
}

/**
 * The labels of an address learned from a DNS answer: its CIDR identity labels plus one `fqdn:`
 * label per name it answered for. A policy compiler given `fqdnIdentityLabels(ip, names)` for an
 * identity fills every toFQDNs peer whose matchName/matchPattern covers one of the names.
 */
export function fqdnIdentityLabels(ip: string, names: readonly string[]): LabelSet {
  return labelSetFrom([
    ...cidrLabels(ip).labels,
    ...names.map((n) => label(LABEL_SOURCE.fqdn, n.toLowerCase().replace(/\.$/, ""))),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------------------------

export interface IdentityAllocatorOptions {
  /** Inclusive range; defaults to the cluster scope [256, 65535]. */
  readonly min?: number;
  readonly max?: number;
  /** Identities that exist already: number → LabelSet key. */
  readonly existing?: Iterable<readonly [number, string]>;
  /** Numbers still referenced somewhere (e.g. by nodes), bound or not: never handed out again. */
  readonly referenced?: Iterable<number>;
}

export interface Allocation {
  readonly id: number;
  /** False when an identity for an equal key existed already. */
  readonly created: boolean;
}

/**
 * Hands out numeric identities for label-set keys: an equal key gets the existing number, a new
 * key the lowest number in range that is neither bound nor still referenced. Deterministic: the
 * result depends only on the bindings and references, not on history.
 */
export class IdentityAllocator {
  readonly min: number;
  readonly max: number;
  private readonly byKey = new Map<string, number>();
  private readonly byNumber = new Map<number, string>();
  private readonly referenced = new Set<number>();
  /** No free number lies below this. */
  private lowestCandidate: number;

  constructor(opts: IdentityAllocatorOptions = {}) {
    this.min = opts.min ?? MIN_CLUSTER_IDENTITY;
    this.max = opts.max ?? MAX_CLUSTER_IDENTITY;
    this.lowestCandidate = this.min;
    for (const [id, key] of opts.existing ?? []) this.bind(id, key);
    for (const id of opts.referenced ?? []) this.referenced.add(id);
  }

  /** Records an existing binding (e.g. a CiliumIdentity read at start-up). A later binding of the same key or number replaces the earlier. */
  bind(id: number, key: string): void {
    const oldKey = this.byNumber.get(id);
    if (oldKey !== undefined) this.byKey.delete(oldKey);
    const oldId = this.byKey.get(key);
    if (oldId !== undefined) this.byNumber.delete(oldId);
    this.byKey.set(key, id);
    this.byNumber.set(id, key);
    if (oldId !== undefined && oldId < this.lowestCandidate) this.lowestCandidate = oldId;
  }

  lookup(key: string): number | undefined {
    return this.byKey.get(key);
  }

  keyOf(id: number): string | undefined {
    return this.byNumber.get(id);
  }

  /** The number for `key`: the existing one, else the lowest free one; an error when the range is exhausted. */
  allocate(key: string): Result<Allocation> {
    const existing = this.byKey.get(key);
    if (existing !== undefined) return { ok: true, value: { id: existing, created: false } };
    for (let id = Math.max(this.lowestCandidate, this.min); id <= this.max; id++) {
      if (this.byNumber.has(id) || this.referenced.has(id)) continue;
      this.lowestCandidate = id + 1;
      this.byKey.set(key, id);
      this.byNumber.set(id, key);
      return { ok: true, value: { id, created: true } };
    }
    this.lowestCandidate = this.max + 1;
    return {
      ok: false,
      errors: [
        {
          path: "identity",
          message: `identity space exhausted: every number in [${this.min}, ${this.max}] is in use or still referenced`,
        },
      ],
    };
  }

  /** Unbinds `id`; it becomes free once it is no longer referenced. Returns whether it was bound. */
  release(id: number): boolean {
    const key = this.byNumber.get(id);
    if (key === undefined) return false;
    this.byNumber.delete(id);
    this.byKey.delete(key);
    this.freed(id);
    return true;
  }

  /** Marks a number as still referenced (it is never handed out while referenced). */
  reference(id: number): void {
    this.referenced.add(id);
  }

  unreference(id: number): void {
    if (this.referenced.delete(id)) this.freed(id);
  }

  /** Replaces the whole referenced set. */
  setReferenced(ids: Iterable<number>): void {
    for (const id of this.referenced) this.freed(id);
    this.referenced.clear();
    for (const id of ids) this.referenced.add(id);
  }

  isReferenced(id: number): boolean {
    return this.referenced.has(id);
  }

  /** Bound identities, ascending by number. */
  entries(): [number, string][] {
    return [...this.byNumber.entries()].sort((a, b) => a[0] - b[0]);
  }

  get size(): number {
    return this.byNumber.size;
  }

  private freed(id: number): void {
    if (id < this.lowestCandidate) this.lowestCandidate = id;
  }
}

/**
 * An allocator for node-local identities (1<<24 and up) of prefixes, keyed by the prefix's label
 * set: CIDR identities (cidrLabels, the default) and NetworkPolicy ipBlock identities
 * (core/ipblock.ts ipBlockLabels) share its numbers.
 */
export class LocalCIDRAllocator {
  private readonly allocator: IdentityAllocator;
  private readonly refs = new Map<number, number>();

  constructor(opts: { min?: number; max?: number } = {}) {
    this.allocator = new IdentityAllocator({ min: opts.min ?? MIN_LOCAL_IDENTITY, max: opts.max ?? MIN_FQDN_IDENTITY - 1 });
  }

  /** The identity of a prefix, taking one reference; an error for a malformed prefix or when exhausted. */
  acquire(prefix: string, labelsOf: (prefix: string) => LabelSet = cidrLabels): Result<{ id: number; labels: LabelSet; created: boolean }> {
    const labels = labelsOf(prefix);
    if (labels.labels.length === 0) return { ok: false, errors: [{ path: "cidr", message: `"${prefix}" is not an IP prefix` }] };
    const r = this.allocator.allocate(labels.key);
    if (!r.ok) return r;
    this.refs.set(r.value.id, (this.refs.get(r.value.id) ?? 0) + 1);
    return { ok: true, value: { id: r.value.id, labels, created: r.value.created } };
  }

  /** Drops one reference; the number is freed with the last. Returns whether the identity is gone. */
  release(id: number): boolean {
    const n = this.refs.get(id);
    if (n === undefined) return false;
    if (n > 1) {
      this.refs.set(id, n - 1);
      return false;
    }
    this.refs.delete(id);
    this.allocator.release(id);
    return true;
  }

  lookup(prefix: string, labelsOf: (prefix: string) => LabelSet = cidrLabels): number | undefined {
    const labels = labelsOf(prefix);
    return labels.labels.length === 0 ? undefined : this.allocator.lookup(labels.key);
  }
}
