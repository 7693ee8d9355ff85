// The selector cache: each distinct peer/subject selector evaluated once, its matching identities kept up to date incrementally.
import type { Entity, LabelSet, Peer, Policy, Selector } from "../model.ts";
import { LABEL_SOURCE, POD_NAMESPACE_LABEL } from "../labels.ts";
import { matchesSelector } from "../selector.ts";
import { entitySelectors } from "../entities.ts";
import { parsePrefix, prefixContains, formatPrefix, type Prefix } from "../cidr.ts";
import { fqdnMatches, identityNames, isPolicySubject } from "../peer-match.ts";
import { type ServiceIndex, type ServicePeer, serviceCanonical } from "./services.ts";
import { prefixOfLabelKey } from "../identity.ts";
import { ipBlockPrefixOf } from "../ipblock.ts";
import { isNodeHostIdentity } from "../host-endpoint.ts";
import { nodeSelected } from "../node-peers.ts";

/**
 * Anything the cache can evaluate: a stable canonical string and a predicate over one identity.
 * `anchors` (optional) lets the cache skip identities that cannot match: every identity the
 * matcher matches must produce at least one of them (see identityAnchors); [] = matches nothing;
 * undefined = evaluate against every identity.
 */
export interface IdentityMatcher {
  readonly canonical: string;
  matches(id: number, labels: LabelSet): boolean;
  readonly anchors?: readonly string[];
  /** Set only by NetworkPolicy ipBlock peers: the one kind of matcher that may select ipBlock identities (see matchesIdentity). */
  readonly selectsIPBlocks?: true;
  /** Set only by host policies' subject matchers and node selectors (toNodes/fromNodes): the matchers that may select node host subjects (core/host-endpoint.ts). */
  readonly selectsNodeHosts?: true;
}

/**
 * The one place a cached matcher meets an identity. ipBlock identities (core/ipblock.ts) stand for
 * pod addresses inside a NetworkPolicy ipBlock: any other selector (a negative label requirement,
 * an entity, a CNP CIDR) must never select them, or the datapath's second look would let it match pods.
 */
export function matchesIdentity(m: IdentityMatcher, id: number, labels: LabelSet): boolean {
  if (m.selectsIPBlocks !== true && ipBlockPrefixOf(labels) !== undefined) return false;
  // A node host subject is a compile-time stand-in for one node's reserved:host: a peer only of node selectors (core/node-peers.ts).
  if (m.selectsNodeHosts !== true && isNodeHostIdentity(id)) return false;
  return m.matches(id, labels);
}

// Anchors: "L|source:key=value" (a label), "K|source:key" (a key), "S|source" (a source); each
// label also yields its any-source forms, so `any:` requirements anchor too.
function splitKey(requirementKey: string): string {
  return requirementKey.includes(":") ? requirementKey : `${LABEL_SOURCE.any}:${requirementKey}`;
}

const anchorCache = new WeakMap<LabelSet, readonly string[]>();

/** The anchors an identity's labels produce. */
export function identityAnchors(labels: LabelSet): readonly string[] {
  const cached = anchorCache.get(labels);
  if (cached !== undefined) return cached;
  const out = new Set<string>();
  for (const l of labels.labels) {
    for (const src of [l.source, LABEL_SOURCE.any]) {
      out.add(`L|${src}:${l.key}=${l.value}`);
      out.add(`K|${src}:${l.key}`);
    }
    out.add(`S|${l.source}`);
  }
  const anchors = [...out];
  anchorCache.set(labels, anchors);
  return anchors;
}

/** Anchors of one selector: its first In requirement's values, else its first Exists key; undefined if it has neither. */
export function selectorAnchors(sel: Selector): readonly string[] | undefined {
  const inReq = sel.requirements.find((r) => r.operator === "In");
  if (inReq !== undefined) return inReq.values.map((v) => `L|${splitKey(inReq.key)}=${v}`);
  const exists = sel.requirements.find((r) => r.operator === "Exists");
  if (exists !== undefined) return [`K|${splitKey(exists.key)}`];
  return undefined;
}

/** Anchors of a union of selectors (undefined as soon as one member is unanchored). */
function unionAnchors(selectors: readonly Selector[]): readonly string[] | undefined {
  const out: string[] = [];
  for (const s of selectors) {
    const a = selectorAnchors(s);
    if (a === undefined) return undefined;
    out.push(...a);
  }
  return out;
}

