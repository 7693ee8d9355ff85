// The FQDN cache: TTLs with a minimum, the per-name limit, shared addresses, GC after the grace period unless in use, and its state file.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FqdnCache } from "./fqdn-cache.ts";
import { decodeFqdnState, decodeFqdnStateWithJournal, encodeFqdnState } from "./cache-state.ts";

const opts = { minTtlSeconds: 0, maxAddressesPerName: 3, graceSeconds: 5 };
const never = (): boolean => false;

test("an answer's addresses are learned under the normalized name, new addresses reported as changed", () => {
  const c = new FqdnCache(opts);
  const r = c.learn("API.example.com", [{ ip: "192.0.2.1", ttl: 30 }, { ip: "2001:db8::1", ttl: 30 }], 0, "default/client");
  assert.deepEqual(r.changed, ["192.0.2.1", "2001:db8::1"]);
  assert.deepEqual(c.addressesOf("api.example.com."), ["192.0.2.1", "2001:db8::1"]);
  assert.deepEqual(c.namesOf("192.0.2.1"), ["api.example.com."]);
  assert.equal(c.entries()[0]?.source, "default/client");
  assert.deepEqual(c.learn("api.example.com", [{ ip: "192.0.2.1", ttl: 60 }], 1000).changed, [], "a refreshed TTL changes no names");
});

test("an address answered for two names carries both; losing one keeps the other", () => {
  const c = new FqdnCache(opts);
  c.learn("a.example.com", [{ ip: "192.0.2.7", ttl: 10 }], 0);
  assert.deepEqual(c.learn("b.example.com", [{ ip: "192.0.2.7", ttl: 100 }], 0).changed, ["192.0.2.7"]);
  assert.deepEqual(c.namesOf("192.0.2.7"), ["a.example.com.", "b.example.com."]);
  const r = c.gc(16_000, never);
  assert.deepEqual(r, { changed: ["192.0.2.7"], removed: [] });
  assert.deepEqual(c.namesOf("192.0.2.7"), ["b.example.com."]);
});

test("TTL expiry removes an address after the grace period, not before", () => {
  const c = new FqdnCache(opts);
  c.learn("a.example.com", [{ ip: "192.0.2.1", ttl: 10 }], 0);
  assert.deepEqual(c.gc(10_000, never).removed, [], "at the TTL");
  assert.deepEqual(c.gc(14_999, never).removed, [], "inside the grace period");
  assert.deepEqual(c.gc(15_000, never).removed, ["192.0.2.1"]);
  assert.deepEqual(c.addresses(), []);
});

test("an expired address with a live connection is kept until the connection ends", () => {
  const c = new FqdnCache(opts);
  c.learn("a.example.com", [{ ip: "192.0.2.1", ttl: 1 }], 0);
  assert.deepEqual(c.gc(60_000, (ip) => ip === "192.0.2.1").removed, []);
  assert.deepEqual(c.gc(61_000, never).removed, ["192.0.2.1"]);
});

test("the minimum TTL raises short answers", () => {
  const c = new FqdnCache({ ...opts, minTtlSeconds: 60 });
  c.learn("a.example.com", [{ ip: "192.0.2.1", ttl: 0 }], 0);
  assert.equal(c.entries()[0]?.expiresAt, 60_000);
  assert.deepEqual(c.gc(64_000, never).removed, []);
  assert.deepEqual(c.gc(65_000, never).removed, ["192.0.2.1"]);
});

test("over the per-name limit the addresses that run out first expire now and go after the grace period", () => {
  const c = new FqdnCache(opts);
  c.learn("a.example.com", [1, 2, 3].map((i) => ({ ip: `192.0.2.${i}`, ttl: 100 + i })), 0);
  c.learn("a.example.com", [{ ip: "192.0.2.9", ttl: 500 }], 1000);
  assert.equal(c.addressesOf("a.example.com").length, 4, "still there during the grace period");
  assert.deepEqual(c.gc(6_000, never).removed, ["192.0.2.1"]);
  assert.deepEqual(c.addressesOf("a.example.com"), ["192.0.2.2", "192.0.2.3", "192.0.2.9"]);
});

