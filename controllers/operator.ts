// Assembles the operator: shared informers, one controller per reconciler, leader election, health
// and metrics endpoints, and an orderly shutdown (stop taking work, finish in-flight reconciles,
// stop watches, release the lease).
import type { Logger } from "pino";
import { Controller } from "./runtime/controller.ts";
import { EventRecorder } from "./runtime/events.ts";
import { InformerSet } from "./runtime/informers.ts";
import { KubeClient, type KubeObject } from "./runtime/kube.ts";
import { DEFAULT_LEASE_TIMING, LeaderElector } from "./runtime/leader.ts";
import { OperatorMetrics } from "./runtime/metrics.ts";
import { HealthServer } from "./runtime/server.ts";
import { CCNPS, CILIUM_NODES, CNPS, IDENTITIES, NAMESPACES, NETWORK_POLICIES, NODES, PODS } from "./runtime/resources.ts";
import { IdentityReconciler, type IdentityObject, type PodObject } from "./identity.ts";
import { policyReconciler, type PolicyObject } from "./policy.ts";
import { selectEndpoints } from "./selection.ts";
import { type Informer, keyOf } from "./runtime/informer.ts";
import { NodeReconciler, type CiliumNodeObject, type NodeObject } from "./node.ts";
import { PodCIDRPool } from "./cidrpool.ts";
import { readFileSync } from "node:fs";
import { DistributionServer } from "./distribution/server.ts";
import { NodeStateSource } from "./distribution/source.ts";
import type { Reconciler } from "./runtime/controller.ts";

export const ALL_CONTROLLERS = ["identity", "policy", "node"] as const;
export type ControllerName = (typeof ALL_CONTROLLERS)[number];

export interface OperatorConfig {
  kubeconfig?: string;
  healthPort: number;
  leaderElect: boolean;
  leaseNamespace: string;
  leaseName: string;
  id: string;
  identityGcGraceMs: number;
  clusterName: string;
  podCidrPool: string;
  nodeCidrMaskSize: number;
  controllers: Set<ControllerName>;
  /** The agent stream (gRPC, mutual TLS); off when undefined. */
  distribution?: { port: number; caFile: string; certFile: string; keyFile: string };
  /** Test hook: shorter lease timings. */
  leaseTiming?: { leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
}

export class Operator {
  readonly metrics = new OperatorMetrics();
  private client: KubeClient | undefined;
  private informers: InformerSet | undefined;
  private controllers: Controller[] = [];
  private elector: LeaderElector | undefined;
  private server: HealthServer | undefined;
  private distribution: DistributionServer | undefined;
  private leading = false;
  private running = false;
  private stopped: Promise<void> | undefined;
  private wake: ((outcome: "lost" | "stopped") => void) | undefined;

  constructor(
    private readonly config: OperatorConfig,
    private readonly log: Logger,
  ) {}

  /** Serves health endpoints, waits for leadership, runs the controllers; resolves when stopped or leadership is lost. */
  async run(): Promise<"lost" | "stopped"> {
    this.client = await KubeClient.fromKubeconfig(this.config.kubeconfig);
    this.server = new HealthServer(this.metrics.registry, () => !this.leading || (this.running && (this.informers?.synced ?? false)));
    const port = await this.server.listen(this.config.healthPort);
    this.log.info({ port }, "health and metrics endpoints listening");
    const done = new Promise<"lost" | "stopped">((resolve) => (this.wake = resolve));
    if (!this.config.leaderElect) {
      await this.startLeading();
      return done;
    }
    this.elector = new LeaderElector(
      this.client,
      { namespace: this.config.leaseNamespace, name: this.config.leaseName, identity: this.config.id, ...(this.config.leaseTiming ?? DEFAULT_LEASE_TIMING) },
      this.log,
    );
    void this.elector
      .run(() => {
        this.startLeading().catch((e: unknown) => {
          this.log.error({ err: e instanceof Error ? e.message : String(e) }, "could not start controllers");
          this.wake?.("lost");
        });
      })
      .then((outcome) => this.wake?.(outcome));
    return done;
  }

