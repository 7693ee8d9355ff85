// The policy compiler: the facade over core/policy's stages (repository → selector cache → resolution → map state), one delta per change.
import { IDENTITY_WILDCARD, type Direction, type LabelSet, type Policy, type PolicyEntry, type RuleHttpRules, type RuleOrigin, type SubjectDns, type SubjectPolicy } from "./model.ts";
import { PolicyRepository, policyKey } from "./policy/repository.ts";
import { PartitionedSelectorCache, type SelectionUser } from "./policy/selector-partitions.ts";
import {
  UNRESOLVED,
  matchedTerms,
  matchedTermsByPeer,
  entryOf,
  peerTemplates,
  peersOf,
  resolveDirection,
  sameRequires,
  sameWildcardDenies,
  type NamedPortResolver,
  type ResolutionContext,
  type EntryTemplate,
  type ResolvedDirection,
  type Term,
} from "./policy/resolution.ts";
import { DeltaCollector, compareEntries, type Delta } from "./policy/mapstate.ts";
import { ProxyPortAllocator, type ProxyPortRange } from "./policy/proxy-ports.ts";
import { ServiceIndex, type ServiceBackends } from "./policy/services.ts";
import { subjectDns } from "./policy/dns-rules.ts";
import { strayPeerTemplates } from "./policy/stray-peers.ts";
import { subjectHttp, withProxyPorts } from "./policy/http-rules.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, IDENTITY, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER, answeringClass, inClusterClass, inEveryPodClass, inWorldClass, worldFamilyOf } from "./identity.ts";
import type { IPFamily } from "./cidr.ts";
import { isIPBlockIdentity } from "./ipblock.ts";
import { entityMatches } from "./entities.ts";
import { entityMatcher, matchesIdentity, rulePeerSelection, type IdentityMatcher } from "./policy/selector-cache.ts";
import { networkPolicyPeerSelector } from "./selector.ts";
import { DEFAULT_CLUSTER_NAME } from "./labels.ts";

export { RULE_ID_DEFAULT_DENY, policyKey, policyPrefixes } from "./policy/repository.ts";
export type { NamedPortResolver } from "./policy/resolution.ts";
export { DeltaCollector } from "./policy/mapstate.ts";
export type { Delta } from "./policy/mapstate.ts";
export { serviceBackends, type ServiceBackends, type ServiceEndpoints } from "./policy/services.ts";

export interface CompilerOptions {
  readonly namedPorts?: NamedPortResolver;
  /** Proxy ports handed to L7 redirects, inclusive. */
  readonly proxyPorts?: ProxyPortRange;
  /** The local cluster's name, for the `cluster` entity (the default cluster name when absent). */
  readonly clusterName?: string;
}

const DIRECTIONS: readonly Direction[] = ["ingress", "egress"];

/** One subject direction as a user of the peer selectors its terms name: told which peers to recompute. */
class DirectionUser implements SelectionUser {
  constructor(
    readonly subject: number,
    readonly direction: Direction,
    private readonly dirty: Map<DirectionUser, Set<number>>,
    /** This direction's compiled state: whether its class entries answer for a peer (PolicyCompiler.classAnswers), whether it holds one. */
    private readonly peers: PeerView,
  ) {}

  identitiesChanged(selector: string, added: readonly number[], removed: readonly number[]): void {
    // A peer that comes into or leaves a class selector's selection alone moves nothing the class's entries do not say
    // (identities × subjects of `cluster` / every-pod rules otherwise: the operator's restart with 65,000 identities).
    let peers = this.dirty.get(this);
    for (const id of added) {
      if (this.peers.answers(this, selector, id)) continue;
      if (!peers) this.dirty.set(this, (peers = new Set()));
      peers.add(id);
    }
    for (const id of removed) {
      if (this.peers.answers(this, selector, id) && !this.peers.holds(this, id)) continue;
      if (!peers) this.dirty.set(this, (peers = new Set()));
      peers.add(id);
    }
  }
}

/** What a DirectionUser asks of its subject direction's compiled state. */
interface PeerView {
  answers(user: DirectionUser, selector: string, peer: number): boolean;
  holds(user: DirectionUser, peer: number): boolean;
}

/**
 * One subject direction's entries: peer → its entry templates, one key each. Peers matched by the same terms
 * share one template array (resolution memoises it), so a peer costs a reference here, not an object per key:
 * a cluster-wide peer selector makes (subject × peer) pairs, and these are all the compiler holds of them. A peer
 * whose cluster or every-pod class's entries answer for it holds nothing here (classAnswers, heldByClass).
 */
type DirectionEntries = Map<number, readonly EntryTemplate[]>;

interface DirState {
  readonly resolved: ResolvedDirection;
  /** Also holds each class's templates under its peer (CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4/6_CLASS_PEER) when there are any. */
  readonly entries: DirectionEntries;
  readonly classes: ClassTemplates;
}

/**
 * A subject direction's peer classes (issue #21). `cluster`: the templates of a peer matched by exactly the direction's
 * `fromEntities/toEntities: [cluster]` terms; `pods`: those of a pod matched by exactly its every-pod terms and those
 * cluster terms (a pod is in both). The map holds each once, for its class peer, and no entry for a peer whose own
 * templates are the same as those of the class that answers for it (answeringClass: the datapath finds the class's
 * for it, between its own keys and the wildcard's). A peer with other templates keeps them all (the class's keys
 * among them, as it is matched by the class's terms too), so its first hit is the same entry at every level.
 * `world`: the templates of a peer matched by exactly the direction's `fromEntities/toEntities: [world]` terms (a CIDR
 * identity, the reserved world ones; a class of its own, no peer is in it and in another). `world4`/`world6`: those of
 * a world peer of that family matched by exactly the direction's `world` and `world-ipv4` (`world-ipv6`) terms; only
 * where the direction has such terms (else the world class answers for the family's peers too).
 */
