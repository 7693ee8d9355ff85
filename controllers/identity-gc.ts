// Identity garbage collection: a CiliumIdentity no pod uses is marked unused, and deleted once the
// grace period has passed and it is still unused. One key ("sweep") looks at every identity at once,
// so what it costs the API server does not grow with the identities: the marks of a sweep are one
// write of one ConfigMap (read back at start, so an operator restart does not postpone GC), and the
// identities proven idle go in deletecollection requests selected by their number label. The
// operator is the only allocator: an identity is retired from allocation before its delete is sent,
// so no pod is given a number being deleted (a pod that needs its labels meanwhile gets a new one).
import type { Logger } from "pino";
import type { Reconciler, ReconcileResult } from "../kube/controller.ts";
import type { Informer, InformerEvent } from "../kube/informer.ts";
import { KubeError, type KubeClient, type KubeObject, isConflict, isNotFound, resourcePath } from "../kube/kube.ts";
import { CONFIG_MAPS, IDENTITIES } from "../kube/resources.ts";
import { IDENTITY_NUMBER_LABEL, UNUSED_SINCE_ANNOTATION, type IdentityObject } from "../kube/objects.ts";
import { formatRanges, formatUnusedMarks, parseUnusedMarks, type UnusedMarks } from "../core/identity-marks.ts";

/** Whether an identity has a user now, and its retirement from allocation; the identity reconciler answers both. */
export interface IdentityUse {
  inUse(n: number, obj: IdentityObject): boolean;
  /** If no pod needs `n`, stops handing it out until its delete is seen or `restore` is called; false when in use. */
  retire(n: number, obj: IdentityObject): boolean;
  /** Undoes `retire` for an identity whose delete failed. */
  restore(n: number, obj: IdentityObject): void;
}

export interface IdentityGCDeps {
  readonly client: KubeClient;
  readonly identities: Informer<IdentityObject>;
  readonly use: IdentityUse;
  readonly log: Logger;
  readonly graceMs: number;
  /** The ConfigMap that holds the marks (the operator's namespace, named after its Lease). */
  readonly marks: { readonly namespace: string; readonly name: string };
  /** Delete requests in flight at once. */
  readonly concurrency: number;
  readonly now?: () => number;
}

/** The default bound on the GC's delete requests in flight. */
export const DEFAULT_GC_CONCURRENCY = 32;
/**
 * Identities per deletecollection request: its label selector (≤ 6 characters a number) stays well inside a URL,
 * and the API server deletes a request's objects one after another (--delete-collection-workers, default 1), so
 * requests in flight are what runs in parallel.
 */
export const GC_BATCH = 250;
/** A deletecollection of GC_BATCH objects on a loaded API server takes minutes, not the usual 30 s. */
const BATCH_TIMEOUT_MS = 300_000;
/** The one key of the GC controller. */
export const GC_SWEEP_KEY = "sweep";
/** A use change or an identity event waits this long for others, so a burst of pod or identity changes is one sweep. */
export const GC_COALESCE_MS = 1000;
const MARKS_KEY = "unused-since";

export class IdentityGC implements Reconciler {
  readonly name = "identity-gc";
  private readonly now: () => number;
  /** The marks as this operator knows them; undefined until read from the ConfigMap. */
  private marks: UnusedMarks | undefined;
  /** The text last written (or read), and the ConfigMap's resourceVersion then; undefined resourceVersion: it does not exist. */
  private stored: { text: string; resourceVersion?: string } = { text: "" };
  private markedOnce: (() => void) | undefined;
  /**
   * Settles when the first sweep has marked every idle identity and stored the marks (before it deletes any), or has
   * failed: the operator starts the distribution's first compile after it, so the grace runs during that compile.
   */
  readonly firstMarks: Promise<void> = new Promise((resolve) => (this.markedOnce = resolve));

  constructor(private readonly d: IdentityGCDeps) {
    this.now = d.now ?? Date.now;
  }

  /** Event → keys, for Controller.watch: a new or changed identity may be idle. */
  readonly identityKeys = (ev: InformerEvent<IdentityObject>): string[] => (ev.type === "delete" ? [] : [GC_SWEEP_KEY]);

  /**
   * A pod change may have changed an identity's use: a used one loses its mark at once (so its next
   * idle spell gets a whole grace period); returns whether a sweep should look (it may be idle now, or
   * its mark's removal is to be stored).
   */
  useChanged(n: number): boolean {
    const obj = this.d.identities.get(String(n));
    if (!obj || !this.d.use.inUse(n, obj)) return true;
    return this.marks?.delete(n) ?? false;
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    if (key !== GC_SWEEP_KEY) return;
    try {
      return await this.sweep();
    } finally {
      this.markedOnce?.();
    }
  }

  private async sweep(): Promise<ReconcileResult | void> {
    const first = this.marks === undefined;
    const marks = (this.marks ??= await this.readMarks());
    const now = Math.floor(this.now() / 1000) * 1000;
    const due: [number, IdentityObject][] = [];
    let next = Infinity;
    const seen = new Set<number>();
    for (const obj of this.d.identities.list()) {
      const n = Number(obj.metadata.name);
      if (!Number.isInteger(n)) continue;
      seen.add(n);
      if (this.d.use.inUse(n, obj)) {
        marks.delete(n);
        continue;
      }
      // On the first sweep, a mark an earlier operator wrote on the object counts as well (an upgrade does not
      // postpone GC); later it may be stale (this operator does not clear it when the identity is used again).
      let since = marks.get(n) ?? (first ? Date.parse(obj.metadata.annotations?.[UNUSED_SINCE_ANNOTATION] ?? "") : NaN);
      if (Number.isNaN(since)) since = now;
      marks.set(n, since);
      if (since + this.d.graceMs <= now) due.push([n, obj]);
      else next = Math.min(next, since + this.d.graceMs);
    }
    for (const n of marks.keys()) if (!seen.has(n)) marks.delete(n);
    // The marks are stored before anything is deleted, so a restart finds every one it relied on.
    await this.writeMarks(marks);
    this.markedOnce?.();
    if (due.length > 0) {
      await this.collect(due);
      await this.writeMarks(marks); // without the collected ones
    }
    if (next !== Infinity) return { requeueAfter: Math.max(next - this.now(), 0) };
  }

