// The DNS side of a subject's egress policy: the DNS rules of its proxied ports and its toFQDNs selectors, for the node's DNS proxy.
import { PROTO_NUMBER, type CompiledPort, type DNSRule, type FqdnPort, type FqdnSelectorTerm, type Policy, type PortRule, type Rule, type RuleDnsRules, type SubjectDns } from "../model.ts";
import { icmpMatch } from "../icmp.ts";
import { rangeToPrefixes } from "../portprefix.ts";
import { protoNumbers } from "./resolution.ts";
import { fqdnProxiedEntry, l7Entry } from "../dns/fqdn-l7.ts";
import type { L7Part } from "./proxy-ports.ts";

const ALL_PORTS: CompiledPort = { proto: 0, port: 0, portPrefixLen: 0 };

/**
 * The port blocks an egress rule allows to a toFQDNs peer, as the compiler writes them for any
 * other peer. Named ports are left out: they resolve against the peer's pods, and a learned
 * address has none. A toPorts entry with HTTP rules gets the L7 proxy port of its HTTP part
 * (`proxyPortOf` its index in toPorts: the port the compiler gives that HTTP part alone); one with serverNames or TLS
 * inspection is left out, so it stays closed to the learned addresses (core/dns/fqdn-l7.ts).
 */
export function rulePorts(r: Rule, proxyPortOf?: (portRule: number) => number): FqdnPort[] {
  const out: FqdnPort[] = [];
  r.ports.forEach((pr, portRule) => {
    if (!l7Entry(pr)) out.push(...portRulePorts(pr));
    else if (fqdnProxiedEntry(pr) && proxyPortOf) {
      const proxyPort = proxyPortOf(portRule);
      out.push(...portRulePorts(pr).map((p) => ({ ...p, proxyPort })));
    }
  });
  for (const f of r.icmps) {
    const m = icmpMatch(f);
    if (m) out.push({ proto: m.proto, port: m.type, portPrefixLen: 16 });
  }
  if (r.ports.length === 0 && r.icmps.length === 0) out.push(ALL_PORTS);
  return out;
}

/** The port blocks of one toPorts entry (every port when it lists none; named ports left out). */
function portRulePorts(pr: PortRule): CompiledPort[] {
  const out: CompiledPort[] = [];
  if (pr.ports.length === 0) out.push(ALL_PORTS);
  for (const pp of pr.ports) {
    if (pp.name !== undefined) continue;
    if (pp.port === 0) {
      out.push(pp.protocol === "ANY" ? ALL_PORTS : { proto: PROTO_NUMBER[pp.protocol], port: 0, portPrefixLen: 0 });
      continue;
    }
    for (const proto of protoNumbers(pp.protocol)) {
      for (const b of rangeToPrefixes(pp.port, Math.max(pp.port, pp.endPort))) out.push({ proto, port: b.port, portPrefixLen: b.prefixLen });
    }
  }
  return out;
}

/**
 * The DNS rules and toFQDNs selectors of the egress allow rules in `parts` (the policies selecting
 * one subject, `keys[i]` the key of `parts[i]`); undefined when there are none. The DNS rules of
 * each toPorts entry stay its own, with the entry's ports: the entries of one rule share its proxy
 * port, and the proxy tells them apart by the port the query was sent to.
 */
export function subjectDns(
  parts: readonly Policy[],
  keys: readonly string[],
  ruleIdOf: (key: string, origin: Rule["origin"]) => number,
  proxyPortFor?: (parts: readonly L7Part[]) => number,
): SubjectDns | undefined {
  const dnsRules: RuleDnsRules[] = [];
  const fqdnSelectors: FqdnSelectorTerm[] = [];
  parts.forEach((p, i) => {
    const key = keys[i] ?? "";
    for (const r of p.rules) {
      if (r.direction !== "egress" || r.verdict !== "allow") continue;
      const dnsEntries = r.ports.filter((pr) => pr.rules?.kind === "dns");
      const fqdns = r.peers.filter((peer) => peer.kind === "fqdn");
      if (dnsEntries.length === 0 && fqdns.length === 0) continue;
      const ruleId = ruleIdOf(key, r.origin);
      for (const pr of dnsEntries) {
        if (pr.rules?.kind === "dns") dnsRules.push({ ruleId, rules: pr.rules.dns.map(nameSelector), ports: portRulePorts(pr) });
      }
      if (fqdns.length > 0) {
        const ports = rulePorts(r, proxyPortFor && ((portRule) => proxyPortFor([{ ruleId, portRule }])));
        for (const f of fqdns) fqdnSelectors.push({ ruleId, ...nameSelector(f), ports });
      }
    }
  });
  return dnsRules.length === 0 && fqdnSelectors.length === 0 ? undefined : { dnsRules, fqdnSelectors };
}

/** Only the two fields a name selector has (a parsed peer carries its kind too). */
function nameSelector(s: { readonly matchName?: string; readonly matchPattern?: string }): DNSRule {
  return { ...(s.matchName !== undefined ? { matchName: s.matchName } : {}), ...(s.matchPattern !== undefined ? { matchPattern: s.matchPattern } : {}) };
}

/** Typed equality of two subjects' DNS parts (absent equals absent only). */
export function sameSubjectDns(a: SubjectDns | undefined, b: SubjectDns | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameList(a.dnsRules, b.dnsRules, (x, y) => x.ruleId === y.ruleId && sameList(x.rules, y.rules, sameSelector) && sameList(x.ports ?? [], y.ports ?? [], samePort) && (x.ports === undefined) === (y.ports === undefined)) && sameList(a.fqdnSelectors, b.fqdnSelectors, sameTerm);
}

const sameSelector = (a: DNSRule, b: DNSRule): boolean => a.matchName === b.matchName && a.matchPattern === b.matchPattern;
const samePort = (a: CompiledPort, b: CompiledPort): boolean => a.proto === b.proto && a.port === b.port && a.portPrefixLen === b.portPrefixLen;
const sameFqdnPort = (a: FqdnPort, b: FqdnPort): boolean => samePort(a, b) && a.proxyPort === b.proxyPort;
const sameTerm = (a: FqdnSelectorTerm, b: FqdnSelectorTerm): boolean => a.ruleId === b.ruleId && sameSelector(a, b) && sameList(a.ports, b.ports, sameFqdnPort);

function sameList<T>(a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!same(a[i]!, b[i]!)) return false;
  return true;
}
