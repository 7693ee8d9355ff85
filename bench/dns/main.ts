// bench/dns: DNS through the node's proxy vs straight to the resolver (same client, same resolver), and answer-to-connect; one JSON line.
//   Open loop at BENCH_RATE (1,000) queries/s for BENCH_OPEN_SECONDS (10) each way, the client asleep between queries: p50/p99, p99 added
//   by the proxy (median over rounds, and p99_added_pooled_ms: one p99 over all rounds' queries each way); the client's lateness.
//   The node's DNS service runs with the agent's Node options (AGENT_NODE_OPTIONS, as the chart runs it).
//   Saturation: BENCH_CONCURRENCY (32) queries in flight for BENCH_CLOSED_SECONDS (5) each way: queries/s and the median of each round's ratio,
//   and the DNS service's CPU time per proxied query (/proc, user + system); machine_cpu_us_per_query: the whole machine's CPU per query
//   each way, split into loadgen, server (the resolver), proxy (the DNS service), bench, kernel (its threads and unaccounted softirq work).
//   BENCH_CONNECTS (2,000) lookups of names answering fresh addresses, each followed at once by a TCP connect: drops.
// Needs root (network namespaces, eBPF); run it under flock /tmp/membrane-kernel.lock on a shared machine.
import { execFile } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER } from "../../core/model.ts";
import { ADDR, DnsTopology, LOOKUP_CONNECT, RESOLVER_IDENTITY as RESOLVER_ID, ROOT, podDnsPolicy } from "../../node-agent/dns/testing/topology.ts";
import { envNumber, lowerMedian, round3 } from "../lib/stats.ts";
import { addSplits, measuredRun, perRequest, type CpuSplit } from "../lib/machine-cpu.ts";

const run = promisify(execFile);
const LOADGEN = path.join(path.dirname(fileURLToPath(import.meta.url)), "loadgen.ts");
const env = envNumber;
const RATE = env("BENCH_RATE", 1000);
const OPEN_SECONDS = env("BENCH_OPEN_SECONDS", 10);
const CONCURRENCY = env("BENCH_CONCURRENCY", 32);
const CLOSED_SECONDS = env("BENCH_CLOSED_SECONDS", 5);
const CONNECTS = env("BENCH_CONNECTS", 2000);
const ROUNDS = env("BENCH_ROUNDS", 4);

const PROXIED_PORT = 53; // steered to the proxy by policy
const DIRECT_PORT = 5300; // the same resolver, a plain allow
const PROXY_PORT = 10053;
const POLICY = podDnsPolicy([
  { port: PROXIED_PORT, protos: ["UDP"], proxyPort: PROXY_PORT, ruleId: 7 },
  { port: DIRECT_PORT, protos: ["UDP"], proxyPort: 0, ruleId: 9 },
]);
const ZONE = {
  "bench.test": [{ type: "A", data: "10.205.0.20", ttl: 300 }],
  "*.fresh.test": [{ type: "A", data: "synth:10.206.0.0", ttl: 300 }],
};

/** A loadgen's summary; an open loop's also lists every latency in µs. */
type LoadgenResult = Record<string, number> & { lat_us?: number[] };

async function loadgen(topo: DnsTopology, args: (string | number)[]): Promise<LoadgenResult> {
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", LOADGEN, ...args.map(String)], { cwd: ROOT, maxBuffer: 16 << 20 });
  const last = stdout.trim().split("\n").pop() ?? "{}";
  return JSON.parse(last) as LoadgenResult;
}

const median = lowerMedian;

