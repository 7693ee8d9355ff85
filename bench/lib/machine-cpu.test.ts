import assert from "node:assert/strict";
import { test } from "node:test";
import { addSplits, cpuWindow, perRequest } from "./machine-cpu.ts";

test("cpuWindow charges a named process its own CPU time; perRequest divides each part and sums the bench's", () => {
  const w = cpuWindow({ self: [process.pid] });
  // 100 ms of this process's CPU, however long the shared machine makes it take.
  const start = process.cpuUsage();
  let x = 0;
  while (process.cpuUsage(start).user < 100_000) x += Math.sqrt(x + 1);
  const split = w.close();
  assert.ok(x > 0);
  // /proc counts in 10 ms ticks.
  assert.ok(split.parts.self! >= 80_000, `self ${split.parts.self}`);
  assert.ok(split.wall >= 100_000);
  const per = perRequest({ parts: { a: 300, b: 100 }, kernel: 100, unaccounted: 50, other: 1000, wall: 1000 }, 10);
  assert.deepEqual(per, { machine: 50, a: 30, b: 10, kernel: 10, unaccounted: 5, other_processes: 100, busy_cores: 0.5 });
  const sum = addSplits({ parts: { a: 1 }, kernel: 1, unaccounted: 1, other: 1, wall: 1 }, { parts: { a: 2, b: 3 }, kernel: 1, unaccounted: 1, other: 1, wall: 1 });
  assert.deepEqual(sum, { parts: { a: 3, b: 3 }, kernel: 2, unaccounted: 2, other: 2, wall: 2 });
});
