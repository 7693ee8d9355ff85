// What each node should hold, from the operator's caches: the parts every node shares (ipcache, identity labels, rule table, policy generations) are built once per change; a node adds only the compiled policy of the identities its pods have.
import type { LabelSet, Policy, Protocol, SubjectPolicy } from "../../core/model.ts";
import { DeltaCollector, PolicyCompiler, policyKey, policyPrefixes } from "../../core/compiler.ts";
import { IDENTITY, LocalCIDRAllocator, RESERVED_IDENTITIES } from "../../core/identity.ts";
import { formatLabel } from "../../core/labels.ts";
import type { IPCacheEntry, IdentityLabels, NodeState, PolicyGeneration } from "../../core/wire.ts";
import { SubjectDeltaLinks } from "../../core/nodestate.ts";
import type { Informer, InformerEvent } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";
import { podNeedsIdentity } from "../identity.ts";
import { IDENTITY_ANNOTATION, type IdentityObject, type PodObject, labelSetOfIdentity } from "../../kube/objects.ts";
import { type NodeObject, nodeAddresses } from "../node.ts";
import type { Enforcement, PolicyObject } from "../policy.ts";
import type { NodeReport } from "./server.ts";
import { ParsedPolicies } from "../parsed-policies.ts";

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
export type SourceKind = "nodes" | "identities" | "policies" | "pods";
export const SOURCE_KINDS: readonly SourceKind[] = ["nodes", "identities", "policies", "pods"];

/** The caches the source reconciles against, besides the pods and nodes it is built with. */
export interface SourceInformers {
  readonly identities: Informer<IdentityObject>;
  readonly policies: readonly Informer<PolicyObject>[];
}

export interface NodeStateSourceOptions {
  /** The local cluster's name, for the `cluster` entity. */
  readonly clusterName?: string;
  /** The parses shared with the policy status reconciler (each generation parsed once). */
  readonly parsed?: ParsedPolicies;
}

export class NodeStateSource {
  readonly compiler: PolicyCompiler;
  private readonly parsed: ParsedPolicies;
  private readonly identityLabels = new Map<number, LabelSet>();
  /** policy key → the uid and generation whose parts the compiler holds (the last valid one). */
  private readonly compiled = new Map<string, PolicyGeneration>();
  /** CIDR identities (node-local scope) for the prefixes policies name, held per policy key. */
  private readonly cidrAllocator = new LocalCIDRAllocator();
  private readonly cidrsOfPolicy = new Map<string, ReadonlyMap<string, number>>();
  private readonly cidrIdentities = new Map<string, number>(); // prefix → identity, for the ipcache

  // Built lazily once per change (dirty flags), shared by every node.
  private podsDirty = true;
  private identitiesDirty = true;
  private policiesDirty = true;
  private readonly shared: SharedParts = { ipcache: [], identities: [], rules: [], policyGenerations: [] };
  private hostedByNode = new Map<string, readonly number[]>();
  /** identity → "name/protocol" → container port numbers, from the pods that have the identity. */
  private namedPorts = new Map<number, Map<string, number[]>>();
  private namedPortsKey = "[]";
  /** Compiled policy per subject identity, shared by every node hosting it; replaced only when the compiler's delta touches the subject. */
  private readonly subjectPolicies = new Map<number, SubjectPolicy>();
  /** The compiler's changes since the subject policies were last brought up to date, netted per key. */
  private pending = new DeltaCollector();
  /** Each replaced subject policy linked to its predecessor by the compiler's delta: what the distribution sends. */
  readonly subjectDeltas = new SubjectDeltaLinks();

  constructor(
    private readonly pods: Informer<PodObject>,
    private readonly nodes: Informer<NodeObject>,
    opts: NodeStateSourceOptions = {},
  ) {
    this.compiler = new PolicyCompiler({ namedPorts: (id, name, protocol) => this.namedPortsOf(id, name, protocol), clusterName: opts.clusterName });
    this.parsed = opts.parsed ?? new ParsedPolicies();
    for (const r of RESERVED_IDENTITIES) {
      this.compiler.upsertIdentity(r.id, r.labels, this.pending);
      this.identityLabels.set(r.id, r.labels);
    }
  }

  /** The objects last compiled, per kind and key: what sync() compares the caches with. */
  private readonly seen = {
    identities: new Map<string, IdentityObject>(),
    policies: new Map<string, PolicyObject>(),
    pods: new Map<string, PodObject>(),
    nodes: new Map<string, NodeObject>(),
  };

