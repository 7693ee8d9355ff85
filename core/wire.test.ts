// Unit tests of the agent-message parser at the edge of the distribution stream.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeMessage, encodeMessage, parseUpstream } from "./wire.ts";

test("hello, ack and nack round-trip through the JSON framing", () => {
  for (const m of [
    { type: "hello", node: "n1", lastAppliedVersion: 7 },
    { type: "hello", node: "n1" },
    { type: "ack", version: 3, nonce: "a" },
    { type: "nack", version: 3, nonce: "a", error: "map full" },
  ] as const) {
    assert.deepEqual(parseUpstream(decodeMessage(encodeMessage(m))), { ok: true, value: m });
  }
});

test("malformed agent messages are errors naming the field", () => {
  assert.deepEqual(parseUpstream({ type: "ack", version: -1, nonce: "a" }), { ok: false, errors: [{ path: "version", message: "must be a non-negative integer" }] });
  assert.deepEqual(parseUpstream({ type: "hello" }), { ok: false, errors: [{ path: "node", message: "must be a non-empty string" }] });
  assert.deepEqual(parseUpstream({ type: "nack", version: 1, nonce: "x" }), { ok: false, errors: [{ path: "error", message: "must be a string" }] });
  assert.equal(parseUpstream([]).ok, false);
  assert.match(JSON.stringify(parseUpstream({ type: "bye" })), /must be hello, ack or nack/);
});
