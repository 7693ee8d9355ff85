// Policy reconciler: a NetworkPolicy, CNP or CCNP → the core parser → status conditions Valid and
// Enforced with observedGeneration and the number of selected endpoints, and a Warning Event per failure.
import type { Logger } from "pino";
import { describeGaps, enforcementGaps, type GapOptions } from "../core/enforcement-gaps.ts";
import type { Policy } from "../core/model.ts";
import { type CIDRGroup, missingCIDRGroups } from "../core/cidr-group.ts";
import { parsePolicyObject } from "../core/parser/index.ts";
import type { Reconciler, ReconcileResult } from "../kube/controller.ts";
import { type Condition, type ConditionInput, mergeConditions, sameConditions } from "../kube/conditions.ts";
import type { EventRecorder } from "../kube/events.ts";
import type { Informer } from "../kube/informer.ts";
import { splitKey } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, type Resource, isNotFound, resourcePath } from "../kube/kube.ts";
import type { OperatorMetrics } from "../kube/metrics.ts";
import type { Selection } from "./selection.ts";
import { ParsedPolicies } from "./parsed-policies.ts";

export interface PolicyObject extends KubeObject {
  status?: PolicyStatus;
}

/** The status fields the operator owns (crds/schema/network-policy.ts). */
export interface PolicyStatus {
  conditions?: Condition[];
  observedGeneration?: number;
  enforced?: string;
  enforcedNodes?: number;
  totalNodes?: number;
  selectedEndpoints?: number;
  nodeErrors?: { node: string; message: string }[];
}

/** What the agents reported for one policy generation (filled by distribution; empty until then). */
export interface Enforcement {
  readonly acknowledged: number;
  readonly refused: readonly { readonly node: string; readonly message: string }[];
  /** Nodes concerned whose agents run no DNS proxy (absent: not known, so DNS rules and toFQDNs count as not enforced). */
  readonly withoutDnsProxy?: readonly string[];
  /** Nodes concerned whose agents run no L7 proxy (absent: not known, so HTTP rules count as not enforced). */
  readonly withoutL7Proxy?: readonly string[];
  /** Why a TLS context's Secret cannot be served (controllers/policy-secrets.ts); absent: not known. */
  readonly tlsSecretProblem?: GapOptions["tlsSecretProblem"];
  /** Nodes concerned whose agents have answered nothing (no ACK, no NACK) since this operator started; absent: not known. */
  readonly unheard?: readonly string[];
}

export interface PolicyDeps {
  readonly client: KubeClient;
  readonly resource: Resource;
  readonly policies: Informer<PolicyObject>;
  readonly nodes: Informer<KubeObject>;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly log: Logger;
  /** Which endpoints (pods) the parsed policies select; undefined when unknown (then every node counts). */
  readonly select?: (policies: readonly Policy[]) => Selection;
  /** Moves whenever what `select` reads (pods, namespaces) changes; with it, a selection is reused until then. */
  readonly endpointsVersion?: () => number;
  /** What the agents of `nodes` (the nodes the policy concerns) reported for this generation. */
  readonly enforcement?: (obj: PolicyObject, nodes: ReadonlySet<string>) => Enforcement;
  /** The parses shared with the distribution (each generation parsed once); a private one when absent. */
  readonly parsed?: ParsedPolicies;
  /** The CiliumCIDRGroups now (controllers/cidr-groups.ts): a cidrGroupRef to one not there is named in Enforced. */
  readonly cidrGroups?: () => ReadonlyMap<string, CIDRGroup>;
  /** Whether the agent reconnect grace after the operator's start still runs (see duringReconnectGrace); absent: it does not. */
  readonly inReconnectGrace?: () => boolean;
}

/** Formats every parse error with its field path, for the condition message and the Event. */
export function describeErrors(errors: readonly { path: string; message: string }[]): string {
  return errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join("; ");
}

