// Publishes the agent's health: on its own CiliumNode (status conditions Ready, DatapathLoaded, PolicySynced, HostFirewall with the host firewall, L7Proxy with the L7 proxy, RuntimeEnforcer with the runtime enforcer, its version and acknowledged policy version, the observer's address annotation), and its liveness as a heartbeat Lease.
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { Backoff } from "../kube/backoff.ts";
import { type Condition, type ConditionInput, mergeConditions, sameConditions } from "../kube/conditions.ts";
import { HEARTBEAT_TIMING, LeaseHeartbeat, agentLeaseName } from "../kube/heartbeat.ts";
import { type KubeClient, type KubeObject, resourcePath } from "../kube/kube.ts";
import type { OwnerReference } from "../kube/leader.ts";
import { CILIUM_NODES, NODES } from "../kube/resources.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import { AGENT_API_ADDRESS_ANNOTATION } from "../kube/objects.ts";
import type { AgentStatus } from "./agent.ts";
import type { EncryptionPublication, EncryptionStatusReport } from "./encryption/publication.ts";

/** `status.agent` of a CiliumNode: what `membrane status` shows per node besides the conditions. */
export interface AgentReport {
  version?: string;
  policyVersion?: number;
  /** The whole node in policy audit mode (always written, so that switching off shows). */
  policyAuditMode?: boolean;
  /** Endpoints in audit mode through their pod's annotation. */
  auditedEndpoints?: number;
}

interface CiliumNodeHealthObject extends KubeObject {
  spec?: { ipam?: { podCIDRs?: string[] }; encryption?: { key?: number; publicKey?: string } };
  status?: { conditions?: Condition[]; agent?: AgentReport; encryption?: EncryptionStatusReport };
}

/** This build's Membrane version (package.json), or "unknown" where the file is not shipped. */
export function membraneVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

/** The agent block for a status: the version and audit mode always, the policy version once one was acknowledged. */
export function agentReport(s: AgentStatus, version: string): AgentReport {
  const audit = { policyAuditMode: s.policyAuditMode, auditedEndpoints: s.auditedEndpoints };
  return s.version === undefined ? { version, ...audit } : { version, policyVersion: s.version, ...audit };
}

/** What Ready's message adds in audit mode: policy is not enforced where it says. */
function auditText(s: AgentStatus): string {
  if (s.policyAuditMode) return "; policy audit mode: policy drops pass and are reported as AUDIT";
  return s.auditedEndpoints > 0 ? `; ${s.auditedEndpoints} endpoint(s) in policy audit mode` : "";
}

/** The agent's conditions from its status: pure, so what each state reports is tested without a cluster. */
export function healthConditions(s: AgentStatus, datapath: string, observedGeneration?: number): ConditionInput[] {
  const gen = observedGeneration !== undefined ? { observedGeneration } : {};
  const held = s.version === undefined ? "no state applied yet" : `enforcing version ${s.version}`;
  let synced: ConditionInput;
  if (s.lastError !== undefined) {
    synced = { type: "PolicySynced", status: "False", reason: "StateRefused", message: `the operator's latest state was refused: ${s.lastError}; ${held}`, ...gen };
  } else if (!s.connected) {
    synced = { type: "PolicySynced", status: "False", reason: "OperatorUnreachable", message: `no stream to the operator; ${held}`, ...gen };
  } else if (s.version === undefined) {
    synced = { type: "PolicySynced", status: "False", reason: "Waiting", message: "connected; waiting for the first state", ...gen };
  } else {
    synced = { type: "PolicySynced", status: "True", reason: "Acknowledged", message: `version ${s.version} applied and acknowledged (policy enforcement mode ${s.policyEnforcementMode})`, ...gen };
  }
  const loaded: ConditionInput = { type: "DatapathLoaded", status: "True", reason: "Loaded", message: datapath, ...gen };
  const ready: ConditionInput =
    synced.status === "True"
      ? { type: "Ready", status: "True", reason: "Enforcing", message: `${s.endpoints} endpoint(s); ${held}${auditText(s)}`, ...gen }
      : { type: "Ready", status: "False", reason: synced.reason, message: synced.message, ...gen };
  return [ready, loaded, synced, ...(s.hostFirewall ? [hostFirewallCondition(s.hostFirewall, gen)] : []), ...(s.l7Proxy ? [l7ProxyCondition(s.l7Proxy, gen)] : []), ...(s.runtime ? [runtimeCondition(s.runtime, gen)] : [])];
}

