// A shared informer: list + watch of one resource into a local cache, with add/update/delete
// handlers. It heals itself: a watch error, a dropped connection or 410 Gone leads (after a backoff
// delay, never a tight loop) to a relist whose differences against the cache are delivered as events,
// so no change is lost while the connection was down.
import type { Logger } from "pino";
import { Backoff, type BackoffOptions, sleep } from "./backoff.ts";
import { type KubeClient, type KubeObject, type ObjectList, type Resource, resourcePath, isGone } from "./kube.ts";

export type InformerEvent<T> =
  | { readonly type: "add"; readonly obj: T }
  | { readonly type: "update"; readonly obj: T; readonly old: T }
  | { readonly type: "delete"; readonly obj: T };

export type Handler<T> = (ev: InformerEvent<T>) => void;

/** The cache key of an object: "namespace/name", or "name" for cluster-scoped ones. */
export function keyOf(obj: KubeObject): string {
  return obj.metadata.namespace ? `${obj.metadata.namespace}/${obj.metadata.name}` : obj.metadata.name;
}

export function splitKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf("/");
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export interface InformerOptions {
  readonly backoff?: BackoffOptions;
  /** Server-side watch timeout; jittered by up to 20% so that watches do not all end together. */
  readonly watchTimeoutSeconds?: number;
  readonly pageSize?: number;
  /** Only the objects matching this field selector (e.g. `spec.nodeName=n1`), in the list and the watch. */
  readonly fieldSelector?: string;
  /** Only this namespace's objects of a namespaced resource: the list and the watch ask for nothing outside it (a Role there suffices). */
  readonly namespace?: string;
}

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: Handler<T>[] = [];
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private synced = false;
  private syncWaiters: (() => void)[] = [];
  private readonly backoff: Backoff;
  /** Counts relists and watch restarts, for tests and metrics. */
  readonly stats = { lists: 0, watches: 0, errors: 0 };

  constructor(
    private readonly client: KubeClient,
    readonly resource: Resource,
    private readonly log: Logger,
    private readonly opts: InformerOptions = {},
  ) {
    this.backoff = new Backoff(opts.backoff ?? { baseMs: 200, maxMs: 30_000, jitter: 0.2 });
  }

  on(handler: Handler<T>): void {
    this.handlers.push(handler);
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  /** The number of cached objects (without copying them, as list() does). */
  get size(): number {
    return this.cache.size;
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  private emit(ev: InformerEvent<T>): void {
    for (const h of this.handlers) {
      try {
        h(ev);
      } catch (e) {
        this.log.error({ err: e, resource: this.resource.plural }, "informer handler threw");
      }
    }
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let rv: string;
      try {
        rv = await this.relist();
      } catch (e) {
        this.stats.errors++;
        const delay = this.backoff.next();
        this.log.warn({ resource: this.resource.plural, err: errMessage(e), retryInMs: delay }, "list failed");
        await sleep(delay, signal);
        continue;
      }
      // Watch from the list's resourceVersion until an error; a normal server-side end re-watches.
      for (;;) {
        if (signal.aborted) return;
        const started = Date.now();
        try {
          this.stats.watches++;
          await this.client.watch<T>(
            resourcePath(this.resource, this.opts.namespace),
            {
              resourceVersion: rv,
              timeoutSeconds: Math.round((this.opts.watchTimeoutSeconds ?? 300) * (1 + 0.2 * Math.random())),
              inactivityMs: ((this.opts.watchTimeoutSeconds ?? 300) * 1.2 + 60) * 1000,
              signal,
              ...(this.opts.fieldSelector ? { fieldSelector: this.opts.fieldSelector } : {}),
            },
            (ev) => {
              rv = ev.object.metadata.resourceVersion ?? rv;
              this.apply(ev.type, ev.object);
            },
          );
          if (Date.now() - started > 1000) this.backoff.reset();
        } catch (e) {
          this.stats.errors++;
          const delay = this.backoff.next();
          this.log.warn(
            { resource: this.resource.plural, err: errMessage(e), gone: isGone(e), retryInMs: delay },
            isGone(e) ? "watch expired (410 Gone), relisting" : "watch failed, relisting",
          );
          await sleep(delay, signal);
          break;
        }
      }
    }
  }

  /** Lists every page, replaces the cache and emits the differences; returns the list's resourceVersion. */
  private async relist(): Promise<string> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv = "";
    do {
      const q = new URLSearchParams({ limit: String(this.opts.pageSize ?? 500) });
      if (cont) q.set("continue", cont);
      if (this.opts.fieldSelector) q.set("fieldSelector", this.opts.fieldSelector);
      const page = await this.client.get<ObjectList<T>>(`${resourcePath(this.resource, this.opts.namespace)}?${q}`);
      items.push(...page.items);
      rv = page.metadata.resourceVersion ?? rv;
      cont = page.metadata.continue || undefined;
    } while (cont);
    this.stats.lists++;
    const seen = new Set<string>();
    for (const item of items) {
      // Lists omit apiVersion/kind on items; handlers and writers want them.
      item.apiVersion ??= this.resource.group === "" ? this.resource.version : `${this.resource.group}/${this.resource.version}`;
      item.kind ??= this.resource.kind;
      const key = keyOf(item);
      seen.add(key);
      this.apply("ADDED", item);
    }
    for (const [key, old] of [...this.cache]) if (!seen.has(key)) this.apply("DELETED", old);
    this.log.debug({ resource: this.resource.plural, count: items.length, resourceVersion: rv }, "listed");
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
    return rv;
  }

  private apply(type: string, obj: T): void {
    if (type === "BOOKMARK") return;
    const key = keyOf(obj);
    const old = this.cache.get(key);
    if (type === "DELETED") {
      if (!old) return;
      this.cache.delete(key);
      this.emit({ type: "delete", obj });
      return;
    }
    obj.apiVersion ??= this.resource.group === "" ? this.resource.version : `${this.resource.group}/${this.resource.version}`;
    obj.kind ??= this.resource.kind;
    // No reader of the cache looks at who manages which field, and they are a large part of each object's
    // heap (client-go's TransformStripManagedFields); a write without them leaves the server's as they are.
    // Set to undefined, not deleted: a delete turns every cached metadata object into a slower, larger dictionary.
    if (obj.metadata.managedFields !== undefined) obj.metadata.managedFields = undefined;
    this.cache.set(key, obj);
    if (!old) this.emit({ type: "add", obj });
    else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) this.emit({ type: "update", obj, old });
  }
}

export function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