export function selectorMatcher(sel: Selector): IdentityMatcher {
  return { canonical: sel.canonical, matches: (_id, labels) => matchesSelector(sel, labels), anchors: selectorAnchors(sel) };
}

/** Identities matching every one of the selectors (e.g. a peer narrowed by fromRequires). */
export function conjunctionMatcher(selectors: readonly Selector[], canonicalPrefix = "sel"): IdentityMatcher {
  const anchored = selectors.map(selectorAnchors).find((a) => a !== undefined);
  return {
    canonical: [canonicalPrefix, ...selectors.map((s) => s.canonical)].join(" & "),
    matches: (_id, labels) => selectors.every((s) => matchesSelector(s, labels)),
    anchors: anchored,
  };
}

/** The L3 wildcard: every identity, world included. */
export const ANY_MATCHER: IdentityMatcher = { canonical: "any", matches: () => true };

/** The empty selection (e.g. a peer kind that cannot select identities directly): fails closed. */
export function nothingMatcher(canonical: string): IdentityMatcher {
  return { canonical, matches: () => false, anchors: [] };
}

export function entityMatcher(entity: Entity, clusterName?: string): IdentityMatcher {
  const selectors = entitySelectors(entity, clusterName);
  return {
    canonical: `entity:${entity}`,
    matches: (_id, labels) => selectors.some((s) => matchesSelector(s, labels)),
    anchors: unionAnchors(selectors),
  };
}

/** The prefix a CIDR identity stands for: its most specific `cidr:` label (IPv6 written with '-'). */
const prefixCache = new WeakMap<LabelSet, Prefix | null>();
export function identityPrefixOf(labels: LabelSet): Prefix | undefined {
  const cached = prefixCache.get(labels);
  if (cached !== undefined) return cached ?? undefined;
  let best: Prefix | undefined;
  for (const l of labels.labels) {
    if (l.source !== LABEL_SOURCE.cidr) continue;
    const p = prefixOfLabelKey(l.key);
    if (p !== undefined && (best === undefined || p.bits > best.bits)) best = p;
  }
  prefixCache.set(labels, best ?? null);
  return best;
}

function hasReserved(labels: LabelSet, name: string): boolean {
  return labels.labels.some((l) => l.source === LABEL_SOURCE.reserved && l.key === name);
}

/**
 * toCIDR / toCIDRSet: CIDR identities whose prefix lies inside `cidr` and inside none of `except`.
 * A /0 also selects the world identities of its family (and `world`), which stand for every
 * address no policy names a prefix for. A malformed prefix selects nothing.
 */
export function cidrMatcher(cidr: string, except: readonly string[] = []): IdentityMatcher {
  const p = parsePrefix(cidr);
  const ex = except.map(parsePrefix);
  if (p === undefined || ex.some((e) => e === undefined)) return nothingMatcher(`cidr:${JSON.stringify([cidr, [...except].sort()])}`);
  const exPrefixes = (ex as Prefix[]).filter((e) => e.family === p.family);
  const exText = [...new Set(exPrefixes.map(formatPrefix))].sort();
  const worldName = p.family === 4 ? "world-ipv4" : "world-ipv6";
  return {
    canonical: `cidr:${formatPrefix(p)}${exText.length > 0 ? ` except ${exText.join(",")}` : ""}`,
    anchors: [`S|${LABEL_SOURCE.cidr}`, ...(p.bits === 0 ? [`K|${LABEL_SOURCE.reserved}:${worldName}`, `K|${LABEL_SOURCE.reserved}:world`] : [])],
    matches: (_id, labels) => {
      const ip = identityPrefixOf(labels);
      // A CIDR identity is judged by its prefix (so `except` holds even under a /0); only the
      // prefix-less world identities stand for "any address not otherwise known" under a /0.
      if (ip === undefined) return p.bits === 0 && (hasReserved(labels, worldName) || hasReserved(labels, "world"));
      if (!prefixContains(p, ip)) return false;
      return !exPrefixes.some((e) => prefixContains(e, ip));
    },
  };
}

/**
 * NetworkPolicy ipBlock: the CIDR identities of cidrMatcher (addresses outside the cluster) and the
 * ipBlock identities whose prefix lies inside `cidr` and inside none of `except` (pod addresses).
 */
