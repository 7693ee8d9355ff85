// DNS load generator run inside the pod netns; prints one JSON line.
//   open <server> <port> <rate> <seconds> <name>    queries on a fixed schedule (open loop); latency from the scheduled time
//   closed <server> <port> <concurrency> <seconds> <name>   as fast as answers come (saturation)
//   connect <server> <port> <count> <suffix> <tcpPort>   lookup i.<suffix>, then at once a TCP connect to the answer
import dgram from "node:dgram";
import net from "node:net";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";

const [mode, server, portText, a, b, c, d] = process.argv.slice(2);
const port = Number(portText);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function makeQuery(id: number, name: string): Buffer {
  return dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] });
}

async function openLoop(rate: number, seconds: number, name: string): Promise<void> {
  const sock = dgram.createSocket("udp4");
  const sentAt = new Map<number, number>();
  const lat: number[] = [];
  sock.on("message", (m) => {
    const id = m.readUInt16BE(0);
    const t = sentAt.get(id);
    if (t === undefined) return;
    sentAt.delete(id);
    lat.push(performance.now() - t);
  });
  await new Promise<void>((r) => sock.bind(0, r));
  const total = Math.round(rate * seconds);
  const start = performance.now() + 50;
  let late = 0;
  // Send whatever is due, then yield to the event loop (so answers are read as they come): a timer
  // when the next query is more than a millisecond away, else setImmediate.
  for (let i = 0; i < total; ) {
    const now = performance.now();
    while (i < total && start + (i * 1000) / rate <= now) {
      const at = start + (i * 1000) / rate;
      late = Math.max(late, now - at);
      const id = i & 0xffff;
      sentAt.set(id, at);
      sock.send(makeQuery(id, name), port, server);
      i++;
    }
    const next = start + (i * 1000) / rate - performance.now();
    await new Promise((r) => (next > 1 ? setTimeout(r, next - 0.5) : setImmediate(r)));
  }
  await new Promise((r) => setTimeout(r, 1000));
  sock.close();
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ sent: total, answered: lat.length, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), max_send_late_ms: late }));
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
  for (let i = 0; i < concurrency; i++) send();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  clearInterval(refill);
  sock.close();
  console.log(JSON.stringify({ answered, qps: answered / seconds }));
}

function lookup(name: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket("udp4");
    const id = Math.floor(Math.random() * 65536);
    const timer = setTimeout(() => {
      sock.close();
      resolve(undefined);
    }, 2000);
    sock.on("message", (m) => {
      const p = dnsPacket.decode(m);
      if (p.id !== id) return;
      clearTimeout(timer);
      sock.close();
      const rr = (p.answers ?? []).find((x) => x.type === "A");
      resolve(rr && "data" in rr && typeof rr.data === "string" ? rr.data : undefined);
    });
    sock.send(makeQuery(id, name), port, server);
  });
}

function tcpConnect(ip: string, tcpPort: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port: tcpPort });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.on("connect", () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.on("error", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

async function connects(count: number, suffix: string, tcpPort: number): Promise<void> {
  let unanswered = 0;
  let drops = 0;
  const lat: number[] = [];
  for (let i = 0; i < count; i++) {
    const ip = await lookup(`c${i}.${suffix}`);
    if (!ip) {
      unanswered++;
      continue;
    }
    const t = performance.now();
    if (await tcpConnect(ip, tcpPort)) lat.push(performance.now() - t);
    else drops++;
  }
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ lookups: count, unanswered, first_connect_drops: drops, connect_p50_ms: percentile(lat, 50), connect_p99_ms: percentile(lat, 99) }));
}

if (mode === "open") await openLoop(Number(a), Number(b), c!);
else if (mode === "closed") await closedLoop(Number(a), Number(b), c!);
else if (mode === "connect") await connects(Number(a), b!, Number(c ?? d));
else {
  console.error("usage: loadgen.ts open|closed|connect ...");
  process.exit(2);
}
