// Losses counted per source until told, as Hubble's LostEvent responses timed at the last lost event.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LostEvents, lostEventOf } from "./lost.ts";
import { encodeFlowsResponse } from "./batch.ts";
import { toHubbleFlow } from "./flow.ts";
import { flow } from "../testing/flows.ts";
import { timestampOf } from "./types.ts";

test("losses add up per source with the first and last time, are told once, one response per source", () => {
  const lost = new LostEvents();
  assert.equal(lost.pending, false);
  lost.add("HUBBLE_RING_BUFFER", 10, 5000, 5009);
  lost.add("HUBBLE_RING_BUFFER", 5, 4000, 4004);
  lost.add("PERF_EVENT_RING_BUFFER", 3, 6000);
  lost.add("PERF_EVENT_RING_BUFFER", 0, 1); // nothing lost: no change
  assert.equal(lost.pending, true);
  assert.deepEqual(lost.take("node-a"), [
    { lost_events: { source: "HUBBLE_RING_BUFFER", num_events_lost: 15, first: timestampOf(4000), last: timestampOf(5009) }, node_name: "node-a", time: timestampOf(5009) },
    { lost_events: { source: "PERF_EVENT_RING_BUFFER", num_events_lost: 3, first: timestampOf(6000), last: timestampOf(6000) }, node_name: "node-a", time: timestampOf(6000) },
  ]);
  assert.equal(lost.pending, false);
  assert.deepEqual(lost.take("node-a"), []);
});

test("a LostEvent response is recognised in its encoded bytes (and a flow response is not), and its count carried into another tally", () => {
  const told = new LostEvents();
  told.add("PERF_EVENT_RING_BUFFER", 42, 1000, 2000);
  const [response] = told.take("node-a");
  const bytes = encodeFlowsResponse(response!);
  const e = lostEventOf(bytes);
  assert.deepEqual([e?.source, Number(e?.num_events_lost)], ["PERF_EVENT_RING_BUFFER", 42]);
  assert.equal(lostEventOf(response!), response!.lost_events);
  const f = toHubbleFlow(flow());
  assert.equal(lostEventOf(encodeFlowsResponse({ flow: f, node_name: "node-a", time: f.time })), undefined);
  assert.equal(lostEventOf({ flow: f, node_name: "node-a", time: f.time }), undefined);
  const relay = new LostEvents();
  relay.addEvent(e!, 5000);
  relay.add("HUBBLE_RING_BUFFER", 1, 3000);
  assert.deepEqual(
    relay.take("").map((r) => [r.lost_events?.source, r.lost_events?.num_events_lost, r.lost_events?.first, r.lost_events?.last]),
    [
      ["PERF_EVENT_RING_BUFFER", 42, timestampOf(1000), timestampOf(2000)],
      ["HUBBLE_RING_BUFFER", 1, timestampOf(3000), timestampOf(3000)],
    ],
  );
});

test("losses are told per node and CPU when known: a relay names the node whose flows it lost, a node's PERF_EVENT_RING_BUFFER loss keeps its CPU", () => {
  const relay = new LostEvents();
  relay.add("HUBBLE_RING_BUFFER", 2, 1000, 1001, { node: "node-a" });
  relay.add("HUBBLE_RING_BUFFER", 1, 1002, 1002, { node: "node-b" });
  relay.add("HUBBLE_RING_BUFFER", 3, 1003, 1005, { node: "node-a" });
  relay.addEvent({ source: "PERF_EVENT_RING_BUFFER", num_events_lost: 7, cpu: { value: 0 }, first: timestampOf(900), last: timestampOf(950) }, 2000, "node-b");
  relay.add("HUBBLE_RING_BUFFER", 1, 3000); // no node known: the teller's own
  assert.deepEqual(
    relay.take("relay").map((r) => [r.node_name, r.lost_events?.source, r.lost_events?.num_events_lost, r.lost_events?.cpu]),
    [
      ["node-a", "HUBBLE_RING_BUFFER", 5, undefined],
      ["node-b", "HUBBLE_RING_BUFFER", 1, undefined],
      ["node-b", "PERF_EVENT_RING_BUFFER", 7, { value: 0 }],
      ["relay", "HUBBLE_RING_BUFFER", 1, undefined],
    ],
  );
  // CPU 0 survives the encoding (a wrapper message, not proto3's absent zero).
  const agent = new LostEvents();
  agent.add("PERF_EVENT_RING_BUFFER", 4, 1000, 1000, { cpu: 0 });
  agent.add("PERF_EVENT_RING_BUFFER", 1, 1000, 1000, { cpu: 3 });
  assert.deepEqual(agent.take("node-a").map((r) => lostEventOf(encodeFlowsResponse(r))?.cpu?.value), [0, 3]);
});
