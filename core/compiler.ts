// The policy compiler: policies × identities → per-subject map entries, updated incrementally by deltas.
import {
  IDENTITY_WILDCARD,
  PROTO_NUMBER,
  type Direction,
  type ICMPField,
  type LabelSet,
  type Peer,
  type Policy,
  type PolicyEntry,
  type Protocol,
  type Rule,
  type RuleOrigin,
  type Selector,
  type SubjectPolicy,
  type Verdict,
} from "./model.ts";
import { compareEntries, entryKeyString } from "./mapstate.ts";
import { rangeToPrefixes } from "./portprefix.ts";
import { matchesSelector } from "./selector.ts";
import { isPolicySubject } from "./peer-match.ts";
import { LABEL_SOURCE, label, labelSetFrom } from "./labels.ts";
import { cidrLabels } from "./identity.ts";
import { cidrMatcher, entityMatcher, fqdnMatcher, type IdentityMatcher } from "./selector-cache.ts";
import { PartitionedSelectorCache, namespacePin, type PinnedMatcher } from "./selector-partitions.ts";

/** ruleId 0 never names a rule: a verdict from a miss in an enforced direction is "default deny". */
export const RULE_ID_DEFAULT_DENY = 0;

/**
 * Resolves a named port: the port numbers `identity`'s pods expose under `name` for `protocol`.
 * Ingress resolves against the subject, egress against the peer (the destination).
 */
export type NamedPortResolver = (identity: number, name: string, protocol: Protocol) => readonly number[];

export interface CompilerOptions {
  readonly namedPorts?: NamedPortResolver;
  /** Proxy ports handed to L7 redirects, inclusive. */
  readonly proxyPorts?: { readonly first: number; readonly last: number };
}

/**
 * What changed for one subject. `added` entries are inserts or in-place updates of their key;
 * `removed` keys are deletes and never repeat a key in `added`. Apply `added` first, then
 * `removed`, so no packet sees a key missing in between.
 */
export interface Delta {
  readonly subject: number;
  readonly added: readonly PolicyEntry[];
  readonly removed: readonly PolicyEntry[];
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
}

/** ICMP type names as policies may spell them, per family. */
export const ICMP_TYPE_NAMES: Readonly<Record<"IPv4" | "IPv6", Readonly<Record<string, number>>>> = {
  IPv4: {
    EchoReply: 0,
    DestinationUnreachable: 3,
    Redirect: 5,
    Echo: 8,
    EchoRequest: 8,
    RouterAdvertisement: 9,
    RouterSelection: 10,
    TimeExceeded: 11,
    ParameterProblem: 12,
    Timestamp: 13,
    TimestampReply: 14,
    Photuris: 40,
    ExtendedEchoRequest: 42,
    ExtendedEchoReply: 43,
  },
  IPv6: {
    DestinationUnreachable: 1,
    PacketTooBig: 2,
    TimeExceeded: 3,
    ParameterProblem: 4,
    EchoRequest: 128,
    EchoReply: 129,
    MulticastListenerQuery: 130,
    MulticastListenerReport: 131,
    MulticastListenerDone: 132,
    RouterSolicitation: 133,
    RouterAdvertisement: 134,
    NeighborSolicitation: 135,
    NeighborAdvertisement: 136,
    RedirectMessage: 137,
    RouterRenumbering: 138,
    ICMPNodeInformationQuery: 139,
    ICMPNodeInformationResponse: 140,
    InverseNeighborDiscoverySolicitation: 141,
    InverseNeighborDiscoveryAdvertisement: 142,
    HomeAgentAddressDiscoveryRequest: 144,
    HomeAgentAddressDiscoveryReply: 145,
    MobilePrefixSolicitation: 146,
    MobilePrefixAdvertisement: 147,
    DuplicateAddressRequestCodeSuffix: 157,
    DuplicateAddressConfirmationCodeSuffix: 158,
    ExtendedEchoRequest: 160,
    ExtendedEchoReply: 161,
  },
};

/** The (protocol number, type) an ICMP field matches, or undefined for an unknown type name. */
export function icmpMatch(f: ICMPField): { proto: number; type: number } | undefined {
  const proto = f.family === "IPv6" ? PROTO_NUMBER.ICMPv6 : PROTO_NUMBER.ICMP;
  const type =
    typeof f.type === "number"
      ? f.type
      : /^\d+$/.test(f.type)
        ? Number(f.type)
        : ICMP_TYPE_NAMES[f.family][f.type];
  return type === undefined ? undefined : { proto, type };
}

/** Stable key of one source object (a CNP with `specs` is several Policy values under one key). */
export function policyKey(p: Pick<Policy, "kind" | "namespace" | "name">): string {
  return `${p.kind}/${p.namespace ?? ""}/${p.name}`;
}

/**
 * The labels of an address learned from a DNS answer: its CIDR identity labels plus one `fqdn:`
 * label per name it answered for. `upsertIdentity(id, fqdnIdentityLabels(ip, names))` fills every
 * toFQDNs peer whose matchName/matchPattern covers one of the names; `removeIdentity` drains it.
 */
export function fqdnIdentityLabels(ip: string, names: readonly string[]): LabelSet {
  return labelSetFrom([
    ...cidrLabels(ip).labels,
    ...names.map((n) => label(LABEL_SOURCE.fqdn, n.toLowerCase().replace(/\.$/, ""))),
  ]);
}

