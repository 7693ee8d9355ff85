// Resolution: a subject's rules become terms (peer selection × port contributions), and the terms matching a peer become its map entries.
import { serverNamesOnly } from "../l7/server-names.ts";
import { IDENTITY_WILDCARD, PROTO_NUMBER, type Direction, type Policy, type PolicyEntry, type PortRule, type Protocol, type Rule, type Selector, type Verdict } from "../model.ts";
import { icmpMatch } from "../icmp.ts";
import { alwaysEnforced } from "../identity.ts";
import { rangeToPrefixes } from "../portprefix.ts";
import { ALL_KNOWN_MATCHER, type PinnedMatcher } from "./selector-cache.ts";
import type { PartitionedSelectorCache } from "./selector-partitions.ts";
import { entrySlot } from "./mapstate.ts";
import type { L7Part } from "./proxy-ports.ts";

/**
 * Resolves a named port: the port numbers `identity`'s pods expose under `name` for `protocol`.
 * Ingress resolves against the subject, egress against the peer (the destination).
 */
export type NamedPortResolver = (identity: number, name: string, protocol: Protocol) => readonly number[];

export interface NumericPort {
  readonly proto: number;
  readonly lo: number;
  readonly hi: number;
}

/** How the ports of one toPorts entry of an allow rule are served (a deny's, and an L4-only allow's, plainly). */
export interface Serving {
  /** The rule's own proxy port for an entry with DNS rules (or other non-HTTP L7 rules); 0 otherwise. */
  readonly proxyPort: number;
  /**
   * For an entry with HTTP rules: its index in the rule's toPorts. Its key's requests are judged by the
   * HTTP rules of every such entry allowing the key, ORed behind one proxy port, unless an allow
   * without L7 rules covers the key too (Cilium: then every request is allowed).
   */
  readonly httpPart: number | undefined;
}

const PLAIN: Serving = { proxyPort: 0, httpPart: undefined };

interface ServedPort extends NumericPort, Serving {}

interface NamedPort extends Serving {
  readonly name: string;
  readonly protocol: Protocol;
}

/** One port range a rule contributes, with the verdict, rule and serving it carries. */
export interface Contribution extends NumericPort, Serving {
  readonly verdict: Verdict;
  readonly ruleId: number;
}

/** A rule's part for one peer: the peer is the wildcard (identity 0) or the identities a cached selector picks. */
export interface Term {
  readonly policyKey: string;
  /** undefined: the wildcard; else registered in the selector cache under matcher.canonical. */
  readonly matcher: PinnedMatcher | undefined;
  readonly verdict: Verdict;
  readonly ruleId: number;
  readonly ports: readonly ServedPort[];
  /** Egress only: resolved against each peer. */
  readonly namedPorts: readonly NamedPort[];
  /** Of `ports`, computed once. */
  readonly contributions: readonly Contribution[];
}

/** An entry without its subject, direction and peer: peers matched by the same terms share one template list. */
export interface EntryTemplate {
  /** proto, port and prefix length packed into one number (see mapstate's entrySlot). */
  readonly slot: number;
  readonly proto: number;
  readonly port: number;
  readonly portPrefixLen: number;
  readonly verdict: Verdict;
  readonly proxyPort: number;
  readonly ruleId: number;
  /** An HTTP redirect: proxyPort is the one of the union of the HTTP parts allowing this key. */
  readonly http: boolean;
}

/** A subject's rules in one direction, resolved into terms. */
export interface ResolvedDirection {
  readonly enforced: boolean;
  /** The fromRequires/toRequires selectors narrowing every endpoint peer, ordered by canonical form. */
  readonly requires: readonly string[];
  readonly terms: readonly Term[];
  /** selector canonical → indexes into terms */
  readonly termsBySelector: ReadonlyMap<string, readonly number[]>;
  readonly wildcardTerms: readonly Term[];
  readonly wildcardDenies: readonly Contribution[];
  /** The wildcard peer's HTTP redirects: they judge every peer's requests too (ORed into its own HTTP redirects where they overlap). */
  readonly wildcardHttp: readonly Contribution[];
  /**
   * The wildcard peer's allows without L7 rules, when some term of the direction has HTTP rules (else
   * none): where they cover a peer's own HTTP redirect, that peer's requests are all allowed.
   */
  readonly wildcardPlain: readonly Contribution[];
  /** Memo of templates per matched-term signature; valid for this resolution's lifetime. */
  readonly templates: Map<string, readonly EntryTemplate[]>;
}

