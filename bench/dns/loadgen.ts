// DNS load generator run inside the pod netns; prints one JSON line (closed: after a line "measuring" where the measured window
// opens and "measured" where it ends, for the bench's CPU readings).
//   open <server> <port> <rate> <seconds> <name>    queries on a fixed schedule (open loop); latency from the scheduled time (p50, p99 and each in µs)
//   closed <server> <port> <concurrency> <seconds> <name>   as fast as answers come (saturation)
import dgram from "node:dgram";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";

const [mode, server, portText, a, b, c] = process.argv.slice(2);
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
  // Every latency too (µs): the caller pools its rounds for one p99 over all of them.
  const latUs = lat.map((x) => Math.round(x * 1000));
  console.log(JSON.stringify({ sent: total, answered: lat.length, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), max_send_late_ms: late, lat_us: latUs }));
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

if (mode === "open") await openLoop(Number(a), Number(b), c!);
else if (mode === "closed") await closedLoop(Number(a), Number(b), c!);
else {
  console.error("usage: loadgen.ts open|closed ...");
  process.exit(2);
}
