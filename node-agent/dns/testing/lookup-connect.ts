// Test and benchmark fixture (run inside a pod netns): lookups of names that each answer a fresh address, each followed at once by a TCP connect to it; one JSON line.
//   lookup-connect.ts '<JSON Options>'
// Allowed names are c<i>.<allowSuffix>. With `retry`, a lookup that gets no answer is asked again (as a
// resolver library does) until `giveUpMs`; every `checkEvery`-th step also asks a name the DNS rules
// refuse (x<i>.<refusedSuffix>: any answer but REFUSED/NXDOMAIN is a leak) and one they allow but no
// toFQDNs selects (o<i>.<unselectedSuffix>: a connect to its address that succeeds is a leak).
// Prints "step <i>" after each step (so a test can act mid-stream), then the summary.
import dgram from "node:dgram";
import net from "node:net";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";

interface Options {
  server: string;
  port: number;
  count: number;
  allowSuffix: string;
  tcpPort: number;
  retry?: boolean;
  /** Per attempt. */
  lookupTimeoutMs?: number;
  giveUpMs?: number;
  checkEvery?: number;
  refusedSuffix?: string;
  unselectedSuffix?: string;
  progress?: boolean;
}

const o = JSON.parse(process.argv[2] ?? "") as Options;
const lookupTimeout = o.lookupTimeoutMs ?? 2000;

interface Answer {
  rcode: string;
  ip: string | undefined;
}

function lookupOnce(name: string): Promise<Answer | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket("udp4");
    const id = Math.floor(Math.random() * 65536);
    const timer = setTimeout(() => {
      sock.close();
      resolve(undefined);
    }, lookupTimeout);
    sock.on("message", (m) => {
      const p = dnsPacket.decode(m) as dnsPacket.DecodedPacket & { rcode?: string };
      if (p.id !== id) return;
      clearTimeout(timer);
      sock.close();
      const rr = (p.answers ?? []).find((x) => x.type === "A");
      resolve({ rcode: p.rcode ?? "", ip: rr && "data" in rr && typeof rr.data === "string" ? rr.data : undefined });
    });
    sock.send(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] }), o.port, o.server);
  });
}

/** The answer, retried while none comes (with `retry`); `failed` counts the attempts that got none. */
async function lookup(name: string): Promise<{ answer: Answer | undefined; failed: number }> {
  const deadline = performance.now() + (o.giveUpMs ?? 30_000);
  let failed = 0;
  for (;;) {
    const answer = await lookupOnce(name);
    if (answer) return { answer, failed };
    failed++;
    if (!o.retry || performance.now() > deadline) return { answer: undefined, failed };
  }
}

function tcpConnect(ip: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port: o.tcpPort });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
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

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const result = { lookups: o.count, unanswered: 0, failed_attempts: 0, first_connect_drops: 0, dropped: [] as string[], refused_leaks: 0, unselected_leaks: 0, checks: 0 };
const lat: number[] = [];
for (let i = 0; i < o.count; i++) {
  const { answer, failed } = await lookup(`c${i}.${o.allowSuffix}`);
  result.failed_attempts += failed;
  if (!answer?.ip) result.unanswered++;
  else {
    const t = performance.now();
    if (await tcpConnect(answer.ip, 1000)) lat.push(performance.now() - t);
    else {
      result.first_connect_drops++;
      if (result.dropped.length < 20) result.dropped.push(`c${i}.${o.allowSuffix} ${answer.ip}`);
    }
  }
  if (o.checkEvery && i % o.checkEvery === 0) {
    result.checks++;
    if (o.refusedSuffix) {
      const r = await lookup(`x${i}.${o.refusedSuffix}`);
      result.failed_attempts += r.failed;
      if (r.answer && r.answer.rcode !== "REFUSED" && r.answer.rcode !== "NXDOMAIN") result.refused_leaks++;
    }
    if (o.unselectedSuffix) {
      const r = await lookup(`o${i}.${o.unselectedSuffix}`);
      result.failed_attempts += r.failed;
      if (r.answer?.ip && (await tcpConnect(r.answer.ip, 300))) result.unselected_leaks++;
    }
  }
  if (o.progress) console.log(`step ${i}`);
}
lat.sort((x, y) => x - y);
console.log(JSON.stringify({ ...result, connect_p50_ms: percentile(lat, 50), connect_p99_ms: percentile(lat, 99) }));