  /**
   * Level-triggered: brings the compiled state in line with the caches as they are now, whatever
   * event woke it. Each object that is not the one last compiled goes through its handler below
   * (which ignores what does not matter, e.g. a status write); one gone from its cache is deleted.
   * Returns the nodes whose desired state may have changed.
   */
  sync(informers: SourceInformers, kinds: readonly SourceKind[] = SOURCE_KINDS): Affected {
    let all = false;
    const some = new Set<string>();
    const note = (a: Affected): void => {
      if (a === "all") all = true;
      else for (const n of a) some.add(n);
    };
    // In this order, whichever kinds are asked for: identities exist before the pods that carry them.
    if (kinds.includes("nodes")) reconcileKind(this.nodes.list(), this.seen.nodes, (o) => o.metadata.name, this.onNode, note);
    if (kinds.includes("identities")) reconcileKind(informers.identities.list(), this.seen.identities, (o) => o.metadata.name, this.onIdentity, note);
    if (kinds.includes("policies")) reconcileKind(informers.policies.flatMap((i) => i.list()), this.seen.policies, ParsedPolicies.keyOf, this.onPolicy, note);
    if (kinds.includes("pods")) reconcileKind(this.pods.list(), this.seen.pods, (o) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`, this.onPod, note);
    return all ? "all" : [...some];
  }

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
    this.identitiesDirty = true;
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
      this.setPolicyCIDRs(key, [])();
      this.policiesDirty = true;
      return "all";
    }
    if (ev.type === "update" && ev.old.metadata.generation === ev.obj.metadata.generation && ev.old.metadata.uid === ev.obj.metadata.uid) return [];
    const parsed = this.parsed.parse(ev.obj);
    if (!parsed.ok) return [];
    // The CIDR identities exist before the policy compiles, so its CIDR peers select them at once.
    const release = this.setPolicyCIDRs(key, policyPrefixes(parsed.value));
    this.compiler.upsertPolicy(key, parsed.value, this.pending);
    release();
    this.compiled.set(key, { key, uid: ev.obj.metadata.uid ?? "", generation: ev.obj.metadata.generation ?? 0 });
    this.policiesDirty = true;
    return "all";
  };

  /** Informer handler for pods: a change of the ipcache concerns every node, a change of hosted identities only the pod's nodes. */
  readonly onPod = (ev: InformerEvent<PodObject>): Affected => {
    const before = ev.type === "update" ? ev.old : ev.type === "delete" ? ev.obj : undefined;
    const after = ev.type === "delete" ? undefined : ev.obj;
    const view = (p: PodObject | undefined): { ips: string; hosted: string; ports: string } => {
      const id = p && podNeedsIdentity(p) ? this.identityOf(p) : undefined;
      if (!p || id === undefined) return { ips: "", hosted: "", ports: "" };
      const named = (p.spec?.containers ?? []).flatMap((c) => (c.ports ?? []).filter((port) => port.name));
      return { ips: `${id}|${p.spec?.nodeName ?? ""}|${podIPs(p).join(",")}`, hosted: `${id}|${p.spec?.nodeName ?? ""}`, ports: named.length > 0 ? `${id}|${JSON.stringify(named)}` : "" };
    };
    const a = view(before);
    const b = view(after);
    if (a.ips === b.ips && a.hosted === b.hosted && a.ports === b.ports) return [];
    this.podsDirty = true;
    if (a.ips !== b.ips && (a.ips.split("|")[2] || b.ips.split("|")[2])) return "all";
    if (a.ports !== b.ports) return "all"; // named ports may move entries of any node's subjects
    return [...new Set([before?.spec?.nodeName, after?.spec?.nodeName].filter((n): n is string => !!n))];
  };

  /** Informer handler for nodes: a node's addresses are in every node's ipcache. */
  readonly onNode = (ev: InformerEvent<NodeObject>): Affected => {
    const addrs = (n: NodeObject | undefined): string => JSON.stringify(n ? nodeAddresses(n) : []);
    if (ev.type === "update" && addrs(ev.old) === addrs(ev.obj)) return [ev.obj.metadata.name];
    this.podsDirty = true; // node IPs are the tunnel endpoints of pod entries
    return "all";
  };

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
    const policies = (this.hostedByNode.get(node) ?? []).map((id) => this.subjectPolicy(id));
    return { policies, ...this.shared };
  }

  /** How many of `nodes` enforce this generation of `obj`, and which refused it. */
  enforcement(obj: KubeObject, nodes: ReadonlySet<string>, reports: readonly NodeReport[]): Enforcement {
    const key = policyKey({ kind: (obj.kind ?? "") as Policy["kind"], namespace: obj.metadata.namespace, name: obj.metadata.name });
    const has = (state: NodeState | undefined): boolean =>
      state?.policyGenerations.some((g) => g.key === key && g.uid === obj.metadata.uid && g.generation >= (obj.metadata.generation ?? 0)) ?? false;
    let acknowledged = 0;
    const refused: { node: string; message: string }[] = [];
    for (const r of reports) {
      if (!nodes.has(r.node)) continue;
      if (has(r.acked)) acknowledged++;
      else if (r.nack && has(r.nack.state)) refused.push({ node: r.node, message: r.nack.error });
    }
    return { acknowledged, refused };
  }

  private subjectPolicy(id: number): SubjectPolicy {
    let policy = this.subjectPolicies.get(id);
    if (!policy) this.subjectPolicies.set(id, (policy = this.compiler.snapshot(id)));
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
      if (d.added.length === 0 && d.removed.length === 0 && d.ingressEnforced === base.ingressEnforced && d.egressEnforced === base.egressEnforced) continue;
      const next = this.compiler.snapshot(d.subject);
      this.subjectPolicies.set(d.subject, next);
      this.subjectDeltas.link(base, next, d);
    }
  }

  /** Takes the CIDR identities of `prefixes` for `key`; the returned function releases the ones it held before (after the recompile). */
  private setPolicyCIDRs(key: string, prefixes: readonly string[]): () => void {
    const before = this.cidrsOfPolicy.get(key) ?? new Map<string, number>();
    const now = new Map<string, number>();
    for (const prefix of prefixes) {
      const r = this.cidrAllocator.acquire(prefix);
      if (!r.ok) continue; // the parser has validated the prefix; an exhausted scope leaves the peer empty (fail closed)
      now.set(prefix, r.value.id);
      if (r.value.created) {
        this.cidrIdentities.set(prefix, r.value.id);
        this.compiler.upsertIdentity(r.value.id, r.value.labels, this.pending);
        this.identityLabels.set(r.value.id, r.value.labels);
        this.identitiesDirty = true;
        this.podsDirty = true;
      }
    }
    if (now.size > 0) this.cidrsOfPolicy.set(key, now);
    else this.cidrsOfPolicy.delete(key);
    return () => {
      for (const [prefix, id] of before) {
        if (!this.cidrAllocator.release(id)) continue;
        this.cidrIdentities.delete(prefix);
        this.compiler.removeIdentity(id, this.pending);
        this.identityLabels.delete(id);
        this.identitiesDirty = true;
        this.podsDirty = true;
      }
    };
  }

  private namedPortsOf(id: number, name: string, protocol: Protocol): readonly number[] {
    const byName = this.namedPorts.get(id);
    if (!byName) return [];
    if (protocol !== "ANY") return byName.get(`${name}/${protocol}`) ?? [];
    return [...new Set(["TCP", "UDP", "SCTP"].flatMap((p) => byName.get(`${name}/${p}`) ?? []))];
  }

  /** Rebuilds the shared parts whose inputs changed, once per change however many nodes ask. */
  private refresh(): void {
    if (this.podsDirty) {
      this.podsDirty = false;
      this.rebuildPods();
    }
    this.applyCompiled();
    if (this.identitiesDirty) {
      this.identitiesDirty = false;
      const identities = [...this.identityLabels].sort(([a], [b]) => a - b).map(([id, labels]) => ({ id, labels: labels.labels.map(formatLabel) }));
      this.shared.identities = keepIfSame(this.shared.identities, identities);
    }
    if (this.policiesDirty) {
      this.policiesDirty = false;
      const rules = [...this.compiler.ruleTable()].sort(([a], [b]) => a - b).map(([id, origin]) => ({ id, origin }));
      this.shared.rules = keepIfSame(this.shared.rules, rules);
      const gens = [...this.compiled.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      this.shared.policyGenerations = keepIfSame(this.shared.policyGenerations, gens);
    }
  }

  private rebuildPods(): void {
    const out = new Map<string, IPCacheEntry>();
    const nodeIPs = new Map<string, string>();
    for (const node of this.nodes.list()) {
      const addrs = nodeAddresses(node);
      const internal = addrs.find((a) => a.type === "InternalIP")?.ip;
      if (internal) nodeIPs.set(node.metadata.name, internal);
      for (const a of addrs) out.set(hostPrefix(a.ip), { prefix: hostPrefix(a.ip), identity: IDENTITY.remoteNode, node: a.ip });
    }
    for (const [prefix, identity] of this.cidrIdentities) if (!out.has(prefix)) out.set(prefix, { prefix, identity });
    const hosted = new Map<string, Set<number>>();
    const ports = new Map<number, Map<string, Set<number>>>();
    for (const pod of this.pods.list()) {
      const id = this.identityOf(pod);
      if (id === undefined || !podNeedsIdentity(pod)) continue;
      const nodeName = pod.spec?.nodeName;
      if (nodeName) {
        let s = hosted.get(nodeName);
        if (!s) hosted.set(nodeName, (s = new Set()));
        s.add(id);
      }
      for (const c of pod.spec?.containers ?? []) {
        for (const p of c.ports ?? []) {
          if (!p.name || !Number.isInteger(p.containerPort)) continue;
          let byName = ports.get(id);
          if (!byName) ports.set(id, (byName = new Map()));
          const k = `${p.name}/${p.protocol ?? "TCP"}`;
          let set = byName.get(k);
          if (!set) byName.set(k, (set = new Set()));
          set.add(p.containerPort);
        }
      }
      const node = nodeName ? nodeIPs.get(nodeName) : undefined;
      for (const ip of podIPs(pod)) out.set(hostPrefix(ip), { prefix: hostPrefix(ip), identity: id, ...(node ? { node } : {}), pod: `${pod.metadata.namespace ?? ""}/${pod.metadata.name}` });
    }
    // An unchanged entry keeps its object (and an unchanged ipcache its array): deltas then compare by reference, without serialising.
    const prev = new Map(this.shared.ipcache.map((e) => [e.prefix, e]));
    let reused = 0;
    const entries = [...out.values()].map((e) => {
      const p = prev.get(e.prefix);
      if (p && p.identity === e.identity && p.node === e.node && p.pod === e.pod) {
        reused++;
        return p;
      }
      return e;
    });
    if (reused !== entries.length || entries.length !== this.shared.ipcache.length)
      this.shared.ipcache = entries.sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
    this.hostedByNode = new Map([...hosted].map(([n, s]) => [n, [...s].sort((a, b) => a - b)]));
    const namedPorts = new Map([...ports].map(([id, m]) => [id, new Map([...m].map(([k, s]) => [k, [...s].sort((a, b) => a - b)]))]));
    const key = JSON.stringify([...namedPorts].sort(([a], [b]) => a - b).map(([id, m]) => [id, [...m].sort()]));
    if (key !== this.namedPortsKey) {
      // Named ports resolve at compile time: recompile with the new ports (rare: container ports are immutable, so this follows pods coming and going).
      this.namedPorts = namedPorts;
      this.namedPortsKey = key;
      this.compiler.recompileAll(this.pending);
    }
  }
}

/** Feeds `handle` the difference between a cache's objects now and the ones last seen (compared by object: the informer replaces an object on every change). */
function reconcileKind<T>(now: readonly T[], seen: Map<string, T>, key: (o: T) => string, handle: (ev: InformerEvent<T>) => Affected, note: (a: Affected) => void): void {
  const present = new Set<string>();
  for (const obj of now) {
    const k = key(obj);
    present.add(k);
    const old = seen.get(k);
    if (old === obj) continue;
    seen.set(k, obj);
    note(handle(old === undefined ? { type: "add", obj } : { type: "update", old, obj }));
  }
  for (const [k, old] of seen) {
    if (present.has(k)) continue;
    seen.delete(k);
    note(handle({ type: "delete", obj: old }));
  }
}

/** `prev` when `next` has the same content, so an unchanged part keeps its identity (and per-node comparisons stay by reference). */
function keepIfSame<T>(prev: readonly T[], next: readonly T[]): readonly T[] {
  return prev.length === next.length && JSON.stringify(prev) === JSON.stringify(next) ? prev : next;
}

function podIPs(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
}

function hostPrefix(ip: string): string {
  return ip.includes(":") ? `${ip}/128` : `${ip}/32`;
}
