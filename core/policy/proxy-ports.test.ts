// Proxy-port allocation: one stable port per (subject, set of L7 rules), freed with any of its rules, never shared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProxyPortAllocator } from "./proxy-ports.ts";

test("each (subject, rule) gets its own port, the same one on every ask", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, [1]), 100);
  assert.equal(a.portFor(301, [1]), 101);
  assert.equal(a.portFor(300, [2]), 102);
  assert.equal(a.portFor(300, [1]), 100);
  assert.equal(a.size, 3);
});

test("a set of rules (the union of HTTP rules on one key) gets a port of its own, whatever the order it is asked in", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, [1]), 100);
  assert.equal(a.portFor(300, [2, 1]), 101);
  assert.equal(a.portFor(300, [1, 2]), 101);
  assert.equal(a.portFor(300, [2]), 102);
  assert.deepEqual(a.setsOf(300), [
    { ruleIds: [1], port: 100 },
    { ruleIds: [1, 2], port: 101 },
    { ruleIds: [2], port: 102 },
  ]);
  assert.deepEqual(a.setsOf(301), []);
});

test("retain frees the ports of every set holding a rule the subject no longer has, and they are handed out again", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  a.portFor(300, [1]);
  a.portFor(300, [2]);
  a.portFor(300, [1, 2]);
  a.retain(300, new Set([1]));
  assert.deepEqual(a.setsOf(300), [{ ruleIds: [1], port: 100 }], "the union of 1 and 2 is not pinned once 2 went");
  assert.equal(a.size, 1);
  assert.equal(a.portFor(301, [7]), 101);
  a.retain(300, new Set());
  a.retain(301, new Set());
  assert.equal(a.size, 0);
});

test("an exhausted range throws instead of sharing a port", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 100 });
  a.portFor(300, [1]);
  assert.throws(() => a.portFor(300, [2]), /proxy port range 100-100 exhausted/);
});