test("the state file round-trips the cache and refuses bad input naming the field", () => {
  const c = new FqdnCache(opts);
  c.learn("a.example.com", [{ ip: "192.0.2.1", ttl: 10 }], 5, "ns/pod");
  c.learn("b.example.com", [{ ip: "192.0.2.1", ttl: 20 }], 5);
  const decoded = decodeFqdnState(encodeFqdnState(c.entries(), [{ ip: "192.0.2.1", identity: 25165824 }]));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.value.identities, [{ ip: "192.0.2.1", identity: 25165824 }]);
  const back = new FqdnCache(opts);
  back.restore(decoded.value.entries);
  assert.deepEqual(back.entries(), c.entries());
  assert.deepEqual(back.namesOf("192.0.2.1"), ["a.example.com.", "b.example.com."]);
  const bad = decodeFqdnState(JSON.stringify({ version: 1, entries: [{ name: "x", ip: "300.1.1.1", expiresAt: 1 }, { name: "", ip: "::1", expiresAt: "soon" }] }));
  assert.equal(bad.ok, false);
  if (!bad.ok)
    assert.deepEqual(bad.errors.map((e) => e.path), ["entries[0].ip", "entries[1].name", "entries[1].expiresAt"]);
  const notJson = decodeFqdnState("{");
  assert.equal(notJson.ok, false);
  assert.deepEqual(decodeFqdnState(JSON.stringify({ version: 2, entries: [] })).ok, false);
});

test("the journal adds its lines of the snapshot's seq; older lines and a write cut short are left out; a bad line is named", () => {
  const e = (name: string, ip: string, expiresAt = 1000) => ({ name, ip, expiresAt });
  const snapshot = encodeFqdnState([e("a.test.", "192.0.2.1")], [{ ip: "192.0.2.1", identity: 25165824 }], 4);
  const journal =
    encodeFqdnState([e("old.test.", "192.0.2.9")], [{ ip: "192.0.2.9", identity: 25165830 }], 3) + // before the snapshot: ignored
    encodeFqdnState([e("b.test.", "192.0.2.2")], [{ ip: "192.0.2.2", identity: 25165825 }], 4) +
    encodeFqdnState([e("a.test.", "192.0.2.1", 9000)], [], 4) +
    encodeFqdnState([e("cut.test.", "192.0.2.3")], [], 4).slice(0, 30); // killed mid-write
  const r = decodeFqdnStateWithJournal(snapshot, journal);
  assert.ok(r.ok);
  assert.equal(r.value.seq, 4);
  assert.deepEqual(r.value.entries.map((x) => `${x.name} ${x.ip} ${x.expiresAt}`), ["a.test. 192.0.2.1 1000", "b.test. 192.0.2.2 1000", "a.test. 192.0.2.1 9000"]);
  assert.deepEqual(r.value.identities.map((x) => x.ip), ["192.0.2.1", "192.0.2.2"]);
  const back = new FqdnCache(opts);
  back.restore(r.value.entries);
  assert.equal(back.entries().find((x) => x.name === "a.test.")?.expiresAt, 9000, "the later deadline wins");
  assert.deepEqual(decodeFqdnStateWithJournal(snapshot, "").ok, true, "no journal: the snapshot alone");
  const bad = decodeFqdnStateWithJournal(snapshot, `${encodeFqdnState([e("b.test.", "192.0.2.2")], [], 4)}{"version":1,"seq":4,"entries":[{"name":"x","ip":"nope","expiresAt":1}]}\n`);
  assert.equal(bad.ok, false);
  if (!bad.ok) assert.deepEqual(bad.errors.map((x) => x.path), ["journal[1].entries[0].ip"]);
});