export function ipBlockMatcher(cidr: string, except: readonly string[] = []): IdentityMatcher {
  const outside = cidrMatcher(cidr, except);
  const p = parsePrefix(cidr);
  const ex = except.map(parsePrefix);
  if (p === undefined || ex.some((e) => e === undefined)) return nothingMatcher(`ipblock:${JSON.stringify([cidr, [...except].sort()])}`);
  const exPrefixes = (ex as Prefix[]).filter((e) => e.family === p.family);
  return {
    canonical: outside.canonical.replace(/^cidr:/, "ipblock:"),
    anchors: [...(outside.anchors ?? []), `S|${LABEL_SOURCE.ipblock}`],
    selectsIPBlocks: true,
    matches: (id, labels) => {
      const bp = ipBlockPrefixOf(labels);
      if (bp === undefined) return outside.matches(id, labels);
      return prefixContains(p, bp) && !exPrefixes.some((e) => prefixContains(e, bp));
    },
  };
}

/** toFQDNs: identities learned from DNS answers (their `fqdn:` labels) for a matching name. */
export function fqdnMatcher(matchName?: string, matchPattern?: string): IdentityMatcher {
  return {
    canonical: `fqdn:${JSON.stringify([matchName ?? null, matchPattern ?? null])}`,
    anchors: [`S|${LABEL_SOURCE.fqdn}`],
    matches: (_id, labels) => identityNames(labels).some((n) => fqdnMatches(n, matchName, matchPattern)),
  };
}

/**
 * toServices: the identities of the pods behind the selected Services' EndpointSlices, and the CIDR
 * identities of the addresses of selected Services without a selector. The selection follows
 * `services` (the compiler re-evaluates these matchers when it changes); no Service, no backend:
 * nothing.
 */
export function serviceMatcher(peer: ServicePeer, services: ServiceIndex): IdentityMatcher {
  return {
    canonical: serviceCanonical(peer),
    // Backends are pods (their identities carry the namespace label) or CIDR identities.
    anchors: [`K|${LABEL_SOURCE.k8s}:${POD_NAMESPACE_LABEL}`, `S|${LABEL_SOURCE.cidr}`],
    matches: (id, labels) => {
      const sel = services.selection(peer);
      if (sel.identities.has(id)) return true;
      if (sel.prefixes.size === 0) return false;
      const p = identityPrefixOf(labels);
      return p !== undefined && p.bits === (p.family === 4 ? 32 : 128) && sel.prefixes.has(formatPrefix(p));
    },
  };
}

/** toNodes/fromNodes: the node host subjects whose Node labels the selector matches (core/node-peers.ts). */
export function nodesMatcher(selector: Selector): IdentityMatcher {
  return {
    canonical: `nodes ${selector.canonical}`,
    anchors: [`L|${LABEL_SOURCE.reserved}:host=`],
    matches: (id, labels) => nodeSelected(selector, id, labels),
    selectsNodeHosts: true,
  };
}

/** Whether a selector-cache key is a toServices entry's (whose selection follows the Services, not only the identities). */
export function isServiceCanonical(canonical: string): boolean {
  return canonical.startsWith("service:");
}

/**
 * A rule peer as a matcher. Without the Services (`services` absent), `service` peers select
 * nothing: failing closed is the only safe reading.
 */
export function peerMatcher(peer: Peer, clusterName?: string, services?: ServiceIndex): IdentityMatcher {
  switch (peer.kind) {
    case "any":
      return ANY_MATCHER;
    case "selector":
      return selectorMatcher(peer.selector);
    case "entity":
      return entityMatcher(peer.entity, clusterName);
    case "cidr":
      return peer.podAddresses === true ? ipBlockMatcher(peer.cidr, peer.except) : cidrMatcher(peer.cidr, peer.except);
    case "cidrGroup":
      // The operator replaces group peers with the groups' CIDRs before compiling: one left is a group not known.
      return nothingMatcher(`cidrgroup ${peer.name ?? peer.selector?.canonical ?? ""}`);
    case "fqdn":
      return fqdnMatcher(peer.matchName, peer.matchPattern);
    case "nodes":
      return nodesMatcher(peer.selector);
    case "service":
      return services ? serviceMatcher(peer, services) : nothingMatcher(`${serviceCanonical(peer)} (no services)`);
  }
}

