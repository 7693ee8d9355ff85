// toFQDNs with L7 rules of their own. HTTP rules (without TLS) are enforced: the learned addresses' entries for
// that toPorts entry carry its L7 proxy port (core/policy/dns-rules.ts), so the node's L7 proxy judges each
// request, as Cilium sends them to Envoy. serverNames and TLS inspection on such an entry are not yet: the
// learned addresses never get those ports (fail closed), and status and admission say so (core/enforcement-gaps.ts).
import type { PortRule, Rule } from "../model.ts";
import { serverNamesOnly } from "../l7/server-names.ts";

/** Whether a toPorts entry is judged by the L7 proxy (HTTP rules, or serverNames alone). */
export function l7Entry(pr: PortRule): boolean {
  return pr.rules?.kind === "http" || serverNamesOnly(pr);
}

/** Whether a toPorts entry of a toFQDNs rule is steered to the L7 proxy: HTTP rules without TLS inspection or serverNames. */
export function fqdnProxiedEntry(pr: PortRule): boolean {
  return pr.rules?.kind === "http" && !pr.terminatingTLS && !pr.originatingTLS && !pr.serverNames?.length;
}

/** Whether an egress allow rule has toFQDNs peers. */
export function fqdnRule(r: Rule): boolean {
  return r.direction === "egress" && r.verdict === "allow" && r.peers.some((p) => p.kind === "fqdn");
}
