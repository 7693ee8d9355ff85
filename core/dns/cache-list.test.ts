// The FQDN cache listing: built from the cache's entries, read back field by field, filtered by a matchPattern, TTLs by the agent's clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeFqdnCacheListing, fqdnCacheListing, fqdnCacheRows } from "./cache-list.ts";

const NOW = Date.parse("2026-12-04T05:00:00.000Z");
const listing = fqdnCacheListing(
  "node-1",
  [
    { name: "www.outside.test.", ip: "192.0.2.12", expiresAt: NOW + 30_500, source: "10.244.1.5" },
    { name: "api.outside.test.", ip: "192.0.2.11", expiresAt: NOW + 60_000, source: "10.244.1.9" },
    { name: "blocked.elsewhere.test.", ip: "192.0.2.13", expiresAt: NOW - 2_000 },
  ],
  NOW,
  (ip) => (ip === "10.244.1.5" ? "shop/client" : undefined),
);

test("the listing is sorted by name, names the source's pod when known (else its address), with RFC 3339 times", () => {
  assert.deepEqual(listing, {
    node: "node-1",
    now: "2026-12-04T05:00:00.000Z",
    entries: [
      { name: "api.outside.test.", ip: "192.0.2.11", expiresAt: "2026-12-04T05:01:00.000Z", source: "10.244.1.9" },
      { name: "blocked.elsewhere.test.", ip: "192.0.2.13", expiresAt: "2026-12-04T04:59:58.000Z" },
      { name: "www.outside.test.", ip: "192.0.2.12", expiresAt: "2026-12-04T05:00:30.500Z", source: "shop/client" },
    ],
  });
  assert.deepEqual(decodeFqdnCacheListing(JSON.parse(JSON.stringify(listing))), { ok: true, value: listing }, "it survives the wire");
});

test("rows count the TTL left by the agent's clock (rounded up; 0 once expired) and filter by a matchPattern", () => {
  assert.deepEqual(
    fqdnCacheRows([listing]).map((r) => [r.name, r.ttlSeconds, r.source]),
    [
      ["api.outside.test.", 60, "10.244.1.9"],
      ["blocked.elsewhere.test.", 0, ""],
      ["www.outside.test.", 31, "shop/client"],
    ],
  );
  assert.deepEqual(fqdnCacheRows([listing], "*.outside.test").map((r) => r.name), ["api.outside.test.", "www.outside.test."]);
  assert.deepEqual(fqdnCacheRows([listing], "API.outside.test").map((r) => r.ip), ["192.0.2.11"], "a plain name matches itself, case aside");
  assert.deepEqual(fqdnCacheRows([listing], "**.test").length, 3);
  assert.deepEqual(fqdnCacheRows([listing], "*.test"), [], "* never crosses a dot");
});

test("a malformed answer is refused naming the field", () => {
  for (const [bad, field] of [
    [null, /not a JSON object/],
    [{ now: listing.now, entries: [] }, /^node:/],
    [{ node: "n", now: "yesterday", entries: [] }, /^now:/],
    [{ node: "n", now: listing.now, entries: {} }, /^entries:/],
    [{ node: "n", now: listing.now, entries: [{ name: "a.", ip: "1.2.3.4", expiresAt: "soon" }] }, /^entries\[0\]\.expiresAt:/],
    [{ node: "n", now: listing.now, entries: [{ name: "a.", expiresAt: listing.now }] }, /^entries\[0\]\.ip:/],
    [{ node: "n", now: listing.now, entries: [{ name: "a.", ip: "1.2.3.4", expiresAt: listing.now, source: 5 }] }, /^entries\[0\]\.source:/],
  ] as const) {
    const r = decodeFqdnCacheListing(bad);
    assert.ok(!r.ok, JSON.stringify(bad));
    assert.match(r.error, field);
  }
});
