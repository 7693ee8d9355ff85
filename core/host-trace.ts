// The verdict of a connection to or from a node's host endpoint as the datapath reaches it: which programs judge it (host egress, host ingress, a pod's side), the peer identity each sees, the lock-out guard, and the rule that decides.
import type { Direction, LabelSet, Policy } from "./model.ts";
import { IDENTITY, LOCAL_IDENTITY_FLAG, cidrLabels, reservedIdentityById } from "./identity.ts";
import { hostPrefix } from "./cidr.ts";
import { labelSetFrom } from "./labels.ts";
import { directionVerdict, type DirectionVerdict, type Endpoint } from "./evaluator.ts";

/** One end of a traced connection. */
export type TraceParty =
  | {
      readonly kind: "pod";
      /** NS/POD, for the text. */
      readonly name: string;
      readonly id: number;
      readonly labels: LabelSet;
      readonly address?: string;
      /** The node the pod runs on (spec.nodeName). */
      readonly node?: string;
    }
  /** A node's host endpoint: labels as core/host-endpoint.ts nodeHostLabels gives them. */
  | { readonly kind: "node"; readonly name: string; readonly labels: LabelSet }
  /** An address that is no pod's and no node's: a CIDR identity of a policy's prefix, or world. */
  | { readonly kind: "address"; readonly address: string };

/** What the lock-out guard passes before policy (node-agent/hostfw.ts lockOutGuard: the same shape). */
export interface TraceGuardEntry {
  readonly direction: Direction;
  readonly proto: number;
  readonly port: number;
  readonly peers: "any" | "nodes";
  readonly why: string;
}

export type StepReason = DirectionVerdict["rule"] | { readonly guard: string } | { readonly localhost: "always" };

/** One program's judgement on the connection's first packet. */
export interface TraceStep {
  /** Whose policy: the node's host endpoint or the pod. */
  readonly subject: string;
  readonly host: boolean;
  readonly direction: Direction;
  /** The peer as that program sees it (its identity and how it was found). */
  readonly peer: { readonly id: number; readonly text: string };
  readonly verdict: DirectionVerdict["verdict"];
  readonly rule: StepReason;
}

export interface HostTraceAnswer {
  readonly verdict: "allow" | "deny";
  /** The step that decided: the first that denies, else the last (undefined: nothing judges the connection). */
  readonly decided?: TraceStep;
  readonly steps: readonly TraceStep[];
  /** Why a side is not judged (e.g. the node's own traffic to itself crosses no device). */
  readonly notes: readonly string[];
}

export interface HostTraceQuery {
  readonly policies: readonly Policy[];
  readonly src: TraceParty;
  readonly dst: TraceParty;
  readonly protocol: number;
  readonly port: number;
  readonly guard?: readonly TraceGuardEntry[];
  /** The agents' --allow-localhost (the chart's allowLocalhost): always (default) lets a node reach its own pods before their policy. */
  readonly allowLocalhost?: "always" | "policy";
}

const reserved = (id: number): LabelSet => reservedIdentityById(id)?.labels ?? labelSetFrom([]);

/** What a program on `vantage` (a node's name) takes the party for, as the ipcache there says. */
function seenFrom(p: TraceParty, vantage: string | undefined): { endpoint: Endpoint; text: string; isNode: boolean } {
  switch (p.kind) {
    case "pod":
      return { endpoint: { id: p.id, labels: p.labels, ...(p.address !== undefined ? { address: p.address } : {}) }, text: `${p.name} (identity ${p.id})`, isNode: false };
    case "node":
      // Its Node labels ride along for toNodes/fromNodes, which the datapath matches by the node's address (core/node-peers.ts).
      return p.name === vantage
        ? { endpoint: { id: IDENTITY.host, labels: reserved(IDENTITY.host), nodeLabels: p.labels }, text: `node ${p.name} (reserved:host)`, isNode: true }
        : { endpoint: { id: IDENTITY.remoteNode, labels: reserved(IDENTITY.remoteNode), nodeLabels: p.labels }, text: `node ${p.name} (reserved:remote-node)`, isNode: true };
    case "address":
      // The datapath finds the longest policy prefix holding the address (or its family's world identity on a
      // dual-stack node): that identity is selected by exactly the CIDR rules and the family's world entities holding
      // the address, as the address's own /32 labels are (a single-stack node's reserved:world is in no family entity).
      return { endpoint: { id: LOCAL_IDENTITY_FLAG, labels: cidrLabels(hostPrefix(p.address)) }, text: `${p.address} (a CIDR identity of a policy prefix holding it, else its family's world identity, as on a dual-stack node)`, isNode: false };
  }
}

function partyText(p: TraceParty): string {
  return p.kind === "pod" ? p.name : p.kind === "node" ? `node ${p.name}` : p.address;
}

/**
 * The verdict the datapath gives a new connection where at least one end is a node's host endpoint (or an
 * outside address), step by step in the order the programs run:
 * - a pod to its own node: pod_to_host judges the host's ingress (the pod's identity as peer) before the
 *   pod's egress (peer reserved:host);
 * - a pod to another node: the pod's egress (peer reserved:remote-node), then that node's host ingress on
 *   its device (the pod's identity: its address is not translated);
 * - a node to another node, a pod elsewhere or an outside address: its host egress on its device, then the
 *   other end's ingress (a node's own address is reserved:remote-node there);
 * - a node to a pod on itself: with allow-localhost always (the default) it passes before the pod's policy, as
 *   Kubernetes demands; with policy, only the pod's ingress judges it (peer reserved:host; the veth is no host device);
 * - a node to itself: nothing (loopback crosses no device).
 * A host step the guard lists (direction, protocol, port; peers any or nodes only) passes before policy.
 */
