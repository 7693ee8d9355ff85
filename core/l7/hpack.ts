// HPACK (RFC 7541) for the L7 proxy's HTTP/2 relay: a decoder that keeps one peer's dynamic table, and an encoder that never touches one (static indexes and literals without indexing), so a block it makes leaves the receiver's table as it was.

/** A header block is malformed or refers to what the table does not hold: a connection error (COMPRESSION_ERROR). */
export class HpackError extends Error {}

/** RFC 7541 Appendix A: index 1 is the first entry. */
// prettier-ignore
const STATIC_TABLE: readonly (readonly [string, string])[] = [[":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"], [":path", "/index.html"], [":scheme", "http"], [":scheme", "https"], [":status", "200"], [":status", "204"], [":status", "206"], [":status", "304"], [":status", "400"], [":status", "404"], [":status", "500"], ["accept-charset", ""], ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""], ["accept", ""], ["access-control-allow-origin", ""], ["age", ""], ["allow", ""], ["authorization", ""], ["cache-control", ""], ["content-disposition", ""], ["content-encoding", ""], ["content-language", ""], ["content-length", ""], ["content-location", ""], ["content-range", ""], ["content-type", ""], ["cookie", ""], ["date", ""], ["etag", ""], ["expect", ""], ["expires", ""], ["from", ""], ["host", ""], ["if-match", ""], ["if-modified-since", ""], ["if-none-match", ""], ["if-range", ""], ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""], ["location", ""], ["max-forwards", ""], ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""], ["referer", ""], ["refresh", ""], ["retry-after", ""], ["server", ""], ["set-cookie", ""], ["strict-transport-security", ""], ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""], ["via", ""], ["www-authenticate", ""]];

/** RFC 7541 Appendix B: each symbol's code (left-aligned in `length` bits); symbol 256 is EOS. */
// prettier-ignore
const HUFFMAN_CODES = [0x1ff8,0x7fffd8,0xfffffe2,0xfffffe3,0xfffffe4,0xfffffe5,0xfffffe6,0xfffffe7,0xfffffe8,0xffffea,0x3ffffffc,0xfffffe9,0xfffffea,0x3ffffffd,0xfffffeb,0xfffffec,0xfffffed,0xfffffee,0xfffffef,0xffffff0,0xffffff1,0xffffff2,0x3ffffffe,0xffffff3,0xffffff4,0xffffff5,0xffffff6,0xffffff7,0xffffff8,0xffffff9,0xffffffa,0xffffffb,0x14,0x3f8,0x3f9,0xffa,0x1ff9,0x15,0xf8,0x7fa,0x3fa,0x3fb,0xf9,0x7fb,0xfa,0x16,0x17,0x18,0x0,0x1,0x2,0x19,0x1a,0x1b,0x1c,0x1d,0x1e,0x1f,0x5c,0xfb,0x7ffc,0x20,0xffb,0x3fc,0x1ffa,0x21,0x5d,0x5e,0x5f,0x60,0x61,0x62,0x63,0x64,0x65,0x66,0x67,0x68,0x69,0x6a,0x6b,0x6c,0x6d,0x6e,0x6f,0x70,0x71,0x72,0xfc,0x73,0xfd,0x1ffb,0x7fff0,0x1ffc,0x3ffc,0x22,0x7ffd,0x3,0x23,0x4,0x24,0x5,0x25,0x26,0x27,0x6,0x74,0x75,0x28,0x29,0x2a,0x7,0x2b,0x76,0x2c,0x8,0x9,0x2d,0x77,0x78,0x79,0x7a,0x7b,0x7ffe,0x7fc,0x3ffd,0x1ffd,0xffffffc,0xfffe6,0x3fffd2,0xfffe7,0xfffe8,0x3fffd3,0x3fffd4,0x3fffd5,0x7fffd9,0x3fffd6,0x7fffda,0x7fffdb,0x7fffdc,0x7fffdd,0x7fffde,0xffffeb,0x7fffdf,0xffffec,0xffffed,0x3fffd7,0x7fffe0,0xffffee,0x7fffe1,0x7fffe2,0x7fffe3,0x7fffe4,0x1fffdc,0x3fffd8,0x7fffe5,0x3fffd9,0x7fffe6,0x7fffe7,0xffffef,0x3fffda,0x1fffdd,0xfffe9,0x3fffdb,0x3fffdc,0x7fffe8,0x7fffe9,0x1fffde,0x7fffea,0x3fffdd,0x3fffde,0xfffff0,0x1fffdf,0x3fffdf,0x7fffeb,0x7fffec,0x1fffe0,0x1fffe1,0x3fffe0,0x1fffe2,0x7fffed,0x3fffe1,0x7fffee,0x7fffef,0xfffea,0x3fffe2,0x3fffe3,0x3fffe4,0x7ffff0,0x3fffe5,0x3fffe6,0x7ffff1,0x3ffffe0,0x3ffffe1,0xfffeb,0x7fff1,0x3fffe7,0x7ffff2,0x3fffe8,0x1ffffec,0x3ffffe2,0x3ffffe3,0x3ffffe4,0x7ffffde,0x7ffffdf,0x3ffffe5,0xfffff1,0x1ffffed,0x7fff2,0x1fffe3,0x3ffffe6,0x7ffffe0,0x7ffffe1,0x3ffffe7,0x7ffffe2,0xfffff2,0x1fffe4,0x1fffe5,0x3ffffe8,0x3ffffe9,0xffffffd,0x7ffffe3,0x7ffffe4,0x7ffffe5,0xfffec,0xfffff3,0xfffed,0x1fffe6,0x3fffe9,0x1fffe7,0x1fffe8,0x7ffff3,0x3fffea,0x3fffeb,0x1ffffee,0x1ffffef,0xfffff4,0xfffff5,0x3ffffea,0x7ffff4,0x3ffffeb,0x7ffffe6,0x3ffffec,0x3ffffed,0x7ffffe7,0x7ffffe8,0x7ffffe9,0x7ffffea,0x7ffffeb,0xffffffe,0x7ffffec,0x7ffffed,0x7ffffee,0x7ffffef,0x7fffff0,0x3ffffee,0x3fffffff];
// prettier-ignore
const HUFFMAN_LENGTHS = [13,23,28,28,28,28,28,28,28,24,30,28,28,30,28,28,28,28,28,28,28,28,30,28,28,28,28,28,28,28,28,28,6,10,10,12,13,6,8,11,10,10,8,11,8,6,6,6,5,5,5,6,6,6,6,6,6,6,7,8,15,6,12,10,13,6,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,8,7,8,13,19,13,14,6,15,5,6,5,6,5,6,6,6,5,7,7,6,6,6,5,6,7,6,5,5,6,7,7,7,7,7,15,11,14,13,28,20,22,20,20,22,22,22,23,22,23,23,23,23,23,24,23,24,24,22,23,24,23,23,23,23,21,22,23,22,23,23,24,22,21,20,22,22,23,23,21,23,22,22,24,21,22,23,23,21,21,22,21,23,22,23,23,20,22,22,22,23,22,22,23,26,26,20,19,22,23,22,25,26,26,26,27,27,26,24,25,19,21,26,27,27,26,27,24,21,21,26,26,28,27,27,27,20,24,20,21,22,21,21,23,22,22,25,25,24,24,26,23,26,27,26,26,27,27,27,27,27,28,27,27,27,27,27,26,30];

