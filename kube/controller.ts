// Runs one reconciler: informer events map to keys, keys go through a work queue, workers call
// `reconcile(key)` (level-triggered: it reads the current state, whatever woke it), failures are
// retried with backoff and `requeueAfter` schedules the next look.
import type { Logger } from "pino";
import type { Informer, InformerEvent } from "./informer.ts";
import { keyOf, errMessage } from "./informer.ts";
import type { KubeObject } from "./kube.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { WorkQueue } from "./workqueue.ts";
import type { BackoffOptions } from "./backoff.ts";

export interface ReconcileResult {
  /** Look at this key again after this many milliseconds (e.g. a grace period ends). */
  readonly requeueAfter?: number;
}

export interface Reconciler {
  /** Names the controller in logs and metrics. */
  readonly name: string;
  /** Makes the world right for `key`. Throwing means "retry with backoff". */
  reconcile(key: string): Promise<ReconcileResult | void>;
}

export interface ControllerOptions {
  readonly workers?: number;
  readonly backoff?: BackoffOptions;
}

/**
 * Whether an event may change what an object's spec compiles to: every add and delete, and an update that raised
 * `metadata.generation` (the API server raises it on spec changes only, so a status write leaves it). An object without
 * a generation counts as changed.
 */
export function generationChanged(ev: InformerEvent<KubeObject>): boolean {
  if (ev.type !== "update") return true;
  const was = ev.old.metadata.generation;
  return was === undefined || was !== ev.obj.metadata.generation;
}

export class Controller {
  readonly queue: WorkQueue;
  private workers: Promise<void>[] = [];
  private readonly informers: Informer<KubeObject>[] = [];
  private depthTimer: NodeJS.Timeout | undefined;
  private readonly beforeStartHooks: (() => void)[] = [];
  private readonly startGates: (() => Promise<unknown>)[] = [];

  constructor(
    private readonly reconciler: Reconciler,
    private readonly log: Logger,
    private readonly metrics: OperatorMetrics,
    private readonly opts: ControllerOptions = {},
  ) {
    this.queue = new WorkQueue(opts.backoff ?? { baseMs: 5, maxMs: 60_000, jitter: 0.2 });
  }

  /**
   * Enqueue the keys `map` returns for each event of `informer` (default: the object's own key). With `coalesceMs`, a key
   * waits that long for the events after it, so a burst of them is one reconcile, not one each.
   */
  watch<T extends KubeObject>(informer: Informer<T>, map: (ev: InformerEvent<T>) => Iterable<string> = (ev) => [keyOf(ev.obj)], opts: { readonly coalesceMs?: number } = {}): this {
    const coalesceMs = opts.coalesceMs ?? 0;
    informer.on((ev) => {
      for (const key of map(ev)) this.queue.addAfter(key, coalesceMs);
    });
    this.informers.push(informer as unknown as Informer<KubeObject>);
    return this;
  }

  /** Runs `hook` once the caches are synced, before the first reconcile (e.g. to build an index). */
  beforeStart(hook: () => void): this {
    this.beforeStartHooks.push(hook);
    return this;
  }

  /** Waits for `gate` as well (once the caches are synced, before the beforeStart hooks): e.g. another controller's first reconcile. */
  startAfter(gate: () => Promise<unknown>): this {
    this.startGates.push(gate);
    return this;
  }

  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Waits for the watched informers' first list, then starts the workers. */
  async start(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.waitForSync()));
    for (const gate of this.startGates) await gate();
    for (const hook of this.beforeStartHooks) hook();
    const n = this.opts.workers ?? 2;
    for (let i = 0; i < n; i++) this.workers.push(this.work());
    this.depthTimer = setInterval(() => this.metrics.queueDepth.set({ controller: this.reconciler.name }, this.queue.depth), 1000);
    this.depthTimer.unref();
    this.log.info({ controller: this.reconciler.name, workers: n }, "controller started");
  }

  /** Stops handing out keys and waits for reconciles in flight to finish. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    if (this.depthTimer) clearInterval(this.depthTimer);
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    const name = this.reconciler.name;
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const end = this.metrics.latency.startTimer({ controller: name });
      try {
        const result = await this.reconciler.reconcile(key);
        this.queue.forget(key);
        if (result?.requeueAfter !== undefined) {
          this.queue.addAfter(key, result.requeueAfter);
          this.metrics.reconciles.inc({ controller: name, result: "requeue" });
        } else {
          this.metrics.reconciles.inc({ controller: name, result: "success" });
        }
      } catch (e) {
        const delay = this.queue.addRateLimited(key);
        this.metrics.reconciles.inc({ controller: name, result: "error" });
        this.metrics.errors.inc({ controller: name });
        this.log.warn({ controller: name, key, err: errMessage(e), retries: this.queue.retries(key), retryInMs: delay }, "reconcile failed");
      } finally {
        end();
        this.queue.done(key);
        this.metrics.queueDepth.set({ controller: name }, this.queue.depth);
      }
    }
  }
}