async function main(): Promise<void> {
  const topo = new DnsTopology(`bd${process.pid % 100000}`);
  try {
    await topo.setUp({ zone: ZONE, resolverPorts: [PROXIED_PORT, DIRECT_PORT], resolverIdentity: RESOLVER_ID, policy: POLICY, quietResolver: true });
    await topo.startNodeDns({
      printFlows: false,
      cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 5 },
      policy: POLICY,
      dnsRules: [[7, [{ ruleId: 7, index: 0, matchPattern: "*" }]]],
      fqdnSelectors: [{ ruleId: 8, matchPattern: "*.fresh.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] }],
    });
    const open = { proxy: [] as LoadgenResult[], direct: [] as LoadgenResult[] };
    const closed = { proxy: [] as number[], direct: [] as number[] };
    // The proxy's own CPU per query at saturation (what the shared machine's load does not change much).
    let proxyCpuMs = 0;
    let proxyAnswered = 0;
    // The whole machine's CPU over each saturation run's window, by process (the loadgen, the resolver, the node's DNS service, this
    // process), the kernel's threads and the rest.
    const parts = (): Record<string, readonly number[]> => ({ proxy: [topo.nodeDnsPid()!], server: topo.fx.pids(), bench: [process.pid] });
    const machine = { proxy: { split: { parts: {}, kernel: 0, unaccounted: 0, other: 0, wall: 0 } as CpuSplit, queries: 0 }, direct: { split: { parts: {}, kernel: 0, unaccounted: 0, other: 0, wall: 0 } as CpuSplit, queries: 0 } };
    // Both ways in every round, order swapped each round: the shared machine's drift hits both.
    for (let r = 0; r < ROUNDS; r++) {
      const order: ("proxy" | "direct")[] = r % 2 === 0 ? ["direct", "proxy"] : ["proxy", "direct"];
      for (const way of order) {
        const port = way === "proxy" ? PROXIED_PORT : DIRECT_PORT;
        open[way].push(await loadgen(topo, ["open", ADDR.resolver, port, RATE, OPEN_SECONDS / ROUNDS, "bench.test"]));
        const cpuBefore = topo.nodeDnsCpuMs();
        const { result: c, split } = await measuredRun<LoadgenResult>(["ip", "netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", LOADGEN, "closed", ADDR.resolver, String(port), String(CONCURRENCY), String(CLOSED_SECONDS / ROUNDS), "bench.test"], ROOT, parts);
        closed[way].push(c.qps ?? 0);
        machine[way] = { split: addSplits(machine[way].split, split), queries: machine[way].queries + (c.answered ?? 0) };
        if (way === "proxy") {
          proxyCpuMs += topo.nodeDnsCpuMs() - cpuBefore;
          proxyAnswered += c.answered ?? 0;
        }
      }
    }
    const { stdout } = await run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", LOOKUP_CONNECT, JSON.stringify({ server: ADDR.resolver, port: PROXIED_PORT, count: CONNECTS, allowSuffix: "fresh.test", tcpPort: 8080 })], { cwd: ROOT, maxBuffer: 1 << 20 });
    const connect = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as Record<string, number>;
    const p99 = (way: "proxy" | "direct"): number => median(open[way].map((o) => o.p99_ms ?? NaN));
    const p50 = (way: "proxy" | "direct"): number => median(open[way].map((o) => o.p50_ms ?? NaN));
    // One p99 over every round's queries (10,000 at the defaults) instead of a median of per-round p99s (2,500 each).
    const pooledP99 = (way: "proxy" | "direct"): number => {
      const all = open[way].flatMap((o) => o.lat_us ?? []).sort((a, b) => a - b);
      return all.length ? all[Math.min(all.length - 1, Math.floor(0.99 * all.length))]! / 1000 : NaN;
    };
    const answered = (way: "proxy" | "direct"): number => open[way].reduce((a, o) => a + (o.answered ?? 0), 0);
    const sent = (way: "proxy" | "direct"): number => open[way].reduce((a, o) => a + (o.sent ?? 0), 0);
    const qps = median(closed.proxy);
    const cpu = (way: "proxy" | "direct"): Record<string, number> => perRequest(machine[way].split, machine[way].queries);
    const directQps = median(closed.direct);
    console.log(
      JSON.stringify({
        bench: "dns",
        qps: Math.round(qps),
        direct_qps: Math.round(directQps),
        // Each round's two saturation runs are back to back: their ratio sees one machine state, and the median of those is the figure.
        ratio: round3(median(closed.proxy.map((q, i) => q / (closed.direct[i] ?? NaN)))),
        proxy_cpu_us_per_query: round3((proxyCpuMs * 1000) / proxyAnswered),
        // The whole machine's CPU per query at saturation (µs; other processes on the machine left out), by part, each way;
        // machine_cpu_ratio: direct over proxied, what the throughput ratio comes to when the machine is the bound.
        machine_cpu_us_per_query: { proxy: cpu("proxy"), direct: cpu("direct") },
        machine_cpu_ratio: round3((cpu("direct").machine ?? NaN) / (cpu("proxy").machine ?? NaN)),
        rate: RATE,
        p50_ms: round3(p50("proxy")),
        p99_ms: round3(p99("proxy")),
        direct_p50_ms: round3(p50("direct")),
        direct_p99_ms: round3(p99("direct")),
        p99_added_ms: round3(median(open.proxy.map((o, i) => (o.p99_ms ?? NaN) - (open.direct[i]?.p99_ms ?? NaN)))),
        p99_pooled_ms: round3(pooledP99("proxy")),
        direct_p99_pooled_ms: round3(pooledP99("direct")),
        p99_added_pooled_ms: round3(pooledP99("proxy") - pooledP99("direct")),
        open_unanswered: sent("proxy") - answered("proxy"),
        direct_open_unanswered: sent("direct") - answered("direct"),
        send_late_max_ms: round3(Math.max(...[...open.proxy, ...open.direct].map((o) => o.max_send_late_ms ?? 0))),
        // The client's own lateness (in both ways' latencies): the largest of the open loops' p99s.
        send_late_p99_ms: round3(Math.max(...[...open.proxy, ...open.direct].map((o) => o.send_late_p99_ms ?? 0))),
        connects: CONNECTS,
        lookups_unanswered: connect.unanswered,
        first_connect_drops: connect.first_connect_drops,
        answer_to_connect_p50_ms: round3(connect.connect_p50_ms ?? NaN),
        answer_to_connect_p99_ms: round3(connect.connect_p99_ms ?? NaN),
        load_avg_1m: round3(os.loadavg()[0] ?? NaN),
      }),
    );
  } finally {
    await topo.cleanup();
  }
}

await main();
