// The rules of a parsed policy that the nodes do not enforce (L7 and DNS rules where no proxy runs, generic L7), so status and admission can say so.
import type { Peer, Policy, TlsSecretUse } from "./model.ts";
import { ruleTls } from "./policy/http-rules.ts";
import { serverNamesOnly } from "./l7/server-names.ts";
import { fqdnProxiedEntry, fqdnRule, l7Entry } from "./dns/fqdn-l7.ts";

/** One rule, by field path, that is accepted but not enforced as written, and what happens instead. */
export interface EnforcementGap {
  readonly path: string;
  readonly effect: string;
}

// A generic L7 rule (l7proto) has no parser in the proxy: it compiles to a plain L4 allow of its port.
const L7_EFFECT = "not enforced yet: the port is allowed for every request";

/**
 * TLS inspection (terminatingTLS, originatingTLS, serverNames) is done by the nodes' L7 proxy for a
 * port with HTTP rules; without L7 rules nothing sends the port to the proxy, so it is a plain allow
 * whatever the server name.
 */
function tlsEffect(field: "terminatingTLS" | "originatingTLS" | "serverNames"): string {
  return field === "serverNames" ? "not enforced yet without HTTP rules: the port is allowed for every server name" : "not enforced yet without HTTP rules: the connection passes without inspection";
}

const TLS_FIELDS = ["terminatingTLS", "originatingTLS", "serverNames"] as const;

/** What the nodes run: DNS rules and toFQDNs are enforced by the agents' DNS proxy, HTTP rules by their L7 proxy. */
export interface GapOptions {
  /**
   * The nodes the policy concerns whose agents have not said they run the DNS proxy: empty, DNS
   * rules and toFQDNs are enforced; absent (not known, e.g. admission), they count as not enforced.
   */
  readonly withoutDnsProxy?: readonly string[] | undefined;
  /** The same for the L7 proxy and HTTP rules. */
  readonly withoutL7Proxy?: readonly string[] | undefined;
  /**
   * Why a TLS context's Secret cannot be served (missing, malformed, not read), or undefined when it
   * can; absent: not known (admission), and the Secrets are taken as usable.
   */
  readonly tlsSecretProblem?: ((use: TlsSecretUse, role: "terminatingTLS" | "originatingTLS") => string | undefined) | undefined;
}

/** "not enforced yet" when the nodes are not known, else which nodes lack the proxy. */
function notEnforced(nodes: readonly string[] | undefined, proxy: string): string {
  if (nodes === undefined) return "not enforced yet";
  const shown = nodes.slice(0, 5).join(", ") + (nodes.length > 5 ? ` and ${nodes.length - 5} more` : "");
  return `not enforced on ${shown} (no ${proxy} runs there)`;
}

/**
 * Every not-enforced rule of `policies` (one parsed object: several Policy values for a CNP with
 * `specs`), in source order, each path once: `toPorts[i].rules.l7` always, `toPorts[i].rules.http`
 * unless every node concerned runs the L7 proxy, `toPorts[i].rules.dns` and `toFQDNs` unless
 * every node concerned runs the DNS proxy, `toPorts[i].terminatingTLS` / `originatingTLS` /
 * `serverNames` without HTTP rules (nothing inspects them), and with HTTP rules a TLS context whose
 * Secret cannot be served (`tlsSecretProblem`: the port fails closed).
 */
export function enforcementGaps(policies: readonly Policy[], options: GapOptions = {}): EnforcementGap[] {
  const out: EnforcementGap[] = [];
  const seen = new Set<string>();
  const dnsEnforced = options.withoutDnsProxy !== undefined && options.withoutDnsProxy.length === 0;
  const where = notEnforced(options.withoutDnsProxy, "DNS proxy");
  const httpEnforced = options.withoutL7Proxy !== undefined && options.withoutL7Proxy.length === 0;
  const httpWhere = notEnforced(options.withoutL7Proxy, "L7 proxy");
  // Loops without closures: this runs for every admitted policy.
  for (const policy of policies) {
    for (const rule of policy.rules) {
      // toPorts[i] of the source is ports[i] here: the parser keeps every item, in order, when it succeeds.
      const fqdnL7 = fqdnRule(rule);
      for (let i = 0; i < rule.ports.length; i++) {
        const pr = rule.ports[i];
        if (pr && fqdnL7 && l7Entry(pr) && !fqdnProxiedEntry(pr)) {
          // serverNames or TLS inspection with toFQDNs: the port stays closed to the names' addresses (core/dns/fqdn-l7.ts).
          addGap(out, seen, `${rule.origin.path}.toPorts[${i}].${pr.rules?.kind === "http" ? "rules.http" : "serverNames"}`, "not enforced yet with toFQDNs: the names' addresses are not allowed on the port (fails closed)");
          continue;
        }
        // HTTP rules with toFQDNs: the learned addresses' connections go through the L7 proxy; enforced where it and the DNS proxy run.
        if (pr && fqdnL7 && fqdnProxiedEntry(pr) && httpEnforced && !dnsEnforced) {
          addGap(out, seen, `${rule.origin.path}.toPorts[${i}].rules.http`, `${where}: no DNS proxy learns the names' addresses, so the port allows nothing`);
          continue;
        }
        if (pr && serverNamesOnly(pr)) {
          // Judged by the L7 proxy from the ClientHello (sni-filter.ts), where one runs.
          if (!httpEnforced) addGap(out, seen, `${rule.origin.path}.toPorts[${i}].serverNames`, `${httpWhere}: the port is allowed for every server name`);
        } else if (pr && pr.rules?.kind !== "http") {
          for (const f of TLS_FIELDS) if (pr[f] !== undefined) addGap(out, seen, `${rule.origin.path}.toPorts[${i}].${f}`, tlsEffect(f));
        } else if (pr && httpEnforced && options.tlsSecretProblem) {
          const tls = ruleTls(pr, policy.namespace);
          for (const [role, use] of [["terminatingTLS", tls?.terminating], ["originatingTLS", tls?.originating]] as const) {
            const problem = use && options.tlsSecretProblem(use, role);
            if (problem) addGap(out, seen, `${rule.origin.path}.toPorts[${i}].${role}`, `Secret ${use.secret.namespace}/${use.secret.name} ${problem}: connections to the port are refused`);
          }
        }
        const l7 = pr?.rules;
        if (!l7 || (l7.kind === "dns" && dnsEnforced) || (l7.kind === "http" && httpEnforced)) continue;
        const effect = l7.kind === "dns" ? `${where}: every DNS query on the port is allowed` : l7.kind === "http" ? `${httpWhere}: the port is allowed for every request` : L7_EFFECT;
        addGap(out, seen, `${rule.origin.path}.toPorts[${i}].rules.${l7.kind}`, effect);
      }
      // Without a DNS proxy nothing learns the names' addresses, so a toFQDNs peer matches no address: that traffic stays denied.
      if (!dnsEnforced && rule.peers.some(isFQDN)) {
        addGap(out, seen, `${rule.origin.path}.toFQDNs`, `${where}: no DNS proxy learns the names' addresses, so it allows nothing`);
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
