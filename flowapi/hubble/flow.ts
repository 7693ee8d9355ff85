// Our Flow in Hubble's shape (flow.Flow of Cilium's flow.proto) and back: what the agents serve and what `membrane observe` reads.
import { L7_DROP_REASON, protocolName, tlsSummary, type Flow, type FlowL7, type PolicyMatch, type FlowDecision, type FlowEndpoint, type FlowType } from "../flow.ts";
import { CILIUM_EVENT_TYPE, msOf, timestampOf, type HubbleEndpoint, type HubbleFlow, type HubbleLayer4, type HubbleLayer7, type HubblePolicy, type HubbleTCPFlags } from "./types.ts";
import { IDENTITY } from "../../core/identity.ts";
import { CLUSTER_LABEL } from "../../core/labels.ts";

const IDENTITY_HOST = IDENTITY.host;

/**
 * The datapath's drop reasons (their texts, node-agent/bpf/layout.ts DROP_REASONS; a test checks that every
 * one is here) as Cilium's DropReason (name and number, flow.proto): the nearest one Cilium has.
 * `policy denied` is a deny rule (Cilium's POLICY_DENY, "denied by denylist"); default deny is no allow
 * (POLICY_DENIED). A policy that did not fit the map has no Cilium reason: the endpoint has no usable policy,
 * which is what NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION says.
 */
export const CILIUM_DROP_REASONS: Readonly<Record<string, { readonly name: string; readonly code: number }>> = {
  "policy denied": { name: "POLICY_DENY", code: 181 },
  "policy denied (default deny)": { name: "POLICY_DENIED", code: 133 },
  "spoofed source": { name: "INVALID_SOURCE_IP", code: 132 },
  "unknown endpoint": { name: "NO_MATCHING_LOCAL_CONTAINER_FOUND", code: 152 },
  "VNI from unknown node": { name: "UNKNOWN_SENDER", code: 172 },
  "invalid identity in VNI": { name: "INVALID_IDENTITY", code: 171 },
  "malformed packet": { name: "INVALID_PACKET_DROPPED", code: 134 },
  "unsupported L3 protocol": { name: "UNSUPPORTED_L3_PROTOCOL", code: 139 },
  "IP fragment": { name: "IP_FRAGMENTATION_NOT_SUPPORTED", code: 157 },
  "tunnel key error": { name: "ERROR_RETRIEVING_TUNNEL_KEY", code: 147 },
  "no tunnel device": { name: "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT", code: 160 },
  "policy did not fit the policy map (endpoint fails closed)": { name: "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION", code: 165 },
  "proxy redirect not possible (fails closed)": { name: "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL", code: 180 },
  "UNENCRYPTED: no working tunnel to the destination node (strict encryption)": { name: "UNENCRYPTED_TRAFFIC", code: 195 },
  "host firewall program for pod-to-node traffic missing (fails closed)": { name: "MISSED_TAIL_CALL", code: 140 },
  // A proxy's refusal (no L7 rule allowed the request): no allow, as default deny (Cilium itself leaves it unset).
  [L7_DROP_REASON]: { name: "POLICY_DENIED", code: 133 },
};

/** Code → text for L3/L4 drops (an L7 flow's code reads back as the L7 reason, see fromHubbleFlow). */
const TEXT_BY_CODE: ReadonlyMap<number, string> = new Map(
  Object.entries(CILIUM_DROP_REASONS)
    .filter(([text]) => text !== L7_DROP_REASON)
    .map(([text, r]) => [r.code, text]),
);

/** Cilium's drop reason for one of our drop-reason texts; undefined for a text the datapath does not emit. */
export function ciliumDropReason(text: string): { readonly name: string; readonly code: number } | undefined {
  return Object.hasOwn(CILIUM_DROP_REASONS, text) ? CILIUM_DROP_REASONS[text] : undefined;
}

