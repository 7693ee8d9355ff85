// The reference evaluator: a packet's verdict straight from the Policy model, to check the compiler against.
import { serverNamesOnly } from "./l7/server-names.ts";
import {
  PROTO_NUMBER,
  isExtendedProtocol,
  type Direction,
  type HTTPRule,
  type LabelSet,
  type Peer,
  type Policy,
  type PortRule,
  type Rule,
  type RuleOrigin,
  type Selector,
  type Verdict,
} from "./model.ts";
import { matchesSelector } from "./selector.ts";
import { formatPrefix, prefixContains, parsePrefix } from "./cidr.ts";
import { fqdnMatches, identityNames, isPolicySubject } from "./peer-match.ts";
import { entityMatches } from "./entities.ts";
import { identityPrefixOf } from "./policy/selector-cache.ts";
import { icmpMatch } from "./icmp.ts";
import { alwaysEnforced } from "./identity.ts";
import { addressInBlock, isPodIdentity } from "./ipblock.ts";
import { isNodePeer } from "./node-peers.ts";
import type { NamedPortResolver } from "./policy/resolution.ts";
import { serviceSelects, type ServiceBackends } from "./policy/services.ts";

/** Why a direction gave its verdict: the rule, or the direction's default. */
export type VerdictReason = RuleOrigin | "default-deny" | "no-policy";

export interface Endpoint {
  readonly id: number;
  readonly labels: LabelSet;
  /** A pod's address: NetworkPolicy ipBlocks match pods by address (core/ipblock.ts). */
  readonly address?: string;
  /** A node's address (peer reserved:host or reserved:remote-node): its Node's labels, which toNodes/fromNodes match (core/node-peers.ts). */
  readonly nodeLabels?: LabelSet;
}

export interface DirectionVerdict {
  readonly verdict: Verdict;
  readonly rule: VerdictReason;
}

export interface VerdictQuery {
  readonly policies: readonly Policy[];
  readonly src: Endpoint;
  readonly dst: Endpoint;
  /** IANA protocol number of the packet (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6). */
  readonly protocol: number;
  /** Destination port (ICMP: the type). */
  readonly port: number;
  readonly namedPorts?: NamedPortResolver;
  /** The Services toServices entries select through (none: they select nothing). */
  readonly services?: readonly ServiceBackends[];
}

/** One direction of one endpoint asked about a flow: the subject's rules of that direction toward the peer, protocol and port. */
export interface DirectionQuery {
  readonly policies: readonly Policy[];
  readonly direction: Direction;
  readonly subject: Endpoint;
  readonly peer: Endpoint;
  /** IANA protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6). */
  readonly protocol: number;
  /** Destination port (ICMP: the type). */
  readonly port: number;
  readonly namedPorts?: NamedPortResolver;
  readonly services?: readonly ServiceBackends[];
}

export interface VerdictAnswer extends DirectionVerdict {
  /** Which side decided: the first denying direction, else ingress. */
  readonly direction: Direction;
  readonly egress: DirectionVerdict;
  readonly ingress: DirectionVerdict;
}

/** Egress of src and ingress of dst must both allow; the first deny (egress checked first) names the rule. */
export function verdict(q: VerdictQuery): VerdictAnswer {
  const flow = { policies: q.policies, protocol: q.protocol, port: q.port, namedPorts: q.namedPorts, services: q.services };
  const egress = directionVerdict({ ...flow, direction: "egress", subject: q.src, peer: q.dst });
  const ingress = directionVerdict({ ...flow, direction: "ingress", subject: q.dst, peer: q.src });
  const decided =
    egress.verdict === "deny"
      ? { ...egress, direction: "egress" as const }
      : { ...ingress, direction: "ingress" as const };
  return { ...decided, egress, ingress };
}