  private async collect(due: readonly [number, IdentityObject][]): Promise<void> {
    // Retired all at once, before any request: from here on no pod reconcile hands these numbers out.
    const retired = due.filter(([n, obj]) => this.d.use.retire(n, obj));
    const labelled = retired.filter(([n, obj]) => obj.metadata.labels?.[IDENTITY_NUMBER_LABEL] === String(n));
    // Objects without the number label (created before it existed) are deleted one by one, with a precondition.
    const single = retired.filter(([n, obj]) => obj.metadata.labels?.[IDENTITY_NUMBER_LABEL] !== String(n));
    const batches: (readonly [number, IdentityObject])[][] = [];
    for (let i = 0; i < labelled.length; i += GC_BATCH) batches.push(labelled.slice(i, i + GC_BATCH));
    for (const one of single) batches.push([one]);
    this.d.log.info({ identities: retired.length, requests: batches.length }, "collecting identities");
    let failed: unknown;
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < batches.length) {
        const batch = batches[i++]!;
        try {
          await this.deleteBatch(batch);
          for (const [n] of batch) this.marks?.delete(n);
          this.d.log.info({ identities: formatRanges(batch.map(([n]) => n)), count: batch.length }, "identities collected");
        } catch (e) {
          failed ??= e;
          // Refused outright (4xx): nothing was deleted, the numbers may be handed out again. Otherwise (a timeout, a
          // 5xx) the server may still be deleting them: they stay retired until their delete is seen or a sweep retries.
          if (e instanceof KubeError && e.status >= 400 && e.status < 500) for (const [n, obj] of batch) if (this.d.identities.get(String(n))) this.d.use.restore(n, obj);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.d.concurrency, batches.length) }, worker));
    if (failed !== undefined) throw failed;
  }

  private async deleteBatch(batch: readonly (readonly [number, IdentityObject])[]): Promise<void> {
    if (batch.length === 1 && batch[0]![1].metadata.labels?.[IDENTITY_NUMBER_LABEL] !== String(batch[0]![0])) {
      const [n, obj] = batch[0]!;
      try {
        await this.d.client.delete(resourcePath(IDENTITIES, undefined, String(n)), { uid: obj.metadata.uid, resourceVersion: obj.metadata.resourceVersion });
      } catch (e) {
        if (!isNotFound(e) && !isConflict(e)) throw e;
        // Changed since our cache saw it: its informer event brings it back to a sweep.
        if (isConflict(e)) this.d.use.restore(n, obj);
      }
      return;
    }
    const selector = `${IDENTITY_NUMBER_LABEL} in (${batch.map(([n]) => n).join(",")})`;
    await this.d.client.request("DELETE", `${resourcePath(IDENTITIES)}?labelSelector=${encodeURIComponent(selector)}`, undefined, "application/json", BATCH_TIMEOUT_MS);
  }

  private configMapPath(): string {
    return resourcePath(CONFIG_MAPS, this.d.marks.namespace, this.d.marks.name);
  }

  /** The stored marks; none when the ConfigMap does not exist, or when it cannot be read as marks (GC is then postponed by one grace period, never hastened). */
  private async readMarks(): Promise<UnusedMarks> {
    let cm: KubeObject & { data?: Record<string, string> };
    try {
      cm = await this.d.client.get(this.configMapPath());
    } catch (e) {
      if (isNotFound(e)) return new Map();
      throw e;
    }
    const text = cm.data?.[MARKS_KEY] ?? "";
    this.stored = { text, resourceVersion: cm.metadata.resourceVersion };
    const parsed = parseUnusedMarks(text);
    if (!parsed.ok) {
      this.d.log.warn({ namespace: this.d.marks.namespace, name: this.d.marks.name, errors: parsed.errors.slice(0, 5) }, "identity GC marks unreadable; marking afresh");
      return new Map();
    }
    this.d.log.info({ namespace: this.d.marks.namespace, name: this.d.marks.name, marks: parsed.value.size }, "identity GC marks read");
    return parsed.value;
  }

  private async writeMarks(marks: UnusedMarks): Promise<void> {
    const text = formatUnusedMarks(marks);
    if (text === this.stored.text) return;
    const { namespace, name } = this.d.marks;
    const body = (resourceVersion?: string): unknown => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { namespace, name, ...(resourceVersion ? { resourceVersion } : {}) }, data: { [MARKS_KEY]: text } });
    let written: KubeObject;
    try {
      written =
        this.stored.resourceVersion === undefined
          ? await this.d.client.create(resourcePath(CONFIG_MAPS, namespace), body())
          : await this.d.client.replace(this.configMapPath(), body(this.stored.resourceVersion));
    } catch (e) {
      if (!isConflict(e) && !isNotFound(e)) throw e;
      // Written meanwhile by another operator (a leader before us) or gone: ours is the current view, written over it once.
      const cur = await this.d.client.get<KubeObject>(this.configMapPath()).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
      written = cur ? await this.d.client.replace(this.configMapPath(), body(cur.metadata.resourceVersion)) : await this.d.client.create(resourcePath(CONFIG_MAPS, namespace), body());
    }
    this.stored = { text, resourceVersion: written.metadata.resourceVersion };
  }
}
