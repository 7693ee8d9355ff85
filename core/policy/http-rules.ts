// The HTTP side of a subject's policy: the HTTP rules of each of its L7 allow rules, for the node's L7 proxy.
import type { HTTPRule, Policy, Rule, RuleHttpRules } from "../model.ts";

/**
 * The HTTP rules of the allow rules in `parts` (the policies selecting one subject, `keys[i]` the key
 * of `parts[i]`), one list per rule over all its toPorts (its entries share one proxy port);
 * undefined when there are none.
 */
export function subjectHttp(parts: readonly Policy[], keys: readonly string[], ruleIdOf: (key: string, origin: Rule["origin"]) => number): RuleHttpRules[] | undefined {
  const out: RuleHttpRules[] = [];
  parts.forEach((p, i) => {
    const key = keys[i] ?? "";
    for (const r of p.rules) {
      if (r.verdict !== "allow") continue;
      const rules: HTTPRule[] = [];
      for (const pr of r.ports) if (pr.rules?.kind === "http") rules.push(...pr.rules.http);
      if (rules.length > 0) out.push({ ruleId: ruleIdOf(key, r.origin), direction: r.direction, rules });
    }
  });
  return out.length > 0 ? out : undefined;
}

/** Typed equality of two subjects' HTTP parts (absent equals absent only). */
export function sameSubjectHttp(a: readonly RuleHttpRules[] | undefined, b: readonly RuleHttpRules[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameList(a, b, (x, y) => x.ruleId === y.ruleId && x.direction === y.direction && sameList(x.rules, y.rules, sameHttpRule));
}

function sameHttpRule(a: HTTPRule, b: HTTPRule): boolean {
  return (
    a.method === b.method &&
    a.path === b.path &&
    a.host === b.host &&
    sameList(a.headers ?? [], b.headers ?? [], (x, y) => x === y) &&
    sameList(a.headerMatches ?? [], b.headerMatches ?? [], (x, y) =>
      x.name === y.name && x.value === y.value && x.mismatch === y.mismatch && x.secret?.name === y.secret?.name && x.secret?.namespace === y.secret?.namespace)
  );
}

function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!same(a[i]!, b[i]!)) return false;
  return true;
}
