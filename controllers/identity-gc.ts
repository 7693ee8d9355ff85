// Identity garbage collection: a CiliumIdentity no pod uses is marked unused (the mark persisted on
// the object, so an operator restart does not postpone it), and deleted once the grace period has
// passed and it is still unused, re-checked just before the delete. Keys: "id/<number>". It runs as a
// controller of its own so that many identities are collected at once (its worker count is the bound
// on concurrent writes) without holding back the pod reconciles that give pods their identities.
import type { Logger } from "pino";
import type { Reconciler, ReconcileResult } from "../kube/controller.ts";
import type { Informer, InformerEvent } from "../kube/informer.ts";
import { type KubeClient, isConflict, isNotFound, resourcePath } from "../kube/kube.ts";
import { IDENTITIES } from "../kube/resources.ts";
import { UNUSED_SINCE_ANNOTATION, type IdentityObject } from "../kube/objects.ts";

/** Whether an identity has a user now; the identity reconciler's reference counts answer it. */
export interface IdentityUse {
  inUse(n: number, obj: IdentityObject): boolean;
}

export interface IdentityGCDeps {
  readonly client: KubeClient;
  readonly identities: Informer<IdentityObject>;
  readonly use: IdentityUse;
  readonly log: Logger;
  readonly graceMs: number;
  readonly now?: () => number;
}

/** The default bound on identities marked or deleted at once (the GC controller's workers). */
export const DEFAULT_GC_CONCURRENCY = 32;

export const identityGcKey = (n: number): string => `id/${n}`;

export class IdentityGC implements Reconciler {
  readonly name = "identity-gc";
  private readonly now: () => number;

  constructor(private readonly d: IdentityGCDeps) {
    this.now = d.now ?? Date.now;
  }

  /** Event → keys, for Controller.watch: every change of an identity is a reason to look at it. */
  readonly identityKeys = (ev: InformerEvent<IdentityObject>): string[] => {
    if (ev.type === "delete") return [];
    const n = Number(ev.obj.metadata.name);
    return Number.isInteger(n) ? [identityGcKey(n)] : [];
  };

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const n = Number(key.slice("id/".length));
    if (!key.startsWith("id/") || !Number.isInteger(n)) return;
    const obj = this.d.identities.get(String(n));
    if (!obj) return;
    const path = resourcePath(IDENTITIES, undefined, String(n));
    const mark = obj.metadata.annotations?.[UNUSED_SINCE_ANNOTATION];
    if (this.d.use.inUse(n, obj)) {
      if (mark !== undefined) {
        await this.d.client.mergePatch(path, { metadata: { annotations: { [UNUSED_SINCE_ANNOTATION]: null } } });
        this.d.log.info({ identity: n }, "identity in use again");
      }
      return;
    }
    const since = mark !== undefined ? Date.parse(mark) : NaN;
    if (Number.isNaN(since)) {
      try {
        await this.d.client.mergePatch(path, {
          metadata: { resourceVersion: obj.metadata.resourceVersion, annotations: { [UNUSED_SINCE_ANNOTATION]: new Date(this.now()).toISOString() } },
        });
      } catch (e) {
        // Gone meanwhile, or changed since our cache saw it: the informer's event brings the key back.
        if (isNotFound(e) || isConflict(e)) return;
        throw e;
      }
      this.d.log.info({ identity: n, graceMs: this.d.graceMs }, "identity unused; collecting after the grace period");
      return { requeueAfter: this.d.graceMs };
    }
    const left = since + this.d.graceMs - this.now();
    if (left > 0) return { requeueAfter: left };
    // Re-checked at the last moment: a pod may have taken it while the grace period ran.
    if (this.d.use.inUse(n, obj)) return this.reconcile(key);
    try {
      // The precondition makes a concurrent change of the object (a mark cleared) win over the delete.
      await this.d.client.delete(path, { uid: obj.metadata.uid, resourceVersion: obj.metadata.resourceVersion });
      this.d.log.info({ identity: n }, "identity collected");
    } catch (e) {
      if (isNotFound(e) || isConflict(e)) return;
      throw e;
    }
  }
}
