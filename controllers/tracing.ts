// TracingPolicy reconciler: a TracingPolicy or TracingPolicyNamespaced → admission's validation and the
// translation table (core/tracing*.ts) → status conditions Valid, Loaded (HookUnavailable naming each hook
// the kernel cannot serve and why) and Enforced (n/m nodes whose runtime enforcer runs this generation, as
// their agents report it on the distribution stream), with a Warning Event when Loaded changes to a failure.
import type { Logger } from "pino";
import { loadedCondition, translatePolicy } from "../core/tracing-translation.ts";
import { validateTracingPolicy } from "../core/tracing.ts";
import { tracingPolicyKey } from "../core/wire.ts";
import type { NodeAnswer } from "./distribution/server.ts";
import { type Condition, type ConditionInput, mergeConditions, sameConditions } from "../kube/conditions.ts";
import type { Reconciler } from "../kube/controller.ts";
import type { EventRecorder } from "../kube/events.ts";
import { type Informer, splitKey } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, type Resource, isNotFound, resourcePath } from "../kube/kube.ts";

export interface TracingPolicyObject extends KubeObject {
  spec?: unknown;
  status?: TracingPolicyStatus;
}

export interface TracingPolicyStatus {
  conditions?: Condition[];
  observedGeneration?: number;
  /** "n/m": nodes whose runtime enforcer runs this generation, of the cluster's nodes. */
  enforced?: string;
  enforcedNodes?: number;
  totalNodes?: number;
  /** Each node that does not enforce it, and why. */
  nodeErrors?: { node: string; reason: string; message: string }[];
}

/** What the nodes say of one policy generation. */
export interface TracingEnforcement {
  readonly enforced: number;
  readonly total: number;
  /** Sorted by node. */
  readonly nodeErrors: readonly { readonly node: string; readonly reason: string; readonly message: string }[];
  /** The nodes whose agent is not connected (each also in nodeErrors, EnforcerNotRunning). */
  readonly unheard?: readonly string[];
}

/** Reasons a node's enforcer gives that are the policy's own failure (not a node that is late or has no enforcer). */
const FAILURE_REASONS = new Set(["HookUnavailable", "Invalid", "LoadFailed"]);

/**
 * How many of `nodes` enforce this generation of `obj`, and why the others do not: their agent runs no runtime
 * enforcer (runtime.enabled is off), their enforcer refused it (its reason and message), or has not said yet.
 */
export function tracingEnforcement(obj: TracingPolicyObject, nodes: readonly string[], answers: readonly NodeAnswer[]): TracingEnforcement {
  const key = tracingPolicyKey(obj.kind ?? (obj.metadata.namespace ? "TracingPolicyNamespaced" : "TracingPolicy"), obj.metadata.name, obj.metadata.namespace);
  const byNode = new Map(answers.map((a) => [a.node, a]));
  let enforced = 0;
  const nodeErrors: { node: string; reason: string; message: string }[] = [];
  const unheard: string[] = [];
  for (const node of [...nodes].sort()) {
    const a = byNode.get(node);
    if (!a) unheard.push(node);
    if (!a?.runtime) {
      nodeErrors.push({ node, reason: "EnforcerNotRunning", message: a ? "its agent does not run the runtime enforcer (--enable-runtime, chart value runtime.enabled)" : "its agent is not connected" });
      continue;
    }
    const s = a.tracing?.find((p) => p.key === key);
    if (!s || s.uid !== (obj.metadata.uid ?? "") || s.generation < (obj.metadata.generation ?? 0)) {
      nodeErrors.push({ node, reason: "Pending", message: "not reported for this generation yet" });
      continue;
    }
    if (s.enforced) enforced++;
    else nodeErrors.push({ node, reason: s.reason ?? "NotEnforced", message: s.message ?? "not enforced" });
  }
  return { enforced, total: nodes.length, nodeErrors, unheard };
}

/**
 * The enforcement a TracingPolicy's status shows during the agent reconnect grace (reconnect-grace.ts), as policy.ts
 * duringReconnectGrace does for network policies: a node whose agent has not reconnected since the operator started counts
 * as the stored status of this very generation and node count saw it (enforcing, or the error it named), rather than
 * "its agent is not connected". Anything heard, a new generation or another node count is shown as it is.
 */
export function tracingDuringReconnectGrace(reported: TracingEnforcement, stored: TracingPolicyStatus | undefined, generation: number | undefined): TracingEnforcement {
  const unheard = new Set(reported.unheard ?? []);
  if (unheard.size === 0 || stored === undefined || generation === undefined || stored.observedGeneration !== generation || stored.totalNodes !== reported.total) return reported;
  const storedErrors = new Map((stored.nodeErrors ?? []).map((e) => [e.node, e]));
  let enforced = reported.enforced;
  const nodeErrors: { node: string; reason: string; message: string }[] = [];
  for (const e of reported.nodeErrors) {
    const was = unheard.has(e.node) ? storedErrors.get(e.node) : e;
    if (was) nodeErrors.push({ ...was });
    else enforced++; // the stored status found it enforcing
  }
  return { enforced, total: reported.total, nodeErrors, unheard: [...unheard] };
}

