import assert from "node:assert/strict";
import { test } from "node:test";
import { envNumber, lowerMedian, round3 } from "./stats.ts";

test("lowerMedian: the middle value, the lower middle for an even count, NaN for none; input left unsorted", () => {
  const xs = [5, 1, 3];
  assert.equal(lowerMedian(xs), 3);
  assert.deepEqual(xs, [5, 1, 3]);
  assert.equal(lowerMedian([4, 1, 3, 2]), 2);
  assert.ok(Number.isNaN(lowerMedian([])));
});

test("envNumber reads a set variable and falls back when unset; round3 keeps three decimals", () => {
  const name = `MEMBRANE_STATS_TEST_${process.pid}`;
  assert.equal(envNumber(name, 7), 7);
  process.env[name] = "12.5";
  try {
    assert.equal(envNumber(name, 7), 12.5);
  } finally {
    delete process.env[name];
  }
  assert.equal(round3(1.23456), 1.235);
});
