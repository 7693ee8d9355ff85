// Benchmark: admission throughput and latency, closed loop at 32 connections and open loop at a fixed 1,000 requests/s, real validation of a realistic policy vs. the same server allowing blindly, in alternating turns.
import { spawn, type ChildProcess } from "node:child_process";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { admit, reviewFor } from "../../webhooks/admission.ts";
import { VALIDATE_PATH } from "../../webhooks/server.ts";
import { closedLoop, openLoop, percentile } from "./loadgen.ts";
import { POLICY } from "./policy.ts";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = Math.min(3, SECONDS / 4);
/** The open loop's fixed offered load (requests/s), its length, and the connections it may use (as the API server keeps a pool). */
const RATE = Number(process.env.BENCH_RATE ?? 1000);
const OPEN_SECONDS = Number(process.env.BENCH_OPEN_SECONDS ?? 10);
const OPEN_CONNECTIONS = Number(process.env.BENCH_OPEN_CONNECTIONS ?? 32);
/** Turns per mode: the closed and open loops are split into this many alternating parts. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
/** Server processes (node:cluster workers) sharing the port; 1 = the production shape, one process. */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1);
/** Set to a directory to have the server processes write V8 CPU profiles there (`node --cpu-prof`). */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;
const serverScript = fileURLToPath(new URL("./server.ts", import.meta.url));

type Mode = "validate" | "noop";

interface Run {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  denied: number;
  /** Server CPU (all its processes) per answered request, µs: free of the load generator and of other processes. */
  cpuUsPerRequest: number;
  /** The part of it spent in the kernel (TLS records' loopback sends and receives, epoll, waking the generator). */
  sysUsPerRequest: number;
  /** The load generator's own CPU per request, µs: what it takes from the two cores the server shares. */
  loadgenUsPerRequest: number;
  /** The open loop at RATE requests/s: latency from each request's scheduled send time. */
  open: {
    p50: number;
    p99: number;
    max: number;
    requests: number;
    /** Requests still unanswered when the open loop's drain time ran out (counted in the percentiles with the time they waited). */
    unanswered: number;
    /** p99 of how late requests left the generator (all connections busy, or its timer late). */
    sendDelayP99: number;
    cpuUsPerRequest: number;
  };
}

interface BenchServer {
  child: ChildProcess;
  port: number;
  ca: string;
  /** The server's CPU time so far, µs: all of it, and the kernel's part. */
  cpuUs(): Promise<{ cpu: number; sys: number }>;
}

async function startServer(mode: Mode): Promise<BenchServer> {
  const nodeArgs = ["--import", "tsx", ...(PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [])];
  const child = spawn(process.execPath, [...nodeArgs, serverScript, mode, String(WORKERS)], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! });
  const nextLine = (): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`bench server exited with ${code}`));
      child.once("exit", onExit);
      lines.once("line", (line) => {
        child.off("exit", onExit);
        resolve(line);
      });
    });
  try {
    const { port, ca } = JSON.parse(await nextLine()) as { port: number; ca: string };
    const cpuUs = async (): Promise<{ cpu: number; sys: number }> => {
      const answer = nextLine();
      child.stdin!.write("cpu\n");
      const { cpu_us, sys_us } = JSON.parse(await answer) as { cpu_us: number; sys_us: number };
      return { cpu: cpu_us, sys: sys_us };
    };
    return { child, port, ca, cpuUs };
  } catch (err) {
    await stopServer(child);
    throw err;
  }
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

/** The AdmissionReview text with the uid spliced in, so that making a request costs the generator almost nothing. */
function bodyMaker(): (uid: string) => string {
  const marker = "@@uid@@";
  const [before, after] = reviewFor(POLICY, { uid: marker }).split(marker);
  if (before === undefined || after === undefined) throw new Error("review template has no uid");
  return (uid) => before + uid + after;
}

const body = bodyMaker();

/** What one mode's server accumulates over the interleaved rounds. */
interface Totals {
  closedRequests: number;
  closedSeconds: number;
  closedLatencies: Float64Array[];
  closedCpuUs: number;
  closedSysUs: number;
  ownCpuUs: number;
  denied: number;
  openRequests: number;
  openUnanswered: number;
  openLatencies: Float64Array[];
  openSendDelays: Float64Array[];
  openCpuUs: number;
}