/** The label keys Cilium puts on a policy (pkg/policy/api labels), so tools that read them find the policy. */
const POLICY_LABEL = {
  derivedFrom: "k8s:io.cilium.k8s.policy.derived-from",
  name: "k8s:io.cilium.k8s.policy.name",
  namespace: "k8s:io.cilium.k8s.policy.namespace",
} as const;
/** Our own label: the field path of the deciding rule inside the policy (Cilium has no such thing). */
export const RULE_LABEL = "membrane:rule";
/** A default deny is named as a policy of this kind, so a denied flow always says what denied it. */
export const DEFAULT_DENY_POLICY: HubblePolicy = { name: "default-deny", kind: "DefaultDeny", labels: ["membrane:default-deny"] };

export function hubblePolicy(d: FlowDecision): HubblePolicy {
  if (d.kind === "default-deny") return DEFAULT_DENY_POLICY;
  return {
    name: d.name,
    ...(d.namespace !== undefined ? { namespace: d.namespace } : {}),
    kind: d.policyKind,
    labels: [
      `${POLICY_LABEL.derivedFrom}=${d.policyKind}`,
      `${POLICY_LABEL.name}=${d.name}`,
      ...(d.namespace !== undefined ? [`${POLICY_LABEL.namespace}=${d.namespace}`] : []),
      `${RULE_LABEL}=${d.rule}`,
    ],
  };
}

/** The decision a Hubble policy names (the inverse of hubblePolicy); undefined for a policy we did not write. */
export function decisionOf(p: HubblePolicy): FlowDecision | undefined {
  if (p.kind === DEFAULT_DENY_POLICY.kind) return { kind: "default-deny" };
  const rule = p.labels?.find((l) => l.startsWith(`${RULE_LABEL}=`))?.slice(RULE_LABEL.length + 1);
  if (rule === undefined) return undefined;
  return { kind: "rule", policyKind: p.kind as Extract<FlowDecision, { kind: "rule" }>["policyKind"], ...(p.namespace ? { namespace: p.namespace } : {}), name: p.name, rule };
}

/** The identity label that names a pod's cluster, as Cilium's endpoints carry it (`cluster_name` is read from it). */
const CLUSTER_LABEL_PREFIX = `k8s:${CLUSTER_LABEL}=`;
const clusterOfLabels = new WeakMap<readonly string[], string>();

/** The cluster a pod's identity labels name ("" for others); the agents' label lists are frozen and shared, so each is read once. */
function clusterNameOf(labels: readonly string[]): string {
  let name = clusterOfLabels.get(labels);
  if (name === undefined) {
    name = labels.find((l) => l.startsWith(CLUSTER_LABEL_PREFIX))?.slice(CLUSTER_LABEL_PREFIX.length) ?? "";
    clusterOfLabels.set(labels, name);
  }
  return name;
}

function endpoint(e: FlowEndpoint): HubbleEndpoint {
  const cluster = clusterNameOf(e.labels);
  return {
    identity: e.identity,
    ...(cluster !== "" ? { cluster_name: cluster } : {}),
    ...(e.namespace !== undefined ? { namespace: e.namespace } : {}),
    labels: e.labels,
    ...(e.pod !== undefined ? { pod_name: e.pod } : {}),
    ...(e.workloads !== undefined && e.workloads.length > 0 ? { workloads: e.workloads } : {}),
  };
}

function ipOf(f: Flow): HubbleFlow["IP"] {
  return { source: f.source.ip, destination: f.destination.ip, ipVersion: f.source.ip.includes(":") ? "IPv6" : "IPv4", ...(f.encrypted === true ? { encrypted: true } : {}) };
}

/** Where the flow was seen and what it belongs to: Hubble's `interface` and `trace_context` (absent when unknown). */
function seenOn(f: Flow): { interface?: HubbleFlow["interface"]; trace_context?: HubbleFlow["trace_context"] } {
  return {
    ...(f.interface !== undefined ? { interface: f.interface } : {}),
    ...(f.traceId !== undefined ? { trace_context: { parent: { trace_id: f.traceId } } } : {}),
  };
}

