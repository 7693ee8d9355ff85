// Benchmark: admission throughput and latency at 32 connections, real validation of a realistic policy vs. the same server allowing blindly.
import { spawn, type ChildProcess } from "node:child_process";
import { Agent, request } from "node:https";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { reviewFor } from "../../webhooks/admission.ts";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = Math.min(3, SECONDS / 4);
const serverScript = fileURLToPath(new URL("./server.ts", import.meta.url));

/** A policy like the ones users write: several rules, selectors, ports, CIDRs, FQDNs, DNS and HTTP rules. */
const POLICY = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "checkout", namespace: "shop", uid: "5d0c1e9e-0000-4000-8000-000000000001", generation: 3 },
  spec: {
    description: "checkout service: callers, its database, payment provider, DNS",
    endpointSelector: { matchLabels: { app: "checkout", tier: "backend" } },
    ingress: [
      {
        fromEndpoints: [
          { matchLabels: { app: "frontend" } },
          { matchExpressions: [{ key: "k8s:io.kubernetes.pod.namespace", operator: "In", values: ["shop", "shop-canary"] }] },
        ],
        toPorts: [
          {
            ports: [{ port: "8080", protocol: "TCP" }],
            rules: {
              http: [
                { method: "POST", path: "/api/v1/checkout(/.*)?" },
                { method: "GET", path: "/healthz", headers: ["X-Probe: true"] },
              ],
            },
          },
        ],
      },
      { fromEntities: ["host"], toPorts: [{ ports: [{ port: "9090", protocol: "TCP" }] }] },
    ],
    egress: [
      {
        toEndpoints: [{ matchLabels: { app: "postgres", "k8s:io.kubernetes.pod.namespace": "shop" } }],
        toPorts: [{ ports: [{ port: "5432", protocol: "TCP" }] }],
      },
      {
        toFQDNs: [{ matchName: "api.payments.example.com" }, { matchPattern: "*.stripe.com" }],
        toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }],
      },
      { toCIDRSet: [{ cidr: "10.20.0.0/16", except: ["10.20.99.0/24"] }], toPorts: [{ ports: [{ port: "6000", endPort: 6100, protocol: "TCP" }] }] },
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.example.com" }, { matchName: "api.payments.example.com" }] } }],
      },
    ],
    egressDeny: [{ toCIDR: ["169.254.169.254/32"] }],
  },
};

interface Run {
  /** Server process CPU per answered request, µs: free of the load generator and of other processes. */
  cpuUsPerRequest: number;
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  denied: number;
}

interface BenchServer {
  child: ChildProcess;
  port: number;
  ca: string;
  cpuUs(): Promise<number>;
}

async function startServer(mode: "validate" | "noop"): Promise<BenchServer> {
  const child = spawn(process.execPath, ["--import", "tsx", serverScript, mode], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! });
  const nextLine = (): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      lines.once("line", resolve);
      child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
    });
  const { port, ca } = JSON.parse(await nextLine()) as { port: number; ca: string };
  const cpuUs = async (): Promise<number> => {
    const answer = nextLine();
    child.stdin!.write("cpu\n");
    return (JSON.parse(await answer) as { cpu_us: number }).cpu_us;
  };
  return { child, port, ca, cpuUs };
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** CONNECTIONS loops, each sending the next request as soon as the previous answer arrives. */
async function load(port: number, ca: string, seconds: number, measure: boolean): Promise<Omit<Run, "cpuUsPerRequest">> {
  const agent = new Agent({ keepAlive: true, ca, maxSockets: CONNECTIONS });
  const latencies: number[] = [];
  let denied = 0;
  let requests = 0;
  const end = performance.now() + seconds * 1000;
  const one = (body: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path: "/validate", method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve(text));
          res.on("error", reject);
        },
      );
      req.setNoDelay(true);
      req.on("error", reject);
      req.end(body);
    });
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; performance.now() < end; i++) {
      const uid = `bench-${w}-${i}`;
      const body = reviewFor(POLICY, { uid });
      const t0 = performance.now();
      const text = await one(body);
      const ms = performance.now() - t0;
      const answer = JSON.parse(text) as { response: { uid: string; allowed: boolean } };
      if (answer.response.uid !== uid) throw new Error(`answer for ${answer.response.uid}, expected ${uid}`);
      if (!answer.response.allowed) denied++;
      if (measure) latencies.push(ms);
      requests++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, w) => worker(w)));
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  const sorted = Float64Array.from(latencies).sort();
  return { rps: requests / elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99), requests, denied };
}

async function measure(mode: "validate" | "noop"): Promise<Run> {
  const server = await startServer(mode);
  try {
    await load(server.port, server.ca, WARMUP_SECONDS, false);
    const cpuBefore = await server.cpuUs();
    const run = await load(server.port, server.ca, SECONDS, true);
    const cpuAfter = await server.cpuUs();
    return { ...run, cpuUsPerRequest: (cpuAfter - cpuBefore) / run.requests };
  } finally {
    await stopServer(server.child);
  }
}

const round = (n: number, digits = 3): number => Math.round(n * 10 ** digits) / 10 ** digits;

const noop = await measure("noop");
const real = await measure("validate");
if (real.denied > 0) throw new Error(`the benchmark policy was denied ${real.denied} times: it must be valid`);
const ratio = real.rps / noop.rps;
// What the throughput ratio would be if the server alone were the bottleneck (the load generator shares the machine).
const cpuRatio = noop.cpuUsPerRequest / real.cpuUsPerRequest;
process.stdout.write(
  `webhook: ${CONNECTIONS} connections, ${SECONDS} s each\n` +
    `  validate: ${real.rps.toFixed(0)} req/s, p50 ${real.p50.toFixed(2)} ms, p99 ${real.p99.toFixed(2)} ms (${real.requests} requests)\n` +
    `  noop:     ${noop.rps.toFixed(0)} req/s, p50 ${noop.p50.toFixed(2)} ms, p99 ${noop.p99.toFixed(2)} ms (${noop.requests} requests)\n` +
    `  ratio ${ratio.toFixed(3)} (target ≥ 0.8), p99 target < 5 ms\n` +
    `  server CPU per request: validate ${real.cpuUsPerRequest.toFixed(0)} µs, noop ${noop.cpuUsPerRequest.toFixed(0)} µs ` +
    `(CPU-bound ratio ${cpuRatio.toFixed(3)}); load average ${loadavg()[0]?.toFixed(1)}\n`,
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
    load_avg_1m: round(loadavg()[0] ?? NaN, 2),
    connections: CONNECTIONS,
    seconds: SECONDS,
  })}\n`,
);
