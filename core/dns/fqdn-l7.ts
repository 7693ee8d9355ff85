// toFQDNs with L7 rules of their own (toPorts[].rules.http, serverNames): not enforced yet. A learned
// address gets its map entries from the node's DNS proxy, which carry no L7 proxy port, so allowing the
// port would let every request through (Cilium sends it to Envoy with the rules): the learned addresses
// never get those ports (core/policy/dns-rules.ts), and status and admission say so (core/enforcement-gaps.ts).
import type { PortRule, Rule } from "../model.ts";
import { serverNamesOnly } from "../l7/server-names.ts";

/** Whether a toPorts entry is judged by the L7 proxy (HTTP rules, or serverNames alone). */
export function l7Entry(pr: PortRule): boolean {
  return pr.rules?.kind === "http" || serverNamesOnly(pr);
}

/** Whether an egress allow rule has toFQDNs peers. */
export function fqdnRule(r: Rule): boolean {
  return r.direction === "egress" && r.verdict === "allow" && r.peers.some((p) => p.kind === "fqdn");
}
