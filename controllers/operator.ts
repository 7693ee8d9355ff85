// Assembles the operator: shared informers, one controller per reconciler, leader election, health
// and metrics endpoints, and an orderly shutdown (stop taking work, finish in-flight reconciles,
// stop watches, release the lease).
import type { Logger } from "pino";
import { Controller, generationChanged } from "../kube/controller.ts";
import { EventRecorder } from "../kube/events.ts";
import { InformerSet } from "../kube/informers.ts";
import { KubeClient, type KubeObject } from "../kube/kube.ts";
import { LeaseHeartbeat } from "../kube/heartbeat.ts";
import { DEFAULT_LEASE_TIMING, LeaderElector } from "../kube/leader.ts";
import { OperatorMetrics } from "../kube/metrics.ts";
import { HealthServer } from "../kube/server.ts";
import { shutdownStep } from "../kube/shutdown.ts";
import { CCNPS, CIDR_GROUPS, CILIUM_NODES, CNPS, ENCRYPTION_KEYS, ENDPOINT_SLICES, IDENTITIES, NAMESPACES, NETWORK_POLICIES, NODES, PODS, SECRETS, SERVICES, TRACING_POLICIES, TRACING_POLICIES_NAMESPACED } from "../kube/resources.ts";
import { PolicySecrets, type SecretObject } from "./policy-secrets.ts";
import { IdentityReconciler, podNeedsIdentity } from "./identity.ts";
import { DEFAULT_GC_CONCURRENCY, GC_COALESCE_MS, GC_SWEEP_KEY, IdentityGC } from "./identity-gc.ts";
import { type EndpointSliceObject, type IdentityObject, type PodObject, type ServiceObject } from "../kube/objects.ts";
import { policyReconciler, type PolicyObject } from "./policy.ts";
import { type Endpoint, EndpointIndex, type HostEndpoint, selectEndpoints } from "./selection.ts";
import { nodeHostLabels } from "../core/host-endpoint.ts";
import { SelectingPolicies } from "./selecting-policies.ts";
import { type Informer, keyOf } from "../kube/informer.ts";
import { NodeReconciler, type CiliumNodeObject, type IpamMode, type NodeObject } from "./node.ts";
import { PodCIDRPool } from "./cidrpool.ts";
import { bundledCRDs, registerCRDs } from "./crds.ts";
import { type EncryptionKeyObject, type EncryptionNodeObject, encryptionKeyReconciler } from "./encryption-key.ts";
import { type TracingPolicyObject, tracingPolicyReconciler } from "./tracing.ts";
import { readFileSync } from "node:fs";
import { type AgentAuthenticator, DistributionServer, nodeStreamState } from "./distribution/server.ts";
import { TokenAuthenticator } from "./distribution/tokenauth.ts";
import { type Affected, NodeStateSource, SOURCE_KINDS, type SourceKind } from "./distribution/source.ts";
import { ParsedPolicies } from "./parsed-policies.ts";
import { ReconnectGrace } from "./reconnect-grace.ts";
import { CIDRGroups } from "./cidr-groups.ts";
import type { ParseOptions } from "../core/parser/index.ts";
import type { Reconciler } from "../kube/controller.ts";

/** How long policy status waits to take in a burst of agent reports. */
const REPORT_COALESCE_MS = 100;
/** How long a policy's status waits to take in a burst of pod changes of the label sets it selects. */
const POD_COALESCE_MS = 100;
/**
 * Pod reconciles of the identity controller in flight at once. Each is one or two writes (the CiliumIdentity
 * of a new label set, the pod's annotation) and waits on the API server, not the operator: with 4, a loaded
 * API server (1.3 s a reconcile, bench/scale) gave 3 pods a second their identity while the operator idled.
 */
export const IDENTITY_WORKERS = 32;
/**
 * How long the distribution waits after an identity event for the ones after it: every new identity is a peer
 * of many subjects, and one compile and publish per burst costs what one per identity did.
 */
export const IDENTITY_PUBLISH_COALESCE_MS = 200;
/** How long the distribution's first compile waits for the identity GC's first marks at most. */
const FIRST_MARKS_WAIT_MS = 5000;
/** How long the distribution's first compile runs before it gives the event loop a turn (the GC's deletes, informer events). */
const FIRST_COMPILE_SLICE_MS = 20;

