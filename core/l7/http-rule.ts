// Cilium's HTTP rule (toPorts[].rules.http[]) compiled once and matched against a request, field by field as its docs state them.
import type { HTTPRule } from "../model.ts";
import { headerValue, type HttpRequest } from "./http-request.ts";

/** What to do when a headerMatches entry does not match: absent = the rule does not match (Cilium's default). */
export type MismatchAction = "LOG" | "ADD" | "DELETE" | "REPLACE";

/** A headerMatches entry whose value is unresolved (its Secret unknown and no value) never matches: fail closed. */
export interface HeaderMatch {
  readonly name: string;
  /** Exact value; undefined = presence only. */
  readonly value?: string;
  readonly mismatch?: MismatchAction;
  /** Set when the value comes from a Secret this node does not have (then `value` is the documented fallback, if any). */
  readonly unresolvedSecret?: string;
}

/** A header requirement of `headers`: presence, or presence with an exact value. */
export interface HeaderRequirement {
  readonly name: string;
  readonly value?: string;
}

export interface CompiledHttpRule {
  readonly method?: RegExp;
  readonly path?: RegExp;
  readonly host?: RegExp;
  readonly headers: readonly HeaderRequirement[];
  readonly headerMatches: readonly HeaderMatch[];
}

/** A header change a matching rule asks for (headerMatches with mismatch ADD/DELETE/REPLACE), applied before forwarding. */
export type HeaderAction =
  | { readonly action: "ADD"; readonly name: string; readonly value: string }
  | { readonly action: "DELETE"; readonly name: string }
  | { readonly action: "REPLACE"; readonly name: string; readonly value: string };

/** A headerMatches entry that did not match but did not stop the rule (its mismatch action is what happened). */
export interface HeaderMismatch {
  readonly name: string;
  readonly action: MismatchAction;
}

export type RuleMatch =
  | { readonly matches: true; readonly actions: readonly HeaderAction[]; readonly mismatches: readonly HeaderMismatch[] }
  | { readonly matches: false; readonly field: "method" | "path" | "host" | "headers" | "headerMatches" };

/**
 * Cilium's docs: method, path and host are extended regular expressions (RE2 in its proxy) and a
 * rule matches when the expression matches the WHOLE value — `/public` does not allow `/public/x`.
 * Anchored here so that an alternation (`GET|POST`) is anchored as a whole.
 */
export function wholeValue(re: string): RegExp {
  return new RegExp(`^(?:${re})$`, "s");
}

/**
 * `headers` entries are "Name" (present) or "Name: value" / "Name value" (present with exactly that
 * value): the name ends at the first space, a trailing ":" dropped, the value is the rest.
 */
export function headerRequirement(entry: string): HeaderRequirement {
  const sp = entry.indexOf(" ");
  if (sp < 0) return { name: entry.replace(/:$/, "").toLowerCase() };
  return { name: entry.slice(0, sp).replace(/:$/, "").toLowerCase(), value: entry.slice(sp + 1).trim() };
}

/**
 * Compiles one rule. `secretValue` answers a headerMatches Secret reference ("namespace/name"), or
 * undefined when this node does not have it: then the entry's `value` is used (Cilium's documented
 * fallback), and with no value the entry cannot match (fail closed). Throws on an invalid regular
 * expression (admission refuses those, so here it is a bug or a corrupt config).
 */
export function compileHttpRule(rule: HTTPRule, secretValue: (ref: string) => string | undefined = () => undefined): CompiledHttpRule {
  const headerMatches: HeaderMatch[] = [];
  for (const hm of rule.headerMatches ?? []) {
    const ref = hm.secret ? `${hm.secret.namespace ?? ""}/${hm.secret.name}` : undefined;
    const fromSecret = ref !== undefined ? secretValue(ref) : undefined;
    const value = fromSecret ?? hm.value;
    headerMatches.push({
      name: hm.name.toLowerCase(),
      ...(value !== undefined ? { value } : {}),
      ...(hm.mismatch ? { mismatch: hm.mismatch } : {}),
      ...(ref !== undefined && fromSecret === undefined ? { unresolvedSecret: ref } : {}),
    });
  }
  return {
    ...(rule.method ? { method: wholeValue(rule.method) } : {}),
    ...(rule.path ? { path: wholeValue(rule.path) } : {}),
    ...(rule.host ? { host: wholeValue(rule.host) } : {}),
    headers: (rule.headers ?? []).map(headerRequirement),
    headerMatches,
  };
}

/** Whether one compiled rule matches a request, and the header actions and logged mismatches it brings. */
export function matchHttpRule(rule: CompiledHttpRule, req: HttpRequest): RuleMatch {
  if (rule.method && !rule.method.test(req.method)) return { matches: false, field: "method" };
  if (rule.path && !rule.path.test(req.path)) return { matches: false, field: "path" };
  if (rule.host && !rule.host.test(req.host)) return { matches: false, field: "host" };
  for (const h of rule.headers) {
    const have = headerValue(req, h.name);
    if (have === undefined || (h.value !== undefined && have !== h.value)) return { matches: false, field: "headers" };
  }
  const actions: HeaderAction[] = [];
  const mismatches: HeaderMismatch[] = [];
  for (const hm of rule.headerMatches) {
    const have = headerValue(req, hm.name);
    const unresolved = hm.unresolvedSecret !== undefined && hm.value === undefined;
    const ok = !unresolved && have !== undefined && (hm.value === undefined || have === hm.value);
    if (ok) continue;
    // An unresolved Secret fails closed whatever the mismatch action: there is no value to log, add or replace.
    if (!hm.mismatch || unresolved) return { matches: false, field: "headerMatches" };
    mismatches.push({ name: hm.name, action: hm.mismatch });
    if (hm.mismatch === "DELETE") actions.push({ action: "DELETE", name: hm.name });
    else if (hm.value !== undefined && hm.mismatch === "ADD") actions.push({ action: "ADD", name: hm.name, value: hm.value });
    else if (hm.value !== undefined && hm.mismatch === "REPLACE") actions.push({ action: "REPLACE", name: hm.name, value: hm.value });
  }
  return { matches: true, actions, mismatches };
}
