// The node agent: follows the operator's distribution stream into the datapath maps and serves the CNI plugin's endpoint socket.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { PolicyEntry, SubjectPolicy } from "../core/model.ts";
import { entryKeyString } from "../core/policy/mapstate.ts";
import { type Downstream, type IPCacheEntry, type NodeState, type SubjectDelta, type Upstream, DISTRIBUTION_SERVICE, describeErrors, parseDownstream } from "../core/wire.ts";
import { EMPTY_STATE, applyDelta, canonicalState, comparePrefixes } from "../core/nodestate.ts";
import { Backoff, type BackoffOptions } from "../kube/backoff.ts";
import { IDENTITY, MIN_FQDN_IDENTITY, RESERVED_IDENTITIES } from "../core/identity.ts";
import { hostPrefix, parseIP } from "../core/cidr.ts";
import { type PolicyEnforcementMode, enforcedState, unresolvedEnforcement } from "./enforcement.ts";
import { type HostLink, type WiredPod, listHostLinks, planEndpointReconcile, readWiredPods, removeHostLink } from "./endpoint-links.ts";
import type { EndpointLink } from "./endpoint-mtu.ts";
import { LAYOUT, checkIpcachePrefix, checkIpcacheValue, encodeEndpointKey, encodePolicyKey, encodePolicyValue, type EndpointEntry } from "./bpf/layout.ts";
import { type IPCacheDelta, IpcacheIndex, type IpcacheWrites, datapathIPBlocks, datapathIpcache, ipBlockWrites, remotePodPrefixes, sameIpcacheEntry } from "./ipcache.ts";
import type { Datapath } from "./bpf/datapath.ts";
import { writeJsonFileAtomic } from "./json-file.ts";
import { releaseHeap } from "./heap-release.ts";
import { type AgentReply, type AgentRequest, type EndpointAddRequest, EndpointSocketServer } from "./cni/agent-socket.ts";
import { Observer, monotonicWallClock } from "./observer/observer.ts";
import type { EnrichLookups } from "./observer/enrich.ts";
import type { FlowBufferOptions } from "./observer/buffer.ts";
import type { FlowExporterOptions } from "./observer/export.ts";
import type { HubbleListen } from "./observer/hubble-server.ts";
import type { HubbleExportOptions } from "./observer/hubble-export.ts";
import { ipcacheIndex, podByAddress, podsFromIpcache, type PodRef } from "./observer/pods.ts";
import { policyMatchIndex, type PolicyMatchLookup } from "./observer/policy-match.ts";
import { type AuditModeAnnotations, NO_AUDIT_ANNOTATIONS } from "./audit-mode.ts";
import { NO_POD_IDENTITY_CLAIMS, type PodIdentityClaims, sameClaim, verifiedIdentity } from "./pod-identity.ts";
import { type HostFirewall, hostEnforcement } from "./hostfw.ts";
import type { RuleOrigin } from "../core/model.ts";
import { sslChannelOptions } from "../kube/grpc-tls.ts";
import { agentCredentials } from "./token-auth.ts";
import type { AgentDnsProxy } from "./dns/agent-dns.ts";
import { dnsFlows } from "./dns/dns-flows.ts";
import { httpFlows } from "./l7proxy/http-flows.ts";
import { RapidResetWarnings } from "./l7proxy/rapid-reset-warnings.ts";
import { DEFAULT_HTTP_REDACTION, type HttpRedaction } from "../core/l7/redaction.ts";
import type { Flow } from "../flowapi/flow.ts";
import type { AgentL7Proxy, L7ProxyStatus } from "./l7proxy/agent-l7.ts";
import type { AgentRuntime, RuntimeEnforcerStatus, RuntimePod } from "./runtime/agent-runtime.ts";
import type { PodContainers } from "./runtime/pod-containers.ts";

/** A pod whose identity is not known yet runs as `reserved:init`: enforced both ways, no allow entry (fail closed); only the node itself reaches it (bpf/lib/localhost.h: the kubelet's probes). */
export const INIT_IDENTITY = IDENTITY.init;

const StreamClient = grpc.makeGenericClientConstructor(DISTRIBUTION_SERVICE, "Distribution");
/** The largest operator message the agent takes: a snapshot grows with the cluster's ipcache (~100 bytes a pod). */
export const MAX_DOWNSTREAM_BYTES = 256 * 1024 * 1024;
type Call = grpc.ClientDuplexStream<Upstream, Downstream>;

/** The datapath operations the agent uses (the real `Datapath`, or a wrapper in tests). */
export type AgentDatapath = Pick<Datapath, "setSubjectPolicy" | "addSubjectEntries" | "removeSubjectEntries" | "setIpcache" | "setIpcacheMany" | "deleteIpcache" | "pruneIpcache" | "setIPBlock" | "deleteIPBlock" | "pruneIPBlocks" | "setEndpoint" | "deleteEndpoint" | "attachEndpoint" | "detachEndpoint" | "object"> &
  /** Verdict events, needed only when the agent runs an observer. */
  Partial<Pick<Datapath, "onEvents" | "dropCounters" | "failedSubjects" | "pruneDefunctLinks" | "lostPinnedState" | "setPolicyAuditMode" | "encryptedNodes" | "lostEventsPerCpu" | "ipcacheIsEmpty" | "unknownAddressIdentity" | "pruneEndpoints">>;

/** The agent's observer: where its API listens, the ring's bounds, and the optional JSON-lines export. */
export interface AgentObserverOptions {
  readonly buffer?: FlowBufferOptions;
  readonly export?: FlowExporterOptions;
  /** Hubble's exporter format beside `export` (observer/hubble-export.ts). */
  readonly hubbleExport?: HubbleExportOptions;
  /** Hubble's dynamic exporter: the YAML file of flow logs (observer/flowlogs.ts). */
  readonly flowLogs?: { readonly path: string; readonly reloadMs?: number };
  /** Where the observer is served (Hubble's Observer gRPC API): a unix socket and/or TCP with mutual TLS. */
  readonly hubble: HubbleListen;
}

/** Drops are never sampled; a connection's forwarded flows are kept at most once a second. */
export const DEFAULT_FLOW_BUFFER: FlowBufferOptions = { capacity: 4096, forwardedSampleMs: 1000 };

export interface AgentOptions {
  readonly nodeName: string;
  /** host:port of the operator's distribution server. */
  readonly operator: string;
  /** The operator's CA and the agent's client certificate; `serverName`: the name the operator's certificate is checked for when `operator` is an address (its Service's ClusterIP). */
  readonly tls: { readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer; readonly serverName?: string };
  /** The pod's projected ServiceAccount token file (chart); read again at each connect. */
  readonly tokenFile?: string;
  readonly datapath: AgentDatapath;
  readonly cniSocket: string;
  /** The network namespace (name under /var/run/netns) holding the node's host-side veths; the agent's own when absent. */
  readonly netns?: string;
  readonly log: Logger;
  readonly backoff?: BackoffOptions;
  /** This node's underlay address: it is `reserved:host` in the ipcache and never a tunnel endpoint. */
  readonly nodeIP?: string;
  /** Where the registered endpoints are kept across agent restarts (JSON); in memory only when absent. */
  readonly endpointsFile?: string;
  /** Serve the datapath's verdicts, enriched from this agent's state (see observer/README.md). */
  readonly observer?: AgentObserverOptions;
  /** How received policy becomes enforcement (default: `default`, see enforcement.ts). */
  readonly policyEnforcementMode?: PolicyEnforcementMode;
  /** --policy-audit-mode: policy drops on this node pass and are reported as AUDIT (audit-mode.ts adds the annotations). */
  readonly policyAuditMode?: boolean;
  /** The host firewall (hostfw.ts): its devices attached at start, the host endpoint's flags following the host policy. */
  readonly hostFirewall?: HostFirewall;
  /** Where the last acknowledged state is kept, so a restart resumes from its version (JSON); snapshot after every restart when absent. */
  readonly appliedFile?: string;
  /**
   * The host links to reconcile the endpoints against at start and the pods the CNI plugin wired (tests replace
   * them); the `mbr*` veths of `netns` and the IPAM state in `cniStateDir` when absent.
   */
  readonly hostLinks?: { list(): HostLink[]; remove(link: HostLink): void; wiredPods?(): WiredPod[] | undefined };
  /** The CNI plugin's IPAM state dir (its stateDir): a pod veth no record owns is adopted when its pod is there, removed only when not. */
  readonly cniStateDir?: string;
  /** The node's DNS proxy (dns/agent-dns.ts): DNS rules decided, toFQDNs learned; absent, neither is enforced here (the hello says so). */
  readonly dns?: AgentDnsProxy;
  /** The node's L7 proxy (l7proxy/agent-l7.ts): HTTP rules decided; absent, they are plain allows here (the hello says so). */
  readonly l7?: AgentL7Proxy;
  /** The pod MTU of the agent's mode, and what to do with an endpoint the plugin wired with another (main: endpoint-mtu.ts). */
  readonly podMtu?: { readonly mtu: number; mismatched(ep: EndpointLink): void };
  /** What of an HTTP request its L7 flows carry off the node (Hubble's --hubble-redact-*); DEFAULT_HTTP_REDACTION when absent. */
  readonly httpRedaction?: HttpRedaction;
  /** The node's runtime enforcer (runtime/agent-runtime.ts): the state's TracingPolicies enforced on its pods; absent, none are (the hello says so). */
  readonly runtime?: AgentRuntime;
  /**
   * How long a CNI ADD waits for the pod's identity and that identity's policy before it answers
   * (--cni-identity-wait): with 0 or absent it answers at once. On timeout the pod starts at
   * `reserved:init` (closed) as before, and the agent says so.
   */
  readonly identityWaitMs?: number;
}