/** The CIDR prefixes policies mention (peers and their excepts): each needs a CIDR identity in the ipcache. */
export function policyPrefixes(policies: readonly Policy[]): string[] {
  const out = new Set<string>();
  for (const p of policies) {
    for (const r of p.rules) {
      for (const peer of r.peers) {
        if (peer.kind !== "cidr") continue;
        out.add(peer.cidr);
        for (const e of peer.except) out.add(e);
      }
    }
  }
  return [...out].sort();
}

// ---------------------------------------------------------------------------------------------
// Internals. A rule becomes one Term per peer; a Term's peer is the wildcard or a peer set (the
// identities one selector/entity/CIDR/FQDN peer matches, maintained as identities come and go).
// The entries for one (subject, direction, peer) depend only on the terms whose set holds the peer
// plus the wildcard denies, so every change recomputes just the peers it touches.
// ---------------------------------------------------------------------------------------------

type NumericPort = { readonly proto: number; readonly lo: number; readonly hi: number };
type NamedPort = { readonly name: string; readonly protocol: Protocol };

interface Term {
  readonly policyKey: string;
  readonly peerKey: string | undefined; // undefined = wildcard (identity 0)
  readonly matcher: IdentityMatcher | undefined; // registered in the selector cache under peerKey
  readonly verdict: Verdict;
  readonly ruleId: number;
  readonly proxyPort: number;
  readonly ports: readonly NumericPort[];
  readonly namedPorts: readonly NamedPort[]; // egress only: resolved against each peer
  readonly contributions: readonly Contribution[]; // of `ports`, computed once
}

interface Contribution extends NumericPort {
  readonly verdict: Verdict;
  readonly ruleId: number;
  readonly proxyPort: number;
}

/** An entry without its subject, direction and peer: identical peers share one template list. */
interface EntryTemplate {
  readonly key: number; // proto, port and prefix length packed (see templateKey)
  readonly proto: number;
  readonly port: number;
  readonly portPrefixLen: number;
  readonly verdict: Verdict;
  readonly proxyPort: number;
  readonly ruleId: number;
}

interface DirState {
  readonly enforced: boolean;
  readonly requiresKey: string;
  readonly terms: readonly Term[];
  readonly termsByPeerKey: ReadonlyMap<string, readonly number[]>; // peer key → indexes into terms
  readonly wildcardTerms: readonly Term[];
  readonly wildcardDenies: readonly Contribution[];
  /** peer → templateKey → entry */
  readonly entries: Map<number, Map<number, PolicyEntry>>;
  /** matched term indexes ("1,4,7") → templates; valid for this DirState's lifetime */
  readonly templates: Map<string, readonly EntryTemplate[]>;
}

interface SubjectState {
  readonly subject: number;
  ingress: DirState;
  egress: DirState;
  proxyKeys: Set<string>;
}

const ALL_PORTS: NumericPort = { proto: 0, lo: 0, hi: 0xffff };
const ANY_EXPANSION = [PROTO_NUMBER.TCP, PROTO_NUMBER.UDP, PROTO_NUMBER.SCTP];
const DIRECTIONS: readonly Direction[] = ["ingress", "egress"];
const ALL_KNOWN: IdentityMatcher = { canonical: "known:*", matches: () => true };

function protoNumbers(p: Protocol): number[] {
  return p === "ANY" ? ANY_EXPANSION : [PROTO_NUMBER[p]];
}

class DeltaCollector {
  private readonly bySubject = new Map<
    number,
    { added: Map<string, PolicyEntry>; removed: Map<string, PolicyEntry> }
  >();
  readonly touched = new Set<number>();

  /** A disabled collector (full compile) records nothing. */
  constructor(private readonly enabled = true) {}

  add(subject: number, e: PolicyEntry): void {
    if (!this.enabled) return;
    const d = this.for(subject);
    const k = entryKeyString(e) + "|" + entryValue(e);
    if (d.removed.has(k)) d.removed.delete(k);
    else d.added.set(k, e);
  }

  remove(subject: number, e: PolicyEntry): void {
    if (!this.enabled) return;
    const d = this.for(subject);
    const k = entryKeyString(e) + "|" + entryValue(e);
    if (d.added.has(k)) d.added.delete(k);
    else d.removed.set(k, e);
  }

  touch(subject: number): void {
    this.touched.add(subject);
  }

  deltas(enforcement: (subject: number) => { ingress: boolean; egress: boolean }): Delta[] {
    const subjects = new Set([...this.bySubject.keys(), ...this.touched]);
    const out: Delta[] = [];
    for (const subject of [...subjects].sort((a, b) => a - b)) {
      const d = this.bySubject.get(subject);
      const added = d ? [...d.added.values()].sort(compareEntries) : [];
      // A key whose value changed is only in `added` (a map update), never also in `removed`.
      const addedKeys = new Set(added.map(entryKeyString));
      const removed = d
        ? [...d.removed.values()].filter((e) => !addedKeys.has(entryKeyString(e))).sort(compareEntries)
        : [];
      const enf = enforcement(subject);
      if (added.length === 0 && removed.length === 0 && !this.touched.has(subject)) continue;
      out.push({ subject, added, removed, ingressEnforced: enf.ingress, egressEnforced: enf.egress });
    }
    return out;
  }