/** A matcher that can only match identities of one namespace (`pin`), or any (`pin` absent). */
export interface PinnedMatcher extends IdentityMatcher {
  readonly pin?: string;
}

const NAMESPACE_KEYS = new Set([`k8s:${POD_NAMESPACE_LABEL}`, `any:${POD_NAMESPACE_LABEL}`]);

/** The namespace a conjunction of selectors pins its matches to: a single-valued `In` on the namespace label. */
export function namespacePin(selectors: readonly Selector[]): string | undefined {
  for (const s of selectors) {
    for (const r of s.requirements) {
      if (NAMESPACE_KEYS.has(r.key) && r.operator === "In" && r.values.length === 1) return r.values[0];
    }
  }
  return undefined;
}

const subjectMatchers = new WeakMap<Policy, PinnedMatcher>();

/** The matcher for a policy's subjects: the endpoints (or, for a host policy, the host) its selector picks. */
export function subjectMatcher(p: Policy): PinnedMatcher {
  let m = subjectMatchers.get(p);
  if (m) return m;
  const host = p.nodeSelector !== undefined;
  const sel = p.nodeSelector ?? p.subject;
  m = {
    canonical: `${host ? "host-subject" : "subject"} ${sel.canonical}`,
    matches: (id, labels) => isPolicySubject(id, labels, host) && matchesSelector(sel, labels),
    pin: host ? undefined : namespacePin([sel]),
    ...(host ? { selectsNodeHosts: true as const } : {}),
  };
  subjectMatchers.set(p, m);
  return m;
}

/** What a rule peer selects: every identity as the map's wildcard (identity 0), nothing, or the identities a matcher picks. */
export type RulePeerSelection =
  | { readonly kind: "wildcard" }
  | { readonly kind: "nothing" }
  | { readonly kind: "identities"; readonly matcher: PinnedMatcher };

const WILDCARD: RulePeerSelection = { kind: "wildcard" };
const NOTHING: RulePeerSelection = { kind: "nothing" };

/** Every known identity, for a wildcard peer whose named ports each identity resolves itself. */
export const ALL_KNOWN_MATCHER: PinnedMatcher = { canonical: "known:*", matches: () => true };

/**
 * A rule peer as the compiled map sees it. fromRequires/toRequires narrow endpoint selectors only
 * (as in Cilium), never entities or CIDRs. `service` peers select the backends of the Services in
 * `services` (nothing without it: fail closed).
 */
export function rulePeerSelection(peer: Peer, requires: readonly Selector[], clusterName?: string, services?: ServiceIndex): RulePeerSelection {
  switch (peer.kind) {
    case "any":
      return WILDCARD;
    case "selector": {
      const sel = peer.selector;
      if (sel.requirements.length === 0 && requires.length === 0) return WILDCARD;
      const all = [sel, ...requires];
      return {
        kind: "identities",
        matcher: {
          canonical: ["sel", ...all.map((r) => r.canonical)].join(" & "),
          matches: (_id, labels) => all.every((r) => matchesSelector(r, labels)),
          pin: namespacePin(all),
        },
      };
    }
    case "entity":
      if (peer.entity === "all") return WILDCARD;
      if (peer.entity === "none") return NOTHING;
      return { kind: "identities", matcher: entityMatcher(peer.entity, clusterName) };
    case "cidr":
      return { kind: "identities", matcher: peer.podAddresses === true ? ipBlockMatcher(peer.cidr, peer.except) : cidrMatcher(peer.cidr, peer.except) };
    case "cidrGroup":
      return NOTHING; // not replaced by the groups' CIDRs (core/cidr-group.ts): fail closed
    case "fqdn":
      return { kind: "identities", matcher: fqdnMatcher(peer.matchName, peer.matchPattern) };
    case "nodes":
      return { kind: "identities", matcher: nodesMatcher(peer.selector) };
    case "service":
      return services ? { kind: "identities", matcher: serviceMatcher(peer, services) } : NOTHING;
  }
}

/** How one cached selection changed. */
export interface SelectionChange {
  readonly canonical: string;
  readonly added: readonly number[];
  readonly removed: readonly number[];
}

/** A registered selector: its live selection. Stale after its last release. */
export interface SelectorHandle {
  readonly canonical: string;
  /** The matching identity numbers (live view; do not modify). */
  readonly selections: ReadonlySet<number>;
  /** The selection, ascending. */
  sorted(): number[];
}