interface ClassTemplates {
  readonly cluster: readonly EntryTemplate[] | undefined;
  readonly pods: readonly EntryTemplate[] | undefined;
  readonly world: readonly EntryTemplate[] | undefined;
  readonly world4: readonly EntryTemplate[] | undefined;
  readonly world6: readonly EntryTemplate[] | undefined;
}

const NO_CLASSES: ClassTemplates = { cluster: undefined, pods: undefined, world: undefined, world4: undefined, world6: undefined };

function sameClasses(a: ClassTemplates, b: ClassTemplates): boolean {
  return a.cluster === b.cluster && a.pods === b.pods && a.world === b.world && a.world4 === b.world4 && a.world6 === b.world6;
}

const CLASS_PEERS: readonly number[] = [CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER];

/** The class peers, each a key of a direction's entries like any peer's. */
function isClassPeer(peer: number): boolean {
  return CLASS_PEERS.includes(peer);
}

/** A class's templates by its peer. */
function classOf(cls: ClassTemplates, classPeer: number | undefined): readonly EntryTemplate[] | undefined {
  switch (classPeer) {
    case EVERY_POD_CLASS_PEER:
      return cls.pods;
    case CLUSTER_CLASS_PEER:
      return cls.cluster;
    case WORLD_CLASS_PEER:
      return cls.world;
    case WORLD_IPV4_CLASS_PEER:
      return cls.world4;
    case WORLD_IPV6_CLASS_PEER:
      return cls.world6;
    default:
      return undefined;
  }
}

/** The selector cache's canonical of the `cluster` entity (entities are never narrowed by fromRequires). */
const CLUSTER_ENTITY = entityMatcher("cluster").canonical;
/** The same of the `world` entity. */
const WORLD_ENTITY = entityMatcher("world").canonical;
/** The same of the `world-ipv4` and `world-ipv6` entities. */
const WORLD_IPV4_ENTITY = entityMatcher("world-ipv4").canonical;
const WORLD_IPV6_ENTITY = entityMatcher("world-ipv6").canonical;

/**
 * The peer matchers of every pod as policies write them (a NetworkPolicy's `namespaceSelector: {}`, a CNP's
 * namespace-Exists selector): every identity with a namespace label, which no reserved one has. Not narrowed by
 * fromRequires (that is another canonical); a form naming the cluster is recognised per compiler (everyPodMatchers).
 */
function everyPodMatcher(clusterName?: string): IdentityMatcher {
  const sel = networkPolicyPeerSelector({ namespaceSelector: {} }, "", clusterName !== undefined ? { clusterName } : {});
  const m = sel !== undefined ? rulePeerSelection({ kind: "selector", selector: sel }, []) : undefined;
  if (m?.kind !== "identities") throw new Error("the every-pod selector is not an identity selection");
  return m.matcher;
}

