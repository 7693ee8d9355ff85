// Policy enforcement mode (Cilium's --policy-enforcement-mode): how a subject's received policy becomes what the datapath enforces.
import type { SubjectPolicy } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";

/**
 * `default`: a direction is enforced only when some policy selects the endpoint in it (the operator's flags);
 * `always`: both directions enforced for every endpoint, selected or not (deny all but what is allowed);
 * `never`: nothing enforced, not even deny rules (every packet passes).
 */
export type PolicyEnforcementMode = "default" | "always" | "never";

export const POLICY_ENFORCEMENT_MODES: readonly PolicyEnforcementMode[] = ["default", "always", "never"];

export function isPolicyEnforcementMode(v: string): v is PolicyEnforcementMode {
  return (POLICY_ENFORCEMENT_MODES as readonly string[]).includes(v);
}

/** The flags an endpoint gets when its identity has no compiled policy (yet): fail closed unless nothing is enforced. */
export function unresolvedEnforcement(mode: PolicyEnforcementMode): { ingressEnforced: boolean; egressEnforced: boolean } {
  const enforced = mode !== "never";
  return { ingressEnforced: enforced, egressEnforced: enforced };
}

/** One subject's policy as the datapath must hold it under `mode`. */
export function enforcedPolicy(p: SubjectPolicy, mode: PolicyEnforcementMode): SubjectPolicy {
  switch (mode) {
    case "default":
      return p;
    case "always":
      return p.ingressEnforced && p.egressEnforced ? p : { ...p, ingressEnforced: true, egressEnforced: true };
    case "never":
      // No entries at all: a deny entry would still match, and Cilium's `never` enforces no rule.
      return { subject: p.subject, ingressEnforced: false, egressEnforced: false, entries: [] };
  }
}

/** The state's policies as the datapath must hold them under `mode`; the same object under `default`. */
export function enforcedState(s: NodeState, mode: PolicyEnforcementMode): NodeState {
  if (mode === "default") return s;
  return { ...s, policies: s.policies.map((p) => enforcedPolicy(p, mode)) };
}