/** The last acknowledged state as kept on disk. */
interface AppliedRecord {
  readonly version: number;
  readonly state: NodeState;
  /** The mode the maps were written under: another one needs a full rewrite. */
  readonly policyEnforcementMode: PolicyEnforcementMode;
}

interface Endpoint {
  readonly containerId: string;
  readonly namespace?: string;
  readonly pod?: string;
  readonly hostIfname: string;
  readonly hostIfindex: number;
  readonly ips: readonly string[];
  /** The pod's network namespace path (CNI_NETNS): the runtime enforcer tells its processes by it. */
  readonly netns?: string;
}

/** What the agent reports about itself (for status and tests). */
export interface AgentStatus {
  readonly connected: boolean;
  readonly version: number | undefined;
  readonly lastError: string | undefined;
  readonly endpoints: number;
  /** The enforcement mode in force. */
  readonly policyEnforcementMode: PolicyEnforcementMode;
  /** Policy audit mode for the whole node (the flag or the Node's annotation). */
  readonly policyAuditMode: boolean;
  /** Endpoints in audit mode through their pod's annotation (the node's mode aside). */
  readonly auditedEndpoints: number;
  /** With the host firewall: the host endpoint's enforcement, and whether the node's Node object exists (undefined: not known). */
  readonly hostFirewall?: { readonly ingressEnforced: boolean; readonly egressEnforced: boolean; readonly nodeObject?: boolean };
  /** The L7 proxy, when the agent runs one: whether it runs, the ports steered to it, why not. */
  readonly l7Proxy?: L7ProxyStatus;
  /** The runtime enforcer, when the agent runs one: whether it runs, how many TracingPolicies it enforces. */
  readonly runtime?: RuntimeEnforcerStatus;
}

