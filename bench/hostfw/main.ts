// bench/hostfw: new TCP connections/s from an outside host to a node's listener — no host firewall, the host firewall attached
// with no host policy, Membrane's host policy of N CIDR rules, the same rules as an nftables input chain; all interleaved.
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { IDENTITY, LOCAL_IDENTITY_FLAG } from "../../core/identity.ts";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";

process.env.LOG_LEVEL ??= "warn"; // keep the loader's per-event logs out of the benchmark output
const { Datapath } = await import("../../node-agent/bpf/datapath.ts");
const { NetnsFixture, ifindexIn, waitForLine } = await import("../../node-agent/bpf/netns.ts");
const { enableRunTimeStats, programRunStats } = await import("../../node-agent/bpf/loader.ts");

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

const SIZES = (process.env.BENCH_SIZES ?? "10,1000,10000").split(",").map(Number);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 11); // interleaved rounds; every figure is a median over them
const SAMPLE_SECONDS = Number(process.env.BENCH_SAMPLE_SECONDS ?? 0.5);
const STATS_ROUNDS = 3; // the run-time-stats pass (after the timed rounds): medians of 3
/** CPUs for the client and the server (taskset); "" = unpinned. */
const PIN = (process.env.BENCH_PIN ?? (os.cpus().length >= 2 ? "0,1" : "")).split(",").filter((x) => x !== "");
const pinned = (cpu: string | undefined, cmd: string, args: readonly string[]): [string, string[]] => (cpu === undefined ? [cmd, [...args]] : ["taskset", ["-c", cpu, cmd, ...args]]);
const PORT = 10250; // the kubelet's, as in the reference host firewall
const tag = `mbh${process.pid % 100000}`;
const NS_OUT = `${tag}-out`;
const NS_NODE = `${tag}-node`;
const OUT_IF = `${tag}o`;
const NODE_IF = `${tag}n`;
const NODE_IP = "10.203.0.1";
const OUT_IP = "10.203.0.2";
/** The outside host's network: the rule that lets it in is the last of N (nftables reads them in order). */
const OUT_CIDR = "10.203.0.0/24";
const OUT_CIDR_ID = LOCAL_IDENTITY_FLAG + 200_000;
const NFT_TABLE = tag;

/** The i-th other rule's CIDR: /24s in 100.64.0.0/10 (16,384 of them), none holding the outside host. */
function otherCidr(i: number): string {
  return `100.${64 + (i >> 8)}.${i & 255}.0/24`;
}
const otherId = (i: number): number => LOCAL_IDENTITY_FLAG + 100_000 + i;

/** The host policy of N rules, as a CCNP nodeSelector with N `fromCIDR` ingress rules on the port compiles: N-1 others, then the outside host's. */
function hostPolicy(n: number): SubjectPolicy {
  const entries: PolicyEntry[] = [];
  for (let i = 0; i < n; i++) {
    const peer = i === n - 1 ? OUT_CIDR_ID : otherId(i);
    entries.push({ subject: IDENTITY.host, direction: "ingress", peer, proto: PROTO_NUMBER.TCP, port: PORT, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 + i });
  }
  return { subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false, entries };
}

/** The same rules as nftables: one chain per N, one rule per CIDR, the hit last, then drop; the input chain jumps to one. */
function nftRules(sizes: readonly number[]): string {
  const lines = [`table inet ${NFT_TABLE} {`];
  for (const n of sizes) {
    lines.push(`  chain rules_${n} {`);
    for (let i = 0; i < n; i++) lines.push(`    ip saddr ${i === n - 1 ? OUT_CIDR : otherCidr(i)} tcp dport ${PORT} accept`);
    lines.push(`    iifname "${NODE_IF}" drop`, "  }");
  }
  lines.push("  chain input {", "    type filter hook input priority 0; policy accept;", "  }", "}");
  return lines.join("\n") + "\n";
}

function nft(...args: string[]): void {
  execFileSync("ip", ["netns", "exec", NS_NODE, "nft", ...args]);
}

