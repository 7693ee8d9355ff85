// Proxy-port allocation: one stable port per (subject, L7 rule), freed with the rule, never shared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProxyPortAllocator } from "./proxy-ports.ts";

test("each (subject, rule) gets its own port, the same one on every ask", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  assert.equal(a.portFor(300, 1), 100);
  assert.equal(a.portFor(301, 1), 101);
  assert.equal(a.portFor(300, 2), 102);
  assert.equal(a.portFor(300, 1), 100);
  assert.equal(a.size, 3);
});

test("retain frees the ports of rules a subject no longer has, and they are handed out again", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 105 });
  a.portFor(300, 1);
  a.portFor(300, 2);
  a.retain(300, new Set([2]));
  assert.equal(a.size, 1);
  assert.equal(a.portFor(301, 7), 100);
  a.retain(300, new Set());
  a.retain(301, new Set());
  assert.equal(a.size, 0);
});

test("an exhausted range throws instead of sharing a port", () => {
  const a = new ProxyPortAllocator({ first: 100, last: 100 });
  a.portFor(300, 1);
  assert.throws(() => a.portFor(300, 2), /proxy port range 100-100 exhausted/);
});