export class NodeAgent {
  /** The state the maps hold (last applied and acknowledged). */
  private applied: NodeState = EMPTY_STATE;
  private version: number | undefined;
  private lastError: string | undefined;
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly socket: EndpointSocketServer;
  private readonly backoff: Backoff;
  private client: grpc.Client | undefined;
  private call: Call | undefined;
  private connected = false;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private flowObserver: Observer | undefined;
  private unsubscribeL7: (() => void)[] = [];
  /** The pods whose connections the L7 proxy closed for rapid reset, named in the agent's log (rate-limited). */
  private readonly rapidResets: RapidResetWarnings;
  /** Lookup tables for enrichment, rebuilt when the applied state or the endpoints change. */
  private lookupIndex: { state: NodeState; identities: Map<number, readonly string[]>; rules: Map<number, RuleOrigin>; pods: Map<string, PodRef>; policyMatch: PolicyMatchLookup; ipcacheEntry: (ip: string) => IPCacheEntry | undefined } | undefined;
  /** policy_match_type over the learned addresses' own entries (the maps hold them beside the applied state's). */
  private learnedMatchIndex: { of: ReadonlyMap<number, readonly PolicyEntry[]>; policyMatch: PolicyMatchLookup } | undefined;
  private endpointsByIp: Map<string, { namespace: string; pod: string }> | undefined;
  /** Host-side veth ifindex → its name, for the device a flow was seen on (built on first use, dropped with endpointsByIp). */
  private devicesByIfindex: Map<number, string> | undefined;
  private readonly mode: PolicyEnforcementMode;
  private readonly statusListeners: (() => void)[] = [];
  /** Endpoints (container ids) failing closed because their identity's policy did not fit the policy map, and how often one started to. */
  private readonly policyFailed = new Set<string>();
  private policyFailuresTotal = 0;
  /** True until the first state is applied after start: that one also sweeps what was pinned before. */
  private firstApply = true;
  /** The applied state's ipcache by prefix, so a delta's ipcache writes come from the prefixes it touches (built on first use after a snapshot). */
  private ipcacheIndex: IpcacheIndex | undefined;
  /** The DNS proxy once it started (opts.dns); undefined before, after stop, or when it could not start. */
  private dns: AgentDnsProxy | undefined;
  /** The learned toFQDNs entries last written per subject (dns/agent-dns.ts), so a change of selectors removes what they no longer open. */
  private learnedWritten: ReadonlyMap<number, readonly PolicyEntry[]> = new Map();
  /** The L7 proxy once it started (opts.l7); undefined before, after stop, or when it could not start. */
  private l7: AgentL7Proxy | undefined;
  /** The runtime enforcer once it was started (opts.runtime); undefined before and after stop. */
  private runtime: AgentRuntime | undefined;
  private podContainers: PodContainers = new Map();
  /** The operator's messages, handled one after the other (the L7 proxy's ports are awaited before a state is written). */
  private messages: Promise<void> = Promise.resolve();
  /** The audit-mode annotations last handed over by the watch (audit-mode.ts); none until then. */
  private auditAnnotations: AuditModeAnnotations = NO_AUDIT_ANNOTATIONS;
  /** This node's Kubernetes labels (node-labels.ts), which its flows carry; none until the watch hands them over. */
  private nodeLabels: readonly string[] = [];
  private hostFlags = { ingressEnforced: false, egressEnforced: false };
  /** The identities the node's pod objects claim (pod-identity.ts), for endpoints the ipcache does not name yet. */
  private podClaims: PodIdentityClaims = NO_POD_IDENTITY_CLAIMS;
  /** Identity labels by number, of the state they were read from. */
  private identityLabelsOf: { identities: NodeState["identities"]; byId: Map<number, readonly string[]> } | undefined;
  /** CNI ADDs waiting for their pod's identity: each checks again whenever a state is applied or the claims change. */
  private readonly identityWaiters = new Set<() => void>();

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log.child({ node: opts.nodeName });
    this.rapidResets = new RapidResetWarnings(this.log);
    this.socket = new EndpointSocketServer(opts.cniSocket, (r) => this.onEndpointRequest(r));
    this.backoff = new Backoff(opts.backoff ?? { baseMs: 200, maxMs: 10_000, jitter: 0.2 });
    this.mode = opts.policyEnforcementMode ?? "default";
  }

  async start(): Promise<void> {
    this.stopped = false;
    // The config bit before anything else: the flag's mode holds from the agent's start.
    this.opts.datapath.setPolicyAuditMode?.(this.nodeAuditMode());
    this.loadEndpoints();
    this.reconcileEndpoints();
    this.loadApplied();
    if (this.opts.hostFirewall) {
      this.opts.hostFirewall.start();
      this.syncHost(enforcedState(this.applied, this.mode));
    }
    // The proxies' records are L7 flows of the observer (when it runs), from the first request on.
    const lookups = this.enrichLookups();
    this.unsubscribeL7 = [
      this.opts.dns?.onFlow?.((f) => this.recordL7(dnsFlows(f, lookups))),
      this.opts.l7?.onFlow?.((f) => {
        const flows = httpFlows(f, lookups, this.opts.httpRedaction ?? DEFAULT_HTTP_REDACTION);
        this.rapidResets.observe(f, flows);
        this.recordL7(flows);
      }),
    ].filter((u) => u !== undefined);
    // What was learned is in the maps again before the proxy answers (and before the first snapshot's sweep).
    if (this.opts.dns) {
      // Set first: restoring what was learned rewrites subjects with their learned entries.
      this.dns = this.opts.dns;
      try {
        await this.opts.dns.start(
          enforcedState(this.applied, this.mode),
          (subject) => this.rewriteSubject(subject),
          (subject, added) => this.addLearnedEntries(subject, added),
        );
      } catch (err) {
        this.dns = undefined;
        // The rest of enforcement does not wait on it: the hello says no proxy runs here, so the policies' status names this node.
        await this.opts.dns.stop().catch(() => undefined);
        this.log.error({ error: (err as Error).message }, "DNS proxy not started: DNS rules and toFQDNs are not enforced on this node");
      }
    }
    if (this.opts.l7) {
      // Adopted when it outlived the previous agent: its connections are not dropped.
      this.opts.l7.onChange(() => this.statusChanged());
      // Kept even when it does not start now: its ports are served all the same (their connections
      // fail, never bypass) and the supervisor keeps trying; status says it is not running.
      this.l7 = this.opts.l7;
      try {
        await this.opts.l7.start(enforcedState(this.applied, this.mode));
      } catch (err) {
        this.log.error({ error: (err as Error).message }, "L7 proxy not started yet: connections steered to it fail until it runs");
      }
    }
    if (this.opts.runtime) {
      // Adopted when it outlived the previous agent (it kept enforcing meanwhile); kept even when it does not start
      // now: it is retried, and the runtime report says its policies are not enforced.
      this.runtime = this.opts.runtime;
      this.opts.runtime.onChange(() => {
        this.sendRuntimeReport();
        this.statusChanged();
      });
      // The containers the last agent wrote, until the pod watch hands over the API's (containerSelector rules stay meanwhile).
      if (this.podContainers.size === 0) this.podContainers = this.opts.runtime.writtenContainers();
      try {
        await this.opts.runtime.start(this.applied.tracingPolicies ?? [], this.runtimePods());
      } catch (err) {
        this.log.error({ error: (err as Error).message }, "runtime enforcer not started yet: TracingPolicies are not enforced on this node until it runs");
      }
    }
    await this.socket.start();
    this.log.info({ socket: this.opts.cniSocket }, "endpoint socket serving");
    if (this.opts.observer) {
      // Visibility is not enforcement: without an observer the agent still enforces, and says so.
      await this.startObserver(this.opts.observer).catch((err: Error) => this.log.error({ error: err.message }, "observer not started; verdicts are counted but not served"));
    }
    this.client = new StreamClient(this.opts.operator, agentCredentials(this.opts.operator, this.opts.tls, this.opts.tokenFile), {
      ...sslChannelOptions(this.opts.operator, this.opts.tls.serverName),
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      // gRPC refuses messages over 4 MiB by default: the snapshot of a 50,000-pod ipcache is ~5 MiB (bench/scale).
      "grpc.max_receive_message_length": MAX_DOWNSTREAM_BYTES,
    });
    this.connect();
  }

  /** Stops talking to the operator and the CNI plugin; the maps and attached programs stay (enforcement continues). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.call = undefined;
    this.client?.close();
    this.client = undefined;
    // A waiting ADD answers now (its endpoint is registered, at reserved:init): the socket closes only once every reply is out.
    for (const wake of [...this.identityWaiters]) wake();
    await this.socket.stop();
    for (const u of this.unsubscribeL7) u();
    this.unsubscribeL7 = [];
    this.rapidResets.stop();
    await this.flowObserver?.stop();
    this.flowObserver = undefined;
    // Its ports stay served: a query sent while the proxy is away fails, never bypasses.
    await this.dns?.stop();
    this.dns = undefined;
    // The proxy keeps running and keeps its connections: the next agent adopts it.
    this.l7?.stop();
    this.l7 = undefined;
    // The runtime enforcer keeps enforcing: the next agent adopts it.
    this.runtime?.stop();
    this.runtime = undefined;
    this.log.info({ version: this.version }, "agent stopped; maps keep enforcing");
  }

  /** Drops the current stream and reconnects at once, resuming from the last acknowledged version. */
  reconnect(): void {
    this.call?.cancel();
  }

  /** Whether the whole node is in policy audit mode: the flag, or the Node's annotation. */
  nodeAuditMode(): boolean {
    return this.opts.policyAuditMode === true || this.auditAnnotations.node;
  }

  /** New labels of this node's Node (from node-labels.ts): the flows enriched from now on carry them (Hubble's node_labels). */
  setNodeLabels(labels: readonly string[]): void {
    this.nodeLabels = labels;
  }

  /** The containers of this node's pods (pod-containers.ts): the runtime's pods file carries them (containerSelector, events). */
  setPodContainers(c: PodContainers): void {
    this.podContainers = c;
    this.runtime?.setPods(this.runtimePods());
  }

  /**
   * The identities the node's pod objects claim now (pod-identity.ts): an endpoint the ipcache does not
   * name yet (a new pod: the operator learns its address after the ADD) takes its claimed identity when
   * the applied state's labels of it fit the pod, and a waiting ADD checks again.
   */
  setPodIdentityClaims(c: PodIdentityClaims): void {
    const before = this.podClaims;
    this.podClaims = c;
    const state = enforcedState(this.applied, this.mode);
    for (const ep of this.endpoints.values()) {
      if (ep.namespace === undefined || ep.pod === undefined) continue;
      const was = before.get(ep.namespace)?.get(ep.pod);
      const now = c.get(ep.namespace)?.get(ep.pod);
      if (!sameClaim(was, now)) this.writeEndpoint(ep, state);
    }
    this.wakeIdentityWaiters();
  }

  private wakeIdentityWaiters(): void {
    for (const check of [...this.identityWaiters]) check();
  }

  /** The identity the pod object of `ep` claims, when `state`'s labels of that identity fit the pod. */
  private claimedIdentity(ep: Endpoint, state: NodeState): number | undefined {
    if (ep.namespace === undefined || ep.pod === undefined) return undefined;
    const claim = this.podClaims.get(ep.namespace)?.get(ep.pod);
    if (!claim) return undefined;
    if (this.identityLabelsOf?.identities !== state.identities) this.identityLabelsOf = { identities: state.identities, byId: new Map(state.identities.map((i) => [i.id, i.labels])) };
    return verifiedIdentity(ep.namespace, claim, this.identityLabelsOf.byId.get(claim.identity));
  }

  /** The endpoint entry of one of `ep`'s addresses under `state`: its identity from the ipcache, else from its pod's claim. */
  private entryOf(ep: Endpoint, ip: string, state: NodeState): EndpointEntry {
    return endpointEntry(ip, ep.hostIfindex, state, this.mode, () => this.claimedIdentity(ep, state));
  }

  /**
   * New audit-mode annotations (from the watch): the node's config bit and the annotated pods'
   * endpoint flags change in place, for the next new connection; nothing restarts. Switching off
   * enforces from the next connection (an audited connection already open keeps its conntrack entry).
   */
  setAuditAnnotations(a: AuditModeAnnotations): void {
    if (this.opts.hostFirewall && a.nodeObject === false && this.auditAnnotations.nodeObject !== false) {
      // Not failed closed: the operator sends a node without a Node object no state at all, so nothing says what
      // to enforce; the last state held stays (a deleted Node opens nothing), and the status says it.
      this.log.warn({ hostFirewall: this.hostFlags }, "host firewall: this node has no Node object, so no host policy (CCNP nodeSelector) can select it and the operator sends it no state: its host endpoint keeps only what the last state held (none: not enforced)");
    }
    this.auditAnnotations = a;
    this.opts.datapath.setPolicyAuditMode?.(this.nodeAuditMode());
    const state = enforcedState(this.applied, this.mode);
    for (const ep of this.endpoints.values()) this.writeEndpoint(ep, state);
    this.log.info({ policyAuditMode: this.nodeAuditMode(), auditedEndpoints: this.auditedEndpoints() }, "policy audit mode set");
    this.statusChanged();
  }

  /** The host endpoint's flags from the host policy in `state` (node audit mode is the config bit, which covers the host). */
  private syncHost(state: NodeState): void {
    this.hostFlags = hostEnforcement(state);
    this.opts.hostFirewall?.sync({ ...this.hostFlags, auditMode: false });
  }

  private endpointAudited(ep: Endpoint): boolean {
    return ep.namespace !== undefined && ep.pod !== undefined && (this.auditAnnotations.pods.get(ep.namespace)?.has(ep.pod) ?? false);
  }

  private auditedEndpoints(): number {
    return [...this.endpoints.values()].filter((ep) => this.endpointAudited(ep)).length;
  }

  /** Endpoints failing closed now because their policy does not fit the policy map, and the failures counted since start. */
  policyFailures(): { readonly failedEndpoints: number; readonly total: number } {
    return { failedEndpoints: this.policyFailed.size, total: this.policyFailuresTotal };
  }

  /** The datapath fails an identity's endpoints closed when its policy does not fit; name each such pod once, when it starts and when it ends. */
  private reportPolicyFailures(): void {
    const failedSubjects = this.opts.datapath.failedSubjects?.();
    const now = new Set<string>();
    for (const ep of this.endpoints.values()) {
      const identity = ep.ips[0] === undefined ? undefined : this.entryOf(ep, ep.ips[0], this.applied).identity;
      if (identity === undefined || !failedSubjects?.has(identity)) continue;
      now.add(ep.containerId);
      if (this.policyFailed.has(ep.containerId)) continue;
      this.policyFailuresTotal++;
      this.log.error({ namespace: ep.namespace, name: ep.pod, containerId: ep.containerId, identity }, "endpoint fails closed: its policy does not fit the policy map (drop reason POLICY_OVERFLOW)");
    }
    for (const id of this.policyFailed) {
      if (now.has(id)) continue;
      const ep = this.endpoints.get(id);
      if (ep) this.log.info({ namespace: ep.namespace, name: ep.pod, containerId: id }, "endpoint policy installed; no longer failing closed");
    }
    this.policyFailed.clear();
    for (const id of now) this.policyFailed.add(id);
  }

  status(): AgentStatus {
    return {
      connected: this.connected,
      version: this.version,
      lastError: this.lastError,
      endpoints: this.endpoints.size,
      policyEnforcementMode: this.mode,
      policyAuditMode: this.nodeAuditMode(),
      auditedEndpoints: this.auditedEndpoints(),
      ...(this.opts.hostFirewall
        ? { hostFirewall: { ...this.hostFlags, ...(this.auditAnnotations.nodeObject !== undefined ? { nodeObject: this.auditAnnotations.nodeObject } : {}) } }
        : {}),
      ...(this.opts.l7 ? { l7Proxy: this.l7?.status() ?? { running: false, servedPorts: [], error: "the L7 proxy did not start" } } : {}),
      ...(this.opts.runtime ? { runtime: this.opts.runtime.status() } : {}),
    };
  }

  /** The pods of this node as the runtime enforcer reads them: network namespace, name, and the labels of their identity. */
  private runtimePods(): RuntimePod[] {
    const labelsOf = new Map(this.applied.identities.map((i) => [i.id, i.labels]));
    const out: RuntimePod[] = [];
    for (const ep of this.endpoints.values()) {
      if (ep.netns === undefined || ep.namespace === undefined || ep.pod === undefined) continue;
      const identity = ep.ips.length > 0 ? this.entryOf(ep, ep.ips[0]!, this.applied).identity : undefined;
      const labels: Record<string, string> = {};
      for (const l of (identity !== undefined ? labelsOf.get(identity) : undefined) ?? []) {
        // Pod labels are the k8s-source labels of its identity (k8s:app=web); the namespace's own are under io.cilium.k8s.namespace.labels.
        const m = /^k8s:([^=]+)=(.*)$/.exec(l);
        if (m && !m[1]!.startsWith("io.cilium.k8s.") && !m[1]!.startsWith("io.kubernetes.")) labels[m[1]!] = m[2]!;
      }
      const containers = this.podContainers.get(ep.namespace)?.get(ep.pod);
      out.push({ netns: ep.netns, namespace: ep.namespace, name: ep.pod, labels, ...(containers ? { containers } : {}) });
    }
    return out;
  }

  /** Tells the operator each TracingPolicy's status on this node (when the enforcer runs and the stream is up). */
  private sendRuntimeReport(): void {
    if (!this.runtime || !this.call) return;
    this.call.write({ type: "runtime", policies: this.runtime.statuses() });
  }

  /** The other nodes' pod prefixes in the applied ipcache, by node address (WireGuard's allowed IPs when routed). */
  remotePodPrefixes(): Map<string, string[]> {
    return remotePodPrefixes(this.applied.ipcache, this.opts.nodeIP);
  }

  /** Calls `f` whenever status() may have changed (stream up or down, a state applied or refused, endpoints). */
  onStatus(f: () => void): () => void {
    this.statusListeners.push(f);
    return () => {
      const i = this.statusListeners.indexOf(f);
      if (i >= 0) this.statusListeners.splice(i, 1);
    };
  }

  private statusChanged(): void {
    for (const f of this.statusListeners) {
      try {
        f();
      } catch (err) {
        this.log.error({ error: (err as Error).message }, "status listener failed");
      }
    }
  }

  private setConnected(up: boolean): void {
    if (this.connected === up) return;
    this.connected = up;
    this.statusChanged();
  }

  /** The endpoints' veths as recorded (the pod MTU of the agent's mode is applied to them at start: endpoint-mtu.ts). */
  endpointLinks(): EndpointLink[] {
    return [...this.endpoints.values()].map((ep) => this.endpointLink(ep));
  }

  private endpointLink(ep: Endpoint): EndpointLink {
    return { ...(ep.namespace !== undefined ? { namespace: ep.namespace } : {}), ...(ep.pod !== undefined ? { pod: ep.pod } : {}), hostIfname: ep.hostIfname, hostIfindex: ep.hostIfindex, ...(ep.netns ? { netns: ep.netns } : {}) };
  }

  /** The state the maps hold, as the agent last applied it. */
  state(): NodeState {
    return this.applied;
  }

  /** A proxy's flows into the observer (ring, API, exports, metrics), as the datapath's are; dropped without an observer. */
  private recordL7(flows: readonly Flow[]): void {
    const o = this.flowObserver;
    if (o) for (const f of flows) o.record(f);
  }

  /** The running observer (its ring and counters), when the agent was started with one. */
  get observer(): Observer | undefined {
    return this.flowObserver;
  }

  // ---------------------------------------------------------------- the observer

  private async startObserver(o: AgentObserverOptions): Promise<void> {
    const onEvents = this.opts.datapath.onEvents?.bind(this.opts.datapath);
    if (!onEvents) throw new Error("observer: the datapath delivers no verdict events");
    const lostPerCpu = this.opts.datapath.lostEventsPerCpu?.bind(this.opts.datapath);
    const observer = new Observer({ lookups: this.enrichLookups(), buffer: o.buffer ?? DEFAULT_FLOW_BUFFER, hubble: o.hubble, ...(lostPerCpu ? { lostEvents: lostPerCpu } : {}), ...(o.export ? { export: o.export } : {}), ...(o.hubbleExport ? { hubbleExport: o.hubbleExport } : {}), ...(o.flowLogs ? { flowLogs: o.flowLogs } : {}), log: this.log });
    try {
      await observer.start();
    } catch (err) {
      await observer.stop(); // closes the export file it may have opened
      throw err;
    }
    this.flowObserver = observer;
    onEvents(observer.handle);
  }

  /** The policy_match_type lookup over the learned entries written now (rebuilt when they change). */
  private learnedMatch(): PolicyMatchLookup {
    if (this.learnedMatchIndex?.of !== this.learnedWritten) {
      const policies = [...this.learnedWritten].map(([subject, entries]) => ({ subject, ingressEnforced: false, egressEnforced: false, entries }));
      this.learnedMatchIndex = { of: this.learnedWritten, policyMatch: policyMatchIndex(policies) };
    }
    return this.learnedMatchIndex.policyMatch;
  }

  /** Enrichment from what this agent knows: identity labels and rule origins from the applied state, pods from the CNI's registrations. */
  enrichLookups(): EnrichLookups {
    const index = () => {
      if (this.lookupIndex?.state !== this.applied) {
        // Frozen: the same list in flow after flow, so Hubble's encoder writes its bytes once (flowapi/hubble/encode.ts).
        const identities = new Map<number, readonly string[]>(RESERVED_IDENTITIES.map((r) => [r.id, Object.freeze([`reserved:${r.name}`])]));
        for (const i of this.applied.identities) identities.set(i.id, Object.freeze([...i.labels]));
        this.lookupIndex = {
          state: this.applied,
          identities,
          rules: new Map(this.applied.rules.map((r) => [r.id, r.origin])),
          pods: podsFromIpcache(this.applied.ipcache),
          policyMatch: policyMatchIndex(this.applied.policies),
          ipcacheEntry: ipcacheIndex(this.applied.ipcache),
        };
      }
      return this.lookupIndex;
    };
    return {
      node: this.opts.nodeName,
      nodeLabels: () => this.nodeLabels,
      identityLabels: (id) => index().identities.get(id),
      ruleOrigin: (id) => index().rules.get(id),
      // A learned address's own keys (the agent's) come before its class's and any peer's, as in the datapath.
      policyMatch: (ruleId, subject, direction, peer, proto, port, family) => (peer >= MIN_FQDN_IDENTITY ? this.learnedMatch()(ruleId, subject, direction, peer, proto, port, family) : undefined) ?? index().policyMatch(ruleId, subject, direction, peer, proto, port, family),
      // Outside every prefix: the world of its family on a dual-stack node, else reserved:world, as the datapath reads it.
      identityByIp: (ip) => index().ipcacheEntry(ip)?.identity ?? this.opts.datapath.unknownAddressIdentity?.(parseIP(ip)?.family) ?? IDENTITY.world,
      // A remote endpoint whose node has a WireGuard peer on an up device: the datapath tunnels to it encrypted.
      encryptedPeer: (ip) => {
        const encrypted = this.opts.datapath.encryptedNodes?.();
        if (encrypted === undefined || encrypted.size === 0) return false; // no tunnel: no address lookup per flow
        const node = index().ipcacheEntry(ip)?.node;
        return node !== undefined && encrypted.has(node);
      },
      interfaceName: (ifindex) => {
        this.devicesByIfindex ??= new Map([...this.endpoints.values()].map((ep) => [ep.hostIfindex, ep.hostIfname]));
        return this.devicesByIfindex.get(ifindex);
      },
      // What the DNS proxy learned so far, as Cilium names a toFQDNs peer in its flows (the node's cache, not one endpoint's).
      namesByIp: (ip) => this.dns?.namesOf?.(ip),
      endpointByIp: (ip) => {
        if (!this.endpointsByIp) {
          this.endpointsByIp = new Map();
          for (const ep of this.endpoints.values()) {
            if (ep.namespace === undefined || ep.pod === undefined) continue;
            for (const a of ep.ips) this.endpointsByIp.set(a, { namespace: ep.namespace, pod: ep.pod });
          }
        }
        return podByAddress(ip, this.endpointsByIp, index().pods); // remote pods: the ipcache names them
      },
      wallClock: monotonicWallClock(),
    };
  }

  // ---------------------------------------------------------------- the stream

  private connect(): void {
    if (this.stopped || !this.client) return;
    const call = (this.client as unknown as { Stream: () => Call }).Stream();
    this.call = call;
    let ended = false;
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      if (this.connected) this.log.warn({ why, version: this.version }, "operator stream lost; enforcing the last applied state");
      this.setConnected(false);
      if (this.stopped) return;
      const delay = this.backoff.next();
      this.log.info({ delayMs: delay, attempt: this.backoff.attempts }, "reconnecting to the operator");
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
    const up = (): void => {
      if (ended || this.call !== call || this.connected) return;
      this.log.info({ operator: this.opts.operator, resumeFrom: this.version }, "operator stream connected");
      this.backoff.reset();
      this.setConnected(true);
    };
    call.on("data", (m: unknown) => {
      up();
      // One after the other: a message waits for the L7 proxy to listen on its new ports.
      this.messages = this.messages.then(() => this.onMessage(call, m)).catch((err: unknown) => this.log.error({ error: String(err) }, "handling an operator message failed"));
    });
    // A resumed agent whose state is current gets no message: the stream counts as up once the
    // channel is ready and the server has not refused the hello within a moment.
    this.client.waitForReady(Date.now() + 30_000, (err) => {
      if (!err) setTimeout(up, 500).unref();
    });
    call.on("status", (s: grpc.StatusObject) => onEnd(`${grpc.status[s.code] ?? s.code}: ${s.details}`));
    call.on("error", (e: Error) => onEnd(e.message));
    call.on("end", () => onEnd("stream ended"));
    call.write({ type: "hello", node: this.opts.nodeName, ...(this.version !== undefined ? { lastAppliedVersion: this.version } : {}), ...(this.dns ? { dnsProxy: true } : {}), ...(this.l7 ? { l7Proxy: true } : {}), ...(this.runtime ? { runtime: true } : {}), clusterClass: true, everyPodClass: true, worldClass: true, worldFamilyClass: true });
    // What the enforcer runs now: the operator forgot it with the last stream.
    this.sendRuntimeReport();
  }

  private async onMessage(call: Call, raw: unknown): Promise<void> {
    // A message of a stream that ended meanwhile: the operator resends what the next stream needs.
    if (call !== this.call) return;
    const parsed = parseDownstream(raw);
    if (!parsed.ok) {
      // Refused at the edge: nothing was applied, and the operator learns why (on its nonce, when it sent one).
      const m = (typeof raw === "object" && raw !== null ? raw : {}) as { version?: unknown; nonce?: unknown };
      const version = typeof m.version === "number" && Number.isSafeInteger(m.version) && m.version >= 0 ? m.version : (this.version ?? 0);
      const nonce = typeof m.nonce === "string" && m.nonce !== "" ? m.nonce : "malformed";
      const error = `malformed message: ${describeErrors(parsed.errors)}`;
      this.lastError = error;
      this.log.error({ version, error }, "malformed message from the operator; refused, keeping the last applied state");
      call.write({ type: "nack", version, nonce, error });
      this.statusChanged();
      return;
    }
    const msg = parsed.value;
    let target: NodeState;
    const sweep = msg.type === "snapshot" || this.firstApply;
    try {
      if (msg.type === "snapshot") target = canonicalState(msg.state);
      else {
        if (msg.baseVersion !== this.version) throw new Error(`delta ${msg.version} applies on version ${msg.baseVersion}, but this agent holds ${this.version ?? "nothing"}`);
        // The record of what the maps hold (for rollback, resume from disk and the enforcement modes): applyDelta merges
        // only the subjects and parts the delta names and keeps every other object, so it is no second diff of the entries.
        target = applyDelta(this.applied, msg);
      }
      // A delta's subjects go to the maps as the operator computed them (default mode: the maps hold what was received).
      const deltas = msg.type === "delta" && !sweep && this.mode === "default" ? new Map(msg.subjects.map((sd) => [sd.subject, sd])) : undefined;
      // A delta's ipcache writes come from the prefixes it names, not from a comparison of the two whole tables.
      const ipcache = msg.type === "delta" && !sweep ? { delta: msg, writes: this.indexOf(this.applied).writes(msg) } : undefined;
      // The L7 proxy listens on new ports and they are served before any entry names them (else they would be plain allows).
      if (this.l7) await this.l7.prepare(enforcedState(target, this.mode));
      // The DNS proxy takes the new selectors first: the subjects are written with the learned entries they allow.
      this.dns?.prepare(enforcedState(target, this.mode));
      this.apply(this.applied, target, sweep, deltas, ipcache);
      if (ipcache) this.ipcacheIndex?.apply(ipcache.delta, target.ipcache);
    } catch (err) {
      this.dns?.prepare(enforcedState(this.applied, this.mode));
      this.l7?.settle(enforcedState(this.applied, this.mode));
      const error = err instanceof Error ? err.message : String(err);
      this.lastError = error;
      this.log.error({ version: msg.version, kind: msg.type, error }, "state refused; keeping the last applied state");
      call.write({ type: "nack", version: msg.version, nonce: msg.nonce, error });
      this.statusChanged();
      return;
    }
    this.applied = target;
    this.dns?.settle();
    this.l7?.settle(enforcedState(target, this.mode));
    // The runtime enforcer reads the node's TracingPolicies and pods (identity labels may have moved) from its files.
    if (this.runtime) {
      this.runtime.setPods(this.runtimePods());
      this.runtime.setPolicies(target.tracingPolicies ?? []);
    }
    this.reportPolicyFailures();
    this.wakeIdentityWaiters();
    this.version = msg.version;
    this.lastError = undefined;
    this.firstApply = false;
    // Kept before the ACK: a restart then resumes from a version the operator knows we hold.
    this.saveApplied();
    call.write({ type: "ack", version: msg.version, nonce: msg.nonce });
    this.statusChanged();
    // A snapshot (~6 MB of JSON at 50,000 pods) leaves its buffers, its decoded copy and the C heap's free lists in the
    // RSS until V8 happens to collect; a node's first start would keep ~25 MiB more than a restart does (issue #21).
    const released = msg.type === "snapshot" ? releaseHeap() : undefined;
    this.log.info(
      { version: msg.version, kind: msg.type, subjects: target.policies.length, ipcache: target.ipcache.length, ...(released ? { rssMib: mib(released.rssAfter), releasedMib: mib(released.rssBefore - released.rssAfter) } : {}) },
      "state applied",
    );
  }

  /**
   * Moves the maps from `from` to `to` with no window: the target is validated before anything is
   * written; then each subject gets the union of its old and new entries, the ipcache and endpoint
   * flags switch, stale entries go, and last the ipcache prefixes that left. A failure while
   * writing restores `from` (best effort) and rethrows.
   */
  private apply(received: NodeState, target: NodeState, snapshot: boolean, deltas?: ReadonlyMap<number, SubjectDelta>, ipcache?: DeltaIpcache): void {
    // Only what the delta replaced is encoded again: a subject policy the record keeps by object was validated when it came.
    validate(target, this.opts.nodeIP, snapshot ? undefined : received, ipcache);
    // The maps hold the policies as the enforcement mode makes them, never the received ones.
    const from = enforcedState(received, this.mode);
    const to = enforcedState(target, this.mode);
    try {
      this.write(from, to, snapshot, deltas, ipcache?.writes);
    } catch (err) {
      try {
        this.write(to, from, false);
      } catch (rollback) {
        this.log.error({ error: (rollback as Error).message }, "restoring the last applied state failed");
      }
      throw err;
    }
  }

  /** The index of `s`'s ipcache: the one moved along with the last delta, or built now (after a snapshot, a restart or a rollback). */
  private indexOf(s: NodeState): IpcacheIndex {
    if (this.ipcacheIndex?.of !== s.ipcache) this.ipcacheIndex = new IpcacheIndex(s.ipcache, this.opts.nodeIP);
    return this.ipcacheIndex;
  }

  /**
   * With `deltas` (a delta message), a subject the maps hold takes its delta directly: its added
   * entries in step 1, its removed keys in step 4; a subject the message does not name is left as
   * it is. Every other subject (and every subject of a snapshot or a rollback) is written whole.
   * With `ipcacheWrites` (a delta message) the ipcache takes exactly those; otherwise the two
   * datapath ipcaches are compared whole.
   */
  private write(from: NodeState, to: NodeState, snapshot: boolean, deltas?: ReadonlyMap<number, SubjectDelta>, ipcacheWrites?: IpcacheWrites): void {
    const dp = this.opts.datapath;
    // The learned toFQDNs entries are the subject's too: a whole write keeps them (their peers are node-local identities the operator never sends),
    // and a delta adds and removes those its new selectors open and close.
    const learnedBefore = this.learnedWritten;
    const learnedNow = this.learnedOf(to);
    from = withEntries(from, (subject) => learnedBefore.get(subject));
    to = withEntries(to, (subject) => learnedNow.get(subject));
    const oldPolicies = new Map(from.policies.map((p) => [p.subject, p]));
    const failed = dp.failedSubjects?.();
    // A subject the delta leaves alone may still hold other learned entries (an address's world peer moved in the ipcache).
    const unchanged = (s: number): boolean => deltas !== undefined && !deltas.has(s) && oldPolicies.has(s) && !failed?.has(s) && sameEntries(learnedBefore.get(s), learnedNow.get(s));
    const incremental = new Map<number, SubjectDelta>();
    // Subjects with no old entries that step 1 installed as they are now: step 4 would write the same again.
    const installedWhole = new Set<number>();
    // 1. adds: every subject holds old ∪ new (new values win), flags not yet changed.
    for (const p of to.policies) {
      if (unchanged(p.subject)) continue;
      const received = deltas?.get(p.subject);
      const sd = received && withLearnedDelta(received, learnedBefore.get(p.subject), learnedNow.get(p.subject));
      if (sd && oldPolicies.has(p.subject) && dp.addSubjectEntries(p, sd.added)) {
        incremental.set(p.subject, sd);
        continue;
      }
      const old = oldPolicies.get(p.subject)?.entries ?? [];
      if (old.length === 0) {
        if (dp.setSubjectPolicy(p).installed) installedWhole.add(p.subject);
        continue;
      }
      const merged = new Map<string, PolicyEntry>(old.map((e) => [entryKeyString(e), e]));
      for (const e of p.entries) merged.set(entryKeyString(e), e);
      dp.setSubjectPolicy({ ...p, entries: [...merged.values()] });
    }
    // 2. the ipcache switches to the new identities. A snapshot onto empty maps (a node's first start) has nothing
    // to prune afterwards: every entry in the maps then is one it wrote (walking a 51,000-entry trie costs ~0.5 s).
    const pruneAfter = snapshot && !(dp.ipcacheIsEmpty?.() ?? false);
    const ipc = ipcacheWrites ?? this.wholeIpcacheWrites(from, to, snapshot);
    // The ipBlock map first: the entries that name a new ipBlock or node identity are in already, and a node's new
    // address meets a toNodes/fromNodes deny from the first packet its ipcache entry lets through as remote-node.
    for (const e of ipc.setBlocks) dp.setIPBlock(e);
    dp.setIpcacheMany(ipc.set); // in batches: a snapshot sets every entry
    // 3. endpoints take their identity and enforcement from the new state, and so does the host.
    for (const ep of this.endpoints.values()) this.writeEndpoint(ep, to);
    this.syncHost(to);
    // 4. removals: exact new entries, subjects that left lose theirs (including ones pinned before a restart).
    for (const p of to.policies) {
      const sd = incremental.get(p.subject);
      if (sd) dp.removeSubjectEntries(p, sd.removed);
      else if (!unchanged(p.subject) && !installedWhole.has(p.subject)) dp.setSubjectPolicy(p);
    }
    const keep = new Set(to.policies.map((p) => p.subject));
    const gone = new Set(from.policies.map((p) => p.subject).filter((s) => !keep.has(s)));
    if (snapshot) for (const s of pinnedSubjects(dp)) if (!keep.has(s)) gone.add(s);
    for (const s of gone) dp.setSubjectPolicy({ subject: s, ingressEnforced: true, egressEnforced: true, entries: [] });
    // 5. prefixes that left the ipcache (on a snapshot also those pinned before a restart).
    for (const cidr of ipc.remove) tryDelete(() => dp.deleteIpcache(cidr));
    if (pruneAfter) dp.pruneIpcache([...ipc.set.map((e) => e.cidr), ...(this.dns?.learnedPrefixes() ?? [])]); // a snapshot sets every entry but the learned addresses
    for (const cidr of ipc.removeBlocks) tryDelete(() => dp.deleteIPBlock(cidr));
    if (snapshot) dp.pruneIPBlocks(ipc.setBlocks.map((e) => e.cidr));
    this.learnedWritten = learnedNow;
  }

  /**
   * Each subject's entries for the learned addresses now (only subjects with something learned): its toFQDNs selectors',
   * and, as a learned address is a world peer, its world and CIDR rules' where the world class does not answer for it.
   */
  private learnedOf(s: NodeState): Map<number, readonly PolicyEntry[]> {
    const out = new Map<number, readonly PolicyEntry[]>();
    const dns = this.dns;
    if (!dns) return out;
    for (const p of s.policies) {
      const learned = dns.learnedEntries(p.subject);
      if (learned.length > 0) out.set(p.subject, learned);
    }
    return out;
  }

  /** Writes one subject's policy again with what its toFQDNs selectors allow now (the DNS proxy learned or forgot an address). */
  private rewriteSubject(subject: number): void {
    const received = enforcedState(this.applied, this.mode).policies.find((x) => x.subject === subject);
    if (!received) return;
    const learned = this.dns?.learnedEntries(subject) ?? [];
    const p = learned.length === 0 ? received : { ...received, entries: [...received.entries, ...learned] };
    const written = new Map(this.learnedWritten);
    if (learned.length > 0) written.set(subject, learned);
    else written.delete(subject);
    this.learnedWritten = written;
    const r = this.opts.datapath.setSubjectPolicy(p);
    if (!r.installed) this.log.error({ subject, reason: r.reason }, "policy with learned FQDN entries not installed; the identity's endpoints fail closed");
    this.reportPolicyFailures();
  }

  /**
   * An answer's new toFQDNs allows, added to the subject's entries without rewriting the rest (the
   * DNS proxy releases the answer when this returns). False when the datapath cannot take them as an
   * addition (the subject failed closed, or the map is full): the caller rewrites the subject whole.
   */
  private addLearnedEntries(subject: number, added: readonly PolicyEntry[]): boolean {
    const received = enforcedState(this.applied, this.mode).policies.find((x) => x.subject === subject);
    if (!received) return true; // no policy of this node's: nothing to write
    // The lens widens for the added entries only: what the subject holds is in the lens already.
    if (!this.opts.datapath.addSubjectEntries({ ...received, entries: added }, added)) return false;
    this.learnedWritten = new Map(this.learnedWritten).set(subject, [...(this.learnedWritten.get(subject) ?? []), ...added]);
    return true;
  }

  /** The ipcache writes from comparing the two datapath ipcaches whole (a snapshot writes every entry). */
  private wholeIpcacheWrites(from: NodeState, to: NodeState, snapshot: boolean): IpcacheWrites {
    const oldIpc = new Map(datapathIpcache(from, this.opts.nodeIP).map((e) => [e.cidr, e]));
    const newIpc = datapathIpcache(to, this.opts.nodeIP);
    const set = newIpc.filter((e) => {
      const old = oldIpc.get(e.cidr);
      return snapshot || !old || !sameIpcacheEntry(old, e);
    });
    const keep = new Set(newIpc.map((e) => e.cidr));
    return { set, remove: [...oldIpc.keys()].filter((cidr) => !keep.has(cidr)), ...ipBlockWrites(datapathIPBlocks(from), datapathIPBlocks(to), snapshot) };
  }

  // ---------------------------------------------------------------- endpoints

  private async onEndpointRequest(r: AgentRequest): Promise<AgentReply> {
    await Promise.resolve();
    return r.op === "endpoint-add" ? this.addEndpoint(r) : this.deleteEndpoint(r.containerId, r.hostIfname);
  }

  private async addEndpoint(r: EndpointAddRequest): Promise<AgentReply> {
    const ep: Endpoint = {
      containerId: r.containerId,
      ...(r.namespace !== undefined ? { namespace: r.namespace } : {}),
      ...(r.pod !== undefined ? { pod: r.pod } : {}),
      hostIfname: r.hostIfname,
      hostIfindex: r.hostIfindex,
      ips: r.ips,
      ...(r.netns ? { netns: r.netns } : {}),
    };
    const previous = this.endpoints.get(r.containerId);
    if (previous && previous.hostIfindex !== ep.hostIfindex) this.detach(previous);
    // The endpoint entry is written before the programs attach, so the first packet is already judged.
    let entry: EndpointEntry;
    try {
      entry = this.writeEndpoint(ep, enforcedState(this.applied, this.mode));
      this.opts.datapath.attachEndpoint(ep.hostIfindex, this.opts.netns);
    } catch (err) {
      // Refused: the plugin undoes the link, so nothing of this endpoint may stay behind.
      for (const ip of ep.ips) tryDelete(() => this.opts.datapath.deleteEndpoint(ip));
      if (previous && this.endpoints.delete(r.containerId)) this.saveEndpoints();
      this.log.error({ namespace: r.namespace, name: r.pod, containerId: r.containerId, ifindex: r.hostIfindex, error: (err as Error).message }, "endpoint add failed");
      throw err;
    }
    this.endpoints.set(r.containerId, ep);
    this.saveEndpoints();
    this.runtime?.setPods(this.runtimePods());
    this.statusChanged();
    // Wired from a network config older than the agent's mode (its conflist not yet rewritten, or not the agent's own).
    if (r.mtu !== undefined && this.opts.podMtu !== undefined && r.mtu !== this.opts.podMtu.mtu) this.opts.podMtu.mismatched(this.endpointLink(ep));
    // The pod starts when the ADD answers: it waits (bounded) until the endpoint runs under its identity and that identity's policy.
    const waitMs = this.opts.identityWaitMs ?? 0;
    const started = Date.now();
    const ready = waitMs > 0 && r.namespace !== undefined && r.pod !== undefined ? await this.untilEndpointReady(ep, waitMs) : this.endpointReady(ep);
    const waitedMs = Date.now() - started;
    const now = this.endpoints.get(r.containerId) === ep ? this.entryOf(ep, ep.ips[0]!, enforcedState(this.applied, this.mode)) : entry;
    if (waitMs > 0 && !ready && this.endpoints.get(r.containerId) === ep) {
      const claim = r.namespace !== undefined && r.pod !== undefined ? this.podClaims.get(r.namespace)?.get(r.pod) : undefined;
      this.log.warn(
        { namespace: r.namespace, name: r.pod, containerId: r.containerId, ips: r.ips, waitedMs, identity: now.identity, claimedIdentity: claim?.identity, operatorConnected: this.connected },
        now.identity === INIT_IDENTITY
          ? "endpoint starts at reserved:init: its identity did not arrive within --cni-identity-wait (closed both ways but to its node until the operator's state names it)"
          : "endpoint starts closed: its identity's policy did not arrive within --cni-identity-wait",
      );
    }
    this.log.info(
      { namespace: r.namespace, name: r.pod, containerId: r.containerId, ips: r.ips, ifindex: r.hostIfindex, identity: now.identity, resolved: now.identity !== INIT_IDENTITY, repeat: previous !== undefined, waitedMs },
      "endpoint added",
    );
    return { ok: true };
  }

  /** The endpoint runs under an identity whose policy the applied state holds (or it is no longer registered: nothing to wait for). */
  private endpointReady(ep: Endpoint): boolean {
    if (this.endpoints.get(ep.containerId) !== ep) return true;
    const state = enforcedState(this.applied, this.mode);
    const identity = this.entryOf(ep, ep.ips[0]!, state).identity;
    return identity !== INIT_IDENTITY && state.policies.some((p) => p.subject === identity);
  }

  /** Resolves when the endpoint is ready (true) or after `ms` (false); checked again on each applied state and claims change. */
  private untilEndpointReady(ep: Endpoint, ms: number): Promise<boolean> {
    if (this.endpointReady(ep)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.identityWaiters.delete(check);
        resolve(ok);
      };
      const check = (): void => {
        if (this.stopped) done(false);
        else if (this.endpointReady(ep)) done(true);
      };
      const timer = setTimeout(() => done(false), ms);
      this.identityWaiters.add(check);
    });
  }

  private deleteEndpoint(containerId: string, hostIfname: string): AgentReply {
    const ep = this.endpoints.get(containerId);
    if (!ep) {
      this.log.info({ containerId, hostIfname }, "endpoint delete for an unknown endpoint; nothing to do");
      return { ok: true };
    }
    this.detach(ep);
    this.endpoints.delete(containerId);
    this.saveEndpoints();
    this.runtime?.setPods(this.runtimePods());
    this.statusChanged();
    this.log.info({ namespace: ep.namespace, name: ep.pod, containerId, ips: ep.ips }, "endpoint deleted");
    return { ok: true };
  }

  /** Endpoints registered before a restart: their programs and map entries are still in place; the next state rewrites their entries. */
  private loadEndpoints(): void {
    const file = this.opts.endpointsFile;
    if (!file || !fs.existsSync(file)) return;
    const saved = JSON.parse(fs.readFileSync(file, "utf8")) as Endpoint[];
    for (const ep of saved) this.endpoints.set(ep.containerId, ep);
    this.endpointsByIp = undefined;
    this.devicesByIfindex = undefined;
    this.log.info({ endpoints: saved.length, file }, "endpoints restored");
  }

  private saveEndpoints(): void {
    this.endpointsByIp = undefined; // every change to `endpoints` ends here
    this.devicesByIfindex = undefined;
    this.reportPolicyFailures();
    this.statusChanged();
    const file = this.opts.endpointsFile;
    if (file) writeFileAtomic(file, JSON.stringify([...this.endpoints.values()]));
  }

  /**
   * After a restart the records and the kernel may disagree (a DEL while the agent was down, a lost
   * state file, pods wired by a network config without the agent before it started): a record whose
   * veth is gone is dropped with its endpoint entries; a `mbr*` veth no record owns is adopted when the
   * CNI plugin's IPAM still holds its pod with the address routed over it (as Cilium restores its
   * endpoints: the pod keeps its network and is enforced from here on), removed only when the IPAM
   * proves its pod gone, and left alone (logged) otherwise; endpoint entries no record owns go too.
   */
  private reconcileEndpoints(): void {
    const links = this.opts.hostLinks ?? { list: () => listHostLinks(this.opts.netns), remove: (l: HostLink) => removeHostLink(l, this.opts.netns) };
    let found: HostLink[];
    try {
      found = links.list();
    } catch (err) {
      // Without the list nothing can be judged: keep every record (their programs still enforce).
      this.log.error({ netns: this.opts.netns, error: (err as Error).message }, "listing the pods' host links failed; endpoints not reconciled");
      return;
    }
    // After the list: a pod's address is allocated before its link is made, so every listed link's pod is in this read.
    let wired: WiredPod[] | undefined;
    try {
      wired = links.wiredPods ? links.wiredPods() : this.opts.cniStateDir !== undefined ? readWiredPods(this.opts.cniStateDir) : undefined;
    } catch (err) {
      this.log.error({ cniStateDir: this.opts.cniStateDir, error: (err as Error).message }, "reading the CNI plugin's IPAM state failed; pod veths without a record are left alone");
    }
    const plan = planEndpointReconcile([...this.endpoints.values()], found, wired);
    for (const ep of plan.stale) {
      this.endpoints.delete(ep.containerId);
      this.log.warn({ namespace: ep.namespace, name: ep.pod, containerId: ep.containerId, hostIfname: ep.hostIfname, ifindex: ep.hostIfindex }, "endpoint record without its host link dropped");
    }
    const adopted: Endpoint[] = [];
    for (const { link, pod } of plan.adopt) {
      const ep: Endpoint = { containerId: pod.containerId, hostIfname: link.ifname, hostIfindex: link.ifindex, ips: pod.ips };
      try {
        // Written before the programs attach, as for an ADD: the first packet judged is judged by this entry.
        this.writeEndpoint(ep, enforcedState(this.applied, this.mode));
        this.opts.datapath.attachEndpoint(ep.hostIfindex, this.opts.netns);
        this.endpoints.set(ep.containerId, ep);
        adopted.push(ep);
        this.log.info({ containerId: pod.containerId, hostIfname: link.ifname, ifindex: link.ifindex, ips: pod.ips }, "pod veth wired without the agent adopted as an endpoint");
      } catch (err) {
        for (const ip of ep.ips) tryDelete(() => this.opts.datapath.deleteEndpoint(ip));
        this.log.error({ containerId: pod.containerId, hostIfname: link.ifname, ifindex: link.ifindex, error: (err as Error).message }, "pod veth wired without the agent not adopted: it is not enforced");
      }
    }
    for (const link of plan.unproven) {
      this.log.warn({ hostIfname: link.ifname, ifindex: link.ifindex, cniStateDir: this.opts.cniStateDir }, "host link without an endpoint record left alone: the CNI plugin's IPAM does not prove its pod gone, nor names its pod");
    }
    for (const link of plan.orphans) {
      try {
        links.remove(link);
        this.log.warn({ hostIfname: link.ifname, ifindex: link.ifindex }, "host link without an endpoint record removed");
      } catch (err) {
        this.log.error({ hostIfname: link.ifname, ifindex: link.ifindex, error: (err as Error).message }, "host link without an endpoint record could not be removed");
      }
    }
    // Endpoint map entries of no kept record (the dropped ones, and any a crash left) fail nothing open, but are ghosts.
    const keepKeys = new Set([...plan.keep, ...adopted].flatMap((ep) => ep.ips.map((ip) => encodeEndpointKey(ip).toString("hex"))));
    const ghosts = this.opts.datapath.pruneEndpoints?.(keepKeys) ?? 0;
    if (plan.stale.length > 0 || adopted.length > 0) this.saveEndpoints();
    // The kept endpoints switch to this agent's programs (in place: no packet meets a bare interface),
    // so that a new version's datapath reaches the pods that were already running.
    let reattached = 0;
    for (const ep of plan.keep) {
      try {
        this.opts.datapath.attachEndpoint(ep.hostIfindex, this.opts.netns);
        reattached++;
      } catch (err) {
        // The programs of the previous agent stay attached and keep enforcing the shared maps.
        this.log.error({ namespace: ep.namespace, name: ep.pod, ifindex: ep.hostIfindex, error: (err as Error).message }, "endpoint kept its previous programs: re-attaching failed");
      }
    }
    // The pinned program links of interfaces that are gone (removed above, or while the agent was down).
    let defunctLinks = 0;
    try {
      defunctLinks = this.opts.datapath.pruneDefunctLinks?.() ?? 0;
    } catch (err) {
      this.log.error({ error: (err as Error).message }, "pruning the program links of deleted interfaces failed");
    }
    this.log.info({ endpoints: plan.keep.length + adopted.length, dropped: plan.stale.length, adopted: adopted.length, linksRemoved: plan.orphans.length, linksLeftAlone: plan.unproven.length, ghostEntries: ghosts, defunctLinks, reattached }, "endpoints reconciled with host links");
  }

  /** The last acknowledged state, if the pinned maps still hold it; else the first message must be a snapshot. */
  private loadApplied(): void {
    const file = this.opts.appliedFile;
    if (!file || !fs.existsSync(file)) return;
    let saved: AppliedRecord;
    try {
      saved = JSON.parse(fs.readFileSync(file, "utf8")) as AppliedRecord;
      if (!Number.isSafeInteger(saved.version) || saved.version < 0 || typeof saved.state !== "object") throw new Error("not a version and a state");
    } catch (err) {
      this.log.warn({ file, error: (err as Error).message }, "last acknowledged state unreadable; asking for a snapshot");
      return;
    }
    if (saved.policyEnforcementMode !== this.mode) {
      this.log.info({ file, version: saved.version, was: saved.policyEnforcementMode, now: this.mode }, "policy enforcement mode changed; asking for a snapshot");
      return;
    }
    if (this.opts.datapath.lostPinnedState?.()) {
      this.log.warn({ file, version: saved.version }, "an upgrade replaced pinned maps without all their entries; asking for a snapshot");
      return;
    }
    // Maps re-created since (bpffs wiped, node rebooted) are empty: resuming would enforce nothing the operator thinks we hold.
    const state = canonicalState(saved.state);
    const pinned = pinnedSubjects(this.opts.datapath);
    const missing = enforcedState(state, this.mode).policies.filter((p) => p.entries.length > 0 && !pinned.has(p.subject)).map((p) => p.subject);
    if (missing.length > 0) {
      this.log.warn({ file, version: saved.version, missingSubjects: missing.slice(0, 10) }, "pinned maps do not hold the last acknowledged state; asking for a snapshot");
      return;
    }
    // An ipBlock map created since (e.g. by an upgrade to the version that has it) holds none of the state's prefixes.
    if (datapathIPBlocks(state).length > 0 && this.opts.datapath.object.map("membrane_ipblocks").keys().length === 0) {
      this.log.warn({ file, version: saved.version }, "the ipBlock map does not hold the last acknowledged state; asking for a snapshot");
      return;
    }
    this.applied = state;
    this.version = saved.version;
    this.log.info({ version: saved.version, subjects: state.policies.length, ipcache: state.ipcache.length }, "resuming from the last acknowledged state");
  }

  private saveApplied(): void {
    const file = this.opts.appliedFile;
    if (!file || this.version === undefined) return;
    try {
      // 0600: the state holds the TLS material of the proxy's inspected ports (core/model.ts TlsSecretUse).
      // In pieces: one string of a 51,000-entry state (~6 MB, and as much again as the Buffer written) would stay in the RSS.
      writeJsonFileAtomic(file, { version: this.version, state: this.applied, policyEnforcementMode: this.mode } satisfies AppliedRecord, 0o600);
    } catch (err) {
      // Only resumption is lost (the next start asks for a snapshot); enforcement is not affected.
      this.log.error({ file, error: (err as Error).message }, "keeping the acknowledged state on disk failed");
      fs.rmSync(file, { force: true });
    }
  }

  private detach(ep: Endpoint): void {
    this.opts.datapath.detachEndpoint(ep.hostIfindex, this.opts.netns);
    for (const ip of ep.ips) this.opts.datapath.deleteEndpoint(ip);
  }

  /** Writes the endpoint's map entries for `state`: its identity from the ipcache, its flags from that identity's policy; fail closed when either is missing. */
  private writeEndpoint(ep: Endpoint, state: NodeState): EndpointEntry {
    let entry: EndpointEntry | undefined;
    for (const ip of ep.ips) {
      entry = this.entryOf(ep, ip, state);
      if (this.endpointAudited(ep)) entry = { ...entry, auditMode: true };
      this.opts.datapath.setEndpoint(entry);
    }
    return entry as EndpointEntry;
  }
}