interface CacheEntry extends SelectorHandle {
  readonly matcher: IdentityMatcher;
  readonly selections: Set<number>;
  refs: number;
}

export interface SelectorCacheOptions {
  /** The local cluster's name, for the `cluster` entity. */
  readonly clusterName?: string;
}

/**
 * Holds every selector in use and the identities each one selects. Adding an identity evaluates
 * each distinct selector once against it and reports what changed; adding a selector evaluates it
 * once against every known identity. Selectors are reference-counted and dropped with their last user.
 */
export class SelectorCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly identityLabels = new Map<number, LabelSet>();
  private readonly clusterName: string | undefined;
  /** Entries by anchor, and the entries that must see every identity. */
  private readonly entriesByAnchor = new Map<string, Set<CacheEntry>>();
  private readonly unanchored = new Set<CacheEntry>();
  /** Identities by anchor, to evaluate a new selector only against identities that can match. */
  private readonly idsByAnchor = new Map<string, Set<number>>();

  constructor(opts: SelectorCacheOptions = {}) {
    this.clusterName = opts.clusterName;
  }

  /** Registers a matcher (or takes another reference to an equal one) and returns its handle. */
  add(matcher: IdentityMatcher): SelectorHandle {
    const existing = this.entries.get(matcher.canonical);
    if (existing !== undefined) {
      existing.refs++;
      return existing;
    }
    const selections = new Set<number>();
    const candidates: Iterable<number> =
      matcher.anchors === undefined ? this.identityLabels.keys() : new Set(matcher.anchors.flatMap((a) => [...(this.idsByAnchor.get(a) ?? [])]));
    for (const id of candidates) if (matchesIdentity(matcher, id, this.identityLabels.get(id)!)) selections.add(id);
    const entry: CacheEntry = {
      canonical: matcher.canonical,
      matcher,
      selections,
      refs: 1,
      sorted: () => [...selections].sort((a, b) => a - b),
    };
    this.entries.set(matcher.canonical, entry);
    if (matcher.anchors === undefined) this.unanchored.add(entry);
    else for (const a of matcher.anchors) addToIndex(this.entriesByAnchor, a, entry);
    return entry;
  }

  addSelector(sel: Selector): SelectorHandle {
    return this.add(selectorMatcher(sel));
  }

  addPeer(peer: Peer): SelectorHandle {
    return this.add(peerMatcher(peer, this.clusterName));
  }

  /** Drops one reference; returns true when this was the last and the selector is gone. */
  release(handle: SelectorHandle | string): boolean {
    const canonical = typeof handle === "string" ? handle : handle.canonical;
    const entry = this.entries.get(canonical);
    if (entry === undefined) return false;
    if (--entry.refs > 0) return false;
    this.entries.delete(canonical);
    if (entry.matcher.anchors === undefined) this.unanchored.delete(entry);
    else for (const a of entry.matcher.anchors) removeFromIndex(this.entriesByAnchor, a, entry);
    return true;
  }

  get(canonical: string): SelectorHandle | undefined {
    return this.entries.get(canonical);
  }

  /** The current selection of a registered selector, or undefined when it is not registered. */
  selections(canonical: string): ReadonlySet<number> | undefined {
    return this.entries.get(canonical)?.selections;
  }

  /** Reference count of a selector (0 when not registered). */
  refCount(canonical: string): number {
    return this.entries.get(canonical)?.refs ?? 0;
  }

  get size(): number {
    return this.entries.size;
  }

  canonicals(): string[] {
    return [...this.entries.keys()].sort();
  }

  identities(): ReadonlyMap<number, LabelSet> {
    return this.identityLabels;
  }

  /** Adds an identity or changes its labels; returns the selections that changed, by canonical string. */
  upsertIdentity(id: number, labels: LabelSet): SelectionChange[] {
    const old = this.identityLabels.get(id);
    if (old !== undefined) for (const a of identityAnchors(old)) removeFromIndex(this.idsByAnchor, a, id);
    const anchors = identityAnchors(labels);
    for (const a of anchors) addToIndex(this.idsByAnchor, a, id);
    this.identityLabels.set(id, labels);
    // Candidates: entries that may match the new labels, and those that may have matched the old.
    const candidates = new Set<CacheEntry>(this.unanchored);
    for (const a of old === undefined ? anchors : [...anchors, ...identityAnchors(old)]) {
      for (const e of this.entriesByAnchor.get(a) ?? []) candidates.add(e);
    }
    const changes: SelectionChange[] = [];
    for (const entry of candidates) {
      const was = entry.selections.has(id);
      const now = matchesIdentity(entry.matcher, id, labels);
      if (was === now) continue;
      if (now) entry.selections.add(id);
      else entry.selections.delete(id);
      changes.push({ canonical: entry.canonical, added: now ? [id] : [], removed: now ? [] : [id] });
    }
    return sortChanges(changes);
  }

  /**
   * Evaluates again the selectors `which` picks, against every identity that can match them: for
   * matchers whose data changed (a toServices entry when the Services did). Returns what changed.
   */
  reevaluate(which: (canonical: string) => boolean): SelectionChange[] {
    const changes: SelectionChange[] = [];
    for (const entry of this.entries.values()) {
      if (!which(entry.canonical)) continue;
      const m = entry.matcher;
      const candidates = new Set<number>(entry.selections);
      if (m.anchors === undefined) for (const id of this.identityLabels.keys()) candidates.add(id);
      else for (const a of m.anchors) for (const id of this.idsByAnchor.get(a) ?? []) candidates.add(id);
      const added: number[] = [];
      const removed: number[] = [];
      for (const id of candidates) {
        const was = entry.selections.has(id);
        const now = matchesIdentity(m, id, this.identityLabels.get(id)!);
        if (was === now) continue;
        if (now) {
          entry.selections.add(id);
          added.push(id);
        } else {
          entry.selections.delete(id);
          removed.push(id);
        }
      }
      if (added.length > 0 || removed.length > 0)
        changes.push({ canonical: entry.canonical, added: added.sort((a, b) => a - b), removed: removed.sort((a, b) => a - b) });
    }
    return sortChanges(changes);
  }

  /** Removes an identity; returns the selections that lost it. */
  removeIdentity(id: number): SelectionChange[] {
    const old = this.identityLabels.get(id);
    if (old === undefined) return [];
    this.identityLabels.delete(id);
    const anchors = identityAnchors(old);
    for (const a of anchors) removeFromIndex(this.idsByAnchor, a, id);
    const candidates = new Set<CacheEntry>(this.unanchored);
    for (const a of anchors) for (const e of this.entriesByAnchor.get(a) ?? []) candidates.add(e);
    const changes: SelectionChange[] = [];
    for (const entry of candidates) {
      if (entry.selections.delete(id)) changes.push({ canonical: entry.canonical, added: [], removed: [id] });
    }
    return sortChanges(changes);
  }
}

