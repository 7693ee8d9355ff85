// Crafted Ethernet frames (IPv4/IPv6 with TCP/UDP) for BPF_PROG_TEST_RUN tests.
import { PROTO_NUMBER } from "../../core/model.ts";
import { parseAddress } from "./layout.ts";

export interface FrameSpec {
  readonly src: string;
  readonly dst: string;
  readonly proto: number; // PROTO_NUMBER.TCP / UDP / ...
  readonly sport: number; // ICMP/ICMPv6: the echo identifier
  readonly dport: number; // ICMP/ICMPv6: the type
  readonly icmpCode?: number; // ICMP/ICMPv6: the code (default 0)
  readonly tcpFlags?: number; // default SYN
}

export const TCP_SYN = 0x02;
export const TCP_ACK = 0x10;

export function frame(s: FrameSpec): Buffer {
  const src = parseAddress(s.src);
  const dst = parseAddress(s.dst);
  if (src.family !== dst.family) throw new RangeError("source and destination families differ");
  const l4 = s.proto === PROTO_NUMBER.TCP ? Buffer.alloc(20) : Buffer.alloc(8);
  if (s.proto === PROTO_NUMBER.ICMP || s.proto === PROTO_NUMBER.ICMPv6) {
    l4.writeUInt8(s.dport, 0);
    l4.writeUInt8(s.icmpCode ?? 0, 1);
    l4.writeUInt16BE(s.sport, 4);
  } else {
    l4.writeUInt16BE(s.sport, 0);
    l4.writeUInt16BE(s.dport, 2);
  }
  if (s.proto === PROTO_NUMBER.TCP) {
    l4.writeUInt8(5 << 4, 12);
    l4.writeUInt8(s.tcpFlags ?? TCP_SYN, 13);
    l4.writeUInt16BE(65535, 14);
  } else if (s.proto === PROTO_NUMBER.UDP) {
    l4.writeUInt16BE(8, 4);
  }
  const eth = Buffer.alloc(14);
  Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]).copy(eth);
  let ip: Buffer;
  if (src.family === 4) {
    eth.writeUInt16BE(0x0800, 12);
    ip = Buffer.alloc(20);
    ip.writeUInt8(0x45, 0);
    ip.writeUInt16BE(20 + l4.length, 2);
    ip.writeUInt8(64, 8);
    ip.writeUInt8(s.proto, 9);
    src.bytes.copy(ip, 12, 0, 4);
    dst.bytes.copy(ip, 16, 0, 4);
  } else {
    eth.writeUInt16BE(0x86dd, 12);
    ip = Buffer.alloc(40);
    ip.writeUInt32BE(0x60000000, 0);
    ip.writeUInt16BE(l4.length, 4);
    ip.writeUInt8(s.proto, 6);
    ip.writeUInt8(64, 7);
    src.bytes.copy(ip, 8);
    dst.bytes.copy(ip, 24);
  }
  const f = Buffer.concat([eth, ip, l4]);
  return f.length < 60 ? Buffer.concat([f, Buffer.alloc(60 - f.length)]) : f;
}
