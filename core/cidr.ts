// IPv4/IPv6 addresses and prefixes: parsing, canonical text, containment and covering prefixes.

export type IPFamily = 4 | 6;

/** A masked prefix: host bits of `addr` are zero. */
export interface Prefix {
  readonly family: IPFamily;
  readonly addr: bigint;
  readonly bits: number;
}

export function familyBits(family: IPFamily): number {
  return family === 4 ? 32 : 128;
}

function parseIPv4(s: string): bigint | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    // Leading zeros are rejected, as Go's netip does (they are ambiguous: octal or decimal).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseIPv6(s: string): bigint | undefined {
  if (s.includes("%")) return undefined; // zones are not addresses in policy
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? "";
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIPv4(item);
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

/** Parses an IP address; undefined when it is not one. */
export function parseIP(s: string): { family: IPFamily; addr: bigint } | undefined {
  if (s.includes(":")) {
    const addr = parseIPv6(s);
    return addr === undefined ? undefined : { family: 6, addr };
  }
  const addr = parseIPv4(s);
  return addr === undefined ? undefined : { family: 4, addr };
}

function mask(family: IPFamily, bits: number): bigint {
  const total = familyBits(family);
  return ((1n << BigInt(total)) - 1n) ^ ((1n << BigInt(total - bits)) - 1n);
}

export function makePrefix(family: IPFamily, addr: bigint, bits: number): Prefix {
  return { family, addr: addr & mask(family, bits), bits };
}

/**
 * Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a host prefix). Host bits are masked
 * off (`10.1.2.3/8` → `10.0.0.0/8`). Undefined when it is not a prefix.
 */
export function parsePrefix(s: string): Prefix | undefined {
  const slash = s.indexOf("/");
  const ip = parseIP(slash < 0 ? s : s.slice(0, slash));
  if (ip === undefined) return undefined;
  const total = familyBits(ip.family);
  let bits = total;
  if (slash >= 0) {
    const b = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(b)) return undefined;
    bits = Number(b);
    if (bits > total) return undefined;
  }
  return makePrefix(ip.family, ip.addr, bits);
}

export function formatIP(family: IPFamily, addr: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((sh) => String((addr >> sh) & 0xffn)).join(".");
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((addr >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: the longest run (≥ 2) of zero groups becomes "::", the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Canonical text: `10.0.0.0/8`, `2001:db8::/32`. */
export function formatPrefix(p: Prefix): string {
  return `${formatIP(p.family, p.addr)}/${p.bits}`;
}

/** The canonical form of a prefix string, or undefined when it is not one. */
export function canonicalPrefix(s: string): string | undefined {
  const p = parsePrefix(s);
  return p === undefined ? undefined : formatPrefix(p);
}

/** Whether `outer` contains `inner` (every address of inner is in outer). */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  return outer.family === inner.family && outer.bits <= inner.bits && (inner.addr & mask(outer.family, outer.bits)) === outer.addr;
}

/** The prefix itself and every shorter prefix that contains it, longest first, down to /0. */
export function coveringPrefixes(p: Prefix): Prefix[] {
  const out: Prefix[] = [];
  for (let bits = p.bits; bits >= 0; bits--) out.push(makePrefix(p.family, p.addr, bits));
  return out;
}