const concatSorted = (parts: Float64Array[]): Float64Array => {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.sort();
};

/**
 * Both servers run side by side and the generator alternates between them in ROUNDS short turns
 * (closed loop, then open loop), the order swapped every round: the load other processes put on
 * the shared machine drifts over a minute, and alternating makes both modes see the same drift.
 */
async function measureBoth(): Promise<Record<Mode, Run>> {
  const modes: Mode[] = ["noop", "validate"];
  const servers = {} as Record<Mode, BenchServer>;
  try {
    for (const mode of modes) servers[mode] = await startServer(mode);
    const load = (mode: Mode) => ({ host: "127.0.0.1", port: servers[mode].port, ca: servers[mode].ca, path: VALIDATE_PATH, connections: CONNECTIONS, body });
    for (const mode of modes) await closedLoop({ ...load(mode), seconds: WARMUP_SECONDS, record: false });
    const totals = {} as Record<Mode, Totals>;
    for (const mode of modes) {
      totals[mode] = { closedRequests: 0, closedSeconds: 0, closedLatencies: [], closedCpuUs: 0, closedSysUs: 0, ownCpuUs: 0, denied: 0, openRequests: 0, openUnanswered: 0, openLatencies: [], openSendDelays: [], openCpuUs: 0 };
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of round % 2 === 0 ? modes : [...modes].reverse()) {
        const t = totals[mode];
        const server = servers[mode];
        const cpuBefore = await server.cpuUs();
        const ownBefore = process.cpuUsage();
        const run = await closedLoop({ ...load(mode), seconds: SECONDS / ROUNDS, record: true });
        const own = process.cpuUsage(ownBefore);
        const cpuAfter = await server.cpuUs();
        // Then the same server at a fixed offered load, far below what it can answer.
        const open = await openLoop({ ...load(mode), connections: OPEN_CONNECTIONS, rate: RATE, seconds: OPEN_SECONDS / ROUNDS });
        const openCpuAfter = await server.cpuUs();
        t.closedRequests += run.requests;
        t.closedSeconds += run.elapsedSeconds;
        t.closedLatencies.push(run.latenciesMs);
        t.closedCpuUs += cpuAfter.cpu - cpuBefore.cpu;
        t.closedSysUs += cpuAfter.sys - cpuBefore.sys;
        t.ownCpuUs += own.user + own.system;
        t.denied += run.denied + open.denied;
        t.openRequests += open.requests;
        t.openUnanswered += open.unanswered;
        t.openLatencies.push(open.latenciesMs);
        t.openSendDelays.push(open.sendDelaysMs);
        t.openCpuUs += openCpuAfter.cpu - cpuAfter.cpu;
      }
    }
    const result = {} as Record<Mode, Run>;
    for (const mode of modes) {
      const t = totals[mode];
      const closed = concatSorted(t.closedLatencies);
      const open = concatSorted(t.openLatencies);
      result[mode] = {
        rps: t.closedRequests / t.closedSeconds,
        p50: percentile(closed, 50),
        p99: percentile(closed, 99),
        requests: t.closedRequests,
        denied: t.denied,
        cpuUsPerRequest: t.closedCpuUs / t.closedRequests,
        sysUsPerRequest: t.closedSysUs / t.closedRequests,
        loadgenUsPerRequest: t.ownCpuUs / t.closedRequests,
        open: {
          p50: percentile(open, 50),
          p99: percentile(open, 99),
          max: percentile(open, 100),
          requests: t.openRequests,
          unanswered: t.openUnanswered,
          sendDelayP99: percentile(concatSorted(t.openSendDelays), 99),
          cpuUsPerRequest: t.openCpuUs / Math.max(1, t.openRequests),
        },
      };
    }
    return result;
  } finally {
    for (const mode of modes) if (servers[mode] !== undefined) await stopServer(servers[mode].child);
  }
}

