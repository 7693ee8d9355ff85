// What each node should hold, from the operator's caches: the parts every node shares (ipcache, identity labels, rule table, policy generations) are kept per event and replaced once per change, with their delta; a node adds only the compiled policy of the identities its pods have.
import type { LabelSet, Policy, PolicyEntry, SubjectPolicy, TlsSecretUse } from "../../core/model.ts";
import { type Delta, compareEntries } from "../../core/policy/mapstate.ts";
import { DeltaCollector, PolicyCompiler, policyPrefixes, serviceBackends } from "../../core/compiler.ts";
import { IDENTITY, LocalCIDRAllocator, RESERVED_IDENTITIES, cidrLabels } from "../../core/identity.ts";
import { ClusterIPCache } from "../../core/ipcache.ts";
import { ipBlockLabels, ipBlockPrefixes } from "../../core/ipblock.ts";
import { formatLabel } from "../../core/labels.ts";
import { sameWorkload, workloadOf, type Workload } from "../../core/workload.ts";
import { type IPCacheEntry, type IdentityLabels, type NodeState, type PolicyGeneration, type TracingPolicyItem, tracingPolicyKey } from "../../core/wire.ts";
import { validateTracingPolicy } from "../../core/tracing.ts";
import { NO_PART_CHANGE, SharedPartLinks, SubjectDeltaLinks, comparePrefixes, samePolicyGenerations, sameRule, sameStrings, sameSubjectDns, sameSubjectHttp } from "../../core/nodestate.ts";
import type { Informer, InformerEvent } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";
import { podNeedsIdentity } from "../identity.ts";
import { IDENTITY_ANNOTATION, type EndpointSliceObject, type IdentityObject, type PodObject, type ServiceObject, labelSetOfIdentity } from "../../kube/objects.ts";
import { serviceEndpoints } from "../../kube/service-endpoints.ts";
import { type NodeObject, nodeAddresses, sameNodeAddresses } from "../node.ts";
import { PodIndex } from "./pods.ts";
import type { Enforcement, PolicyObject } from "../policy.ts";
import type { NodeAnswer, NodeReport } from "./server.ts";
import { ParsedPolicies } from "../parsed-policies.ts";
import { type CIDRGroups, sameCIDRGroups } from "../cidr-groups.ts";
import { type CIDRGroup, expandCIDRGroups, usesCIDRGroups } from "../../core/cidr-group.ts";
import type { PolicySecrets, TlsRole } from "../policy-secrets.ts";
import type { TracingPolicyObject } from "../tracing.ts";
import { usesNodePeers } from "../../core/node-peers.ts";
import { NodeHostIdentities, asHostDelta, asHostSubject, isNodeHostIdentity, nodeHostLabels } from "../../core/host-endpoint.ts";

/** The parts of a NodeState every node shares; an unchanged part keeps its array, so consumers can compare by reference. */
interface SharedParts {
  ipcache: readonly IPCacheEntry[];
  identities: readonly IdentityLabels[];
  rules: NodeState["rules"];
  policyGenerations: readonly PolicyGeneration[];
}

/** Which nodes a change concerns: every node, or the ones named. */
export type Affected = "all" | readonly string[];

/** The kinds of object the source compiles; sync() can reconcile one kind (the one whose cache moved) or all. */
export type SourceKind = "nodes" | "identities" | "cidrGroups" | "policies" | "pods" | "services" | "tracing";
export const SOURCE_KINDS: readonly SourceKind[] = ["nodes", "identities", "cidrGroups", "policies", "pods", "services", "tracing"];

/** The caches the source reconciles against, besides the pods and nodes it is built with. */
export interface SourceInformers {
  readonly identities: Informer<IdentityObject>;
  readonly policies: readonly Informer<PolicyObject>[];
  /** Services and EndpointSlices, for toServices (without them, toServices entries select nothing). */
  readonly services?: Informer<ServiceObject>;
  readonly endpointSlices?: Informer<EndpointSliceObject>;
  /** TracingPolicy and TracingPolicyNamespaced (when the tracing controller runs: its CRDs are installed); every node gets every one. */
  readonly tracingPolicies?: readonly Informer<TracingPolicyObject>[];
}

/** Who holds the CIDR identities of the addresses toServices entries select (policy keys hold their own). */
const SERVICE_CIDRS = "toServices";

export interface NodeStateSourceOptions {
  /** The local cluster's name, for the `cluster` entity. */
  readonly clusterName?: string;
  /** The parses shared with the policy status reconciler (each generation parsed once). */
  readonly parsed?: ParsedPolicies;
  /** Fills TLS rules with their Secrets' material for the nodes hosting their subjects (absent: sent without, so they fail closed). */
  readonly policySecrets?: PolicySecrets;
  /** The CiliumCIDRGroups that cidrGroupRef/cidrGroupSelector entries stand for (absent: none, so those entries select nothing). */
  readonly cidrGroups?: CIDRGroups;
}

export class NodeStateSource {
  readonly compiler: PolicyCompiler;
  private readonly parsed: ParsedPolicies;
  private readonly identityLabels = new Map<number, LabelSet>();
  /** policy key → the uid and generation whose parts the compiler holds (the last valid one). */
  private readonly compiled = new Map<string, PolicyGeneration>();
  /**
   * Local identities of the prefixes policies name, held per policy key (and SERVICE_CIDRS): a CIDR
   * identity for every prefix (addresses outside the cluster), and an ipBlock identity for every
   * prefix a NetworkPolicy ipBlock names (pod addresses inside it, core/ipblock.ts).
   */
  private readonly cidrAllocator = new LocalCIDRAllocator();
  private readonly cidrsOfPolicy = new Map<string, ReadonlyMap<string, number>>();
  /** The Services or their backends may have moved since they were last given to the compiler. */
  private servicesDirty = false;
  /** The addresses toServices entries select as CIDR identities may have moved (Services, or the entries in force). */
  private serviceCIDRsDirty = false;

