// bench/datapath: new TCP connections/s and bulk throughput between two netns — no program, Membrane, nftables.
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import type { Datapath as DatapathInstance } from "../../node-agent/bpf/datapath.ts";

process.env.LOG_LEVEL ??= "warn"; // keep the loader's per-event logs out of the benchmark output
const { Datapath } = await import("../../node-agent/bpf/datapath.ts");
const { NetnsFixture, ifindexIn, waitForLine } = await import("../../node-agent/bpf/netns.ts");
const { testRun } = await import("../../node-agent/bpf/loader.ts");
const { frame } = await import("../../node-agent/bpf/frames.ts");

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

const SIZES = (process.env.BENCH_SIZES ?? "10,1000,10000,100000").split(",").map(Number);
const EVENTS_FORWARDED = process.env.BENCH_EVENTS_FORWARDED !== "0";
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 5); // per measure and configuration; the median counts
const SAMPLE_SECONDS = Number(process.env.BENCH_SAMPLE_SECONDS ?? 0.6);
const PORT = 5201;
const tag = `mbd${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_SRV = `${tag}-srv`;
const POD_IF = `${tag}p`;
const SRV_IF = `${tag}s`;
const POD_IP = "10.202.0.1";
const SRV_IP = "10.202.0.2";
const POD_ID = 1000;
const SRV_ID = 2000;
const NFT_TABLE = `${tag}`;

interface Measure {
  readonly connPerSec: number;
  readonly bulkGbps: number;
}
interface Samples {
  readonly conn: number[];
  readonly bulk: number[];
}
interface Row extends Measure {
  readonly variant: "baseline" | "membrane" | "nftables";
  readonly entries: number;
  /** membrane only: the program's mean time for a new flow that misses every level (4 lookups). */
  readonly progNsPerNewFlow?: number;
}

const LOOPBACK = 1;
const PROBE_POD_IP = "10.202.9.1"; // the same subject behind lo, for BPF_PROG_TEST_RUN

/** Mean ns of from-container on a new flow whose lookup walks all four levels (then default-deny). */
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

function log(msg: string): void {
  process.stderr.write(`bench/datapath: ${msg}\n`);
}

function buildTools(): string {
  execFileSync("make", ["-s", "-C", path.join(root, "bpf")], { stdio: "inherit" });
  const dir = path.join(root, ".cache", "bench-datapath");
  fs.mkdirSync(dir, { recursive: true });
  const bin = path.join(dir, "tcpbench");
  execFileSync("clang", ["-O2", "-Wall", "-Werror", "-o", bin, path.join(here, "tcpbench.c")], { stdio: "inherit" });
  return bin;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

async function sample(bin: string, mode: "connrate" | "bulk"): Promise<number> {
  const { stdout } = await run("ip", ["netns", "exec", NS_POD, bin, mode, SRV_IP, String(PORT), String(SAMPLE_SECONDS)]);
  return Number(stdout.trim().split(/\s+/)[0]);
}

type Variant = "baseline" | "membrane" | "nftables";

/**
 * Measures the three variants in rotation, SAMPLES rounds, switching between them in milliseconds
 * (attach/detach; one nftables jump rule), so that the noise of a shared machine hits all three
 * alike. Each variant's figure is its median over the rounds.
 */
async function measureRotating(
  bin: string,
  enable: Record<Variant, () => void>,
  disable: Record<Variant, () => void>,
): Promise<{ medians: Record<Variant, Measure>; samples: Record<Variant, Samples> }> {
  const samples: Record<Variant, Samples> = {
    baseline: { conn: [], bulk: [] },
    membrane: { conn: [], bulk: [] },
    nftables: { conn: [], bulk: [] },
  };
  const order: Variant[] = ["baseline", "membrane", "nftables"];
  for (let round = 0; round < SAMPLES; round++) {
    for (const v of order.slice(round % 3).concat(order.slice(0, round % 3))) {
      enable[v]();
      try {
        samples[v].conn.push(await sample(bin, "connrate"));
        samples[v].bulk.push(await sample(bin, "bulk"));
      } finally {
        disable[v]();
      }
    }
  }
  const out = {} as Record<Variant, Measure>;
  for (const v of order) {
    out[v] = { connPerSec: Math.round(median(samples[v].conn)), bulkGbps: Number((median(samples[v].bulk) / 1e9).toFixed(3)) };
  }
  return { medians: out, samples };
}

/** N entries: N-1 other peers on the port, then the server's identity (the one traffic hits). */
function membranePolicy(n: number): SubjectPolicy {
  const entries: PolicyEntry[] = [];
  for (let i = 0; i < n; i++) {
    const peer = i === n - 1 ? SRV_ID : 10_000 + i;
    entries.push({ subject: POD_ID, direction: "egress", peer, proto: PROTO_NUMBER.TCP, port: PORT, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: i });
  }
  return { subject: POD_ID, ingressEnforced: true, egressEnforced: true, entries };
}

function peerIp(i: number): string {
  const v = (172 << 24) | (16 << 16) | i; // 172.16.0.0/12 holds 100,000 peers
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

/**
 * The same policy as a rule list: one rule per peer in a chain, the hit last. The input hook's
 * chain (established first, then a jump to the list) is filled to switch the variant on.
 */
function nftRules(n: number): string {
  const lines = [`table inet ${NFT_TABLE} {`, "  chain peers {"];
  for (let i = 0; i < n; i++) {
    const ip = i === n - 1 ? SRV_IP : peerIp(i);
    lines.push(`    iifname "${SRV_IF}" ip daddr ${ip} tcp dport ${PORT} accept`);
  }
  lines.push(`    iifname "${SRV_IF}" drop`, "  }", "  chain input {", "    type filter hook input priority 0; policy accept;", "  }", "}");
  return lines.join("\n") + "\n";
}

function nft(...args: string[]): void {
  execFileSync("ip", ["netns", "exec", NS_SRV, "nft", ...args]);
}

async function main(): Promise<void> {
  const started = Date.now();
  const bin = buildTools();
  const fx = new NetnsFixture();
  const dp = Datapath.load(`bench-${tag}`);
  let srvIfindex = 0;
  let records = 0;
  try {
    fx.addNetns(NS_POD);
    fx.addNetns(NS_SRV);
    fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_SRV, ifname: SRV_IF, cidr: `${SRV_IP}/24` });
    srvIfindex = ifindexIn(NS_SRV, SRV_IF);
    await waitForLine(fx.spawn(NS_SRV, bin, ["server", String(PORT)]), /^listening/);

    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, eventsForwarded: EVENTS_FORWARDED }); // default on, as in production: every new flow is reported
    const drain = dp.onEvents(() => records++);
    dp.setIpcache({ cidr: `${SRV_IP}/32`, identity: SRV_ID });
    for (let i = 0; i < 100; i++) dp.setIpcache({ cidr: `${peerIp(i)}/32`, identity: 10_000 + i });

    const rows: Row[] = [];
    const paired = new Map<number, Record<Variant, Samples>>();
    for (const n of SIZES) {
      const t0 = Date.now();
      dp.setSubjectPolicy(membranePolicy(n), [
        { ip: POD_IP, ifindex: srvIfindex },
        { ip: PROBE_POD_IP, ifindex: LOOPBACK },
      ]);
      const progNs = programCost(dp, drain);
      const rulesFile = path.join(os.tmpdir(), `${tag}-nft-${n}.conf`);
      fs.writeFileSync(rulesFile, nftRules(n));
      try {
        nft("-f", rulesFile);
      } finally {
        fs.rmSync(rulesFile, { force: true });
      }
      log(`N=${n}: policy map and nftables rules written in ${Date.now() - t0} ms; measuring`);
      const m = await measureRotating(
        bin,
        {
          baseline: () => undefined,
          membrane: () => dp.attachEndpoint(srvIfindex, NS_SRV),
          nftables: () => {
            nft("add", "rule", "inet", NFT_TABLE, "input", "ct", "state", "established,related", "accept");
            nft("add", "rule", "inet", NFT_TABLE, "input", "jump", "peers");
          },
        },
        {
          baseline: () => undefined,
          membrane: () => {
            dp.detachEndpoint(srvIfindex, NS_SRV);
            dp.clearConntrack();
          },
          nftables: () => nft("flush", "chain", "inet", NFT_TABLE, "input"),
        },
      );
      for (const variant of ["baseline", "membrane", "nftables"] as const) {
        rows.push({ variant, entries: n, ...m.medians[variant], ...(variant === "membrane" ? { progNsPerNewFlow: progNs } : {}) });
      }
      paired.set(n, m.samples);
      log(`N=${n}: ${JSON.stringify(m.medians)}`);
      nft("delete", "table", "inet", NFT_TABLE);
    }

    // Ratios are medians of per-round ratios: the variants of one round ran back to back, so they
    // saw the same load on a shared machine.
    const pairedRatio = (x: number[], y: number[]): number => Number(median(x.map((v, i) => v / y[i]!)).toFixed(3));
    const ratios = SIZES.map((n) => {
      const s = paired.get(n)!;
      return {
        entries: n,
        conn_vs_baseline: pairedRatio(s.membrane.conn, s.baseline.conn),
        bulk_vs_baseline: pairedRatio(s.membrane.bulk, s.baseline.bulk),
        conn_vs_nftables: pairedRatio(s.membrane.conn, s.nftables.conn),
        bulk_vs_nftables: pairedRatio(s.membrane.bulk, s.nftables.bulk),
      };
    });
    const minRatio = Math.min(...ratios.flatMap((x) => [x.conn_vs_baseline, x.bulk_vs_baseline]));
    const membrane = rows.filter((r) => r.variant === "membrane");
    const flat = (xs: number[]): number => Number((Math.max(...xs) / Math.min(...xs)).toFixed(3));
    const flatness = {
      conn: flat(membrane.map((r) => r.connPerSec)),
      bulk: flat(membrane.map((r) => r.bulkGbps)),
      prog_ns_per_new_flow: flat(membrane.map((r) => r.progNsPerNewFlow!)),
    };
    const drops = dp.dropCounters();
    console.log(
      JSON.stringify({
        bench: "datapath",
        results: rows,
        ratios,
        min_ratio_vs_baseline: minRatio,
        flatness: Math.max(flatness.conn, flatness.bulk),
        load_average: os.loadavg().map((x) => Number(x.toFixed(1))),
        flatness_by_measure: flatness,
        targets: { min_ratio_vs_baseline: 0.95, flatness: 1.05 },
        events_read: records,
        events_lost: Number(drops.lostEvents),
        drops: Object.fromEntries(Object.entries(drops.byReason).map(([k, v]) => [k, Number(v)])),
        events_forwarded: EVENTS_FORWARDED,
        samples: SAMPLES,
        sample_seconds: SAMPLE_SECONDS,
        cpus: os.cpus().length,
        seconds: Math.round((Date.now() - started) / 1000),
      }),
    );
  } finally {
    try {
      if (srvIfindex) dp.detachEndpoint(srvIfindex, NS_SRV);
    } catch {
      // the netns may be gone already
    }
    fx.cleanup();
    dp.close();
    dp.unpin();
  }
}

await main();