/** Hubble's `source_names`/`destination_names`: the DNS names known for each address (proto3 leaves empty lists out). */
function names(f: Flow): { source_names?: readonly string[]; destination_names?: readonly string[] } {
  return {
    ...(f.source.names?.length ? { source_names: f.source.names } : {}),
    ...(f.destination.names?.length ? { destination_names: f.destination.names } : {}),
  };
}

function layer4(f: Flow): HubbleLayer4 | undefined {
  const ports = { source_port: f.source.port, destination_port: f.destination.port };
  switch (f.protocol) {
    case "TCP":
      return { TCP: f.tcpFlags !== undefined ? { ...ports, flags: tcpFlagsOf(f.tcpFlags) } : ports };
    case "UDP":
      return { UDP: ports };
    case "SCTP":
      return { SCTP: ports };
    case "ICMP":
      return { ICMPv4: icmpOf(f, ICMP_ECHO.v4) };
    case "ICMPv6":
      return { ICMPv6: icmpOf(f, ICMP_ECHO.v6) };
    case "VRRP":
      return { VRRP: { type: 0 } };
    case "IGMP":
      return { IGMP: { type: 0 } };
    default:
      return undefined;
  }
}

/** The flags of a TCP header's flags byte, by their bit (NS is in the byte before: the datapath does not report it). */
const TCP_FLAG_BITS: readonly (readonly [Exclude<keyof HubbleTCPFlags, "NS">, number])[] = [
  ["FIN", 0x01],
  ["SYN", 0x02],
  ["RST", 0x04],
  ["PSH", 0x08],
  ["ACK", 0x10],
  ["URG", 0x20],
  ["ECE", 0x40],
  ["CWR", 0x80],
];

/** Hubble's TCPFlags of each flags byte: the flags set (proto3 leaves the others out); made once, shared by every flow. */
const TCP_FLAGS_OF_BYTE: readonly HubbleTCPFlags[] = Array.from({ length: 256 }, (_, byte) =>
  Object.freeze(Object.fromEntries(TCP_FLAG_BITS.filter(([, bit]) => (byte & bit) !== 0).map(([name]) => [name, true]))),
);

function tcpFlagsOf(byte: number): HubbleTCPFlags {
  return TCP_FLAGS_OF_BYTE[byte & 0xff]!;
}

/** The flags byte of Hubble's TCPFlags. */
function tcpFlagsByte(flags: HubbleTCPFlags): number {
  return TCP_FLAG_BITS.reduce((b, [name, bit]) => (flags[name] === true ? b | bit : b), 0);
}

/** The echo types of ICMP and ICMPv6. */
const ICMP_ECHO = { v4: { request: 8, reply: 0 }, v6: { request: 128, reply: 129 } } as const;

/**
 * The ICMP type, from the ports the datapath reports for ICMP (bpf/lib/packet.h parse_l4): an echo request is
 * (id → request type), an echo reply (request type → id), any other message (0 → its type); the code is the event's.
 */
function icmpOf(f: Flow, echo: { readonly request: number; readonly reply: number }): { type: number; code: number } {
  const code = f.icmpCode ?? 0;
  if (f.destination.port === echo.request) return { type: echo.request, code };
  if (f.source.port === echo.request) return { type: echo.reply, code };
  return { type: f.destination.port, code };
}

/** The ports our Flow gives an ICMP message of `type` (the echo id is not in Hubble's flow: 0). */
function icmpPorts(type: number, echo: { readonly request: number; readonly reply: number }): { source: number; destination: number } {
  if (type === echo.reply) return { source: echo.request, destination: 0 };
  return { source: 0, destination: type };
}

/** Cilium's PolicyMatchType numbers (pkg/monitor/api), Hubble's `policy_match_type`. */
export const POLICY_MATCH_TYPE: Readonly<Record<PolicyMatch, number>> = { "L3-Only": 1, "L3-L4": 2, "L4-Only": 3, all: 4, "L3-Proto": 5, "Proto-Only": 6 };
const MATCH_BY_NUMBER: ReadonlyMap<number, PolicyMatch> = new Map(Object.entries(POLICY_MATCH_TYPE).map(([k, v]) => [v, k as PolicyMatch]));

