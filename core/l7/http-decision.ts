// The verdict on one HTTP request at a proxy port: the port's HTTP rules are ORed, the first that matches decides and is named.
import type { HTTPRule } from "../model.ts";
import { compileHttpRule, matchHttpRule, type CompiledHttpRule, type HeaderAction, type HeaderMismatch } from "./http-rule.ts";
import type { HttpHeader, HttpRequest } from "./http-request.ts";

/** One HTTP rule of a policy: the compiled rule table's entry it belongs to and its index in `toPorts[].rules.http`. */
export interface HttpRuleRef {
  readonly ruleId: number;
  readonly index: number;
  readonly rule: HTTPRule;
}

export interface CompiledHttpRuleRef {
  readonly ruleId: number;
  readonly index: number;
  readonly compiled: CompiledHttpRule;
}

export type HttpDecision =
  | {
      readonly verdict: "allow";
      readonly ruleId: number;
      readonly index: number;
      /** Header changes the rule's headerMatches ask for (ADD, DELETE, REPLACE), in order. */
      readonly actions: readonly HeaderAction[];
      /** headerMatches that did not match but let the rule match (LOG and the others): for the access log. */
      readonly mismatches: readonly HeaderMismatch[];
    }
  | { readonly verdict: "deny" };

/** Compiles a port's rules once (see compileHttpRule for secrets). */
export function compileHttpRules(rules: readonly HttpRuleRef[], secretValue?: (ref: string) => string | undefined): CompiledHttpRuleRef[] {
  return rules.map((r) => ({ ruleId: r.ruleId, index: r.index, compiled: compileHttpRule(r.rule, secretValue) }));
}

/**
 * Cilium's meaning: a request to a port with HTTP rules is allowed when any of them matches it (the
 * rules are ORed; an empty rule `{}` matches every request), the first match in the order given
 * deciding; otherwise it is denied. A port with no rules at all denies (fail closed: the proxy only
 * serves ports whose rules it was given).
 */
export function decideHttp(req: HttpRequest, rules: readonly CompiledHttpRuleRef[]): HttpDecision {
  for (const r of rules) {
    const m = matchHttpRule(r.compiled, req);
    if (m.matches) return { verdict: "allow", ruleId: r.ruleId, index: r.index, actions: m.actions, mismatches: m.mismatches };
  }
  return { verdict: "deny" };
}

/** The headers to forward once a decision's actions are applied (names lowercase): `headers` itself when there are none. */
export function applyHeaderActions(headers: readonly HttpHeader[], actions: readonly HeaderAction[]): readonly HttpHeader[] {
  if (actions.length === 0) return headers;
  let out = [...headers];
  for (const a of actions) {
    const name = a.name.toLowerCase();
    if (a.action === "DELETE") out = out.filter((h) => h.name !== name);
    else if (a.action === "REPLACE") {
      // In place of the first occurrence, the others dropped; appended when absent.
      const at = out.findIndex((h) => h.name === name);
      out = out.filter((h, i) => h.name !== name || i === at);
      if (at < 0) out.push({ name, value: a.value });
      else out[out.findIndex((h) => h.name === name)] = { name, value: a.value };
    }
    else out.push({ name, value: a.value });
  }
  return out;
}

/** What a denied HTTP/1 request gets (Cilium's proxy answers the same). */
export const HTTP_DENIED = { status: 403, body: "Access denied" } as const;
