// DNS load generator run inside the pod netns; prints one JSON line (closed: after a line "measuring" where the measured window
// opens and "measured" where it ends, for the bench's CPU readings).
//   open <server> <port> <rate> <seconds> <name>    queries on a fixed schedule (open loop), the client asleep between them; latency from the
//                                                   scheduled time (p50, p99 and each in µs), and how late queries left (max, p99)
//   closed <server> <port> <concurrency> <seconds> <name>   as fast as answers come (saturation)
import dgram from "node:dgram";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";
import koffi from "koffi";
import { AF_INET, MSG_DONTWAIT, libc, type Fn } from "../../node-agent/dns/udp-outbox.ts";

const [mode, server, portText, a, b, c] = process.argv.slice(2);
const port = Number(portText);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function makeQuery(id: number, name: string): Buffer {
  return dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] });
}

/** The open loop's system calls, by name. */
const sys: Record<"ppoll" | "socket" | "connect" | "send" | "recv" | "close", Fn> = {
  ppoll: libc.func("int ppoll(void *fds, unsigned long nfds, void *timeout, void *sigmask)") as Fn,
  socket: libc.func("int socket(int domain, int type, int protocol)") as Fn,
  connect: libc.func("int connect(int fd, void *addr, unsigned int len)") as Fn,
  send: libc.func("long send(int fd, void *buf, unsigned long len, int flags)") as Fn,
  recv: libc.func("long recv(int fd, void *buf, unsigned long len, int flags)") as Fn,
  close: libc.func("int close(int fd)") as Fn,
};
const SOCK_DGRAM = 2;
const POLLIN = 1;

/** A UDP socket connected to server:port (the answer comes back from there, straight or through the proxy). */
function connectedUdp(server: string, port: number): number {
  const fd = sys.socket(AF_INET, SOCK_DGRAM, 0) as number;
  if (fd < 0) throw new Error(`socket: errno ${koffi.errno()}`);
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(AF_INET, 0);
  addr.writeUInt16BE(port, 2);
  server.split(".").forEach((o, i) => addr.writeUInt8(Number(o), 4 + i));
  if ((sys.connect(fd, addr, addr.length) as number) < 0) throw new Error(`connect: errno ${koffi.errno()}`);
  return fd;
}

/**
 * The open loop drives its socket by hand through the FFI, sleeping in ppoll(2) until the next query is due or an answer
 * comes: it sends on time without keeping a core busy. Node's timers cannot wait less than 1 ms, so the loop it replaced
 * spun on setImmediate at 1,000 queries/s and held one of the machine's two cores the whole time, and the resolver and
 * the proxy waited for the other (issue #15: the proxied path, with three wake-ups to the direct path's one, paid more).
 */
function openLoop(rate: number, seconds: number, name: string): void {
  const fd = connectedUdp(server!, port);
  const query = makeQuery(0, name);
  const answer = Buffer.alloc(4096);
  const pollfd = Buffer.alloc(8);
  pollfd.writeInt32LE(fd, 0);
  const timeout = Buffer.alloc(16);
  const sentAt = new Map<number, number>();
  const lat: number[] = [];
  const lateness: number[] = [];
  const total = Math.round(rate * seconds);
  const start = performance.now() + 50;
  // After the last query, answers are awaited for a second.
  const end = start + (total * 1000) / rate + 1000;
  let i = 0;
  for (;;) {
    let now = performance.now();
    while (i < total && start + (i * 1000) / rate <= now) {
      const at = start + (i * 1000) / rate;
      lateness.push(now - at);
      const id = i & 0xffff;
      sentAt.set(id, at);
      query.writeUInt16BE(id, 0);
      sys.send(fd, query, query.length, 0);
      i++;
      now = performance.now();
    }
    if (now >= end || (i === total && sentAt.size === 0)) break;
    const waitMs = Math.max(0, (i < total ? start + (i * 1000) / rate : end) - now);
    timeout.writeBigInt64LE(BigInt(Math.floor(waitMs / 1000)), 0);
    timeout.writeBigInt64LE(BigInt(Math.floor((waitMs % 1000) * 1e6)), 8);
    pollfd.writeInt16LE(POLLIN, 4);
    pollfd.writeInt16LE(0, 6);
    // Timed out (a query is due) or interrupted: back to sending.
    if ((sys.ppoll(pollfd, 1, timeout, null) as number) <= 0) continue;
    for (;;) {
      const n = sys.recv(fd, answer, answer.length, MSG_DONTWAIT) as number;
      if (n < 2) break;
      const id = answer.readUInt16BE(0);
      const t = sentAt.get(id);
      if (t === undefined) continue;
      sentAt.delete(id);
      lat.push(performance.now() - t);
    }
  }
  sys.close(fd);
  lat.sort((x, y) => x - y);
  lateness.sort((x, y) => x - y);
  // Every latency too (µs): the caller pools its rounds for one p99 over all of them.
  const latUs = lat.map((x) => Math.round(x * 1000));
  console.log(
    JSON.stringify({
      sent: total,
      answered: lat.length,
      p50_ms: percentile(lat, 50),
      p99_ms: percentile(lat, 99),
      max_send_late_ms: lateness[lateness.length - 1] ?? 0,
      send_late_p99_ms: percentile(lateness, 99),
      lat_us: latUs,
    }),
  );
}

async function closedLoop(concurrency: number, seconds: number, name: string): Promise<void> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, r));
  let answered = 0;
  let next = 0;
  const end = performance.now() + seconds * 1000;
  const send = (): void => {
    if (performance.now() >= end) return;
    sock.send(makeQuery(next++ & 0xffff, name), port, server);
  };
  sock.on("message", () => {
    answered++;
    send();
  });
  // A lost datagram would stall its slot: refill every 100 ms up to the concurrency.
  let outstandingFloor = 0;
  const refill = setInterval(() => {
    const inflight = next - answered;
    for (let i = inflight; i < concurrency && outstandingFloor < 10_000; i++, outstandingFloor++) send();
  }, 100);
  console.log("measuring");
  for (let i = 0; i < concurrency; i++) send();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  console.log("measured");
  clearInterval(refill);
  sock.close();
  console.log(JSON.stringify({ answered, qps: answered / seconds }));
}

if (mode === "open") openLoop(Number(a), Number(b), c!);
else if (mode === "closed") await closedLoop(Number(a), Number(b), c!);
else {
  console.error("usage: loadgen.ts open|closed ...");
  process.exit(2);
}