/** Hubble's Layer4 has no field for other IP protocols (GRE, ESP, …): the human-readable Summary names it. */
const SUMMARY_PROTOCOL = /^IP protocol (\S+)$/;

/** DNS response codes as Hubble names them in summaries and dns metrics (the IANA registry's descriptions, as gopacket prints them). */
export const DNS_RCODE_TEXT: Readonly<Record<number, string>> = {
  0: "No Error",
  1: "Format Error",
  2: "Server Failure",
  3: "Non-Existent Domain",
  4: "Not Implemented",
  5: "Query Refused",
  6: "Name Exists when it should not",
  7: "RR Set Exists when it should not",
  8: "RR Set that should exist does not",
  9: "Not Authorized",
  10: "Name not contained in zone",
  11: "DSO-TYPE Not Implemented",
  16: "Bad OPT Version",
  17: "Key not recognized",
  18: "Signature out of time window",
  19: "Bad TKEY Mode",
  20: "Duplicate key name",
  21: "Algorithm not supported",
  22: "Bad Truncation",
  23: "Bad/missing Server Cookie",
};

/** Hubble's one-line text of an L7 record (what `hubble observe` prints in brackets), as Cilium's L7 parser writes it. */
function l7SummaryText(l: FlowL7): string {
  if (l.tls) return tlsSummary(l.tls);
  if (l.http) {
    const request = `${l.http.method} ${l.http.url}`;
    if (l.type === "REQUEST") return `${l.http.protocol} ${request}`;
    return `${l.http.protocol} ${l.http.code ?? 0} ${Math.floor((l.latencyNs ?? 0) / 1e6)}ms (${request})`;
  }
  if (l.dns) {
    const d = l.dns;
    const qtypes = d.qtypes.join(",");
    if (l.type === "REQUEST") return `DNS Query ${d.query} ${qtypes}`;
    const rcode = d.rcode ?? 0;
    const parts = [...(d.ips?.length ? [`"${d.ips.join(",")}"`] : []), ...(d.cnames?.length ? [`CNAMEs: "${d.cnames.join(",")}"`] : [])];
    const answer = rcode !== 0 ? `RCode: ${DNS_RCODE_TEXT[rcode] ?? String(rcode)}` : parts.join(" ");
    return `DNS Answer ${answer} TTL: ${d.ttl ?? 0} (${d.observationSource === "proxy" ? "Proxy" : "Query"} ${d.query} ${qtypes})`;
  }
  return "";
}

function hubbleLayer7(l: FlowL7): HubbleLayer7 {
  const d = l.dns;
  const h = l.http;
  return {
    type: l.type,
    ...(l.latencyNs !== undefined ? { latency_ns: l.latencyNs } : {}),
    ...(d !== undefined
      ? {
          dns: {
            query: d.query,
            ...(d.ips !== undefined ? { ips: d.ips } : {}),
            ...(d.ttl !== undefined ? { ttl: d.ttl } : {}),
            ...(d.cnames !== undefined ? { cnames: d.cnames } : {}),
            ...(d.observationSource !== undefined ? { observation_source: d.observationSource } : {}),
            ...(d.rcode !== undefined ? { rcode: d.rcode } : {}),
            qtypes: d.qtypes,
            ...(d.rrtypes !== undefined ? { rrtypes: d.rrtypes } : {}),
          },
        }
      : {}),
    ...(h !== undefined ? { http: { ...(h.code !== undefined ? { code: h.code } : {}), method: h.method, url: h.url, protocol: h.protocol, ...(h.headers !== undefined ? { headers: h.headers } : {}) } } : {}),
  };
}

