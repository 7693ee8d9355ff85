// The cluster pod CIDR pool: carves a pool prefix into equal per-node blocks, never handing out one
// twice. Blocks recorded in existing CiliumNodes are marked first (the API is the truth).
import { type Prefix, familyBits, formatPrefix, makePrefix, parsePrefix, prefixContains } from "../core/cidr.ts";

export class PodCIDRPool {
  readonly pool: Prefix;
  private readonly used = new Map<bigint, string>(); // block index → owner
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
    return true;
  }

  /** The lowest free block for `owner` (or the block it already has); undefined when the pool is exhausted. */
  allocate(owner: string): string | undefined {
    for (const [i, o] of this.used) if (o === owner) return this.blockAt(i);
    for (let i = 0n; i < this.size; i++) {
      if (!this.used.has(i)) {
        this.used.set(i, owner);
        return this.blockAt(i);
      }
    }
    return undefined;
  }

  /** Frees every block `owner` holds. */
  release(owner: string): void {
    for (const [i, o] of [...this.used]) if (o === owner) this.used.delete(i);
  }

  ownerOf(cidr: string): string | undefined {
    const i = this.indexOf(cidr);
    return i === undefined ? undefined : this.used.get(i);
  }
}