function log(msg: string): void {
  process.stderr.write(`bench/hostfw: ${msg}\n`);
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** One sample of new connections/s (connect + RST close) from the outside host to the node's listener. */
async function connRate(bin: string): Promise<{ rate: number; failed: number }> {
  const [cmd, args] = pinned(PIN[0], bin, ["connrate", NODE_IP, String(PORT), String(SAMPLE_SECONDS)]);
  const { stdout } = await run("ip", ["netns", "exec", NS_OUT, cmd, ...args]);
  const f = stdout.trim().split(/\s+/).map(Number);
  return { rate: f[0]!, failed: f[1]! };
}

interface Variant {
  readonly name: string;
  readonly kind: "off" | "attached" | "membrane" | "nftables";
  readonly rules: number;
  readonly enable: () => void;
  readonly disable: () => void;
  readonly programs?: boolean;
}

async function main(): Promise<void> {
  const started = Date.now();
  execFileSync("make", ["-s", "-C", path.join(root, "bpf")], { stdio: "inherit" });
  const toolDir = path.join(root, ".cache", "bench-datapath");
  fs.mkdirSync(toolDir, { recursive: true });
  const bin = path.join(toolDir, "tcpbench");
  execFileSync("clang", ["-O2", "-Wall", "-Werror", "-o", bin, path.join(root, "bench", "datapath", "tcpbench.c")], { stdio: "inherit" });

  const fx = new NetnsFixture();
  const dp = Datapath.load(`bench-${tag}`);
  let nodeIfindex = 0;
  let attached = false;
  let events = 0;
  /** The variant being sampled, and per Membrane variant the new connections its deciding rule (the last of N) allowed. */
  let current: Variant | undefined;
  const decided = new Map<string, number>();
  try {
    fx.addNetns(NS_OUT);
    fx.addNetns(NS_NODE);
    fx.addVeth({ netns: NS_OUT, ifname: OUT_IF, cidr: `${OUT_IP}/24` }, { netns: NS_NODE, ifname: NODE_IF, cidr: `${NODE_IP}/24` });
    nodeIfindex = ifindexIn(NS_NODE, NODE_IF);
    await waitForLine(fx.spawn(NS_NODE, ...pinned(PIN[1], bin, ["server", String(PORT)])), /^listening/);

    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" }); // the agent's default: every new connection is reported
    const drain = dp.onEvents((e) => {
      events++;
      if (current?.kind === "membrane" && e.verdict === "forwarded" && e.ctState === "new" && e.ruleId === current.rules) decided.set(current.name, (decided.get(current.name) ?? 0) + 1);
    });
    dp.setHostGuard([]);
    dp.setIpcache({ cidr: `${NODE_IP}/32`, identity: IDENTITY.host });
    const t0 = Date.now();
    const maxN = Math.max(...SIZES);
    // Every CIDR of the largest N in the ipcache (the trie), as the operator sends policy prefixes; the outside host's network too.
    for (let i = 0; i < maxN - 1; i++) dp.setIpcache({ cidr: otherCidr(i), identity: otherId(i) });
    dp.setIpcache({ cidr: OUT_CIDR, identity: OUT_CIDR_ID });
    const rulesFile = path.join(os.tmpdir(), `${tag}-nft.conf`);
    fs.writeFileSync(rulesFile, nftRules(SIZES));
    try {
      nft("-f", rulesFile);
    } finally {
      fs.rmSync(rulesFile, { force: true });
    }
    log(`ipcache (${maxN} CIDRs) and nftables chains written in ${Date.now() - t0} ms`);

    const attach = (): void => {
      if (!attached) dp.attachHostDevice(nodeIfindex, NS_NODE);
      attached = true;
    };
    const detach = (): void => {
      if (attached) dp.detachHostDevice(nodeIfindex, NS_NODE);
      attached = false;
      dp.clearConntrack();
    };
    const variants: Variant[] = [
      { name: "off", kind: "off", rules: 0, enable: () => undefined, disable: () => undefined },
      {
        name: "attached",
        kind: "attached",
        rules: 0,
        enable: () => {
          dp.setSubjectPolicy({ subject: IDENTITY.host, ingressEnforced: false, egressEnforced: false, entries: [] });
          dp.setHostAddress({ ip: NODE_IP, ingressEnforced: false, egressEnforced: false });
          attach();
        },
        disable: detach,
        programs: true,
      },
    ];
    for (const n of SIZES) {
      variants.push({
        name: `membrane-${n}`,
        kind: "membrane",
        rules: n,
        enable: () => {
          dp.setSubjectPolicy(hostPolicy(n));
          dp.setHostAddress({ ip: NODE_IP, ingressEnforced: true, egressEnforced: false });
          attach();
        },
        disable: detach,
        programs: true,
      });
      variants.push({
        name: `nftables-${n}`,
        kind: "nftables",
        rules: n,
        enable: () => {
          nft("add", "rule", "inet", NFT_TABLE, "input", "ct", "state", "established,related", "accept");
          nft("add", "rule", "inet", NFT_TABLE, "input", "iifname", NODE_IF, "jump", `rules_${n}`);
        },
        disable: () => nft("flush", "chain", "inet", NFT_TABLE, "input"),
      });
    }

    // Timed rounds: every variant in every round, order rotated, so a shared machine's load hits all alike.
    const conn = new Map(variants.map((v) => [v.name, [] as number[]]));
    let failed = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const shift = round % variants.length;
      for (const v of variants.slice(shift).concat(variants.slice(0, shift))) {
        v.enable();
        current = v;
        try {
          const s = await connRate(bin);
          conn.get(v.name)!.push(s.rate);
          failed += s.failed;
        } finally {
          drain();
          current = undefined;
          v.disable();
        }
      }
      log(`round ${round + 1}/${ROUNDS} (load ${os.loadavg()[0]!.toFixed(1)})`);
    }

    // The programs' own time per packet on the node's device (kernel run-time stats, a pass of its own: they cost two clock reads per run).
    const nsPerPacket = new Map<string, number[]>();
    const fds = [dp.programFd("to_host"), dp.programFd("from_host")];
    const stats = (): { ns: bigint; count: bigint } =>
      fds.map(programRunStats).reduce((a, st) => ({ ns: a.ns + st.runTimeNs, count: a.count + st.runCount }), { ns: 0n, count: 0n });
    const enabled = enableRunTimeStats();
    try {
      for (let round = 0; round < STATS_ROUNDS; round++) {
        for (const v of variants.filter((x) => x.programs)) {
          v.enable();
          try {
            const a = stats();
            await connRate(bin);
            const b = stats();
            const list = nsPerPacket.get(v.name) ?? [];
            list.push(Number(b.ns - a.ns) / Math.max(1, Number(b.count - a.count)));
            nsPerPacket.set(v.name, list);
          } finally {
            v.disable();
            drain();
          }
        }
      }
    } finally {
      enabled.close();
    }

    // Honest: each Membrane variant's connections were allowed by its policy's last rule (the host policy was enforced).
    for (const n of SIZES) if (!(decided.get(`membrane-${n}`)! > 0)) throw new Error(`membrane-${n}: no connection was allowed by rule ${n}: the host policy did not decide`);
    const off = conn.get("off")!;
    const pairedRatio = (x: readonly number[], y: readonly number[]): number => Number(median(x.map((v, i) => v / y[i]!)).toFixed(3));
    const results = variants.map((v) => ({
      variant: v.kind,
      rules: v.rules,
      conn_per_sec: Math.round(median(conn.get(v.name)!)),
      ratio_vs_off: pairedRatio(conn.get(v.name)!, off),
      ...(v.programs ? { prog_ns_per_packet: Math.round(median(nsPerPacket.get(v.name)!)) } : {}),
    }));
    const membrane = SIZES.map((n) => conn.get(`membrane-${n}`)!);
    const membraneRatios = membrane.map((m) => pairedRatio(m, off));
    const flat = (xs: number[]): number => Number((Math.max(...xs) / Math.min(...xs)).toFixed(3));
    const progNs = SIZES.map((n) => median(nsPerPacket.get(`membrane-${n}`)!));
    const drops = dp.dropCounters();
    console.log(
      JSON.stringify({
        bench: "hostfw",
        min_ratio: Math.min(...membraneRatios),
        flatness: flat(membrane.map(median)),
        nft_ratio_at_max: pairedRatio(conn.get(`nftables-${maxN}`)!, off),
        membrane_vs_nft_at_max: pairedRatio(conn.get(`membrane-${maxN}`)!, conn.get(`nftables-${maxN}`)!),
        attached_ratio: pairedRatio(conn.get("attached")!, off),
        prog_ns_per_packet: Math.round(progNs.at(-1)!),
        policy_extra_prog_ns_per_packet: Math.round(Math.max(...progNs) - median(nsPerPacket.get("attached")!)),
        flatness_prog_ns: flat(progNs),
        results,
        targets: { min_ratio: 0.9, flatness: 1.05 },
        failed_connections: failed,
        events_read: events,
        decided_by_last_rule: Object.fromEntries(decided),
        drops: Object.fromEntries(Object.entries(drops.byReason).filter(([, v]) => v > 0n).map(([k, v]) => [k, Number(v)])),
        rounds: ROUNDS,
        sample_seconds: SAMPLE_SECONDS,
        load_average: os.loadavg().map((x) => Number(x.toFixed(1))),
        pinned_cpus: PIN.length ? { client: PIN[0], server: PIN[1] ?? null } : null,
        seconds: Math.round((Date.now() - started) / 1000),
      }),
    );
  } finally {
    try {
      if (attached) dp.detachHostDevice(nodeIfindex, NS_NODE);
    } catch {
      // the netns may be gone already
    }
    fx.cleanup(); // the nftables table goes with the node's netns
    dp.close();
    dp.unpin();
  }
}

await main();
