// TracingPolicy reconciler: a TracingPolicy or TracingPolicyNamespaced → admission's validation and the
// translation table (core/tracing*.ts) → status conditions Valid and Loaded (HookUnavailable naming each hook
// the kernel cannot serve and why), with a Warning Event when Loaded changes to HookUnavailable.
import type { Logger } from "pino";
import { loadedCondition, translatePolicy } from "../core/tracing-translation.ts";
import { validateTracingPolicy } from "../core/tracing.ts";
import { type Condition, type ConditionInput, mergeConditions, sameConditions } from "../kube/conditions.ts";
import type { Reconciler } from "../kube/controller.ts";
import type { EventRecorder } from "../kube/events.ts";
import { type Informer, splitKey } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, type Resource, isNotFound, resourcePath } from "../kube/kube.ts";

export interface TracingPolicyObject extends KubeObject {
  spec?: unknown;
  status?: { conditions?: Condition[]; observedGeneration?: number };
}

export interface TracingPolicyDeps {
  readonly client: KubeClient;
  readonly resource: Resource;
  readonly policies: Informer<TracingPolicyObject>;
  readonly events: EventRecorder;
  readonly log: Logger;
}

/** The Valid and Loaded conditions of one object (pure: what the status says for this spec). */
export function tracingConditions(obj: TracingPolicyObject): ConditionInput[] {
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
  return [
    { type: "Valid", status: "True", reason: "Admitted", message: `${hooks} hook${hooks === 1 ? "" : "s"}`, ...g },
    { type: "Loaded", ...loadedCondition(translatePolicy(v.value)), ...g },
  ];
}

export function tracingPolicyReconciler(d: TracingPolicyDeps): Reconciler {
  const kind = d.resource.kind;
  return {
    name: `tracing-${d.resource.plural}`,
    async reconcile(key: string): Promise<void> {
      const obj = d.policies.get(key);
      if (!obj) return;
      const { namespace, name } = splitKey(key);
      const computed = tracingConditions(obj);
      const conditions = mergeConditions(obj.status?.conditions, computed, new Date());
      if (sameConditions(obj.status?.conditions, conditions) && obj.status?.observedGeneration === obj.metadata.generation) return;
      const loaded = computed.find((c) => c.type === "Loaded");
      const before = obj.status?.conditions?.find((c) => c.type === "Loaded");
      try {
        await d.client.mergePatch(resourcePath(d.resource, namespace, name, "status"), {
          status: { conditions, observedGeneration: obj.metadata.generation },
        });
      } catch (e) {
        if (isNotFound(e)) return; // deleted meanwhile: the informer will tell us
        throw e;
      }
      d.log.info({ kind, namespace, name, generation: obj.metadata.generation, loaded: loaded?.reason }, "tracing policy status written");
      if (loaded?.reason === "HookUnavailable" && (before?.reason !== loaded.reason || before.message !== loaded.message)) {
        await d.events.record(obj, "Warning", "HookUnavailable", loaded.message);
      }
    },
  };
}