function addToIndex<V>(index: Map<string, Set<V>>, key: string, v: V): void {
  const set = index.get(key);
  if (set === undefined) index.set(key, new Set([v]));
  else set.add(v);
}

function removeFromIndex<V>(index: Map<string, Set<V>>, key: string, v: V): void {
  const set = index.get(key);
  if (set !== undefined && set.delete(v) && set.size === 0) index.delete(key);
}

function sortChanges(changes: SelectionChange[]): SelectionChange[] {
  return changes.sort((a, b) => (a.canonical < b.canonical ? -1 : a.canonical > b.canonical ? 1 : 0));
}

/** Merges successive change lists into one net change per selector (an add then a remove cancel out). */
export function mergeSelectionChanges(lists: Iterable<readonly SelectionChange[]>): SelectionChange[] {
  const net = new Map<string, Map<number, boolean>>();
  for (const list of lists) {
    for (const c of list) {
      let m = net.get(c.canonical);
      if (m === undefined) net.set(c.canonical, (m = new Map()));
      for (const id of c.added) {
        if (m.get(id) === false) m.delete(id);
        else m.set(id, true);
      }
      for (const id of c.removed) {
        if (m.get(id) === true) m.delete(id);
        else m.set(id, false);
      }
    }
  }
  const out: SelectionChange[] = [];
  for (const [canonical, m] of net) {
    const added = [...m].filter(([, v]) => v).map(([id]) => id).sort((a, b) => a - b);
    const removed = [...m].filter(([, v]) => !v).map(([id]) => id).sort((a, b) => a - b);
    if (added.length > 0 || removed.length > 0) out.push({ canonical, added, removed });
  }
  return sortChanges(out);
}
