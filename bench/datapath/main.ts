// bench/datapath: new TCP connections/s and bulk throughput between two netns — no program, an empty program, a conntrack-only
// program, Membrane at every N and every monitor aggregation level, nftables; all interleaved.
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import type { Datapath as DatapathInstance } from "../../node-agent/bpf/datapath.ts";
import { DEFAULT_MONITOR_AGGREGATION, MONITOR_AGGREGATION_LEVELS, isMonitorAggregation, type MonitorAggregation } from "../../node-agent/monitor-aggregation.ts";

process.env.LOG_LEVEL ??= "warn"; // keep the loader's per-event logs out of the benchmark output
const { Datapath } = await import("../../node-agent/bpf/datapath.ts");
const { NetnsFixture, ifindexIn, waitForLine } = await import("../../node-agent/bpf/netns.ts");
const { BpfObject, attachTcx, detachTcx, enableRunTimeStats, programRunStats, testRun } = await import("../../node-agent/bpf/loader.ts");
const { frame, TCP_SYN, TCP_ACK } = await import("../../node-agent/bpf/frames.ts");

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

const SIZES = (process.env.BENCH_SIZES ?? "10,1000,10000,100000").split(",").map(Number);
/** The level of the N series (the agent's default unless BENCH_MONITOR_AGGREGATION says otherwise)... */
const LEVEL = monitorAggregationFromEnv("BENCH_MONITOR_AGGREGATION", DEFAULT_MONITOR_AGGREGATION);
/** ...and the other levels, each measured at the first N (BENCH_LEVELS, "" = none). */
const OTHER_LEVELS = (process.env.BENCH_LEVELS ?? MONITOR_AGGREGATION_LEVELS.join(",")).split(",").filter((x) => x !== "").map((x) => monitorAggregationFromEnv("BENCH_LEVELS", x)).filter((x) => x !== LEVEL);
const ROUNDS = Number(process.env.BENCH_SAMPLES ?? 21); // interleaved rounds; every figure is a median over them
const SAMPLE_SECONDS = Number(process.env.BENCH_SAMPLE_SECONDS ?? 0.5);
const PROGRAM_TIME_ROUNDS = 3; // the run-time-stats pass: medians of 3
/** CPUs for the client and the server (taskset), so that the scheduler's placement is no variable; "" = unpinned. */
const PIN = (process.env.BENCH_PIN ?? (os.cpus().length >= 2 ? "0,1" : "")).split(",").filter((x) => x !== "");
const pinned = (cpu: string | undefined, cmd: string, args: readonly string[]): [string, string[]] => (cpu === undefined ? [cmd, [...args]] : ["taskset", ["-c", cpu, cmd, ...args]]);
const PORT = 5201;
const tag = `mbd${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_SRV = `${tag}-srv`;
const POD_IF = `${tag}p`;
const SRV_IF = `${tag}s`;
const POD_IP = "10.202.0.1";
const SRV_IP = "10.202.0.2";
const SRV_ID = 2000;
const NFT_TABLE = `${tag}`;
const LOOPBACK = 1;
const PROBE_POD_IP = "10.202.9.1"; // the same subject behind lo, for BPF_PROG_TEST_RUN

function monitorAggregationFromEnv(name: string, v: string): MonitorAggregation {
  if (!isMonitorAggregation(v)) throw new Error(`${name}: ${JSON.stringify(v)} is not one of ${MONITOR_AGGREGATION_LEVELS.join(", ")}`);
  return v;
}

/** The pod's identity while the policy of N entries is in force: one subject per N, all in the map at once. */
const subjectFor = (sizeIndex: number): number => 1000 + sizeIndex;

interface Row {
  /** hook-only: an empty tc program (bench/datapath/empty.c), the floor of any tc datapath; conntrack-ref: a program that
   * only parses and tracks the connection (bench/datapath/ctref.c); membrane-level: Membrane at another monitor aggregation level. */
  readonly variant: "baseline" | "hook-only" | "conntrack-ref" | "membrane" | "membrane-level" | "nftables";
  readonly entries: number;
  /** membrane, membrane-level: the monitor aggregation level. */
  readonly monitorAggregation?: MonitorAggregation;
  /** Verdict events read per new connection (connection-rate samples). */
  readonly eventsPerConn?: number;
  readonly connPerSec: number;
  readonly bulkGbps: number;
  /** The same per CPU second of the sending process: what the datapath costs, whatever CPU share the machine's load left. */
  readonly connPerCpuSecond: number;
  readonly bulkGbitPerCpuSecond: number;
  /** programs only: the programs' mean time per packet on the veth (kernel run-time stats, in a pass of their own after the timed rounds) during connection-rate samples (a new flow every ~4 packets)... */
  readonly progNsPerPacketConn?: number;
  /** ...and during the bulk samples (established flow only). */
  readonly progNsPerPacketBulk?: number;
  /** membrane only: the program's mean time for a new flow that misses every entry of its subject (then default-deny). */
  readonly progNsPerNewFlow?: number;
}

/** One configuration measured in every round: how to switch it on and off. */
interface Variant {
  readonly name: string;
  readonly kind: Row["variant"];
  readonly entries: number;
  readonly monitorAggregation?: MonitorAggregation;
  readonly enable: () => void;
  readonly disable: () => void;
  /** The programs whose run-time stats the stats pass reads (none: the pass skips the variant). */
  readonly progFds?: readonly number[];
}

interface Samples {
  readonly conn: number[];
  readonly bulk: number[];
  /** The same per CPU second of the sender (whose context runs most of the packet path on a veth): cost, not CPU share. */
  readonly connPerCpu: number[];
  readonly bulkPerCpu: number[];
  readonly nsPerPacketConn: number[];
  readonly nsPerPacketBulk: number[];
  readonly eventsPerConn: number[];
}

function log(msg: string): void {
  process.stderr.write(`bench/datapath: ${msg}\n`);
}

function buildTools(): { bin: string; emptyObject: string; ctrefObject: string } {
  execFileSync("make", ["-s", "-C", path.join(root, "bpf")], { stdio: "inherit" });
  const dir = path.join(root, ".cache", "bench-datapath");
  fs.mkdirSync(dir, { recursive: true });
  const bin = path.join(dir, "tcpbench");
  execFileSync("clang", ["-O2", "-Wall", "-Werror", "-o", bin, path.join(here, "tcpbench.c")], { stdio: "inherit" });
  const emptyObject = path.join(dir, "empty.o");
  const bpfFlags = ["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", `-I/usr/include/${os.machine()}-linux-gnu`, `-I${path.join(root, "bpf", "lib")}`];
  execFileSync("clang", [...bpfFlags, "-c", path.join(here, "empty.c"), "-o", emptyObject], { stdio: "inherit" });
  const ctrefObject = path.join(dir, "ctref.o");
  execFileSync("clang", [...bpfFlags, "-c", path.join(here, "ctref.c"), "-o", ctrefObject], { stdio: "inherit" });
  return { bin, emptyObject, ctrefObject };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** One sample: the rate (connections/s or bits/s) and the same work per CPU second of the sending process. */
async function sample(bin: string, mode: "connrate" | "bulk"): Promise<{ rate: number; perCpuSecond: number }> {
  const [cmd, args] = pinned(PIN[0], bin, [mode, SRV_IP, String(PORT), String(SAMPLE_SECONDS)]);
  const { stdout } = await run("ip", ["netns", "exec", NS_POD, cmd, ...args]);
  const f = stdout.trim().split(/\s+/).map(Number);
  return mode === "connrate" ? { rate: f[0]!, perCpuSecond: f[3]! } : { rate: f[0]!, perCpuSecond: f[2]! };
}

/**
 * The new-flow cost per N, all N in the map at once: rounds over every N (one endpoint write
 * switches the probe's subject) so that warm-up and other processes' load hit every N alike.
 */
function newFlowCosts(dp: DatapathInstance, drain: () => number): Map<number, number> {
  const runs = new Map<number, number[]>(SIZES.map((n) => [n, []]));
  for (let round = 0; round < 5; round++) {
    SIZES.forEach((n, k) => {
      dp.setEndpoint({ ip: PROBE_POD_IP, ifindex: LOOPBACK, identity: subjectFor(k), ingressEnforced: true, egressEnforced: true });
      runs.get(n)!.push(programCost(dp, drain));
    });
  }
  return new Map([...runs].map(([n, xs]) => [n, median(xs)]));
}

/** Mean ns of from-container on a new flow that probes every key its subject uses and misses (then default-deny). */
function programCost(dp: DatapathInstance, drain: () => number): number {
  const syn = frame({ src: PROBE_POD_IP, dst: SRV_IP, proto: PROTO_NUMBER.TCP, sport: 40000, dport: PORT + 1 });
  const fd = dp.programFd("from_container");
  const runs: number[] = [];
  for (let i = 0; i < 8; i++) {
    runs.push(testRun(fd, syn, { ifindex: LOOPBACK, repeat: 2000 }).durationNs);
    drain(); // each run reports 2000 drops: keep the ring from filling
  }
  return median(runs);
}

/**
 * The kernel's time for one whole connection as the bench makes them (SYN and the client's ACK and
 * RST through the egress program, the SYN-ACK through the ingress one), by BPF_PROG_TEST_RUN: a new
 * source port per connection, medians of 5 rounds of 2,000. Program time only, so the machine's load
 * moves it little; it says which part of the per-connection cost is whose.
 */
function connectionCostNs(egressFd: number, ingressFd: number, reset: () => void, drain: () => number): number {
  const CONNECTIONS = 2000;
  const RST = 0x04;
  const rounds: number[] = [];
  for (let round = 0; round < 5; round++) {
    reset();
    let ns = 0;
    for (let i = 0; i < CONNECTIONS; i++) {
      const sport = 20000 + i;
      const out = (tcpFlags: number) => frame({ src: PROBE_POD_IP, dst: SRV_IP, proto: PROTO_NUMBER.TCP, sport, dport: PORT, tcpFlags });
      const back = frame({ src: SRV_IP, dst: PROBE_POD_IP, proto: PROTO_NUMBER.TCP, sport: PORT, dport: sport, tcpFlags: TCP_SYN | TCP_ACK });
      ns += testRun(egressFd, out(TCP_SYN), { ifindex: LOOPBACK }).durationNs;
      ns += testRun(ingressFd, back, { ifindex: LOOPBACK }).durationNs;
      ns += testRun(egressFd, out(TCP_ACK), { ifindex: LOOPBACK }).durationNs;
      ns += testRun(egressFd, out(RST | TCP_ACK), { ifindex: LOOPBACK }).durationNs;
    }
    drain();
    rounds.push(ns / CONNECTIONS);
  }
  return Math.round(median(rounds));
}

/** N entries: N-1 other peers on the port, then the server's identity (the one traffic hits). */
function membranePolicy(subject: number, n: number): SubjectPolicy {
  const entries: PolicyEntry[] = [];
  for (let i = 0; i < n; i++) {
    const peer = i === n - 1 ? SRV_ID : 10_000 + i;
    entries.push({ subject, direction: "egress", peer, proto: PROTO_NUMBER.TCP, port: PORT, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: i });
  }
  return { subject, ingressEnforced: true, egressEnforced: true, entries };
}

function peerIp(i: number): string {
  const v = (172 << 24) | (16 << 16) | i; // 172.16.0.0/12 holds 100,000 peers
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

/**
 * The same policies as rule lists: one chain per N with one rule per peer, the hit last. The input
 * hook's chain (established first, then a jump to one list) is filled to switch a variant on.
 */
function nftRules(sizes: readonly number[]): string {
  const lines = [`table inet ${NFT_TABLE} {`];
  for (const n of sizes) {
    lines.push(`  chain peers_${n} {`);
    for (let i = 0; i < n; i++) {
      const ip = i === n - 1 ? SRV_IP : peerIp(i);
      lines.push(`    iifname "${SRV_IF}" ip daddr ${ip} tcp dport ${PORT} accept`);
    }
    lines.push(`    iifname "${SRV_IF}" drop`, "  }");
  }
  lines.push("  chain input {", "    type filter hook input priority 0; policy accept;", "  }", "}");
  return lines.join("\n") + "\n";
}

function nft(...args: string[]): void {
  execFileSync("ip", ["netns", "exec", NS_SRV, "nft", ...args]);
}

/** The strides that step through n variants visiting each once (coprime with n). */
function coprimeStrides(n: number): number[] {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const out: number[] = [];
  for (let s = 1; s < Math.max(n, 2); s++) if (gcd(s, n) === 1) out.push(s);
  return out;
}

/**
 * Every round measures every variant (baseline, Membrane at each N, nftables at each N) back to
 * back, in an order rotated per round, switching in milliseconds (attach/detach and one endpoint
 * write; one jump rule). The noise of a shared machine then hits all variants alike, and each
 * figure is a median over the rounds. The rounds also step through the variants by different
 * strides, so a variant does not always follow the same one: what a variant may leave behind (e.g. the
 * kernel's conntrack entries of nftables' fastest run) is not charged to one neighbour every round
 * (with a plain rotation Membrane at N = 1,000 always followed nftables at N = 10 and read lowest).
 */
/** eventsRead: drains the ring and returns how many records were read so far (also by the reader's own timer). */
async function measureInterleaved(bin: string, variants: readonly Variant[], eventsRead: () => number): Promise<Map<string, Samples>> {
  const samples = new Map(variants.map((v) => [v.name, { conn: [], bulk: [], connPerCpu: [], bulkPerCpu: [], nsPerPacketConn: [], nsPerPacketBulk: [], eventsPerConn: [] } as Samples]));
  const strides = coprimeStrides(variants.length);
  for (let round = 0; round < ROUNDS; round++) {
    const roundStart = Date.now();
    const shift = round % variants.length; // every variant visits every slot of the round
    const stride = strides[round % strides.length]!;
    const order = variants.map((_, i) => variants[(shift + i * stride) % variants.length]!);
    for (const v of order) {
      const s = samples.get(v.name)!;
      v.enable();
      try {
        const read = eventsRead();
        const conn = await sample(bin, "connrate");
        s.eventsPerConn.push((eventsRead() - read) / Math.max(1, conn.rate * SAMPLE_SECONDS));
        const bulk = await sample(bin, "bulk");
        s.conn.push(conn.rate);
        s.connPerCpu.push(conn.perCpuSecond);
        s.bulk.push(bulk.rate);
        s.bulkPerCpu.push(bulk.perCpuSecond);
      } finally {
        v.disable();
      }
    }
    log(`round ${round + 1}/${ROUNDS} in ${Date.now() - roundStart} ms (load ${os.loadavg()[0]!.toFixed(1)})`);
  }
  return samples;
}

/**
 * The programs' own time per packet, in a pass after the timed rounds: the kernel's run-time stats
 * (BPF_ENABLE_STATS) cost two clock reads per program run, which the timed samples must not pay.
 */
async function measureProgramTime(bin: string, variants: readonly Variant[], samples: Map<string, Samples>): Promise<void> {
  const stats = enableRunTimeStats();
  try {
    for (let round = 0; round < PROGRAM_TIME_ROUNDS; round++) {
      for (const v of variants) {
        if (!v.progFds) continue;
        const fds = v.progFds;
        const runStats = (): { ns: bigint; count: bigint } => {
          let ns = 0n;
          let count = 0n;
          for (const fd of fds) {
            const st = programRunStats(fd);
            ns += st.runTimeNs;
            count += st.runCount;
          }
          return { ns, count };
        };
        const s = samples.get(v.name)!;
        v.enable();
        try {
          const t0 = runStats();
          await sample(bin, "connrate");
          const t1 = runStats();
          await sample(bin, "bulk");
          const t2 = runStats();
          s.nsPerPacketConn.push(Number(t1.ns - t0.ns) / Math.max(1, Number(t1.count - t0.count)));
          s.nsPerPacketBulk.push(Number(t2.ns - t1.ns) / Math.max(1, Number(t2.count - t1.count)));
        } finally {
          v.disable();
        }
      }
    }
  } finally {
    stats.close();
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const { bin, emptyObject, ctrefObject } = buildTools();
  const fx = new NetnsFixture();
  const dp = Datapath.load(`bench-${tag}`);
  let empty: ReturnType<typeof BpfObject.load> | undefined;
  let ctref: ReturnType<typeof BpfObject.load> | undefined;
  let srvIfindex = 0;
  let records = 0;
  try {
    empty = BpfObject.load(emptyObject, { scope: `bench-${tag}-empty` });
    const emptyObj = empty;
    ctref = BpfObject.load(ctrefObject, { scope: `bench-${tag}-ctref` });
    const ctrefObj = ctref;
    fx.addNetns(NS_POD);
    fx.addNetns(NS_SRV);
    fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_SRV, ifname: SRV_IF, cidr: `${SRV_IP}/24` });
    srvIfindex = ifindexIn(NS_SRV, SRV_IF);
    await waitForLine(fx.spawn(NS_SRV, ...pinned(PIN[1], bin, ["server", String(PORT)])), /^listening/);

    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: LEVEL }); // the agent's default: every new connection is reported
    const drain = dp.onEvents(() => records++);
    dp.setIpcache({ cidr: `${SRV_IP}/32`, identity: SRV_ID });
    for (let i = 0; i < 100; i++) dp.setIpcache({ cidr: `${peerIp(i)}/32`, identity: 10_000 + i });

    // Every N's policy is in the map at once (one subject each); the pod's endpoint entry says which applies.
    const t0 = Date.now();
    SIZES.forEach((n, k) => dp.setSubjectPolicy(membranePolicy(subjectFor(k), n)));
    const progNs = newFlowCosts(dp, drain);
    const rulesFile = path.join(os.tmpdir(), `${tag}-nft.conf`);
    fs.writeFileSync(rulesFile, nftRules(SIZES));
    try {
      nft("-f", rulesFile);
    } finally {
      fs.rmSync(rulesFile, { force: true });
    }
    log(`${SIZES.join(", ")} entries: policy map and nftables rules written in ${Date.now() - t0} ms; ${ROUNDS} rounds of ${3 + 2 * SIZES.length + OTHER_LEVELS.length} variants`);

    const podEndpoint = (k: number) => ({ ip: POD_IP, ifindex: srvIfindex, identity: subjectFor(k), ingressEnforced: true, egressEnforced: true });
    const hookPins = (["ingress", "egress"] as const).map((direction) => ({
      target: { ifindex: srvIfindex, direction, netns: NS_SRV },
      pin: path.join(emptyObj.pinDir, `link-${direction}`),
    }));
    // The reference tracks the pod's egress on the veth's ingress and its ingress on the egress, as Membrane's programs do.
    const ctrefPins = ([["ingress", "ct_egress"], ["egress", "ct_ingress"]] as const).map(([direction, program]) => ({
      target: { ifindex: srvIfindex, direction, netns: NS_SRV },
      pin: path.join(ctrefObj.pinDir, `link-${direction}`),
      fd: ctrefObj.programFd(program),
    }));
    const progFds = [dp.programFd("from_container"), dp.programFd("to_container")];
    const variants: Variant[] = [
      { name: "baseline", kind: "baseline", entries: 0, enable: () => undefined, disable: () => undefined },
      {
        name: "hook-only",
        kind: "hook-only",
        entries: 0,
        enable: () => hookPins.forEach((h) => attachTcx(emptyObj.programFd("pass"), h.target, h.pin)),
        disable: () => hookPins.forEach((h) => detachTcx(h.target, h.pin)),
      },
      {
        name: "conntrack-ref",
        kind: "conntrack-ref",
        entries: 0,
        enable: () => ctrefPins.forEach((h) => attachTcx(h.fd, h.target, h.pin)),
        disable: () => {
          ctrefPins.forEach((h) => detachTcx(h.target, h.pin));
          ctrefObj.map("membrane_conntrack").clear();
        },
        progFds: ctrefPins.map((h) => h.fd),
      },
    ];
    SIZES.forEach((n, k) => {
      variants.push({
        name: `membrane-${n}`,
        kind: "membrane",
        entries: n,
        monitorAggregation: LEVEL,
        enable: () => {
          dp.setEndpoint(podEndpoint(k));
          dp.attachEndpoint(srvIfindex, NS_SRV);
        },
        disable: () => {
          dp.detachEndpoint(srvIfindex, NS_SRV);
          dp.clearConntrack();
        },
        progFds,
      });
      variants.push({
        name: `nftables-${n}`,
        kind: "nftables",
        entries: n,
        enable: () => {
          nft("add", "rule", "inet", NFT_TABLE, "input", "ct", "state", "established,related", "accept");
          nft("add", "rule", "inet", NFT_TABLE, "input", "jump", `peers_${n}`);
        },
        disable: () => nft("flush", "chain", "inet", NFT_TABLE, "input"),
      });
    });
    for (const level of OTHER_LEVELS) {
      variants.push({
        name: `membrane-${level}`,
        kind: "membrane-level",
        entries: SIZES[0]!,
        monitorAggregation: level,
        enable: () => {
          dp.setMonitorAggregation(level);
          dp.setEndpoint(podEndpoint(0));
          dp.attachEndpoint(srvIfindex, NS_SRV);
        },
        disable: () => {
          dp.detachEndpoint(srvIfindex, NS_SRV);
          dp.clearConntrack();
          dp.setMonitorAggregation(LEVEL);
        },
        progFds,
      });
    }
    // Kernel ns per connection: the conntrack reference, then Membrane at every level (the probe endpoint, first N's subject).
    const kernelNsPerConnection: Record<string, number> = {
      "conntrack-ref": connectionCostNs(ctrefObj.programFd("ct_egress"), ctrefObj.programFd("ct_ingress"), () => ctrefObj.map("membrane_conntrack").clear(), () => 0),
    };
    dp.setEndpoint({ ip: PROBE_POD_IP, ifindex: LOOPBACK, identity: subjectFor(0), ingressEnforced: true, egressEnforced: true });
    for (const level of MONITOR_AGGREGATION_LEVELS) {
      dp.setMonitorAggregation(level);
      kernelNsPerConnection[level] = connectionCostNs(progFds[0]!, progFds[1]!, () => dp.clearConntrack(), drain);
    }
    dp.setMonitorAggregation(LEVEL);
    dp.clearConntrack();
    log(`kernel ns per connection: ${JSON.stringify(kernelNsPerConnection)}`);
    const samples = await measureInterleaved(bin, variants, () => {
      drain();
      return records;
    });
    await measureProgramTime(bin, variants, samples);

    const baseline = samples.get("baseline")!;
    const hookOnly = samples.get("hook-only")!;
    const ctrefSamples = samples.get("conntrack-ref")!;
    const rows: Row[] = [];
    const row = (v: Variant): Row => {
      const s = samples.get(v.name)!;
      return {
        variant: v.kind,
        entries: v.entries,
        ...(v.monitorAggregation ? { monitorAggregation: v.monitorAggregation } : {}),
        connPerSec: Math.round(median(s.conn)),
        bulkGbps: Number((median(s.bulk) / 1e9).toFixed(3)),
        connPerCpuSecond: Math.round(median(s.connPerCpu)),
        bulkGbitPerCpuSecond: Number((median(s.bulkPerCpu) / 1e9).toFixed(3)),
        ...(v.progFds ? { progNsPerPacketConn: Math.round(median(s.nsPerPacketConn)), progNsPerPacketBulk: Math.round(median(s.nsPerPacketBulk)) } : {}),
        ...(v.kind === "membrane" ? { progNsPerNewFlow: progNs.get(v.entries)! } : {}),
        ...(v.kind === "membrane" || v.kind === "membrane-level" ? { eventsPerConn: Number(median(s.eventsPerConn).toFixed(2)) } : {}),
      };
    };
    for (const v of variants) rows.push(row(v));

    // Ratios are medians of per-round ratios: the variants of one round ran back to back, so they
    // saw the same load on a shared machine.
    const pairedRatio = (x: readonly number[], y: readonly number[]): number => Number(median(x.map((v, i) => v / y[i]!)).toFixed(3));
    const ratios = SIZES.map((n) => {
      const b = samples.get(`membrane-${n}`)!;
      const c = samples.get(`nftables-${n}`)!;
      return {
        entries: n,
        conn_vs_baseline: pairedRatio(b.conn, baseline.conn),
        bulk_vs_baseline: pairedRatio(b.bulk, baseline.bulk),
        conn_vs_nftables: pairedRatio(b.conn, c.conn),
        bulk_vs_nftables: pairedRatio(b.bulk, c.bulk),
        conn_per_cpu_vs_baseline: pairedRatio(b.connPerCpu, baseline.connPerCpu),
        bulk_per_cpu_vs_baseline: pairedRatio(b.bulkPerCpu, baseline.bulkPerCpu),
        conn_vs_hook_only: pairedRatio(b.conn, hookOnly.conn),
        bulk_vs_hook_only: pairedRatio(b.bulk, hookOnly.bulk),
        conn_vs_conntrack_ref: pairedRatio(b.conn, ctrefSamples.conn),
        bulk_vs_conntrack_ref: pairedRatio(b.bulk, ctrefSamples.bulk),
      };
    });
    // Every level at the first N: the level of the N series is its first entry.
    const levels = Object.fromEntries(
      [[LEVEL, `membrane-${SIZES[0]}`] as const, ...OTHER_LEVELS.map((l) => [l, `membrane-${l}`] as const)].map(([level, name]) => {
        const b = samples.get(name)!;
        const r = rows[variants.findIndex((v) => v.name === name)]!;
        return [
          level,
          {
            conn_per_sec: r.connPerSec,
            conn_vs_baseline: pairedRatio(b.conn, baseline.conn),
            conn_vs_conntrack_ref: pairedRatio(b.conn, ctrefSamples.conn),
            bulk_vs_baseline: pairedRatio(b.bulk, baseline.bulk),
            events_per_conn: r.eventsPerConn,
            prog_ns_per_packet_conn: r.progNsPerPacketConn,
          },
        ];
      }),
    );
    const hookOnlyVsBaseline = { conn: pairedRatio(hookOnly.conn, baseline.conn), bulk: pairedRatio(hookOnly.bulk, baseline.bulk) };
    const conntrackRefVsBaseline = { conn: pairedRatio(ctrefSamples.conn, baseline.conn), bulk: pairedRatio(ctrefSamples.bulk, baseline.bulk) };
    const minRatio = Math.min(...ratios.flatMap((x) => [x.conn_vs_baseline, x.bulk_vs_baseline]));
    const minRatioPerCpu = Math.min(...ratios.flatMap((x) => [x.conn_per_cpu_vs_baseline, x.bulk_per_cpu_vs_baseline]));
    const membrane = rows.filter((r) => r.variant === "membrane");
    const flat = (xs: number[]): number => Number((Math.max(...xs) / Math.min(...xs)).toFixed(3));
    // b's best/worst over N: of the medians (all N measured in every round), and of the per-round
    // ratios to the baseline (the same comparison with each round's load divided out).
    const flatness = {
      conn: flat(membrane.map((r) => r.connPerSec)),
      bulk: flat(membrane.map((r) => r.bulkGbps)),
      conn_vs_baseline: flat(ratios.map((r) => r.conn_vs_baseline)),
      bulk_vs_baseline: flat(ratios.map((r) => r.bulk_vs_baseline)),
      conn_per_cpu: flat(membrane.map((r) => r.connPerCpuSecond)),
      bulk_per_cpu: flat(membrane.map((r) => r.bulkGbitPerCpuSecond)),
      prog_ns_per_packet_conn: flat(membrane.map((r) => r.progNsPerPacketConn!)),
      prog_ns_per_packet_bulk: flat(membrane.map((r) => r.progNsPerPacketBulk!)),
      prog_ns_per_new_flow: flat(membrane.map((r) => r.progNsPerNewFlow!)),
    };
    const drops = dp.dropCounters();
    console.log(
      JSON.stringify({
        bench: "datapath",
        results: rows,
        ratios,
        ratio_vs_conntrack_ref: Math.min(...ratios.map((x) => x.conn_vs_conntrack_ref)),
        min_conn_ratio_vs_baseline: Math.min(...ratios.map((x) => x.conn_vs_baseline)),
        min_bulk_ratio_vs_baseline: Math.min(...ratios.map((x) => x.bulk_vs_baseline)),
        monitor_aggregation: LEVEL,
        levels,
        kernel_ns_per_connection: kernelNsPerConnection,
        conntrack_ref_vs_baseline: conntrackRefVsBaseline,
        min_ratio_vs_baseline: minRatio,
        flatness: Math.max(flatness.conn, flatness.bulk),
        flatness_vs_baseline: Math.max(flatness.conn_vs_baseline, flatness.bulk_vs_baseline),
        min_ratio_vs_baseline_per_cpu: minRatioPerCpu,
        hook_only_vs_baseline: hookOnlyVsBaseline,
        flatness_per_cpu: Math.max(flatness.conn_per_cpu, flatness.bulk_per_cpu),
        load_average: os.loadavg().map((x) => Number(x.toFixed(1))),
        flatness_by_measure: flatness,
        targets: { ratio_vs_conntrack_ref: 0.97, min_conn_ratio_vs_baseline: 0.9, min_bulk_ratio_vs_baseline: 0.95, flatness: 1.05 },
        events_read: records,
        events_lost: Number(drops.lostEvents),
        drops: Object.fromEntries(Object.entries(drops.byReason).map(([k, v]) => [k, Number(v)])),
        rounds: ROUNDS,
        sample_seconds: SAMPLE_SECONDS,
        cpus: os.cpus().length,
        pinned_cpus: PIN.length ? { client: PIN[0], server: PIN[1] ?? null } : null,
        seconds: Math.round((Date.now() - started) / 1000),
      }),
    );
  } finally {
    try {
      if (srvIfindex) dp.detachEndpoint(srvIfindex, NS_SRV);
    } catch {
      // the netns may be gone already
    }
    fx.cleanup(); // the nftables table goes with the server's netns
    dp.close();
    dp.unpin();
    empty?.close();
    empty?.unpin(); // its links go with their pins (and with the interface)
    ctref?.close();
    ctref?.unpin();
  }
}

await main();
