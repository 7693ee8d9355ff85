// The DNS proxy's outgoing UDP datagrams, a lone one at once and those of a busy event-loop turn together, sent per socket with sendmmsg(2) on its fd through the FFI: Node's dgram has no batch send and spends ~1 µs of its own on each datagram.
import type dgram from "node:dgram";
import net from "node:net";
import koffi from "koffi";

export const libc = koffi.load("libc.so.6");
/* eslint-disable @typescript-eslint/no-explicit-any -- koffi's function handles are untyped at the FFI boundary */
export type Fn = (...args: any[]) => any;
/* eslint-enable @typescript-eslint/no-explicit-any */
const sendmmsgFn = libc.func("int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)") as Fn;

/** Datagrams per sendmmsg call, and the largest one that goes through the batch (a bigger one is Node's to send). */
const SLOTS = 64;
const SLOT_BYTES = 4096;
// x86-64 / aarch64 Linux: struct mmsghdr (msghdr 56 + msg_len 4, padded), struct iovec, room for a sockaddr_in6.
export const MMSGHDR_BYTES = 64;
export const IOVEC_BYTES = 16;
export const SOCKADDR_BYTES = 28;
export const AF_INET = 2;
const AF_INET6 = 10;
export const MSG_DONTWAIT = 0x40;

interface Datagram {
  readonly msg: Buffer;
  /** Absent on a connected socket. */
  readonly port?: number;
  readonly address?: string;
}

/** The native arrays of one sendmmsg or recvmmsg call. */
export interface MmsgArrays {
  readonly data: Buffer;
  readonly headers: Buffer;
  readonly iovecs: Buffer;
  readonly names: Buffer;
}

/**
 * Makes the arrays once: `slots` headers, each pointing at its own sockaddr and iovec, each iovec at
 * its slot of `slotBytes` in `data` (its length the slot's). Off the V8 heap (never moved), so the
 * addresses written into the headers stay valid.
 */
export function mmsgArrays(slots: number, slotBytes: number): MmsgArrays {
  const a = {
    data: Buffer.allocUnsafeSlow(slots * slotBytes),
    headers: Buffer.allocUnsafeSlow(slots * MMSGHDR_BYTES).fill(0),
    iovecs: Buffer.allocUnsafeSlow(slots * IOVEC_BYTES).fill(0),
    names: Buffer.allocUnsafeSlow(slots * SOCKADDR_BYTES).fill(0),
  };
  const data = BigInt(koffi.address(a.data) as bigint);
  const iovecs = BigInt(koffi.address(a.iovecs) as bigint);
  const names = BigInt(koffi.address(a.names) as bigint);
  for (let i = 0; i < slots; i++) {
    a.iovecs.writeBigUInt64LE(data + BigInt(i * slotBytes), i * IOVEC_BYTES);
    a.iovecs.writeBigUInt64LE(BigInt(slotBytes), i * IOVEC_BYTES + 8);
    const h = i * MMSGHDR_BYTES;
    a.headers.writeBigUInt64LE(names + BigInt(i * SOCKADDR_BYTES), h); // msg_name
    a.headers.writeBigUInt64LE(iovecs + BigInt(i * IOVEC_BYTES), h + 16); // msg_iov
    a.headers.writeBigUInt64LE(1n, h + 24); // msg_iovlen
  }
  return a;
}

/** The arrays one sendmmsg call reads, and each datagram written into its slot. */
class Arena {
  private readonly arrays = mmsgArrays(SLOTS, SLOT_BYTES);
  readonly headers = this.arrays.headers;
  private readonly data = this.arrays.data;
  private readonly iovecs = this.arrays.iovecs;
  private readonly names = this.arrays.names;

  /** Puts a datagram in slot i; false when its address cannot be written (the caller lets Node send it). */
  fill(i: number, d: Datagram): boolean {
    let nameLen = 0;
    if (d.address !== undefined && d.port !== undefined) {
      nameLen = writeSockaddr(this.names, i * SOCKADDR_BYTES, d.address, d.port);
      if (nameLen === 0) return false;
    }
    // msg_namelen 0: the kernel ignores msg_name and sends to the connected peer.
    this.headers.writeUInt32LE(nameLen, i * MMSGHDR_BYTES + 8);
    d.msg.copy(this.data, i * SLOT_BYTES);
    this.iovecs.writeUInt32LE(d.msg.length, i * IOVEC_BYTES + 8);
    return true;
  }
}

/** Parsed addresses as sockaddr bytes (a proxy talks to few pods and servers; the cache is cleared when it grows past this). */
const SOCKADDR_CACHE_MAX = 4096;
const sockaddrs = new Map<string, Buffer>();

/** Writes address:port's sockaddr at `at`; returns its length (16 or 28), 0 when the address cannot be written. */
function writeSockaddr(out: Buffer, at: number, address: string, port: number): number {
  let sa = sockaddrs.get(address);
  if (!sa) {
    sa = sockaddrOf(address);
    if (!sa) return 0;
    if (sockaddrs.size >= SOCKADDR_CACHE_MAX) sockaddrs.clear();
    sockaddrs.set(address, sa);
  }
  sa.copy(out, at);
  out.writeUInt16BE(port, at + 2);
  return sa.readUInt16LE(0) === AF_INET ? 16 : 28;
}