/**
 * With the runtime enforcer (--enable-runtime): `RuntimeEnforcer` says whether `membrane runtime` runs and how many
 * of the node's TracingPolicies it enforces. Down (`EnforcerDown`), nothing is judged: the opens, execs and connects
 * it would deny pass until the agent has restarted it.
 */
export function runtimeCondition(r: NonNullable<AgentStatus["runtime"]>, gen: { observedGeneration?: number } = {}): ConditionInput {
  if (!r.running) return { type: "RuntimeEnforcer", status: "False", reason: "EnforcerDown", message: `${r.error ?? "the runtime enforcer is not running"}: TracingPolicies are not enforced on this node until it is back`, ...gen };
  const counts = `${r.enforced} TracingPolicy(ies) enforced${r.notEnforced > 0 ? `, ${r.notEnforced} not (see each policy's status)` : ""}`;
  const events = r.address !== undefined ? `; process events: membrane observe --type process --runtime-address ${r.address}` : "";
  const warning = r.warning !== undefined ? `; warning: ${r.warning}` : "";
  return { type: "RuntimeEnforcer", status: "True", reason: "Running", message: `pid ${r.pid ?? "?"}; ${counts}${warning}${events}`, ...gen };
}

/**
 * With the L7 proxy: `L7Proxy` says whether it runs. Down (`ProxyDown`), the connections the datapath steers to
 * its ports fail (never bypass its rules): the message names the ports and why.
 */
export function l7ProxyCondition(p: NonNullable<AgentStatus["l7Proxy"]>, gen: { observedGeneration?: number } = {}): ConditionInput {
  const ports = p.servedPorts.length === 0 ? "no proxy port served" : `proxy port${p.servedPorts.length === 1 ? "" : "s"} ${p.servedPorts.join(", ")}`;
  if (!p.running) return { type: "L7Proxy", status: "False", reason: "ProxyDown", message: `${p.error ?? "the L7 proxy is not running"}: connections to ${ports} fail until it is back`, ...gen };
  if (p.error !== undefined) return { type: "L7Proxy", status: "False", reason: "ConfigurationNotApplied", message: `${p.error}; ${ports}`, ...gen };
  return { type: "L7Proxy", status: "True", reason: "Running", message: `HTTP rules enforced by the node's proxy; ${ports}`, ...gen };
}

/**
 * With the host firewall: `HostFirewall` says whether the node's host endpoint is enforced, and why not. A node
 * without a Node object is False (`NoNodeObject`): nodeSelectors match Node labels, and the operator sends such a
 * node no state, so it is not failed closed but named.
 */
export function hostFirewallCondition(h: NonNullable<AgentStatus["hostFirewall"]>, gen: { observedGeneration?: number } = {}): ConditionInput {
  const dirs = [h.ingressEnforced ? "ingress" : undefined, h.egressEnforced ? "egress" : undefined].filter((d) => d !== undefined);
  const held = dirs.length > 0 ? `the last state held enforces ${dirs.join(" and ")}` : "the host endpoint is not enforced";
  if (h.nodeObject === false) return { type: "HostFirewall", status: "False", reason: "NoNodeObject", message: `no Node object for this node: no host policy (CCNP nodeSelector) can select it; ${held}`, ...gen };
  if (dirs.length === 0) return { type: "HostFirewall", status: "True", reason: "NoHostPolicy", message: "no host policy selects this node: its host endpoint is allow-all (the lock-out guard aside)", ...gen };
  return { type: "HostFirewall", status: "True", reason: "Enforced", message: `host policy enforced on ${dirs.join(" and ")}`, ...gen };
}

export interface CiliumNodeHealthOptions {
  readonly client: Pick<KubeClient, "get" | "mergePatch">;
  readonly nodeName: string;
  readonly status: () => AgentStatus;
  /** Subscribes to status changes; returns the unsubscribe. */
  readonly onStatus: (f: () => void) => () => void;
  /** What the datapath is (for DatapathLoaded's message), e.g. the pin directory. */
  readonly datapath: string;
  /** The agent's version for `status.agent.version` (default: package.json's). */
  readonly agentVersion?: string;
  /** Where Hubble's API listens (for the relay), read when publishing: it is known once the observer started. */
  readonly hubbleAddress?: () => string | undefined;
  /** Where the agent's HTTP server (health, metrics, the FQDN cache listing) listens, once it does. */
  readonly agentApiAddress?: () => string | undefined;
  /** With encryption on: its EncryptionReady condition and spec.encryption, published with the rest. */
  readonly encryption?: () => EncryptionPublication;
  /** Called with the node's pod CIDRs each time the CiliumNode is read. */
  readonly onPodCIDRs?: (cidrs: readonly string[]) => void;
  readonly log: Logger;
  /** Re-publish this often even without a change, healing an overwrite (default 60 s). */
  readonly resyncMs?: number;
  readonly backoff?: { baseMs: number; maxMs: number; jitter: number };
}

/** Level-triggered: each round reads the CiliumNode and writes what differs; a failure is logged and retried, never fatal. */
export class CiliumNodeHealth {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private dirty = false;
  private stopped = true;
  private unsubscribe: (() => void) | undefined;
  private lastFailure: string | undefined;
  private readonly backoff: Backoff;
  private inFlight: Promise<void> | undefined;
  private readonly agentVersion: string;

  constructor(private readonly o: CiliumNodeHealthOptions) {
    this.backoff = new Backoff(o.backoff ?? { baseMs: 500, maxMs: 30_000, jitter: 0.2 });
    this.agentVersion = o.agentVersion ?? membraneVersion();
  }

  start(): void {
    this.stopped = false;
    this.unsubscribe = this.o.onStatus(() => this.schedule(0));
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    await this.inFlight;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.running) {
      this.dirty = true; // publish again once the current round ends
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void (this.inFlight = this.round()), delayMs);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    this.running = true;
    this.dirty = false;
    let next = this.o.resyncMs ?? 60_000;
    try {
      await this.publish();
      if (this.lastFailure !== undefined) this.o.log.info({ name: this.o.nodeName }, "CiliumNode health published again");
      this.lastFailure = undefined;
      this.backoff.reset();
    } catch (err) {
      const error = (err as Error).message;
      next = this.backoff.next();
      // One line per distinct failure, not one per retry.
      if (error !== this.lastFailure) this.o.log.warn({ name: this.o.nodeName, error, retryMs: next }, "publishing health on the CiliumNode failed; enforcement is not affected");
      this.lastFailure = error;
    } finally {
      this.running = false;
    }
    this.schedule(this.dirty ? 0 : next);
  }

  private async publish(): Promise<void> {
    const path = resourcePath(CILIUM_NODES, undefined, this.o.nodeName);
    const cn = await this.o.client.get<CiliumNodeHealthObject>(path);
    this.o.onPodCIDRs?.(cn.spec?.ipam?.podCIDRs ?? []);
    const status = this.o.status();
    const enc = this.o.encryption?.();
    const gen = cn.metadata.generation !== undefined ? { observedGeneration: cn.metadata.generation } : {};
    const computed = [...healthConditions(status, this.o.datapath, cn.metadata.generation), ...(enc ? [{ ...enc.condition, ...gen }] : [])];
    const want = mergeConditions(cn.status?.conditions, computed, new Date());
    const agent = agentReport(status, this.agentVersion);
    const have = cn.status?.agent;
    const sameAgent =
      have?.version === agent.version && have?.policyVersion === agent.policyVersion && have?.policyAuditMode === agent.policyAuditMode && have?.auditedEndpoints === agent.auditedEndpoints;
    const encStatus = enc?.status;
    const sameEncryption = encStatus === undefined || sameEncryptionStatus(cn.status?.encryption, encStatus);
    if (!sameConditions(cn.status?.conditions, want) || !sameAgent || !sameEncryption) {
      await this.o.client.mergePatch(`${path}/status`, { status: { conditions: want, agent, ...(encStatus ? { encryption: encStatus } : {}) } });
      this.o.log.info({ name: this.o.nodeName, conditions: Object.fromEntries(want.map((c) => [c.type, `${c.status}/${c.reason}`])) }, "CiliumNode health published");
    }
    if (enc && (cn.spec?.encryption?.key !== enc.spec.key || cn.spec?.encryption?.publicKey !== enc.spec.publicKey)) {
      // Absent fields are cleared: a node that stops announcing a key must not leave the old one behind.
      await this.o.client.mergePatch(path, { spec: { encryption: { key: enc.spec.key ?? null, publicKey: enc.spec.publicKey ?? null } } });
      this.o.log.info({ name: this.o.nodeName, key: enc.spec.key, publicKey: enc.spec.publicKey }, "encryption parameters announced on the CiliumNode");
    }
    const annotations: Record<string, string> = {};
    const hubble = this.o.hubbleAddress?.();
    if (hubble !== undefined && cn.metadata.annotations?.[HUBBLE_ADDRESS_ANNOTATION] !== hubble) annotations[HUBBLE_ADDRESS_ANNOTATION] = hubble;
    const api = this.o.agentApiAddress?.();
    if (api !== undefined && cn.metadata.annotations?.[AGENT_API_ADDRESS_ANNOTATION] !== api) annotations[AGENT_API_ADDRESS_ANNOTATION] = api;
    if (Object.keys(annotations).length > 0) {
      // Metadata is not writable through /status: this needs `patch` on ciliumnodes.
      await this.o.client.mergePatch(path, { metadata: { annotations } });
      this.o.log.info({ name: this.o.nodeName, annotations }, "observer addresses annotated on the CiliumNode");
    }
  }
}

