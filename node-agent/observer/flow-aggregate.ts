// Hubble's flow aggregation for an export (Cilium's fieldAggregate and aggregationInterval): flows that agree on the
// aggregated fields are folded into one, which carries how many there were per traffic direction (flow.Aggregate).
import { encodeFlowsResponse } from "../../flowapi/hubble/batch.ts";
import { fieldMask } from "../../flowapi/hubble/getflows.ts";
import type { HubbleFlow } from "../../flowapi/hubble/types.ts";

/** flow.Aggregate: the counts of the flows one aggregated flow stands for. */
export interface HubbleAggregate {
  readonly ingress_flow_count: number;
  readonly egress_flow_count: number;
  readonly unknown_direction_flow_count: number;
}

interface Folded {
  readonly flow: HubbleFlow;
  ingress: number;
  egress: number;
  unknown: number;
}

/** The flows of one interval, folded by the aggregated fields; take() hands them over and starts the next interval. */
export class FlowAggregator {
  private readonly pick: (f: HubbleFlow) => HubbleFlow;
  private folded = new Map<string, Folded>();

  constructor(fields: readonly string[]) {
    this.pick = fieldMask(fields);
  }

  add(f: HubbleFlow): void {
    const kept = this.pick(f);
    // Two flows fold when their aggregated fields encode to the same bytes (as Cilium keys them), whatever their time.
    const key = encodeFlowsResponse({ flow: kept, node_name: "", time: { seconds: 0, nanos: 0 } }).toString("latin1");
    let v = this.folded.get(key);
    if (v === undefined) {
      // The first flow's time says when the interval's traffic began, as in Cilium.
      v = { flow: { ...kept, time: f.time }, ingress: 0, egress: 0, unknown: 0 };
      this.folded.set(key, v);
    }
    if (f.traffic_direction === "INGRESS") v.ingress++;
    else if (f.traffic_direction === "EGRESS") v.egress++;
    else v.unknown++;
  }

  /** The interval's aggregated flows, each with its counts, in the order they were first seen; the next interval starts empty. */
  take(): (HubbleFlow & { readonly aggregate: HubbleAggregate })[] {
    const out = [...this.folded.values()].map((v) => ({
      ...v.flow,
      aggregate: { ingress_flow_count: v.ingress, egress_flow_count: v.egress, unknown_direction_flow_count: v.unknown },
    }));
    this.folded = new Map();
    return out;
  }
}
