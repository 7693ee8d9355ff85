// Services as toServices sees them: which Services a peer selects, and their backends (pod identities, or CIDR prefixes) as data for the selector cache.
import type { Peer } from "../model.ts";
import { LABEL_SOURCE, label, labelSetFrom } from "../labels.ts";
import { matchesSelector } from "../selector.ts";
import { canonicalPrefix, hostPrefix } from "../cidr.ts";

/** A `toServices` entry as the parser produced it. */
export type ServicePeer = Extract<Peer, { kind: "service" }>;

/** A Service and the addresses its EndpointSlices list, as the operator reads them from the API. */
export interface ServiceEndpoints {
  readonly namespace: string;
  readonly name: string;
  /** The Service's own labels: what k8sServiceSelector matches. */
  readonly labels: Readonly<Record<string, string>>;
  /** Whether the Service has a pod selector (its EndpointSlices are then the controller's, listing pods). */
  readonly selectsPods: boolean;
  /** Every endpoint address of its EndpointSlices, ready or not: readiness is load balancing, not authorisation. */
  readonly addresses: readonly string[];
}

/** A Service's backends as the compiler selects them. */
export interface ServiceBackends {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The identities of the pods behind its addresses. */
  readonly identities: readonly number[];
  /** Its addresses that are no pod's, as host prefixes: selected as CIDR identities, as a toCIDR /32 (/128) would. */
  readonly prefixes: readonly string[];
}

/**
 * A Service's backends (`podIdentity` is asked with canonical addresses): an address that is a pod's (as the ipcache maps it) stands for that pod's
 * identity. Any other address of a Service *without* a selector (endpoints written by hand, e.g. a
 * database outside the cluster) is a CIDR prefix, as Cilium reads such Services. Any other address
 * of a Service *with* a selector selects nothing: its pod is not known yet (it will be when its
 * identity is) or runs in the host network, which toServices does not open.
 */
export function serviceBackends(svc: ServiceEndpoints, podIdentity: (ip: string) => number | undefined): ServiceBackends {
  const identities = new Set<number>();
  const prefixes = new Set<string>();
  for (const address of svc.addresses) {
    const prefix = canonicalPrefix(hostPrefix(address));
    if (prefix === undefined) continue;
    const id = podIdentity(prefix.slice(0, prefix.indexOf("/"))); // the canonical address
    if (id !== undefined) identities.add(id);
    else if (!svc.selectsPods) prefixes.add(prefix);
  }
  return {
    namespace: svc.namespace,
    name: svc.name,
    labels: svc.labels,
    identities: [...identities].sort((a, b) => a - b),
    prefixes: [...prefixes].sort(),
  };
}

/**
 * Whether a toServices entry selects a Service. `k8sService` names one Service; `k8sServiceSelector`
 * matches the Service's labels. A peer without a namespace (only in a CCNP: the parser gives a CNP's
 * entries the policy's namespace) selects matching Services in every namespace, as in Cilium.
 */
export function serviceSelects(peer: ServicePeer, svc: Pick<ServiceBackends, "namespace" | "name" | "labels">): boolean {
  if (peer.namespace !== undefined && peer.namespace !== svc.namespace) return false;
  if (peer.name !== undefined) return peer.name === svc.name;
  if (peer.selector !== undefined) return matchesSelector(peer.selector, serviceLabelSet(svc.labels));
  return false;
}

const labelSets = new WeakMap<Readonly<Record<string, string>>, ReturnType<typeof labelSetFrom>>();
function serviceLabelSet(labels: Readonly<Record<string, string>>): ReturnType<typeof labelSetFrom> {
  let set = labelSets.get(labels);
  if (!set) labelSets.set(labels, (set = labelSetFrom(Object.entries(labels).map(([k, v]) => label(LABEL_SOURCE.k8s, k, v)))));
  return set;
}

/** The canonical (selector-cache key) of a toServices entry. */
export function serviceCanonical(peer: ServicePeer): string {
  const ns = peer.namespace ?? "*";
  return peer.name !== undefined ? `service:${ns}/${peer.name}` : `service:${ns} sel ${peer.selector?.canonical ?? "<none>"}`;
}

/** What one toServices entry selects now: pod identities and CIDR prefixes. */
export interface ServiceSelection {
  readonly identities: ReadonlySet<number>;
  readonly prefixes: ReadonlySet<string>;
}

const EMPTY: ServiceSelection = { identities: new Set(), prefixes: new Set() };

/**
 * The Services the compiler knows, keyed by namespace and name, and what each toServices entry
 * selects through them (memoised until the Services change). The selector cache builds the entries'
 * matchers over it; the compiler re-evaluates them when `set` reports a change.
 */
export class ServiceIndex {
  private services = new Map<string, ServiceBackends>();
  private memo = new Map<string, ServiceSelection>();
  /** The entries asked about, by canonical: to tell which prefixes the entries in use select. */
  private readonly peers = new Map<string, ServicePeer>();

  /** Replaces the Services; returns whether anything a peer could select changed. */
  set(all: readonly ServiceBackends[]): boolean {
    const next = new Map<string, ServiceBackends>();
    for (const s of all) next.set(`${s.namespace}/${s.name}`, s);
    let changed = next.size !== this.services.size;
    if (!changed) {
      for (const [k, s] of next) {
        const old = this.services.get(k);
        if (!old || !sameBackends(old, s)) {
          changed = true;
          break;
        }
      }
    }
    this.services = next;
    if (changed) this.memo = new Map();
    return changed;
  }

  /** What `peer` selects now: the union of the backends of every Service it selects (nothing when none). */
  selection(peer: ServicePeer): ServiceSelection {
    const key = serviceCanonical(peer);
    let sel = this.memo.get(key);
    if (sel) return sel;
    this.peers.set(key, peer);
    const identities = new Set<number>();
    const prefixes = new Set<string>();
    const only = peer.name !== undefined && peer.namespace !== undefined ? this.services.get(`${peer.namespace}/${peer.name}`) : undefined;
    for (const s of only ? [only] : peer.name !== undefined && peer.namespace !== undefined ? [] : this.services.values()) {
      if (!serviceSelects(peer, s)) continue;
      for (const id of s.identities) identities.add(id);
      for (const p of s.prefixes) prefixes.add(p);
    }
    sel = identities.size === 0 && prefixes.size === 0 ? EMPTY : { identities, prefixes };
    this.memo.set(key, sel);
    return sel;
  }

  /** The CIDR prefixes the entries `inUse` (by canonical) select, sorted; entries not in use are forgotten. */
  prefixesOf(inUse: Iterable<string>): string[] {
    const keep = new Set(inUse);
    const out = new Set<string>();
    for (const [key, peer] of this.peers) {
      if (!keep.has(key)) {
        this.peers.delete(key);
        this.memo.delete(key);
      } else for (const p of this.selection(peer).prefixes) out.add(p);
    }
    return [...out].sort();
  }
}

function sameBackends(a: ServiceBackends, b: ServiceBackends): boolean {
  const sameList = <T>(x: readonly T[], y: readonly T[]): boolean => x.length === y.length && x.every((v, i) => v === y[i]);
  const la = Object.entries(a.labels).sort();
  const lb = Object.entries(b.labels).sort();
  return sameList(a.identities, b.identities) && sameList(a.prefixes, b.prefixes) && la.length === lb.length && la.every(([k, v], i) => k === lb[i]![0] && v === lb[i]![1]);
}
