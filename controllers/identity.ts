// Identity reconciler: keeps CiliumIdentity objects true for the pods that exist. A pod's security
// labels (core/labels.ts) map to one identity number cluster-wide; numbers already in the API are
// the truth; the reference counts kept here tell the identity GC (identity-gc.ts) which ones no pod
// uses. Keys: "pod/<ns>/<name>", "ns/<name>".
import type { Logger } from "pino";
import type { LabelSet } from "../core/model.ts";
import { securityLabels } from "../core/labels.ts";
import { IdentityAllocator } from "../core/identity.ts";
import type { Reconciler, ReconcileResult } from "../kube/controller.ts";
import type { Informer, InformerEvent } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, isConflict, isNotFound, resourcePath } from "../kube/kube.ts";
import type { IdentityUse } from "./identity-gc.ts";
import type { OperatorMetrics } from "../kube/metrics.ts";
import { IDENTITIES, PODS } from "../kube/resources.ts";
import { IDENTITY_ANNOTATION, IDENTITY_NUMBER_LABEL, type IdentityObject, type PodObject, labelSetOfIdentity, securityLabelsMap } from "../kube/objects.ts";

/** Whether a pod has an endpoint that needs an identity (host-network and finished pods do not). */
export function podNeedsIdentity(pod: PodObject): boolean {
  if (pod.spec?.hostNetwork) return false;
  const phase = pod.status?.phase;
  return phase !== "Succeeded" && phase !== "Failed";
}

export interface IdentityDeps {
  readonly client: KubeClient;
  readonly pods: Informer<PodObject>;
  readonly namespaces: Informer<KubeObject>;
  readonly identities: Informer<IdentityObject>;
  readonly metrics: OperatorMetrics;
  readonly log: Logger;
  readonly clusterName: string;
}

const podKey = (ns: string, name: string): string => `pod/${ns}/${name}`;

/** The identity reconciler plus the read side other controllers use (pod → labels, identity → labels). */
export class IdentityReconciler implements Reconciler, IdentityUse {
  readonly name = "identity";
  /** The core allocator holds the bindings labels key ↔ number, fed from the CiliumIdentity objects. */
  private readonly allocator = new IdentityAllocator();
  private readonly labelsOf = new Map<number, LabelSet>();
  /**
   * Pod key → the labels it needs; labels key → the label set and the pods needing it (the reference
   * counts). Pods with equal labels share that one LabelSet object (desiredLabels), not one each.
   */
  private readonly podLabels = new Map<string, LabelSet>();
  private readonly users = new Map<string, { readonly set: LabelSet; readonly pods: Set<string> }>();
  private readonly creating = new Map<string, Promise<number>>();
  /** Numbers the GC is deleting: never handed out, and not bound again by a late event, until their delete is seen. */
  private readonly retired = new Set<number>();
  /** Security labels per cached pod object (policy selection asks for every pod on every status refresh). */
  private readonly labelsOfPod = new WeakMap<PodObject, { ns: KubeObject; set: LabelSet }>();

  constructor(private readonly d: IdentityDeps) {}

  /** Event → keys, for Controller.watch. */
  readonly podKeys = (ev: InformerEvent<PodObject>): string[] => [podKey(ev.obj.metadata.namespace ?? "", ev.obj.metadata.name)];
  readonly namespaceKeys = (ev: InformerEvent<KubeObject>): string[] => {
    if (ev.type === "update" && JSON.stringify(ev.obj.metadata.labels ?? {}) === JSON.stringify(ev.old.metadata.labels ?? {})) return [];
    return [`ns/${ev.obj.metadata.name}`];
  };
  readonly identityKeys = (ev: InformerEvent<IdentityObject>): string[] => {
    const n = Number(ev.obj.metadata.name);
    if (!Number.isInteger(n)) return [];
    if (ev.type === "delete") this.forgetIdentity(n);
    else if (!this.retired.has(n)) this.indexIdentity(n, labelSetOfIdentity(ev.obj));
    this.d.metrics.identities.set(this.d.identities.size);
    // An identity removed behind our back: its users need a (new) one.
    return ev.type === "delete" ? [...(this.users.get(labelSetOfIdentity(ev.obj).key)?.pods ?? [])] : [];
  };

  /** Before the workers start: index every identity and every pod's labels from the synced caches, so GC never sees a half-built view. */
  init(): void {
    // Descending, so that if two objects carry equal labels (a past race) the lowest number is bound.
    const ids = this.d.identities.list().map((o) => [Number(o.metadata.name), o] as const);
    for (const [n, obj] of ids.filter(([n]) => Number.isInteger(n)).sort((a, b) => b[0] - a[0])) this.indexIdentity(n, labelSetOfIdentity(obj));
    for (const pod of this.d.pods.list()) {
      const set = this.desiredLabels(pod);
      if (set) this.setPodLabels(podKey(pod.metadata.namespace ?? "", pod.metadata.name), set);
    }
    this.d.metrics.identities.set(this.d.identities.size);
  }

  /** The identity number of a label set, if one exists. */
  identityFor(set: LabelSet): number | undefined {
    return this.allocator.lookup(set.key);
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const [kind, ...rest] = key.split("/");
    if (kind === "pod") return this.reconcilePod(rest[0] ?? "", rest.slice(1).join("/"));
    if (kind === "ns") {
      for (const pod of this.d.pods.list()) if (pod.metadata.namespace === rest[0]) await this.reconcilePod(rest[0] ?? "", pod.metadata.name);
      return;
    }
  }

  /** Whether a pod needs this identity now: it is the number bound to its labels and some pod needs those labels. */
  inUse(n: number, obj: IdentityObject): boolean {
    const set = this.labelsOf.get(n) ?? labelSetOfIdentity(obj);
    return this.allocator.keyOf(n) === set.key && (this.users.get(set.key)?.pods.size ?? 0) > 0;
  }

