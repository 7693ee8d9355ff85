// A liveness heartbeat on a coordination.k8s.io/v1 Lease, as kubelets keep theirs in kube-node-lease: the holder renews it unconditionally (no election), and a reader calls the holder dead once renewTime + duration has passed.
import type { Logger } from "pino";
import { Backoff } from "./backoff.ts";
import { errMessage } from "./informer.ts";
import { type KubeClient, isNotFound, resourcePath } from "./kube.ts";
import { type Lease, type LeaseSpec, type OwnerReference, microTime } from "./leader.ts";
import { LEASES } from "./resources.ts";

/** Where agents keep their heartbeat by default: beside the kubelets' node Leases. */
export const AGENT_LEASE_NAMESPACE = "kube-node-lease";
/** The kubelet's timings: renew every 10 s, count as dead after 40 s without a renewal. */
export const HEARTBEAT_TIMING = { renewMs: 10_000, leaseDurationSeconds: 40 } as const;

/** The agent's Lease for a node: what `membrane status` looks up per CiliumNode. */
export const agentLeaseName = (node: string): string => `membrane-agent-${node}`;

export interface HeartbeatOptions {
  readonly client: Pick<KubeClient, "request">;
  readonly namespace: string;
  readonly name: string;
  /** holderIdentity: who is alive (the node, the operator replica). */
  readonly identity: string;
  readonly log: Logger;
  readonly renewMs?: number;
  readonly leaseDurationSeconds?: number;
  readonly backoff?: { baseMs: number; maxMs: number; jitter: number };
  /**
   * The object the Lease belongs to (an agent's Node), read when the Lease is created and while it has no owner: the
   * garbage collector deletes the Lease with it, as a kubelet's node Lease goes with its Node. Undefined: none (yet).
   */
  readonly owner?: () => Promise<OwnerReference | undefined>;
}

/** Renews one Lease every renewMs; a failure is logged once per distinct error and retried with backoff, never fatal. */
export class LeaseHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private inFlight: Promise<void> | undefined;
  private lastFailure: string | undefined;
  private readonly backoff: Backoff;

  constructor(private readonly o: HeartbeatOptions) {
    this.backoff = new Backoff(o.backoff ?? { baseMs: 1_000, maxMs: o.renewMs ?? HEARTBEAT_TIMING.renewMs, jitter: 0.2 });
  }

  private get path(): string {
    return resourcePath(LEASES, this.o.namespace, this.o.name);
  }

  private get lease(): string {
    return `${this.o.namespace}/${this.o.name}`;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops renewing; the Lease is left to expire, so a reader sees when this holder was last alive. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void (this.inFlight = this.beat()), delayMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    let next = this.o.renewMs ?? HEARTBEAT_TIMING.renewMs;
    try {
      await this.renew();
      if (this.lastFailure !== undefined) this.o.log.info({ lease: this.lease }, "heartbeat Lease renewed again");
      this.lastFailure = undefined;
      this.backoff.reset();
    } catch (e) {
      const error = errMessage(e);
      next = this.backoff.next();
      if (error !== this.lastFailure) this.o.log.warn({ lease: this.lease, error, retryMs: next }, "renewing the heartbeat Lease failed");
      this.lastFailure = error;
    }
    this.schedule(next);
  }

  /** One renewal: create the Lease if missing, else take it over with a fresh renewTime (PUT with the read resourceVersion). */
  private async renew(): Promise<void> {
    const now = microTime(new Date());
    const duration = this.o.leaseDurationSeconds ?? HEARTBEAT_TIMING.leaseDurationSeconds;
    // A hung request must not outlive the interval: the next beat would find it still pending.
    const timeoutMs = Math.max(1_000, this.o.renewMs ?? HEARTBEAT_TIMING.renewMs);
    let lease: Lease;
    try {
      lease = await this.o.client.request<Lease>("GET", this.path, undefined, undefined, timeoutMs);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      const spec: LeaseSpec = { holderIdentity: this.o.identity, leaseDurationSeconds: duration, acquireTime: now, renewTime: now, leaseTransitions: 0 };
      const owner = await this.o.owner?.();
      await this.o.client.request("POST", resourcePath(LEASES, this.o.namespace), {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.o.name, namespace: this.o.namespace, ...(owner ? { ownerReferences: [owner] } : {}) },
        spec,
      } satisfies Lease, undefined, timeoutMs);
      this.o.log.info({ lease: this.lease, identity: this.o.identity }, "heartbeat Lease created");
      return;
    }
    // A Lease made before its owner existed (or by a version without owners) is adopted by it.
    if (this.o.owner && (lease.metadata.ownerReferences ?? []).length === 0) {
      const owner = await this.o.owner();
      if (owner) lease.metadata.ownerReferences = [owner];
    }
    const mine = lease.spec.holderIdentity === this.o.identity;
    lease.spec = {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: duration,
      acquireTime: mine ? (lease.spec.acquireTime ?? now) : now,
      renewTime: now,
      leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    await this.o.client.request("PUT", this.path, lease, undefined, timeoutMs);
  }
}

/** How long ago a Lease's holder was last seen alive, and whether it still counts as alive (with `skewMs` for clocks). */
export function leaseLiveness(spec: LeaseSpec | undefined, now: Date, skewMs: number): { alive: boolean; lastSeenMs?: number } {
  const renew = Date.parse(spec?.renewTime ?? spec?.acquireTime ?? "");
  if (!spec?.holderIdentity || Number.isNaN(renew)) return { alive: false };
  const lastSeenMs = now.getTime() - renew;
  return { alive: lastSeenMs <= (spec.leaseDurationSeconds ?? 0) * 1000 + skewMs, lastSeenMs };
}