function flowL7(l: HubbleLayer7): FlowL7 {
  const d = l.dns;
  const h = l.http;
  const latency = Number(l.latency_ns ?? 0);
  return {
    type: l.type === "RESPONSE" ? "RESPONSE" : "REQUEST",
    ...(latency > 0 ? { latencyNs: latency } : {}),
    ...(d !== undefined
      ? {
          dns: {
            query: d.query,
            qtypes: d.qtypes ?? [],
            ...(d.ips?.length ? { ips: d.ips } : {}),
            ...(d.ttl ? { ttl: Number(d.ttl) } : {}),
            ...(d.cnames?.length ? { cnames: d.cnames } : {}),
            ...(l.type === "RESPONSE" ? { rcode: Number(d.rcode ?? 0) } : {}),
            ...(d.rrtypes?.length ? { rrtypes: d.rrtypes } : {}),
            ...(d.observation_source ? { observationSource: d.observation_source } : {}),
          },
        }
      : {}),
    ...(h !== undefined ? { http: { method: h.method, url: h.url, protocol: h.protocol, ...(h.code ? { code: Number(h.code) } : {}), ...(h.headers?.length ? { headers: h.headers } : {}) } } : {}),
  };
}

/** Our flow in Hubble's shape. Pure. */
export function toHubbleFlow(f: Flow): HubbleFlow {
  if (f.type === "l7") return toHubbleL7Flow(f);
  const ingress = f.direction === "ingress";
  // An audit's reason is the drop that did not happen: Hubble reports none (its verdict AUDIT says it).
  const drop = f.dropReason !== undefined && f.verdict === "DROPPED" ? ciliumDropReason(f.dropReason) : undefined;
  const l4 = layer4(f);
  const policies = f.decidedBy !== undefined ? [hubblePolicy(f.decidedBy)] : [];
  // An ERROR was allowed (the destination failed, not the policy): its rule is the one that allowed it.
  const verdictOf = f.verdict === "DROPPED" || f.verdict === "AUDIT" ? (ingress ? "ingress_denied_by" : "egress_denied_by") : ingress ? "ingress_allowed_by" : "egress_allowed_by";
  // Drops carry Cilium's drop reason as sub-type; a forwarded flow with no policy applying is a trace
  // at the endpoint (Cilium's TRACE_TO_LXC = 0 / TRACE_FROM_LXC = 5).
  const eventType =
    f.type === "drop"
      ? { type: CILIUM_EVENT_TYPE.drop, sub_type: drop?.code ?? 0 }
      : f.type === "policy-verdict"
        ? { type: CILIUM_EVENT_TYPE["policy-verdict"], sub_type: 0 }
        : { type: CILIUM_EVENT_TYPE.trace, sub_type: ingress ? 0 : 5 };
  return {
    time: timestampOf(Date.parse(f.time)),
    verdict: f.verdict,
    ...(drop !== undefined ? { drop_reason: drop.code, drop_reason_desc: drop.name } : {}),
    IP: ipOf(f),
    ...(l4 !== undefined ? { l4 } : { Summary: `IP protocol ${f.protocol}` }),
    source: endpoint(f.source),
    destination: endpoint(f.destination),
    ...names(f),
    ...seenOn(f),
    Type: "L3_L4",
    node_name: f.node,
    ...(f.nodeLabels?.length ? { node_labels: f.nodeLabels } : {}),
    event_type: eventType,
    traffic_direction: ingress ? "INGRESS" : "EGRESS",
    ...(f.type === "trace" ? { trace_observation_point: ingress ? "TO_ENDPOINT" : "FROM_ENDPOINT" } : {}),
    // The datapath judges (and reports) a connection by its first packet; replies pass on its conntrack entry.
    ...(f.decidedBy !== undefined || f.type !== "drop" ? { is_reply: { value: false } } : {}),
    ...(policies.length > 0 ? { [verdictOf]: policies } : {}),
    ...(f.policyMatch !== undefined ? { policy_match_type: POLICY_MATCH_TYPE[f.policyMatch] } : {}),
  };
}

