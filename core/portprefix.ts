// Port ranges ↔ aligned power-of-two prefix blocks, the form ports take in policy map keys.

/** One aligned block: the ports whose high `prefixLen` bits equal those of `port` (16 = one port). */
export interface PortPrefix {
  readonly port: number;
  readonly prefixLen: number;
}

const PORT_BITS = 16;
const PORT_MAX = 0xffff;

/** The ports one block covers, inclusive. */
export function prefixRange(block: PortPrefix): { lo: number; hi: number } {
  const size = 2 ** (PORT_BITS - block.prefixLen);
  return { lo: block.port, hi: block.port + size - 1 };
}

/**
 * The fewest aligned blocks that cover exactly [lo, hi], in ascending port order. Port 0 with
 * endPort 0 or the full range 0..65535 is the single wildcard block 0/0.
 */
export function rangeToPrefixes(lo: number, hi: number): PortPrefix[] {
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > PORT_MAX || lo > hi) {
    throw new RangeError(`invalid port range ${lo}-${hi}`);
  }
  if (lo === 0 && hi === 0) return [{ port: 0, prefixLen: 0 }];
  const blocks: PortPrefix[] = [];
  let start = lo;
  while (start <= hi) {
    // The largest block that starts at `start` (alignment) and does not pass `hi`.
    let sizeBits = start === 0 ? PORT_BITS : Math.min(PORT_BITS, ctz(start));
    while (sizeBits > 0 && start + 2 ** sizeBits - 1 > hi) sizeBits--;
    blocks.push({ port: start, prefixLen: PORT_BITS - sizeBits });
    start += 2 ** sizeBits;
  }
  return blocks;
}

/** Whether `port` falls in the block. */
export function prefixContains(block: PortPrefix, port: number): boolean {
  const { lo, hi } = prefixRange(block);
  return port >= lo && port <= hi;
}

/** Merges blocks back into maximal disjoint inclusive ranges, ascending. */
export function prefixesToRanges(blocks: readonly PortPrefix[]): { lo: number; hi: number }[] {
  const ranges = blocks.map(prefixRange).sort((a, b) => a.lo - b.lo);
  const merged: { lo: number; hi: number }[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.lo <= last.hi + 1) last.hi = Math.max(last.hi, r.hi);
    else merged.push({ ...r });
  }
  return merged;
}

function ctz(n: number): number {
  let bits = 0;
  while ((n & 1) === 0 && bits < PORT_BITS) {
    n >>>= 1;
    bits++;
  }
  return bits;
}
