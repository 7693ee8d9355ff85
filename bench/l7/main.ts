// bench/l7: HTTP/1.1 and gRPC through the node's L7 proxy (an HTTP allow rule) vs straight (an L4-only allow), same client and server in one run; one JSON line.
//   Saturation: BENCH_CONNECTIONS (32) keep-alive connections for BENCH_CLOSED_SECONDS (6) each way: requests/s and their ratio.
//   Open loop at BENCH_RATE (1,000) requests/s for BENCH_OPEN_SECONDS (6) each way: p50/p99, p99 added by the proxy.
//   gRPC: unary calls to the door manager fixture, BENCH_GRPC_CONNECTIONS (4) channels × BENCH_GRPC_STREAMS (8) calls in flight for
//   BENCH_CLOSED_SECONDS each way (rule: POST /cloudcity.DoorManager/GetName): calls/s and their ratio (grpc_ratio).
//   The proxy runs as the agent runs it: flows sent to a flow socket (read here as the agent reads it), no --log-flows;
//   proxy_cpu_us_per_req: the proxy process's CPU time (user + system) per request in the saturation runs through it (and each part: proxy_user_us_per_req, proxy_system_us_per_req);
//   grpc_proxy_cpu_us_per_call: the same per gRPC call.
//   machine_cpu_us_per_req / grpc_machine_cpu_us_per_call: the whole machine's CPU per request in the saturation runs, each way, split
//   into loadgen, server, proxy, bench (this process: the flow reader and the servers' stdout), kernel (its threads and softirq work
//   no process accounts for); other processes are left out and shown apart. flow_reader_cpu_us_per_req: this process's extra per proxied request.
// Needs root (network namespaces, eBPF); run it under flock /tmp/membrane-kernel.lock on a shared machine.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { DEFAULT_LIMITS } from "../../node-agent/l7proxy/config.ts";
import { ADDR, L7Topology, ROOT } from "../../node-agent/l7proxy/testing/topology.ts";
import { waitForLine } from "../../node-agent/bpf/netns.ts";
import { FlowSocketServer } from "../../node-agent/l7proxy/flow-socket.ts";
import { pino } from "pino";
import { envNumber, lowerMedian, round3 } from "../lib/stats.ts";
import { addSplits, measuredRun, perRequest, processTimes, type CpuSplit } from "../lib/machine-cpu.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const LOADGEN = path.join(here, "loadgen.ts");
const DEATHSTAR = path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts");
const DOORMAN = path.join(ROOT, "node-agent/l7proxy/testing/doorman.ts");
const CLI = path.join(ROOT, "cli/main.ts");
const env = envNumber;
const CONNECTIONS = env("BENCH_CONNECTIONS", 32);
const CLOSED_SECONDS = env("BENCH_CLOSED_SECONDS", 6);
const RATE = env("BENCH_RATE", 1000);
const OPEN_SECONDS = env("BENCH_OPEN_SECONDS", 6);
const ROUNDS = env("BENCH_ROUNDS", 2);
const GRPC_CONNECTIONS = env("BENCH_GRPC_CONNECTIONS", 4);
const GRPC_STREAMS = env("BENCH_GRPC_STREAMS", 8);

const XWING = 1000;
const DEATHSTAR_ID = 2000;
const PROXIED_PORT = 80; // an HTTP allow rule: through the proxy
const DIRECT_PORT = 8080; // the same server, an L4-only allow
const PROXY_PORT = 10090;
const GRPC_PROXIED_PORT = 50051; // a gRPC method rule: through the proxy
const GRPC_DIRECT_PORT = 50052; // the same server, an L4-only allow
const GRPC_PROXY_PORT = 10091;
const egress = (p: Omit<PolicyEntry, "subject" | "direction" | "verdict">): PolicyEntry => ({ subject: XWING, direction: "egress", verdict: "allow", ...p });
const POLICIES: SubjectPolicy[] = [
  {
    subject: XWING,
    ingressEnforced: false,
    egressEnforced: true,
    entries: [
      egress({ peer: DEATHSTAR_ID, proto: PROTO_NUMBER.TCP, port: PROXIED_PORT, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: 7 }),
      egress({ peer: DEATHSTAR_ID, proto: PROTO_NUMBER.TCP, port: DIRECT_PORT, portPrefixLen: 16, proxyPort: 0, ruleId: 9 }),
      egress({ peer: DEATHSTAR_ID, proto: PROTO_NUMBER.TCP, port: GRPC_PROXIED_PORT, portPrefixLen: 16, proxyPort: GRPC_PROXY_PORT, ruleId: 10 }),
      egress({ peer: DEATHSTAR_ID, proto: PROTO_NUMBER.TCP, port: GRPC_DIRECT_PORT, portPrefixLen: 16, proxyPort: 0, ruleId: 11 }),
    ],
  },
  { subject: DEATHSTAR_ID, ingressEnforced: false, egressEnforced: false, entries: [] },
];

