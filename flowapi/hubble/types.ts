// The parts of Hubble's messages (flow.proto, observer.proto) that Membrane reads or writes, as plain objects
// in the shape @grpc/proto-loader gives them (field names as in the .proto, enums as their names).

export interface Timestamp {
  readonly seconds: number;
  readonly nanos: number;
}

export interface HubbleEndpoint {
  readonly ID?: number;
  readonly identity?: number;
  readonly cluster_name?: string;
  readonly namespace?: string;
  readonly labels?: readonly string[];
  readonly pod_name?: string;
  readonly workloads?: readonly { readonly name: string; readonly kind: string }[];
}

export interface HubblePolicy {
  readonly name: string;
  readonly namespace?: string;
  readonly labels: readonly string[];
  readonly revision?: number;
  readonly kind: string;
}

/** flow.TCPFlags: the flags set on the packet. */
export type HubbleTCPFlags = { readonly [F in "FIN" | "SYN" | "RST" | "PSH" | "ACK" | "URG" | "ECE" | "CWR" | "NS"]?: boolean };

export interface HubbleLayer4 {
  readonly TCP?: { readonly source_port: number; readonly destination_port: number; readonly flags?: HubbleTCPFlags };
  readonly UDP?: { readonly source_port: number; readonly destination_port: number };
  readonly SCTP?: { readonly source_port: number; readonly destination_port: number };
  readonly ICMPv4?: { readonly type: number; readonly code: number };
  readonly ICMPv6?: { readonly type: number; readonly code: number };
  readonly VRRP?: { readonly type: number };
  readonly IGMP?: { readonly type: number };
}

export interface HubbleFlow {
  readonly time: Timestamp;
  readonly verdict: "FORWARDED" | "DROPPED" | "AUDIT" | "ERROR" | "REDIRECTED" | "TRACED" | "TRANSLATED";
  readonly drop_reason?: number;
  readonly drop_reason_desc?: string;
  readonly IP: { readonly source: string; readonly destination: string; readonly ipVersion: "IPv4" | "IPv6"; readonly encrypted?: boolean };
  readonly l4?: HubbleLayer4;
  readonly source: HubbleEndpoint;
  readonly destination: HubbleEndpoint;
  readonly Type: "L3_L4" | "L7";
  readonly node_name: string;
  /** The observing node's labels, `key=value`. */
  readonly node_labels?: readonly string[];
  readonly event_type: { readonly type: number; readonly sub_type: number };
  readonly traffic_direction: "INGRESS" | "EGRESS";
  readonly trace_observation_point?: string;
  readonly is_reply?: { readonly value: boolean };
  readonly Summary?: string;
  readonly egress_allowed_by?: readonly HubblePolicy[];
  readonly ingress_allowed_by?: readonly HubblePolicy[];
  readonly egress_denied_by?: readonly HubblePolicy[];
  readonly ingress_denied_by?: readonly HubblePolicy[];
  /** Cilium's PolicyMatchType of a policy verdict (monitor API: 0 none, 1 L3-only, 2 L3-L4, 3 L4-only, 4 all, 5 L3-proto, 6 proto-only). */
  readonly policy_match_type?: number;
  /** DNS names of the addresses (the DNS proxy's cache). */
  readonly source_names?: readonly string[];
  readonly destination_names?: readonly string[];
  /** The device the flow was seen on. */
  readonly interface?: { readonly index?: number; readonly name?: string };
  /** W3C trace context of an L7 flow's request. */
  readonly trace_context?: { readonly parent?: { readonly trace_id?: string } };
  /** The L7 record of an L7 flow (`Type: "L7"`): what a DNS or HTTP proxy saw. */
  readonly l7?: HubbleLayer7;
}

/** flow.Layer7: a request, a response (with its latency) or a sample, of DNS or HTTP. */
export interface HubbleLayer7 {
  readonly type: "UNKNOWN_L7_TYPE" | "REQUEST" | "RESPONSE" | "SAMPLE";
  readonly latency_ns?: number;
  readonly dns?: {
    readonly query: string;
    readonly ips?: readonly string[];
    readonly ttl?: number;
    readonly cnames?: readonly string[];
    readonly observation_source?: string;
    readonly rcode?: number;
    readonly qtypes?: readonly string[];
    readonly rrtypes?: readonly string[];
  };
  readonly http?: {
    readonly code?: number;
    readonly method: string;
    readonly url: string;
    readonly protocol: string;
    readonly headers?: readonly { readonly key: string; readonly value: string }[];
  };
}

/** Cilium's monitor message types, as `event_type.type` and `hubble observe --type` use them. */
export const CILIUM_EVENT_TYPE = { drop: 1, trace: 4, "policy-verdict": 5, l7: 129 } as const;

/** flow.FlowFilter as the client sends it; every field is optional (proto3 repeated fields may be absent). */
export interface HubbleFlowFilter {
  readonly [field: string]: unknown;
}

export interface GetFlowsRequest {
  readonly number?: number;
  readonly first?: boolean;
  readonly follow?: boolean;
  readonly blacklist?: readonly HubbleFlowFilter[];
  readonly whitelist?: readonly HubbleFlowFilter[];
  readonly since?: Timestamp;
  readonly until?: Timestamp;
  readonly field_mask?: { readonly paths?: readonly string[] };
  readonly experimental?: unknown;
  readonly extensions?: unknown;
}

/** flow.LostEventSource: where events were lost. */
export type LostEventSource = "UNKNOWN_LOST_EVENT_SOURCE" | "PERF_EVENT_RING_BUFFER" | "OBSERVER_EVENTS_QUEUE" | "HUBBLE_RING_BUFFER";

/** flow.LostEvent: how many events were lost where, and (when known) the times of the first and the last. */
export interface HubbleLostEvent {
  readonly source: LostEventSource;
  readonly num_events_lost: number;
  readonly cpu?: { readonly value: number };
  readonly first?: Timestamp;
  readonly last?: Timestamp;
}

export interface GetFlowsResponse {
  readonly flow?: HubbleFlow;
  readonly node_status?: unknown;
  readonly lost_events?: HubbleLostEvent;
  readonly node_name: string;
  readonly time: Timestamp;
}

export interface ServerStatusResponse {
  readonly num_flows: number;
  readonly max_flows: number;
  readonly seen_flows: number;
  readonly uptime_ns: number;
  readonly num_connected_nodes?: { readonly value: number };
  readonly num_unavailable_nodes?: { readonly value: number };
  readonly unavailable_nodes?: readonly string[];
  readonly version: string;
  readonly flows_rate: number;
}

export interface HubbleNode {
  readonly name: string;
  readonly version: string;
  readonly address: string;
  readonly state: "UNKNOWN_NODE_STATE" | "NODE_CONNECTED" | "NODE_UNAVAILABLE" | "NODE_GONE" | "NODE_ERROR";
  readonly tls?: { readonly enabled: boolean; readonly server_name: string };
  readonly uptime_ns: number;
  readonly num_flows: number;
  readonly max_flows: number;
  readonly seen_flows: number;
}

export interface HubbleNamespace {
  readonly cluster: string;
  readonly namespace: string;
}

export function timestampOf(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export function msOf(t: Timestamp | undefined): number | undefined {
  if (t === undefined) return undefined;
  return Number(t.seconds ?? 0) * 1000 + Math.floor(Number(t.nanos ?? 0) / 1_000_000);
}
