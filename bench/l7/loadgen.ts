// HTTP/1.1 and gRPC load generator run inside the client pod's netns; prints one JSON line (closed and grpc: after a line
// "measuring" where the measured window opens and "measured" where it ends, for the bench's CPU readings).
//   closed <ip> <port> <connections> <seconds>           each keep-alive connection sends GET / as soon as the last answer came (saturation)
//   open <ip> <port> <rate> <seconds>                    GET / on a fixed schedule over a keep-alive pool (latency from the scheduled time)
//   grpc <ip> <port> <connections> <streams> <seconds>   unary GetName calls to the door manager: each connection (a gRPC channel of
//                                                        its own) keeps `streams` calls in flight, the next sent as one is answered (saturation)
import http from "node:http";
import { performance } from "node:perf_hooks";
import { doormanClient } from "../../node-agent/l7proxy/testing/doorman.ts";

const [mode, ip, portText, a, b, c] = process.argv.slice(2);
const port = Number(portText);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function get(agent: http.Agent): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: ip, port, path: "/", method: "GET", agent }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

async function closed(connections: number, seconds: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const lat: number[] = [];
  let failed = 0;
  console.log("measuring");
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        if ((await get(agent)) !== 200) failed++;
        else lat.push(performance.now() - t);
      }
    }),
  );
  console.log("measured");
  agent.destroy();
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ rps: lat.length / seconds, failed, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99) }));
}

async function open(rate: number, seconds: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  // Warm the pool so the schedule measures requests, not connects.
  await Promise.all(Array.from({ length: 16 }, () => get(agent)));
  const lat: number[] = [];
  let failed = 0;
  let maxLate = 0;
  const total = Math.round(rate * seconds);
  const start = performance.now() + 20;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; ) {
    const now = performance.now();
    while (i < total && start + (i * 1000) / rate <= now) {
      const due = start + (i * 1000) / rate;
      maxLate = Math.max(maxLate, now - due);
      pending.push(get(agent).then((s) => void (s === 200 ? lat.push(performance.now() - due) : failed++)));
      i++;
    }
    const next = start + (i * 1000) / rate - performance.now();
    await new Promise((r) => (next > 1 ? setTimeout(r, next - 1) : setImmediate(r)));
  }
  await Promise.all(pending);
  agent.destroy();
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ sent: total, failed, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), max_send_late_ms: maxLate }));
}

async function grpcClosed(connections: number, streams: number, seconds: number): Promise<void> {
  // A local subchannel pool per client: each its own HTTP/2 connection (grpc-js shares one per target otherwise).
  const clients = Array.from({ length: connections }, () => doormanClient(`${ip}:${port}`, { "grpc.use_local_subchannel_pool": 1 }));
  // Connect (and warm) each before measuring.
  await Promise.all(clients.map((cl) => cl.call("GetName")));
  const lat: number[] = [];
  let failed = 0;
  console.log("measuring");
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    clients.flatMap((cl) =>
      Array.from({ length: streams }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          if ((await cl.call("GetName")).code !== 0) failed++;
          else lat.push(performance.now() - t);
        }
      }),
    ),
  );
  console.log("measured");
  for (const cl of clients) cl.close();
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ rps: lat.length / seconds, failed, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99) }));
}

if (mode === "closed") await closed(Number(a), Number(b));
else if (mode === "grpc") await grpcClosed(Number(a), Number(b), Number(c));
else if (mode === "open") await open(Number(a), Number(b));
else throw new Error(`unknown mode ${mode}`);
