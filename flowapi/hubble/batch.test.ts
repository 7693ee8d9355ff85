// The relay hop's batch frames: entries back with their times, a truncated frame refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeBatch, encodeBatch } from "./batch.ts";

test("a batch gives back every encoded response with its time, in order, and an empty batch none", () => {
  const entries = [
    { bytes: Buffer.from([1, 2, 3]), timeMs: 1_764_824_000_123 },
    { bytes: Buffer.alloc(0), timeMs: 0 },
    { bytes: Buffer.alloc(70_000, 7), timeMs: 1_764_824_000_124 },
  ];
  const back = decodeBatch(encodeBatch(entries));
  assert.deepEqual(back.map((e) => [e.timeMs, e.bytes.length]), [[1_764_824_000_123, 3], [0, 0], [1_764_824_000_124, 70_000]]);
  assert.deepEqual(back[0]!.bytes, Buffer.from([1, 2, 3]));
  assert.deepEqual(decodeBatch(encodeBatch([])), []);
});

test("a truncated batch is an error naming where it broke", () => {
  const b = encodeBatch([{ bytes: Buffer.from("abcdef"), timeMs: 5 }]);
  assert.throws(() => decodeBatch(b.subarray(0, b.length - 1)), /entry at byte 0 claims 6 bytes, 5 left/);
  assert.throws(() => decodeBatch(b.subarray(0, 7)), /truncated entry header at byte 0/);
});