export function hostTrace(q: HostTraceQuery): HostTraceAnswer {
  const steps: TraceStep[] = [];
  const notes: string[] = [];
  const { src, dst } = q;
  const nodeOf = (p: TraceParty): string | undefined => (p.kind === "pod" ? p.node : p.kind === "node" ? p.name : undefined);

  const judge = (subjectParty: TraceParty, direction: Direction, peerParty: TraceParty): void => {
    const vantage = nodeOf(subjectParty);
    const self = seenFrom(subjectParty, vantage);
    const peer = seenFrom(peerParty, vantage);
    const host = subjectParty.kind === "node";
    // The host's own endpoint is reserved:host with its node's labels, which nodeSelectors match.
    const subject: Endpoint = host ? { id: IDENTITY.host, labels: subjectParty.labels } : self.endpoint;
    const guard = host ? q.guard?.find((g) => g.direction === direction && g.proto === q.protocol && g.port === q.port && (g.peers === "any" || peer.isNode)) : undefined;
    const v = guard ? { verdict: "allow" as const, rule: { guard: guard.why } } : directionVerdict({ policies: q.policies, direction, subject, peer: peer.endpoint, protocol: q.protocol, port: q.port });
    steps.push({ subject: host ? `host of node ${subjectParty.name}` : partyText(subjectParty), host, direction, peer: { id: peer.endpoint.id, text: peer.text }, verdict: v.verdict, rule: v.rule });
  };

  if (src.kind === "node" && dst.kind === "node" && src.name === dst.name) {
    notes.push(`node ${src.name} to itself crosses no device: not judged`);
  } else if (src.kind === "pod" && dst.kind === "node" && src.node === dst.name) {
    judge(dst, "ingress", src);
    judge(src, "egress", dst);
  } else if (src.kind === "node" && dst.kind === "pod" && dst.node === src.name && (q.allowLocalhost ?? "always") === "always") {
    steps.push({ subject: partyText(dst), host: false, direction: "ingress", peer: { id: IDENTITY.host, text: `node ${src.name} (reserved:host)` }, verdict: "allow", rule: { localhost: "always" } });
    notes.push(`node ${src.name} reaches its own pods before their ingress policy (allow-localhost always; with allow-localhost policy the pod's policy judges it, peer reserved:host)`);
  } else {
    if (src.kind === "address") notes.push(`${src.address} is outside the cluster: only the destination judges`);
    else if (src.kind === "node" && dst.kind === "pod" && dst.node === src.name) notes.push(`node ${src.name} reaches its own pod over the pod's veth, no host device: the host's egress does not judge it`);
    else judge(src, "egress", dst);
    if (dst.kind === "address") notes.push(`${dst.address} is outside the cluster: only the source judges`);
    else judge(dst, "ingress", src);
  }
  const deny = steps.find((s) => s.verdict === "deny");
  const decided = deny ?? steps.at(-1);
  return { verdict: deny ? "deny" : "allow", ...(decided ? { decided } : {}), steps, notes };
}

/** A step's reason as trace prints it. */
export function stepReasonText(r: StepReason): string {
  if (typeof r === "object" && "guard" in r) return `the lock-out guard (${r.guard})`;
  if (typeof r === "object" && "localhost" in r) return "allow-localhost always (a node reaches its own pods)";
  if (r === "default-deny") return "default deny";
  if (r === "no-policy") return "no policy selects it (allow-all)";
  return `${r.policyKind} ${r.namespace !== undefined ? `${r.namespace}/` : ""}${r.name} ${r.path}`;
}

/** The answer as `policy trace` prints it. */
export function hostTraceText(from: string, to: string, proto: string, port: number, a: HostTraceAnswer): string {
  const lines = [`${from} -> ${to} ${proto}/${port}: ${a.verdict === "allow" ? "ALLOWED" : "DENIED"}`];
  lines.push(a.decided ? `decided by: ${stepReasonText(a.decided.rule)} (${a.decided.direction} of ${a.decided.subject})` : "decided by: nothing judges it");
  for (const s of a.steps) lines.push(`  ${s.direction} of ${s.subject}: ${s.verdict} by ${stepReasonText(s.rule)} (peer ${s.peer.text})`);
  for (const n of a.notes) lines.push(`  note: ${n}`);
  return lines.join("\n") + "\n";
}

/** The overlay's and WireGuard's UDP ports between nodes (node-agent/hostfw.ts guards the same; its test checks). */
export const GUARD_VXLAN_PORT = 8472;
export const GUARD_WIREGUARD_PORT = 51871;

/**
 * The part of the lock-out guard trace can know from outside the agents: the overlay and WireGuard between
 * nodes, and the API server port when the caller names it (the chart's hostFirewall.apiServerPort). The
 * operator stream's port is the agent's flag, not modelled.
 */
export function traceGuard(apiServerPort?: number): TraceGuardEntry[] {
  const out: TraceGuardEntry[] = [];
  for (const direction of ["ingress", "egress"] as const) {
    out.push({ direction, proto: 17, port: GUARD_VXLAN_PORT, peers: "nodes", why: "the overlay (VXLAN) between nodes" });
    out.push({ direction, proto: 17, port: GUARD_WIREGUARD_PORT, peers: "nodes", why: "encryption (WireGuard) between nodes" });
    if (apiServerPort !== undefined) out.push({ direction, proto: 6, port: apiServerPort, peers: "any", why: direction === "egress" ? "the node's API server traffic" : "the API server on a control-plane node" });
  }
  return out;
}