/** The endpoint entry of one pod address under `state` (its policies already as `mode` enforces them). */
export function endpointEntry(ip: string, ifindex: number, state: NodeState, mode: PolicyEnforcementMode = "default", claimed?: () => number | undefined): EndpointEntry {
  const host = hostPrefix(ip);
  // The operator's ipcache names the pod once it has learned the address; until then, its pod object's claim (pod-identity.ts).
  const identity = state.ipcache.find((e) => e.prefix === host || e.prefix === ip)?.identity ?? claimed?.();
  const policy: SubjectPolicy | undefined = identity === undefined ? undefined : state.policies.find((p) => p.subject === identity);
  if (identity === undefined) return { ip, ifindex, identity: INIT_IDENTITY, ...unresolvedEnforcement(mode) };
  if (!policy) return { ip, ifindex, identity, ...unresolvedEnforcement(mode) };
  return { ip, ifindex, identity, ingressEnforced: policy.ingressEnforced, egressEnforced: policy.egressEnforced };
}

/** A delta's ipcache part and the datapath writes it makes. */
interface DeltaIpcache {
  readonly delta: IPCacheDelta;
  readonly writes: IpcacheWrites;
}

/**
 * Encodes everything the state would write, so a bad value is refused before any map changes; the
 * error names the field. Parts of `s` that are the very objects of `validated` (a state validated
 * before) are skipped: after a delta that is every subject it did not name, and with `ipcache` (the
 * delta's ipcache part) every ipcache entry it does not upsert.
 */