  private for(subject: number): { added: Map<string, PolicyEntry>; removed: Map<string, PolicyEntry> } {
    let d = this.bySubject.get(subject);
    if (!d) {
      d = { added: new Map(), removed: new Map() };
      this.bySubject.set(subject, d);
    }
    return d;
  }
}

function entryValue(e: PolicyEntry): string {
  return `${e.verdict}|${e.proxyPort}|${e.ruleId}`;
}

/** Orders rules by their origin (policy key and path), so attribution does not depend on history. */
type RuleRank = (ruleId: number) => string;

/** Which of two entries for the same key the map keeps: deny, then a proxy redirect, then the first rule by origin. */
function preferred<E extends EntryTemplate | PolicyEntry>(a: E, b: E, rank: RuleRank): E {
  if (a.verdict !== b.verdict) return a.verdict === "deny" ? a : b;
  if ((a.proxyPort !== 0) !== (b.proxyPort !== 0)) return a.proxyPort !== 0 ? a : b;
  if (a.ruleId !== b.ruleId) return rank(a.ruleId) < rank(b.ruleId) ? a : b;
  return a.proxyPort <= b.proxyPort ? a : b;
}

function intersect(a: NumericPort, b: NumericPort): NumericPort | undefined {
  if (a.proto !== 0 && b.proto !== 0 && a.proto !== b.proto) return undefined;
  const lo = Math.max(a.lo, b.lo);
  const hi = Math.min(a.hi, b.hi);
  if (lo > hi) return undefined;
  return { proto: a.proto || b.proto, lo, hi };
}

/** proto (8 bits) | port (16 bits) | prefix length (5 bits), as one number. */
function templateKey(proto: number, port: number, prefixLen: number): number {
  return proto * 2 ** 21 + port * 32 + prefixLen;
}

const blockCache = new Map<string, readonly { port: number; prefixLen: number }[]>();
function blocksOf(c: NumericPort): readonly { port: number; prefixLen: number }[] {
  if (c.proto === 0 || (c.lo === 0 && c.hi === 0xffff)) return [{ port: 0, prefixLen: 0 }];
  const k = `${c.lo}-${c.hi}`;
  let b = blockCache.get(k);
  if (!b) {
    b = rangeToPrefixes(c.lo, c.hi);
    if (blockCache.size > 10_000) blockCache.clear();
    blockCache.set(k, b);
  }
  return b;
}

/**
 * The entries for one peer (or the wildcard) from its contributions: each contribution's port blocks,
 * plus, wherever an allow overlaps a deny that also applies to this peer, the overlap as a deny so
 * the longest-prefix lookup can never pick the allow.
 */
function entryTemplates(
  contributions: readonly Contribution[],
  extraDenies: readonly Contribution[],
  rank: RuleRank,
): EntryTemplate[] {
  const out = new Map<number, EntryTemplate>();
  const put = (c: NumericPort, verdict: Verdict, ruleId: number, proxyPort: number): void => {
    for (const b of blocksOf(c)) {
      const key = templateKey(c.proto, b.port, b.prefixLen);
      const e: EntryTemplate = {
        key,
        proto: c.proto,
        port: b.port,
        portPrefixLen: b.prefixLen,
        verdict,
        proxyPort,
        ruleId,
      };
      const prev = out.get(key);
      out.set(key, prev ? preferred(prev, e, rank) : e);
    }
  };
  const denies = [...contributions.filter((c) => c.verdict === "deny"), ...extraDenies];
  for (const c of contributions) put(c, c.verdict, c.ruleId, c.verdict === "allow" ? c.proxyPort : 0);
  for (const c of contributions) {
    if (c.verdict !== "allow") continue;
    for (const d of denies) {
      const x = intersect(c, d);
      if (x) put(x, "deny", d.ruleId, 0);
    }
  }
  return [...out.values()];
}

export class PolicyCompiler {
  private readonly identities = new Map<number, LabelSet>();
  private readonly policies = new Map<string, readonly Policy[]>();
  private readonly policySubjects = new Map<string, Set<number>>();
  /** Subject selectors live in the selector cache too: policy key → its parts' subject matchers. */
  private readonly subjectMatchers = new Map<string, readonly IdentityMatcher[]>();
  /** subject matcher canonical → policy keys using it → count */
  private readonly subjectUsers = new Map<string, Map<string, number>>();
  private readonly subjectPolicies = new Map<number, Set<string>>();
  private readonly subjects = new Map<number, SubjectState>();
  /** Peer sets: each distinct peer is one selector-cache entry, evaluated once per identity. */
  private readonly cache = new PartitionedSelectorCache();
  /** selector canonical → "subject/direction" → number of terms there using it */
  private readonly users = new Map<string, Map<string, number>>();
  private readonly ruleIds = new Map<string, number>();
  private readonly rules = new Map<number, RuleOrigin>();
  private readonly ruleKeys = new Map<number, string>();
  private readonly rank: RuleRank = (id) => this.ruleKeys.get(id) ?? "";
  private readonly proxyPortOf = new Map<string, number>();
  private readonly usedProxyPorts = new Set<number>();
  private readonly namedPorts: NamedPortResolver;
  private readonly proxyRange: { first: number; last: number };