/** What resolution needs from the other stages. */
export interface ResolutionContext {
  readonly selectorCache: PartitionedSelectorCache;
  readonly namedPorts: NamedPortResolver;
  ruleIdOf(policyKey: string, origin: Rule["origin"]): number;
  /** The proxy port of a subject's set of L7 parts (one rule's DNS rules, or the union of the HTTP parts allowing one key). */
  proxyPortFor(subject: number, parts: readonly L7Part[]): number;
  readonly compareRules: (a: number, b: number) => number;
}

const ALL_PORTS: NumericPort = { proto: 0, lo: 0, hi: 0xffff };
const ANY_EXPANSION = [PROTO_NUMBER.TCP, PROTO_NUMBER.UDP, PROTO_NUMBER.SCTP];

/** The protocol numbers a port's protocol stands for (ANY: TCP, UDP and SCTP). */
export function protoNumbers(p: Protocol): number[] {
  return p === "ANY" ? ANY_EXPANSION : [PROTO_NUMBER[p]];
}

/**
 * The terms of one subject's policies in one direction. `proxyRules` collects the ruleIds given an
 * L7 proxy port, so the caller can free the ports of rules that went.
 */
export function resolveDirection(
  ctx: ResolutionContext,
  subject: number,
  direction: Direction,
  parts: readonly Policy[],
  partKeys: readonly string[],
  proxyRules: Set<number>,
): ResolvedDirection {
  let enforced = alwaysEnforced(subject);
  const requiresBy = new Map<string, Selector>();
  for (const p of parts) {
    if (p.defaultDeny[direction]) enforced = true;
    for (const r of p.rules) if (r.direction === direction) for (const s of r.requires) requiresBy.set(s.canonical, s);
  }
  const requires = [...requiresBy.keys()].sort();
  const req = requires.map((k) => requiresBy.get(k)!);
  const terms: Term[] = [];
  parts.forEach((p, i) => {
    const key = partKeys[i] ?? "";
    for (const r of p.rules) if (r.direction === direction) terms.push(...termsOf(ctx, subject, key, r, req, proxyRules));
  });
  const termsBySelector = new Map<string, number[]>();
  const wildcardTerms: Term[] = [];
  terms.forEach((t, i) => {
    if (t.matcher === undefined) wildcardTerms.push(t);
    else addToList(termsBySelector, t.matcher.canonical, i);
  });
  const wildcardDenies = wildcardTerms.filter((t) => t.verdict === "deny").flatMap((t) => t.contributions);
  const wildcardAllows = wildcardTerms.filter((t) => t.verdict === "allow").flatMap((t) => t.contributions);
  const wildcardHttp = wildcardAllows.filter((c) => c.httpPart !== undefined);
  const hasHttp = terms.some((t) => t.verdict === "allow" && [...t.contributions, ...t.namedPorts].some((c) => c.httpPart !== undefined));
  const wildcardPlain = hasHttp ? wildcardAllows.filter(isPlain) : [];
  return { enforced, requires, terms, termsBySelector, wildcardTerms, wildcardDenies, wildcardHttp, wildcardPlain, templates: new Map() };
}

export const UNRESOLVED: ResolvedDirection = {
  enforced: false,
  requires: [],
  terms: [],
  termsBySelector: new Map(),
  wildcardTerms: [],
  wildcardDenies: [],
  wildcardHttp: [],
  wildcardPlain: [],
  templates: new Map(),
};

