// Tests for numeric identities: reserved identities, the allocator, CIDR prefixes and CIDR labels.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  IdentityAllocator,
  LocalCIDRAllocator,
  MIN_LOCAL_IDENTITY,
  RESERVED_IDENTITIES,
  cidrLabels,
  identityScope,
  reservedIdentityById,
  reservedIdentityByName,
} from "./identity.ts";
import { canonicalPrefix, coveringPrefixes, formatPrefix, parsePrefix, prefixContains } from "./cidr.ts";
import { labelSetStrings } from "./labels.ts";

test("reserved identities have Cilium's numbers, names and labels", () => {
  const expected: [number, string][] = [
    [1, "host"],
    [2, "world"],
    [3, "unmanaged"],
    [4, "health"],
    [5, "init"],
    [6, "remote-node"],
    [7, "kube-apiserver"],
    [8, "ingress"],
    [9, "world-ipv4"],
    [10, "world-ipv6"],
  ];
  assert.deepEqual(
    RESERVED_IDENTITIES.map((r) => [r.id, r.name]),
    expected,
  );
  for (const [id, name] of expected) {
    assert.equal(reservedIdentityByName(name)?.id, id);
    assert.equal(reservedIdentityById(id)?.name, name);
    assert.deepEqual(labelSetStrings(reservedIdentityById(id)!.labels), [`reserved:${name}`]);
  }
  assert.equal(reservedIdentityByName("nope"), undefined);
});

test("identity scopes: reserved below 256, cluster up to 65535, local from 1<<24", () => {
  assert.equal(identityScope(0), "invalid");
  assert.equal(identityScope(2), "reserved");
  assert.equal(identityScope(256), "cluster");
  assert.equal(identityScope(65535), "cluster");
  assert.equal(identityScope(65536), "invalid");
  assert.equal(identityScope(1 << 24), "local");
  assert.equal(identityScope(2 ** 25), "invalid");
});

test("the allocator reuses the number of an equal key and otherwise gives the lowest free number from 256", () => {
  const a = new IdentityAllocator({ existing: [[256, "A"], [258, "C"]] });
  assert.deepEqual(a.allocate("A"), { ok: true, value: { id: 256, created: false } });
  assert.deepEqual(a.allocate("B"), { ok: true, value: { id: 257, created: true } });
  assert.deepEqual(a.allocate("D"), { ok: true, value: { id: 259, created: true } });
  assert.equal(a.release(257), true);
  assert.deepEqual(a.allocate("E"), { ok: true, value: { id: 257, created: true } });
  assert.equal(a.lookup("E"), 257);
  assert.equal(a.keyOf(259), "D");
});

test("a number that is still referenced is never handed out again", () => {
  const a = new IdentityAllocator({ existing: [[256, "A"]], referenced: [257] });
  assert.equal(a.allocate("B").ok && a.lookup("B"), 258);
  a.release(256);
  a.reference(256);
  assert.equal(a.allocate("C").ok && a.lookup("C"), 259);
  a.unreference(256);
  assert.equal(a.allocate("D").ok && a.lookup("D"), 256);
  a.setReferenced([]);
  assert.equal(a.allocate("E").ok && a.lookup("E"), 257);
});

test("exhaustion is an error result, not an exception", () => {
  const a = new IdentityAllocator({ min: 256, max: 258, referenced: [257] });
  assert.equal(a.allocate("A").ok, true);
  assert.equal(a.allocate("B").ok, true);
  const r = a.allocate("C");
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.errors[0]?.path, "identity");
    assert.match(r.errors[0]?.message ?? "", /exhausted/);
  }
  // Still exhausted for new keys, still answers for existing ones; freeing makes room.
  assert.equal(a.allocate("A").ok, true);
  a.release(256);
  assert.deepEqual(a.allocate("C"), { ok: true, value: { id: 256, created: true } });
});

test("allocation equals a from-scratch model: lowest number neither bound nor referenced", () => {
  type Op = { kind: "alloc"; key: string } | { kind: "release"; n: number } | { kind: "ref"; n: number } | { kind: "unref"; n: number };
  const num = fc.integer({ min: 256, max: 266 });
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant("alloc" as const), key: fc.constantFrom("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l") }),
    fc.record({ kind: fc.constant("release" as const), n: num }),
    fc.record({ kind: fc.constant("ref" as const), n: num }),
    fc.record({ kind: fc.constant("unref" as const), n: num }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const a = new IdentityAllocator({ min: 256, max: 265 });
      const bound = new Map<string, number>();
      const refs = new Set<number>();
      for (const o of ops) {
        if (o.kind === "alloc") {
          const r = a.allocate(o.key);
          let want = bound.get(o.key);
          if (want === undefined) {
            const used = new Set([...bound.values(), ...refs]);
            for (let n = 256; n <= 265; n++) if (!used.has(n)) { want = n; break; }
            if (want !== undefined) bound.set(o.key, want);
          }
          if (want === undefined) assert.equal(r.ok, false);
          else assert.deepEqual(r.ok && r.value.id, want);
          if (r.ok) assert.ok(!refs.has(r.value.id) || !r.value.created);
        } else if (o.kind === "release") {
          const key = [...bound].find(([, n]) => n === o.n)?.[0];
          assert.equal(a.release(o.n), key !== undefined);
          if (key !== undefined) bound.delete(key);
        } else if (o.kind === "ref") {
          a.reference(o.n);
          refs.add(o.n);
        } else {
          a.unreference(o.n);
          refs.delete(o.n);
        }
      }
    }),
    { numRuns: 300 },
  );
});

