// Property tests of core/cidr.ts against node:net (isIP, BlockList) and the URL parser's IPv6 text as independent oracles.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BlockList, isIP } from "node:net";
import fc from "fast-check";
import { type IPFamily, canonicalPrefix, formatIP, hostPrefix, makePrefix, parseHostPort, parseIP, parsePrefix, prefixContains } from "./cidr.ts";

const netFamily = (f: IPFamily): "ipv4" | "ipv6" => (f === 4 ? "ipv4" : "ipv6");
const total = (f: IPFamily): number => (f === 4 ? 32 : 128);
/** The oracle's view of one address: node:net's own parse, through a one-address BlockList. */
const netHas = (s: string, family: IPFamily, probe: string): boolean => {
  const bl = new BlockList();
  bl.addAddress(s, netFamily(family));
  return bl.check(probe, netFamily(family));
};
const inSubnet = (family: IPFamily, net: bigint, bits: number, probe: bigint): boolean => {
  const bl = new BlockList();
  bl.addSubnet(formatIP(family, net), bits, netFamily(family));
  return bl.check(formatIP(family, probe), netFamily(family));
};

// ---- generators: near-misses of real addresses as well as noise ----
const octet = fc.oneof(fc.integer({ min: 0, max: 255 }).map(String), fc.constantFrom("00", "01", "256", "999", "1000", "", "-1", "+1", " 1", "1e2", "0x1"));
const ipv4Text = fc.array(octet, { minLength: 1, maxLength: 6 }).map((os) => os.join("."));
const group = fc.oneof(fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16)), fc.constantFrom("", "0", "00000", "g", "FFFF", "fFfF", "12345", "1.2.3.4", "%eth0"));
const ipv6Text = fc.oneof(
  fc.array(group, { minLength: 1, maxLength: 10 }).map((gs) => gs.join(":")),
  fc.tuple(fc.array(group, { maxLength: 5 }), fc.array(group, { maxLength: 5 })).map(([a, b]) => `${a.join(":")}::${b.join(":")}`),
);
const noise = fc.array(fc.constantFrom(..."0123456789abcdefABCDEFx.:/% \n"), { maxLength: 45 }).map((cs) => cs.join(""));
const bitsText = fc.oneof(fc.integer({ min: 0, max: 140 }).map(String), fc.constantFrom("", "00", "08", "-1", "1.5", "32 ", "abc"));
const addressText = fc.oneof(ipv4Text, ipv6Text, noise);
const prefixText = fc.oneof(addressText, fc.tuple(addressText, bitsText).map(([a, b]) => `${a}/${b}`));
const v6 = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });

const RUNS = { numRuns: 20_000 };

test("parseIP accepts exactly the addresses node:net accepts (zones excepted: they are not addresses in policy), with the value node:net reads", () => {
  fc.assert(
    fc.property(addressText, (s) => {
      const got = parseIP(s);
      const family = isIP(s);
      assert.equal(got !== undefined, family !== 0 && !s.includes("%"), `accepts ${JSON.stringify(s)}`);
      if (got === undefined) return;
      assert.equal(got.family, family);
      assert.ok(netHas(s, got.family, formatIP(got.family, got.addr)), `${s} is ${formatIP(got.family, got.addr)}`);
      const neighbour = got.addr ^ 1n;
      assert.ok(!netHas(s, got.family, formatIP(got.family, neighbour)));
    }),
    RUNS,
  );
});