/**
 * The Huffman code as a binary tree in one array: node n's children are at 2n (bit 0) and 2n+1 (bit 1); a child
 * holds the next node's number, or -(symbol + 1) for a leaf, or 0 where no code goes (only EOS's tail).
 */
const HUFFMAN_TREE: Int32Array = (() => {
  const tree = new Int32Array(2 * 512);
  let nodes = 1;
  for (let sym = 0; sym < HUFFMAN_CODES.length; sym++) {
    const code = HUFFMAN_CODES[sym]!;
    const len = HUFFMAN_LENGTHS[sym]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const slot = 2 * node + ((code >>> i) & 1);
      if (i === 0) tree[slot] = -(sym + 1);
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot]!;
      }
    }
  }
  return tree;
})();

const EOS = 256;

/** A Huffman-coded string's octets as a latin1 string (one char per octet, as Node's HTTP/2 headers are). */
export function huffmanDecode(buf: Buffer, start: number, end: number): string {
  let out = "";
  let node = 0;
  // Bits read since the last symbol, and whether all of them were 1s: what may be left over is EOS's prefix, < 8 bits.
  let pending = 0;
  let ones = true;
  for (let p = start; p < end; p++) {
    const byte = buf[p]!;
    for (let i = 7; i >= 0; i--) {
      const bit = (byte >>> i) & 1;
      const next = HUFFMAN_TREE[2 * node + bit]!;
      pending++;
      ones &&= bit === 1;
      if (next < 0) {
        const sym = -next - 1;
        if (sym === EOS) throw new HpackError("Huffman string holds EOS");
        out += String.fromCharCode(sym);
        node = 0;
        pending = 0;
        ones = true;
      } else if (next === 0) throw new HpackError("invalid Huffman code");
      else node = next;
    }
  }
  if (pending > 7 || !ones) throw new HpackError("Huffman string has invalid padding");
  return out;
}

/** The decoded header list (name, value, name, value, …, as Node's raw lists) and its size as SETTINGS_MAX_HEADER_LIST_SIZE counts it. */
export interface DecodedBlock {
  readonly raw: string[];
  readonly listSize: number;
}

/** The largest dynamic table a peer may ask for (SETTINGS_HEADER_TABLE_SIZE): bounds the memory one connection's table takes. */
export const MAX_TABLE_SIZE = 65536;

/** SETTINGS_HEADER_TABLE_SIZE until a peer says otherwise (RFC 9113 §6.5.2). */
export const DEFAULT_TABLE_SIZE = 4096;

/**
 * One direction's HPACK decoding state: the dynamic table the peer's encoder fills. Every header block of that
 * direction must go through it, in order, or the table goes out of step with the encoder's.
 */
