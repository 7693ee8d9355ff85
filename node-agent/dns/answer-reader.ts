// What the DNS proxy reads of a server's answer: its rcode and the answer section's A, AAAA and CNAME records (what learning and flows use), decoded with dns-packet's own record codecs; other records and sections are skipped by their lengths, not decoded.
import dnsPacket from "dns-packet";
import type { AnswerRecord } from "../../core/dns/answers.ts";
import { readName } from "./wire-name.ts";

/** A decoder of dns-packet that reports the bytes it read in `decode.bytes` (exported by the library, left out of its type declarations). */
interface WireCodec<T> {
  readonly decode: ((buf: Buffer, offset: number) => T) & { readonly bytes: number };
}
const wire = dnsPacket as unknown as { readonly a: WireCodec<string>; readonly aaaa: WireCodec<string>; readonly ptr: WireCodec<string> };

const HEADER_BYTES = 12;
/** A compression pointer (two top bits set) to the first question's name, right after the header. */
const POINTER_TO_QUESTION = 0xc000 | HEADER_BYTES;
const TYPE = { A: 1, CNAME: 5, AAAA: 28 } as const;
/** RFC 1035/2136/6895 response codes by number (as dns-packet names them). */
const RCODES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"];

export interface AnswerSummary {
  readonly rcode: string;
  /** The answer section's A, AAAA and CNAME records, in order. */
  readonly records: AnswerRecord[];
}

/** Reads an answer; throws a RangeError naming what is wrong when the header, the question or an answer record runs past the end or is malformed. */
export function readAnswer(buf: Buffer): AnswerSummary {
  if (buf.length < HEADER_BYTES) throw new RangeError(`${buf.length} bytes, shorter than a DNS header`);
  const rcodeNumber = buf.readUInt16BE(2) & 0xf;
  const questions = buf.readUInt16BE(4);
  const answers = buf.readUInt16BE(6);
  let offset = HEADER_BYTES;
  // The first question's name, where it lies: an answer record named by a pointer to it (the usual
  // compression) has that name, so it is decoded once, not again per record.
  let questionName = "";
  for (let i = 0; i < questions; i++) {
    const name = readName(buf, offset);
    if (i === 0) questionName = name;
    offset += readName.bytes + 4; // QTYPE, QCLASS
    if (offset > buf.length) throw new RangeError(`question ${i} runs past the end`);
  }
  const records: AnswerRecord[] = [];
  for (let i = 0; i < answers; i++) {
    let name: string;
    if (questions > 0 && offset + 2 <= buf.length && buf.readUInt16BE(offset) === POINTER_TO_QUESTION) {
      name = questionName;
      offset += 2;
    } else {
      name = readName(buf, offset);
      offset += readName.bytes;
    }
    if (offset + 10 > buf.length) throw new RangeError(`answer ${i} runs past the end`);
    const type = buf.readUInt16BE(offset);
    const ttl = buf.readUInt32BE(offset + 4);
    const length = buf.readUInt16BE(offset + 8);
    if (offset + 10 + length > buf.length) throw new RangeError(`answer ${i}'s data runs past the end`);
    if (type === TYPE.A || type === TYPE.AAAA) {
      const want = type === TYPE.A ? 4 : 16;
      if (length !== want) throw new RangeError(`answer ${i}: ${type === TYPE.A ? "A" : "AAAA"} data of ${length} bytes, not ${want}`);
      records.push({ name, type: type === TYPE.A ? "A" : "AAAA", ttl, data: (type === TYPE.A ? wire.a : wire.aaaa).decode(buf, offset + 8) });
    } else if (type === TYPE.CNAME) {
      records.push({ name, type: "CNAME", ttl, data: wire.ptr.decode(buf, offset + 8) });
    }
    offset += 10 + length;
  }
  return { rcode: RCODES[rcodeNumber] ?? `RCODE_${rcodeNumber}`, records };
}