/** Whether two template lists hold the same entries (peers matched by the same terms share one array). */
function sameTemplates(a: readonly EntryTemplate[], b: readonly EntryTemplate[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  const bySlot = new Map(b.map((t) => [t.slot, t]));
  return a.every((t) => {
    const o = bySlot.get(t.slot);
    return o !== undefined && o.verdict === t.verdict && o.proxyPort === t.proxyPort && o.ruleId === t.ruleId;
  });
}

const NO_TEMPLATES: readonly EntryTemplate[] = [];

/**
 * What the map holds for one peer of a direction whose classes are `cls`: nothing for a peer its answering class stands
 * for. `ipBlockIds`: ipBlock identities, in the world class's range by number but only ever looked up on their own keys
 * (the datapath's second look for a pod's address), so they always keep theirs. `families`: the world peers' address
 * families (worldFamilyOf), which choose between the world class and a family's.
 */
function emitted(cls: ClassTemplates, peer: number, ts: readonly EntryTemplate[] | undefined, ipBlockIds: ReadonlySet<number>, families: ReadonlyMap<number, IPFamily>): readonly EntryTemplate[] {
  if (ts === undefined) return NO_TEMPLATES;
  if (peer === IDENTITY_WILDCARD || isClassPeer(peer) || ipBlockIds.has(peer)) return ts;
  const answer = classOf(cls, answeringClass(peer, (c) => classOf(cls, c) !== undefined, families.get(peer)));
  return answer !== undefined && sameTemplates(ts, answer) ? NO_TEMPLATES : ts;
}

interface SubjectState {
  readonly subject: number;
  readonly users: Readonly<Record<Direction, DirectionUser>>;
  ingress: DirState;
  egress: DirState;
  /** ruleIds of its L7 allow rules: the proxy ports of sets holding parts of other rules are freed */
  proxyRules: Set<number>;
  /** Its DNS rules and toFQDNs selectors, for the node's DNS proxy. */
  dns: SubjectDns | undefined;
  /** Its HTTP rules per L7 allow rule, for the node's L7 proxy (their proxy ports are the allocator's: see httpOf). */
  http: RuleHttpRules[] | undefined;
}

export class PolicyCompiler {
  private readonly identities = new Map<number, LabelSet>();
  private readonly selectorCache: PartitionedSelectorCache;
  private readonly repository: PolicyRepository;
  private readonly proxyPorts: ProxyPortAllocator;
  private readonly subjects = new Map<number, SubjectState>();
  /** Peers to recompute per subject direction, filled by the selector cache as identities come and go. */
  private readonly dirty = new Map<DirectionUser, Set<number>>();
  private readonly ctx: ResolutionContext;
  private readonly services = new ServiceIndex();
  private readonly clusterName: string | undefined;
  /**
   * Identities in the cluster class by number (inClusterClass) that the `cluster` entity does not select (e.g. a
   * CiliumIdentity without this cluster's label): the datapath's class would answer for them wrongly, so each holds
   * entries of its own that hide the class's wherever they differ (strayPeerTemplates); the class stays on for the rest.
   */
  private readonly strayClassIds = new Set<number>();
  /** Every agent looks up class entries (setClusterClass): an agent from before them would drop what they allow. */
  private classAllowed = true;
  /** The canonicals of the every-pod matchers (everyPodMatcher), with and without this cluster's name. */
  private readonly everyPodMatchers: readonly IdentityMatcher[];
  /** Identities in the every-pod class by number (inEveryPodClass) that an every-pod matcher does not select: held like strayClassIds'. */
  private readonly strayPodIds = new Set<number>();
  /** Every agent looks up every-pod class entries (setEveryPodClass). */
  private podClassAllowed = true;
  /**
   * Identities in the world class by number (inWorldClass) that the `world` entity does not select and that are not
   * ipBlock identities (never a packet's peer): while there is one, no world class entries are compiled.
   */
  private readonly strayWorldIds = new Set<number>();
  /** The ipBlock identities the compiler knows (see emitted). */
  private readonly ipBlockIds = new Set<number>();
  /** Every agent looks up world class entries (setWorldClass). */
  private worldClassAllowed = true;
  /** The address family of each world peer that has one (worldFamilyOf), kept like ipBlockIds until its entries went. */
  private readonly worldFamilies = new Map<number, IPFamily>();
  /**
   * World peers by number (inWorldClass, not reserved:world, not ipBlock) that the `world` entity selects but whose
   * labels give no single family: while there is one, no world-ipv4/-ipv6 class entries are compiled.
   */
  private readonly strayFamilyIds = new Set<number>();
  /** Every agent looks up the world-ipv4/-ipv6 class entries (setWorldFamilyClass). */
  private worldFamilyClassAllowed = true;

  constructor(opts: CompilerOptions = {}) {
    this.clusterName = opts.clusterName;
    const podMatchers = [everyPodMatcher(), everyPodMatcher(opts.clusterName ?? DEFAULT_CLUSTER_NAME)];
    this.everyPodMatchers = podMatchers.filter((m, i) => podMatchers.findIndex((o) => o.canonical === m.canonical) === i);
    this.selectorCache = new PartitionedSelectorCache({ clusterName: opts.clusterName, services: this.services });
    this.repository = new PolicyRepository(this.selectorCache);
    this.proxyPorts = new ProxyPortAllocator(opts.proxyPorts);
    this.ctx = {
      selectorCache: this.selectorCache,
      namedPorts: opts.namedPorts ?? (() => []),
      ruleIdOf: (key, origin) => this.repository.ruleIdOf(key, origin),
      proxyPortFor: (subject, ruleIds) => this.proxyPorts.portFor(subject, ruleIds),
      compareRules: this.repository.compareRules,
    };
  }

  // ----- public API ---------------------------------------------------------------------------

  /** Loads many policies and identities into a fresh compiler and compiles every subject once (a full compile). */
  load(policies: ReadonlyMap<string, readonly Policy[]>, identities: ReadonlyMap<number, LabelSet>): void {
    if (this.identities.size > 0 || this.repository.size > 0) throw new Error("load() needs a fresh PolicyCompiler");
    for (const [id, labels] of identities) {
      this.identities.set(id, labels);
      this.selectorCache.upsertIdentity(id, labels);
      this.trackStray(id, labels);
    }
    // Insertion order: rule ids are numbered as the policies come.
    for (const [key, parts] of policies) this.repository.upsert(key, parts);
    const scratch = new DeltaCollector(false);
    for (const subject of [...this.repository.subjects()].sort((a, b) => a - b)) this.rebuildSubject(subject, undefined, scratch);
  }

  /**
   * Every change below returns its per-subject delta. With `into`, the change is recorded there
   * instead, netted with the changes recorded before (read them with `into.deltas(c.enforcementOf)`),
   * and nothing is returned: a consumer that publishes in batches gets one delta per batch.
   */
  upsertIdentity(id: number, labels: LabelSet, into?: DeltaCollector): Delta[] {
    const prev = this.identities.get(id);
    if (prev?.key === labels.key) return [];
    const d = into ?? new DeltaCollector();
    const classBefore = this.classesOn;
    if (prev) this.dropIdentity(id, d);
    this.identities.set(id, labels);
    this.selectorCache.upsertIdentity(id, labels);
    this.trackStray(id, labels);
    if (this.isStray(id)) this.markStrayDirty(id);
    if (this.repository.isSubject(id)) this.rebuildSubject(id, undefined, d);
    this.recomputeDirty(id, d);
    if (classBefore !== this.classesOn) this.recompileAll(d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  removeIdentity(id: number, into?: DeltaCollector): Delta[] {
    if (!this.identities.has(id)) return [];
    const d = into ?? new DeltaCollector();
    const classBefore = this.classesOn;
    this.dropIdentity(id, d);
    if (classBefore !== this.classesOn) this.recompileAll(d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  /** Adds or replaces one source object's policies (`key` from policyKey()). */
  upsertPolicy(key: string, parts: readonly Policy[], into?: DeltaCollector): Delta[] {
    const d = into ?? new DeltaCollector();
    const before = new Set(this.repository.subjectsOf(key));
    this.repository.upsert(key, parts);
    for (const s of this.repository.subjectsOf(key)) before.add(s);
    for (const subject of [...before].sort((a, b) => a - b)) this.rebuildSubject(subject, key, d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  removePolicy(key: string, into?: DeltaCollector): Delta[] {
    if (!this.repository.has(key)) return [];
    const d = into ?? new DeltaCollector();
    const before = [...this.repository.subjectsOf(key)].sort((a, b) => a - b);
    this.repository.remove(key);
    for (const subject of before) this.rebuildSubject(subject, key, d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  /**
   * Replaces the Services toServices entries select through (every Service with its backends);
   * the entries of the peers whose selection moved are recomputed.
   */
  setServices(services: readonly ServiceBackends[], into?: DeltaCollector): Delta[] {
    if (!this.services.set(services)) return [];
    const d = into ?? new DeltaCollector();
    this.selectorCache.servicesChanged();
    this.recomputeDirty(undefined, d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  /** The addresses (host prefixes) of Services without a selector that toServices entries in force select: they need CIDR identities. */
  servicePrefixes(): string[] {
    return this.services.prefixesOf(this.selectorCache.serviceSelectors());
  }

  /** Whether the `cluster` entity is compiled as class entries now (else per peer, as before them). */
  private get classOn(): boolean {
    return this.classAllowed;
  }

  /**
   * Whether every pod is compiled as class entries now: the every-pod class's entries hold the cluster entity's rules
   * too (a pod is in both classes), which is true of every pod only while the cluster class is on.
   */
  private get podClassOn(): boolean {
    return this.classOn && this.podClassAllowed;
  }

  /** Whether the `world` entity is compiled as class entries now (independent of the other two: no peer is in it and in them). */
  private get worldClassOn(): boolean {
    return this.worldClassAllowed && this.strayWorldIds.size === 0;
  }

  /** Whether `world-ipv4`/`world-ipv6` are compiled as class entries now (with the world class's terms: a family's peers are in both). */
  private get worldFamilyClassOn(): boolean {
    return this.worldClassOn && this.worldFamilyClassAllowed && this.strayFamilyIds.size === 0;
  }

  /** The switches in one value, to see whether a change moved any. */
  private get classesOn(): string {
    return `${this.classOn}/${this.podClassOn}/${this.worldClassOn}/${this.worldFamilyClassOn}`;
  }

  /**
   * Whether every agent's datapath looks up the `cluster` entity's class entries (their hellos say so): while one does
   * not (an agent from before them, during an upgrade), the entity is compiled per peer. Recompiles what changes.
   */
  setClusterClass(allowed: boolean, into?: DeltaCollector): Delta[] {
    if (allowed === this.classAllowed) return [];
    return this.switchClasses(() => (this.classAllowed = allowed), into);
  }

  /**
   * Whether every agent's datapath looks up the every-pod class's entries (their hellos say everyPodClass): while one
   * does not, selectors of every pod are compiled per peer. Recompiles what changes.
   */
  setEveryPodClass(allowed: boolean, into?: DeltaCollector): Delta[] {
    if (allowed === this.podClassAllowed) return [];
    return this.switchClasses(() => (this.podClassAllowed = allowed), into);
  }

  /**
   * Whether every agent's datapath looks up the world class's entries (their hellos say worldClass): while one does
   * not, the `world` entity is compiled per peer. Recompiles what changes.
   */
  setWorldClass(allowed: boolean, into?: DeltaCollector): Delta[] {
    if (allowed === this.worldClassAllowed) return [];
    return this.switchClasses(() => (this.worldClassAllowed = allowed), into);
  }

  /**
   * Whether every agent's datapath looks up the world-ipv4/-ipv6 classes' entries by the packet's family (their hellos
   * say worldFamilyClass): while one does not, those entities are compiled per peer. Recompiles what changes.
   */
  setWorldFamilyClass(allowed: boolean, into?: DeltaCollector): Delta[] {
    if (allowed === this.worldFamilyClassAllowed) return [];
    return this.switchClasses(() => (this.worldFamilyClassAllowed = allowed), into);
  }

  /** Applies a change to what the agents look up, recompiling everything when it moves a class on or off. */
  private switchClasses(change: () => void, into?: DeltaCollector): Delta[] {
    const d = into ?? new DeltaCollector();
    const before = this.classesOn;
    change();
    if (before !== this.classesOn) this.recompileAll(d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  /** Recompiles everything (e.g. after named ports changed); returns the net delta. */
  recompileAll(into?: DeltaCollector): Delta[] {
    const d = into ?? new DeltaCollector();
    const all = new Set([...this.subjects.keys(), ...this.repository.subjects()]);
    for (const subject of [...all].sort((a, b) => a - b)) this.rebuildSubject(subject, undefined, d);
    return into ? [] : d.deltas(this.enforcementOf);
  }

  /** The compiled policy of one subject identity (allow-all with no entries if no policy selects it). */
  snapshot(subject: number): SubjectPolicy {
    const s = this.subjects.get(subject);
    if (!s) return { subject, ingressEnforced: false, egressEnforced: false, entries: [] };
    const entries: PolicyEntry[] = [];
    for (const direction of DIRECTIONS) {
      const dir = s[direction];
      for (const [peer, ts] of dir.entries) for (const t of emitted(dir.classes, peer, ts, this.ipBlockIds, this.worldFamilies)) entries.push(entryOf(subject, direction, peer, t));
    }
    const http = this.httpOf(s);
    return { subject, ingressEnforced: s.ingress.resolved.enforced, egressEnforced: s.egress.resolved.enforced, entries: entries.sort(compareEntries), ...(s.dns ? { dns: s.dns } : {}), ...(http ? { http } : {}) };
  }

  /** Subjects that have compiled state (selected by at least one policy). */
  subjectIds(): number[] {
    return [...this.subjects.keys()].sort((a, b) => a - b);
  }

  /** Which policy and rule a ruleId names; undefined for RULE_ID_DEFAULT_DENY or an unknown id. */
  ruleOrigin(ruleId: number): RuleOrigin | undefined {
    return this.repository.ruleOrigin(ruleId);
  }

  /** The whole rule table, ruleId → origin. */
  ruleTable(): ReadonlyMap<number, RuleOrigin> {
    return this.repository.ruleTable();
  }

  entryCount(): number {
    let n = 0;
    for (const s of this.subjects.values()) for (const dir of [s.ingress, s.egress]) for (const [peer, ts] of dir.entries) n += emitted(dir.classes, peer, ts, this.ipBlockIds, this.worldFamilies).length;
    return n;
  }

  // ----- subjects -----------------------------------------------------------------------------

  /**
   * Rebuilds a subject's terms from its policies. With `changedPolicy`, only peers touched by that
   * policy's terms are recomputed (unless the requires or the wildcard denies changed, which touch every peer).
   */
  private rebuildSubject(subject: number, changedPolicy: string | undefined, d: DeltaCollector): void {
    const old = this.subjects.get(subject);
    if (!this.identities.has(subject) || !this.repository.isSubject(subject)) {
      if (old) this.deleteSubject(old, d);
      return;
    }
    const { parts, keys } = this.repository.partsSelecting(subject);
    const proxyRules = new Set<number>();
    const state: SubjectState = old ?? {
      subject,
      users: { ingress: new DirectionUser(subject, "ingress", this.dirty, this.peerView), egress: new DirectionUser(subject, "egress", this.dirty, this.peerView) },
      ingress: { resolved: UNRESOLVED, entries: new Map(), classes: NO_CLASSES },
      egress: { resolved: UNRESOLVED, entries: new Map(), classes: NO_CLASSES },
      proxyRules,
      dns: undefined,
      http: undefined,
    };
    d.touch(subject);
    state.http = subjectHttp(parts, keys, this.ctx.ruleIdOf);
    for (const direction of DIRECTIONS) {
      const prev = old ? old[direction] : undefined;
      const resolved = resolveDirection(this.ctx, subject, direction, parts, keys, proxyRules);
      this.registerTerms(state.users[direction], resolved.terms);
      const next: DirState = { resolved, entries: new Map(), classes: this.classesOf(subject, direction, resolved) };
      state[direction] = next;
      if (!prev) {
        this.computeFull(subject, direction, next);
        if (d.recording) for (const [peer, ts] of next.entries) for (const t of emitted(next.classes, peer, ts, this.ipBlockIds, this.worldFamilies)) d.add(subject, entryOf(subject, direction, peer, t));
      } else {
        const everything = changedPolicy === undefined || !sameRequires(prev.resolved, resolved) || !sameWildcardDenies(prev.resolved, resolved);
        let peers: Set<number>;
        if (everything) {
          peers = new Set<number>(prev.entries.keys());
          for (const id of peersOf(this.selectorCache, resolved.terms)) peers.add(id);
          peers.add(IDENTITY_WILDCARD);
          for (const c of CLASS_PEERS) peers.add(c);
        } else {
          const touched = (t: Term): boolean => t.policyKey === changedPolicy;
          peers = peersOf(this.selectorCache, prev.resolved.terms.filter(touched));
          for (const id of peersOf(this.selectorCache, resolved.terms.filter(touched))) peers.add(id);
          // A class term touched: the classes' entries (and every peer in a class, which the term selects) again; the
          // every-pod class's hold the cluster class's terms too.
          const classTerm = (t: Term): boolean => touched(t) && t.matcher !== undefined && this.isClassCanonical(t.matcher.canonical);
          if (prev.resolved.terms.some(classTerm) || resolved.terms.some(classTerm) || !sameClasses(prev.classes, next.classes)) {
            for (const c of CLASS_PEERS) peers.add(c);
          }
        }
        // A stray peer's entries follow the class's and the wildcard's too (strayPeerTemplates); there are few.
        for (const id of this.strays()) peers.add(id);
        for (const [peer, m] of prev.entries) if (!peers.has(peer)) next.entries.set(peer, m);
        for (const peer of peers) this.recomputePeerIn(subject, direction, next, peer, prev.entries.get(peer), d, prev.classes);
        this.unregisterTerms(state.users[direction], prev.resolved.terms);
      }
    }
    // A toFQDNs rule's HTTP part gets its proxy port here, after the entries' (its learned addresses' entries are the agent's to write).
    state.dns = subjectDns(parts, keys, this.ctx.ruleIdOf, (l7) => {
      for (const part of l7) proxyRules.add(part.ruleId);
      return this.ctx.proxyPortFor(subject, l7);
    });
    this.proxyPorts.retain(subject, proxyRules);
    state.proxyRules = proxyRules;
    this.subjects.set(subject, state);
  }

  private deleteSubject(state: SubjectState, d: DeltaCollector): void {
    d.touch(state.subject);
    for (const direction of DIRECTIONS) {
      const dir = state[direction];
      if (d.recording) for (const [peer, ts] of dir.entries) for (const t of emitted(dir.classes, peer, ts, this.ipBlockIds, this.worldFamilies)) d.remove(state.subject, entryOf(state.subject, direction, peer, t));
      this.unregisterTerms(state.users[direction], dir.resolved.terms);
      this.dirty.delete(state.users[direction]);
    }
    this.proxyPorts.retain(state.subject, new Set());
    this.subjects.delete(state.subject);
  }

  private dropIdentity(id: number, d: DeltaCollector): void {
    if (this.isStray(id)) this.markStrayDirty(id);
    this.strayClassIds.delete(id);
    this.strayPodIds.delete(id);
    this.strayWorldIds.delete(id);
    this.strayFamilyIds.delete(id);
    this.selectorCache.removeIdentity(id);
    const asSubject = this.subjects.get(id);
    if (asSubject) this.deleteSubject(asSubject, d);
    this.identities.delete(id);
    this.recomputeDirty(id, d);
    // After its entries went: what the map held for it was written while it was an ipBlock identity (emitted).
    this.ipBlockIds.delete(id);
    this.worldFamilies.delete(id);
  }

  /** Recomputes the peers the selector cache marked, except in `rebuilt`'s own state (just built from scratch or gone). */
  private recomputeDirty(rebuilt: number | undefined, d: DeltaCollector): void {
    const dirty = [...this.dirty];
    this.dirty.clear();
    for (const [user, peers] of dirty) {
      if (user.subject === rebuilt) continue;
      const s = this.subjects.get(user.subject);
      if (s?.users[user.direction] !== user) continue; // a user of a subject state that is gone
      const dir = s[user.direction];
      for (const peer of peers) this.recomputePeerIn(user.subject, user.direction, dir, peer, dir.entries.get(peer), d, dir.classes);
    }
  }

  /** Whether a subject is default-deny in each direction now (no compiled state: neither), and its DNS part. */
  readonly enforcementOf = (subject: number): { ingress: boolean; egress: boolean; dns?: SubjectDns; http?: readonly RuleHttpRules[] } => {
    const s = this.subjects.get(subject);
    const http = s ? this.httpOf(s) : undefined;
    return { ingress: s?.ingress.resolved.enforced ?? false, egress: s?.egress.resolved.enforced ?? false, ...(s?.dns ? { dns: s.dns } : {}), ...(http ? { http } : {}) };
  };

  /** A subject's HTTP part with the proxy ports each rule's HTTP rules are served on (alone or ORed with others' on one key). */
  private httpOf(s: SubjectState): RuleHttpRules[] | undefined {
    if (!s.http) return undefined;
    // Only ports an entry names: a set whose entries went keeps its port (stable if they come back) but judges nothing.
    const named = new Set<number>();
    for (const dir of [s.ingress, s.egress]) for (const ts of dir.entries.values()) for (const t of ts) if (t.proxyPort !== 0) named.add(t.proxyPort);
    // And the ports a toFQDNs rule's learned addresses are steered to (the agent writes their entries).
    for (const t of s.dns?.fqdnSelectors ?? []) for (const p of t.ports) if (p.proxyPort) named.add(p.proxyPort);
    return withProxyPorts(s.http, this.proxyPorts.setsOf(s.subject).filter((set) => named.has(set.port)));
  }

  /**
   * Whether a direction's cluster or every-pod class entries answer for `peer` as a member of `selector`'s selection:
   * the selector is the class's own (the `cluster` entity, a selector of every pod), the direction has that class's
   * entries, and the peer is in the class by number and not a stray (isStray: every other such identity is selected
   * by it). Such a peer needs no entries of its own unless another of the direction's selectors selects it too, so
   * its coming and going is not followed per subject (the selection of the others brings it when it matters).
   */
  private classAnswers(dir: DirState, selector: string, peer: number): boolean {
    const { cluster, pods } = dir.classes;
    if (this.isStray(peer)) return false;
    if (cluster !== undefined && selector === CLUSTER_ENTITY && inClusterClass(peer)) return true;
    if (pods === undefined || !inEveryPodClass(peer)) return false;
    for (const m of this.everyPodMatchers) if (m.canonical === selector) return true;
    return false;
  }

  /** Each subject direction's compiled state as its DirectionUser sees it (see classAnswers); nothing answers while it has none. */
  private readonly peerView: PeerView = {
    answers: (user, selector, peer) => {
      const s = this.subjects.get(user.subject);
      return s?.users[user.direction] === user && this.classAnswers(s[user.direction], selector, peer);
    },
    holds: (user, peer) => this.subjects.get(user.subject)?.[user.direction].entries.has(peer) ?? false,
  };

  /** Whether `ts`, a peer's own templates, are what its answering class (cluster or every-pod) gives it: then it holds nothing of its own. */
  private heldByClass(dir: DirState, peer: number, ts: readonly EntryTemplate[]): boolean {
    if (peer === IDENTITY_WILDCARD || isClassPeer(peer) || inWorldClass(peer)) return false;
    const answer = classOf(dir.classes, answeringClass(peer, (c) => classOf(dir.classes, c) !== undefined));
    return answer !== undefined && sameTemplates(ts, answer);
  }

  /** Notes whether an identity is in a class by number but not selected by its terms (see strayClassIds, strayPodIds). */
  private trackStray(id: number, labels: LabelSet): void {
    if (inClusterClass(id) && !entityMatches("cluster", labels, this.clusterName)) this.strayClassIds.add(id);
    else this.strayClassIds.delete(id);
    if (inEveryPodClass(id) && !this.everyPodMatchers.every((m) => matchesIdentity(m, id, labels))) this.strayPodIds.add(id);
    else this.strayPodIds.delete(id);
    const ipBlock = isIPBlockIdentity(labels);
    if (ipBlock) this.ipBlockIds.add(id);
    else this.ipBlockIds.delete(id);
    const world = entityMatches("world", labels, this.clusterName);
    if (inWorldClass(id) && !ipBlock && !world) this.strayWorldIds.add(id);
    else this.strayWorldIds.delete(id);
    const family = inWorldClass(id) && !ipBlock ? worldFamilyOf(id, labels) : undefined;
    if (family !== undefined) this.worldFamilies.set(id, family);
    else this.worldFamilies.delete(id);
    if (inWorldClass(id) && !ipBlock && world && id !== IDENTITY.world && family === undefined) this.strayFamilyIds.add(id);
    else this.strayFamilyIds.delete(id);
  }

  /** Whether the cluster or every-pod class would answer for an identity wrongly (strayClassIds, strayPodIds). */
  private isStray(id: number): boolean {
    return this.strayClassIds.has(id) || this.strayPodIds.has(id);
  }

  private strays(): Set<number> {
    return new Set([...this.strayClassIds, ...this.strayPodIds]);
  }

  /** A stray identity came or went: every subject direction with class entries, or holding it, recomputes it. */
  private markStrayDirty(id: number): void {
    for (const s of this.subjects.values()) {
      for (const direction of DIRECTIONS) {
        const dir = s[direction];
        if (dir.classes.cluster === undefined && dir.classes.pods === undefined && !dir.entries.has(id)) continue;
        const user = s.users[direction];
        let peers = this.dirty.get(user);
        if (!peers) this.dirty.set(user, (peers = new Set()));
        peers.add(id);
      }
    }
  }

  private isClassCanonical(canonical: string): boolean {
    return canonical === CLUSTER_ENTITY || canonical === WORLD_ENTITY || canonical === WORLD_IPV4_ENTITY || canonical === WORLD_IPV6_ENTITY || this.everyPodMatchers.some((m) => m.canonical === canonical);
  }

  /** The classes' templates of a subject direction (see ClassTemplates): none for a class without terms, or with named ports, or off. */
  private classesOf(subject: number, direction: Direction, resolved: ResolvedDirection): ClassTemplates {
    if (!this.classOn && !this.worldClassOn) return NO_CLASSES;
    const named = (i: number): boolean => resolved.terms[i]!.namedPorts.length > 0;
    // Ascending, as matchedTerms gives a peer's: a peer matched by these terms alone gets the very same array.
    const templatesOf = (classPeer: number, idxs: readonly number[]): readonly EntryTemplate[] | undefined => {
      if (idxs.length === 0 || idxs.some(named)) return undefined;
      const ts = peerTemplates(this.ctx, subject, direction, resolved, classPeer, [...idxs].sort((a, b) => a - b));
      return ts.length > 0 ? ts : undefined;
    };
    const clusterIdxs = resolved.termsBySelector.get(CLUSTER_ENTITY) ?? [];
    const podIdxs = this.everyPodMatchers.flatMap((m) => resolved.termsBySelector.get(m.canonical) ?? []);
    const cluster = this.classOn ? templatesOf(CLUSTER_CLASS_PEER, clusterIdxs) : undefined;
    const pods = this.podClassOn && podIdxs.length > 0 ? templatesOf(EVERY_POD_CLASS_PEER, [...podIdxs, ...clusterIdxs]) : undefined;
    const worldIdxs = resolved.termsBySelector.get(WORLD_ENTITY) ?? [];
    const world = this.worldClassOn ? templatesOf(WORLD_CLASS_PEER, worldIdxs) : undefined;
    // A family's peers are in the world entity too: its class holds both entities' rules, and only where it has terms of
    // its own that change what the world class's say (else the world class answers for the family's peers as well).
    const familyOf = (classPeer: number, canonical: string): readonly EntryTemplate[] | undefined => {
      const idxs = resolved.termsBySelector.get(canonical) ?? [];
      const ts = this.worldFamilyClassOn && idxs.length > 0 ? templatesOf(classPeer, [...worldIdxs, ...idxs]) : undefined;
      return ts !== undefined && world !== undefined && sameTemplates(ts, world) ? undefined : ts;
    };
    const world4 = familyOf(WORLD_IPV4_CLASS_PEER, WORLD_IPV4_ENTITY);
    const world6 = familyOf(WORLD_IPV6_CLASS_PEER, WORLD_IPV6_ENTITY);
    return cluster === undefined && pods === undefined && world === undefined && world4 === undefined && world6 === undefined ? NO_CLASSES : { cluster, pods, world, world4, world6 };
  }

  private registerTerms(user: DirectionUser, terms: readonly Term[]): void {
    for (const t of terms) if (t.matcher !== undefined) this.selectorCache.add(t.matcher, user);
  }

  private unregisterTerms(user: DirectionUser, terms: readonly Term[]): void {
    for (const t of terms) if (t.matcher !== undefined) this.selectorCache.release(t.matcher.canonical, user);
  }

  // ----- entries ------------------------------------------------------------------------------

  private computeFull(subject: number, direction: Direction, dir: DirState): void {
    const wild = peerTemplates(this.ctx, subject, direction, dir.resolved, IDENTITY_WILDCARD, []);
    if (wild.length > 0) dir.entries.set(IDENTITY_WILDCARD, wild);
    if (dir.classes.cluster !== undefined) dir.entries.set(CLUSTER_CLASS_PEER, dir.classes.cluster);
    if (dir.classes.pods !== undefined) dir.entries.set(EVERY_POD_CLASS_PEER, dir.classes.pods);
    if (dir.classes.world !== undefined) dir.entries.set(WORLD_CLASS_PEER, dir.classes.world);
    if (dir.classes.world4 !== undefined) dir.entries.set(WORLD_IPV4_CLASS_PEER, dir.classes.world4);
    if (dir.classes.world6 !== undefined) dir.entries.set(WORLD_IPV6_CLASS_PEER, dir.classes.world6);
    const matched = matchedTermsByPeer(this.selectorCache, dir.resolved, (selector, peer) => this.classAnswers(dir, selector, peer));
    for (const [peer, idxs] of matched) {
      const ts = this.templatesOf(subject, direction, dir, peer, idxs);
      if (ts.length > 0) dir.entries.set(peer, ts);
    }
    for (const peer of this.strays()) {
      if (matched.has(peer)) continue;
      const ts = this.templatesOf(subject, direction, dir, peer, []);
      if (ts.length > 0 && !this.heldByClass(dir, peer, ts)) dir.entries.set(peer, ts);
    }
  }

  /** A peer's templates from the terms matching it; a stray peer's with what hides its answering class's where that is wrong. */
  private templatesOf(subject: number, direction: Direction, dir: DirState, peer: number, matched: readonly number[]): readonly EntryTemplate[] {
    const ts = peerTemplates(this.ctx, subject, direction, dir.resolved, peer, matched);
    if (!this.isStray(peer)) return ts;
    const cls = classOf(dir.classes, answeringClass(peer, (c) => classOf(dir.classes, c) !== undefined));
    if (cls === undefined) return ts;
    const wildcard = peerTemplates(this.ctx, subject, direction, dir.resolved, IDENTITY_WILDCARD, []);
    return strayPeerTemplates(ts, cls, wildcard, dir.resolved.enforced ? "deny" : "allow");
  }

  /** `classBefore`: the direction's classes when `before` was written (the previous resolution's in a rebuild; none is none, not this one's). */
  private recomputePeerIn(
    subject: number,
    direction: Direction,
    dir: DirState,
    peer: number,
    before: readonly EntryTemplate[] | undefined,
    d: DeltaCollector,
    classBefore: ClassTemplates,
  ): void {
    let after: readonly EntryTemplate[];
    if (isClassPeer(peer)) after = classOf(dir.classes, peer) ?? NO_TEMPLATES;
    else if (peer === IDENTITY_WILDCARD) after = peerTemplates(this.ctx, subject, direction, dir.resolved, peer, []);
    else after = this.templatesOf(subject, direction, dir, peer, matchedTerms(this.selectorCache, dir.resolved, peer));
    if (after.length > 0 && !this.heldByClass(dir, peer, after)) dir.entries.set(peer, after);
    else dir.entries.delete(peer);
    if (!d.recording || (after === before && sameClasses(classBefore, dir.classes))) return; // the same templates: the same entries
    const was = emitted(classBefore, peer, before, this.ipBlockIds, this.worldFamilies);
    const now = emitted(dir.classes, peer, after, this.ipBlockIds, this.worldFamilies);
    if (was === now) return;
    const held = new Map<number, EntryTemplate>();
    for (const b of was) held.set(b.slot, b);
    for (const t of now) {
      const b = held.get(t.slot);
      held.delete(t.slot);
      if (!b || b.verdict !== t.verdict || b.proxyPort !== t.proxyPort || b.ruleId !== t.ruleId) {
        if (b) d.remove(subject, entryOf(subject, direction, peer, b));
        d.add(subject, entryOf(subject, direction, peer, t));
      }
    }
    for (const b of held.values()) d.remove(subject, entryOf(subject, direction, peer, b));
  }
}

/** Compiles a whole set of policies against a whole set of identities. */
export function compileAll(policies: readonly Policy[], identities: ReadonlyMap<number, LabelSet>, opts?: CompilerOptions): PolicyCompiler {
  const byKey = new Map<string, Policy[]>();
  for (const p of policies) {
    const key = policyKey(p);
    const list = byKey.get(key);
    if (list) list.push(p);
    else byKey.set(key, [p]);
  }
  const c = new PolicyCompiler(opts);
  c.load(byKey, identities);
  return c;
}