/** The Valid and Enforced conditions for one parse result and enforcement report. */
export function policyConditions(
  parsed: ReturnType<typeof parsePolicyObject>,
  generation: number | undefined,
  nodes: number,
  enforcement: Enforcement,
  missingGroups: readonly string[] = [],
): ConditionInput[] {
  const g = generation === undefined ? {} : { observedGeneration: generation };
  if (!parsed.ok) {
    return [
      { type: "Valid", status: "False", reason: "ParseError", message: describeErrors(parsed.errors), ...g },
      { type: "Enforced", status: "False", reason: "Invalid", message: `0/${nodes} nodes: the policy is invalid`, ...g },
    ];
  }
  const rules = parsed.value.reduce((n, p) => n + p.rules.length, 0);
  const valid: ConditionInput = { type: "Valid", status: "True", reason: "Parsed", message: `${rules} rule${rules === 1 ? "" : "s"}`, ...g };
  const count = `${enforcement.acknowledged}/${nodes} nodes`;
  // A rule the datapath cannot enforce yet makes the policy not enforced, whatever the nodes acknowledged.
  const gaps = enforcementGaps(parsed.value, { withoutDnsProxy: enforcement.withoutDnsProxy, withoutL7Proxy: enforcement.withoutL7Proxy, tlsSecretProblem: enforcement.tlsSecretProblem });
  let enforced: ConditionInput;
  const why = enforcement.refused.map((r) => `${r.node}: ${r.message}`).join("; ");
  const refused = why === "" ? "" : `; refused by ${why}`;
  // A cidrGroupRef to a group that is not there selects nothing (fail closed), as in Cilium: the user hears which.
  const missing = missingGroups.length === 0 ? "" : `; ${missingGroups.map((n) => JSON.stringify(n)).join(", ")}: no such CiliumCIDRGroup, so the cidrGroupRef entries naming ${missingGroups.length === 1 ? "it select" : "them select"} nothing`;
  if (gaps.length > 0) {
    enforced = { type: "Enforced", status: "False", reason: "RulesNotEnforced", message: `${count}${refused}; ${describeGaps(gaps)}${missing}`, ...g };
  } else if (missing !== "") {
    enforced = { type: "Enforced", status: "False", reason: "CIDRGroupNotFound", message: `${count}${refused}${missing}`, ...g };
  } else if (enforcement.refused.length > 0) {
    enforced = { type: "Enforced", status: "False", reason: "Refused", message: `${count}; refused by ${why}`, ...g };
  } else if (nodes > 0 && enforcement.acknowledged >= nodes) {
    enforced = { type: "Enforced", status: "True", reason: "Acknowledged", message: count, ...g };
  } else {
    enforced = { type: "Enforced", status: "Unknown", reason: nodes === 0 ? "NoSelectedEndpoints" : "Pending", message: count, ...g };
  }
  return [valid, enforced];
}

/**
 * The enforcement a status shows during the agent reconnect grace (the operator's --agent-reconnect-grace). Right after an
 * operator starts no agent has reconnected yet: counting the nodes it has not heard from as not enforcing would lower every
 * policy's status to "0/N nodes" (≈ 1,400 status writes at bench/scale's full size, beside the identity GC's deletes) while
 * those agents go on enforcing what they hold, and raise it again as they come back. Until the grace is over, a node not
 * heard from counts as the stored status of this very generation and node count saw it: the acknowledged count stays up to
 * the stored one (never above the heard nodes' ACKs plus the unheard nodes), a refusal it names stands, and when that status
 * found every rule enforceable, the unheard nodes are not named as lacking a DNS or L7 proxy. Anything heard (an ACK, a NACK), a new
 * generation or another node count is shown as it is; the real count is written once the grace is over.
 */
export function duringReconnectGrace(reported: Enforcement, stored: PolicyStatus | undefined, generation: number | undefined, nodes: number): Enforcement {
  const unheard = reported.unheard ?? [];
  if (unheard.length === 0 || stored === undefined || generation === undefined || stored.observedGeneration !== generation || stored.totalNodes !== nodes) return reported;
  const away = new Set(unheard);
  // A node that refused this generation and has not been heard from since still refuses it.
  const stillRefusing = (stored.nodeErrors ?? []).filter((e) => away.has(e.node));
  const refused = [...reported.refused, ...stillRefusing];
  const acknowledged = Math.min(Math.max(stored.enforcedNodes ?? 0, reported.acknowledged), reported.acknowledged + unheard.length - stillRefusing.length);
  const enforced = stored.conditions?.find((c) => c.type === "Enforced");
  if (enforced === undefined || enforced.reason === "RulesNotEnforced") return { ...reported, acknowledged, refused };
  const heard = (list: readonly string[] | undefined): readonly string[] | undefined => list?.filter((n) => !away.has(n));
  return { ...reported, acknowledged, refused, withoutDnsProxy: heard(reported.withoutDnsProxy), withoutL7Proxy: heard(reported.withoutL7Proxy) };
}

export type EnforcementState = "enforced" | "partial" | "pending" | "refused" | "invalid";

/**
 * The metrics' view of the conditions: invalid, refused by a node, enforced on every concerned node,
 * partial (valid, but some rules are not enforced by this build: RulesNotEnforced), or still pending.
 */
export function enforcementState(conditions: readonly ConditionInput[]): EnforcementState {
  if (conditions.some((c) => c.type === "Valid" && c.status === "False")) return "invalid";
  const e = conditions.find((c) => c.type === "Enforced");
  if (e?.status === "True") return "enforced";
  if (e?.reason === "RulesNotEnforced" || e?.reason === "CIDRGroupNotFound") return "partial";
  return e?.reason === "Refused" ? "refused" : "pending";
}

const NO_ENFORCEMENT: Enforcement = { acknowledged: 0, refused: [] };