/**
 * The agent reconnect grace's default. An agent retries the stream at most every 10 s (+20 % jitter: node-agent/agent.ts), and
 * the grace starts once the first states are compiled (18 s at bench/scale's full size at load ~13), so every agent that is
 * up has answered long before; one that has not by then counts as not enforcing.
 */
export const DEFAULT_AGENT_RECONNECT_GRACE_MS = 60_000;

/** The controllers that run by default. */
export const ALL_CONTROLLERS = ["identity", "policy", "node"] as const;
/**
 * Controllers run only when named in --controllers: encryption-key needs the MembraneEncryptionKey CRD and a
 * Secret (the chart names it when encryption is on); tracing needs the TracingPolicy CRDs (the chart names it).
 */
export const OPTIONAL_CONTROLLERS = ["encryption-key", "tracing"] as const;
export type ControllerName = (typeof ALL_CONTROLLERS)[number] | (typeof OPTIONAL_CONTROLLERS)[number];

export interface OperatorConfig {
  kubeconfig?: string;
  healthPort: number;
  leaderElect: boolean;
  /** Create missing CRDs and upgrade Membrane's older ones at start, before leader election (default true). */
  registerCRDs?: boolean;
  leaseNamespace: string;
  leaseName: string;
  id: string;
  identityGcGraceMs: number;
  /** Delete requests the identity GC has in flight at once (default DEFAULT_GC_CONCURRENCY). */
  identityGcConcurrency?: number;
  /** Every identity is re-checked for use this often, besides the checks pod changes trigger (default 15 min). */
  identityGcIntervalMs?: number;
  /** Where the health/metrics and distribution servers listen (default 127.0.0.1). */
  bindAddress?: string;
  clusterName: string;
  /** How policies are parsed (extended IP protocols); the webhook must run with the same. */
  parseOptions?: ParseOptions;
  podCidrPool: string;
  nodeCidrMaskSize: number;
  /** Where CiliumNodes' pod CIDRs come from (default cluster-pool: the operator's pool). */
  ipamMode?: IpamMode;
  controllers: Set<ControllerName>;
  /**
   * Read the Secrets TLS rules name from this namespace only (an informer scoped to it) and send their
   * material with the compiled policy (controllers/policy-secrets.ts); absent: no Secret is read.
   */
  policySecretsNamespace?: string;
  /** The agent stream (gRPC, mutual TLS); off when undefined. */
  distribution?: { port: number; caFile: string; certFile: string; keyFile: string; agentAuth?: AgentAuthConfig };
  /**
   * How long after the policy controllers start a node whose agent has not answered yet counts in policy status as the
   * stored status of the same generation counted it (policy.ts duringReconnectGrace; default DEFAULT_AGENT_RECONNECT_GRACE_MS, 0: off).
   */
  agentReconnectGraceMs?: number;
  /** Test hook: shorter lease timings. */
  leaseTiming?: { leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
}

/**
 * How agents prove their node: "cert" (client certificate CN = node name; the local cluster) or
 * "token" (a pod-bound ServiceAccount token checked by TokenReview; the chart).
 */
export type AgentAuthConfig = { mode: "cert" } | { mode: "token"; serviceAccount: string; audience: string; cacheTtlMs?: number };

export class Operator {
  readonly metrics = new OperatorMetrics();
  private client: KubeClient | undefined;
  private informers: InformerSet | undefined;
  private controllers: Controller[] = [];
  private elector: LeaderElector | undefined;
  /** With leader election off: the same Lease, renewed unconditionally, so `membrane status` sees this operator alive. */
  private heartbeat: LeaseHeartbeat | undefined;
  private server: HealthServer | undefined;
  private distribution: DistributionServer | undefined;
  /** The Secrets TLS rules name, as the distribution resolved them (set with the distribution). */
  private policySecrets: PolicySecrets | undefined;
  /** Policy parses shared by the status reconcilers and the distribution: each generation parsed once. */
  private readonly parsed: ParsedPolicies;
  private leading = false;
  private running = false;
  private stopped: Promise<void> | undefined;
  private wake: ((outcome: "lost" | "stopped") => void) | undefined;
  /** Clears the timers the controllers set up (run on stop). */
  private readonly timers: (() => void)[] = [];