function termsOf(ctx: ResolutionContext, subject: number, key: string, r: Rule, requires: readonly Selector[], proxyRules: Set<number>): Term[] {
  const ruleId = ctx.ruleIdOf(key, r.origin);
  const ports: ServedPort[] = [];
  const named: NamedPort[] = [];
  let ownPort: number | undefined;
  // Each toPorts entry is served by its own L7 rules: none (a plain allow), its HTTP rules, or the rule's DNS (other L7) port.
  const servingOf = (pr: PortRule, index: number): Serving => {
    if (r.verdict !== "allow" || (!pr.rules && !serverNamesOnly(pr))) return PLAIN;
    proxyRules.add(ruleId);
    // serverNames alone are judged by the L7 proxy as an HTTP part without HTTP rules (its SNI, sni-filter.ts).
    if (!pr.rules || pr.rules.kind === "http") return { proxyPort: 0, httpPart: index };
    ownPort ??= ctx.proxyPortFor(subject, [{ ruleId }]);
    return { proxyPort: ownPort, httpPart: undefined };
  };
  r.ports.forEach((pr, index) => {
    const serving = servingOf(pr, index);
    if (pr.ports.length === 0) ports.push({ ...ALL_PORTS, ...serving });
    for (const pp of pr.ports) {
      if (pp.name !== undefined) {
        if (r.direction === "ingress") {
          for (const proto of protoNumbers(pp.protocol)) {
            for (const n of ctx.namedPorts(subject, pp.name, pp.protocol)) ports.push({ proto, lo: n, hi: n, ...serving });
          }
        } else {
          named.push({ name: pp.name, protocol: pp.protocol, ...serving });
        }
      } else if (pp.port === 0) {
        if (pp.protocol === "ANY") ports.push({ ...ALL_PORTS, ...serving });
        else ports.push({ proto: PROTO_NUMBER[pp.protocol], lo: 0, hi: 0xffff, ...serving });
      } else {
        for (const proto of protoNumbers(pp.protocol)) ports.push({ proto, lo: pp.port, hi: Math.max(pp.port, pp.endPort), ...serving });
      }
    }
  });
  for (const f of r.icmps) {
    const m = icmpMatch(f);
    if (m) ports.push({ proto: m.proto, lo: m.type, hi: m.type, ...PLAIN });
  }
  if (r.ports.length === 0 && r.icmps.length === 0) ports.push({ ...ALL_PORTS, ...PLAIN });
  const out: Term[] = [];
  const base = { policyKey: key, verdict: r.verdict, ruleId };
  const contributions: Contribution[] = ports.map((p) => ({ ...p, verdict: r.verdict, ruleId }));
  for (const peer of r.peers) {
    const selection = ctx.selectorCache.peerSelection(peer, requires);
    if (selection.kind === "nothing") continue;
    const matcher = selection.kind === "identities" ? selection.matcher : undefined;
    out.push({ ...base, matcher, ports, namedPorts: matcher === undefined ? [] : named, contributions });
    if (matcher === undefined && named.length > 0) {
      // A wildcard peer with named ports: every known identity resolves the names itself.
      out.push({ ...base, matcher: ALL_KNOWN_MATCHER, ports: [], namedPorts: named, contributions: [] });
    }
  }
  return out;
}

/** The identities (and the wildcard, as IDENTITY_WILDCARD) the terms' peers select now. */
export function peersOf(cache: PartitionedSelectorCache, terms: readonly Term[]): Set<number> {
  const out = new Set<number>();
  for (const t of terms) {
    if (t.matcher === undefined) out.add(IDENTITY_WILDCARD);
    else for (const id of cache.selections(t.matcher.canonical) ?? []) out.add(id);
  }
  return out;
}

/** Indexes of the (non-wildcard) terms whose selection holds `peer`, ascending. */
export function matchedTerms(cache: PartitionedSelectorCache, dir: ResolvedDirection, peer: number): number[] {
  const out: number[] = [];
  for (const [canonical, idxs] of dir.termsBySelector) if (cache.selections(canonical)?.has(peer)) out.push(...idxs);
  return out.sort((a, b) => a - b);
}

/**
 * Every selected peer with the indexes of the terms matching it, ascending. `answered(selector, peer)`: a peer that
 * selector selects needs no entries of its own from it (a class's entries answer for it), so it is listed only when
 * another selector selects it too, and then with every term matching it.
 */
