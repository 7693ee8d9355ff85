// After a large message's garbage, releaseHeap gives the memory back to the system (RSS), not only to V8.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { releaseHeap } from "./heap-release.ts";

const MIB = 1048576;

describe("releaseHeap", () => {
  it("returns the RSS of 64 MiB of dropped Buffers (small ones, in malloc's arenas) to the system", () => {
    const baseline = process.memoryUsage.rss();
    // Filled, so resident; unreachable once the function returns.
    const held = ((): number => {
      const garbage = Array.from({ length: 2048 }, (_, i) => Buffer.alloc(32 * 1024, i & 255));
      assert.equal(garbage.length, 2048);
      return process.memoryUsage.rss();
    })();
    assert.ok(held - baseline > 48 * MIB, `the Buffers are resident (${Math.round((held - baseline) / MIB)} MiB)`);
    const r = releaseHeap();
    assert.ok(r.rssAfter - baseline < 24 * MIB, `RSS ${Math.round((r.rssAfter - baseline) / MIB)} MiB above where it was before the Buffers (was ${Math.round((r.rssBefore - baseline) / MIB)} MiB)`);
  });
});