export interface TracingPolicyDeps {
  readonly client: KubeClient;
  readonly resource: Resource;
  readonly policies: Informer<TracingPolicyObject>;
  readonly events: EventRecorder;
  readonly log: Logger;
  /** The cluster's node names and their agents' reports (the operator's distribution stream); absent, no Enforced condition. */
  readonly enforcement?: { readonly nodes: () => readonly string[]; readonly answers: () => readonly NodeAnswer[] };
  /** Whether the agent reconnect grace after the operator's start still runs (tracingDuringReconnectGrace); absent: it does not. */
  readonly inReconnectGrace?: () => boolean;
}

/**
 * The Valid and Loaded conditions of one object (pure: what the status says for this spec), and Enforced when
 * the nodes' reports are known (the operator runs the distribution stream): Loaded is then True once every node
 * enforces it, or False with the first node failure's reason.
 */
export function tracingConditions(obj: TracingPolicyObject, enforcement?: TracingEnforcement): ConditionInput[] {
  const g = obj.metadata.generation === undefined ? {} : { observedGeneration: obj.metadata.generation };
  const v = validateTracingPolicy(obj);
  if (!v.ok) {
    // Admitted while the webhook was not there: say so rather than translate a policy Tetragon would refuse.
    const why = v.errors.map((e) => (e.path === "" ? e.message : `${e.path}: ${e.message}`)).join("; ");
    return [
      { type: "Valid", status: "False", reason: "Invalid", message: why, ...g },
      { type: "Loaded", status: "False", reason: "Invalid", message: "the policy is invalid", ...g },
    ];
  }
  const hooks = v.value.hooks.length;
  const valid: ConditionInput = { type: "Valid", status: "True", reason: "Admitted", message: `${hooks} hook${hooks === 1 ? "" : "s"}`, ...g };
  const translated = loadedCondition(translatePolicy(v.value));
  if (enforcement === undefined) return [valid, { type: "Loaded", ...translated, ...g }];
  const count = `${enforcement.enforced}/${enforcement.total} nodes`;
  const why = enforcement.nodeErrors.map((e) => `${e.node}: ${e.reason}: ${e.message}`).join("; ");
  const failure = enforcement.nodeErrors.find((e) => FAILURE_REASONS.has(e.reason));
  let enforced: ConditionInput;
  if (enforcement.total === 0) enforced = { type: "Enforced", status: "Unknown", reason: "NoNodes", message: count, ...g };
  else if (enforcement.nodeErrors.length === 0) enforced = { type: "Enforced", status: "True", reason: "Enforced", message: count, ...g };
  else if (failure || enforcement.nodeErrors.some((e) => e.reason === "EnforcerNotRunning")) enforced = { type: "Enforced", status: "False", reason: failure?.reason ?? "EnforcerNotRunning", message: `${count}; ${why}`, ...g };
  else enforced = { type: "Enforced", status: "Unknown", reason: "Pending", message: `${count}; ${why}`, ...g };
  let loaded: ConditionInput;
  if (translated.reason === "HookUnavailable") loaded = { type: "Loaded", ...translated, ...g };
  else if (enforced.status === "True") loaded = { type: "Loaded", status: "True", reason: "Loaded", message: `${count}; ${translated.message.replace(/; the operator does not send.*$/, "")}`, ...g };
  else loaded = { type: "Loaded", status: "False", reason: failure?.reason ?? "NotLoadedYet", message: `${count}; ${why}`, ...g };
  return [valid, loaded, enforced];
}

export function tracingPolicyReconciler(d: TracingPolicyDeps): Reconciler {
  const kind = d.resource.kind;
  return {
    name: `tracing-${d.resource.plural}`,
    async reconcile(key: string): Promise<void> {
      const obj = d.policies.get(key);
      if (!obj) return;
      const { namespace, name } = splitKey(key);
      const reported = d.enforcement && tracingEnforcement(obj, d.enforcement.nodes(), d.enforcement.answers());
      const enforcement = reported && d.inReconnectGrace?.() ? tracingDuringReconnectGrace(reported, obj.status, obj.metadata.generation) : reported;
      const computed = tracingConditions(obj, enforcement);
      const conditions = mergeConditions(obj.status?.conditions, computed, new Date());
      const counts = enforcement
        ? { enforced: `${enforcement.enforced}/${enforcement.total}`, enforcedNodes: enforcement.enforced, totalNodes: enforcement.total, nodeErrors: enforcement.nodeErrors.map((e) => ({ ...e })) }
        : {};
      const sameCounts = !enforcement || (obj.status?.enforced === counts.enforced && JSON.stringify(obj.status?.nodeErrors ?? []) === JSON.stringify(counts.nodeErrors));
      if (sameConditions(obj.status?.conditions, conditions) && obj.status?.observedGeneration === obj.metadata.generation && sameCounts) return;
      const loaded = computed.find((c) => c.type === "Loaded");
      const before = obj.status?.conditions?.find((c) => c.type === "Loaded");
      try {
        await d.client.mergePatch(resourcePath(d.resource, namespace, name, "status"), {
          status: { conditions, observedGeneration: obj.metadata.generation, ...counts },
        });
      } catch (e) {
        if (isNotFound(e)) return; // deleted meanwhile: the informer will tell us
        throw e;
      }
      d.log.info({ kind, namespace, name, generation: obj.metadata.generation, loaded: loaded?.reason, enforced: counts.enforced }, "tracing policy status written");
      if ((loaded?.reason === "HookUnavailable" || loaded?.reason === "LoadFailed") && (before?.reason !== loaded.reason || before.message !== loaded.message)) {
        await d.events.record(obj, "Warning", loaded.reason, loaded.message);
      }
    },
  };
}
