// Unit and property tests of the pod CIDR pool: no block is handed out twice, released blocks are reused.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { PodCIDRPool } from "./cidrpool.ts";

test("blocks are carved in order and an owner keeps its block", () => {
  const pool = new PodCIDRPool("10.244.0.0/16", 24);
  assert.equal(pool.allocate("a"), "10.244.0.0/24");
  assert.equal(pool.allocate("b"), "10.244.1.0/24");
  assert.equal(pool.allocate("a"), "10.244.0.0/24");
  pool.release("a");
  assert.equal(pool.allocate("c"), "10.244.0.0/24");
});

test("existing blocks are respected; foreign or malformed ones are refused", () => {
  const pool = new PodCIDRPool("10.244.0.0/16", 24);
  assert.ok(pool.mark("10.244.0.0/24", "old"));
  assert.ok(!pool.mark("10.244.0.0/24", "other"), "already owned");
  assert.ok(!pool.mark("10.245.0.0/24", "x"), "outside the pool");
  assert.ok(!pool.mark("10.244.2.0/23", "x"), "wrong size");
  assert.equal(pool.allocate("new"), "10.244.1.0/24");
  assert.equal(pool.ownerOf("10.244.0.0/24"), "old");
});

test("an exhausted pool says so; IPv6 pools work", () => {
  const pool = new PodCIDRPool("10.0.0.0/30", 31);
  assert.ok(pool.allocate("a") && pool.allocate("b"));
  assert.equal(pool.allocate("c"), undefined);
  assert.equal(new PodCIDRPool("fd00::/104", 120).allocate("a"), "fd00::/120");
  assert.throws(() => new PodCIDRPool("10.0.0.0/16", 8), /mask size 8/);
  assert.throws(() => new PodCIDRPool("nope", 24), /not an IP prefix/);
});

test("property: any sequence of allocate/release never gives one block to two owners", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 20 })), { maxLength: 200 }), (ops) => {
      const pool = new PodCIDRPool("10.0.0.0/24", 28); // 16 blocks
      const held = new Map<string, string>();
      for (const [alloc, n] of ops) {
        const owner = `n${n}`;
        if (alloc) {
          const b = pool.allocate(owner);
          if (b !== undefined) held.set(owner, b);
          else assert.equal(new Set(held.values()).size, 16);
        } else {
          pool.release(owner);
          held.delete(owner);
        }
        assert.equal(new Set(held.values()).size, held.size);
      }
    }),
  );
});