/** sockaddr_in or sockaddr_in6 (port 0) of an address; undefined when it is neither (a zone id, a name). */
export function sockaddrOf(address: string): Buffer | undefined {
  const sa = Buffer.alloc(SOCKADDR_BYTES);
  if (net.isIPv4(address)) {
    sa.writeUInt16LE(AF_INET, 0);
    const parts = address.split(".");
    for (let i = 0; i < 4; i++) sa[4 + i] = Number(parts[i]);
    return sa;
  }
  if (!net.isIPv6(address) || address.includes("%")) return undefined;
  sa.writeUInt16LE(AF_INET6, 0);
  // Expand "::" into the missing groups; an embedded IPv4 tail (::ffff:1.2.3.4) becomes its two groups.
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = v4[1]!.split(".").map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? left : [...left, ...new Array<string>(8 - left.length - right.length).fill("0"), ...right];
  if (groups.length !== 8) return undefined;
  for (let i = 0; i < 8; i++) sa.writeUInt16BE(parseInt(groups[i]!, 16), 8 + i * 2);
  return sa;
}

/** Node's handle of a dgram socket, where its fd is (not public API: found once, and Node's own send serves when it is missing). */
let stateKey: symbol | undefined;
export function udpSocketFd(sock: dgram.Socket): number | undefined {
  stateKey ??= Object.getOwnPropertySymbols(sock).find((s) => s.description === "state symbol");
  if (!stateKey) return undefined;
  const fd = (sock as unknown as Record<symbol, { handle?: { fd?: unknown } } | undefined>)[stateKey]?.handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/**
 * The datagrams of one turn of the event loop (a burst of queries read together, the answers that
 * came back together) leave at its end, one sendmmsg per socket; but the first datagram of a turn
 * leaves at once when the turn before sent at most one: at a low rate there is nothing to batch
 * with, and waiting for the turn's end would only add latency. A turn that sent more (a backlog)
 * makes the next one batch from its first datagram. A datagram the batch cannot take (larger than
 * a slot, an address it cannot write, a socket without an fd) and every datagram from the first
 * one the kernel refused on are sent by Node's dgram instead, which reports a failure as the
 * socket's "error" event as before.
 */
export class UdpOutbox {
  private readonly queued = new Map<dgram.Socket, Datagram[]>();
  /** From the first datagram of a turn until the turn's end (a setImmediate): datagrams meanwhile wait for it. */
  private turnOpen = false;
  private sentThisTurn = 0;
  private sentLastTurn = 0;
  private arena: Arena | undefined;
  /** Datagrams sent through sendmmsg, sendmmsg calls, datagrams Node sent, and datagrams sent at once without waiting for the turn's end (for tests and benches). */
  readonly stats = { batched: 0, calls: 0, byNode: 0, atOnce: 0 };

  /** Sends a datagram to address:port, or to the connected peer when both are absent: now, or at the turn's end. */
  send(sock: dgram.Socket, msg: Buffer, port?: number, address?: string): void {
    const d: Datagram = port === undefined ? { msg } : { msg, port, ...(address !== undefined ? { address } : {}) };
    this.sentThisTurn++;
    if (!this.turnOpen) {
      this.turnOpen = true;
      setImmediate(this.endTurn);
      if (this.sentLastTurn <= 1) {
        this.stats.atOnce++;
        this.sendAll(sock, [d]);
        return;
      }
    }
    let q = this.queued.get(sock);
    if (!q) this.queued.set(sock, (q = []));
    q.push(d);
  }

  /** Sends everything queued now. */
  flush(): void {
    for (const [sock, q] of this.queued) {
      this.queued.delete(sock);
      this.sendAll(sock, q);
    }
  }

  private readonly endTurn = (): void => {
    this.turnOpen = false;
    this.sentLastTurn = this.sentThisTurn;
    this.sentThisTurn = 0;
    this.flush();
  };

  private sendAll(sock: dgram.Socket, q: readonly Datagram[]): void {
    const fd = udpSocketFd(sock);
    if (fd === undefined) {
      for (const d of q) this.byNode(sock, d);
      return;
    }
    const arena = (this.arena ??= new Arena());
    let i = 0;
    while (i < q.length) {
      let n = 0;
      const batch: Datagram[] = [];
      for (; i < q.length && n < SLOTS; i++) {
        const d = q[i]!;
        if (d.msg.length > SLOT_BYTES || !arena.fill(n, d)) {
          this.byNode(sock, d);
          continue;
        }
        batch.push(d);
        n++;
      }
      if (n === 0) continue;
      const sent = sendmmsgFn(fd, arena.headers, n, MSG_DONTWAIT) as number;
      this.stats.calls++;
      const ok = Math.max(0, sent);
      this.stats.batched += ok;
      // The kernel stopped at datagram `ok` (a full buffer, an ICMP error pending on a connected socket): Node sends the rest and reports what fails.
      for (let k = ok; k < n; k++) this.byNode(sock, batch[k]!);
    }
  }

  private byNode(sock: dgram.Socket, d: Datagram): void {
    this.stats.byNode++;
    try {
      if (d.port === undefined) sock.send(d.msg);
      else sock.send(d.msg, d.port, d.address);
    } catch {
      // The socket was closed meanwhile: nothing to send on.
    }
  }
}
