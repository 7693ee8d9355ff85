// Benchmark: admission throughput and latency at 32 connections, real validation of a realistic policy vs. the same server allowing blindly.
import { spawn, type ChildProcess } from "node:child_process";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { admit, reviewFor } from "../../webhooks/admission.ts";
import { VALIDATE_PATH } from "../../webhooks/server.ts";
import { closedLoop, percentile } from "./loadgen.ts";
import { POLICY } from "./policy.ts";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = Math.min(3, SECONDS / 4);
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
  /** The load generator's own CPU per request, µs: what it takes from the two cores the server shares. */
  loadgenUsPerRequest: number;
}

interface BenchServer {
  child: ChildProcess;
  port: number;
  ca: string;
  cpuUs(): Promise<number>;
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
    const cpuUs = async (): Promise<number> => {
      const answer = nextLine();
      child.stdin!.write("cpu\n");
      return (JSON.parse(await answer) as { cpu_us: number }).cpu_us;
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

async function measure(mode: Mode): Promise<Run> {
  const server = await startServer(mode);
  try {
    const load = { host: "127.0.0.1", port: server.port, ca: server.ca, path: VALIDATE_PATH, connections: CONNECTIONS, body };
    await closedLoop({ ...load, seconds: WARMUP_SECONDS, record: false });
    const cpuBefore = await server.cpuUs();
    const ownBefore = process.cpuUsage();
    const run = await closedLoop({ ...load, seconds: SECONDS, record: true });
    const own = process.cpuUsage(ownBefore);
    const cpuAfter = await server.cpuUs();
    return {
      rps: run.requests / run.elapsedSeconds,
      p50: percentile(run.latenciesMs, 50),
      p99: percentile(run.latenciesMs, 99),
      requests: run.requests,
      denied: run.denied,
      cpuUsPerRequest: (cpuAfter - cpuBefore) / run.requests,
      loadgenUsPerRequest: (own.user + own.system) / run.requests,
    };
  } finally {
    await stopServer(server.child);
  }
}

/** admit() of the benchmark's request in this process, once warm: the cost of validation without any HTTP or TLS, µs. */
function inProcessUs(mode: Mode): number {
  const text = body("in-process");
  const deadline = performance.now() + 1000;
  while (performance.now() < deadline) admit(text, mode);
  const n = 5000;
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) admit(text, mode);
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / n;
}

const round = (n: number, digits = 3): number => Math.round(n * 10 ** digits) / 10 ** digits;

const admitUs = inProcessUs("validate");
const admitNoopUs = inProcessUs("noop");
// Side by side, noop first, then validate, each with a fresh server and the same generator.
const noop = await measure("noop");
const real = await measure("validate");
if (real.denied > 0) throw new Error(`the benchmark policy was denied ${real.denied} times: it must be valid`);
const ratio = real.rps / noop.rps;
// What the throughput ratio would be if the server alone were the bottleneck (the load generator shares the machine).
const cpuRatio = noop.cpuUsPerRequest / real.cpuUsPerRequest;
const load1 = loadavg()[0] ?? NaN;
process.stdout.write(
  `webhook: ${CONNECTIONS} connections, ${SECONDS} s each, ${WORKERS} server process${WORKERS === 1 ? "" : "es"}\n` +
    `  validate: ${real.rps.toFixed(0)} req/s, p50 ${real.p50.toFixed(2)} ms, p99 ${real.p99.toFixed(2)} ms (${real.requests} requests)\n` +
    `  noop:     ${noop.rps.toFixed(0)} req/s, p50 ${noop.p50.toFixed(2)} ms, p99 ${noop.p99.toFixed(2)} ms (${noop.requests} requests)\n` +
    `  ratio ${ratio.toFixed(3)} (target ≥ 0.8), p99 target < 5 ms\n` +
    `  server CPU per request: validate ${real.cpuUsPerRequest.toFixed(0)} µs, noop ${noop.cpuUsPerRequest.toFixed(0)} µs ` +
    `(CPU-bound ratio ${cpuRatio.toFixed(3)}); load generator ${real.loadgenUsPerRequest.toFixed(0)} / ${noop.loadgenUsPerRequest.toFixed(0)} µs per request\n` +
    `  admit() in-process: validate ${admitUs.toFixed(1)} µs, noop ${admitNoopUs.toFixed(1)} µs; load average ${load1.toFixed(1)}\n`,
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
    cpu_us_per_req: round(real.cpuUsPerRequest, 1),
    noop_cpu_us_per_req: round(noop.cpuUsPerRequest, 1),
    cpu_ratio: round(cpuRatio),
    loadgen_us_per_req: round(real.loadgenUsPerRequest, 1),
    admit_us: round(admitUs, 1),
    admit_noop_us: round(admitNoopUs, 1),
    load_avg_1m: round(load1, 2),
    connections: CONNECTIONS,
    seconds: SECONDS,
    server_processes: WORKERS,
  })}\n`,
);
