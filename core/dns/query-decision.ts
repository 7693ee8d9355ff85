// The verdict on one DNS query: the DNS rules of the port it was sent to allow it, or it is refused.
import { selectorMatches, type DnsNameSelector } from "./name-pattern.ts";

/** One DNS rule of a policy: the compiled rule it belongs to and its index in `toPorts[].rules.dns`. */
export interface DnsRuleRef extends DnsNameSelector {
  readonly ruleId: number;
  readonly index: number;
}

export type QueryDecision =
  | { readonly verdict: "allow"; readonly rule: DnsRuleRef }
  | { readonly verdict: "deny" };

/**
 * Cilium's meaning: a query on a port with DNS rules is allowed when any of them matches its name,
 * and the first match (in the order given) is the rule that decided; otherwise it is denied.
 */
export function decideQuery(name: string, rules: readonly DnsRuleRef[]): QueryDecision {
  for (const rule of rules) if (selectorMatches(name, rule)) return { verdict: "allow", rule };
  return { verdict: "deny" };
}

/** How a denied query is answered (Cilium's --tofqdns-dns-reject-response-code). */
export type RejectCode = "refused" | "nameError";

/** The rcode number of a reject code: REFUSED is 5, NXDOMAIN (name error) is 3. */
export function rejectRcode(code: RejectCode): number {
  return code === "refused" ? 5 : 3;
}