export function policyReconciler(d: PolicyDeps): Reconciler {
  const kind = d.resource.kind;
  const parses = d.parsed ?? new ParsedPolicies();
  const state = new Map<string, "valid" | "invalid">();
  const enforcementStates = new Map<string, EnforcementState>();
  const countEnforcement = (): void => {
    const counts: Record<EnforcementState, number> = { enforced: 0, partial: 0, pending: 0, refused: 0, invalid: 0 };
    for (const s of enforcementStates.values()) counts[s]++;
    for (const [s, n] of Object.entries(counts)) d.metrics.policyEnforcement.set({ kind, state: s }, n);
  };
  const memos = new Map<string, { obj: PolicyObject; version: number | undefined; parsed: ReturnType<typeof parsePolicyObject>; selection: Selection | undefined }>();
  const countStates = (): void => {
    let valid = 0;
    let invalid = 0;
    for (const s of state.values()) if (s === "valid") valid++;
    else invalid++;
    d.metrics.policies.set({ kind, state: "valid" }, valid);
    d.metrics.policies.set({ kind, state: "invalid" }, invalid);
  };

  return {
    name: `policy-${d.resource.plural}`,
    async reconcile(key: string): Promise<ReconcileResult | void> {
      const obj = d.policies.get(key);
      if (!obj) {
        memos.delete(key);
        state.delete(key);
        enforcementStates.delete(key);
        countStates();
        countEnforcement();
        return;
      }
      const { namespace, name } = splitKey(key);
      // Agents' ACKs re-run this often: parse and selection are reused while the object and the endpoints stay the same.
      const version = d.endpointsVersion?.();
      let memo = memos.get(key);
      if (!memo || memo.obj !== obj || version === undefined || memo.version !== version) {
        const parsed = parses.parse(obj);
        memo = { obj, version, parsed, selection: parsed.ok ? d.select?.(parsed.value) : { endpoints: 0, nodes: new Set<string>() } };
        memos.set(key, memo);
      }
      const { parsed, selection } = memo;
      state.set(key, parsed.ok ? "valid" : "invalid");
      countStates();
      const generation = obj.metadata.generation;
      if (!parsed.ok) {
        d.log.info({ kind, namespace, name, generation, errors: parsed.errors }, "invalid policy");
        await d.events.record(obj, "Warning", "InvalidPolicy", describeErrors(parsed.errors));
      }
      const concerned = selection ? selection.nodes : new Set(d.nodes.list().map((n) => n.metadata.name));
      const totalNodes = concerned.size;
      const reported = d.enforcement?.(obj, concerned) ?? NO_ENFORCEMENT;
      const enforcement = d.inReconnectGrace?.() ? duringReconnectGrace(reported, obj.status, generation, totalNodes) : reported;
      const missingGroups = parsed.ok && d.cidrGroups ? missingCIDRGroups(parsed.value, d.cidrGroups()) : [];
      const computed = policyConditions(parsed, generation, totalNodes, enforcement, missingGroups);
      enforcementStates.set(key, enforcementState(computed));
      countEnforcement();
      // NetworkPolicy has no status in networking.k8s.io/v1: its outcome is the Event and the metrics.
      if (d.resource.kind === "NetworkPolicy") return;

      const conditions = mergeConditions(obj.status?.conditions, computed, new Date());
      const status: PolicyStatus = {
        conditions,
        observedGeneration: generation,
        enforced: `${enforcement.acknowledged}/${totalNodes}`,
        enforcedNodes: enforcement.acknowledged,
        totalNodes,
        ...(selection ? { selectedEndpoints: selection.endpoints } : {}),
        nodeErrors: enforcement.refused.map((r) => ({ node: r.node, message: r.message })),
      };
      if (sameStatus(obj.status ?? {}, status)) return;
      try {
        await d.client.mergePatch(resourcePath(d.resource, namespace, name, "status"), { status });
        d.log.info({ kind, namespace, name, generation, valid: parsed.ok, selected: status.selectedEndpoints, enforced: status.enforced }, "policy status written");
      } catch (e) {
        if (isNotFound(e)) return; // deleted meanwhile: the informer will tell us
        throw e;
      }
    },
  };
}

/** Compared by value: the API server returns nodeErrors' fields in its own order ({message, node}), so their JSON texts never matched. */
export function sameStatus(a: PolicyStatus, b: PolicyStatus): boolean {
  const ea = a.nodeErrors ?? [];
  const eb = b.nodeErrors ?? [];
  return (
    sameConditions(a.conditions, b.conditions) &&
    a.observedGeneration === b.observedGeneration &&
    a.enforced === b.enforced &&
    a.enforcedNodes === b.enforcedNodes &&
    a.totalNodes === b.totalNodes &&
    a.selectedEndpoints === b.selectedEndpoints &&
    ea.length === eb.length &&
    ea.every((e, i) => e.node === eb[i]?.node && e.message === eb[i]?.message)
  );
}