export class HpackDecoder {
  /** The dynamic table, oldest first (so HPACK's index 62 is the last entry). */
  private readonly names: string[] = [];
  private readonly values: string[] = [];
  private size = 0;

  constructor(
    private maxSize = DEFAULT_TABLE_SIZE,
    /** What the receiver's SETTINGS_HEADER_TABLE_SIZE allows a size update to ask for. */
    public limit = MAX_TABLE_SIZE,
  ) {}

  /** The table's size limit now (the last size update's, or the initial 4,096). */
  get tableSize(): number {
    return this.maxSize;
  }

  /** A size update the peer's decoder applies with a block that is not decoded here (one the proxy made itself). */
  resize(size: number): void {
    this.maxSize = size;
    this.evict(0);
  }

  decode(buf: Buffer): DecodedBlock {
    const raw: string[] = [];
    let listSize = 0;
    let p = 0;
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let v = buf[p++]! & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (p >= buf.length) throw new HpackError("truncated integer");
        const b = buf[p++]!;
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) return v;
        if (shift > 28) throw new HpackError("integer too large");
      }
    };
    const str = (): string => {
      if (p >= buf.length) throw new HpackError("truncated string");
      const huffman = (buf[p]! & 0x80) !== 0;
      const len = int(7);
      const end = p + len;
      if (end > buf.length) throw new HpackError("truncated string");
      const s = huffman ? huffmanDecode(buf, p, end) : buf.toString("latin1", p, end);
      p = end;
      return s;
    };
    let sawHeader = false;
    while (p < buf.length) {
      const b = buf[p]!;
      let name: string;
      let value: string;
      if (b & 0x80) {
        // Indexed field.
        [name, value] = this.entry(int(7));
      } else if ((b & 0xe0) === 0x20) {
        // Dynamic table size update: only before the block's first field.
        if (sawHeader) throw new HpackError("table size update after a field");
        const size = int(5);
        if (size > this.limit)
          throw new HpackError(`table size update to ${size} over the limit ${this.limit}`);
        this.maxSize = size;
        this.evict(0);
        continue;
      } else {
        // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
        const incremental = (b & 0xc0) === 0x40;
        const index = int(incremental ? 6 : 4);
        name = index === 0 ? str() : this.entry(index)[0];
        value = str();
        if (incremental) this.add(name, value);
      }
      sawHeader = true;
      raw.push(name, value);
      listSize += name.length + value.length + 32;
    }
    return { raw, listSize };
  }

  private entry(index: number): readonly [string, string] {
    if (index === 0) throw new HpackError("index 0");
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
    const i = this.names.length - (index - STATIC_TABLE.length);
    if (i < 0) throw new HpackError(`index ${index} beyond the table`);
    return [this.names[i]!, this.values[i]!];
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + 32;
    // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
    this.evict(size);
    if (size > this.maxSize) return;
    this.names.push(name);
    this.values.push(value);
    this.size += size;
  }

  /** Evicts the oldest entries until `room` more octets fit. */
  private evict(room: number): void {
    let drop = 0;
    while (this.size + room > this.maxSize && drop < this.names.length) {
      this.size -= this.names[drop]!.length + this.values[drop]!.length + 32;
      drop++;
    }
    if (drop > 0) {
      this.names.splice(0, drop);
      this.values.splice(0, drop);
    }
  }
}

const STATIC_FIELD = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  STATIC_FIELD.set(`${name}\0${value}`, i + 1);
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

/**
 * A header block for `raw` (name, value, …; names lowercase) that leaves the receiver's dynamic table untouched:
 * a field in the static table by its index, any other as a literal without indexing (its name by static index where
 * there is one), strings as octets (latin1), not Huffman-coded; `sizeUpdate` first when given.
 */
export function encodeBlock(raw: readonly string[], sizeUpdate?: number): Buffer {
  let bytes = 6;
  for (let i = 0; i < raw.length; i++) bytes += raw[i]!.length + 6;
  const out = Buffer.allocUnsafe(bytes);
  let p = 0;
  const int = (prefix: number, prefixBits: number, v: number): void => {
    const mask = (1 << prefixBits) - 1;
    if (v < mask) {
      out[p++] = prefix | v;
      return;
    }
    out[p++] = prefix | mask;
    v -= mask;
    while (v >= 0x80) {
      out[p++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[p++] = v;
  };
  const str = (s: string): void => {
    int(0, 7, s.length);
    p += out.write(s, p, "latin1");
  };
  // A dynamic table size update first when asked (RFC 7541 §6.3): it changes the table's limit, not its entries' meaning.
  if (sizeUpdate !== undefined) int(0x20, 5, sizeUpdate);
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const both = STATIC_FIELD.get(`${name}\0${value}`);
    if (both !== undefined) {
      int(0x80, 7, both);
      continue;
    }
    const nameIndex = STATIC_NAME.get(name);
    if (nameIndex !== undefined) int(0, 4, nameIndex);
    else {
      out[p++] = 0;
      str(name);
    }
    str(value);
  }
  return out.subarray(0, p);
}
