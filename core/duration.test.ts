// The duration parser every flag and resource uses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDuration } from "./duration.ts";

test("Go durations parse to milliseconds, compound ones summed", () => {
  assert.equal(parseDuration("15m"), 900_000);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1.5s"), 1_500);
  assert.equal(parseDuration("0"), 0);
});

test("days only where the caller admits them; anything else is not a duration", () => {
  assert.equal(parseDuration("1d"), undefined);
  assert.equal(parseDuration("2d", { days: true }), 172_800_000);
  for (const bad of ["", "soon", "5", "-1s", "1x", "s", " 1s"]) assert.equal(parseDuration(bad), undefined, bad);
});
