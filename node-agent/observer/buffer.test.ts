// The flow ring: bounded by count, drops never sampled away, counters exact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FlowBuffer } from "./buffer.ts";
import { dropFlow, endpoint, flow, httpRequestFlow } from "../../flowapi/testing/flows.ts";

test("200k pushed flows keep the ring at capacity and count every drop", () => {
  const b = new FlowBuffer({ capacity: 4096, forwardedSampleMs: 1000, maxConnections: 1000 });
  const base = Date.parse("2026-01-01T00:00:00Z");
  const heapBefore = process.memoryUsage().heapUsed;
  let drops = 0;
  for (let i = 0; i < 200_000; i++) {
    const src = endpoint({ ip: `10.0.${(i >> 8) & 255}.${i & 255}`, port: 1024 + (i % 50_000) });
    const isDrop = i % 7 === 0;
    if (isDrop) drops++;
    const f = isDrop ? dropFlow({ source: src }) : flow({ source: src });
    b.push(f, base + i);
  }
  const c = b.counters();
  assert.equal(b.length, 4096);
  assert.equal(c.dropped, drops);
  assert.equal(c.dropsByReason["policy denied (default deny)"], drops);
  assert.equal(c.forwarded + c.dropped, 200_000);
  assert.ok(b.trackedConnections <= 1000, `sampler remembers ${b.trackedConnections} connections`);
  // The flows objects are shared fixtures except the endpoints; the ring must not hold on to 200k of them.
  const grown = process.memoryUsage().heapUsed - heapBefore;
  assert.ok(grown < 64 * 1024 * 1024, `heap grew ${grown} bytes`);
});

test("sampling thins forwarded flows of one connection but never a drop", () => {
  const b = new FlowBuffer({ capacity: 10_000, forwardedSampleMs: 1000 });
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  for (let i = 0; i < 1000; i++) {
    b.push(flow(), t0 + i); // one connection, 1000 forwarded packets within a second
    b.push(dropFlow(), t0 + i); // the same connection's drops
  }
  const kept = b.query();
  assert.equal(kept.filter((f) => f.verdict === "DROPPED").length, 1000);
  assert.equal(kept.filter((f) => f.verdict === "FORWARDED").length, 1);
  assert.equal(b.counters().sampledOut, 999);
  assert.equal(b.counters().forwarded, 1000);
  b.push(flow(), t0 + 1500); // the interval has passed: kept again
  assert.equal(b.query((f) => f.verdict === "FORWARDED").length, 2);
});

test("a proxy's L7 flows are never sampled out: a request and its response on one connection are both kept", () => {
  const b = new FlowBuffer({ capacity: 100, forwardedSampleMs: 1000 });
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  b.push(flow(), t0); // the connection's policy verdict
  const request = httpRequestFlow();
  const response = httpRequestFlow({ l7: { type: "RESPONSE", latencyNs: 1000, http: { method: "GET", url: "http://web.shop/public/x", protocol: "HTTP/1.1", code: 200 } } });
  for (const f of [request, response, request, response]) b.push(f, t0 + 1);
  assert.equal(b.query((f) => f.type === "l7").length, 4);
  assert.equal(b.counters().sampledOut, 0);
});

test("query returns oldest first, and --last the most recent matches", () => {
  const b = new FlowBuffer({ capacity: 5 });
  for (let i = 0; i < 8; i++) b.push(flow({ destination: endpoint({ port: i }) }), i);
  assert.deepEqual(b.query().map((f) => f.destination.port), [3, 4, 5, 6, 7]);
  assert.deepEqual(b.query((f) => f.destination.port % 2 === 1, 2).map((f) => f.destination.port), [5, 7]);
  assert.equal(b.counters().evicted, 3);
});

test("subscribers see every kept flow and stop after unsubscribing", () => {
  const b = new FlowBuffer({ capacity: 3, forwardedSampleMs: 1000 });
  const seen: string[] = [];
  const off = b.subscribe((f) => seen.push(f.verdict));
  b.push(flow(), 0);
  b.push(flow(), 1); // sampled out: not delivered
  b.push(dropFlow(), 2);
  off();
  b.push(dropFlow(), 3);
  assert.deepEqual(seen, ["FORWARDED", "DROPPED"]);
});