  retire(n: number, obj: IdentityObject): boolean {
    if (this.inUse(n, obj)) return false;
    this.retired.add(n);
    this.allocator.release(n);
    this.allocator.reference(n);
    return true;
  }

  restore(n: number, obj: IdentityObject): void {
    if (!this.retired.delete(n)) return;
    this.indexIdentity(n, labelSetOfIdentity(obj));
  }

  private indexIdentity(n: number, set: LabelSet): void {
    this.labelsOf.set(n, set);
    this.allocator.unreference(n);
    if (this.allocator.lookup(set.key) === undefined || this.allocator.keyOf(n) !== undefined) this.allocator.bind(n, set.key);
    else this.allocator.reference(n); // a duplicate of a bound key: keep the number out of reuse until it is gone
  }

  private forgetIdentity(n: number): void {
    this.retired.delete(n);
    this.labelsOf.delete(n);
    this.allocator.release(n);
    this.allocator.unreference(n);
  }

  /** A pod's security labels as its cached objects say now; undefined when it needs no identity or its namespace is not cached yet. */
  securityLabelsOf(pod: PodObject): LabelSet | undefined {
    return this.desiredLabels(pod);
  }

  private desiredLabels(pod: PodObject): LabelSet | undefined {
    if (!podNeedsIdentity(pod)) return undefined;
    const ns = this.d.namespaces.get(pod.metadata.namespace ?? "");
    if (!ns) return undefined;
    // Informer caches replace an object on every change, so (pod, namespace) objects identify the inputs.
    const cached = this.labelsOfPod.get(pod);
    if (cached?.ns === ns) return cached.set;
    const computed = securityLabels({
      podLabels: pod.metadata.labels ?? {},
      namespace: pod.metadata.namespace ?? "",
      namespaceLabels: ns.metadata.labels ?? {},
      serviceAccount: pod.spec?.serviceAccountName,
      clusterName: this.d.clusterName,
    });
    const set = this.users.get(computed.key)?.set ?? computed;
    this.labelsOfPod.set(pod, { ns, set });
    return set;
  }

  /** Records which labels a pod needs; returns the labels key it needed before, if different. */
  private setPodLabels(pk: string, set: LabelSet | undefined): string | undefined {
    const before = this.podLabels.get(pk);
    if (before?.key === set?.key) return undefined;
    if (before) {
      const u = this.users.get(before.key);
      u?.pods.delete(pk);
      if (u && u.pods.size === 0) this.users.delete(before.key);
      this.podLabels.delete(pk);
    }
    if (set) {
      let u = this.users.get(set.key);
      if (!u) this.users.set(set.key, (u = { set, pods: new Set() }));
      u.pods.add(pk);
      this.podLabels.set(pk, u.set);
    }
    return before?.key;
  }

  private async reconcilePod(namespace: string, name: string): Promise<void> {
    const pk = podKey(namespace, name);
    const pod = this.d.pods.get(`${namespace}/${name}`);
    const set = pod ? this.desiredLabels(pod) : undefined;
    if (pod && podNeedsIdentity(pod) && !set) throw new Error(`namespace ${namespace} of pod ${name} is not known yet`);
    const previous = this.setPodLabels(pk, set);
    // The identity the pod used before may have lost its last user: let GC look at it.
    if (previous !== undefined) {
      const n = this.allocator.lookup(previous);
      if (n !== undefined) this.checkUse(n);
    }
    if (!pod || !set) return;

    const n = await this.ensureIdentity(set);
    if (pod.metadata.annotations?.[IDENTITY_ANNOTATION] !== String(n)) {
      try {
        await this.d.client.mergePatch(resourcePath(PODS, namespace, name), { metadata: { annotations: { [IDENTITY_ANNOTATION]: String(n) } } });
        this.d.log.info({ namespace, name, identity: n }, "pod identity set");
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    // A marked-unused identity may have a user again: its mark goes.
    this.checkUse(n);
  }

  /** Set by the operator: tells the identity GC that an identity's use may have changed. */
  checkUse: (n: number) => void = () => {};

  private ensureIdentity(set: LabelSet): Promise<number> {
    // One creation per label set at a time, so two workers never allocate two numbers for it.
    const inFlight = this.creating.get(set.key);
    if (inFlight) return inFlight;
    const existing = this.identityFor(set);
    if (existing !== undefined) return Promise.resolve(existing);
    const p = this.createIdentity(set).finally(() => this.creating.delete(set.key));
    this.creating.set(set.key, p);
    return p;
  }

  private async createIdentity(set: LabelSet): Promise<number> {
    const r = this.allocator.allocate(set.key);
    if (!r.ok) throw new Error(r.errors.map((e) => e.message).join("; "));
    const n = r.value.id;
    try {
      await this.d.client.create(resourcePath(IDENTITIES), {
        apiVersion: "cilium.io/v2",
        kind: "CiliumIdentity",
        // The number as a label too: the GC deletes idle identities in batches selected by it.
        metadata: { name: String(n), labels: { [IDENTITY_NUMBER_LABEL]: String(n) } },
        "security-labels": securityLabelsMap(set),
      });
    } catch (e) {
      this.allocator.release(n);
      if (isConflict(e)) {
        // The number exists already (our cache lags, or another replica wrote it): skip it until the informer says what it is.
        this.allocator.reference(n);
        throw new Error(`identity ${n} already exists; retrying`, { cause: e });
      }
      throw e;
    }
    this.labelsOf.set(n, set);
    this.d.log.info({ identity: n, labels: set.labels.length }, "identity created");
    return n;
  }
}
