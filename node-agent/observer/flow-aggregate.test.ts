// Flow aggregation: folded by the aggregated fields only (not time, not the rest), counted per direction, one interval at a time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FlowAggregator } from "./flow-aggregate.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";

test("flows fold by the aggregated fields, whatever else differs; each interval starts empty", () => {
  const a = new FlowAggregator(["destination.pod_name", "l4.TCP.destination_port"]);
  a.add(toHubbleFlow(flow({ time: "2026-12-03T10:00:00.000Z", source: endpoint({ pod: "a", port: 1 }) })));
  a.add(toHubbleFlow(dropFlow({ time: "2026-12-03T10:00:01.000Z", direction: "egress", source: endpoint({ pod: "b", port: 2 }) })));
  a.add(toHubbleFlow(flow({ time: "2026-12-03T10:00:02.000Z", destination: endpoint({ pod: "web-0", port: 443 }) })));
  const out = a.take();
  assert.deepEqual(
    out.map((f) => [f.destination?.pod_name, f.l4?.TCP?.destination_port, f.time.seconds, f.aggregate]),
    [
      ["web-0", 80, Date.parse("2026-12-03T10:00:00.000Z") / 1000, { ingress_flow_count: 1, egress_flow_count: 1, unknown_direction_flow_count: 0 }],
      ["web-0", 443, Date.parse("2026-12-03T10:00:02.000Z") / 1000, { ingress_flow_count: 1, egress_flow_count: 0, unknown_direction_flow_count: 0 }],
    ],
  );
  assert.equal(out[0]!.verdict, undefined, "fields not aggregated are not kept");
  assert.deepEqual(a.take(), []);
});
