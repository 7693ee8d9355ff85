// The rules of a parsed policy that the datapath does not enforce yet (L7 and DNS-based), so status and admission can say so.
import type { L7Rules, Peer, Policy } from "./model.ts";

/** One rule, by field path, that is accepted but not enforced as written, and what happens instead. */
export interface EnforcementGap {
  readonly path: string;
  readonly effect: string;
}

// Until the L7 proxy lands (issue 16), an L7 rule compiles to a plain L4 allow of its port: every request passes.
const L7_EFFECT = "not enforced yet: the port is allowed for every request";

function l7Effect(rules: L7Rules): string {
  if (rules.kind === "dns") return "not enforced yet: every DNS query on the port is allowed";
  return L7_EFFECT;
}

/**
 * Every not-enforced rule of `policies` (one parsed object: several Policy values for a CNP with
 * `specs`), in source order, each path once: `toPorts[i].rules.{http,dns,l7}` and `toFQDNs`.
 */
export function enforcementGaps(policies: readonly Policy[]): EnforcementGap[] {
  const out: EnforcementGap[] = [];
  const seen = new Set<string>();
  // Loops without closures: this runs for every admitted policy.
  for (const policy of policies) {
    for (const rule of policy.rules) {
      // toPorts[i] of the source is ports[i] here: the parser keeps every item, in order, when it succeeds.
      for (let i = 0; i < rule.ports.length; i++) {
        const l7 = rule.ports[i]?.rules;
        if (l7) addGap(out, seen, `${rule.origin.path}.toPorts[${i}].rules.${l7.kind}`, l7Effect(l7));
      }
      // No DNS proxy learns the names' addresses yet, so a toFQDNs peer matches no address: that traffic stays denied.
      if (rule.peers.some(isFQDN)) {
        addGap(out, seen, `${rule.origin.path}.toFQDNs`, "not enforced yet: no DNS proxy learns the names' addresses, so it allows nothing");
      }
    }
  }
  return out;
}

const isFQDN = (p: Peer): boolean => p.kind === "fqdn";

/** Adds a gap unless its path is listed already. */
function addGap(out: EnforcementGap[], seen: Set<string>, path: string, effect: string): void {
  if (seen.has(path)) return;
  seen.add(path);
  out.push({ path, effect });
}

/** One line for a condition message: "not enforced yet: spec.egress[0].toPorts[0].rules.http (...); ...". */
export function describeGaps(gaps: readonly EnforcementGap[]): string {
  return gaps.map((g) => `${g.path}: ${g.effect}`).join("; ");
}