/** The bench policy's text with its selectors' label values, its expression values and its HTTP path unique to `i`. */
const FRESH_PARTS: readonly (readonly [string, (i: number) => string])[] = [
  ['"app":"checkout"', (i) => `"app":"checkout-${i}"`],
  ['"app":"frontend"', (i) => `"app":"frontend-${i}"`],
  ['["shop","shop-canary"]', (i) => `["shop-${i}","shop-canary-${i}"]`],
  ['"/api/v1/checkout(/.*)?"', (i) => `"/api/v${i}/checkout(/.*)?"`],
  ['"app":"postgres"', (i) => `"app":"postgres-${i}"`],
  ['"k8s:k8s-app":"kube-dns"', (i) => `"k8s:k8s-app":"kube-dns-${i}"`],
];
const POLICY_TEXT = JSON.stringify(POLICY);
for (const [part] of FRESH_PARTS) if (!POLICY_TEXT.includes(part)) throw new Error(`the bench policy no longer contains ${part}`);
function freshVariant(i: number): unknown {
  let text = POLICY_TEXT;
  for (const [part, unique] of FRESH_PARTS) text = text.replace(part, unique(i));
  return JSON.parse(text);
}

/** CPU µs per call of each function in this process, once warm: medians of alternating batches, so both see the same machine. */
function inProcessUs(...fs: (() => unknown)[]): number[] {
  for (const f of fs) {
    const deadline = performance.now() + 500;
    while (performance.now() < deadline) f();
  }
  const perCall: number[][] = fs.map(() => []);
  for (let batch = 0; batch < 20; batch++) {
    fs.forEach((f, k) => {
      const n = 250;
      const t0 = process.cpuUsage();
      for (let i = 0; i < n; i++) f();
      const t = process.cpuUsage(t0);
      perCall[k]?.push((t.user + t.system) / n);
    });
  }
  return perCall.map((xs) => xs.sort((a, b) => a - b)[xs.length >> 1] ?? NaN);
}

const round = (n: number, digits = 3): number => Math.round(n * 10 ** digits) / 10 ** digits;

