// The HTTP side of a subject's policy: the HTTP rules of each of its L7 allow rules, for the node's L7 proxy.
import type { HTTPRule, Policy, PolicyEntry, PortRule, Rule, RuleHttpRules, RuleTls, SubjectPolicy, TLSContext, TlsSecretUse } from "../model.ts";
import type { HttpRuleRef } from "../l7/http-decision.ts";
import { holdsPart, type ProxyPortSet } from "./proxy-ports.ts";
import { serverNamesOnly } from "../l7/server-names.ts";

/**
 * The HTTP rules of the allow rules in `parts` (the policies selecting one subject, `keys[i]` the key
 * of `parts[i]`), one part per toPorts entry with HTTP rules (they judge only that entry's ports) or with
 * serverNames alone (no HTTP rules: the proxy judges the SNI);
 * undefined when there are none.
 */
export function subjectHttp(parts: readonly Policy[], keys: readonly string[], ruleIdOf: (key: string, origin: Rule["origin"]) => number): RuleHttpRules[] | undefined {
  const out: RuleHttpRules[] = [];
  parts.forEach((p, i) => {
    const key = keys[i] ?? "";
    for (const r of p.rules) {
      if (r.verdict !== "allow") continue;
      r.ports.forEach((pr, portRule) => {
        const sniOnly = serverNamesOnly(pr);
        if (!sniOnly && (pr.rules?.kind !== "http" || pr.rules.http.length === 0)) return;
        const tls = ruleTls(pr, p.namespace);
        out.push({ ruleId: ruleIdOf(key, r.origin), portRule, direction: r.direction, rules: pr.rules?.kind === "http" ? pr.rules.http : [], ...(tls ? { tls } : {}) });
      });
    }
  });
  return out.length > 0 ? out : undefined;
}

/** A Secret's namespace when the policy does not say: its own namespace, "default" for a cluster-wide policy. */
function secretUse(ctx: TLSContext, policyNamespace: string | undefined): TlsSecretUse {
  return {
    secret: { namespace: ctx.secret.namespace ?? policyNamespace ?? "default", name: ctx.secret.name },
    ...(ctx.certificate !== undefined ? { certificate: ctx.certificate } : {}),
    ...(ctx.privateKey !== undefined ? { privateKey: ctx.privateKey } : {}),
    ...(ctx.trustedCA !== undefined ? { trustedCA: ctx.trustedCA } : {}),
  };
}

/** The TLS of one toPorts entry with HTTP rules; undefined when it has none. */
export function ruleTls(pr: PortRule, policyNamespace: string | undefined): RuleTls | undefined {
  if (!pr.terminatingTLS && !pr.originatingTLS && !pr.serverNames?.length) return undefined;
  return {
    ...(pr.terminatingTLS ? { terminating: secretUse(pr.terminatingTLS, policyNamespace) } : {}),
    ...(pr.originatingTLS ? { originating: secretUse(pr.originatingTLS, policyNamespace) } : {}),
    ...(pr.serverNames?.length ? { serverNames: pr.serverNames } : {}),
  };
}

/**
 * Each part's HTTP rules with the proxy ports that serve them: every port whose set of parts (the
 * union of the HTTP parts allowing one key) holds it. The node's proxy ORs, on a port, the rules of
 * every part listing it.
 */
export function withProxyPorts(http: readonly RuleHttpRules[], sets: readonly ProxyPortSet[]): RuleHttpRules[] {
  return http.map((r) => ({ ...r, proxyPorts: sets.filter((s) => holdsPart(s, { ruleId: r.ruleId, ...(r.portRule !== undefined ? { portRule: r.portRule } : {}) })).map((s) => s.port).sort((a, b) => a - b) }));
}

/**
 * The HTTP rules the node's proxy ORs on an entry's proxy port, in the subject's order, each naming
 * its rule and its index in its toPorts entry's `rules.http`; empty when the entry is no HTTP redirect (no
 * proxy port, a deny, or a DNS rule's port). A subject whose rules list no proxy ports (an operator
 * from before the union) gives the rules of the entry's own rule.
 */
export function httpRulesAt(policy: SubjectPolicy, entry: PolicyEntry): HttpRuleRef[] {
  return httpPartsAt(policy, entry).flatMap((r) => r.rules.map((rule, index) => ({ ruleId: r.ruleId, index, rule })));
}

/** The subject's HTTP parts whose rules the proxy ORs on the entry's proxy port, in the subject's order (none when it is no HTTP redirect). */
export function httpPartsAt(policy: SubjectPolicy, entry: PolicyEntry): RuleHttpRules[] {
  if (entry.proxyPort === 0 || entry.verdict !== "allow") return [];
  const http = (policy.http ?? []).filter((r) => r.direction === entry.direction);
  const listed = http.some((r) => r.proxyPorts !== undefined);
  return listed ? http.filter((r) => r.proxyPorts?.includes(entry.proxyPort)) : http.filter((r) => r.ruleId === entry.ruleId);
}

/**
 * The TLS the node's proxy applies on an entry's proxy port: the TLS of the rules listing the port
 * (as httpRulesAt picks them), "conflict" when they disagree (one rule with TLS and one without, or
 * two Secrets: the proxy refuses the port's connections), undefined when none has any.
 */
export function tlsAt(policy: SubjectPolicy, entry: PolicyEntry): RuleTls | "conflict" | undefined {
  const rules = httpPartsAt(policy, entry);
  if (rules.length === 0 || rules.every((r) => r.tls === undefined)) return undefined;
  const first = rules[0]!.tls;
  return rules.every((r) => sameRuleTls(r.tls, first)) ? first : "conflict";
}

/** Typed equality of two subjects' HTTP parts (absent equals absent only). */
export function sameSubjectHttp(a: readonly RuleHttpRules[] | undefined, b: readonly RuleHttpRules[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameList(a, b, (x, y) => x.ruleId === y.ruleId && x.portRule === y.portRule && x.direction === y.direction && sameList(x.proxyPorts ?? [], y.proxyPorts ?? [], (p, q) => p === q) && sameList(x.rules, y.rules, sameHttpRule) && sameRuleTls(x.tls, y.tls));
}

/** Typed equality of two rules' TLS, the operator's material included (a rotated Secret is a change). */
export function sameRuleTls(a: RuleTls | undefined, b: RuleTls | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameSecretUse(a.terminating, b.terminating) && sameSecretUse(a.originating, b.originating) && sameList(a.serverNames ?? [], b.serverNames ?? [], (x, y) => x === y);
}

function sameSecretUse(a: TlsSecretUse | undefined, b: TlsSecretUse | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return (
    a.secret.namespace === b.secret.namespace &&
    a.secret.name === b.secret.name &&
    a.certificate === b.certificate &&
    a.privateKey === b.privateKey &&
    a.trustedCA === b.trustedCA &&
    a.unavailable === b.unavailable &&
    a.material?.certificate === b.material?.certificate &&
    a.material?.privateKey === b.material?.privateKey &&
    a.material?.trustedCA === b.material?.trustedCA
  );
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