async function loadgen(topo: L7Topology, args: (string | number)[]): Promise<Record<string, number>> {
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", LOADGEN, ...args.map(String)], { cwd: ROOT, maxBuffer: 1 << 20 });
  return JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as Record<string, number>;
}

/** A saturation run (closed or grpc) with the machine's CPU over its measured window, split by the bench's processes. */
function measuredLoadgen(topo: L7Topology, args: (string | number)[], parts: () => Record<string, readonly number[]>): Promise<{ result: Record<string, number>; split: CpuSplit }> {
  return measuredRun<Record<string, number>>(["ip", "netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", LOADGEN, ...args.map(String)], ROOT, parts);
}

const median = lowerMedian;

/** BENCH_PROXY_CPU_PROF=DIR: the proxy runs with --cpu-prof, its profile written into DIR. */
const PROFILE = process.env.BENCH_PROXY_CPU_PROF ? ["--cpu-prof", "--cpu-prof-dir", path.resolve(process.env.BENCH_PROXY_CPU_PROF)] : [];
/** BENCH_PROXY_NODE_FLAGS="--flag …": Node/V8 flags for the proxy's process only (e.g. to try a V8 heap setting). */
const PROXY_FLAGS = process.env.BENCH_PROXY_NODE_FLAGS?.split(" ").filter(Boolean) ?? [];
/**
 * BENCH_PROXY_BUNDLE=1 (make bench-l7 sets it): the proxy as shipped, `node dist/membrane.mjs l7proxy` (make build); else through tsx,
 * whose per-closure name helper costs the HTTP/2 path a few µs a call that the image never pays.
 */
const BUNDLE = path.join(ROOT, "dist/membrane.mjs");
const PROXY_ENTRY = process.env.BENCH_PROXY_BUNDLE === "1" ? [BUNDLE] : ["--import", "tsx", CLI];

