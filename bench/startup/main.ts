// How long a `membrane` process takes to start: the TypeScript sources through tsx vs the bundle `make build` writes, side by side in one run.
//
// Both modes start the same way a user does, `bin/membrane ARGS` (MEMBRANE_BUNDLE=1 for the bundle), so
// the wrapper's bash costs both the same. Rounds are interleaved (every command in both modes per round,
// the order swapped each round) so both see the same drift of a shared machine's load. Prints one JSON
// line last: median wall ms per command and mode, ratio = tsx ms / bundle ms (how many times faster the
// bundle starts), and the floor (`node -e 0`).
//
// The long-running processes too (`servers`): the operator (pointed at an API server that refuses, so it serves
// its health endpoint and retries its lease) and the webhook (standalone), each timed from spawn to its first log
// line and to its first 200 from /healthz (ready), then killed; and the agent's module graph (koffi, libbpf)
// through `agent --help` (a real agent needs root, bpffs and a cluster: not started here).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MEMBRANE = path.join(ROOT, "bin/membrane");
const BUNDLE = path.join(ROOT, "dist/membrane.mjs");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const round1 = (x: number): number => Math.round(x * 10) / 10;

/** One start: wall time to exit, in ms; an unexpected exit code fails the bench (a fast error is no start-up). */
function timed(file: string, args: readonly string[], env: NodeJS.ProcessEnv, status = 0): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(file, args, { env, encoding: "utf8" });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== status) throw new Error(`${file} ${args.join(" ")} exited ${r.status ?? r.signal}: ${r.stderr}`);
  return ms;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const get = url.startsWith("https:") ? https.get : http.get;
    const req = get(url, { rejectUnauthorized: false, timeout: 500 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}

/** A server process from spawn to its first log line and to /healthz answering 200; killed after. */
async function timedServer(args: readonly string[], env: NodeJS.ProcessEnv, healthz: string): Promise<{ firstLine: number; ready: number }> {
  const t0 = process.hrtime.bigint();
  const ms = (): number => Number(process.hrtime.bigint() - t0) / 1e6;
  const child = spawn(MEMBRANE, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let firstLine: number | undefined;
  let output = "";
  const onData = (d: Buffer): void => {
    firstLine ??= ms();
    output += d.toString();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`membrane ${args.join(" ")} exited ${child.exitCode}: ${output}`);
      if (await healthy(healthz)) return { firstLine: firstLine ?? ms(), ready: ms() };
      if (ms() > 30_000) throw new Error(`membrane ${args.join(" ")}: ${healthz} not 200 within 30 s: ${output}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    child.kill("SIGKILL"); // bin/membrane execs node: this is the process itself
    await exited;
  }
}

async function main(): Promise<void> {
  if (!fs.existsSync(BUNDLE)) throw new Error(`${BUNDLE} does not exist: run make build (make bench-startup does)`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bench-startup-"));
  try {
    const policy = path.join(tmp, "policy.yaml");
    fs.writeFileSync(
      policy,
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: rule1, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {org: empire}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {org: empire}}]\n    toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n",
    );
    // observe: gRPC and Hubble's .proto files loaded, then a dial that port 1 refuses (exit 1).
    const commands: Record<string, { args: string[]; status: number }> = {
      help: { args: ["--help"], status: 0 },
      version: { args: ["version"], status: 0 },
      policy_validate: { args: ["policy", "validate", policy], status: 0 },
      observe_refused: { args: ["observe", "--server", "127.0.0.1:1"], status: 1 },
    };
    const modes = {
      tsx: { ...process.env, MEMBRANE_BUNDLE: "" },
      bundle: { ...process.env, MEMBRANE_BUNDLE: "1" },
    };
    const samples = new Map<string, number[]>();
    const floor: number[] = [];
    const load: number[] = [];
    // One warm-up of each, not counted: the first start reads every file from disk, and tsx fills its
    // compile cache (so the tsx figures are a developer's warm starts, not a first start).
    for (const c of Object.values(commands)) for (const env of Object.values(modes)) timed(MEMBRANE, c.args, env, c.status);
    for (let round = 0; round < ROUNDS; round++) {
      load.push(os.loadavg()[0]!);
      floor.push(timed(process.execPath, ["-e", "0"], process.env));
      const order = round % 2 === 0 ? (["tsx", "bundle"] as const) : (["bundle", "tsx"] as const);
      for (const [name, c] of Object.entries(commands)) {
        for (const mode of order) {
          const key = `${name}/${mode}`;
          samples.set(key, [...(samples.get(key) ?? []), timed(MEMBRANE, c.args, modes[mode], c.status)]);
        }
      }
    }
    const results = Object.fromEntries(
      Object.keys(commands).map((name) => {
        const tsx = median(samples.get(`${name}/tsx`)!);
        const bundle = median(samples.get(`${name}/bundle`)!);
        return [name, { tsx_ms: round1(tsx), bundle_ms: round1(bundle), ratio: round1(tsx / bundle) }];
      }),
    );
    // The servers: fewer rounds (each start takes a second or more), the same interleaving.
    const kubeconfig = path.join(tmp, "kubeconfig");
    fs.writeFileSync(
      kubeconfig,
      "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    );
    const servers: Record<string, (port: number) => { args: string[]; healthz: string }> = {
      operator: (port) => ({ args: ["operator", "--kubeconfig", kubeconfig, "--health-port", String(port)], healthz: `http://127.0.0.1:${port}/healthz` }),
      webhook: (port) => ({ args: ["webhook", "--listen", `127.0.0.1:${port}`], healthz: `https://127.0.0.1:${port}/healthz` }),
    };
    const serverSamples = new Map<string, { firstLine: number; ready: number }[]>();
    const serverRounds = Math.max(3, Math.ceil(ROUNDS / 3));
    for (let round = -1; round < serverRounds; round++) {
      const order = round % 2 === 0 ? (["tsx", "bundle"] as const) : (["bundle", "tsx"] as const);
      for (const [name, make] of Object.entries(servers)) {
        for (const mode of order) {
          const { args, healthz } = make(await freePort());
          const t = await timedServer(args, { ...modes[mode], KUBECONFIG: "" }, healthz);
          if (round >= 0) serverSamples.set(`${name}/${mode}`, [...(serverSamples.get(`${name}/${mode}`) ?? []), t]); // round -1: warm-up
        }
      }
    }
    const agentHelp = { tsx: [] as number[], bundle: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) for (const mode of ["tsx", "bundle"] as const) agentHelp[mode].push(timed(MEMBRANE, ["agent", "--help"], modes[mode]));
    const serverResults = Object.fromEntries(
      Object.keys(servers).map((name) => {
        const of = (mode: string, k: "firstLine" | "ready"): number => median(serverSamples.get(`${name}/${mode}`)!.map((x) => x[k]));
        return [
          name,
          {
            first_log_line_ms: { tsx: round1(of("tsx", "firstLine")), bundle: round1(of("bundle", "firstLine")), ratio: round1(of("tsx", "firstLine") / of("bundle", "firstLine")) },
            ready_ms: { tsx: round1(of("tsx", "ready")), bundle: round1(of("bundle", "ready")), ratio: round1(of("tsx", "ready") / of("bundle", "ready")) },
          },
        ];
      }),
    );
    results.agent_help = { tsx_ms: round1(median(agentHelp.tsx)), bundle_ms: round1(median(agentHelp.bundle)), ratio: round1(median(agentHelp.tsx) / median(agentHelp.bundle)) };
    const ratios = Object.values(results).map((r) => r.ratio);
    process.stdout.write(
      JSON.stringify({
        bench: "startup",
        results,
        servers: serverResults,
        server_rounds: serverRounds,
        min_ratio: Math.min(...ratios),
        node_floor_ms: round1(median(floor)),
        rounds: ROUNDS,
        load_avg_1m: { min: round1(Math.min(...load)), max: round1(Math.max(...load)) },
        node: process.version,
      }) + "\n",
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/startup: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
