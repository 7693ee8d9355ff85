// The proxy's upstream socket carries the client's identity in its mark (SO_MARK set before connect, through the FFI: Node's net cannot).
import net from "node:net";
import koffi from "koffi";
import { CONST } from "../bpf/layout.ts";

const libc = koffi.load("libc.so.6");
/* eslint-disable @typescript-eslint/no-explicit-any -- koffi's function handles are untyped at the FFI boundary */
type Fn = (...args: any[]) => any;
/* eslint-enable @typescript-eslint/no-explicit-any */
const socketFn = libc.func("int socket(int domain, int type, int protocol)") as Fn;
const setsockoptFn = libc.func("int setsockopt(int fd, int level, int name, _In_ uint32_t *val, uint32_t len)") as Fn;
const closeFn = libc.func("int close(int fd)") as Fn;
const errnoFn = libc.func("int *__errno_location()") as Fn;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_MARK = 36;
/** The identity part of a mark (bpf/lib/layout.h MARK_IDENTITY_MASK). */
const IDENTITY_MASK = 0x00ffffff;

/**
 * The mark that makes the datapath's to-container program take `identity` as the connection's source
 * (as for the overlay); with `ingressApplied`, also that the destination's ingress HTTP rules were
 * applied (else an ingress entry naming a served proxy port drops the connection).
 */
export function identityMark(identity: number, ingressApplied = false): number {
  if (!Number.isInteger(identity) || identity <= 0 || identity > IDENTITY_MASK) throw new RangeError(`identity ${identity} does not fit a mark`);
  return ((ingressApplied ? CONST.MARK_MAGIC_PROXY_INGRESS : CONST.MARK_MAGIC_IDENTITY) | identity) >>> 0;
}

function errno(): number {
  return koffi.decode(errnoFn(), "int") as number;
}

/**
 * A TCP socket to ip:port whose every packet, the SYN included, carries `mark`, from `localAddress` when given
 * (else the kernel's choice). The socket is made and marked through libc, then handed to Node
 * (`net.Socket({fd})`) which binds and connects it. Needs CAP_NET_ADMIN (SO_MARK); fails with the errno
 * otherwise — never an unmarked connection.
 */
export function connectMarked(ip: string, port: number, mark: number, localAddress?: string): net.Socket {
  const fd = socketFn(net.isIPv6(ip) ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`socket(): errno ${errno()}`);
  if ((setsockoptFn(fd, SOL_SOCKET, SO_MARK, [mark >>> 0], 4) as number) < 0) {
    const e = errno();
    closeFn(fd);
    throw new Error(`setsockopt(SO_MARK): errno ${e}${e === 1 ? " (EPERM: the proxy needs CAP_NET_ADMIN)" : ""}`);
  }
  const s = new net.Socket({ fd, readable: true, writable: true });
  // A request head or a small body chunk leaves at once, not after the previous segment's ACK (Nagle).
  s.setNoDelay(true);
  s.connect({ port, host: ip, ...(localAddress !== undefined ? { localAddress } : {}) });
  return s;
}
