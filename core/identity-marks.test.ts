import assert from "node:assert/strict";
import { test } from "node:test";
import { formatRanges, formatUnusedMarks, parseUnusedMarks } from "./identity-marks.ts";

test("numbers become sorted ranges", () => {
  assert.equal(formatRanges([300, 256, 258, 257, 65535]), "256-258,300,65535");
  assert.equal(formatRanges([]), "");
});

test("marks round-trip a line per mark time, whole seconds, oldest first", () => {
  const t1 = Date.parse("2026-12-04T20:00:00.000Z");
  const t2 = Date.parse("2026-12-04T20:01:30.000Z");
  const marks = new Map([[5000, t2], [256, t1 + 999], [257, t1], [65535, t1]]);
  const text = formatUnusedMarks(marks);
  assert.equal(text, "2026-12-04T20:00:00.000Z 256-257,65535\n2026-12-04T20:01:30.000Z 5000\n");
  const back = parseUnusedMarks(text);
  assert.ok(back.ok);
  assert.deepEqual([...back.value].sort((a, b) => a[0] - b[0]), [[256, t1], [257, t1], [5000, t2], [65535, t1]]);
});

test("every cluster identity idle at once stays far below the API's 1 MiB object limit", () => {
  const t = Date.parse("2026-12-04T20:00:00Z");
  // Worst case for ranges: every other number, each at one of many times.
  const marks = new Map<number, number>();
  for (let n = 256; n <= 65535; n += 2) marks.set(n, t + (n % 97) * 1000);
  const text = formatUnusedMarks(marks);
  assert.ok(text.length < 400_000, `${text.length} bytes`);
  const back = parseUnusedMarks(text);
  assert.ok(back.ok);
  assert.equal(back.value.size, marks.size);
});

test("malformed lines are refused naming the line; a number marked twice keeps its earlier time", () => {
  const r = parseUnusedMarks("2026-12-04T20:00:00Z 256-300\nyesterday 400\n2026-12-04T20:00:00Z 100,70000,300-299,x\n");
  assert.ok(!r.ok);
  assert.deepEqual(r.errors.map((e) => e.path), ["line 2", "line 3", "line 3", "line 3", "line 3"]);
  assert.match(r.errors[0]!.message, /not "<RFC 3339 time> <identity ranges>"/);
  assert.match(r.errors[1]!.message, /"100" is not a cluster identity/);
  const twice = parseUnusedMarks("2026-12-04T20:05:00Z 256\n2026-12-04T20:00:00Z 256\n");
  assert.ok(twice.ok);
  assert.equal(twice.value.get(256), Date.parse("2026-12-04T20:00:00Z"));
  const empty = parseUnusedMarks("");
  assert.ok(empty.ok && empty.value.size === 0);
});
