// A learned (toFQDNs) address as a peer of the world: the entries an agent writes for its identity so the first hit is a per-peer compile's.
import { IDENTITY, MIN_FQDN_IDENTITY, MIN_LOCAL_IDENTITY, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER } from "../identity.ts";
import { makePrefix, parsePrefix, type IPFamily } from "../cidr.ts";
import { selectorMatches } from "./name-pattern.ts";
import { compareRulePlaces, policyKey, type RulePlace } from "../policy/repository.ts";
import { entryTemplates, type Contribution, type EntryTemplate } from "../policy/resolution.ts";
import { IDENTITY_WILDCARD, type Direction, type FqdnSelectorTerm, type PolicyEntry, type RuleOrigin, type SubjectPolicy } from "../model.ts";
import type { IPCacheEntry } from "../wire.ts";

/**
 * Where a learned address sits in the world as the operator compiled it: the CIDR identity of the longest prefix in
 * the node's ipcache that holds it (every prefix a policy names has one, its excepts too), else its family's world
 * identity. A learned address's identity carries that peer's labels (its CIDR labels and family world label,
 * core/identity.ts fqdnIdentityLabels) plus its `fqdn:` ones, so every term matching it is one of that peer's or a
 * toFQDNs term: its per-peer entries are that peer's merged with the toFQDNs ones.
 */
export class LearnedAddressPeers {
  /** Per family: the CIDR identities by prefix length (longest first), each a map from the network address. */
  private readonly byLength = new Map<IPFamily, { readonly bits: number; readonly identities: Map<bigint, number> }[]>();

  constructor(ipcache: readonly IPCacheEntry[]) {
    for (const e of ipcache) {
      // Only the operator's CIDR identities: a pod's or node's address is never a learned one's world peer.
      if (e.identity < MIN_LOCAL_IDENTITY || e.identity >= MIN_FQDN_IDENTITY) continue;
      const p = parsePrefix(e.prefix);
      if (!p) continue;
      let lengths = this.byLength.get(p.family);
      if (!lengths) this.byLength.set(p.family, (lengths = []));
      let at = lengths.find((l) => l.bits === p.bits);
      if (!at) lengths.push((at = { bits: p.bits, identities: new Map() }));
      at.identities.set(p.addr, e.identity);
    }
    for (const lengths of this.byLength.values()) lengths.sort((a, b) => b.bits - a.bits);
  }

  /** The peer whose terms (besides toFQDNs) match the learned address `ip`. */
  peerOf(ip: string): number {
    const host = parsePrefix(ip);
    if (!host) return IDENTITY.world;
    for (const l of this.byLength.get(host.family) ?? []) {
      const id = l.identities.get(makePrefix(host.family, host.addr, l.bits).addr);
      if (id !== undefined) return id;
    }
    return host.family === 4 ? IDENTITY.worldIPv4 : IDENTITY.worldIPv6;
  }
}

/** The operator's rule order (core/policy/repository.ts compareRules) from a node state's rule table. */
export function ruleOrder(rules: readonly { readonly id: number; readonly origin: RuleOrigin }[]): (a: number, b: number) => number {
  const byId = new Map<number, RulePlace>(rules.map((r) => [r.id, { policyKey: policyKey({ kind: r.origin.policyKind, ...(r.origin.namespace !== undefined ? { namespace: r.origin.namespace } : {}), name: r.origin.name }), path: r.origin.path }]));
  return (a, b) => compareRulePlaces(byId.get(a), byId.get(b));
}

/** The HTTP proxy ports of a subject (its HTTP redirects lose to a plain allow of the same key; a DNS redirect does not). */
export function httpProxyPorts(policy: SubjectPolicy): Set<number> {
  const out = new Set<number>();
  for (const r of policy.http ?? []) {
    if (r.proxyPorts) for (const p of r.proxyPorts) out.add(p);
    else for (const e of policy.entries) if (e.ruleId === r.ruleId && e.proxyPort !== 0) out.add(e.proxyPort);
  }
  return out;
}

