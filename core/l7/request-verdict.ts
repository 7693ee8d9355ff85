// What one direction does with one HTTP request of a flow its L3/L4 rules allow: not inspected, every request allowed, or the first matching HTTP rule (else 403).
import type { HttpInspection } from "../evaluator.ts";
import type { RuleOrigin } from "../model.ts";
import { compileHttpRule, matchHttpRule } from "./http-rule.ts";
import type { HttpRequest } from "./http-request.ts";

/** One HTTP rule of a policy: its rule, its toPorts entry and its index in that entry's `rules.http`. */
export interface HttpRuleAt {
  readonly origin: RuleOrigin;
  readonly portRule: number;
  readonly index: number;
}

export type RequestVerdict =
  /** No allowing toPorts entry has HTTP rules for this flow: the proxy never sees it. */
  | { readonly kind: "not-inspected" }
  /** An allowing rule has no L7 rules for this flow: every request passes, whatever the others' HTTP rules say. */
  | { readonly kind: "every-request"; readonly by: RuleOrigin; readonly lifted: readonly HttpRuleAt[] }
  /** The first HTTP rule (in policy order) that matches; `also` the other matching ones (the rules are ORed). */
  | { readonly kind: "allowed"; readonly by: HttpRuleAt; readonly also: readonly HttpRuleAt[] }
  /** No HTTP rule matches: the proxy answers 403 Forbidden (gRPC: PERMISSION_DENIED); `rules` are the ones it tried. */
  | { readonly kind: "denied"; readonly rules: readonly HttpRuleAt[] };

/**
 * The verdict on `req` given a direction's HTTP inspection (core/evaluator.ts httpInspection).
 * headerMatches Secrets are not known here: a Secret's value counts as absent (its `value`, if any,
 * is used), as on a node that lacks the Secret.
 */
export function requestVerdict(inspection: HttpInspection, req: HttpRequest): RequestVerdict {
  if (inspection.kind === "none") return { kind: "not-inspected" };
  const rules = inspection.parts.flatMap((p) => p.http.map((rule, index) => ({ at: { origin: p.rule.origin, portRule: p.portRule, index }, rule })));
  if (inspection.kind === "every-request") return { kind: "every-request", by: inspection.by, lifted: rules.map((r) => r.at) };
  const matching = rules.filter((r) => matchHttpRule(compileHttpRule(r.rule), req).matches).map((r) => r.at);
  const [first, ...also] = matching;
  return first ? { kind: "allowed", by: first, also } : { kind: "denied", rules: rules.map((r) => r.at) };
}

/** An HTTP rule's field path: `spec.ingress[0].toPorts[1].rules.http[2]`. */
export function httpRulePath(r: HttpRuleAt): string {
  return `${r.origin.path}.toPorts[${r.portRule}].rules.http[${r.index}]`;
}