export function validate(s: NodeState, nodeIP?: string, validated?: NodeState, ipcache?: DeltaIpcache): void {
  const held = new Map(validated?.policies.map((p) => [p.subject, p]));
  const nodes = new Set<string>(); // a node's address is named by each of its pods: checked once
  const check = (e: IPCacheEntry, i: number): void => {
    try {
      checkIpcachePrefix(e.prefix);
      if (e.node !== undefined && !nodes.has(e.node)) {
        checkIpcachePrefix(e.node);
        nodes.add(e.node);
      }
    } catch (err) {
      throw new Error(`ipcache[${i}] (${e.prefix}): ${(err as Error).message}`, { cause: err });
    }
  };
  if (ipcache) {
    for (const e of ipcache.delta.ipcacheUpserts) check(e, positionOf(s.ipcache, e.prefix));
    for (const e of ipcache.writes.set) checkIpcacheValue(e);
  } else {
    s.ipcache.forEach(check);
    for (const e of datapathIpcache(s, nodeIP)) checkIpcacheValue(e);
  }
  s.policies.forEach((p, i) => {
    if (held.get(p.subject) === p) return;
    p.entries.forEach((e, j) => {
      try {
        if (e.subject !== p.subject) throw new Error(`entry subject ${e.subject} is not the policy's subject ${p.subject}`);
        encodePolicyKey(e);
        encodePolicyValue(e);
      } catch (err) {
        throw new Error(`policies[${i}].entries[${j}] (subject ${p.subject}): ${(err as Error).message}`, { cause: err });
      }
    });
  });
}