  constructor(opts: CompilerOptions = {}) {
    this.namedPorts = opts.namedPorts ?? (() => []);
    this.proxyRange = opts.proxyPorts ?? { first: 10000, last: 19999 };
  }

  // ----- public API ---------------------------------------------------------------------------

  /** Loads many policies and identities into a fresh compiler and compiles every subject once (a full compile). */
  load(policies: ReadonlyMap<string, readonly Policy[]>, identities: ReadonlyMap<number, LabelSet>): void {
    if (this.identities.size > 0 || this.policies.size > 0)
      throw new Error("load() needs a fresh PolicyCompiler");
    for (const [id, labels] of identities) {
      this.identities.set(id, labels);
      this.cache.upsertIdentity(id, labels);
    }
    for (const [key, parts] of policies) {
      this.policies.set(key, parts);
      this.ruleIdsFor(key, parts);
    }
    for (const key of [...this.policies.keys()].sort()) this.indexPolicySubjects(key);
    const scratch = new DeltaCollector(false);
    for (const subject of [...this.subjectPolicies.keys()].sort((a, b) => a - b))
      this.rebuildSubject(subject, undefined, scratch);
  }

  upsertIdentity(id: number, labels: LabelSet): Delta[] {
    const prev = this.identities.get(id);
    if (prev?.key === labels.key) return [];
    const d = new DeltaCollector();
    if (prev) this.dropIdentity(id, d);
    this.identities.set(id, labels);
    const dirty = new Map<string, Set<number>>();
    for (const change of this.cache.upsertIdentity(id, labels)) {
      for (const user of this.users.get(change.canonical)?.keys() ?? []) addTo(dirty, user, id);
      if (!change.added.includes(id)) continue;
      for (const key of this.subjectUsers.get(change.canonical)?.keys() ?? []) {
        addTo(this.policySubjects, key, id);
        addTo(this.subjectPolicies, id, key);
      }
    }
    if (this.subjectPolicies.has(id)) this.rebuildSubject(id, undefined, d);
    for (const [user, peers] of dirty) {
      const [subject, direction] = splitUser(user);
      if (subject === id) continue; // just built from scratch
      for (const peer of peers) this.recomputePeer(subject, direction, peer, d);
    }
    return d.deltas((s) => this.enforcement(s));
  }

  removeIdentity(id: number): Delta[] {
    if (!this.identities.has(id)) return [];
    const d = new DeltaCollector();
    this.dropIdentity(id, d);
    return d.deltas((s) => this.enforcement(s));
  }

  /** Adds or replaces one source object's policies (`key` from policyKey()). */
  upsertPolicy(key: string, parts: readonly Policy[]): Delta[] {
    const d = new DeltaCollector();
    const before = new Set(this.policySubjects.get(key) ?? []);
    this.policies.set(key, parts);
    this.ruleIdsFor(key, parts);
    this.indexPolicySubjects(key);
    const after = this.policySubjects.get(key) ?? new Set<number>();
    for (const subject of [...new Set([...before, ...after])].sort((a, b) => a - b))
      this.rebuildSubject(subject, key, d);
    return d.deltas((s) => this.enforcement(s));
  }

  removePolicy(key: string): Delta[] {
    if (!this.policies.has(key)) return [];
    const d = new DeltaCollector();
    const before = [...(this.policySubjects.get(key) ?? [])].sort((a, b) => a - b);
    this.unindexPolicy(key);
    this.policies.delete(key);
    for (const subject of before) this.rebuildSubject(subject, key, d);
    return d.deltas((s) => this.enforcement(s));
  }

  /** Recompiles everything (e.g. after named ports changed); returns the net delta. */
  recompileAll(): Delta[] {
    const d = new DeltaCollector();
    for (const subject of [...new Set([...this.subjects.keys(), ...this.subjectPolicies.keys()])].sort(
      (a, b) => a - b,
    )) {
      this.rebuildSubject(subject, undefined, d);
    }
    return d.deltas((s) => this.enforcement(s));
  }

  /** The compiled policy of one subject identity (allow-all with no entries if no policy selects it). */
  snapshot(subject: number): SubjectPolicy {
    const s = this.subjects.get(subject);
    if (!s) return { subject, ingressEnforced: false, egressEnforced: false, entries: [] };
    const entries: PolicyEntry[] = [];
    for (const dir of [s.ingress, s.egress])
      for (const m of dir.entries.values()) entries.push(...m.values());
    return {
      subject,
      ingressEnforced: s.ingress.enforced,
      egressEnforced: s.egress.enforced,
      entries: entries.sort(compareEntries),
    };
  }

  /** Subjects that have compiled state (selected by at least one policy). */
  subjectIds(): number[] {
    return [...this.subjects.keys()].sort((a, b) => a - b);
  }

  /** Which policy and rule a ruleId names; undefined for RULE_ID_DEFAULT_DENY or an unknown id. */
  ruleOrigin(ruleId: number): RuleOrigin | undefined {
    return this.rules.get(ruleId);
  }

  /** The whole rule table, ruleId → origin. */
  ruleTable(): ReadonlyMap<number, RuleOrigin> {
    return this.rules;
  }

