// Leader election with a coordination.k8s.io/v1 Lease, as client-go does it: try to acquire or renew
// every retry period; a lease is free when its holder has not renewed it for leaseDuration as seen
// by our own clock (no cross-host clock comparison); a leader that cannot renew within the renew
// deadline steps down.
import type { Logger } from "pino";
import { sleep } from "./backoff.ts";
import { type KubeClient, isConflict, isNotFound } from "./kube.ts";
import { errMessage } from "./informer.ts";

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number;
}

export interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: { name: string; namespace: string; resourceVersion?: string };
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

export class LeaderElector {
  private readonly abort = new AbortController();
  private observed: { record: string; at: number } | undefined;
  private leading = false;
  /** The Lease as the API server returned it after our last acquire or renew: what a release updates. */
  private held: Lease | undefined;

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
    while (!signal.aborted && !this.leading) {
      if (await this.tryAcquireOrRenew()) {
        this.leading = true;
        this.log.info({ lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity }, "became leader");
        onStartedLeading();
        break;
      }
      await sleep(this.opts.retryPeriodMs * (1 + 0.2 * Math.random()), signal);
    }
    let lastRenew = Date.now();
    while (!signal.aborted) {
      await sleep(this.opts.retryPeriodMs, signal);
      if (signal.aborted) break;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > this.opts.renewDeadlineMs) {
        this.leading = false;
        this.log.error({ lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity }, "lost leadership: lease not renewed within the renew deadline");
        return "lost";
      }
    }
    return "stopped";
  }

  /**
   * Stops the loop and, if leading, releases the lease so a standby takes over at once. Best effort, as
   * client-go's ReleaseOnCancel: one update of the Lease as our last renewal left it (its resourceVersion: a
   * Lease someone else changed since is not ours to release), bounded by `timeoutMs`, so an unreachable API
   * server delays a shutdown by at most that (the lease then expires on its own). One request, not a read
   * and a write: on a loaded node the release must fit its shutdown step, else the standby waits out the Lease.
   */
  async stop(timeoutMs = this.timeoutMs): Promise<void> {
    this.abort.abort();
    if (!this.leading) return;
    this.leading = false;
    const held = this.held;
    if (!held) return;
    try {
      const released: Lease = { ...held, spec: { ...held.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(new Date()) } };
      await this.client.request("PUT", this.path(this.opts.name), released, undefined, timeoutMs);
      this.log.info({ lease: `${this.opts.namespace}/${this.opts.name}` }, "released leadership");
    } catch (e) {
      if (isConflict(e)) this.log.info({ lease: `${this.opts.namespace}/${this.opts.name}` }, "lease changed since our last renewal: not released");
      else this.log.warn({ err: errMessage(e) }, "could not release the lease");
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const durationSeconds = Math.round(this.opts.leaseDurationMs / 1000);
    try {
      let lease: Lease;
      try {
        lease = await this.client.request<Lease>("GET", this.path(this.opts.name), undefined, undefined, this.timeoutMs);
      } catch (e) {
        if (!isNotFound(e)) throw e;
        this.held = await this.client.request<Lease>("POST", this.path(), {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: this.opts.name, namespace: this.opts.namespace },
          spec: { holderIdentity: this.opts.identity, leaseDurationSeconds: durationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        } satisfies Lease, undefined, this.timeoutMs);
        return true;
      }
      const record = JSON.stringify([lease.spec.holderIdentity, lease.spec.renewTime, lease.spec.leaseDurationSeconds]);
      if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
      const holder = lease.spec.holderIdentity ?? "";
      const held = holder !== "" && holder !== this.opts.identity;
      const expiresAt = this.observed.at + (lease.spec.leaseDurationSeconds ?? durationSeconds) * 1000;
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
