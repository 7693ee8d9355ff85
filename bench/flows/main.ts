// Benchmark: 50,000 flows/s through the Hubble relay to a following client. An agent process (real maps, real observer) fed
// with synthetic datapath records, the relay in its own process, a following GetFlows client here: flows delivered vs.
// kept by the agent (none lost), the relay's memory, and the delivery latency (flow time → client) p50/p99. Root (bpffs).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import { loadavg } from "node:os";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import * as grpc from "@grpc/grpc-js";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { makePki } from "../../kube/testing/pki.ts";
import { BPFFS_ROOT } from "../../node-agent/bpf/loader.ts";
import type { LoadAgentConfig } from "../../node-agent/observer/loadagent.ts";
import { loadState, type PacedRunResult } from "../../node-agent/observer/loadgen.ts";
import type { FlowCounters } from "../../node-agent/observer/buffer.ts";
import { HubbleClient } from "../../flowapi/hubble/client.ts";
import { msOf, type GetFlowsResponse } from "../../flowapi/hubble/types.ts";

const RATE = Number(process.env.BENCH_RATE ?? 50_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
/** How long the client may take after the generator stopped to receive what is still in flight. */
const DRAIN_MS = Number(process.env.BENCH_DRAIN_SECONDS ?? 15) * 1000;
/** Set to a directory to have the agent (its generating phase) and the relay write V8 CPU profiles there. */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;
const MiB = 1024 * 1024;
const LOAD_AGENT = fileURLToPath(new URL("../../node-agent/observer/loadagent.ts", import.meta.url));
const RELAY = fileURLToPath(new URL("./relay.ts", import.meta.url));

interface Done extends PacedRunResult {
  counters: FlowCounters & { kept: number; capacity: number };
}

/** Reads a child's JSON lines; `next(key)` waits for the first line with that key. */
function lines(child: ChildProcess, name: string): { all: Record<string, unknown>[]; next(key: string, timeoutMs: number): Promise<unknown>; stderr(): string; logged(msg: string): number } {
  const all: Record<string, unknown>[] = [];
  const messages = new Map<string, number>();
  let err = "";
  createInterface({ input: child.stdout! }).on("line", (l) => all.push(JSON.parse(l) as Record<string, unknown>));
  createInterface({ input: child.stderr! }).on("line", (l) => {
    err = (err + l + "\n").slice(-4000);
    const msg = /"msg":"([^"]*)"/.exec(l)?.[1];
    if (msg !== undefined) messages.set(msg, (messages.get(msg) ?? 0) + 1);
  });
  return {
    all,
    stderr: () => err,
    logged: (msg) => messages.get(msg) ?? 0,
    async next(key, timeoutMs) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hit = all.find((l) => key in l);
        if (hit) return hit[key];
        if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}) before "${key}": ${err}`);
        if (Date.now() > end) throw new Error(`no "${key}" from ${name} within ${timeoutMs} ms: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 5000).unref())]);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