  /** The cluster ipcache, updated per pod, node and CIDR event; taken (sorted, with its delta) once per change. It is also what a Service's backend addresses stand for. */
  private readonly ipc = new ClusterIPCache();
  /** The identities each node hosts and each identity's named ports, updated per pod event. */
  private readonly podIndex = new PodIndex();
  /** What of each pod was last applied (its view), so an event is applied against what the source holds. */
  private readonly podViews = new Map<string, PodView>();
  /** A named port came or went since the last refresh: policies resolve them at compile time. */
  private namedPortsMoved = false;
  /** setClusterClass's last word (the compiler starts with class entries allowed). */
  private clusterClass = true;
  /** setEveryPodClass's last word. */
  private everyPodClass = true;
  /** setWorldClass's last word. */
  private worldClass = true;
  /** setWorldFamilyClass's last word. */
  private worldFamilyClass = true;
  /** The ipBlock identities each policy holds (NetworkPolicy ipBlock prefixes), like cidrsOfPolicy. */
  private readonly blocksOfPolicy = new Map<string, ReadonlyMap<string, number>>();

  // Built lazily once per change (dirty flags), shared by every node.
  /** Identities whose labels may have changed since the shared identity list was built. */
  private readonly identitiesTouched = new Set<number>();
  private policiesDirty = true;
  /** The CIDR groups the compiled policies were expanded with. */
  private groupsInForce: ReadonlyMap<string, CIDRGroup> = new Map();
  /** The policies (by policy key) with toNodes/fromNodes peers: while there is one, a node's labels move pod subjects too. */
  private readonly nodePeerUsers = new Set<string>();
  /** The parsed policies (by policy key) that name CIDR groups: recompiled when a group moves. */
  private readonly groupUsers = new Map<string, readonly Policy[]>();
  private readonly shared: SharedParts = { ipcache: [], identities: [], rules: [], policyGenerations: [] };
  /** The entries of the shared identity list and rule table by id, to tell what a change moved. */
  private readonly identityEntries = new Map<number, IdentityLabels>();
  private readonly ruleEntries = new Map<number, NodeState["rules"][number]>();
  /** The TracingPolicies every node runs, by key (the last valid generation of each), and their list as nodes read it. */
  private readonly tracing = new Map<string, TracingPolicyItem>();
  private tracingList: readonly TracingPolicyItem[] = [];
  private tracingDirty = false;
  /** Each node's host subject (reserved:host plus its labels, what nodeSelectors match) and the labels the compiler holds for it. */
  private readonly nodeHosts = new NodeHostIdentities();
  private readonly nodeHostLabels = new Map<string, LabelSet>();
  /** The subject policy list stateFor last gave each node: kept (the same array) while none of its objects moves. */
  private readonly nodePolicies = new Map<string, readonly SubjectPolicy[]>();
  /** Compiled policy per subject identity, shared by every node hosting it; replaced only when the compiler's delta touches the subject. */
  private readonly subjectPolicies = new Map<number, SubjectPolicy>();
  /** The compiler's changes since the subject policies were last brought up to date, netted per key. */
  private pending = new DeltaCollector();
  /** Each replaced subject policy linked to its predecessor by the compiler's delta: what the distribution sends. */
  readonly subjectDeltas = new SubjectDeltaLinks();
  /** Each replaced shared part linked to its predecessor by the delta computed from the change: what the distribution sends. */
  readonly sharedDeltas = new SharedPartLinks();

  constructor(
    private readonly pods: Informer<PodObject>,
    private readonly nodes: Informer<NodeObject>,
    private readonly opts: NodeStateSourceOptions = {},
  ) {
    this.compiler = new PolicyCompiler({ namedPorts: (id, name, protocol) => this.podIndex.namedPorts(id, name, protocol), clusterName: opts.clusterName });
    this.parsed = opts.parsed ?? new ParsedPolicies();
    for (const r of RESERVED_IDENTITIES) {
      this.compiler.upsertIdentity(r.id, r.labels, this.pending);
      this.identityLabels.set(r.id, r.labels);
      this.identitiesTouched.add(r.id);
    }
    // Nodes and pods already in the caches (none yet in the operator, whose informers start later; sync() follows them after).
    drain(reconcileKind(this.nodes.list(), this.seen.nodes, (o) => o.metadata.name, this.onNode, () => undefined));
    drain(reconcileKind(this.pods.list(), this.seen.pods, podKey, this.onPod, () => undefined));
  }

  /** The objects last compiled, per kind and key: what sync() compares the caches with. */
  private readonly seen = {
    identities: new Map<string, IdentityObject>(),
    policies: new Map<string, PolicyObject>(),
    pods: new Map<string, PodObject>(),
    nodes: new Map<string, NodeObject>(),
    services: new Map<string, ServiceObject>(),
    tracing: new Map<string, TracingPolicyObject>(),
    endpointSlices: new Map<string, EndpointSliceObject>(),
  };

  /**
   * Level-triggered: brings the compiled state in line with the caches as they are now, whatever
   * event woke it. Each object that is not the one last compiled goes through its handler below
   * (which ignores what does not matter, e.g. a status write); one gone from its cache is deleted.
   * Returns the nodes whose desired state may have changed.
   */
  sync(informers: SourceInformers, kinds: readonly SourceKind[] = SOURCE_KINDS): Affected {
    return drain(this.syncSteps(informers, kinds));
  }