/** One direction of one endpoint: deny rules first, then allow rules, then the default. */
export function directionVerdict(q: DirectionQuery): DirectionVerdict {
  const { applying, rules, hits } = ruleMatcher(q);
  const deny = rules.find((r) => r.verdict === "deny" && hits(r));
  if (deny) return { verdict: "deny", rule: deny.origin };
  const allow = rules.find((r) => r.verdict === "allow" && hits(r));
  if (allow) return { verdict: "allow", rule: allow.origin };
  return alwaysEnforced(q.subject.id) || applying.some((p) => p.defaultDeny[q.direction])
    ? { verdict: "deny", rule: "default-deny" }
    : { verdict: "allow", rule: "no-policy" };
}

/**
 * Every allow rule of one direction of one endpoint that selects the peer, protocol and port, in
 * order: Cilium's policies are additive, so an HTTP request is allowed when any of them allows it
 * (their HTTP rules are ORed on that flow).
 */
export function allowingRules(q: DirectionQuery): Rule[] {
  const { rules, hits } = ruleMatcher(q);
  return rules.filter((r) => r.verdict === "allow" && hits(r));
}

/** A toPorts entry with HTTP rules of an allow rule that allows a flow. */
export interface HttpPart {
  readonly rule: Rule;
  /** Its index in the rule's toPorts. */
  readonly portRule: number;
  readonly http: readonly HTTPRule[];
}

/**
 * What becomes of the HTTP requests of a flow that one direction's L3/L4 rules allow, as Cilium means
 * its policies: `none`, no allowing toPorts entry has HTTP rules (the requests are not inspected);
 * `every-request`, some have, but an allowing rule has no L7 rules for this flow (an L4-only or
 * L3-only allow, of any peer width and any port width: Cilium's docs, "the layer 7 portions of the
 * latter rule will have no effect"; `by` names the first); `http`, the HTTP rules of every allowing
 * entry are ORed (a request passes when one matches; otherwise the proxy answers 403).
 */
export type HttpInspection =
  | { readonly kind: "none" }
  | { readonly kind: "every-request"; readonly by: RuleOrigin; readonly parts: readonly HttpPart[] }
  | { readonly kind: "http"; readonly parts: readonly HttpPart[] };

/** The HTTP side of a flow's allowing rules in one direction (see HttpInspection); meaningful when the direction allows the flow. */
export function httpInspection(q: DirectionQuery): HttpInspection {
  const { protocol, port } = q;
  const portOwner = q.direction === "ingress" ? q.subject.id : q.peer.id;
  const named = (name: string, proto: "TCP" | "UDP" | "SCTP" | "ANY"): readonly number[] => (q.namedPorts ?? (() => []))(portOwner, name, proto);
  const parts: HttpPart[] = [];
  let plain: RuleOrigin | undefined;
  for (const rule of allowingRules(q)) {
    const icmp = rule.icmps.some((f) => {
      const m = icmpMatch(f);
      return m !== undefined && m.proto === protocol && m.type === port;
    });
    if ((rule.ports.length === 0 && rule.icmps.length === 0) || icmp) plain ??= rule.origin;
    rule.ports.forEach((pr, portRule) => {
      if (!portRuleHolds(pr, protocol, port, named)) return;
      if (serverNamesOnly(pr)) parts.push({ rule, portRule, http: [] });
      else if (!pr.rules) plain ??= rule.origin;
      else if (pr.rules.kind === "http") parts.push({ rule, portRule, http: pr.rules.http });
    });
  }
  if (parts.length === 0) return { kind: "none" };
  return plain ? { kind: "every-request", by: plain, parts } : { kind: "http", parts };
}

function ruleMatcher(q: DirectionQuery): { applying: Policy[]; rules: Rule[]; hits: (r: Rule) => boolean } {
  const { policies, direction, subject, peer, protocol, port, namedPorts = () => [], services = [] } = q;
  const applying = policies.filter(
    (p) =>
      isPolicySubject(subject.id, subject.labels, p.nodeSelector !== undefined) &&
      matchesSelector(p.nodeSelector ?? p.subject, subject.labels),
  );
  const rules = applying.flatMap((p) => p.rules.filter((r) => r.direction === direction));
  // fromRequires/toRequires of any rule narrow every endpoint selector of every rule for this subject.
  const requires = rules.flatMap((r) => r.requires);
  const portOwner = direction === "ingress" ? subject.id : peer.id;
  const hits = (r: Rule): boolean =>
    r.peers.some((p) => peerHolds(p, peer, requires, services)) &&
    portsHold(r, protocol, port, (name, proto) => namedPorts(portOwner, name, proto));
  return { applying, rules, hits };
}