async function main(): Promise<void> {
  const tag = `bf${process.pid % 100000}`;
  const node = `${tag}-node`;
  const scope = `bench-${tag}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bench-flows-"));
  const pki = await makePki([node]);
  const server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "silent" }));
  let agent: ChildProcess | undefined;
  let relay: ChildProcess | undefined;
  let client: HubbleClient | undefined;
  try {
    const port = await server.listen(0);
    server.publish(node, loadState());
    const cfg: LoadAgentConfig = { node, operator: `127.0.0.1:${port}`, pkiDir: pki.dir, scope, dir, rate: RATE, durationMs: SECONDS * 1000, capacity: 4096, startOnStdin: true, ...(PROFILE_DIR ? { profileDir: PROFILE_DIR } : {}) };
    agent = spawn(process.execPath, ["--expose-gc", "--import", "tsx", LOAD_AGENT, JSON.stringify(cfg)], { stdio: ["pipe", "pipe", "pipe"] });
    const agentOut = lines(agent, "the load agent");
    const ready = (await agentOut.next("ready", 60_000)) as { observer: string };

    relay = spawn(process.execPath, ["--import", "tsx", ...(PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : []), RELAY, ready.observer], { stdio: ["ignore", "pipe", "pipe"] });
    const relayOut = lines(relay, "the relay");
    const relayAddress = (await relayOut.next("address", 60_000)) as string;

    // The following client: every flow (no filter), as `hubble observe -f` through the relay.
    client = new HubbleClient(relayAddress);
    let delivered = 0;
    let toldLost = 0;
    let latencies = new Float64Array(RATE * SECONDS * 2);
    let streamError: string | undefined;
    const stream = client.getFlows({ follow: true });
    stream.on("data", (r: GetFlowsResponse) => {
      if (r.lost_events !== undefined) toldLost += Number(r.lost_events.num_events_lost);
      if (r.flow === undefined) return;
      if (delivered === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2);
        bigger.set(latencies);
        latencies = bigger;
      }
      latencies[delivered++] = Date.now() - msOf(r.time)!;
    });
    stream.on("error", (e: grpc.ServiceError) => {
      if (e.code !== grpc.status.CANCELLED) streamError = `${grpc.status[e.code]}: ${e.details}`;
    });
    // The relay opens its stream to the agent when the client's arrives: give both a moment, then start generating.
    await new Promise((r) => setTimeout(r, 1500));
    const relayBefore = relayOut.all.filter((l) => "rss" in l).at(-1) as { rss: number; heapUsed: number };
    const cpuBefore = { agent: cpuSeconds(agent.pid), relay: cpuSeconds(relay.pid), client: process.cpuUsage() };
    agent.stdin!.write("start\n");
    const done = (await agentOut.next("done", SECONDS * 1000 + 60_000)) as Done;
    const expected = done.counters.forwarded + done.counters.dropped - done.counters.sampledOut;
    const drainEnd = Date.now() + DRAIN_MS;
    while (delivered + toldLost < expected && Date.now() < drainEnd && streamError === undefined) await new Promise((r) => setTimeout(r, 100));
    const clientCpu = process.cpuUsage(cpuBefore.client);
    // CPU per flow of each process over the run and its drain (the bench process is the client, plus the idle operator stub).
    const perFlowUs = (s: number): number => +((s * 1e6) / Math.max(1, done.generated)).toFixed(1);
    const cpu = {
      agent_us_per_flow: perFlowUs(cpuSeconds(agent.pid) - cpuBefore.agent),
      relay_us_per_flow: perFlowUs(cpuSeconds(relay.pid) - cpuBefore.relay),
      client_us_per_flow: perFlowUs((clientCpu.user + clientCpu.system) / 1e6),
    };
    const memory = relayOut.all.filter((l): l is { rss: number; heapUsed: number } => "rss" in l);
    const relayMaxRss = Math.max(...memory.map((m) => m.rss));
    const relayMaxHeap = Math.max(...memory.map((m) => m.heapUsed));
    const lat = latencies.slice(0, delivered).sort();
    const result = {
      bench: "flows",
      target_rate: RATE,
      achieved_rate: done.rate,
      seconds: SECONDS,
      generated: done.generated,
      kept_by_agent: expected,
      delivered_through_relay: delivered,
      lost: expected - delivered,
      // Of those, how many agent or relay told the client it lost (Hubble's LostEvent: a follower more than 50,000
      // flows behind loses what does not fit); lost − told_lost were lost untold.
      told_lost: toldLost,
      stream_error: streamError ?? null,
      // An agent whose stream ends (a restart) is asked again from the last flow the relay passed on.
      relay_reasked_agent: relayOut.logged("hubble relay: a node's flow stream ended; asking again"),
      delivery_latency_p50_ms: percentile(lat, 50),
      delivery_latency_p99_ms: percentile(lat, 99),
      delivery_latency_max_ms: lat.length ? lat[lat.length - 1] : NaN,
      relay_rss_mib_before: +(relayBefore.rss / MiB).toFixed(1),
      relay_rss_mib_max: +(relayMaxRss / MiB).toFixed(1),
      relay_heap_mib_max: +(relayMaxHeap / MiB).toFixed(1),
      ...cpu,
      load_avg_1m: +loadavg()[0]!.toFixed(2),
      target: "generator ≥ 95 % of target_rate, none lost, relay memory bounded, p99 delivery latency < 1000 ms",
      met: done.rate >= 0.95 * RATE && expected === delivered && percentile(lat, 99) < 1000,
    };
    console.log(
      `# ${done.generated} events at ${done.rate}/s; agent kept ${expected}; the client received ${delivered} through the relay` +
        `${streamError ? ` (stream ended: ${streamError})` : ""}; latency p50 ${result.delivery_latency_p50_ms} ms, p99 ${result.delivery_latency_p99_ms} ms; relay rss ${result.relay_rss_mib_before} → max ${result.relay_rss_mib_max} MiB`,
    );
    stream.cancel();
    console.log(JSON.stringify(result));
  } finally {
    client?.close();
    await stop(relay);
    await stop(agent);
    await server.close();
    pki.remove();
    fs.rmSync(path.join(BPFFS_ROOT, scope), { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