  entryCount(): number {
    let n = 0;
    for (const s of this.subjects.values())
      for (const dir of [s.ingress, s.egress]) for (const m of dir.entries.values()) n += m.size;
    return n;
  }

  // ----- subjects -----------------------------------------------------------------------------

  private selects(p: Policy, id: number): boolean {
    return this.cache.selections(subjectMatcher(p).canonical)?.has(id) ?? false;
  }

  /** (Re)registers a policy's subject matchers and recomputes which subjects it selects. */
  private indexPolicySubjects(key: string): void {
    const matchers = (this.policies.get(key) ?? []).map(subjectMatcher);
    // Add the new matchers before releasing the old ones so an unchanged selector is not re-evaluated.
    for (const m of matchers) {
      this.cache.add(m);
      let users = this.subjectUsers.get(m.canonical);
      if (!users) this.subjectUsers.set(m.canonical, (users = new Map()));
      users.set(key, (users.get(key) ?? 0) + 1);
    }
    this.unindexPolicy(key);
    this.subjectMatchers.set(key, matchers);
    for (const m of matchers) {
      for (const id of this.cache.selections(m.canonical) ?? []) {
        addTo(this.policySubjects, key, id);
        addTo(this.subjectPolicies, id, key);
      }
    }
  }

  private unindexPolicy(key: string): void {
    for (const m of this.subjectMatchers.get(key) ?? []) {
      const users = this.subjectUsers.get(m.canonical);
      const n = (users?.get(key) ?? 0) - 1;
      if (n > 0) users?.set(key, n);
      else users?.delete(key);
      if (users?.size === 0) this.subjectUsers.delete(m.canonical);
      this.cache.release(m.canonical);
    }
    this.subjectMatchers.delete(key);
    for (const id of this.policySubjects.get(key) ?? []) {
      const keys = this.subjectPolicies.get(id);
      keys?.delete(key);
      if (keys?.size === 0) this.subjectPolicies.delete(id);
    }
    this.policySubjects.delete(key);
  }

  /**
   * Rebuilds a subject's terms from its policies. With `changedPolicy`, only peers touched by that
   * policy's terms are recomputed (unless the requires or the wildcard denies changed, which touch every peer).
   */
  private rebuildSubject(subject: number, changedPolicy: string | undefined, d: DeltaCollector): void {
    const labels = this.identities.get(subject);
    const keys = [...(this.subjectPolicies.get(subject) ?? [])].sort();
    const old = this.subjects.get(subject);
    if (!labels || keys.length === 0) {
      if (old) this.deleteSubject(old, d);
      return;
    }
    const parts: Policy[] = [];
    const partKeys: string[] = [];
    for (const key of keys) {
      for (const p of this.policies.get(key) ?? []) {
        if (this.selects(p, subject)) {
          parts.push(p);
          partKeys.push(key);
        }
      }
    }
    const proxyKeys = new Set<string>();
    const state: SubjectState = old ?? {
      subject,
      ingress: emptyDir(),
      egress: emptyDir(),
      proxyKeys,
    };
    d.touch(subject);
    for (const direction of DIRECTIONS) {
      const prev = old ? old[direction] : undefined;
      const next = this.buildDir(subject, direction, parts, partKeys, proxyKeys);
      this.registerTerms(subject, direction, next.terms);
      state[direction] = next;
      let peers: Set<number>;
      const everything =
        !prev ||
        changedPolicy === undefined ||
        prev.requiresKey !== next.requiresKey ||
        denyKey(prev.wildcardDenies) !== denyKey(next.wildcardDenies);
      if (everything) {
        peers = new Set<number>(prev ? prev.entries.keys() : []);
        for (const id of this.peersOf(next.terms)) peers.add(id);
        peers.add(IDENTITY_WILDCARD);
      } else {
        const touched = (t: Term): boolean => t.policyKey === changedPolicy;
        peers = this.peersOf(prev.terms.filter(touched));
        for (const id of this.peersOf(next.terms.filter(touched))) peers.add(id);
      }
      if (!prev) {
        this.computeDirFull(subject, direction, next);
        for (const m of next.entries.values()) for (const e of m.values()) d.add(subject, e);
      } else {
        for (const [peer, m] of prev.entries) if (!peers.has(peer)) next.entries.set(peer, m);
        for (const peer of peers)
          this.recomputePeerIn(subject, direction, next, peer, prev.entries.get(peer), d);
      }
      if (prev) this.unregisterTerms(subject, direction, prev.terms);
    }
    for (const k of state.proxyKeys) if (!proxyKeys.has(k)) this.releaseProxyPort(k);
    state.proxyKeys = proxyKeys;
    this.subjects.set(subject, state);
  }

  private deleteSubject(state: SubjectState, d: DeltaCollector): void {
    d.touch(state.subject);
    for (const direction of DIRECTIONS) {
      const dir = state[direction];
      for (const m of dir.entries.values()) for (const e of m.values()) d.remove(state.subject, e);
      this.unregisterTerms(state.subject, direction, dir.terms);
    }
    for (const k of state.proxyKeys) this.releaseProxyPort(k);
    this.subjects.delete(state.subject);
  }

