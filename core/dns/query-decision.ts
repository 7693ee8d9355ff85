// The verdict on one DNS query: the DNS rules of the port it was sent to allow it, or it is refused.
import { normalizeDnsName, normalizedSelectorTest, type DnsNameSelector } from "./name-pattern.ts";

/** One DNS rule of a policy: the compiled rule it belongs to and its index in `toPorts[].rules.dns`. */
export interface DnsRuleRef extends DnsNameSelector {
  readonly ruleId: number;
  readonly index: number;
}

export type QueryDecision =
  | { readonly verdict: "allow"; readonly rule: DnsRuleRef }
  | { readonly verdict: "deny" };

const DENY: QueryDecision = { verdict: "deny" };

/** A rule list made ready to judge names: each rule's test, and the decision it gives. */
interface CompiledRules {
  readonly tests: readonly ((normalizedName: string) => boolean)[];
  readonly allows: readonly QueryDecision[];
}

/** Per rule list, compiled on its first query: a list is read once (it is readonly), so a policy change brings a new list. */
const compiledRules = new WeakMap<readonly DnsRuleRef[], CompiledRules>();

/**
 * Cilium's meaning: a query on a port with DNS rules is allowed when any of them matches its name,
 * and the first match (in the order given) is the rule that decided; otherwise it is denied.
 */
export function decideQuery(name: string, rules: readonly DnsRuleRef[]): QueryDecision {
  let c = compiledRules.get(rules);
  if (!c) compiledRules.set(rules, (c = { tests: rules.map(normalizedSelectorTest), allows: rules.map((rule) => ({ verdict: "allow", rule })) }));
  const n = normalizeDnsName(name);
  for (let i = 0; i < c.tests.length; i++) if (c.tests[i]!(n)) return c.allows[i]!;
  return DENY;
}

/** How a denied query is answered (Cilium's --tofqdns-dns-reject-response-code). */
export type RejectCode = "refused" | "nameError";

/** The rcode number of a reject code: REFUSED is 5, NXDOMAIN (name error) is 3. */
export function rejectRcode(code: RejectCode): number {
  return code === "refused" ? 5 : 3;
}

/** The DNS rules of one toPorts entry, with the entry's port blocks (absent: every port of its rule). */
export interface DnsPortRules {
  readonly ruleId: number;
  readonly rules: readonly DnsRuleRef[];
  readonly ports?: readonly { readonly proto: number; readonly port: number; readonly portPrefixLen: number }[];
}

/**
 * The DNS rules that judge a query the datapath steered to the proxy by an entry of rule `ruleId`,
 * sent to `port` over `proto` (IANA number): those of the rule's toPorts entries whose ports hold it,
 * in source order. Another entry's rules never decide it, as in Cilium, where DNS rules belong to a
 * port and protocol.
 */
export function dnsRulesOn(parts: readonly DnsPortRules[], ruleId: number, port: number, proto: number): DnsRuleRef[] {
  const out: DnsRuleRef[] = [];
  for (const p of parts) {
    if (p.ruleId !== ruleId) continue;
    if (p.ports && !p.ports.some((b) => (b.proto === 0 || b.proto === proto) && port >>> (16 - b.portPrefixLen) === b.port >>> (16 - b.portPrefixLen))) continue;
    out.push(...p.rules);
  }
  return out;
}
