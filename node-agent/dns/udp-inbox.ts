// The DNS proxy's incoming UDP datagrams: Node's dgram delivers the first of a wake-up, and the rest the socket holds are read with recvmmsg(2) on its fd through the FFI — Node allocates 64 KiB, a Buffer and an address object for each datagram and calls into JavaScript per datagram.
import type dgram from "node:dgram";
import { getSystemErrorName } from "node:util";
import koffi from "koffi";
import { AF_INET, MMSGHDR_BYTES, MSG_DONTWAIT, SOCKADDR_BYTES, libc, mmsgArrays, udpSocketFd, type Fn, type MmsgArrays } from "./udp-outbox.ts";

const recvmmsgFn = libc.func("int recvmmsg(int fd, void *msgvec, unsigned int vlen, int flags, void *timeout)") as Fn;

/** Datagrams per recvmmsg call. */
const SLOTS = 32;
/** Room for the largest UDP datagram, so none is ever cut (the pages a slot does not use are never touched). */
const SLOT_BYTES = 65536;
// struct msghdr: msg_namelen at 8, msg_flags at 48; struct mmsghdr's msg_len at 56.
const NAMELEN_AT = 8;
const FLAGS_AT = 48;
const LEN_AT = 56;
const MSG_TRUNC = 0x20;
const EAGAIN = 11;

/**
 * Gets each datagram: its bytes (the receiver's own), who sent it, and the read it came in (a number
 * no other read of this inbox has): every datagram of one read was in the socket's queue when the
 * read returned, so whatever the receiver looked up after that for one of them holds for the others.
 */
export type Receiver = (msg: Buffer, address: string, port: number, read: number) => void;

/** IPv4 peers' addresses as Node writes them, by their 32-bit value (a proxy hears from few pods and servers; cleared past this). */
const IPV4_NAMES_MAX = 4096;
const ipv4Names = new Map<number, string>();

function ipv4Name(value: number): string {
  let name = ipv4Names.get(value);
  if (name === undefined) {
    name = `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
    if (ipv4Names.size >= IPV4_NAMES_MAX) ipv4Names.clear();
    ipv4Names.set(value, name);
  }
  return name;
}

/**
 * Reads a socket's datagrams: Node's "message" event wakes the reader, and after the datagram Node
 * delivered, everything else the socket holds is read with recvmmsg, SLOTS at a time, until it is
 * empty. IPv6 sockets and sockets without an fd are read by Node alone. A receive error other than
 * "nothing left" (a connected socket's pending ICMP error) becomes the socket's "error" event, as
 * Node reports it.
 */
export class UdpInbox {
  private arena: MmsgArrays | undefined;
  /** Datagrams Node delivered, datagrams read by recvmmsg, and recvmmsg calls (for tests and benches). */
  readonly stats = { byNode: 0, drained: 0, calls: 0 };
  private reads = 0;

  /** Calls `receive` with every datagram `sock` gets from now on; the socket must be bound. */
  attach(sock: dgram.Socket, receive: Receiver): void {
    const drains = sock.address().family === "IPv4";
    sock.on("message", (msg, rinfo) => {
      this.stats.byNode++;
      receive(msg, rinfo.address, rinfo.port, ++this.reads);
      if (drains) this.drain(sock, receive);
    });
  }

  private drain(sock: dgram.Socket, receive: Receiver): void {
    const arena = (this.arena ??= mmsgArrays(SLOTS, SLOT_BYTES));
    for (;;) {
      // Closed meanwhile (by a receiver): its fd number may already be another file's.
      const fd = udpSocketFd(sock);
      if (fd === undefined) return;
      for (let i = 0; i < SLOTS; i++) arena.headers.writeUInt32LE(SOCKADDR_BYTES, i * MMSGHDR_BYTES + NAMELEN_AT);
      const got = recvmmsgFn(fd, arena.headers, SLOTS, MSG_DONTWAIT, null) as number;
      this.stats.calls++;
      const read = ++this.reads;
      if (got < 0) {
        const errno = koffi.errno();
        if (errno !== EAGAIN) sock.emit("error", receiveError(errno));
        return;
      }
      for (let i = 0; i < got; i++) {
        const h = i * MMSGHDR_BYTES;
        // Cannot happen with slots of 64 KiB; a cut datagram is never passed on as if whole.
        if ((arena.headers.readInt32LE(h + FLAGS_AT) & MSG_TRUNC) !== 0) continue;
        const n = i * SOCKADDR_BYTES;
        if (arena.names.readUInt16LE(n) !== AF_INET) continue;
        const len = arena.headers.readUInt32LE(h + LEN_AT);
        // The receiver's own copy (from Node's pool): the slot is read into again by the next call.
        const msg = Buffer.allocUnsafe(len);
        arena.data.copy(msg, 0, i * SLOT_BYTES, i * SLOT_BYTES + len);
        this.stats.drained++;
        receive(msg, ipv4Name(arena.names.readUInt32BE(n + 4)), arena.names.readUInt16BE(n + 2), read);
      }
      if (got < SLOTS) return;
    }
  }
}

/** A receive error as Node's dgram reports one ("recvmsg ECONNREFUSED", with code, errno and syscall). */
function receiveError(errno: number): NodeJS.ErrnoException {
  const code = getSystemErrorName(-errno);
  return Object.assign(new Error(`recvmmsg ${code}`), { code, errno: -errno, syscall: "recvmmsg" });
}