/** Where `prefix` sits in a canonical (sorted) ipcache, for naming it in an error. */
function positionOf(ipcache: readonly IPCacheEntry[], prefix: string): number {
  let lo = 0;
  let hi = ipcache.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = comparePrefixes(ipcache[mid]!.prefix, prefix);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return ipcache.findIndex((e) => e.prefix === prefix);
}

/** Subjects that have entries in the pinned policy map (e.g. written before this process started). */
function pinnedSubjects(dp: AgentDatapath): Set<number> {
  const offset = LAYOUT.policy_key.fields.subject.offset;
  const out = new Set<number>();
  dp.object.map("membrane_policy").forEachKey((keys, at) => out.add(keys.readUInt32LE(at + offset)));
  return out;
}

function writeFileAtomic(file: string, text: string, mode?: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, mode === undefined ? undefined : { mode });
  fs.renameSync(tmp, file);
}

const mib = (bytes: number): number => Math.round(bytes / 1048576);

function tryDelete(f: () => void): void {
  try {
    f();
  } catch {
    // a prefix that never made it into the map
  }
}

/** `s` with `extra(subject)` added to each subject's entries (the same object when nothing is added). */
function withEntries(s: NodeState, extra: (subject: number) => readonly PolicyEntry[] | undefined): NodeState {
  let changed = false;
  const policies = s.policies.map((p) => {
    const more = extra(p.subject);
    if (!more || more.length === 0) return p;
    changed = true;
    return { ...p, entries: [...p.entries, ...more] };
  });
  return changed ? { ...s, policies } : s;
}