// admit() of the benchmark's request without any HTTP or TLS: validating, not validating (JSON.parse of
// the review, reading it, writing the answer), and JSON.parse alone, which both modes pay.
const text = body("in-process");
const [admitUs = NaN, admitNoopUs = NaN, reviewParseUs = NaN] = inProcessUs(
  () => admit(text, "validate"),
  () => admit(text, "noop"),
  () => JSON.parse(text),
);
// The same with every selector, label value and regex seen for the first time (the parser remembers
// checked selectors and regexes by their text, which the repeated bench policy always hits).
const fresh = Array.from({ length: 20_000 }, (_, i) => reviewFor(freshVariant(i), { uid: `fresh-${i}` }));
for (const f of [fresh[0], fresh[1]]) if (f === undefined || !admit(f, "validate").allowed) throw new Error("a fresh variant of the bench policy was denied: it must be valid");
let nextFresh = 0;
const [admitFreshUs = NaN, admitFreshNoopUs = NaN] = inProcessUs(
  () => admit(fresh[nextFresh++ % fresh.length] as string, "validate"),
  () => admit(fresh[nextFresh++ % fresh.length] as string, "noop"),
);
// Side by side, the same generator alternating between the two servers.
const { noop, validate: real } = await measureBoth();
if (real.denied > 0) throw new Error(`the benchmark policy was denied ${real.denied} times: it must be valid`);
const ratio = real.rps / noop.rps;
// What the throughput ratio would be if the server alone were the bottleneck (the load generator shares the machine).
const cpuRatio = noop.cpuUsPerRequest / real.cpuUsPerRequest;
// Validation's own CPU per request: in the server (validate minus noop, same run), and in-process.
const validateUs = real.cpuUsPerRequest - noop.cpuUsPerRequest;
const validateOpenUs = real.open.cpuUsPerRequest - noop.open.cpuUsPerRequest;
const admitValidateUs = admitUs - admitNoopUs;
const admitFreshValidateUs = admitFreshUs - admitFreshNoopUs;
const load1 = loadavg()[0] ?? NaN;
process.stdout.write(
  `webhook: closed loop ${CONNECTIONS} connections, ${SECONDS} s each; open loop ${RATE} req/s for ${OPEN_SECONDS} s on up to ${OPEN_CONNECTIONS} connections; ` +
    `in ${ROUNDS} alternating turns per mode; ${WORKERS} server process${WORKERS === 1 ? "" : "es"} per mode\n` +
    `  closed loop (not a target: at 32 connections on 2 shared cores it measures the machine's queueing)\n` +
    `    validate: ${real.rps.toFixed(0)} req/s, p50 ${real.p50.toFixed(2)} ms, p99 ${real.p99.toFixed(2)} ms (${real.requests} requests)\n` +
    `    noop:     ${noop.rps.toFixed(0)} req/s, p50 ${noop.p50.toFixed(2)} ms, p99 ${noop.p99.toFixed(2)} ms (${noop.requests} requests)\n` +
    `    ratio ${ratio.toFixed(3)} (target ≥ 0.8)\n` +
    `  open loop at ${RATE} req/s, latency from the scheduled send time\n` +
    `    validate: p50 ${real.open.p50.toFixed(2)} ms, p99 ${real.open.p99.toFixed(2)} ms (target < 5 ms), max ${real.open.max.toFixed(1)} ms; generator late p99 ${real.open.sendDelayP99.toFixed(2)} ms; unanswered ${real.open.unanswered}\n` +
    `    noop:     p50 ${noop.open.p50.toFixed(2)} ms, p99 ${noop.open.p99.toFixed(2)} ms, max ${noop.open.max.toFixed(1)} ms; generator late p99 ${noop.open.sendDelayP99.toFixed(2)} ms; unanswered ${noop.open.unanswered}\n` +
    `  server CPU per request: validate ${real.cpuUsPerRequest.toFixed(0)} µs, noop ${noop.cpuUsPerRequest.toFixed(0)} µs ` +
    `(of which kernel ${real.sysUsPerRequest.toFixed(0)} / ${noop.sysUsPerRequest.toFixed(0)} µs; CPU-bound ratio ${cpuRatio.toFixed(3)}); at ${RATE} req/s ${real.open.cpuUsPerRequest.toFixed(0)} / ${noop.open.cpuUsPerRequest.toFixed(0)} µs; ` +
    `load generator ${real.loadgenUsPerRequest.toFixed(0)} / ${noop.loadgenUsPerRequest.toFixed(0)} µs per request\n` +
    `  validation CPU per request (target ≤ 45 µs): server ${validateUs.toFixed(1)} µs closed loop, ${validateOpenUs.toFixed(1)} µs at ${RATE} req/s; ` +
    `admit() in-process ${admitValidateUs.toFixed(1)} µs (validate ${admitUs.toFixed(1)}, noop ${admitNoopUs.toFixed(1)}, of which JSON.parse ${reviewParseUs.toFixed(1)}); ` +
    `${admitFreshValidateUs.toFixed(1)} µs with every selector and regex new\n` +
    `  load average ${load1.toFixed(1)}\n`,
);
process.stdout.write(
  `${JSON.stringify({
    bench: "webhook",
    rps: round(real.rps, 1),
    noop_rps: round(noop.rps, 1),
    ratio: round(ratio),
    p50_ms: round(real.p50),
    p99_ms: round(real.p99),
    noop_p50_ms: round(noop.p50),
    noop_p99_ms: round(noop.p99),
    [`p50_ms_at_${RATE}`]: round(real.open.p50),
    [`p99_ms_at_${RATE}`]: round(real.open.p99),
    [`noop_p99_ms_at_${RATE}`]: round(noop.open.p99),
    [`send_late_p99_ms_at_${RATE}`]: round(real.open.sendDelayP99),
    [`unanswered_at_${RATE}`]: real.open.unanswered,
    validate_us: round(validateUs, 1),
    [`validate_us_at_${RATE}`]: round(validateOpenUs, 1),
    admit_validate_us: round(admitValidateUs, 1),
    admit_validate_fresh_us: round(admitFreshValidateUs, 1),
    cpu_us_per_req: round(real.cpuUsPerRequest, 1),
    noop_cpu_us_per_req: round(noop.cpuUsPerRequest, 1),
    sys_us_per_req: round(real.sysUsPerRequest, 1),
    noop_sys_us_per_req: round(noop.sysUsPerRequest, 1),
    cpu_ratio: round(cpuRatio),
    loadgen_us_per_req: round(real.loadgenUsPerRequest, 1),
    admit_us: round(admitUs, 1),
    admit_noop_us: round(admitNoopUs, 1),
    review_parse_us: round(reviewParseUs, 1),
    load_avg_1m: round(load1, 2),
    connections: CONNECTIONS,
    seconds: SECONDS,
    open_rate: RATE,
    open_seconds: OPEN_SECONDS,
    rounds: ROUNDS,
    server_processes: WORKERS,
  })}\n`,
);
