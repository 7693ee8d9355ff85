// Leader election with a coordination.k8s.io/v1 Lease, as client-go does it: try to acquire or renew
// every retry period; a lease is free when its holder has not renewed it for leaseDuration as seen
// by our own clock (no cross-host clock comparison); a leader that cannot renew within the renew
// deadline steps down. Ours on top: a standby also watches the Lease and tries at once when it is
// released, deleted or expires, rather than at its next try (client-go's standby waits for its poll).
import type { Logger } from "pino";
import { sleep } from "./backoff.ts";
import { type KubeClient, isConflict, isNotFound } from "./kube.ts";
import { Informer, type InformerEvent, errMessage } from "./informer.ts";
import { LEASES } from "./resources.ts";

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number;
}

/** A Lease's owner: the garbage collector deletes the Lease once the owner is gone (a kubelet's node Lease is its Node's). */
export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
}

export interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: { name: string; namespace: string; resourceVersion?: string; ownerReferences?: OwnerReference[] };
  spec: LeaseSpec;
}

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs: number; // 15 s
  readonly renewDeadlineMs: number; // 10 s
  readonly retryPeriodMs: number; // 2 s
}

export const DEFAULT_LEASE_TIMING = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 } as const;

/** MicroTime as the API wants it (RFC 3339 with microseconds). */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Why a standby tries the Lease before its next poll. */
type FreeReason = "released" | "deleted" | "expired";

/** What a lease record's holder last wrote: a change of any of these is a renewal (or a new holder) observed. */
interface ObservedRecord {
  readonly holder: string;
  readonly renewTime: string;
  readonly durationSeconds: number | undefined;
  /** When we saw this record first, on our own clock. */
  readonly at: number;
}