async function main(): Promise<void> {
  if (PROXY_ENTRY[0] === BUNDLE && !existsSync(BUNDLE)) throw new Error(`${BUNDLE} does not exist: run make build (make bench-l7 does)`);
  const topo = new L7Topology(`bl${process.pid % 100000}`);
  const children: ChildProcess[] = [];
  let flowServerStop: (() => Promise<void>) | undefined;
  try {
    const ports = [
      { port: PROXY_PORT, http: [{ ruleId: 7, index: 0, rule: { method: "GET", path: "/.*" } }] },
      { port: GRPC_PROXY_PORT, http: [{ ruleId: 10, index: 0, rule: { method: "POST", path: "/cloudcity.DoorManager/GetName" } }] },
    ];
    // The proxied port's server drops its lines as the direct one's does (kept, they were this process's work on the proxied side only).
    await topo.setUp({ policies: POLICIES, config: { address: ADDR.node, limits: DEFAULT_LIMITS, ports }, quietServer: true });
    // The same server on the direct port too (the fixture's prints a line per request on both).
    const direct = topo.fx.spawn(topo.ns.deathstar, process.execPath, ["--import", "tsx", DEATHSTAR, "0.0.0.0", String(DIRECT_PORT)]);
    direct.stdout?.resume();
    await waitForLine(direct, /^listening/, 20000);
    // The door manager on both gRPC ports, quiet (no line per call).
    for (const p of [GRPC_PROXIED_PORT, GRPC_DIRECT_PORT]) {
      const door = topo.fx.spawn(topo.ns.deathstar, process.execPath, ["--import", "tsx", DOORMAN, "serve", "0.0.0.0", String(p), "quiet"]);
      door.stdout?.resume();
      await waitForLine(door, /^listening/, 20000);
    }
    // The proxy as the agent runs it: its flows to the agent's flow socket, without --log-flows.
    const flowSocket = path.join(topo.dir, "l7proxy.flows.sock");
    let flows = 0;
    const flowServer = new FlowSocketServer(flowSocket, () => void flows++, pino({ level: "warn" }));
    await flowServer.start();
    flowServerStop = () => flowServer.stop();
    const proxy = spawn("nsenter", [`--net=/var/run/netns/${topo.ns.host}`, process.execPath, ...PROFILE, ...PROXY_FLAGS, ...PROXY_ENTRY, "l7proxy", "--config", topo.configFile, "--bpf-scope", topo.scope, "--flow-socket", flowSocket], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    children.push(proxy);
    await waitForLine(proxy, /l7 proxy ready/, 30000);
    proxy.stdout?.resume();
    const closed = { proxy: [] as number[], direct: [] as number[] };
    const open = { proxy: [] as Record<string, number>[], direct: [] as Record<string, number>[] };
    const grpc = { proxy: [] as number[], direct: [] as number[] };
    const proxyCpu = { user: 0, system: 0, requests: 0 };
    const proxyCpuOpen = { micros: 0, requests: 0 };
    const proxyCpuGrpc = { micros: 0, calls: 0 };
    // The whole machine's CPU over each saturation run's window, by process: the loadgen, the servers, the proxy, this process
    // (the flow socket's reader, as the agent reads it, and the servers' stdout), the kernel's threads and the rest.
    const parts = (): Record<string, readonly number[]> => ({ proxy: [proxy.pid!], server: topo.fx.pids(), bench: [process.pid] });
    const empty = (): { split: CpuSplit; requests: number } => ({ split: { parts: {}, kernel: 0, unaccounted: 0, other: 0, wall: 0 }, requests: 0 });
    const machine = { http: { proxy: empty(), direct: empty() }, grpc: { proxy: empty(), direct: empty() } };
    const account = (kind: "http" | "grpc", way: "proxy" | "direct", split: CpuSplit, requests: number): void => {
      machine[kind][way] = { split: addSplits(machine[kind][way].split, split), requests: machine[kind][way].requests + requests };
    };
    let failed = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const order: ("proxy" | "direct")[] = r % 2 === 0 ? ["direct", "proxy"] : ["proxy", "direct"];
      for (const way of order) {
        const port = way === "proxy" ? PROXIED_PORT : DIRECT_PORT;
        const cpuBefore = processTimes(proxy.pid!);
        const { result: c, split: closedSplit } = await measuredLoadgen(topo, ["closed", ADDR.deathstar, port, CONNECTIONS, CLOSED_SECONDS / ROUNDS], parts);
        closed[way].push(c.rps ?? 0);
        account("http", way, closedSplit, (c.rps ?? 0) * (CLOSED_SECONDS / ROUNDS));
        if (way === "proxy") {
          const cpuAfter = processTimes(proxy.pid!);
          proxyCpu.user += cpuAfter.user - cpuBefore.user;
          proxyCpu.system += cpuAfter.system - cpuBefore.system;
          proxyCpu.requests += (c.rps ?? 0) * (CLOSED_SECONDS / ROUNDS);
        }
        const openBefore = processTimes(proxy.pid!);
        const o = await loadgen(topo, ["open", ADDR.deathstar, port, RATE, OPEN_SECONDS / ROUNDS]);
        if (way === "proxy") {
          const openAfter = processTimes(proxy.pid!);
          proxyCpuOpen.micros += openAfter.user + openAfter.system - openBefore.user - openBefore.system;
          proxyCpuOpen.requests += o.sent ?? 0;
        }
        open[way].push(o);
        const grpcBefore = processTimes(proxy.pid!);
        const { result: g, split: grpcSplit } = await measuredLoadgen(topo, ["grpc", ADDR.deathstar, way === "proxy" ? GRPC_PROXIED_PORT : GRPC_DIRECT_PORT, GRPC_CONNECTIONS, GRPC_STREAMS, CLOSED_SECONDS / ROUNDS], parts);
        grpc[way].push(g.rps ?? 0);
        account("grpc", way, grpcSplit, (g.rps ?? 0) * (CLOSED_SECONDS / ROUNDS));
        if (way === "proxy") {
          const grpcAfter = processTimes(proxy.pid!);
          proxyCpuGrpc.micros += grpcAfter.user + grpcAfter.system - grpcBefore.user - grpcBefore.system;
          proxyCpuGrpc.calls += (g.rps ?? 0) * (CLOSED_SECONDS / ROUNDS);
        }
        failed += (c.failed ?? 0) + (o.failed ?? 0) + (g.failed ?? 0);
      }
    }
    const rps = median(closed.proxy);
    const directRps = median(closed.direct);
    const p = (way: "proxy" | "direct", k: string): number => median(open[way].map((o) => o[k] ?? NaN));
    const cpu = (kind: "http" | "grpc", way: "proxy" | "direct"): Record<string, number> => perRequest(machine[kind][way].split, machine[kind][way].requests);
    const cpuRatio = (kind: "http" | "grpc"): number => round3((cpu(kind, "direct").machine ?? NaN) / (cpu(kind, "proxy").machine ?? NaN));
    // This process reads the servers' stdout both ways; what it spends more per proxied request is the flow socket's reader.
    const flowReader = (kind: "http" | "grpc"): number => Math.round(((cpu(kind, "proxy").bench ?? NaN) - (cpu(kind, "direct").bench ?? NaN)) * 10) / 10;
    console.log(
      JSON.stringify({
        bench: "l7",
        proxy: PROXY_ENTRY[0] === BUNDLE ? "bundle" : "tsx",
        rps: Math.round(rps),
        direct_rps: Math.round(directRps),
        ratio: round3(rps / directRps),
        grpc_ratio: round3(median(grpc.proxy) / median(grpc.direct)),
        grpc_rps: Math.round(median(grpc.proxy)),
        grpc_direct_rps: Math.round(median(grpc.direct)),
        connections: CONNECTIONS,
        rate: RATE,
        p50_ms_at_1000: round3(p("proxy", "p50_ms")),
        p99_ms_at_1000: round3(p("proxy", "p99_ms")),
        direct_p50_ms_at_1000: round3(p("direct", "p50_ms")),
        direct_p99_ms_at_1000: round3(p("direct", "p99_ms")),
        p99_added_ms_at_1000: round3(p("proxy", "p99_ms") - p("direct", "p99_ms")),
        proxy_cpu_us_per_req: Math.round((proxyCpu.user + proxyCpu.system) / proxyCpu.requests),
        // The system part is mostly the socket writes: each runs the veth, the eBPF programs and the receiver's TCP in the proxy's thread.
        proxy_user_us_per_req: Math.round(proxyCpu.user / proxyCpu.requests),
        proxy_system_us_per_req: Math.round(proxyCpu.system / proxyCpu.requests),
        // The same at the fixed 1,000 req/s (fewer requests per wake-up than at saturation, so more per request; less swayed by the machine's load).
        proxy_cpu_us_per_req_at_1000: Math.round(proxyCpuOpen.micros / proxyCpuOpen.requests),
        // The same for the gRPC calls through it (the warm-up call of each channel included).
        grpc_proxy_cpu_us_per_call: Math.round(proxyCpuGrpc.micros / proxyCpuGrpc.calls),
        // The whole machine's CPU per request at saturation (µs; other processes on the machine left out), by part, each way;
        // machine_cpu_ratio: direct over proxied, what the throughput ratio comes to when the machine is the bound.
        machine_cpu_us_per_req: { proxy: cpu("http", "proxy"), direct: cpu("http", "direct") },
        machine_cpu_ratio: cpuRatio("http"),
        flow_reader_cpu_us_per_req: flowReader("http"),
        grpc_machine_cpu_us_per_call: { proxy: cpu("grpc", "proxy"), direct: cpu("grpc", "direct") },
        grpc_machine_cpu_ratio: cpuRatio("grpc"),
        grpc_flow_reader_cpu_us_per_call: flowReader("grpc"),
        flows,
        failed,
        send_late_max_ms: round3(Math.max(...[...open.proxy, ...open.direct].map((o) => o.max_send_late_ms ?? 0))),
        load_avg_1m: round3(os.loadavg()[0] ?? NaN),
      }),
    );
  } finally {
    // A profiled proxy writes its profile when it exits on SIGTERM.
    for (const c of children) c.kill(PROFILE.length ? "SIGTERM" : "SIGKILL");
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once("exit", r)))));
    await flowServerStop?.();
    await topo.cleanup();
  }
}

await main();