  private async startLeading(): Promise<void> {
    this.leading = true;
    this.metrics.leader.set(1);
    const client = this.client as KubeClient;
    const informers = (this.informers = new InformerSet(client, this.log));
    const events = new EventRecorder(client, "membrane-operator", this.log);
    const on = this.config.controllers;
    const pods = informers.for<PodObject>(PODS);
    const namespaces = informers.for<KubeObject>(NAMESPACES);
    let identity: IdentityReconciler | undefined;
    const dist = await this.startDistribution(informers, pods);

    if (on.has("identity")) {
      const identities = informers.for<IdentityObject>(IDENTITIES);
      identity = new IdentityReconciler({
        client,
        pods,
        namespaces,
        identities,
        metrics: this.metrics,
        log: this.log,
        clusterName: this.config.clusterName,
        gcGraceMs: this.config.identityGcGraceMs,
      });
      const c = new Controller(identity, this.log, this.metrics, { workers: 4 });
      c.watch(pods, identity.podKeys).watch(namespaces, identity.namespaceKeys).watch(identities, identity.identityKeys);
      const r = identity;
      r.requeue = (key) => c.enqueue(key);
      c.beforeStart(() => {
        r.init();
        for (const obj of identities.list()) c.enqueue(`id/${obj.metadata.name}`);
      });
      this.controllers.push(c);
    }
    if (on.has("policy")) {
      const nodes = informers.for<KubeObject>(NODES);
      for (const resource of [CNPS, CCNPS, NETWORK_POLICIES]) {
        const policies = informers.for<PolicyObject>(resource);
        const id = identity;
        const reconciler = policyReconciler({
          client,
          resource,
          policies,
          nodes,
          events,
          metrics: this.metrics,
          log: this.log,
          select: id ? (ps) => selectEndpoints(ps, id.endpoints()) : undefined,
          enforcement: dist ? (obj, concerned) => dist.source.enforcement(obj, concerned, dist.server.reports()) : undefined,
        });
        const c = new Controller(reconciler, this.log, this.metrics, { workers: 2 });
        c.watch(policies);
        // Node count changes move "n/m nodes"; pod churn moves the selected count.
        const all = (): string[] => policies.list().map(keyOf);
        c.watch(nodes, (ev) => (ev.type === "update" ? [] : all()));
        if (id) c.watch(pods, (ev) => (ev.type === "update" && sameLabels(ev.obj, ev.old) && ev.obj.spec?.nodeName === ev.old.spec?.nodeName ? [] : all()));
        this.controllers.push(c);
        dist?.server.onReport(() => {
          for (const k of all()) c.enqueue(k);
        });
      }
    }
    if (on.has("node")) {
      const nodes = informers.for<NodeObject>(NODES);
      const ciliumNodes = informers.for<CiliumNodeObject>(CILIUM_NODES);
      const r = new NodeReconciler({ client, nodes, ciliumNodes, pool: new PodCIDRPool(this.config.podCidrPool, this.config.nodeCidrMaskSize), log: this.log });
      const c = new Controller(r, this.log, this.metrics, { workers: 1 });
      c.watch(nodes).watch(ciliumNodes).beforeStart(() => r.init());
      this.controllers.push(c);
    }
    informers.start();
    // In order: the identity controller's index is built before the policy controllers count endpoints.
    for (const c of this.controllers) await c.start();
    this.running = true;
    this.log.info({ controllers: [...on] }, "operator running");
  }

  /**
   * The agent stream: a NodeStateSource kept current from the informers, and a controller keyed by
   * node name that publishes each node's desired state (bursts of changes coalesce in its queue).
   */
  private async startDistribution(
    informers: InformerSet,
    pods: Informer<PodObject>,
  ): Promise<{ server: DistributionServer; source: NodeStateSource } | undefined> {
    const cfg = this.config.distribution;
    if (!cfg) return undefined;
    const server = (this.distribution = new DistributionServer(
      { ca: readFileSync(cfg.caFile), cert: readFileSync(cfg.certFile), key: readFileSync(cfg.keyFile) },
      this.log,
    ));
    const port = await server.listen(cfg.port);
    this.log.info({ port }, "distribution stream listening");
    const nodes = informers.for<NodeObject>(NODES);
    const source = new NodeStateSource(pods, nodes);
    const identities = informers.for<IdentityObject>(IDENTITIES);
    identities.on(source.onIdentity);
    const reconciler: Reconciler = {
      name: "distribution",
      reconcile: async (node) => {
        if (!nodes.get(node)) server.forget(node);
        else server.publish(node, source.stateFor(node));
      },
    };
    const c = new Controller(reconciler, this.log, this.metrics, { workers: 2 });
    const allNodes = (): string[] => nodes.list().map((n) => n.metadata.name);
    c.watch(nodes, (ev) => (ev.type === "update" ? [ev.obj.metadata.name] : [ev.obj.metadata.name, ...allNodes()]));
    c.watch(identities, allNodes);
    c.watch(pods, allNodes);
    for (const resource of [CNPS, CCNPS, NETWORK_POLICIES]) {
      const policies = informers.for<PolicyObject>(resource);
      policies.on(source.onPolicy);
      c.watch(policies, allNodes);
    }
    this.controllers.push(c);
    return { server, source };
  }

  /** Idempotent: stops controllers (in-flight reconciles finish), informers, the lease and the server. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await Promise.all(this.controllers.map((c) => c.stop()));
      await this.informers?.stop();
      await this.distribution?.close();
      await this.elector?.stop();
      this.leading = false;
      this.metrics.leader.set(0);
      await this.server?.close();
      this.client?.close();
      this.wake?.("stopped");
      this.log.info("operator stopped");
    })();
    return this.stopped;
  }
}

function sameLabels(a: KubeObject, b: KubeObject): boolean {
  return JSON.stringify(a.metadata.labels ?? {}) === JSON.stringify(b.metadata.labels ?? {});
}