/**
 * A proxy's record (Hubble's L7 flow, Cilium's access log message type): the request from the endpoint (a refused one
 * DROPPED) or its response back to it (`is_reply`), with the policy that sent it to the proxy and decided it.
 */
function toHubbleL7Flow(f: Flow): HubbleFlow {
  const ingress = f.direction === "ingress";
  const drop = f.verdict === "DROPPED" ? ciliumDropReason(f.dropReason ?? L7_DROP_REASON) : undefined;
  const l4 = layer4(f);
  // An ERROR was allowed (the destination failed, not the policy): its rule is the one that allowed it.
  const verdictOf = f.verdict === "DROPPED" || f.verdict === "AUDIT" ? (ingress ? "ingress_denied_by" : "egress_denied_by") : ingress ? "ingress_allowed_by" : "egress_allowed_by";
  return {
    time: timestampOf(Date.parse(f.time)),
    verdict: f.verdict,
    ...(drop !== undefined ? { drop_reason: drop.code, drop_reason_desc: drop.name } : {}),
    IP: ipOf(f),
    ...(l4 !== undefined ? { l4 } : {}),
    source: endpoint(f.source),
    destination: endpoint(f.destination),
    ...names(f),
    ...seenOn(f),
    Type: "L7",
    node_name: f.node,
    ...(f.nodeLabels?.length ? { node_labels: f.nodeLabels } : {}),
    event_type: { type: CILIUM_EVENT_TYPE.l7, sub_type: 0 },
    traffic_direction: ingress ? "INGRESS" : "EGRESS",
    is_reply: { value: f.l7?.type === "RESPONSE" },
    ...(f.decidedBy !== undefined ? { [verdictOf]: [hubblePolicy(f.decidedBy)] } : {}),
    ...(f.l7 !== undefined ? { l7: hubbleLayer7(f.l7), Summary: l7SummaryText(f.l7) } : {}),
  };
}

/**
 * The drop an audit let pass: Hubble's AUDIT carries no drop reason, but audit mode only passes policy drops, and
 * which one its policy says: default deny, or a deny rule.
 */
function auditReason(d: FlowDecision | undefined): string | undefined {
  if (d === undefined) return undefined;
  return d.kind === "default-deny" ? "policy denied (default deny)" : "policy denied";
}

const TYPE_OF_EVENT: Readonly<Record<number, FlowType>> = {
  [CILIUM_EVENT_TYPE.drop]: "drop",
  [CILIUM_EVENT_TYPE["policy-verdict"]]: "policy-verdict",
  [CILIUM_EVENT_TYPE.trace]: "trace",
  [CILIUM_EVENT_TYPE.l7]: "l7",
};

function protocolOf(h: HubbleFlow): string {
  const l4 = h.l4 ?? {};
  if (l4.TCP) return "TCP";
  if (l4.UDP) return "UDP";
  if (l4.SCTP) return "SCTP";
  if (l4.ICMPv4) return "ICMP";
  if (l4.ICMPv6) return "ICMPv6";
  if (l4.VRRP) return "VRRP";
  if (l4.IGMP) return "IGMP";
  return SUMMARY_PROTOCOL.exec(h.Summary ?? "")?.[1] ?? protocolName(0);
}

function ports(h: HubbleFlow): { source: number; destination: number } {
  if (h.l4?.ICMPv4) return icmpPorts(Number(h.l4.ICMPv4.type ?? 0), ICMP_ECHO.v4);
  if (h.l4?.ICMPv6) return icmpPorts(Number(h.l4.ICMPv6.type ?? 0), ICMP_ECHO.v6);
  const p = h.l4?.TCP ?? h.l4?.UDP ?? h.l4?.SCTP;
  return { source: Number(p?.source_port ?? 0), destination: Number(p?.destination_port ?? 0) };
}