function sameEncryptionStatus(a: EncryptionStatusReport | undefined, b: EncryptionStatusReport): boolean {
  return a !== undefined && a.mode === b.mode && a.interface === b.interface && a.peers === b.peers && a.lastHandshake === b.lastHandshake && a.rxBytes === b.rxBytes && a.txBytes === b.txBytes;
}

export interface AgentHeartbeatOptions {
  readonly client: Pick<KubeClient, "request">;
  readonly nodeName: string;
  readonly namespace: string;
  readonly log: Logger;
  /** Test hook: the kubelet's timings otherwise (renew every 10 s, dead after 40 s). */
  readonly timing?: { renewMs: number; leaseDurationSeconds: number };
}

/**
 * The agent's heartbeat: Lease `membrane-agent-<node>` held by the node and owned by its Node, renewed as a
 * kubelet renews its node Lease. Conditions on the CiliumNode say how the agent is; only a Lease that keeps being
 * renewed says it is still there to say so (a dead agent leaves its last Ready=True behind).
 */
export function agentHeartbeat(o: AgentHeartbeatOptions): LeaseHeartbeat {
  const timing = o.timing ?? HEARTBEAT_TIMING;
  // Owned by the Node, so a node that leaves the cluster (its Node deleted) takes its agent's Lease with it.
  const owner = async (): Promise<OwnerReference | undefined> => {
    try {
      const node = await o.client.request<KubeObject>("GET", resourcePath(NODES, undefined, o.nodeName));
      return node.metadata.uid ? { apiVersion: "v1", kind: "Node", name: o.nodeName, uid: node.metadata.uid } : undefined;
    } catch {
      return undefined; // no Node object (yet), or not readable: the heartbeat goes on, adopted once it is read
    }
  };
  return new LeaseHeartbeat({ client: o.client, namespace: o.namespace, name: agentLeaseName(o.nodeName), identity: o.nodeName, log: o.log, owner, ...timing });
}