test("prefixes parse, mask host bits and print canonically", () => {
  assert.equal(canonicalPrefix("10.1.2.3/8"), "10.0.0.0/8");
  assert.equal(canonicalPrefix("192.168.1.1"), "192.168.1.1/32");
  assert.equal(canonicalPrefix("2001:DB8:0:0:1::/32"), "2001:db8::/32");
  assert.equal(canonicalPrefix("::/0"), "::/0");
  assert.equal(canonicalPrefix("::ffff:10.0.0.1/128"), "::ffff:a00:1/128");
  assert.equal(canonicalPrefix("2001:db8:0:1:0:0:0:1/128"), "2001:db8:0:1::1/128");
  for (const bad of ["10.0.0.0/33", "10.0.0/8", "256.0.0.0/8", "01.0.0.0/8", "1:2:3/64", "1::2::3/64", "x", "", "10.0.0.0/", "10.0.0.0/-1", "::/129"]) {
    assert.equal(parsePrefix(bad), undefined, bad);
  }
  assert.ok(prefixContains(parsePrefix("10.0.0.0/8")!, parsePrefix("10.1.0.0/16")!));
  assert.ok(!prefixContains(parsePrefix("10.1.0.0/16")!, parsePrefix("10.0.0.0/8")!));
  assert.ok(!prefixContains(parsePrefix("0.0.0.0/0")!, parsePrefix("::/0")!));
});

test("canonical prefix text parses back to the same prefix", () => {
  const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });
  fc.assert(
    fc.property(v6, fc.integer({ min: 0, max: 128 }), (groups, bits) => {
      const text = `${groups.map((g) => g.toString(16)).join(":")}/${bits}`;
      const p = parsePrefix(text)!;
      assert.deepEqual(parsePrefix(formatPrefix(p)), p);
    }),
    { numRuns: 500 },
  );
});

test("CIDR labels include every covering prefix and the family's world label", () => {
  const l = labelSetStrings(cidrLabels("10.1.2.0/24"));
  assert.equal(l.filter((s) => s.startsWith("cidr:")).length, 25);
  for (const s of ["cidr:10.1.2.0/24", "cidr:10.0.0.0/8", "cidr:10.0.0.0/7", "cidr:0.0.0.0/0", "reserved:world-ipv4"]) assert.ok(l.includes(s), s);
  const v6 = labelSetStrings(cidrLabels("2001:db8::/32"));
  assert.ok(v6.includes("cidr:2001-db8--0/32"));
  assert.ok(v6.includes("cidr:0--0/0"));
  assert.ok(v6.includes("reserved:world-ipv6"));
  assert.ok(v6.every((s) => s.split(":").length === 2), "no ':' inside an IPv6 cidr label key");
  assert.equal(cidrLabels("not-a-prefix").labels.length, 0);
  assert.equal(coveringPrefixes(parsePrefix("10.0.0.0/8")!).length, 9);
});

test("local CIDR identities come from 1<<24 up, are shared per prefix and freed with the last reference", () => {
  const a = new LocalCIDRAllocator();
  const x = a.acquire("10.0.0.0/8");
  const y = a.acquire("10.0.0.0/8");
  const z = a.acquire("192.168.0.0/16");
  assert.ok(x.ok && y.ok && z.ok);
  if (!x.ok || !y.ok || !z.ok) return;
  assert.equal(x.value.id, MIN_LOCAL_IDENTITY);
  assert.equal(y.value.id, MIN_LOCAL_IDENTITY);
  assert.equal(y.value.created, false);
  assert.equal(z.value.id, MIN_LOCAL_IDENTITY + 1);
  assert.equal(a.lookup("10.1.0.0/8"), MIN_LOCAL_IDENTITY, "host bits do not make a different prefix");
  assert.equal(a.release(x.value.id), false);
  assert.equal(a.release(x.value.id), true);
  assert.equal(a.lookup("10.0.0.0/8"), undefined);
  assert.equal(a.acquire("bogus").ok, false);
});