  constructor(
    private readonly config: OperatorConfig,
    private readonly log: Logger,
  ) {
    this.parsed = new ParsedPolicies(config.parseOptions);
  }

  /** Serves health endpoints, waits for leadership, runs the controllers; resolves when stopped or leadership is lost. */
  async run(): Promise<"lost" | "stopped"> {
    this.client = await KubeClient.fromKubeconfig(this.config.kubeconfig);
    this.server = new HealthServer(this.metrics.registry, () => !this.leading || (this.running && (this.informers?.synced ?? false)));
    const host = this.config.bindAddress ?? "127.0.0.1";
    const port = await this.server.listen(this.config.healthPort, host);
    this.log.info({ host, port }, "health and metrics endpoints listening");
    // Stopped while starting (a signal during the first await): nothing more is started.
    if (this.stopped) {
      await this.server.close();
      this.client.close();
      return "stopped";
    }
    if (this.config.registerCRDs !== false) {
      await this.registerCRDs(this.client);
      // Stopped while the CRDs were registered: stop() closed what had started; no Lease is taken after it.
      if (this.stopped) return "stopped";
    }
    const done = new Promise<"lost" | "stopped">((resolve) => (this.wake = resolve));
    const timing = this.config.leaseTiming ?? DEFAULT_LEASE_TIMING;
    if (!this.config.leaderElect) {
      // The user chose a single replica: it leads by fiat, and publishes that on the Lease with the elected leader's timing.
      this.heartbeat = new LeaseHeartbeat({
        client: this.client,
        namespace: this.config.leaseNamespace,
        name: this.config.leaseName,
        identity: this.config.id,
        renewMs: timing.retryPeriodMs,
        leaseDurationSeconds: Math.round(timing.leaseDurationMs / 1000),
        log: this.log,
      });
      this.heartbeat.start();
      await this.startLeading();
      return done;
    }
    this.elector = new LeaderElector(
      this.client,
      { namespace: this.config.leaseNamespace, name: this.config.leaseName, identity: this.config.id, ...timing },
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

  /** Every replica, leader or not, as Cilium's operator: the schemas must be current before any controller lists them.
   * A failure (e.g. RBAC without the CRD rules) is logged and the operator goes on with the CRDs the cluster has. */
  private async registerCRDs(client: KubeClient): Promise<void> {
    try {
      await registerCRDs(client, await bundledCRDs(), this.log);
    } catch (e) {
      this.log.error({ err: e instanceof Error ? e.message : String(e) }, "CRDs not registered: the cluster's are used as they are");
    }
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
    // The CiliumCIDRGroups policies' cidrGroupRef/cidrGroupSelector entries stand for: the distribution compiles
    // with them, the policy status names a missing one.
    const cidrGroups = on.has("policy") || this.config.distribution ? new CIDRGroups(informers.for<KubeObject>(CIDR_GROUPS)) : new CIDRGroups();
    const dist = await this.startDistribution(informers, pods, cidrGroups);

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
      });
      const c = new Controller(identity, this.log, this.metrics, { workers: IDENTITY_WORKERS });
      c.watch(pods, identity.podKeys).watch(namespaces, identity.namespaceKeys).watch(identities, identity.identityKeys);
      const r = identity;
      // GC as a controller of its own, one sweep at a time; its concurrency bounds its delete requests in flight.
      const gc = new IdentityGC({
        client,
        identities,
        use: r,
        log: this.log,
        graceMs: this.config.identityGcGraceMs,
        marks: { namespace: this.config.leaseNamespace, name: `${this.config.leaseName}-identity-gc` },
        concurrency: this.config.identityGcConcurrency ?? DEFAULT_GC_CONCURRENCY,
      });
      const gcc = new Controller(gc, this.log, this.metrics, { workers: 1 });
      // Identity events coalesce as pod events do: a sweep walks every identity, and a churn of thousands is one sweep a second, not one each.
      gcc.watch(identities, gc.identityKeys, { coalesceMs: GC_COALESCE_MS });
      r.checkUse = (n) => {
        if (gc.useChanged(n)) gcc.queue.addAfter(GC_SWEEP_KEY, GC_COALESCE_MS);
      };
      c.beforeStart(() => r.init());
      // Controllers start in order: the identity controller's index is built before the GC's first look.
      gcc.beforeStart(() => {
        gcc.enqueue(GC_SWEEP_KEY);
        // A periodic sweep as well: GC never depends on a single requeue having survived.
        const timer = setInterval(() => gcc.enqueue(GC_SWEEP_KEY), this.config.identityGcIntervalMs ?? 15 * 60_000);
        timer.unref();
        this.timers.push(() => clearInterval(timer));
      });
      this.controllers.push(c, gcc);
      // The distribution's first compile (seconds with tens of thousands of identities) waits for the GC's first marks, so
      // the grace of the identities found idle runs during it rather than after it (bounded: a slow API server does not
      // hold the agents' first states back for long).
      dist?.controller.startAfter(() => Promise.race([gc.firstMarks, new Promise((r) => setTimeout(r, FIRST_MARKS_WAIT_MS).unref())]));
    }
    // After the identity controller and its GC (see above); its first compile after the GC's first marks.
    if (dist) this.controllers.push(dist.controller.startAfter(dist.firstCompile));
    // The agent reconnect grace (reconnect-grace.ts), shared by the policy and TracingPolicy status controllers: from the first
    // one's start; at its end each looks at every object again (the nodes not heard from then count).
    const grace = new ReconnectGrace(this.config.agentReconnectGraceMs ?? DEFAULT_AGENT_RECONNECT_GRACE_MS, dist !== undefined, this.log);
    this.timers.push(() => grace.stop());
    if (on.has("policy")) {
      const nodes = informers.for<KubeObject>(NODES);
      // Moves when what a policy selects may have: a pod's or namespace's labels, a pod's node, the nodes' labels.
      let endpointsVersion = 0;
      // The pods grouped by label set, kept per pod event (a status-only write moves nothing), shared by every policy's selection.
      const endpoints = new EndpointIndex();
      if (identity) {
        const id = identity;
        const place = (pod: PodObject, gone: boolean): void => {
          const ep = gone ? undefined : endpointOf(id, pod);
          // A pod whose namespace is not cached yet is placed when the namespace comes (below).
          if (endpoints.set(keyOf(pod), ep === "unknown" ? undefined : ep)) endpointsVersion++;
        };
        pods.on((ev) => place(ev.obj, ev.type === "delete"));
        // A namespace's labels are every one of its pods' labels (rare: a pass over the pods of the namespace).
        namespaces.on((ev) => {
          if (ev.type === "update" && sameLabels(ev.obj, ev.old)) return;
          for (const pod of pods.list()) if (pod.metadata.namespace === ev.obj.metadata.name) place(pod, false);
        });
      }
      // Host policies select nodes by their labels: their host endpoints, once per change of the nodes' labels.
      let nodesVersion = 0;
      let hosts: { version: number; list: HostEndpoint[] } | undefined;
      nodes.on((ev) => {
        if (ev.type === "update" && sameLabels(ev.obj, ev.old)) return;
        endpointsVersion++;
        nodesVersion++;
      });
      const hostEndpoints = (): HostEndpoint[] => {
        if (hosts?.version !== nodesVersion) hosts = { version: nodesVersion, list: nodes.list().map((n) => ({ node: n.metadata.name, labels: nodeHostLabels(n.metadata.labels) })) };
        return hosts.list;
      };
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
          select: id ? (ps) => selectEndpoints(ps, endpoints.groups(), hostEndpoints()) : undefined,
          endpointsVersion: () => endpointsVersion,
          enforcement: dist ? (obj, concerned) => dist.source.enforcement(obj, concerned, dist.server.answers()) : undefined,
          parsed: this.parsed,
          cidrGroups: () => cidrGroups.current(),
          inReconnectGrace: () => grace.running(),
        });
        const c = new Controller(reconciler, this.log, this.metrics, { workers: 2 });
        c.beforeStart(() => grace.start());
        // Which of this kind's policies select a label set; forgotten when a policy comes, goes or changes its spec.
        const selecting = new SelectingPolicies(() => policies.list().map((obj) => ({ key: keyOf(obj), parsed: this.parsed.parse(obj) })));
        c.watch(policies, (ev) => {
          if (ev.type !== "update" || ev.old.metadata.generation !== ev.obj.metadata.generation || ev.old.metadata.uid !== ev.obj.metadata.uid) selecting.invalidate();
          return [keyOf(ev.obj)];
        });
        // Node count changes move "n/m nodes" (node labels: host policies' selection); a namespace's labels move the label sets of all its pods.
        const all = (): string[] => policies.list().map(keyOf);
        grace.onEnd(() => {
          for (const k of all()) c.enqueue(k);
        });
        c.watch(nodes, (ev) => (ev.type === "update" && sameLabels(ev.obj, ev.old) ? [] : all()));
        // A CIDR group came or went: whether each cidrGroupRef names one is in Enforced.
        if (cidrGroups.informer) c.watch(cidrGroups.informer, (ev) => (ev.type === "update" ? [] : all()));
        // A Secret a TLS rule names came, went or changed: the policies' Enforced says whether it can be served.
        const secrets = this.policySecrets;
        if (secrets?.informer) c.watch(secrets.informer, (ev) => (secrets.names(ev.obj.metadata.namespace, ev.obj.metadata.name) ? all() : []));
        if (id) {
          c.watch(namespaces, (ev) => (ev.type === "update" && sameLabels(ev.obj, ev.old) ? [] : all()));
          // A pod moves the selected count and nodes of only the policies selecting its label set (before or after
          // the change). Enqueued after a short delay, so a burst of pods costs each such policy one status pass.
          const wake = (keys: Iterable<string>): void => {
            for (const k of keys) c.queue.addAfter(k, POD_COALESCE_MS);
          };
          c.watch(pods, (ev) => {
            const before = ev.type === "add" ? undefined : endpointOf(id, ev.type === "update" ? ev.old : ev.obj);
            const after = ev.type === "delete" ? undefined : endpointOf(id, ev.obj);
            if (before === "unknown" || after === "unknown") return all(); // its namespace is not cached: cannot tell whom it concerns
            if (before?.labels.key === after?.labels.key && before?.node === after?.node) return [];
            if (before) wake(selecting.selecting(before.labels));
            if (after) wake(selecting.selecting(after.labels));
            return [];
          });
        }
        this.controllers.push(c);
        // Agents' ACKs arrive by the thousand after a change: one status refresh per burst, not one per ACK, of the
        // policies whose generation the nodes acknowledged (none for a pod or ipcache change). Every policy's, as before,
        // cost 2,000 status passes over 1,000 nodes per policy change at bench/scale's full size, on the one event loop the
        // next change's sends wait for.
        let refresh: NodeJS.Timeout | undefined;
        let movedAll = false;
        const moved = new Set<string>();
        dist?.server.onReport((_node, m) => {
          if (m === "all") movedAll = true;
          else if (m.size === 0) return;
          else for (const k of m) moved.add(k);
          refresh ??= setTimeout(() => {
            refresh = undefined;
            const keys = movedAll ? all() : policies.list().filter((o) => moved.has(ParsedPolicies.keyOf(o))).map(keyOf);
            movedAll = false;
            moved.clear();
            for (const k of keys) c.enqueue(k);
          }, REPORT_COALESCE_MS);
        });
        this.timers.push(() => clearTimeout(refresh));
      }
    }
    if (on.has("node")) {
      const nodes = informers.for<NodeObject>(NODES);
      const ciliumNodes = informers.for<CiliumNodeObject>(CILIUM_NODES);
      const r = new NodeReconciler({ client, nodes, ciliumNodes, pool: new PodCIDRPool(this.config.podCidrPool, this.config.nodeCidrMaskSize), ipamMode: this.config.ipamMode ?? "cluster-pool", log: this.log });
      const c = new Controller(r, this.log, this.metrics, { workers: 1 });
      c.watch(nodes).watch(ciliumNodes).beforeStart(() => r.init());
      this.controllers.push(c);
    }
    if (on.has("encryption-key")) {
      const keys = informers.for<EncryptionKeyObject>(ENCRYPTION_KEYS);
      const ciliumNodes = informers.for<EncryptionNodeObject>(CILIUM_NODES);
      const r = encryptionKeyReconciler({ client, keys, ciliumNodes, namespace: this.config.leaseNamespace, log: this.log });
      const c = new Controller(r, this.log, this.metrics, { workers: 1 });
      // A node's report moves every key's "n/m".
      c.watch(keys).watch(ciliumNodes, () => keys.list().map(keyOf));
      this.controllers.push(c);
    }
    if (on.has("tracing")) {
      const nodes = informers.for<NodeObject>(NODES);
      for (const resource of [TRACING_POLICIES, TRACING_POLICIES_NAMESPACED]) {
        const policies = informers.for<TracingPolicyObject>(resource);
        // With the distribution stream, Enforced counts the nodes whose runtime enforcer runs each policy.
        const enforcement = dist ? { nodes: () => nodes.list().map((n) => n.metadata.name), answers: () => dist.server.answers() } : undefined;
        const c = new Controller(tracingPolicyReconciler({ client, resource, policies, events, log: this.log, ...(enforcement ? { enforcement, inReconnectGrace: () => grace.running() } : {}) }), this.log, this.metrics, { workers: 1 });
        c.watch(policies);
        if (dist) {
          const all = (): string[] => policies.list().map(keyOf);
          c.beforeStart(() => grace.start());
          grace.onEnd(() => {
            for (const k of all()) c.enqueue(k);
          });
          c.watch(nodes, (ev) => (ev.type === "update" ? [] : all()));
          // Agents report after each change of the enforced set: one status pass per burst.
          let refresh: NodeJS.Timeout | undefined;
          dist.server.onRuntimeReport(() => {
            refresh ??= setTimeout(() => {
              refresh = undefined;
              for (const k of all()) c.enqueue(k);
            }, REPORT_COALESCE_MS);
          });
          this.timers.push(() => clearTimeout(refresh));
        }
        this.controllers.push(c);
      }
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
    cidrGroups: CIDRGroups,
  ): Promise<{ server: DistributionServer; source: NodeStateSource; controller: Controller; firstCompile: () => Promise<void> } | undefined> {
    const cfg = this.config.distribution;
    if (!cfg) return undefined;
    const auth = cfg.agentAuth;
    let authenticate: AgentAuthenticator | undefined;
    if (auth?.mode === "token") {
      const reviewer = new TokenAuthenticator(this.client as KubeClient, auth);
      authenticate = (header) => reviewer.authenticate(header);
    }
    const server = (this.distribution = new DistributionServer(
      { ca: readFileSync(cfg.caFile), cert: readFileSync(cfg.certFile), key: readFileSync(cfg.keyFile) },
      this.log,
      undefined,
      authenticate,
      { nack: (node) => this.metrics.nacks.inc({ node }), authFailure: (reason) => this.metrics.agentAuthFailures.inc({ reason }) },
    ));
    // Agents are sent nothing until the first states are compiled from the synced caches (below, beforeStart).
    server.holdStates();
    this.metrics.observeNodes(() => server.reports().map(nodeStreamState));
    const host = this.config.bindAddress ?? "127.0.0.1";
    const port = await server.listen(cfg.port, host);
    this.log.info({ host, port }, "distribution stream listening");
    const nodes = informers.for<NodeObject>(NODES);
    // TLS inspection's Secrets: read with the operator's RBAC from the policy secrets namespace only, when one is
    // given (else, and for a Secret named elsewhere, TLS rules fail closed, saying why).
    // Its informer lists and watches that namespace only: a Role there is all the RBAC it needs.
    const namespace = this.config.policySecretsNamespace;
    this.log.info({ policySecretsNamespace: namespace ?? null }, namespace === undefined ? "TLS rules' Secrets are not read (no --policy-secrets-namespace)" : "TLS rules' Secrets read from the policy secrets namespace");
    const policySecrets = (this.policySecrets = new PolicySecrets(namespace === undefined ? undefined : { namespace, informer: informers.for<SecretObject>(SECRETS, { namespace }) }));
    const source = new NodeStateSource(pods, nodes, { clusterName: this.config.clusterName, parsed: this.parsed, policySecrets, cidrGroups });
    server.followSubjectDeltas(source.subjectDeltas);
    server.followSharedDeltas(source.sharedDeltas);
    const identities = informers.for<IdentityObject>(IDENTITIES);
    const policies = [CNPS, CCNPS, NETWORK_POLICIES].map((resource) => informers.for<PolicyObject>(resource));
    // toServices selects through Services and their EndpointSlices.
    const services = informers.for<ServiceObject>(SERVICES);
    const endpointSlices = informers.for<EndpointSliceObject>(ENDPOINT_SLICES);
    // TracingPolicies go to every node when their CRDs are there (the tracing controller is on).
    const tracingPolicies = this.config.controllers.has("tracing") ? [TRACING_POLICIES, TRACING_POLICIES_NAMESPACED].map((r) => informers.for<TracingPolicyObject>(r)) : [];
    // Keyed by node; one more key per kind of source object (sourceKey) reconciles the compiled state
    // with that kind's cache and enqueues the nodes it concerns. A change of every node ("all": a shared part, e.g. the
    // ipcache, moved) is one key, ALL_NODES_KEY, that publishes them all in one pass: a node whose subjects did not move
    // keeps its part by reference and is sent only the shared parts' delta, computed once (no reconcile per node per pod).
    const enqueueNodes = (affected: Affected): void => {
      if (affected === "all") c.queue.addAfter(ALL_NODES_KEY, ALL_NODES_COALESCE_MS);
      else for (const node of affected) c.enqueue(node);
    };
    const publishAll = (): void => {
      for (const n of nodes.list()) server.publish(n.metadata.name, source.stateFor(n.metadata.name));
    };
    // Pods come by the thousand: their events name the pods that moved, and one reconcile of the pods kind
    // takes those (O(the pods named), not a pass over every pod per burst).
    const touchedPods = new Set<string>();
    const reconciler: Reconciler = {
      name: "distribution",
      reconcile: async (key) => {
        const kind = SOURCE_KINDS.find((k) => sourceKey(k) === key);
        if (key === CLUSTER_CLASS_KEY) {
          // An agent that does not look up a class's entries is known (or no longer): compile it so.
          const affected = [source.setClusterClass(server.clusterClassEverywhere()), source.setEveryPodClass(server.everyPodClassEverywhere()), source.setWorldClass(server.worldClassEverywhere()), source.setWorldFamilyClass(server.worldFamilyClassEverywhere())];
          for (const a of affected) enqueueNodes(a);
        } else if (key === ALL_NODES_KEY) {
          publishAll();
        } else if (kind === "pods") {
          const keys = [...touchedPods];
          touchedPods.clear();
          enqueueNodes(source.syncPods(keys));
        } else if (kind) {
          enqueueNodes(source.sync({ identities, policies, services, endpointSlices, tracingPolicies }, [kind]));
        } else if (!nodes.get(key)) {
          server.forget(key);
          source.forgetNode(key);
        } else server.publish(key, source.stateFor(key));
      },
    };
    const c = new Controller(reconciler, this.log, this.metrics, { workers: 2 });
    // Every kind compiled once from the synced caches before the first node state is published: the keys the first
    // lists enqueued run in any order (the identities key waits IDENTITY_PUBLISH_COALESCE_MS), and a node published after
    // the pods but before the identities or the policies held its subjects as selected by no policy, allow-all (issue #22).
    // Every node is published here, so the nodes the sync names are not enqueued as well (each state compiled once).
    // The compile gives the event loop a turn now and then (startLeading makes it a start gate of the controller, after
    // the identity GC's first marks); what changes meanwhile is enqueued by the watches below and reconciled after it.
    const firstCompile = async (): Promise<void> => {
      await source.syncYielding({ identities, policies, services, endpointSlices, tracingPolicies }, FIRST_COMPILE_SLICE_MS);
    };
    c.beforeStart(() => {
      publishAll();
      server.releaseStates();
    });
    // The mappers only enqueue keys: the work is in reconcile.
    c.watch(nodes, (ev) => [ev.obj.metadata.name, sourceKey("nodes")]);
    c.watch(identities, () => [sourceKey("identities")], { coalesceMs: IDENTITY_PUBLISH_COALESCE_MS });
    c.watch(pods, (ev) => {
      touchedPods.add(keyOf(ev.obj));
      return [sourceKey("pods")];
    });
    // The policies' own status writes (after every change) leave their generation: they compile to nothing new, and a
    // pass over every policy per write was 6.3 % of the operator's CPU at bench/scale's full size.
    for (const p of policies) c.watch(p, (ev) => (generationChanged(ev) ? [sourceKey("policies")] : []));
    if (cidrGroups.informer) c.watch(cidrGroups.informer, () => [sourceKey("cidrGroups")]);
    c.watch(services, () => [sourceKey("services")]);
    c.watch(endpointSlices, () => [sourceKey("services")]);
    for (const t of tracingPolicies) c.watch(t, () => [sourceKey("tracing")]);
    // Also once at the start: agents may have said hello before the controller listened.
    server.onClusterClass(() => c.enqueue(CLUSTER_CLASS_KEY));
    c.enqueue(CLUSTER_CLASS_KEY);
    // A Secret a compiled policy names moved: every node's state is published again (an unchanged one sends nothing).
    if (policySecrets.informer) c.watch(policySecrets.informer, (ev) => (policySecrets.names(ev.obj.metadata.namespace, ev.obj.metadata.name) ? [ALL_NODES_KEY] : []));
    return { server, source, controller: c, firstCompile };
  }

  /**
   * Idempotent and bounded (about 2 s in all, see STOP_STEP_MS): stops the controllers (reconciles in
   * flight get a moment to finish, then their requests are cut off), the informers, the distribution and
   * the heartbeat, releases the lease (best effort) and closes the health server. A step that fails or
   * overruns logs one line and the shutdown goes on.
   */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      const step = (name: keyof typeof STOP_STEP_MS, fn: () => unknown): Promise<boolean> => shutdownStep(this.log, name, STOP_STEP_MS[name], fn);
      for (const clear of this.timers) clear();
      // Reconciles still waiting on the API server are cut off: closing the client destroys their connections.
      if (!(await step("controllers", () => Promise.all(this.controllers.map((c) => c.stop()))))) this.client?.close();
      await step("watches", () => Promise.all([this.informers?.stop(), this.distribution?.close(), this.heartbeat?.stop()]));
      await step("lease", () => this.elector?.stop(STOP_STEP_MS.lease - 100));
      this.leading = false;
      this.metrics.leader.set(0);
      await step("health server", () => this.server?.close());
      this.client?.close();
      this.wake?.("stopped");
      this.log.info("operator stopped");
    })();
    return this.stopped;
  }
}

