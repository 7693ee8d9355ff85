// Proxy-port allocation: one stable port per (subject, set of L7 parts), freed with any of its rules, never shared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProxyPortAllocator, type L7Part } from "./proxy-ports.ts";

/** A rule's DNS part (the whole rule), or one toPorts entry's HTTP part. */
const rule = (ruleId: number): L7Part => ({ ruleId });
const entry = (ruleId: number, portRule: number): L7Part => ({ ruleId, portRule });

test("each (subject, part) gets its own port, the same one on every ask", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, [rule(1)]), 100);
  assert.equal(a.portFor(301, [rule(1)]), 101);
  assert.equal(a.portFor(300, [rule(2)]), 102);
  assert.equal(a.portFor(300, [rule(1)]), 100);
  assert.equal(a.size, 3);
});

test("a rule's whole part and each of its toPorts entries' HTTP parts are different sets: different ports", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, [rule(1)]), 100);
  assert.equal(a.portFor(300, [entry(1, 0)]), 101);
  assert.equal(a.portFor(300, [entry(1, 1)]), 102);
  assert.equal(a.portFor(300, [entry(1, 0)]), 101);
});

test("a set of parts (the union of HTTP parts on one key) gets a port of its own, whatever the order it is asked in", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, [entry(1, 0)]), 100);
  assert.equal(a.portFor(300, [entry(2, 0), entry(1, 0)]), 101);
  assert.equal(a.portFor(300, [entry(1, 0), entry(2, 0)]), 101);
  assert.equal(a.portFor(300, [entry(2, 0)]), 102);
  assert.deepEqual(a.setsOf(300), [
    { parts: [entry(1, 0)], port: 100 },
    { parts: [entry(1, 0), entry(2, 0)], port: 101 },
    { parts: [entry(2, 0)], port: 102 },
  ]);
  assert.deepEqual(a.setsOf(301), []);
});

test("retain frees the ports of every set holding a part of a rule the subject no longer has, and they are handed out again", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  a.portFor(300, [entry(1, 0)]);
  a.portFor(300, [entry(2, 0)]);
  a.portFor(300, [entry(1, 0), entry(2, 0)]);
  a.retain(300, new Set([1]));
  assert.deepEqual(a.setsOf(300), [{ parts: [entry(1, 0)], port: 100 }], "the union of 1 and 2 is not pinned once 2 went");
  assert.equal(a.size, 1);
  assert.equal(a.portFor(301, [rule(7)]), 101);
  a.retain(300, new Set());
  a.retain(301, new Set());
  assert.equal(a.size, 0);
});

test("an exhausted range throws instead of sharing a port", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 100 });
  a.portFor(300, [rule(1)]);
  assert.throws(() => a.portFor(300, [rule(2)]), /proxy port range 100-100 exhausted/);
});
