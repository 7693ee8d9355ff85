// The Flow: one datapath verdict enriched with who (identities, labels, pods), why (drop reason) and which rule decided.
import type { Direction, RuleOrigin } from "../core/model.ts";
import { PROTO_NUMBER } from "../core/model.ts";
import type { Workload } from "../core/workload.ts";

/**
 * AUDIT: policy would have dropped it; audit mode (node or endpoint) let it pass. ERROR (L7 only): the policy allowed the
 * request but the destination failed, so the proxy answered itself (503 unreachable, 504 timeout), as Hubble's ERROR.
 */
export type FlowVerdict = "FORWARDED" | "DROPPED" | "AUDIT" | "ERROR";
/**
 * `drop`: any dropped packet; `policy-verdict`: forwarded by a policy rule; `trace`: forwarded with no policy applying;
 * `l7`: a request or response a node's DNS or HTTP proxy handled (its record in `l7`).
 */
export type FlowType = "policy-verdict" | "drop" | "trace" | "l7";
export const FLOW_VERDICTS: readonly FlowVerdict[] = ["FORWARDED", "DROPPED", "AUDIT", "ERROR"];
export const FLOW_TYPES: readonly FlowType[] = ["policy-verdict", "drop", "trace", "l7"];

export interface FlowEndpoint {
  readonly identity: number;
  readonly labels: readonly string[]; // formatted security labels, e.g. "k8s:app=web"
  readonly namespace?: string;
  readonly pod?: string;
  /** The pod's workloads (its Deployment, StatefulSet, CronJob, …: core/workload.ts), as Hubble's `Endpoint.workloads`. */
  readonly workloads?: readonly Workload[];
  readonly ip: string;
  readonly port: number;
  /** A host endpoint (identity reserved:host): the node it is, i.e. the node that observed the flow. */
  readonly host?: string;
  /** DNS names the observing node's DNS proxy learned for this address (no trailing dot, sorted), as Hubble's `source_names`/`destination_names`. */
  readonly names?: readonly string[];
}

/** The policy and rule that decided: the rule's origin, or the marker for a miss in an enforced direction. */
export type FlowDecision =
  | {
      readonly kind: "rule";
      readonly policyKind: RuleOrigin["policyKind"];
      readonly namespace?: string;
      readonly name: string;
      readonly rule: string; // field path, e.g. "spec.ingressDeny[0]"
    }
  | { readonly kind: "default-deny" };

/** Which part of the deciding rule matched a policy verdict, in Cilium's words (pkg/monitor/api PolicyMatchType). */
export type PolicyMatch = "L3-Only" | "L3-L4" | "L4-Only" | "all" | "L3-Proto" | "Proto-Only";

/** What a node's proxy saw of one DNS or HTTP exchange (Hubble's Layer7 record, in our field names). */
export interface FlowL7 {
  /** A request (from the endpoint, or refused by the proxy) or its response (with the time it took). */
  readonly type: "REQUEST" | "RESPONSE";
  /** Responses: from the request's arrival at the proxy to its answer, in nanoseconds. */
  readonly latencyNs?: number;
  readonly dns?: {
    readonly query: string; // as asked, with its trailing dot
    readonly qtypes: readonly string[];
    readonly ips?: readonly string[];
    readonly ttl?: number;
    readonly cnames?: readonly string[];
    readonly rcode?: number; // responses: the DNS response code (0 NOERROR, 3 NXDOMAIN, 5 REFUSED, ...)
    readonly rrtypes?: readonly string[];
    readonly observationSource?: string; // "proxy"
  };
  readonly http?: {
    readonly method: string;
    readonly url: string; // http://HOST/PATH?QUERY as the request named it
    readonly protocol: string; // "HTTP/1.1"
    readonly code?: number; // responses: the status the client got
    readonly headers?: readonly { readonly key: string; readonly value: string }[];
  };
  /** A connection judged by its TLS server name alone (a serverNames-only port): the SNI, and why it was refused. Hubble has no such record: its Summary carries it. */
  readonly tls?: { readonly serverName?: string; readonly reason?: string };
}