  /**
   * sync() of every kind, giving the event loop a turn every `sliceMs`: the operator's first compile (15 s with 65,000
   * identities at bench/scale's full size at load ~8) then no longer holds up the rest of the operator, e.g. the identity
   * GC, whose deletes fell due during it. Nothing else may compile meanwhile (the distribution's workers start after it).
   */
  async syncYielding(informers: SourceInformers, sliceMs: number): Promise<Affected> {
    const steps = this.syncSteps(informers, SOURCE_KINDS);
    let sliceStart = performance.now();
    for (let step = steps.next(); ; step = steps.next()) {
      if (step.done) return step.value;
      if (performance.now() - sliceStart < sliceMs) continue;
      await new Promise((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    }
  }

  /** sync()'s work, one object per step. */
  private *syncSteps(informers: SourceInformers, kinds: readonly SourceKind[]): Generator<void, Affected> {
    let all = false;
    const some = new Set<string>();
    const note = (a: Affected): void => {
      if (a === "all") all = true;
      else for (const n of a) some.add(n);
    };
    // In this order, whichever kinds are asked for: identities exist before the pods that carry them.
    if (kinds.includes("nodes")) yield* reconcileKind(this.nodes.list(), this.seen.nodes, (o) => o.metadata.name, this.onNode, note);
    // Groups before the policies that name them, so a policy's first compile has its groups' CIDRs.
    if (kinds.includes("cidrGroups")) note(this.syncCIDRGroups());
    if (kinds.includes("policies")) yield* reconcileKind(informers.policies.flatMap((i) => i.list()), this.seen.policies, ParsedPolicies.keyOf, this.onPolicy, note);
    // Identities after the policies: a policy compiled over every identity rebuilds each subject it selects over all their
    // peers, so a restart's first sync (thousands of both) compiled each subject once per policy selecting it (bench/scale at
    // 1,000 + 2,000 idle identities and 1,000 policies, in process: 170 s); an identity after them is one subject and its peers.
    if (kinds.includes("identities")) yield* reconcileKind(informers.identities.list(), this.seen.identities, (o) => o.metadata.name, this.onIdentity, note);
    if (kinds.includes("pods")) yield* reconcileKind(this.pods.list(), this.seen.pods, podKey, this.onPod, note);
    if (kinds.includes("services")) {
      const byKey = (o: ServiceObject | EndpointSliceObject): string => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;
      yield* reconcileKind(informers.services?.list() ?? [], this.seen.services, byKey, this.onService, note);
      yield* reconcileKind(informers.endpointSlices?.list() ?? [], this.seen.endpointSlices, byKey, this.onService, note);
    }
    if (kinds.includes("tracing")) {
      yield* reconcileKind(informers.tracingPolicies?.flatMap((i) => i.list()) ?? [], this.seen.tracing, tracingKeyOf, this.onTracingPolicy, note);
    }
    return all ? "all" : [...some];
  }

  /**
   * Whether every agent looks up the `cluster` entity's class entries (DistributionServer.clusterClassEverywhere): while
   * one does not, the entity is compiled per peer. Every node is affected when that changes.
   */
  setClusterClass(allowed: boolean): Affected {
    if (allowed === this.clusterClass) return [];
    this.clusterClass = allowed;
    this.compiler.setClusterClass(allowed, this.pending);
    return "all";
  }

  /** The same for the every-pod class's entries (DistributionServer.everyPodClassEverywhere). */
  setEveryPodClass(allowed: boolean): Affected {
    if (allowed === this.everyPodClass) return [];
    this.everyPodClass = allowed;
    this.compiler.setEveryPodClass(allowed, this.pending);
    return "all";
  }

  /** The same for the world class's entries (DistributionServer.worldClassEverywhere). */
  setWorldClass(allowed: boolean): Affected {
    if (allowed === this.worldClass) return [];
    this.worldClass = allowed;
    this.compiler.setWorldClass(allowed, this.pending);
    return "all";
  }

  /** The same for the world-ipv4/-ipv6 classes' entries (DistributionServer.worldFamilyClassEverywhere). */
  setWorldFamilyClass(allowed: boolean): Affected {
    if (allowed === this.worldFamilyClass) return [];
    this.worldFamilyClass = allowed;
    this.compiler.setWorldFamilyClass(allowed, this.pending);
    return "all";
  }

  /**
   * Reconciles the pods named by `keys` (cache keys, "namespace/name") with the cache as it is now:
   * what sync() does for the pods kind, for the pods a burst of events named, O(those pods) instead
   * of a pass over every pod. Returns the nodes whose desired state may have changed.
   */
  syncPods(keys: Iterable<string>): Affected {
    let all = false;
    const some = new Set<string>();
    for (const k of keys) {
      const obj = this.pods.get(k);
      const old = this.seen.pods.get(k);
      if (obj === old) continue;
      let a: Affected;
      if (obj) {
        this.seen.pods.set(k, obj);
        a = this.onPod(old === undefined ? { type: "add", obj } : { type: "update", old, obj });
      } else {
        this.seen.pods.delete(k);
        a = this.onPod({ type: "delete", obj: old! });
      }
      if (a === "all") all = true;
      else for (const n of a) some.add(n);
    }
    return all ? "all" : [...some];
  }

  /**
   * Informer handler for Services and EndpointSlices: what toServices entries select may have moved
   * (worked out once, when a node's state is next read).
   */
  readonly onService = (): Affected => {
    this.servicesDirty = true;
    return "all";
  };

  /** Informer handler for CiliumIdentity objects; every node's identity list changes. */
  readonly onIdentity = (ev: InformerEvent<IdentityObject>): Affected => {
    const n = Number(ev.obj.metadata.name);
    if (!Number.isInteger(n)) return [];
    if (ev.type === "delete") {
      this.compiler.removeIdentity(n, this.pending);
      this.identityLabels.delete(n);
    } else {
      const labels = labelSetOfIdentity(ev.obj);
      if (this.identityLabels.get(n)?.key === labels.key) return [];
      this.identityLabels.set(n, labels);
      this.compiler.upsertIdentity(n, labels, this.pending);
    }
    this.identitiesTouched.add(n);
    return "all";
  };

  /**
   * Informer handler for policies. An object that no longer parses keeps its last valid version in
   * force (fail closed: a broken edit never silently drops a default-deny); deletion removes it.
   * Status-only writes (same generation) change nothing.
   */
  readonly onPolicy = (ev: InformerEvent<PolicyObject>): Affected => {
    const key = ParsedPolicies.keyOf(ev.obj);
    if (ev.type === "delete") {
      this.parsed.forget(ev.obj);
      this.compiler.removePolicy(key, this.pending);
      this.compiled.delete(key);
      this.groupUsers.delete(key);
      this.nodePeerUsers.delete(key);
      this.setPolicyCIDRs(key, [], [])();
      this.policiesDirty = true;
      this.serviceCIDRsDirty = true; // the toServices entries in force may have changed
      return "all";
    }
    if (ev.type === "update" && ev.old.metadata.generation === ev.obj.metadata.generation && ev.old.metadata.uid === ev.obj.metadata.uid) return [];
    const parsed = this.parsed.parse(ev.obj);
    if (!parsed.ok) return [];
    this.compilePolicy(key, parsed.value);
    this.compiled.set(key, { key, uid: ev.obj.metadata.uid ?? "", generation: ev.obj.metadata.generation ?? 0 });
    this.policiesDirty = true;
    this.serviceCIDRsDirty = true; // the toServices entries in force may have changed
    return "all";
  };

  /** Compiles one policy object's parse, its CIDR group entries replaced by the groups' CIDRs as they are now. */
  private compilePolicy(key: string, parsed: readonly Policy[]): void {
    if (usesCIDRGroups(parsed)) this.groupUsers.set(key, parsed);
    else this.groupUsers.delete(key);
    if (usesNodePeers(parsed)) this.nodePeerUsers.add(key);
    else this.nodePeerUsers.delete(key);
    const policies = expandCIDRGroups(parsed, this.groupsInForce);
    // The CIDR and ipBlock identities exist before the policy compiles, so its CIDR peers select them at once.
    const release = this.setPolicyCIDRs(key, policyPrefixes(policies), ipBlockPrefixes(policies));
    this.compiler.upsertPolicy(key, policies, this.pending);
    release();
  }

  /** A CIDR group came, went or changed: the policies naming groups are compiled again with the groups as they are now. */
  private syncCIDRGroups(): Affected {
    const now = this.opts.cidrGroups?.current() ?? NO_GROUPS;
    const moved = !sameCIDRGroups(now, this.groupsInForce);
    this.groupsInForce = now;
    if (!moved || this.groupUsers.size === 0) return [];
    for (const [key, parsed] of this.groupUsers) this.compilePolicy(key, parsed);
    this.policiesDirty = true;
    return "all";
  }

  /**
   * Informer handler for TracingPolicy and TracingPolicyNamespaced: every node runs every valid one (Tetragon's
   * schema has no node selector). One that no longer validates keeps its last valid generation (fail closed, as
   * for network policies; its status says Invalid); deletion removes it. Status-only writes change nothing.
   */
  readonly onTracingPolicy = (ev: InformerEvent<TracingPolicyObject>): Affected => {
    const key = tracingKeyOf(ev.obj);
    if (ev.type === "delete") {
      if (!this.tracing.delete(key)) return [];
      this.tracingDirty = true;
      return "all";
    }
    const held = this.tracing.get(key);
    if (held && held.uid === (ev.obj.metadata.uid ?? "") && held.generation === (ev.obj.metadata.generation ?? 0)) return [];
    const item = tracingItem(ev.obj);
    if (!item) return [];
    this.tracing.set(key, item);
    this.tracingDirty = true;
    return "all";
  };

  /**
   * Informer handler for pods, applied against the view the source holds of the pod (so a repeated
   * event changes nothing): a change of the ipcache concerns every node, a change of hosted
   * identities only the pod's nodes. O(the pod), whatever the number of pods.
   */
  readonly onPod = (ev: InformerEvent<PodObject>): Affected => {
    const key = podKey(ev.obj);
    const a = this.podViews.get(key) ?? NO_POD;
    const b = this.podView(ev.type === "delete" ? undefined : ev.obj);
    const hostedMoved = a.id !== b.id || a.node !== b.node;
    // The ipcache holds (address, identity, node, workload) of pods that have addresses; the named ports resolve per identity.
    const ipsMoved = (a.ips.length > 0 || b.ips.length > 0) && (hostedMoved || !sameStrings(a.ips, b.ips) || !sameWorkload(a.workload, b.workload));
    const portsMoved = (a.ports.length > 0 || b.ports.length > 0) && (a.id !== b.id || !sameContainerPorts(a.ports, b.ports));
    if (b === NO_POD) this.podViews.delete(key);
    else this.podViews.set(key, b);
    if (!hostedMoved && !ipsMoved && !portsMoved) return [];
    if (ipsMoved) {
      this.ipc.setPod(key, b.id === undefined ? undefined : { identity: b.id, node: b.node, ips: b.ips, ...(b.workload ? { workload: b.workload } : {}) });
      if (this.seen.services.size > 0) this.servicesDirty = true; // a Service's backend addresses may stand for another identity
    }
    if ((hostedMoved || portsMoved) && this.podIndex.set(key, b.id === undefined ? undefined : { identity: b.id, node: b.node ?? "", ports: b.ports })) this.namedPortsMoved = true;
    if (ipsMoved || portsMoved) return "all"; // named ports may move entries of any node's subjects
    return [...new Set([a.node, b.node].filter((n): n is string => !!n))];
  };

  /** Informer handler for nodes: a node's addresses are in every node's ipcache (and its InternalIP in its pods' entries). */
  readonly onNode = (ev: InformerEvent<NodeObject>): Affected => {
    const name = ev.obj.metadata.name;
    const relabelled = this.setNodeHost(name, ev.type === "delete" ? undefined : (ev.obj.metadata.labels ?? {}));
    // New labels move the node's host subject, and any node's subjects with toNodes/fromNodes peers (core/node-peers.ts).
    if (ev.type === "update" && sameNodeAddresses(nodeAddresses(ev.old), nodeAddresses(ev.obj))) return relabelled && this.nodePeerUsers.size > 0 ? "all" : [name];
    // Its addresses carry its host subject's identity, which node selectors select.
    this.ipc.setNode(name, ev.type === "delete" ? undefined : nodeAddresses(ev.obj), this.nodeHosts.idOf(name));
    return "all";
  };

  /**
   * A node's host subject follows its labels (a label change recompiles that subject, the node's
   * delta follows, and the subjects whose toNodes/fromNodes peers it moves); a deleted node's (labels
   * undefined) goes. Whether its labels moved.
   */
  private setNodeHost(node: string, labels: Readonly<Record<string, string>> | undefined): boolean {
    if (labels === undefined) {
      const id = this.nodeHosts.release(node);
      if (id === undefined) return false;
      this.compiler.removeIdentity(id, this.pending);
      this.subjectPolicies.delete(id);
      this.nodeHostLabels.delete(node);
      return true;
    }
    const set = nodeHostLabels(labels);
    if (this.nodeHostLabels.get(node)?.key === set.key) return false;
    this.nodeHostLabels.set(node, set);
    this.compiler.upsertIdentity(this.nodeHosts.acquire(node), set, this.pending);
    return true;
  }

  /** What of a pod the node states depend on (nothing, for a pod without an identity). */
  private podView(p: PodObject | undefined): PodView {
    const id = p && podNeedsIdentity(p) ? this.identityOf(p) : undefined;
    if (!p || id === undefined) return NO_POD;
    const ports = (p.spec?.containers ?? []).flatMap((c) => (c.ports ?? []).filter((port) => port.name));
    return { id, node: p.spec?.nodeName ?? "", ips: podIPs(p), ports, workload: workloadOf(p.metadata) };
  }

  private identityOf(pod: PodObject): number | undefined {
    const n = Number(pod.metadata.annotations?.[IDENTITY_ANNOTATION]);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  /** The ipcache every node gets: node addresses, CIDR prefixes named by policies, pod addresses (most specific source wins). */
  ipcache(): readonly IPCacheEntry[] {
    this.refresh();
    return this.shared.ipcache;
  }

  /** The full desired state of `node`: shared parts by reference plus the compiled policy of the identities it hosts. */
  stateFor(node: string): NodeState {
    this.refresh();
    // TLS rules get their Secrets' material here, so only the nodes hosting their subjects receive it.
    const secrets = this.opts.policySecrets;
    // A pod's identity whose labels are not known yet (its CiliumIdentity not in the cache or not synced: the identities
    // key coalesces, pods do not) is left out, and the agent fails its endpoints closed; compiled now, it would be a subject
    // no policy selects, allow-all both ways, until the identity came (issue #22: a denied flow answered during an upgrade).
    const policies = this.podIndex
      .hosted(node)
      .filter((id) => this.identityLabels.has(id))
      .map((id) => (secrets ? secrets.resolve(this.subjectPolicy(id)) : this.subjectPolicy(id)));
    // Every node is a host endpoint (reserved:host): the host policies whose nodeSelector matches its labels, as subject reserved:host.
    const hostId = this.nodeHosts.idOf(node);
    const host = hostId === undefined ? undefined : this.subjectPolicy(hostId);
    if (host && (host.entries.length > 0 || host.ingressEnforced || host.egressEnforced)) policies.unshift(host);
    // Any node can hold an endpoint at reserved:init (its identity late, or adopted before the state): every node gets the
    // init policy (a cluster-wide policy selecting reserved:init), which opens what it names for those endpoints.
    // Selected, it is enforced both ways (core/identity.ts alwaysEnforced); not selected, it is not sent and stays closed.
    const init = this.subjectPolicy(IDENTITY.init);
    if (init.ingressEnforced || init.egressEnforced) policies.unshift(init);
    // The node's list as before when its subjects did not move (a change of the shared parts only, e.g. a pod elsewhere):
    // the distribution then takes the node's part as unchanged by reference, and only the shared parts' delta is sent.
    const held = this.nodePolicies.get(node);
    const same = held !== undefined && held.length === policies.length && held.every((p, i) => p === policies[i]);
    if (!same) this.nodePolicies.set(node, policies);
    return { policies: same ? held : policies, ...this.shared, ...(this.tracingList.length > 0 ? { tracingPolicies: this.tracingList } : {}) };
  }

  /** Forgets what stateFor last gave `node` (a node deleted from the cluster). */
  forgetNode(node: string): void {
    this.nodePolicies.delete(node);
  }

  /** How many of `nodes` enforce this generation of `obj`, and which refused it. */
  enforcement(obj: KubeObject, nodes: ReadonlySet<string>, reports: readonly NodeAnswer[] | readonly NodeReport[]): Enforcement {
    const key = ParsedPolicies.keyOf(obj);
    const has = (state: NodeState | undefined): boolean => {
      const g = state && generationsByKey(state.policyGenerations).get(key);
      return g !== undefined && g.uid === obj.metadata.uid && g.generation >= (obj.metadata.generation ?? 0);
    };
    let acknowledged = 0;
    const refused: { node: string; message: string }[] = [];
    const withDnsProxy = new Set<string>();
    const withL7Proxy = new Set<string>();
    const heard = new Set<string>();
    for (const r of reports) {
      if (!nodes.has(r.node)) continue;
      if (r.dnsProxy === true) withDnsProxy.add(r.node);
      if (r.l7Proxy === true) withL7Proxy.add(r.node);
      if (r.acked || r.nack) heard.add(r.node);
      if (has(r.acked)) acknowledged++;
      else if (r.nack && has(r.nack.state)) refused.push({ node: r.node, message: r.nack.error });
    }
    // No node concerned: nothing runs the policy, so nothing says its DNS or HTTP rules are enforced.
    const secrets = this.opts.policySecrets;
    const tls = secrets ? { tlsSecretProblem: (use: TlsSecretUse, role: TlsRole) => secrets.problem(use, role) } : {};
    if (nodes.size === 0) return { acknowledged, refused, unheard: [], ...tls };
    const without = (running: ReadonlySet<string>): string[] => [...nodes].filter((n) => !running.has(n)).sort();
    return { acknowledged, refused, unheard: without(heard), withoutDnsProxy: without(withDnsProxy), withoutL7Proxy: without(withL7Proxy), ...tls };
  }

  private subjectPolicy(id: number): SubjectPolicy {
    let policy = this.subjectPolicies.get(id);
    if (!policy) {
      this.subjectPolicies.set(id, (policy = this.snapshot(id)));
      this.subjectDeltas.vouchSorted(policy);
    }
    return policy;
  }

  /**
   * Brings the subject policies nodes have read up to date from the compiler's net delta: only the
   * subjects it touches get a new object, linked to the old one by that delta; every other subject
   * keeps its object (so the distribution skips it by reference).
   */
  private applyCompiled(): void {
    const deltas = this.pending.deltas(this.compiler.enforcementOf);
    this.pending = new DeltaCollector();
    for (const d of deltas) {
      const base = this.subjectPolicies.get(d.subject);
      if (!base) continue; // no node has read it: it is snapshotted when one does
      if (d.added.length === 0 && d.removed.length === 0 && d.ingressEnforced === base.ingressEnforced && d.egressEnforced === base.egressEnforced && sameSubjectDns(d.dns, base.dns) && sameSubjectHttp(d.http, base.http)) continue;
      // A new identity adds entries to every subject with a peer selector matching it (hundreds): the held
      // policy patched by the delta, not a fresh snapshot sorting all of each subject's entries again.
      const next = isNodeHostIdentity(d.subject) ? this.snapshot(d.subject) : patchSubjectPolicy(base, d);
      this.subjectPolicies.set(d.subject, next);
      this.subjectDeltas.link(base, next, isNodeHostIdentity(d.subject) ? asHostDelta(d) : d);
      this.subjectDeltas.vouchSorted(next);
    }
  }

  /** A subject's compiled policy as nodes hold it (a node host subject as reserved:host). */
  private snapshot(id: number): SubjectPolicy {
    const p = this.compiler.snapshot(id);
    return isNodeHostIdentity(id) ? asHostSubject(p) : p;
  }

  /**
   * Takes the CIDR identities of `prefixes` and the ipBlock identities of `blocks` for `key`; the
   * returned function releases the ones it held before (after the recompile).
   */
  private setPolicyCIDRs(key: string, prefixes: readonly string[], blocks: readonly string[]): () => void {
    const releaseCIDRs = this.setCIDRs(key, prefixes);
    const releaseBlocks = this.holdPrefixes(key, blocks, ipBlockLabels, this.blocksOfPolicy, (prefix, id) => this.ipc.setIPBlock(prefix, id));
    return () => {
      releaseCIDRs();
      releaseBlocks();
    };
  }

  /** Takes the CIDR identities of `prefixes` for `key`; the returned function releases the ones it held before (after the recompile). */
  private setCIDRs(key: string, prefixes: readonly string[]): () => void {
    return this.holdPrefixes(key, prefixes, cidrLabels, this.cidrsOfPolicy, (prefix, id) => this.ipc.setCIDR(prefix, id));
  }

  /** One kind of prefix identity (`labelsOf`) for `key`'s prefixes, held in `byPolicy` and given to the ipcache by `setIdentity`. */
  private holdPrefixes(
    key: string,
    prefixes: readonly string[],
    labelsOf: (prefix: string) => LabelSet,
    byPolicy: Map<string, ReadonlyMap<string, number>>,
    setIdentity: (prefix: string, id: number | undefined) => void,
  ): () => void {
    const before = byPolicy.get(key) ?? new Map<string, number>();
    const now = new Map<string, number>();
    for (const prefix of prefixes) {
      const r = this.cidrAllocator.acquire(prefix, labelsOf);
      if (!r.ok) continue; // the parser has validated the prefix; an exhausted scope leaves the peer empty (fail closed)
      now.set(prefix, r.value.id);
      if (r.value.created) {
        setIdentity(prefix, r.value.id);
        this.compiler.upsertIdentity(r.value.id, r.value.labels, this.pending);
        this.identityLabels.set(r.value.id, r.value.labels);
        this.identitiesTouched.add(r.value.id);
      }
    }
    if (now.size > 0) byPolicy.set(key, now);
    else byPolicy.delete(key);
    return () => {
      for (const [prefix, id] of before) {
        if (!this.cidrAllocator.release(id)) continue;
        setIdentity(prefix, undefined);
        this.compiler.removeIdentity(id, this.pending);
        this.identityLabels.delete(id);
        this.identitiesTouched.add(id);
      }
    };
  }

  /** Rebuilds the shared parts whose inputs changed, once per change however many nodes ask. */
  private refresh(): void {
    if (this.servicesDirty) {
      this.servicesDirty = false;
      this.rebuildServices();
    }
    if (this.serviceCIDRsDirty) {
      // Before the ipcache is taken: new or released CIDR identities of Services without a selector are ipcache entries.
      this.serviceCIDRsDirty = false;
      this.setCIDRs(SERVICE_CIDRS, this.compiler.servicePrefixes())();
    }
    const ipc = this.ipc.take();
    if (ipc) {
      this.sharedDeltas.link("ipcache", this.shared.ipcache, ipc.entries, { ...NO_PART_CHANGE, ipcacheUpserts: ipc.upserts, ipcacheRemovals: ipc.removals });
      this.shared.ipcache = ipc.entries;
    }
    if (this.namedPortsMoved) {
      // Named ports resolve at compile time: recompile with the new ports (rare: container ports are immutable, so this follows pods coming and going).
      this.namedPortsMoved = false;
      this.compiler.recompileAll(this.pending);
    }
    this.applyCompiled();
    if (this.identitiesTouched.size > 0) this.refreshIdentities();
    if (this.tracingDirty) {
      this.tracingDirty = false;
      this.tracingList = [...this.tracing.values()].sort((a, b) => comparePrefixes(a.key, b.key));
    }
    if (this.policiesDirty) {
      this.policiesDirty = false;
      this.refreshRules();
      const gens = [...this.compiled.values()].sort((a, b) => comparePrefixes(a.key, b.key));
      if (!samePolicyGenerations(this.shared.policyGenerations, gens)) this.shared.policyGenerations = gens;
    }
  }

  /** The identity list from the identities a change touched: only those are compared; the list is replaced (and linked by its delta) when one moved. */
  private refreshIdentities(): void {
    const upserts: IdentityLabels[] = [];
    const removals: number[] = [];
    for (const id of this.identitiesTouched) {
      const labels = this.identityLabels.get(id);
      const held = this.identityEntries.get(id);
      if (!labels) {
        if (held && this.identityEntries.delete(id)) removals.push(id);
        continue;
      }
      const formatted = labels.labels.map(formatLabel);
      if (held && sameStrings(held.labels, formatted)) continue;
      const entry = { id, labels: formatted };
      this.identityEntries.set(id, entry);
      upserts.push(entry);
    }
    this.identitiesTouched.clear();
    if (upserts.length === 0 && removals.length === 0) return;
    const next = [...this.identityEntries.values()].sort((a, b) => a.id - b.id);
    this.sharedDeltas.link("identities", this.shared.identities, next, {
      ...NO_PART_CHANGE,
      identityUpserts: upserts.sort((a, b) => a.id - b.id),
      identityRemovals: removals.sort((a, b) => a - b),
    });
    this.shared.identities = next;
  }

  /** The rule table after a policy change; a ruleId is never reused, so what moved is the rules not held before. */
  private refreshRules(): void {
    const upserts: NodeState["rules"][number][] = [];
    const table = this.compiler.ruleTable();
    for (const [id, origin] of table) {
      const held = this.ruleEntries.get(id);
      const rule = { id, origin };
      if (held && sameRule(held, rule)) continue;
      this.ruleEntries.set(id, rule);
      upserts.push(rule);
    }
    let dropped = false;
    for (const id of this.ruleEntries.keys()) if (!table.has(id)) dropped = this.ruleEntries.delete(id);
    if (upserts.length === 0 && !dropped) return;
    const next = [...this.ruleEntries.values()].sort((a, b) => a.id - b.id);
    this.sharedDeltas.link("rules", this.shared.rules, next, { ...NO_PART_CHANGE, ruleUpserts: upserts.sort((a, b) => a.id - b.id) });
    this.shared.rules = next;
  }

  /**
   * Gives the compiler every Service with its backends (pod addresses as the ipcache maps them); the
   * CIDR identities of the addresses toServices entries select then follow (refresh). One netted
   * delta: a backend that moved is added before the old one is removed on every node.
   */
  private rebuildServices(): void {
    const endpoints = serviceEndpoints([...this.seen.services.values()], [...this.seen.endpointSlices.values()]);
    this.compiler.setServices(
      endpoints.map((e) => serviceBackends(e, (ip) => this.ipc.podIdentity(ip))),
      this.pending,
    );
    this.serviceCIDRsDirty = true;
  }
}

/**
 * A policy generation list by key, built once per list object: nodes that acknowledged the same
 * state share the list, and policy status asks every node about every policy after each change.
 */
const generationIndex = new WeakMap<readonly PolicyGeneration[], ReadonlyMap<string, PolicyGeneration>>();
function generationsByKey(gens: readonly PolicyGeneration[]): ReadonlyMap<string, PolicyGeneration> {
  let m = generationIndex.get(gens);
  if (!m) generationIndex.set(gens, (m = new Map(gens.map((g) => [g.key, g]))));
  return m;
}

/**
 * `base` after `delta` (the compiler's netted delta from it, entries sorted by compareEntries): what the
 * compiler's snapshot would give. A new identity changes a few entries of subjects holding thousands, so
 * each change is found by binary search and the runs of base entries between changes are copied whole:
 * O(changes × log entries) comparisons, not one per entry.
 */
export function patchSubjectPolicy(base: SubjectPolicy, delta: Delta): SubjectPolicy {
  // Everything but the entries (flags, DNS and HTTP parts) is the delta's, whole.
  const { added, removed, ...parts } = delta;
  const from = base.entries;
  const runs: (readonly PolicyEntry[])[] = [];
  let i = 0; // the first base entry not yet copied or dropped
  let a = 0;
  let r = 0;
  while (a < added.length || r < removed.length) {
    // The next change in key order (a key is never both added and removed).
    const isAdd = r >= removed.length || (a < added.length && compareEntries(added[a]!, removed[r]!) < 0);
    const change = isAdd ? added[a++]! : removed[r++]!;
    const at = lowerBound(from, change, i);
    if (at > i) runs.push(from.slice(i, at));
    i = at;
    if (i < from.length && compareEntries(from[i]!, change) === 0) i++; // replaced or removed
    if (isAdd) runs.push([change]);
  }
  if (i < from.length) runs.push(i === 0 ? from : from.slice(i));
  // Entry lists are never written after they are made, so a delta that moves no entry keeps the base's.
  if (runs.length === 1 && runs[0] === from) return { ...parts, entries: from };
  let entries: PolicyEntry[] = [];
  for (let k = 0; k < runs.length; k += CONCAT_RUNS) entries = entries.concat(...runs.slice(k, k + CONCAT_RUNS));
  return { ...parts, entries };
}

/** Runs joined per concat call: a spread of arguments has a limit, and a policy change can move thousands of entries. */
const CONCAT_RUNS = 4096;

/** The first index ≥ `lo` whose entry is not before `key` (entries sorted by compareEntries). */
function lowerBound(entries: readonly PolicyEntry[], key: PolicyEntry, lo: number): number {
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareEntries(entries[mid]!, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const NO_GROUPS: ReadonlyMap<string, CIDRGroup> = new Map();

/** Feeds `handle` the difference between a cache's objects now and the ones last seen (compared by object: the informer replaces an object on every change). */
function* reconcileKind<T>(now: readonly T[], seen: Map<string, T>, key: (o: T) => string, handle: (ev: InformerEvent<T>) => Affected, note: (a: Affected) => void): Generator<void, void> {
  const present = new Set<string>();
  for (const obj of now) {
    const k = key(obj);
    present.add(k);
    const old = seen.get(k);
    if (old === obj) continue;
    seen.set(k, obj);
    note(handle(old === undefined ? { type: "add", obj } : { type: "update", old, obj }));
    yield;
  }
  for (const [k, old] of seen) {
    if (present.has(k)) continue;
    seen.delete(k);
    note(handle({ type: "delete", obj: old }));
    yield;
  }
}

/** Runs steps to the end. */
function drain<R>(steps: Generator<void, R>): R {
  for (let step = steps.next(); ; step = steps.next()) if (step.done) return step.value;
}

type ContainerPort = NonNullable<NonNullable<NonNullable<PodObject["spec"]>["containers"]>[number]["ports"]>[number];

/** What of a pod the node states depend on: its identity, node, addresses and named container ports. */
interface PodView {
  readonly id: number | undefined;
  readonly node: string | undefined;
  readonly ips: readonly string[];
  readonly ports: readonly ContainerPort[];
  readonly workload: Workload | undefined;
}
const NO_POD: PodView = { id: undefined, node: undefined, ips: [], ports: [], workload: undefined };

function sameContainerPorts(a: readonly ContainerPort[], b: readonly ContainerPort[]): boolean {
  return a.length === b.length && a.every((p, i) => p.name === b[i]!.name && p.containerPort === b[i]!.containerPort && p.protocol === b[i]!.protocol);
}

function podIPs(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
}

/** A TracingPolicy object's key on the wire (its kind from the object; an informer's list items carry it for custom resources). */
const tracingKeyOf = (o: TracingPolicyObject): string => tracingPolicyKey(o.kind ?? (o.metadata.namespace ? "TracingPolicyNamespaced" : "TracingPolicy"), o.metadata.name, o.metadata.namespace);

/** The wire item of a TracingPolicy object, or undefined when it does not validate (Tetragon's loader rules, core/tracing.ts). */
export function tracingItem(o: TracingPolicyObject): TracingPolicyItem | undefined {
  const kind = o.kind === "TracingPolicyNamespaced" || (o.kind === undefined && o.metadata.namespace) ? "TracingPolicyNamespaced" : "TracingPolicy";
  const policy = {
    apiVersion: "cilium.io/v1alpha1",
    kind,
    metadata: { name: o.metadata.name, ...(kind === "TracingPolicyNamespaced" ? { namespace: o.metadata.namespace ?? "" } : {}) },
    spec: (o.spec ?? {}) as Readonly<Record<string, unknown>>,
  } as const;
  if (!validateTracingPolicy(policy).ok) return undefined;
  return { key: tracingPolicyKey(kind, o.metadata.name, o.metadata.namespace), uid: o.metadata.uid ?? "", generation: o.metadata.generation ?? 0, policy };
}

const podKey = (pod: PodObject): string => `${pod.metadata.namespace ?? ""}/${pod.metadata.name}`;
