// Flow metrics under Hubble's names and labels (Cilium's pkg/hubble/metrics flow, drop and policy handlers), so a
// dashboard written for Hubble reads Membrane's agents unchanged. Counted from every flow the observer handles.
import { Counter, type Registry } from "prom-client";
import type { Flow } from "../../flowapi/flow.ts";
import { ciliumDropReason } from "../../flowapi/hubble/flow.ts";

/** Hubble's protocol label (Cilium's FlowProtocol): the L4 of the flow, as Hubble spells it. */
function hubbleProtocol(f: Flow): string {
  switch (f.protocol) {
    case "ICMP":
      return "ICMPv4";
    case "TCP":
    case "UDP":
    case "SCTP":
    case "ICMPv6":
    case "VRRP":
    case "IGMP":
      return f.protocol;
    default:
      return "Unknown flow";
  }
}

/** Hubble's type and subtype labels for our three kinds of flow (a trace is observed at the endpoint). */
function typeLabels(f: Flow): { type: string; subtype: string } {
  if (f.type === "drop") return { type: "Drop", subtype: "" };
  if (f.type === "policy-verdict") return { type: "PolicyVerdict", subtype: "" };
  return { type: "Trace", subtype: f.direction === "ingress" ? "to-endpoint" : "from-endpoint" };
}

export class HubbleMetrics {
  private readonly flows: Counter<"protocol" | "type" | "subtype" | "verdict">;
  private readonly drops: Counter<"reason" | "protocol">;
  private readonly verdicts: Counter<"direction" | "match" | "action">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.flows = new Counter({ name: "hubble_flows_processed_total", help: "Total number of flows processed", labelNames: ["protocol", "type", "subtype", "verdict"] as const, registers });
    this.drops = new Counter({ name: "hubble_drop_total", help: "Number of drops", labelNames: ["reason", "protocol"] as const, registers });
    this.verdicts = new Counter({ name: "hubble_policy_verdicts_total", help: "Number of policy verdict events", labelNames: ["direction", "match", "action"] as const, registers });
  }

  /** Counts one flow; called for every flow, kept in the ring or not. */
  readonly observe = (f: Flow): void => {
    const protocol = hubbleProtocol(f);
    this.flows.inc({ protocol, ...typeLabels(f), verdict: f.verdict });
    if (f.verdict === "DROPPED") this.drops.inc({ reason: (f.dropReason !== undefined ? ciliumDropReason(f.dropReason)?.name : undefined) ?? "DROP_REASON_UNKNOWN", protocol });
    // A verdict a policy gave (a rule, or default deny), whether the packet passed or not. The datapath does not
    // report what part of a rule matched: match is "none", as Cilium's unset policy_match_type reads.
    if (f.decidedBy !== undefined) this.verdicts.inc({ direction: f.direction, match: "none", action: f.verdict.toLowerCase() });
  };
}