  private dropIdentity(id: number, d: DeltaCollector): void {
    const dirty = new Map<string, Set<number>>();
    for (const change of this.cache.removeIdentity(id)) {
      for (const user of this.users.get(change.canonical)?.keys() ?? []) addTo(dirty, user, id);
    }
    const asSubject = this.subjects.get(id);
    if (asSubject) this.deleteSubject(asSubject, d);
    for (const key of this.subjectPolicies.get(id) ?? []) this.policySubjects.get(key)?.delete(id);
    this.subjectPolicies.delete(id);
    this.identities.delete(id);
    for (const [user, peers] of dirty) {
      const [subject, direction] = splitUser(user);
      if (subject === id) continue;
      for (const peer of peers) this.recomputePeer(subject, direction, peer, d);
    }
  }

  private enforcement(subject: number): { ingress: boolean; egress: boolean } {
    const s = this.subjects.get(subject);
    return { ingress: s?.ingress.enforced ?? false, egress: s?.egress.enforced ?? false };
  }

  // ----- terms --------------------------------------------------------------------------------

  private buildDir(
    subject: number,
    direction: Direction,
    parts: readonly Policy[],
    partKeys: readonly string[],
    proxyKeys: Set<string>,
  ): DirState {
    let enforced = false;
    const requires = new Map<string, Selector>();
    parts.forEach((p) => {
      if (p.defaultDeny[direction]) enforced = true;
      for (const r of p.rules)
        if (r.direction === direction) for (const s of r.requires) requires.set(s.canonical, s);
    });
    const req = [...requires.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
    const terms: Term[] = [];
    parts.forEach((p, i) => {
      const key = partKeys[i] ?? "";
      for (const r of p.rules)
        if (r.direction === direction) terms.push(...this.termsOf(subject, key, r, req, proxyKeys));
    });
    const termsByPeerKey = new Map<string, number[]>();
    const wildcardTerms: Term[] = [];
    terms.forEach((t, i) => {
      if (t.peerKey === undefined) wildcardTerms.push(t);
      else addToList(termsByPeerKey, t.peerKey, i);
    });
    const wildcardDenies = wildcardTerms.filter((t) => t.verdict === "deny").flatMap((t) => t.contributions);
    return {
      enforced,
      requiresKey: req.map((s) => s.canonical).join("&"),
      terms,
      termsByPeerKey,
      wildcardTerms,
      wildcardDenies,
      entries: new Map(),
      templates: new Map(),
    };
  }

  private termsOf(
    subject: number,
    key: string,
    r: Rule,
    requires: readonly Selector[],
    proxyKeys: Set<string>,
  ): Term[] {
    const ruleId = this.ruleIdOf(key, r.origin);
    const ports: NumericPort[] = [];
    const named: NamedPort[] = [];
    let l7 = false;
    for (const pr of r.ports) {
      if (pr.rules) l7 = true;
      if (pr.ports.length === 0) ports.push(ALL_PORTS);
      for (const pp of pr.ports) {
        if (pp.name !== undefined) {
          if (r.direction === "ingress") {
            for (const proto of protoNumbers(pp.protocol)) {
              for (const n of this.namedPorts(subject, pp.name, pp.protocol))
                ports.push({ proto, lo: n, hi: n });
            }
          } else {
            named.push({ name: pp.name, protocol: pp.protocol });
          }
        } else if (pp.port === 0) {
          if (pp.protocol === "ANY") ports.push(ALL_PORTS);
          else ports.push({ proto: PROTO_NUMBER[pp.protocol], lo: 0, hi: 0xffff });
        } else {
          for (const proto of protoNumbers(pp.protocol))
            ports.push({ proto, lo: pp.port, hi: Math.max(pp.port, pp.endPort) });
        }
      }
    }
    for (const f of r.icmps) {
      const m = icmpMatch(f);
      if (m) ports.push({ proto: m.proto, lo: m.type, hi: m.type });
    }
    if (r.ports.length === 0 && r.icmps.length === 0) ports.push(ALL_PORTS);
    let proxyPort = 0;
    if (l7 && r.verdict === "allow") {
      const pk = `${subject}/${ruleId}`;
      proxyKeys.add(pk);
      proxyPort = this.proxyPortFor(pk);
    }
    const out: Term[] = [];
    const base = { policyKey: key, verdict: r.verdict, ruleId, proxyPort };
    const contributions: Contribution[] = ports.map((p) => ({ ...p, verdict: r.verdict, ruleId, proxyPort }));
    for (const peer of r.peers) {
      const matcher = peerMatcherFor(peer, requires);
      if (matcher === null) continue; // matches nothing
      out.push({
        ...base,
        peerKey: matcher?.canonical,
        matcher,
        ports,
        namedPorts: matcher === undefined ? [] : named,
        contributions,
      });
      if (matcher === undefined && named.length > 0) {
        // A wildcard peer with named ports: every known identity resolves the names itself.
        out.push({
          ...base,
          peerKey: ALL_KNOWN.canonical,
          matcher: ALL_KNOWN,
          ports: [],
          namedPorts: named,
          contributions: [],
        });
      }
    }
    return out;
  }

  private registerTerms(subject: number, direction: Direction, terms: readonly Term[]): void {
    const user = `${subject}/${direction}`;
    for (const t of terms) {
      if (t.matcher === undefined) continue;
      this.cache.add(t.matcher);
      let users = this.users.get(t.matcher.canonical);
      if (!users) this.users.set(t.matcher.canonical, (users = new Map()));
      users.set(user, (users.get(user) ?? 0) + 1);
    }
  }

  private unregisterTerms(subject: number, direction: Direction, terms: readonly Term[]): void {
    const user = `${subject}/${direction}`;
    for (const t of terms) {
      if (t.matcher === undefined) continue;
      const users = this.users.get(t.matcher.canonical);
      const n = (users?.get(user) ?? 0) - 1;
      if (n > 0) users?.set(user, n);
      else users?.delete(user);
      if (users?.size === 0) this.users.delete(t.matcher.canonical);
      this.cache.release(t.matcher.canonical);
    }
  }

  private peersOf(terms: readonly Term[]): Set<number> {
    const out = new Set<number>();
    for (const t of terms) {
      if (t.peerKey === undefined) out.add(IDENTITY_WILDCARD);
      else for (const id of this.cache.selections(t.peerKey) ?? []) out.add(id);
    }
    return out;
  }

  // ----- entries ------------------------------------------------------------------------------

  /** Indexes of the (non-wildcard) terms whose peer set holds `peer`, ascending. */
  private matchedTerms(dir: DirState, peer: number): number[] {
    const out: number[] = [];
    for (const [key, idxs] of dir.termsByPeerKey)
      if (this.cache.selections(key)?.has(peer)) out.push(...idxs);
    return out.sort((a, b) => a - b);
  }

  /** The entries of one peer given the terms that match it (ignored for the wildcard). */
  private peerEntries(
    subject: number,
    direction: Direction,
    dir: DirState,
    peer: number,
    matched: readonly number[],
  ): Map<number, PolicyEntry> {
    let templates: readonly EntryTemplate[];
    if (peer === IDENTITY_WILDCARD) {
      templates = dir.templates.get("*") ?? [];
      if (!dir.templates.has("*")) {
        templates = entryTemplates(
          dir.wildcardTerms.flatMap((t) => t.contributions),
          [],
          this.rank,
        );
        dir.templates.set("*", templates);
      }
    } else if (matched.every((i) => dir.terms[i]!.namedPorts.length === 0)) {
      // Peers matched by the same terms get the same entries: compute once per term signature.
      const sig = matched.join(",");
      const have = dir.templates.get(sig);
      templates =
        have ??
        entryTemplates(
          matched.flatMap((i) => dir.terms[i]!.contributions),
          dir.wildcardDenies,
          this.rank,
        );
      if (!have) dir.templates.set(sig, templates);
    } else {
      const cs = matched.flatMap((i) => {
        const t = dir.terms[i]!;
        return t.namedPorts.length === 0
          ? t.contributions
          : contributionsOf(t, this.portsFor(t, direction, peer));
      });
      templates = entryTemplates(cs, dir.wildcardDenies, this.rank);
    }
    const out = new Map<number, PolicyEntry>();
    for (const t of templates) {
      out.set(t.key, {
        subject,
        direction,
        peer,
        proto: t.proto,
        port: t.port,
        portPrefixLen: t.portPrefixLen,
        verdict: t.verdict,
        proxyPort: t.proxyPort,
        ruleId: t.ruleId,
      });
    }
    return out;
  }

  private portsFor(t: Term, direction: Direction, peer: number): readonly NumericPort[] {
    if (direction !== "egress" || t.namedPorts.length === 0) return t.ports;
    const ports = [...t.ports];
    for (const np of t.namedPorts) {
      for (const proto of protoNumbers(np.protocol)) {
        for (const n of this.namedPorts(peer, np.name, np.protocol)) ports.push({ proto, lo: n, hi: n });
      }
    }
    return ports;
  }

  private computeDirFull(subject: number, direction: Direction, dir: DirState): void {
    const matched = new Map<number, number[]>();
    for (const [key, idxs] of dir.termsByPeerKey) {
      for (const peer of this.cache.selections(key) ?? []) addToList(matched, peer, ...idxs);
    }
    const wild = this.peerEntries(subject, direction, dir, IDENTITY_WILDCARD, []);
    if (wild.size > 0) dir.entries.set(IDENTITY_WILDCARD, wild);
    for (const [peer, idxs] of matched) {
      const m = this.peerEntries(
        subject,
        direction,
        dir,
        peer,
        idxs.sort((a, b) => a - b),
      );
      if (m.size > 0) dir.entries.set(peer, m);
    }
  }

  private recomputePeer(subject: number, direction: Direction, peer: number, d: DeltaCollector): void {
    const s = this.subjects.get(subject);
    if (!s) return;
    const dir = s[direction];
    this.recomputePeerIn(subject, direction, dir, peer, dir.entries.get(peer), d);
  }

  private recomputePeerIn(
    subject: number,
    direction: Direction,
    dir: DirState,
    peer: number,
    before: Map<number, PolicyEntry> | undefined,
    d: DeltaCollector,
  ): void {
    const after = this.peerEntries(
      subject,
      direction,
      dir,
      peer,
      peer === IDENTITY_WILDCARD ? [] : this.matchedTerms(dir, peer),
    );
    if (after.size > 0) dir.entries.set(peer, after);
    else dir.entries.delete(peer);
    for (const [k, e] of after) {
      const b = before?.get(k);
      if (!b || b.verdict !== e.verdict || b.proxyPort !== e.proxyPort || b.ruleId !== e.ruleId) {
        if (b) d.remove(subject, b);
        d.add(subject, e);
      }
    }
    for (const [k, b] of before ?? []) if (!after.has(k)) d.remove(subject, b);
  }

  // ----- rule table and proxy ports -----------------------------------------------------------

  private ruleIdsFor(key: string, parts: readonly Policy[]): void {
    for (const p of parts) for (const r of p.rules) this.ruleIdOf(key, r.origin);
  }

  private ruleIdOf(key: string, origin: RuleOrigin): number {
    const k = `${key}\u0000${origin.path}`;
    let id = this.ruleIds.get(k);
    if (id === undefined) {
      id = this.ruleIds.size + 1;
      this.ruleIds.set(k, id);
      this.ruleKeys.set(id, k);
    }
    this.rules.set(id, origin);
    return id;
  }

  private proxyPortFor(key: string): number {
    const have = this.proxyPortOf.get(key);
    if (have !== undefined) return have;
    for (let p = this.proxyRange.first; p <= this.proxyRange.last; p++) {
      if (this.usedProxyPorts.has(p)) continue;
      this.usedProxyPorts.add(p);
      this.proxyPortOf.set(key, p);
      return p;
    }
    throw new Error(`proxy port range ${this.proxyRange.first}-${this.proxyRange.last} exhausted`);
  }

  private releaseProxyPort(key: string): void {
    const p = this.proxyPortOf.get(key);
    if (p === undefined) return;
    this.proxyPortOf.delete(key);
    this.usedProxyPorts.delete(p);
  }
}

/** Compiles a whole set of policies against a whole set of identities. */
export function compileAll(
  policies: readonly Policy[],
  identities: ReadonlyMap<number, LabelSet>,
  opts?: CompilerOptions,
): PolicyCompiler {
  const byKey = new Map<string, Policy[]>();
  for (const p of policies) addToList(byKey, policyKey(p), p);
  const c = new PolicyCompiler(opts);
  c.load(byKey, identities);
  return c;
}

const subjectMatchers = new WeakMap<Policy, PinnedMatcher>();

/** The selector-cache matcher for a policy's subjects: endpoints (or the host) its selector picks. */
function subjectMatcher(p: Policy): PinnedMatcher {
  let m = subjectMatchers.get(p);
  if (m) return m;
  const host = p.nodeSelector !== undefined;
  const sel = p.nodeSelector ?? p.subject;
  m = {
    canonical: `${host ? "host-subject" : "subject"} ${sel.canonical}`,
    matches: (id, labels) => isPolicySubject(id, labels, host) && matchesSelector(sel, labels),
    pin: host ? undefined : namespacePin([sel]),
  };
  subjectMatchers.set(p, m);
  return m;
}

function contributionsOf(t: Term, ports: readonly NumericPort[]): Contribution[] {
  return ports.map((p) => ({ ...p, verdict: t.verdict, ruleId: t.ruleId, proxyPort: t.proxyPort }));
}

function denyKey(cs: readonly Contribution[]): string {
  return cs
    .map((c) => `${c.proto}:${c.lo}-${c.hi}:${c.ruleId}`)
    .sort()
    .join(",");
}

/**
 * The selector-cache matcher for a rule peer; undefined = the wildcard (identity 0); null = nothing.
 * fromRequires/toRequires narrow endpoint selectors only (as in Cilium), never entities or CIDRs.
 */
function peerMatcherFor(peer: Peer, requires: readonly Selector[]): IdentityMatcher | undefined | null {
  switch (peer.kind) {
    case "any":
      return undefined;
    case "selector": {
      const sel = peer.selector;
      if (sel.requirements.length === 0 && requires.length === 0) return undefined;
      const all = [sel, ...requires];
      const m: PinnedMatcher = {
        canonical: ["sel", ...all.map((r) => r.canonical)].join(" & "),
        matches: (_id, labels) => all.every((r) => matchesSelector(r, labels)),
        pin: namespacePin(all),
      };
      return m;
    }
    case "entity":
      if (peer.entity === "all") return undefined;
      if (peer.entity === "none") return null;
      return entityMatcher(peer.entity);
    case "cidr":
      return cidrMatcher(peer.cidr, peer.except);
    case "fqdn":
      return fqdnMatcher(peer.matchName, peer.matchPattern);
    case "service":
      // toServices selects services (by name or by *service* labels); their backends are not known
      // here, so the peer matches nothing (fail closed) until a service resolver feeds backends in.
      return null;
  }
}

function emptyDir(): DirState {
  return {
    enforced: false,
    requiresKey: "",
    terms: [],
    termsByPeerKey: new Map(),
    wildcardTerms: [],
    wildcardDenies: [],
    entries: new Map(),
    templates: new Map(),
  };
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) {
    s = new Set();
    m.set(k, s);
  }
  s.add(v);
}

function addToList<K, V>(m: Map<K, V[]>, k: K, ...v: V[]): void {
  let s = m.get(k);
  if (!s) {
    s = [];
    m.set(k, s);
  }
  s.push(...v);
}

function splitUser(user: string): [number, Direction] {
  const slash = user.indexOf("/");
  return [Number(user.slice(0, slash)), user.slice(slash + 1) as Direction];
}
