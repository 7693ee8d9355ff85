// Turns a datapath verdict event into a Flow (the observer API's shape): identities to labels,
// addresses to pods, rule ids to the policy rule that decided.
import { PROTO_NUMBER, type RuleOrigin } from "../../core/model.ts";
import { RULE_ID_DEFAULT_DENY } from "../../core/compiler.ts";
import { IDENTITY } from "../../core/identity.ts";
import { DROP_REASON_CODES, type VerdictEvent } from "../bpf/layout.ts";
import type { PolicyMatchLookup } from "./policy-match.ts";
import type { Workload } from "../../core/workload.ts";
import { protocolName, type PolicyMatch, type Flow, type FlowDecision, type FlowEndpoint, type FlowType, type FlowVerdict } from "../../flowapi/flow.ts";

/** What the agent knows to turn an event into a Flow; all lookups are synchronous and side-effect free. */
export interface EnrichLookups {
  readonly node: string;
  /** The node's Kubernetes labels (`key=value`, sorted) as last read from its Node; absent or empty: not known. */
  nodeLabels?(): readonly string[];
  identityLabels(identity: number): readonly string[] | undefined;
  /** The pod behind an address, when it is a local or known endpoint. */
  endpointByIp(ip: string): { readonly namespace: string; readonly pod: string; readonly workload?: Workload } | undefined;
  ruleOrigin(ruleId: number): RuleOrigin | undefined;
  /** Which part of a rule matched (policy-match.ts); absent: not reported. */
  policyMatch?: PolicyMatchLookup;
  /** The wall-clock time of an event's monotonic timestamp (bpf_ktime_get_ns). */
  wallClock(monotonicNs: bigint): Date;
  /** The identity the ipcache gives an address (a proxy's peer, which its record does not name); absent: unknown. */
  identityByIp?(ip: string): number | undefined;
  /** Whether traffic to or from this address crosses to its node inside WireGuard (a remote endpoint whose node is an up peer); absent: never. */
  encryptedPeer?(ip: string): boolean;
  /** The name of the device with this ifindex in the node's netns, when the agent knows it (a pod's host-side veth). */
  interfaceName?(ifindex: number): string | undefined;
  /** The DNS names the node's DNS proxy learned for an address (no trailing dot); absent or empty: none. */
  namesByIp?(ip: string): readonly string[] | undefined;
}

function decisionOf(e: VerdictEvent, lookups: EnrichLookups): FlowDecision | undefined {
  const wouldDrop = e.verdict !== "forwarded";
  if (wouldDrop && e.reasonCode === DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY) return { kind: "default-deny" };
  if (e.ruleId === undefined) return undefined;
  if (e.ruleId === RULE_ID_DEFAULT_DENY) return wouldDrop ? { kind: "default-deny" } : undefined;
  return ruleDecision(e.ruleId, lookups);
}

/** The policy rule a compiled rule id names (the operator's rule table); undefined when this agent does not know it. */
export function ruleDecision(ruleId: number, lookups: Pick<EnrichLookups, "ruleOrigin">): FlowDecision | undefined {
  const o = lookups.ruleOrigin(ruleId);
  if (o === undefined) return undefined;
  return {
    kind: "rule",
    policyKind: o.policyKind,
    ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
    name: o.name,
    rule: o.path,
  };
}

/** A proxy's peer: its identity from the ipcache (0 when unknown), then as any flow's endpoint. */
export function peerEndpoint(ip: string, port: number, lookups: EnrichLookups): FlowEndpoint {
  return endpoint(lookups.identityByIp?.(ip) ?? 0, ip, port, lookups);
}

/** One end of a flow: the identity's labels, the pod behind the address, the host endpoint's node. */
export function endpoint(identity: number, ip: string, port: number, lookups: EnrichLookups): FlowEndpoint {
  const pod = lookups.endpointByIp(ip);
  const names = lookups.namesByIp?.(ip);
  return {
    identity,
    labels: lookups.identityLabels(identity) ?? [],
    ...(pod !== undefined ? { namespace: pod.namespace, pod: pod.pod } : {}),
    ...(pod?.workload !== undefined ? { workloads: [pod.workload] } : {}),
    ip,
    port,
    // Only this node's own host endpoint is reserved:host in its events (another node is remote-node).
    ...(identity === IDENTITY.host ? { host: lookups.node } : {}),
    ...(names !== undefined && names.length > 0 ? { names } : {}),
  };
}

/** Where a flow was seen: the node, and its labels when known (every flow of this agent carries them). */
export function observedAt(lookups: Pick<EnrichLookups, "node" | "nodeLabels">): { node: string; nodeLabels?: readonly string[] } {
  const labels = lookups.nodeLabels?.();
  return { node: lookups.node, ...(labels !== undefined && labels.length > 0 ? { nodeLabels: labels } : {}) };
}

/** A datapath event as a Flow. Pure: everything it needs comes from `lookups`. */
export function enrich(e: VerdictEvent, lookups: EnrichLookups): Flow {
  const verdict: FlowVerdict = e.verdict === "dropped" ? "DROPPED" : e.verdict === "audit" ? "AUDIT" : "FORWARDED";
  const decidedBy = decisionOf(e, lookups);
  // A later packet of an allowed connection (monitor aggregation low / none) is a trace, not a new verdict;
  // an audit is always policy's verdict on a new connection (as Cilium reports it).
  const type: FlowType =
    verdict === "DROPPED" ? "drop" : verdict === "AUDIT" || (decidedBy !== undefined && e.ctState === "new") ? "policy-verdict" : "trace";
  return {
    time: lookups.wallClock(e.timestampNs).toISOString(),
    verdict,
    type,
    direction: e.direction,
    source: endpoint(e.srcIdentity, e.src, e.sport, lookups),
    destination: endpoint(e.dstIdentity, e.dst, e.dport, lookups),
    protocol: protocolName(e.proto),
    ...(e.proto === PROTO_NUMBER.TCP ? { tcpFlags: e.tcpFlags } : {}),
    ...(e.icmpCode !== undefined ? { icmpCode: e.icmpCode } : {}),
    ...(e.reason !== undefined ? { dropReason: e.reason } : {}),
    ...(decidedBy !== undefined ? { decidedBy } : {}),
    ...(type === "policy-verdict" && decidedBy?.kind === "rule" ? matchOf(e, lookups) : {}),
    ...(e.ifindex > 0 ? { interface: deviceOf(e.ifindex, lookups) } : {}),
    // The datapath reports a packet at the pod's device, before encapsulation (egress) or after decapsulation (ingress).
    ...(verdict !== "DROPPED" && (lookups.encryptedPeer?.(e.src) || lookups.encryptedPeer?.(e.dst)) ? { encrypted: true } : {}),
    ...observedAt(lookups),
  };
}

function deviceOf(ifindex: number, lookups: EnrichLookups): { index: number; name?: string } {
  const name = lookups.interfaceName?.(ifindex);
  return name !== undefined ? { index: ifindex, name } : { index: ifindex };
}

/** The policy verdict's match type, from the subject's entries of the deciding rule (policy-match.ts). */
function matchOf(e: VerdictEvent, lookups: EnrichLookups): { policyMatch?: PolicyMatch } {
  if (lookups.policyMatch === undefined || e.ruleId === undefined) return {};
  const egress = e.direction === "egress";
  const m = lookups.policyMatch(e.ruleId, egress ? e.srcIdentity : e.dstIdentity, e.direction, egress ? e.dstIdentity : e.srcIdentity, e.proto, e.dport, e.src.includes(":") ? 6 : 4);
  return m !== undefined ? { policyMatch: m } : {};
}

