// Property tests: the number-arithmetic IPv4/IPv6 parser in core/cidr.ts agrees with the earlier BigInt/regex reference kept here.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { type IPFamily, canonicalPrefix, formatIP, makePrefix, parseIP, parsePrefix, prefixContains } from "./cidr.ts";

// ---- the reference: the implementation before the rewrite, unchanged ----
function refParseIPv4(s: string): bigint | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}
function refParseIPv6(s: string): bigint | undefined {
  if (s.includes("%")) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? "";
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = refParseIPv4(item);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return undefined;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] ?? "");
  const tail = halves.length === 2 ? groupsOf(halves[1] ?? "") : [];
  if (head === undefined || tail === undefined) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}
function refParseIP(s: string): { family: IPFamily; addr: bigint } | undefined {
  if (s.includes(":")) {
    const addr = refParseIPv6(s);
    return addr === undefined ? undefined : { family: 6, addr };
  }
  const addr = refParseIPv4(s);
  return addr === undefined ? undefined : { family: 4, addr };
}
function refMask(family: IPFamily, bits: number): bigint {
  const total = family === 4 ? 32 : 128;
  return ((1n << BigInt(total)) - 1n) ^ ((1n << BigInt(total - bits)) - 1n);
}
function refParsePrefix(s: string): { family: IPFamily; addr: bigint; bits: number } | undefined {
  const slash = s.indexOf("/");
  const ip = refParseIP(slash < 0 ? s : s.slice(0, slash));
  if (ip === undefined) return undefined;
  const total = ip.family === 4 ? 32 : 128;
  let bits = total;
  if (slash >= 0) {
    const b = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(b)) return undefined;
    bits = Number(b);
    if (bits > total) return undefined;
  }
  return { family: ip.family, addr: ip.addr & refMask(ip.family, bits), bits };
}
function refFormatIPv4(addr: bigint): string {
  return [24n, 16n, 8n, 0n].map((sh) => String((addr >> sh) & 0xffn)).join(".");
}

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

const RUNS = { numRuns: 20_000 };

test("parseIP accepts and rejects exactly what the reference does, with the same value", () => {
  fc.assert(fc.property(addressText, (s) => assert.deepEqual(parseIP(s), refParseIP(s))), RUNS);
});

test("parsePrefix and canonicalPrefix agree with the reference on any text", () => {
  fc.assert(
    fc.property(prefixText, (s) => {
      const want = refParsePrefix(s);
      assert.deepEqual(parsePrefix(s), want);
      if (want !== undefined) assert.equal(canonicalPrefix(s), `${formatIP(want.family, want.addr)}/${want.bits}`);
      else assert.equal(canonicalPrefix(s), undefined);
    }),
    RUNS,
  );
});

test("IPv4 formatting and masking agree with the reference for every 32-bit address", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), (n, bits) => {
      const addr = BigInt(n);
      assert.equal(formatIP(4, addr), refFormatIPv4(addr));
      assert.equal(makePrefix(4, addr, bits).addr, addr & refMask(4, bits));
    }),
    RUNS,
  );
});

test("IPv6 masking and containment agree with the reference", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 128 }), fc.integer({ min: 0, max: 128 }), (a, b, ba, bb) => {
      const outer = makePrefix(6, a, ba);
      const inner = makePrefix(6, b, bb);
      assert.equal(outer.addr, a & refMask(6, ba));
      const want = ba <= bb && (inner.addr & refMask(6, ba)) === outer.addr;
      assert.equal(prefixContains(outer, inner), want);
      assert.equal(prefixContains(outer, makePrefix(6, a, Math.max(ba, bb))), true);
    }),
    RUNS,
  );
});
