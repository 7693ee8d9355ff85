// The cluster pod CIDR pool: carves a pool prefix into equal per-node blocks, never handing out one
// twice. Blocks recorded in existing CiliumNodes are marked first (the API is the truth).
import { type Prefix, familyBits, formatPrefix, makePrefix, parsePrefix, prefixContains } from "../core/cidr.ts";

export class PodCIDRPool {
  readonly pool: Prefix;
  private readonly used = new Map<bigint, string>(); // block index → owner
  /** owner → the first block it was given or marked with (what allocate answers it again). */
  private readonly firstOf = new Map<string, bigint>();
  /** Every block below this index is used: allocate searches from here (one step per node, not a scan of the pool). */
  private lowestFree = 0n;
  private readonly size: bigint;

  constructor(pool: string, readonly maskSize: number) {
    const p = parsePrefix(pool);
    if (!p) throw new Error(`pod CIDR pool: "${pool}" is not an IP prefix`);
    if (maskSize < p.bits || maskSize > familyBits(p.family)) {
      throw new Error(`pod CIDR pool: node mask size ${maskSize} must be between ${p.bits} and ${familyBits(p.family)} for ${pool}`);
    }
    this.pool = p;
    this.size = 1n << BigInt(maskSize - p.bits);
  }

  private indexOf(cidr: string): bigint | undefined {
    const p = parsePrefix(cidr);
    if (!p || p.bits !== this.maskSize || !prefixContains(this.pool, p)) return undefined;
    return (p.addr - this.pool.addr) >> BigInt(familyBits(p.family) - this.maskSize);
  }

  private blockAt(i: bigint): string {
    const shift = BigInt(familyBits(this.pool.family) - this.maskSize);
    return formatPrefix(makePrefix(this.pool.family, this.pool.addr + (i << shift), this.maskSize));
  }

  /** Records `cidr` as owned by `owner`; false if it is outside the pool, not a block, or owned by someone else. */
  mark(cidr: string, owner: string): boolean {
    const i = this.indexOf(cidr);
    if (i === undefined) return false;
    const current = this.used.get(i);
    if (current !== undefined && current !== owner) return false;
    this.used.set(i, owner);
    if (!this.firstOf.has(owner)) this.firstOf.set(owner, i);
    return true;
  }

  /** The lowest free block for `owner` (or the block it already has); undefined when the pool is exhausted. */
  allocate(owner: string): string | undefined {
    const held = this.firstOf.get(owner);
    if (held !== undefined) return this.blockAt(held);
    for (let i = this.lowestFree; i < this.size; i++) {
      if (!this.used.has(i)) {
        this.used.set(i, owner);
        this.firstOf.set(owner, i);
        this.lowestFree = i + 1n;
        return this.blockAt(i);
      }
    }
    this.lowestFree = this.size;
    return undefined;
  }

  /** Frees every block `owner` holds. */
  release(owner: string): void {
    if (!this.firstOf.delete(owner)) return;
    for (const [i, o] of [...this.used]) {
      if (o !== owner) continue;
      this.used.delete(i);
      if (i < this.lowestFree) this.lowestFree = i;
    }
  }

  ownerOf(cidr: string): string | undefined {
    const i = this.indexOf(cidr);
    return i === undefined ? undefined : this.used.get(i);
  }
}