/** Each shutdown step's bound (ms); together under the process's backstop (SHUTDOWN_BACKSTOP_MS). */
const STOP_STEP_MS = { controllers: 800, watches: 300, lease: 1_000, "health server": 200 } as const;

/** The distribution's key for "one kind of source object against its cache": node names never start with a colon. */
const sourceKey = (kind: SourceKind): string => `:${kind}`;
/** The distribution's key for "what the agents say of the cluster entity's class entries moved" (DistributionServer.onClusterClass). */
const CLUSTER_CLASS_KEY = ":cluster-class";
/** The distribution's key for "publish every node" (a shared part moved). */
const ALL_NODES_KEY = ":all-nodes";
/**
 * How long ALL_NODES_KEY waits for the changes after the one that queued it: at 1,000 nodes a pass is 1,000 messages, so a burst
 * of pod changes (each moves the ipcache) is one pass, not one each. Well under the pod-to-every-ipcache target (2 s).
 */
const ALL_NODES_COALESCE_MS = 50;

/** What of a pod policy selection counts: its label set and node; "unknown" while its namespace is not cached. */
function endpointOf(identity: IdentityReconciler, pod: PodObject): Endpoint | undefined | "unknown" {
  const labels = identity.securityLabelsOf(pod);
  if (labels) return { labels, node: pod.spec?.nodeName };
  return podNeedsIdentity(pod) ? "unknown" : undefined;
}

function sameLabels(a: KubeObject, b: KubeObject): boolean {
  return JSON.stringify(a.metadata.labels ?? {}) === JSON.stringify(b.metadata.labels ?? {});
}