export function matchedTermsByPeer(cache: PartitionedSelectorCache, dir: ResolvedDirection, answered: (selector: string, peer: number) => boolean = () => false): Map<number, number[]> {
  const matched = new Map<number, number[]>();
  const deferred: [ReadonlySet<number>, string, readonly number[]][] = [];
  for (const [canonical, idxs] of dir.termsBySelector) {
    const selected = cache.selections(canonical);
    if (!selected) continue;
    let some = false;
    for (const peer of selected) {
      if (answered(canonical, peer)) some = true;
      else addToList(matched, peer, ...idxs);
    }
    if (some) deferred.push([selected, canonical, idxs]);
  }
  for (const [selected, canonical, idxs] of deferred) for (const [peer, list] of matched) if (selected.has(peer) && answered(canonical, peer)) list.push(...idxs);
  for (const idxs of matched.values()) idxs.sort((a, b) => a - b);
  return matched;
}

/**
 * Whether two directions deny the same ports to every peer, redirect the same ports of every peer to
 * HTTP rules and allow the same ports of every peer without L7 rules where HTTP rules are about (a
 * change of any touches every peer's entries).
 */
export function sameWildcardDenies(a: ResolvedDirection, b: ResolvedDirection): boolean {
  return sameContributions(a.wildcardDenies, b.wildcardDenies) && sameContributions(a.wildcardHttp, b.wildcardHttp) && sameContributions(a.wildcardPlain, b.wildcardPlain);
}

function sameContributions(a: readonly Contribution[], b: readonly Contribution[]): boolean {
  if (a.length !== b.length) return false;
  const order = (x: Contribution, y: Contribution): number => x.proto - y.proto || x.lo - y.lo || x.hi - y.hi || x.ruleId - y.ruleId || (x.httpPart ?? -1) - (y.httpPart ?? -1);
  const sa = [...a].sort(order);
  const sb = [...b].sort(order);
  return sa.every((x, i) => order(x, sb[i]!) === 0);
}

export function sameRequires(a: ResolvedDirection, b: ResolvedDirection): boolean {
  return a.requires.length === b.requires.length && a.requires.every((r, i) => r === b.requires[i]);
}

/**
 * The entry templates of one peer given the terms that match it (`matched` is ignored for the wildcard).
 * Peers matched by the same terms get the very same array (memoised per resolution): the compiler holds
 * that array per peer, not an entry object per (peer, key), and makes entries only for a snapshot or a delta.
 */
export function peerTemplates(
  ctx: ResolutionContext,
  subject: number,
  direction: Direction,
  dir: ResolvedDirection,
  peer: number,
  matched: readonly number[],
): readonly EntryTemplate[] {
  if (peer === IDENTITY_WILDCARD) {
    let templates = dir.templates.get("*");
    if (!templates) dir.templates.set("*", (templates = entryTemplates(dir.wildcardTerms.flatMap((t) => t.contributions), NO_EXTRA, rulesOf(ctx, subject))));
    return templates;
  }
  if (matched.every((i) => dir.terms[i]!.namedPorts.length === 0)) {
    const sig = matched.join(",");
    let templates = dir.templates.get(sig);
    if (!templates) dir.templates.set(sig, (templates = entryTemplates(matched.flatMap((i) => dir.terms[i]!.contributions), dir, rulesOf(ctx, subject))));
    return templates;
  }
  const cs = matched.flatMap((i) => {
    const t = dir.terms[i]!;
    return t.namedPorts.length === 0 ? t.contributions : contributionsOf(t, portsFor(ctx, t, direction, peer));
  });
  return entryTemplates(cs, dir, rulesOf(ctx, subject));
}

/** The map entry a template stands for in one subject direction, for one peer. */
export function entryOf(subject: number, direction: Direction, peer: number, t: EntryTemplate): PolicyEntry {
  return { subject, direction, peer, proto: t.proto, port: t.port, portPrefixLen: t.portPrefixLen, verdict: t.verdict, proxyPort: t.proxyPort, ruleId: t.ruleId };
}