export class LeaderElector {
  private readonly abort = new AbortController();
  private observed: ObservedRecord | undefined;
  private leading = false;
  /** The Lease as the API server returned it after our last acquire or renew: what a release updates. */
  private held: Lease | undefined;
  /** The acquire or renew in flight, if any. */
  private trying: Promise<boolean> | undefined;
  /** While standing by: the watch of our Lease, the timer for its expiry, and how to cut the wait for the next try short. */
  private standby: { readonly watch: Informer<Lease>; expiry?: NodeJS.Timeout; wake?: () => void; woken?: FreeReason } | undefined;
  /**
   * For tests and metrics: the standby's tries that did not win, its waits for the next try ended by the poll timer and
   * by the watch (a release, a deletion or an expiry seen), and the Lease events the watch delivered (renewals among them).
   */
  readonly stats = { tries: 0, polls: 0, wakes: 0, leaseEvents: 0 };

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
    private readonly log: Logger,
  ) {}

  /** A hung request must not outlive the renew deadline (client-go bounds it the same way). */
  private get timeoutMs(): number {
    return Math.max(1000, Math.floor(this.opts.renewDeadlineMs / 2));
  }

  get isLeader(): boolean {
    return this.leading;
  }

  private get leaseKey(): string {
    return `${this.opts.namespace}/${this.opts.name}`;
  }

  private path(name?: string): string {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.opts.namespace)}/leases`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  /**
   * Blocks until this replica leads, calls `onStartedLeading`, then keeps renewing; resolves with
   * "lost" when a renewal did not succeed within the renew deadline, or "stopped" after stop().
   */
  async run(onStartedLeading: () => void): Promise<"lost" | "stopped"> {
    const signal = this.abort.signal;
    this.standBy();
    while (!signal.aborted && !this.leading) {
      if (await this.tryAcquireOrRenew()) {
        // Acquired while stop() ran: stop() releases it; this replica never starts leading.
        if (signal.aborted) break;
        this.leading = true;
        this.stopStandingBy();
        this.log.info({ lease: this.leaseKey, identity: this.opts.identity }, "became leader");
        onStartedLeading();
        break;
      }
      this.stats.tries++;
      await this.untilNextTry(signal);
    }
    this.stopStandingBy();
    let lastRenew = Date.now();
    while (!signal.aborted) {
      await sleep(this.opts.retryPeriodMs, signal);
      if (signal.aborted) break;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > this.opts.renewDeadlineMs) {
        this.leading = false;
        this.log.error({ lease: this.leaseKey, identity: this.opts.identity }, "lost leadership: lease not renewed within the renew deadline");
        return "lost";
      }
    }
    return "stopped";
  }

  /**
   * The poll stays (a watch can be silent: a dropped connection noticed late, RBAC without `watch`); the watch of the
   * one Lease (a field selector on its name, which a Role limited to that name allows) only ends the wait early.
   */
  private standBy(): void {
    const watch = new Informer<Lease>(this.client, LEASES, this.log, { namespace: this.opts.namespace, fieldSelector: `metadata.name=${this.opts.name}` });
    this.standby = { watch };
    watch.on((ev) => this.onLeaseEvent(ev));
    watch.start();
  }

  /** Not awaited: a list in flight ends with its request (the shutdown closes the client), and leading must not wait for it. */
  private stopStandingBy(): void {
    const s = this.standby;
    if (!s) return;
    this.standby = undefined;
    clearTimeout(s.expiry);
    void s.watch.stop();
  }

  /**
   * A renewal by the holder only moves the expiry timer: standbys never write on the leader's renewals. A release, a
   * deletion or an expiry (the record unchanged for its duration on our clock, as a try would judge it) wakes the loop.
   */
  private onLeaseEvent(ev: InformerEvent<Lease>): void {
    const s = this.standby;
    if (!s || this.leading) return;
    this.stats.leaseEvents++;
    clearTimeout(s.expiry);
    if (ev.type === "delete") return this.wake("deleted");
    const holder = ev.obj.spec.holderIdentity ?? "";
    const expiresAt = this.observe(ev.obj.spec);
    if (holder === "") return this.wake("released");
    if (holder === this.opts.identity) return;
    // Node's timers may fire a millisecond early: the try that follows must find the lease expired.
    s.expiry = setTimeout(() => this.wake("expired"), Math.max(0, expiresAt - Date.now()) + 10);
    s.expiry.unref();
  }

  private wake(reason: FreeReason): void {
    const s = this.standby;
    if (!s) return;
    s.woken = reason;
    s.wake?.();
  }

  /** Sleeps a jittered retry period, or less when the watch saw the lease free (also while the last try was in flight). */
  private async untilNextTry(signal: AbortSignal): Promise<void> {
    const s = this.standby;
    if (s?.woken === undefined) {
      const woken = new AbortController();
      if (s) s.wake = () => woken.abort();
      await sleep(this.opts.retryPeriodMs * (1 + 0.2 * Math.random()), AbortSignal.any([signal, woken.signal]));
      if (s) s.wake = undefined;
    }
    if (signal.aborted) return;
    const reason = s?.woken;
    if (s) s.woken = undefined;
    if (reason === undefined) {
      this.stats.polls++;
      return;
    }
    this.stats.wakes++;
    this.log.info({ lease: this.leaseKey, reason }, "lease free: trying at once");
  }

  /**
   * The record's expiry on our clock: `leaseDurationSeconds` after we first saw this record (client-go's
   * observedTime), so holders' clocks never matter.
   */
  private observe(spec: LeaseSpec): number {
    const holder = spec.holderIdentity ?? "";
    const renewTime = spec.renewTime ?? "";
    const durationSeconds = spec.leaseDurationSeconds;
    const o = this.observed;
    if (o?.holder !== holder || o.renewTime !== renewTime || o.durationSeconds !== durationSeconds) {
      this.observed = { holder, renewTime, durationSeconds, at: Date.now() };
    }
    return (this.observed?.at ?? Date.now()) + (durationSeconds ?? Math.round(this.opts.leaseDurationMs / 1000)) * 1000;
  }

  /**
   * Stops the loop and, if we hold the lease, releases it so a standby takes over at once. Best effort, as
   * client-go's ReleaseOnCancel: one update of the Lease as our last write left it (its resourceVersion), after the
   * try in flight has answered, bounded by `timeoutMs` in all, so an unreachable API server delays a shutdown by at
   * most that (the lease then expires on its own). Usually one request, not a read and a write: on a loaded node the
   * release must fit its shutdown step, else the standby waits out the Lease. Only when it conflicts is the Lease read:
   * still ours (a renewal whose answer we did not wait for), it is released; someone else's, it is left alone.
   */
  async stop(timeoutMs = this.timeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    this.abort.abort();
    this.stopStandingBy();
    this.leading = false;
    // A try in flight may already be written (a renewal, or a standby's acquire): its answer carries the resourceVersion a
    // release must name. Waited for half the budget at most (nothing more is written after the abort); a release that then
    // conflicts re-reads the Lease.
    if (this.trying) await Promise.race([this.trying, sleep(timeoutMs / 2)]);
    const held = this.held;
    this.held = undefined;
    if (!held) return;
    try {
      try {
        await this.release(held, deadline);
      } catch (e) {
        if (!isConflict(e)) throw e;
        // Changed since our last renewal: ours to release only if we still hold it (our own renewal landed after its answer was lost).
        const now = await this.client.request<Lease>("GET", this.path(this.opts.name), undefined, undefined, Math.max(1, deadline - Date.now()));
        if (now.spec.holderIdentity !== this.opts.identity) {
          this.log.info({ lease: this.leaseKey, holder: now.spec.holderIdentity ?? "" }, "lease changed since our last renewal: not released");
          return;
        }
        await this.release(now, deadline);
      }
      this.log.info({ lease: this.leaseKey }, "released leadership");
    } catch (e) {
      if (isConflict(e)) this.log.info({ lease: this.leaseKey }, "lease changed since our last renewal: not released");
      else this.log.warn({ err: errMessage(e) }, "could not release the lease");
    }
  }

  /** One update of the Lease as `held` shows it: no holder, and a duration of 1 s for a standby that reads it before our deadline. */
  private async release(held: Lease, deadline: number): Promise<void> {
    const released: Lease = { ...held, spec: { ...held.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(new Date()) } };
    await this.client.request("PUT", this.path(this.opts.name), released, undefined, Math.max(1, deadline - Date.now()));
  }

  /** Tracks the try in flight, so that stop() releases the Lease as that try left it. */
  private tryAcquireOrRenew(): Promise<boolean> {
    const t = this.tryOnce().finally(() => {
      if (this.trying === t) this.trying = undefined;
    });
    this.trying = t;
    return t;
  }

  private async tryOnce(): Promise<boolean> {
    const now = new Date();
    const durationSeconds = Math.round(this.opts.leaseDurationMs / 1000);
    try {
      let lease: Lease;
      try {
        lease = await this.client.request<Lease>("GET", this.path(this.opts.name), undefined, undefined, this.timeoutMs);
      } catch (e) {
        if (!isNotFound(e)) throw e;
        if (this.abort.signal.aborted) return false;
        this.held = await this.client.request<Lease>("POST", this.path(), {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: this.opts.name, namespace: this.opts.namespace },
          spec: { holderIdentity: this.opts.identity, leaseDurationSeconds: durationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        } satisfies Lease, undefined, this.timeoutMs);
        return true;
      }
      // Stopped while reading: a write now could take back a Lease stop() has just released.
      if (this.abort.signal.aborted) return false;
      const expiresAt = this.observe(lease.spec);
      const holder = lease.spec.holderIdentity ?? "";
      const held = holder !== "" && holder !== this.opts.identity;
      if (held && Date.now() < expiresAt) return false;
      const mine = holder === this.opts.identity;
      lease.spec = {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: mine ? (lease.spec.acquireTime ?? microTime(now)) : microTime(now),
        renewTime: microTime(now),
        leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
      };
      // PUT with the resourceVersion we read: a concurrent writer makes this fail with 409.
      this.held = await this.client.request<Lease>("PUT", this.path(this.opts.name), lease, undefined, this.timeoutMs);
      return true;
    } catch (e) {
      if (!isConflict(e)) this.log.warn({ err: errMessage(e) }, "lease acquire/renew failed");
      return false;
    }
  }
}