/** A subject's received policy split the way learnedPeerEntries reads it (built once per state, read per learned address). */
export interface LearnedPeerSubject {
  readonly policy: SubjectPolicy;
  /** Per direction: each peer's own entries, the world class's, the world-ipv4/-ipv6 classes', the wildcard's. */
  readonly own: Readonly<Record<Direction, ReadonlyMap<number, readonly PolicyEntry[]>>>;
  readonly worldClass: Readonly<Record<Direction, readonly PolicyEntry[]>>;
  readonly worldFamilyClass: Readonly<Record<Direction, Readonly<Record<IPFamily, readonly PolicyEntry[]>>>>;
  readonly wildcard: Readonly<Record<Direction, readonly PolicyEntry[]>>;
  readonly httpPorts: ReadonlySet<number>;
  readonly compareRules: (a: number, b: number) => number;
  /** The merged templates per list of toFQDNs terms, then per direction, peer and matched terms: most addresses share them. */
  readonly merged: WeakMap<readonly FqdnSelectorTerm[], Map<string, readonly EntryTemplate[]>>;
}

export function learnedPeerSubject(policy: SubjectPolicy, compareRules: (a: number, b: number) => number): LearnedPeerSubject {
  const own = { ingress: new Map<number, PolicyEntry[]>(), egress: new Map<number, PolicyEntry[]>() };
  const worldClass: Record<Direction, PolicyEntry[]> = { ingress: [], egress: [] };
  const worldFamilyClass: Record<Direction, Record<IPFamily, PolicyEntry[]>> = { ingress: { 4: [], 6: [] }, egress: { 4: [], 6: [] } };
  const wildcard: Record<Direction, PolicyEntry[]> = { ingress: [], egress: [] };
  for (const e of policy.entries) {
    if (e.peer === WORLD_CLASS_PEER) worldClass[e.direction].push(e);
    else if (e.peer === WORLD_IPV4_CLASS_PEER) worldFamilyClass[e.direction][4].push(e);
    else if (e.peer === WORLD_IPV6_CLASS_PEER) worldFamilyClass[e.direction][6].push(e);
    else if (e.peer === IDENTITY_WILDCARD) wildcard[e.direction].push(e);
    else {
      const m = own[e.direction];
      let list = m.get(e.peer);
      if (!list) m.set(e.peer, (list = []));
      list.push(e);
    }
  }
  return { policy, own, worldClass, worldFamilyClass, wildcard, httpPorts: httpProxyPorts(policy), compareRules, merged: new WeakMap() };
}

/**
 * The entries of a learned address's identity `learned` in one subject direction, given `peer` (its place in the world,
 * LearnedAddressPeers) and its names: `undefined` when it needs none of its own (no toFQDNs selector of the subject
 * matches a name and the peer has no entries of its own: the world class's entries (its `family`'s world class's where
 * the subject has them), which the datapath probes for it after its own keys, or the wildcard's answer as they answer
 * for the peer). Otherwise the peer's entries (its own, or the class's that answers for it) merged with the toFQDNs ports by the compiler's rules (core/policy/resolution.ts entryTemplates):
 * deny first, over the wildcard peer's denies too; a plain allow over an HTTP redirect of the same key; an HTTP
 * redirect's plain-allowed part carved out. Not the compiler's: where two rules' HTTP redirects meet on one key, the
 * more specific one's proxy port (its rules alone, not the union's, which the operator never allocated: fails closed
 * for requests only the other rule allows).
 */
