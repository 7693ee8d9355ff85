// DNS names off the wire exactly as dns-packet's decoder reads them, without its native string call per label when the name is uncompressed ASCII (a question almost always is); anything else is the library's to read.
import dnsPacket from "dns-packet";

/** dns-packet's name decoder, which reports the bytes it read in `decode.bytes` (exported by the library, left out of its type declarations). */
const wireName = (dnsPacket as unknown as { readonly name: { readonly decode: ((buf: Buffer, offset: number) => string) & { readonly bytes: number } } }).name;

/** The library's limit: a name's labels and their length bytes. */
const MAX_NAME_BYTES = 254;
const DOT = 46;
/** The name's characters, reused from call to call. */
const chars: number[] = [];

/**
 * The name at `offset` in `buf`, as dns-packet decodes it there (labels joined by dots, "." for the
 * root), throwing its errors; `readName.bytes` is then the bytes it takes at `offset`.
 */
export const readName = Object.assign(
  (buf: Buffer, offset: number): string => {
    chars.length = 0;
    let at = offset;
    let total = 0;
    for (;;) {
      if (at >= buf.length) return byLibrary(buf, offset);
      const len = buf[at]!;
      if (len === 0) break;
      // A compression pointer, a bad label, a label past the end or a name too long: the library reads it (or throws).
      if ((len & 0xc0) !== 0 || at + 1 + len > buf.length || (total += len + 1) > MAX_NAME_BYTES) return byLibrary(buf, offset);
      if (chars.length > 0) chars.push(DOT);
      for (let i = at + 1; i <= at + len; i++) {
        const c = buf[i]!;
        // Not ASCII: UTF-8 decoding is the library's.
        if (c >= 0x80) return byLibrary(buf, offset);
        chars.push(c);
      }
      at += len + 1;
    }
    readName.bytes = at + 1 - offset;
    return chars.length === 0 ? "." : String.fromCharCode.apply(null, chars);
  },
  { bytes: 0 },
);

function byLibrary(buf: Buffer, offset: number): string {
  const name = wireName.decode(buf, offset);
  readName.bytes = wireName.decode.bytes;
  return name;
}