test("parsePrefix takes an address and a decimal length up to the family's width; host bits are cleared and the prefix covers the address", () => {
  fc.assert(
    fc.property(prefixText, (s) => {
      const slash = s.indexOf("/");
      const addrText = slash < 0 ? s : s.slice(0, slash);
      const lenText = slash < 0 ? undefined : s.slice(slash + 1);
      const ip = isIP(addrText) !== 0 && !addrText.includes("%") ? parseIP(addrText) : undefined;
      const family = isIP(addrText) as IPFamily;
      const lenOk = lenText === undefined || (/^(0|[1-9][0-9]{0,2})$/.test(lenText) && Number(lenText) <= total(family));
      const p = parsePrefix(s);
      assert.equal(p !== undefined, ip !== undefined && lenOk, `accepts ${JSON.stringify(s)}`);
      if (p === undefined || ip === undefined) {
        assert.equal(canonicalPrefix(s), undefined);
        return;
      }
      assert.equal(p.bits, lenText === undefined ? total(family) : Number(lenText));
      assert.ok(inSubnet(p.family, p.addr, p.bits, ip.addr), "the prefix covers its address");
      assert.equal(p.addr % (1n << BigInt(total(family) - p.bits)), 0n, "host bits are zero");
      assert.equal(canonicalPrefix(s), `${formatIP(p.family, p.addr)}/${p.bits}`);
      assert.deepEqual(parsePrefix(canonicalPrefix(s)!), p, "the canonical text parses back to the same prefix");
    }),
    RUNS,
  );
});

test("IPv4 text is four decimal octets and masking keeps the lowest address of the subnet", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), (n, bits) => {
      const addr = BigInt(n);
      assert.equal(formatIP(4, addr), [24, 16, 8, 0].map((sh) => String(Math.floor(n / 2 ** sh) % 256)).join("."));
      const masked = makePrefix(4, addr, bits).addr;
      assert.ok(inSubnet(4, addr, bits, masked));
      if (masked > 0n) assert.ok(!inSubnet(4, addr, bits, masked - 1n));
    }),
    RUNS,
  );
});

test("IPv6 text is the URL standard's compressed form; masking and containment agree with node:net's subnets", () => {
  fc.assert(
    fc.property(v6, v6, fc.integer({ min: 0, max: 128 }), fc.integer({ min: 0, max: 128 }), (a, b, ba, bb) => {
      const text = formatIP(6, a);
      assert.equal(text, new URL(`http://[${text}]/`).hostname.slice(1, -1));
      assert.equal(parseIP(text)?.addr, a);
      const outer = makePrefix(6, a, ba);
      const inner = makePrefix(6, b, bb);
      assert.ok(inSubnet(6, a, ba, outer.addr));
      if (outer.addr > 0n) assert.ok(!inSubnet(6, a, ba, outer.addr - 1n));
      const last = inner.addr | ((1n << BigInt(128 - inner.bits)) - 1n);
      const want = ba <= bb && inSubnet(6, outer.addr, ba, inner.addr) && inSubnet(6, outer.addr, ba, last);
      assert.equal(prefixContains(outer, inner), want);
      assert.equal(prefixContains(outer, makePrefix(6, a, Math.max(ba, bb))), true);
    }),
    RUNS,
  );
});

test("HOST:PORT splits for names, IPv4 and bracketed IPv6; a bare IPv6, a missing port or one past 65535 is not one", () => {
  const host = fc.oneof(
    fc.integer({ min: 0, max: 0xffffffff }).map((n) => formatIP(4, BigInt(n))),
    v6.map((a) => `[${formatIP(6, a)}]`),
    fc.constantFrom("localhost", "op", "membrane-operator.kube-system.svc"),
  );
  fc.assert(
    fc.property(host, fc.integer({ min: 0, max: 65535 }), (h, port) => {
      assert.deepEqual(parseHostPort(`${h}:${port}`), { host: h.replace(/^\[|\]$/g, ""), port });
    }),
    { numRuns: 2_000 },
  );
  for (const bad of ["9443", "::1:9443", "127.0.0.1:70000", "127.0.0.1:", "a b:1", "[::1]"]) assert.equal(parseHostPort(bad), undefined, bad);
});

test("hostPrefix is the single-address prefix of an IPv4 or IPv6 address", () => {
  assert.equal(hostPrefix("10.0.0.1"), "10.0.0.1/32");
  assert.equal(hostPrefix("fd00::1"), "fd00::1/128");
});