export function learnedPeerEntries(
  s: LearnedPeerSubject,
  direction: Direction,
  learned: number,
  peer: number,
  names: readonly string[],
  terms: readonly FqdnSelectorTerm[],
  family: IPFamily,
): PolicyEntry[] | undefined {
  const own = s.own[direction].get(peer) ?? [];
  const matched: number[] = [];
  if (direction === "egress") terms.forEach((t, i) => names.some((n) => selectorMatches(n, t)) && t.ports.length > 0 && matched.push(i));
  if (matched.length === 0) return own.length === 0 ? undefined : own.map((e) => ({ ...e, peer: learned }));
  let memo = s.merged.get(terms);
  if (!memo) s.merged.set(terms, (memo = new Map()));
  const key = `${direction}|${peer}|${family}|${matched.join(",")}`;
  let templates = memo.get(key);
  if (!templates) {
    const familyClass = s.worldFamilyClass[direction][family];
    const base = own.length > 0 ? own : familyClass.length > 0 ? familyClass : s.worldClass[direction];
    memo.set(key, (templates = mergedTemplates(s, direction, base, matched.map((i) => terms[i]!))));
  }
  return templates.map((t) => ({ subject: s.policy.subject, direction, peer: learned, proto: t.proto, port: t.port, portPrefixLen: t.portPrefixLen, verdict: t.verdict, proxyPort: t.proxyPort, ruleId: t.ruleId }));
}

/** The peer's entries `base` and the matched toFQDNs terms' ports as one list of templates (see learnedPeerEntries). */
function mergedTemplates(s: LearnedPeerSubject, direction: Direction, base: readonly PolicyEntry[], terms: readonly FqdnSelectorTerm[]): EntryTemplate[] {
  const fqdn: Contribution[] = [];
  for (const t of terms) {
    for (const p of t.ports) fqdn.push(contribution({ proto: p.proto, port: p.port, portPrefixLen: p.portPrefixLen, verdict: "allow", proxyPort: p.proxyPort ?? 0, ruleId: t.ruleId }, s.httpPorts, p.proxyPort !== undefined && p.proxyPort !== 0));
  }
  const parts = [...base.map((e) => contribution(e, s.httpPorts)), ...fqdn];
  // Each HTTP part keeps the proxy port it came with; the most specific part covering a redirect's block gives it its port.
  const portOfPart = parts.map((c) => c.proxyPort);
  const spanOf = parts.map((c) => c.hi - c.lo);
  const indexed = parts.map((c, i) => (c.httpPart !== undefined ? { ...c, httpPart: i, proxyPort: 0 } : c));
  const wildcard = s.wildcard[direction];
  const extra = {
    wildcardDenies: wildcard.filter((e) => e.verdict === "deny").map((e) => contribution(e, s.httpPorts)),
    wildcardHttp: [],
    wildcardPlain: wildcard.filter((e) => e.verdict === "allow" && e.proxyPort === 0).map((e) => contribution(e, s.httpPorts)),
  };
  return entryTemplates(indexed, extra, {
    compareRules: s.compareRules,
    proxyPortFor: (covering) => {
      let best: number | undefined;
      for (const p of covering) if (best === undefined || spanOf[p.portRule!]! < spanOf[best]! || (spanOf[p.portRule!] === spanOf[best] && p.portRule! < best)) best = p.portRule;
      return best === undefined ? 0 : portOfPart[best]!;
    },
  });
}

/** A map entry (or a toFQDNs port block) as the one contribution of its block. */
function contribution(e: Pick<PolicyEntry, "proto" | "port" | "portPrefixLen" | "verdict" | "proxyPort" | "ruleId">, httpPorts: ReadonlySet<number>, http = false): Contribution {
  const size = e.proto === 0 ? 0x10000 : 2 ** (16 - e.portPrefixLen);
  const lo = e.proto === 0 ? 0 : e.port;
  const isHttp = e.verdict === "allow" && e.proxyPort !== 0 && (http || httpPorts.has(e.proxyPort));
  return { proto: e.proto, lo, hi: lo + size - 1, verdict: e.verdict, ruleId: e.ruleId, proxyPort: isHttp ? e.proxyPort : e.verdict === "allow" ? e.proxyPort : 0, httpPart: isHttp ? 0 : undefined };
}
