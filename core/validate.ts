// One entry point for "is this object a valid policy resource?": errors and warnings for every kind Membrane admits.
import { CIDR_GROUP_KIND, parseCIDRGroup } from "./cidr-group.ts";
import { ENCRYPTION_KEY_KIND, validateEncryptionKey } from "./encryption.ts";
import type { FieldError } from "./model.ts";
import { type ParseOptions, parsePolicyObject } from "./parser/index.ts";
import { isRecord } from "./parser/fields.ts";
import { validateTracingPolicy } from "./tracing.ts";
import { formatWarning, policyWarnings, type WarningOptions } from "./warnings.ts";

/** The resources this validation covers, as the webhook registers them (group, version, plural, kind). */
export const VALIDATED_RESOURCES = [
  { group: "cilium.io", version: "v2", resource: "ciliumnetworkpolicies", kind: "CiliumNetworkPolicy" },
  { group: "cilium.io", version: "v2", resource: "ciliumclusterwidenetworkpolicies", kind: "CiliumClusterwideNetworkPolicy" },
  // v2alpha1 objects reach the webhook too: it is registered with matchPolicy Equivalent.
  { group: "cilium.io", version: "v2", resource: "ciliumcidrgroups", kind: CIDR_GROUP_KIND },
  { group: "networking.k8s.io", version: "v1", resource: "networkpolicies", kind: "NetworkPolicy" },
  { group: "cilium.io", version: "v1alpha1", resource: "tracingpolicies", kind: "TracingPolicy" },
  { group: "cilium.io", version: "v1alpha1", resource: "tracingpoliciesnamespaced", kind: "TracingPolicyNamespaced" },
  { group: "membrane.io", version: "v1alpha1", resource: "membraneencryptionkeys", kind: ENCRYPTION_KEY_KIND },
] as const;

export interface Validation {
  readonly kind: string;
  readonly errors: readonly FieldError[];
  readonly warnings: readonly string[];
}

const POLICY_KINDS: ReadonlySet<string> = new Set(["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"]);

/** How objects are parsed (ParseOptions: the operator must parse the same) and what warnings know of the cluster. */
export type ValidateOptions = ParseOptions & WarningOptions;

/** Validates one API object of any admitted kind. Never throws on user input. */
export function validateObject(obj: unknown, options: ValidateOptions = {}): Validation {
  if (!isRecord(obj)) return { kind: "", errors: [{ path: "<root>", message: "must be an object with apiVersion and kind" }], warnings: [] };
  const kind = typeof obj.kind === "string" ? obj.kind : "";
  if (POLICY_KINDS.has(kind)) {
    const parsed = parsePolicyObject(obj, options);
    if (!parsed.ok) return { kind, errors: parsed.errors, warnings: [] };
    return { kind, errors: [], warnings: policyWarnings(parsed.value, options).map(formatWarning) };
  }
  if (kind === "TracingPolicy" || kind === "TracingPolicyNamespaced") {
    const r = validateTracingPolicy(obj);
    return { kind, errors: r.ok ? [] : r.errors, warnings: r.ok ? r.value.warnings.map(formatWarning) : [] };
  }
  if (kind === CIDR_GROUP_KIND) {
    const r = parseCIDRGroup(obj);
    return { kind, errors: r.ok ? [] : r.errors, warnings: [] };
  }
  if (kind === ENCRYPTION_KEY_KIND) {
    const r = validateEncryptionKey(obj);
    return { kind, errors: r.ok ? [] : r.errors, warnings: [] };
  }
  const known = VALIDATED_RESOURCES.map((r) => r.kind).join(", ");
  return {
    kind,
    errors: [{ path: "kind", message: kind === "" ? `required: one of ${known}` : `${JSON.stringify(kind.slice(0, 64))} is not a kind Membrane validates (${known})` }],
    warnings: [],
  };
}

/** `field.path: reason; field.path: reason`, the text a user sees after "denied the request: ". */
export function formatErrors(errors: readonly FieldError[], max = 50): string {
  const shown = errors.slice(0, max).map((e) => (e.path === "" ? e.message : `${e.path}: ${e.message}`));
  if (errors.length > max) shown.push(`and ${errors.length - max} more errors`);
  return shown.join("; ");
}
