// Tests for port range ↔ prefix block conversion.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { prefixContains, prefixRange, prefixesToRanges, rangeToPrefixes } from "./portprefix.ts";

test("a single port is one /16 block", () => {
  assert.deepEqual(rangeToPrefixes(80, 80), [{ port: 80, prefixLen: 16 }]);
});

test("port 0 and the full range are the wildcard block 0/0", () => {
  assert.deepEqual(rangeToPrefixes(0, 0), [{ port: 0, prefixLen: 0 }]);
  assert.deepEqual(rangeToPrefixes(0, 65535), [{ port: 0, prefixLen: 0 }]);
});

test("80-81 is one /15 block; 1000-2000 splits into aligned blocks", () => {
  assert.deepEqual(rangeToPrefixes(80, 81), [{ port: 80, prefixLen: 15 }]);
  const blocks = rangeToPrefixes(1000, 2000);
  assert.deepEqual(prefixesToRanges(blocks), [{ lo: 1000, hi: 2000 }]);
  assert.ok(blocks.length <= 2 * 16);
});

test("invalid ranges are rejected", () => {
  assert.throws(() => rangeToPrefixes(10, 5), RangeError);
  assert.throws(() => rangeToPrefixes(-1, 5), RangeError);
  assert.throws(() => rangeToPrefixes(1, 65536), RangeError);
});

test("property: blocks are aligned, disjoint and cover exactly the range, and round-trip", () => {
  const range = fc
    .tuple(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }))
    .map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as const);
  fc.assert(
    fc.property(range, fc.integer({ min: 0, max: 65535 }), ([lo, hi], probe) => {
      const blocks = rangeToPrefixes(lo, hi);
      for (const b of blocks) {
        const size = 2 ** (16 - b.prefixLen);
        assert.equal(b.port % size, 0, "aligned");
      }
      const covered = blocks.filter((b) => prefixContains(b, probe)).length;
      assert.equal(covered, probe >= lo && probe <= hi ? 1 : 0);
      assert.deepEqual(prefixesToRanges(blocks), [{ lo, hi }]);
      const total = blocks.reduce((n, b) => n + (prefixRange(b).hi - prefixRange(b).lo + 1), 0);
      assert.equal(total, hi - lo + 1);
      assert.ok(blocks.length <= 30, "at most 2·(16-1) blocks");
    }),
    { numRuns: 2000 },
  );
});
