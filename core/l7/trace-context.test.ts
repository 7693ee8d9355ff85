// The trace id of a traceparent header, as OpenTelemetry's W3C propagator reads it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { traceIdOf } from "./trace-context.ts";

const h = (...values: string[]) => values.map((value) => ({ name: "traceparent", value }));

test("a valid traceparent gives its trace id; none, two, or an invalid one give none", () => {
  assert.equal(traceIdOf(h("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")), "4bf92f3577b34da6a3ce929d0e0e4736");
  assert.equal(traceIdOf([{ name: "TraceParent", value: " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 " }]), "4bf92f3577b34da6a3ce929d0e0e4736", "any case of the name, unsampled too");
  assert.equal(traceIdOf(h("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")), "4bf92f3577b34da6a3ce929d0e0e4736", "a later version's extra fields");
  assert.equal(traceIdOf([]), undefined);
  assert.equal(traceIdOf(h("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")), undefined, "two");
  assert.equal(traceIdOf(h("00-00000000000000000000000000000000-00f067aa0ba902b7-01")), undefined, "all-zero trace id");
  assert.equal(traceIdOf(h("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")), undefined, "all-zero parent id");
  assert.equal(traceIdOf(h("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")), undefined, "version ff");
  assert.equal(traceIdOf(h("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")), undefined, "version 00 with more");
  assert.equal(traceIdOf(h("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")), undefined, "upper case hex");
});