function portsFor(ctx: ResolutionContext, t: Term, direction: Direction, peer: number): readonly ServedPort[] {
  if (direction !== "egress" || t.namedPorts.length === 0) return t.ports;
  const ports = [...t.ports];
  for (const np of t.namedPorts) {
    const serving = { proxyPort: np.proxyPort, httpPart: np.httpPart };
    for (const proto of protoNumbers(np.protocol)) {
      for (const n of ctx.namedPorts(peer, np.name, np.protocol)) ports.push({ proto, lo: n, hi: n, ...serving });
    }
  }
  return ports;
}

function contributionsOf(t: Term, ports: readonly ServedPort[]): Contribution[] {
  return ports.map((p) => ({ ...p, verdict: t.verdict, ruleId: t.ruleId }));
}

/** What a peer's entries take from the wildcard peer's: its denies, its HTTP redirects and its allows without L7 rules. */
export interface WildcardExtras {
  readonly wildcardDenies: readonly Contribution[];
  readonly wildcardHttp: readonly Contribution[];
  readonly wildcardPlain: readonly Contribution[];
}

const NO_EXTRA: WildcardExtras = { wildcardDenies: [], wildcardHttp: [], wildcardPlain: [] };

/** How entryTemplates orders rules and finds the proxy port of a set of L7 parts, for one subject. */
export interface TemplateRules {
  readonly compareRules: (a: number, b: number) => number;
  readonly proxyPortFor: (parts: readonly L7Part[]) => number;
}

function rulesOf(ctx: ResolutionContext, subject: number): TemplateRules {
  return { compareRules: ctx.compareRules, proxyPortFor: (parts) => ctx.proxyPortFor(subject, parts) };
}

/**
 * Which of two entries for the same key the map keeps: deny; then, of an L4-only allow and an HTTP
 * rule's redirect, the L4-only allow (Cilium's docs: it allows every request on that peer and port);
 * of an L4-only allow and another proxy's redirect (DNS: its proxy learns the toFQDNs addresses), the
 * redirect; then the first rule by origin.
 */
export function preferred(a: EntryTemplate, b: EntryTemplate, compareRules: (a: number, b: number) => number): EntryTemplate {
  if (a.verdict !== b.verdict) return a.verdict === "deny" ? a : b;
  if (proxied(a) !== proxied(b)) {
    const [redirect, plain] = proxied(a) ? [a, b] : [b, a];
    return redirect.http ? plain : redirect;
  }
  if (a.ruleId !== b.ruleId) return compareRules(a.ruleId, b.ruleId) < 0 ? a : b;
  return a.proxyPort <= b.proxyPort ? a : b;
}

function intersect(a: NumericPort, b: NumericPort): NumericPort | undefined {
  if (a.proto !== 0 && b.proto !== 0 && a.proto !== b.proto) return undefined;
  const lo = Math.max(a.lo, b.lo);
  const hi = Math.min(a.hi, b.hi);
  if (lo > hi) return undefined;
  return { proto: a.proto || b.proto, lo, hi };
}

