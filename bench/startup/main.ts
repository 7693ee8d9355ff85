// How long a `membrane` process takes to start: the TypeScript sources through tsx vs the bundle `make build` writes, side by side in one run.
//
// Both modes start the same way a user does, `bin/membrane ARGS` (MEMBRANE_BUNDLE=1 for the bundle), so
// the wrapper's bash costs both the same. Rounds are interleaved (every command in both modes per round,
// the order swapped each round) so both see the same drift of a shared machine's load. Prints one JSON
// line last: median wall ms per command and mode, ratio = tsx ms / bundle ms (how many times faster the
// bundle starts), and the floor (`node -e 0`).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
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

function main(): void {
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
    const ratios = Object.values(results).map((r) => r.ratio);
    process.stdout.write(
      JSON.stringify({
        bench: "startup",
        results,
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

main();