/** Hubble has no field for it: a host endpoint (reserved:host) is the observing node's own (`node_name`). */
function flowEndpoint(e: HubbleEndpoint | undefined, ip: string, port: number, node: string | undefined, names: readonly string[] | undefined): FlowEndpoint {
  const identity = Number(e?.identity ?? 0);
  return {
    identity,
    labels: e?.labels ?? [],
    ...(e?.namespace ? { namespace: e.namespace } : {}),
    ...(e?.pod_name ? { pod: e.pod_name } : {}),
    ...(e?.workloads !== undefined && e.workloads.length > 0 ? { workloads: e.workloads.map((w) => ({ kind: w.kind ?? "", name: w.name ?? "" })) } : {}),
    ip,
    port,
    ...(identity === IDENTITY_HOST && node ? { host: node } : {}),
    ...(names?.length ? { names } : {}),
  };
}

/**
 * A Hubble flow as our Flow (the inverse of toHubbleFlow for every flow an agent serves): for `membrane observe`,
 * which keeps its own output while reading Hubble's API. A flow from another Hubble server reads as well as its
 * fields allow (no deciding rule when its policies carry no `membrane:rule` label).
 */
export function fromHubbleFlow(h: HubbleFlow): Flow {
  const ingress = h.traffic_direction === "INGRESS";
  const p = ports(h);
  const icmp = h.l4?.ICMPv4 ?? h.l4?.ICMPv6;
  const policy = (ingress ? [...(h.ingress_denied_by ?? []), ...(h.ingress_allowed_by ?? [])] : [...(h.egress_denied_by ?? []), ...(h.egress_allowed_by ?? [])])[0];
  const decidedBy = policy !== undefined ? decisionOf(policy) : undefined;
  const l7 = h.Type === "L7" && h.l7 ? flowL7(h.l7) : undefined;
  const dropReason =
    h.verdict === "DROPPED" ? (l7 !== undefined ? L7_DROP_REASON : (TEXT_BY_CODE.get(Number(h.drop_reason ?? 0)) ?? h.drop_reason_desc)) : h.verdict === "AUDIT" ? auditReason(decidedBy) : undefined;
  return {
    time: new Date(msOf(h.time) ?? 0).toISOString(),
    verdict: h.verdict === "DROPPED" || h.verdict === "AUDIT" || h.verdict === "ERROR" ? h.verdict : "FORWARDED",
    type: TYPE_OF_EVENT[Number(h.event_type?.type ?? 0)] ?? (h.verdict === "DROPPED" ? "drop" : "trace"),
    direction: ingress ? "ingress" : "egress",
    source: flowEndpoint(h.source, h.IP?.source ?? "", p.source, h.node_name, h.source_names),
    destination: flowEndpoint(h.destination, h.IP?.destination ?? "", p.destination, h.node_name, h.destination_names),
    protocol: protocolOf(h),
    ...(h.l4?.TCP?.flags !== undefined ? { tcpFlags: tcpFlagsByte(h.l4.TCP.flags) } : {}),
    ...(icmp !== undefined ? { icmpCode: Number(icmp.code ?? 0) } : {}),
    ...(dropReason !== undefined ? { dropReason } : {}),
    ...(decidedBy !== undefined ? { decidedBy } : {}),
    ...(MATCH_BY_NUMBER.has(Number(h.policy_match_type ?? 0)) ? { policyMatch: MATCH_BY_NUMBER.get(Number(h.policy_match_type))! } : {}),
    ...(l7 !== undefined ? { l7 } : {}),
    node: h.node_name ?? "",
    ...(h.node_labels?.length ? { nodeLabels: h.node_labels } : {}),
    ...(h.trace_context?.parent?.trace_id ? { traceId: h.trace_context.parent.trace_id } : {}),
    ...(h.interface !== undefined && Number(h.interface.index ?? 0) > 0 ? { interface: { index: Number(h.interface.index), ...(h.interface.name ? { name: h.interface.name } : {}) } } : {}),
    ...(h.IP?.encrypted === true ? { encrypted: true } : {}),
  };
}
