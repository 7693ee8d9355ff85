// A Flow in Hubble's shape (flow.Flow of Cilium's flow.proto): what `hubble observe` prints and filters.
import { DROP_REASONS, type DropReasonCode } from "../bpf/layout.ts";
import type { Flow, FlowDecision, FlowEndpoint } from "../../flowapi/flow.ts";
import { CILIUM_EVENT_TYPE, timestampOf, type HubbleEndpoint, type HubbleFlow, type HubbleLayer4, type HubblePolicy } from "../../flowapi/hubble/types.ts";

/**
 * Our drop reasons as Cilium's DropReason (name and number, flow.proto): the nearest one Cilium has.
 * `policy denied` is a deny rule (Cilium's POLICY_DENY, "denied by denylist"); default deny is no allow
 * (POLICY_DENIED). A policy that did not fit the map has no Cilium reason: the endpoint has no usable policy,
 * which is what NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION says.
 */
export const CILIUM_DROP_REASONS: Readonly<Record<DropReasonCode, { readonly name: string; readonly code: number }>> = {
  1: { name: "POLICY_DENY", code: 181 },
  2: { name: "POLICY_DENIED", code: 133 },
  3: { name: "INVALID_SOURCE_IP", code: 132 },
  4: { name: "NO_MATCHING_LOCAL_CONTAINER_FOUND", code: 152 },
  5: { name: "UNKNOWN_SENDER", code: 172 },
  6: { name: "INVALID_IDENTITY", code: 171 },
  7: { name: "INVALID_PACKET_DROPPED", code: 134 },
  8: { name: "UNSUPPORTED_L3_PROTOCOL", code: 139 },
  9: { name: "IP_FRAGMENTATION_NOT_SUPPORTED", code: 157 },
  10: { name: "ERROR_RETRIEVING_TUNNEL_KEY", code: 147 },
  11: { name: "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT", code: 160 },
  12: { name: "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION", code: 165 },
  13: { name: "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL", code: 180 },
  14: { name: "UNENCRYPTED_TRAFFIC", code: 195 },
};

const BY_TEXT: ReadonlyMap<string, { readonly name: string; readonly code: number }> = new Map(
  Object.entries(DROP_REASONS).map(([code, text]) => [text, CILIUM_DROP_REASONS[Number(code) as DropReasonCode]]),
);

/** Cilium's drop reason for one of our drop-reason texts; undefined for a text the datapath does not emit. */
export function ciliumDropReason(text: string): { readonly name: string; readonly code: number } | undefined {
  return BY_TEXT.get(text);
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

function endpoint(e: FlowEndpoint): HubbleEndpoint {
  return {
    identity: e.identity,
    ...(e.namespace !== undefined ? { namespace: e.namespace } : {}),
    labels: e.labels,
    ...(e.pod !== undefined ? { pod_name: e.pod } : {}),
  };
}

function layer4(f: Flow): HubbleLayer4 | undefined {
  const ports = { source_port: f.source.port, destination_port: f.destination.port };
  switch (f.protocol) {
    case "TCP":
      return { TCP: ports };
    case "UDP":
      return { UDP: ports };
    case "SCTP":
      return { SCTP: ports };
    // The datapath event carries no ICMP type or code: they read as 0.
    case "ICMP":
      return { ICMPv4: { type: 0, code: 0 } };
    case "ICMPv6":
      return { ICMPv6: { type: 0, code: 0 } };
    case "VRRP":
      return { VRRP: { type: 0 } };
    case "IGMP":
      return { IGMP: { type: 0 } };
    default:
      return undefined;
  }
}

/** Our flow in Hubble's shape. Pure. */
export function toHubbleFlow(f: Flow): HubbleFlow {
  const ingress = f.direction === "ingress";
  // An audit's reason is the drop that did not happen: Hubble reports none (its verdict AUDIT says it).
  const drop = f.dropReason !== undefined && f.verdict === "DROPPED" ? ciliumDropReason(f.dropReason) : undefined;
  const l4 = layer4(f);
  const policies = f.decidedBy !== undefined ? [hubblePolicy(f.decidedBy)] : [];
  const verdictOf = f.verdict !== "FORWARDED" ? (ingress ? "ingress_denied_by" : "egress_denied_by") : ingress ? "ingress_allowed_by" : "egress_allowed_by";
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
    IP: { source: f.source.ip, destination: f.destination.ip, ipVersion: f.source.ip.includes(":") ? "IPv6" : "IPv4" },
    ...(l4 !== undefined ? { l4 } : {}),
    source: endpoint(f.source),
    destination: endpoint(f.destination),
    Type: "L3_L4",
    node_name: f.node,
    event_type: eventType,
    traffic_direction: ingress ? "INGRESS" : "EGRESS",
    ...(f.type === "trace" ? { trace_observation_point: ingress ? "TO_ENDPOINT" : "FROM_ENDPOINT" } : {}),
    // The datapath judges (and reports) a connection by its first packet; replies pass on its conntrack entry.
    ...(f.decidedBy !== undefined || f.type !== "drop" ? { is_reply: { value: false } } : {}),
    ...(policies.length > 0 ? { [verdictOf]: policies } : {}),
  };
}
