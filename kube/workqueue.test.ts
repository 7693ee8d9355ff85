// Unit tests of the work queue and the backoff it retries with.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkQueue } from "./workqueue.ts";
import { Backoff, backoffDelay } from "./backoff.ts";

test("backoff doubles per attempt, stays within the jitter band and never exceeds the cap", () => {
  const opts = { baseMs: 10, maxMs: 1000, jitter: 0.2 };
  for (const r of [0, 0.5, 0.999]) {
    for (let n = 0; n < 20; n++) {
      const d = backoffDelay(n, opts, () => r);
      const nominal = Math.min(1000, 10 * 2 ** n);
      assert.ok(d >= nominal * 0.8 - 1 && d <= Math.min(1000, nominal * 1.2 + 1), `attempt ${n}: ${d}`);
    }
  }
  assert.equal(backoffDelay(3, opts, () => 0.5), 80);
  assert.equal(backoffDelay(1000, opts, () => 0.5), 1000);
});

test("jitter spreads retries of the same attempt", () => {
  const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(5, { baseMs: 10, maxMs: 10_000, jitter: 0.2 })));
  assert.ok(delays.size > 10);
});

test("Backoff.reset starts again from the base delay", () => {
  const b = new Backoff({ baseMs: 10, maxMs: 1000, jitter: 0 });
  assert.deepEqual([b.next(), b.next(), b.next()], [10, 20, 40]);
  b.reset();
  assert.equal(b.next(), 10);
});

test("a key added many times is processed once", async () => {
  const q = new WorkQueue();
  for (let i = 0; i < 5; i++) q.add("a");
  q.add("b");
  assert.equal(q.depth, 2);
  assert.equal(await q.get(), "a");
  assert.equal(await q.get(), "b");
  q.done("a");
  q.done("b");
  assert.equal(q.depth, 0);
});

test("thousands of keys come out in the order they went in, with adds between gets", async () => {
  const q = new WorkQueue();
  const want: string[] = [];
  const got: string[] = [];
  for (let i = 0; i < 5000; i++) {
    q.add(`k${i}`);
    want.push(`k${i}`);
    if (i % 3 === 0) {
      const k = (await q.get())!;
      got.push(k);
      q.done(k);
    }
  }
  assert.equal(q.depth, 5000 - got.length);
  while (q.depth > 0) {
    const k = (await q.get())!;
    got.push(k);
    q.done(k);
  }
  assert.deepEqual(got, want);
  q.add("again");
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), "again");
});

test("a key added while being processed is handed out again only after done()", async () => {
  const q = new WorkQueue();
  q.add("a");
  const k = await q.get();
  assert.equal(k, "a");
  q.add("a"); // changed while in flight
  q.add("a");
  assert.equal(q.depth, 0, "never given to a second worker while in flight");
  q.done("a");
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), "a");
  q.done("a");
  assert.equal(q.depth, 0);
});

test("a waiting worker receives a key as soon as it is added", async () => {
  const q = new WorkQueue();
  const got = q.get();
  q.add("x");
  assert.equal(await got, "x");
});

test("failed keys come back after exponentially growing delays; forget resets", async () => {
  const q = new WorkQueue({ baseMs: 20, maxMs: 1000, jitter: 0 });
  assert.equal(q.addRateLimited("k"), 20);
  assert.equal(q.addRateLimited("k"), 40);
  assert.equal(q.addRateLimited("k"), 80);
  assert.equal(q.retries("k"), 3);
  const t0 = Date.now();
  assert.equal(await q.get(), "k");
  const waited = Date.now() - t0;
  assert.ok(waited >= 15 && waited < 200, `earliest deadline wins: ${waited} ms`);
  q.done("k");
  q.forget("k");
  assert.equal(q.retries("k"), 0);
  assert.equal(q.addRateLimited("k"), 20);
  q.shutDown();
});

test("addAfter keeps the earliest deadline", async () => {
  const q = new WorkQueue();
  q.addAfter("k", 10_000);
  q.addAfter("k", 10);
  const t0 = Date.now();
  assert.equal(await q.get(), "k");
  assert.ok(Date.now() - t0 < 1000);
  q.shutDown();
});

test("shutDown releases waiting workers and drops pending keys", async () => {
  const q = new WorkQueue();
  const w1 = q.get();
  const w2 = q.get();
  q.addAfter("later", 50);
  q.shutDown();
  assert.equal(await w1, undefined);
  assert.equal(await w2, undefined);
  q.add("x");
  assert.equal(await q.get(), undefined);
});