/** Port blocks of a range, memoised: the same ranges recur across thousands of subjects. */
const blockCache = new Map<number, readonly { port: number; prefixLen: number }[]>();
function blocksOf(c: NumericPort): readonly { port: number; prefixLen: number }[] {
  if (c.proto === 0 || (c.lo === 0 && c.hi === 0xffff)) return [{ port: 0, prefixLen: 0 }];
  const k = c.lo * 0x10000 + c.hi;
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
 * the longest-prefix lookup can never pick the allow. An HTTP redirect's proxy port is the one of
 * every HTTP part allowing its whole block, the wildcard peer's too (`extra.wildcardHttp`): their
 * rules are ORed (Cilium: a request is allowed when any rule selecting the flow allows it). Where a
 * wildcard HTTP redirect overlaps part of one of this peer's, the overlap gets an entry of its own,
 * since the lookup stops at this peer's entries and never reaches the wildcard's. Where an allow
 * without L7 rules (this peer's, of any width, or the wildcard peer's: `extra.wildcardPlain`)
 * covers part of an HTTP redirect, that part is a plain allow of its own, at least as specific as the
 * redirect: Cilium allows every request there (an L4-only rule's peers are allowed at L7 whatever the
 * other rules on the port say), so not sending it to the proxy at all is the same verdict with no hop.
 */
export function entryTemplates(contributions: readonly Contribution[], extra: WildcardExtras, rules: TemplateRules): EntryTemplate[] {
  const out = new Map<number, EntryTemplate>();
  const put = (c: Contribution): void => {
    const allow = c.verdict === "allow";
    const proxyPort = allow ? c.proxyPort : 0;
    const http = allow && c.httpPart !== undefined;
    for (const b of blocksOf(c)) {
      const slot = entrySlot(c.proto, b.port, b.prefixLen);
      const e: EntryTemplate = { slot, proto: c.proto, port: b.port, portPrefixLen: b.prefixLen, verdict: c.verdict, proxyPort, ruleId: c.ruleId, http };
      const prev = out.get(slot);
      out.set(slot, prev ? preferred(prev, e, rules.compareRules) : e);
    }
  };
  const ownHttp = contributions.filter((c) => c.verdict === "allow" && c.httpPart !== undefined);
  const overlaps: Contribution[] = [];
  for (const c of ownHttp) {
    for (const w of extra.wildcardHttp) {
      const x = intersect(c, w);
      if (x) overlaps.push({ ...x, verdict: "allow", ruleId: c.ruleId, proxyPort: 0, httpPart: c.httpPart });
    }
  }
  const allows = [...contributions, ...overlaps];
  for (const c of allows) put(c);
  if (ownHttp.length > 0) {
    const plain = [...contributions.filter(isPlain), ...extra.wildcardPlain];
    const redirects = [...out.values()].filter((t) => t.verdict === "allow" && t.http);
    for (const t of redirects) {
      for (const a of plain) {
        const x = intersect(blockOf(t), a);
        if (x) allows.push({ ...x, ...PLAIN, verdict: "allow", ruleId: a.ruleId });
      }
    }
    for (const c of allows.slice(contributions.length + overlaps.length)) put(c);
  }
  const denies = [...contributions.filter((c) => c.verdict === "deny"), ...extra.wildcardDenies];
  for (const c of allows) {
    if (c.verdict !== "allow") continue;
    for (const d of denies) {
      const x = intersect(c, d);
      if (x) put({ ...x, ...PLAIN, verdict: "deny", ruleId: d.ruleId });
    }
  }
  if (ownHttp.length === 0) return [...out.values()];
  const http = [...ownHttp, ...extra.wildcardHttp];
  return [...out.values()].map((t) => (t.verdict === "allow" && t.http ? { ...t, proxyPort: rules.proxyPortFor(httpPartsCovering(http, t)) } : t));
}

/** An allow of a toPorts entry without L7 rules (or of a rule without toPorts). */
function isPlain(c: Contribution): boolean {
  return c.verdict === "allow" && c.proxyPort === 0 && c.httpPart === undefined;
}

/** The ports an entry's block holds. */
function blockOf(t: EntryTemplate): NumericPort {
  return { proto: t.proto, lo: t.port, hi: t.port + 2 ** (16 - t.portPrefixLen) - 1 };
}

/** The HTTP parts whose ports hold the whole of an entry's block, each once. */
function httpPartsCovering(http: readonly Contribution[], t: EntryTemplate): L7Part[] {
  const { lo, hi } = blockOf(t);
  const parts: L7Part[] = [];
  for (const c of http) {
    if (c.httpPart === undefined || !((c.proto === 0 || c.proto === t.proto) && c.lo <= lo && c.hi >= hi)) continue;
    if (!parts.some((p) => p.ruleId === c.ruleId && p.portRule === c.httpPart)) parts.push({ ruleId: c.ruleId, portRule: c.httpPart });
  }
  return parts;
}

const proxied = (t: EntryTemplate): boolean => t.proxyPort !== 0 || t.http;

function addToList<K, V>(m: Map<K, V[]>, k: K, ...v: V[]): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = []));
  s.push(...v);
}