function peerHolds(p: Peer, peer: Endpoint, requires: readonly Selector[], services: readonly ServiceBackends[]): boolean {
  switch (p.kind) {
    case "any":
      return true;
    case "selector":
      return (
        matchesSelector(p.selector, peer.labels) && requires.every((r) => matchesSelector(r, peer.labels))
      );
    case "entity":
      return entityMatches(p.entity, peer.labels);
    case "cidr": {
      // Kubernetes' ipBlock: a pod whose address is in the block, whatever its identity.
      if (p.podAddresses === true && isPodIdentity(peer.id) && peer.address !== undefined && addressInBlock(peer.address, p.cidr, p.except)) return true;
      const cidr = parsePrefix(p.cidr);
      if (!cidr) return false;
      const own = identityPrefixOf(peer.labels);
      if (!own)
        return (
          cidr.bits === 0 &&
          (entityMatches(cidr.family === 4 ? "world-ipv4" : "world-ipv6", peer.labels) ||
            hasReservedWorld(peer.labels))
        );
      if (!prefixContains(cidr, own)) return false;
      return !p.except.some((e) => {
        const ep = parsePrefix(e);
        return ep !== undefined && prefixContains(ep, own);
      });
    }
    case "cidrGroup":
      return false; // the groups' CIDRs replace it before evaluation (core/cidr-group.ts); unreplaced it selects nothing
    case "fqdn":
      return identityNames(peer.labels).some((n) => fqdnMatches(n, p.matchName, p.matchPattern));
    case "nodes":
      return isNodePeer(peer.id) && peer.nodeLabels !== undefined && matchesSelector(p.selector, peer.nodeLabels);
    case "service": {
      // A backend pod's identity, or (a Service without a selector) the CIDR identity of one of its addresses.
      const own = identityPrefixOf(peer.labels);
      const host = own !== undefined && own.bits === (own.family === 4 ? 32 : 128) ? formatPrefix(own) : undefined;
      return services.some((s) => serviceSelects(p, s) && (s.identities.includes(peer.id) || (host !== undefined && s.prefixes.includes(host))));
    }
  }
}

function portsHold(
  r: Rule,
  protocol: number,
  port: number,
  named: (name: string, proto: "TCP" | "UDP" | "SCTP" | "ANY") => readonly number[],
): boolean {
  if (r.ports.length === 0 && r.icmps.length === 0) return true;
  if (r.ports.some((pr) => portRuleHolds(pr, protocol, port, named))) return true;
  return r.icmps.some((f) => {
    const m = icmpMatch(f);
    return m !== undefined && m.proto === protocol && m.type === port;
  });
}

function portRuleHolds(
  pr: PortRule,
  protocol: number,
  port: number,
  named: (name: string, proto: "TCP" | "UDP" | "SCTP" | "ANY") => readonly number[],
): boolean {
  if (pr.ports.length === 0) return true;
  const l4 = [PROTO_NUMBER.TCP, PROTO_NUMBER.UDP, PROTO_NUMBER.SCTP] as number[];
  return pr.ports.some((pp) => {
    if (pp.name === undefined && pp.port === 0 && pp.protocol === "ANY") return true;
    const protoOk = pp.protocol === "ANY" ? l4.includes(protocol) : PROTO_NUMBER[pp.protocol] === protocol;
    if (!protoOk) return false;
    if (pp.name !== undefined) return !isExtendedProtocol(pp.protocol) && named(pp.name, pp.protocol).includes(port);
    if (pp.port === 0) return true;
    return port >= pp.port && port <= Math.max(pp.port, pp.endPort);
  });
}

function hasReservedWorld(labels: LabelSet): boolean {
  return labels.labels.some((l) => l.source === "reserved" && l.key === "world");
}