export interface Flow {
  readonly time: string; // RFC 3339 with milliseconds
  readonly verdict: FlowVerdict;
  readonly type: FlowType;
  readonly direction: Direction;
  readonly source: FlowEndpoint;
  readonly destination: FlowEndpoint;
  readonly protocol: string; // "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", an extended IP protocol (VRRP, GRE, ...) or the IANA number
  /** TCP only: the packet's flags byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128). */
  readonly tcpFlags?: number;
  /** ICMP/ICMPv6 only: the message's code (its type is in the ports: the destination's, or the source's for an echo reply). */
  readonly icmpCode?: number;
  readonly dropReason?: string; // a drop's reason; for an AUDIT, the drop's that did not happen; for an L7 ERROR, why the proxy ended it when it says
  readonly decidedBy?: FlowDecision;
  /** Policy verdicts (`policy-verdict`) only: the kind of key of the deciding rule that held the connection. */
  readonly policyMatch?: PolicyMatch;
  /** L7 flows (`type: "l7"`) only: the proxy's record. */
  readonly l7?: FlowL7;
  /** HTTP L7 flows: the W3C trace id of the request's traceparent header (Hubble's trace_context.parent.trace_id). */
  readonly traceId?: string;
  /** The device the datapath saw the packet on (Hubble's `interface`): its ifindex, and its name when the agent knows it (a pod's host-side veth). */
  readonly interface?: { readonly index: number; readonly name?: string };
  /** True when the packet crossed (or will cross) the node boundary inside WireGuard (Hubble's `IP.encrypted`); absent: in clear. */
  readonly encrypted?: boolean;
  readonly node: string;
  /** The observing node's Kubernetes labels (`key=value`, sorted), as Hubble's `node_labels`; absent when the agent does not know them. */
  readonly nodeLabels?: readonly string[];
}

const PROTOCOL_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(PROTO_NUMBER)
    .filter(([name]) => name !== "ANY")
    .map(([name, n]) => [n, name]),
);

export function protocolName(proto: number): string {
  return PROTOCOL_NAMES[proto] ?? String(proto);
}

/** The drop reason of a request a node's proxy refused (no DNS or HTTP rule of the policy allowed it). */
export const L7_DROP_REASON = "policy denied (L7)";

/** One line of what a proxy saw: `DNS A example.com. NOERROR 10.0.0.1`, `HTTP GET http://web/x 403`. */
export function l7Summary(l: FlowL7): string {
  if (l.dns) {
    const d = l.dns;
    const answer = l.type === "RESPONSE" ? ` ${DNS_RCODE_NAMES[d.rcode ?? 0] ?? String(d.rcode)}${d.ips?.length ? ` ${d.ips.join(",")}` : ""}` : "";
    return `DNS ${l.type === "RESPONSE" ? "answer" : "query"} ${d.qtypes.join(",")} ${d.query}${answer}`;
  }
  if (l.http) return `HTTP ${l.http.method} ${l.http.url}${l.http.code !== undefined ? ` ${l.http.code}` : ""}`;
  if (l.tls) return tlsSummary(l.tls);
  return l.type;
}

/** A serverNames-only connection in one line: `TLS server name api.example.com`, with the refusal's reason. */
export function tlsSummary(t: NonNullable<FlowL7["tls"]>): string {
  return `TLS server name ${t.serverName ?? "(none)"}${t.reason !== undefined ? `: ${t.reason}` : ""}`;
}

/** DNS response codes by number (RFC 1035, RFC 2136). */
export const DNS_RCODE_NAMES: Readonly<Record<number, string>> = { 0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED" };

/** The label that says "default deny" wherever a decision is printed. */
export const DEFAULT_DENY_TEXT = "default deny";

export function decisionText(d: FlowDecision | undefined): string {
  if (d === undefined) return "";
  if (d.kind === "default-deny") return DEFAULT_DENY_TEXT;
  return `${d.policyKind} ${d.namespace !== undefined ? `${d.namespace}/` : ""}${d.name} ${d.rule}`;
}

/** Identifies a connection (both directions' packets of one 5-tuple share it) for per-connection sampling. */
export function connectionKey(f: Flow): string {
  const a = `${f.source.ip}:${f.source.port}`;
  const b = `${f.destination.ip}:${f.destination.port}`;
  return a < b ? `${f.protocol} ${a} ${b}` : `${f.protocol} ${b} ${a}`;
}

function endpointText(e: FlowEndpoint): string {
  // An address without a pod reads as its DNS names when the proxy learned some, as hubble prints it.
  const who = e.pod !== undefined ? `${e.namespace ?? ""}/${e.pod}` : e.host !== undefined ? `host/${e.host}` : e.names?.length ? e.names.join(",") : e.ip;
  return `${who}:${e.port} (${e.identity})`;
}

/** One line per flow for `observe -o table`. */
export function flowTableRow(f: Flow): string[] {
  return [
    f.time,
    f.node,
    endpointText(f.source),
    endpointText(f.destination),
    f.protocol,
    f.verdict,
    f.l7 !== undefined ? `l7 ${l7Summary(f.l7)}` : f.type,
    f.dropReason ?? "",
    decisionText(f.decidedBy),
  ];
}

export const FLOW_TABLE_HEADER = ["TIME", "NODE", "SOURCE", "DESTINATION", "PROTO", "VERDICT", "TYPE", "REASON", "DECIDED BY"];
