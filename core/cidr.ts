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

/** An IPv4 address as a 32-bit unsigned number (plain arithmetic: a BigInt per octet was a hot spot). */
export function parseIPv4Number(s: string): number | undefined {
  const len = s.length;
  if (len < 7 || len > 15) return undefined;
  let v = 0;
  let octets = 0;
  let i = 0;
  while (i <= len) {
    // One octet: 1–3 digits, no leading zero (ambiguous: octal or decimal, rejected as Go's netip does).
    const start = i;
    let n = 0;
    while (i < len) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      n = n * 10 + (c - 48);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || n > 255) return undefined;
    if (digits > 1 && s.charCodeAt(start) === 48) return undefined;
    v = v * 256 + n;
    octets++;
    if (i === len) break;
    if (s.charCodeAt(i) !== 46 || octets === 4) return undefined;
    i++;
  }
  return octets === 4 ? v : undefined;
}

function parseIPv4(s: string): bigint | undefined {
  const v = parseIPv4Number(s);
  return v === undefined ? undefined : BigInt(v);
}

/** 1–4 hex digits → their value. */
function hexGroup(item: string): number | undefined {
  const len = item.length;
  if (len === 0 || len > 4) return undefined;
  let g = 0;
  for (let i = 0; i < len; i++) {
    const c = item.charCodeAt(i);
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else return undefined;
    g = g * 16 + d;
  }
  return g;
}

function parseIPv6(s: string): bigint | undefined {
  if (s.includes("%")) return undefined; // zones are not addresses in policy
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  // An embedded IPv4 address may only end the address: "::ffff:1.2.3.4", never "1.2.3.4::".
  const groupsOf = (part: string, last: boolean): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? "";
      if (last && i === items.length - 1 && item.includes(".")) {
        const v4 = parseIPv4Number(item);
        if (v4 === undefined) return undefined;
        out.push(Math.floor(v4 / 0x10000), v4 % 0x10000);
      } else {
        const g = hexGroup(item);
        if (g === undefined) return undefined;
        out.push(g);
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? groupsOf(halves[1] ?? "", true) : [];
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

/** Splits `HOST:PORT` (`[v6]:PORT` for IPv6; the host may also be a name); undefined when it is not one. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

function computeMask(total: number, bits: number): bigint {
  return ((1n << BigInt(total)) - 1n) ^ ((1n << BigInt(total - bits)) - 1n);
}

// Every mask computed once: masking is on every prefix parse and containment test.
const MASKS_V4: readonly bigint[] = Array.from({ length: 33 }, (_, bits) => computeMask(32, bits));
const MASKS_V6: readonly bigint[] = Array.from({ length: 129 }, (_, bits) => computeMask(128, bits));

function mask(family: IPFamily, bits: number): bigint {
  const m = (family === 4 ? MASKS_V4 : MASKS_V6)[bits];
  return m ?? computeMask(familyBits(family), bits);
}

export function makePrefix(family: IPFamily, addr: bigint, bits: number): Prefix {
  return { family, addr: addr & mask(family, bits), bits };
}

/** The decimal prefix length at s[from..]: 1–3 digits without a leading zero; -1 when it is not one. */
/** The prefix length written from `from` to the end of `s` (decimal, no leading zero), or -1. */
export function prefixLength(s: string, from: number): number {
  const digits = s.length - from;
  if (digits < 1 || digits > 3) return -1;
  if (digits > 1 && s.charCodeAt(from) === 48) return -1;
  let n = 0;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n;
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
    bits = prefixLength(s, slash + 1);
    if (bits < 0 || bits > total) return undefined;
  }
  return makePrefix(ip.family, ip.addr, bits);
}

export function formatIP(family: IPFamily, addr: bigint): string {
  if (family === 4) {
    const v = Number(addr & 0xffffffffn);
    return `${(v >>> 24) & 0xff}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
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

/** The single-address prefix of an IP: "10.0.0.1" → "10.0.0.1/32", "fd00::1" → "fd00::1/128". */
export function hostPrefix(ip: string): string {
  return ip.includes(":") ? `${ip}/128` : `${ip}/32`;
}