test("learning reports the entries it added or gave a later deadline, and only those", () => {
  const c = new FqdnCache(opts);
  assert.deepEqual(c.learn("a.test", [{ ip: "192.0.2.1", ttl: 10 }], 0).updated.map((x) => x.expiresAt), [10_000]);
  assert.deepEqual(c.learn("a.test", [{ ip: "192.0.2.1", ttl: 5 }], 0).updated, [], "an earlier deadline changes nothing");
  assert.deepEqual(c.learn("a.test", [{ ip: "192.0.2.1", ttl: 10 }], 2000).updated.map((x) => x.expiresAt), [12_000]);
});

test("property: after gc at time T, exactly the pairs with deadline + grace > T (or in use) remain", () => {
  const answer = fc.record({ name: fc.constantFrom("a.x", "b.x", "c.x"), ip: fc.constantFrom("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"), ttl: fc.nat(100), at: fc.nat(100_000) });
  fc.assert(
    fc.property(fc.array(answer, { maxLength: 30 }), fc.nat(300_000), fc.constantFrom("192.0.2.1", "none"), (answers, t, busy) => {
      const c = new FqdnCache({ minTtlSeconds: 0, maxAddressesPerName: 100, graceSeconds: 5 });
      const latest = new Map<string, number>();
      for (const a of answers) {
        c.learn(a.name, [{ ip: a.ip, ttl: a.ttl }], a.at);
        const k = `${a.name}. ${a.ip}`;
        latest.set(k, Math.max(latest.get(k) ?? -Infinity, a.at + a.ttl * 1000));
      }
      c.gc(t, (ip) => ip === busy);
      const kept = new Set(c.entries().map((e) => `${e.name} ${e.ip}`));
      for (const [k, exp] of latest) {
        const ip = k.split(" ")[1];
        if (kept.has(k) !== (exp + 5000 > t || ip === busy)) return false;
      }
      // Every address's names are exactly the names that still list it.
      for (const ip of c.addresses()) {
        const names = c.entries().filter((e) => e.ip === ip).map((e) => e.name).sort();
        if (JSON.stringify(names) !== JSON.stringify(c.namesOf(ip))) return false;
      }
      return true;
    }),
  );
});

test("an answer teaches each address for the question and every CNAME leading to it, with the chain's smallest TTL", async () => {
  const { learnedAddresses } = await import("./answers.ts");
  const got = learnedAddresses("www.example.com", [
    { name: "www.example.com", type: "CNAME", ttl: 300, data: "edge.cdn.net" },
    { name: "edge.cdn.net", type: "CNAME", ttl: 60, data: "a1.cdn.net" },
    { name: "a1.cdn.net", type: "A", ttl: 120, data: "192.0.2.10" },
    { name: "a1.cdn.net", type: "AAAA", ttl: 30, data: "2001:db8::10" },
    { name: "elsewhere.net", type: "A", ttl: 120, data: "192.0.2.99" },
  ]);
  assert.deepEqual(got, [
    { ip: "192.0.2.10", names: ["www.example.com.", "edge.cdn.net.", "a1.cdn.net."], ttl: 60 },
    { ip: "2001:db8::10", names: ["www.example.com.", "edge.cdn.net.", "a1.cdn.net."], ttl: 30 },
  ]);
  assert.deepEqual(learnedAddresses("a.example.com", [{ name: "A.EXAMPLE.COM.", type: "A", ttl: 5, data: "192.0.2.1" }]), [
    { ip: "192.0.2.1", names: ["a.example.com."], ttl: 5 },
  ]);
  // A CNAME loop ends; nothing off the chain is learned.
  assert.deepEqual(learnedAddresses("x.test", [
    { name: "x.test", type: "CNAME", ttl: 5, data: "y.test" },
    { name: "y.test", type: "CNAME", ttl: 5, data: "x.test" },
  ]), []);
});