/** Whether two lists of learned entries are the same (the same keys with the same values, in any order). */
function sameEntries(a: readonly PolicyEntry[] | undefined, b: readonly PolicyEntry[] | undefined): boolean {
  if (a === b) return true;
  if ((a?.length ?? 0) === 0 && (b?.length ?? 0) === 0) return true;
  if (!a || !b) return false;
  const byKey = new Map(a.map((e) => [entryKeyString(e), e]));
  if (byKey.size !== new Set(b.map(entryKeyString)).size) return false;
  return b.every((e) => {
    const o = byKey.get(entryKeyString(e));
    return o !== undefined && o.verdict === e.verdict && o.proxyPort === e.proxyPort && o.ruleId === e.ruleId;
  });
}

/** A received subject delta plus the learned entries that came (added) and went (removed). */
function withLearnedDelta(sd: SubjectDelta, before: readonly PolicyEntry[] | undefined, now: readonly PolicyEntry[] | undefined): SubjectDelta {
  if (!before?.length && !now?.length) return sd;
  const nowKeys = new Set((now ?? []).map(entryKeyString));
  const beforeByKey = new Map((before ?? []).map((e) => [entryKeyString(e), e]));
  const added = (now ?? []).filter((e) => {
    const b = beforeByKey.get(entryKeyString(e));
    return !b || b.ruleId !== e.ruleId || b.verdict !== e.verdict || b.proxyPort !== e.proxyPort;
  });
  const removed = (before ?? []).filter((e) => !nowKeys.has(entryKeyString(e)));
  return { ...sd, added: [...sd.added, ...added], removed: [...sd.removed, ...removed] };
}
