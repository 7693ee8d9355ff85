// `make demo` from start to end in its own state dir and netns prefix: the story it prints happens, and `dev down` leaves no netns, process, pinned map or file.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { controlPlanePaths, ensureControlPlaneBuilt, isProcessAlive } from "../localcluster/cluster.ts";
import { kubeletPaths, loadPodRecords } from "../localcluster/kubelet.ts";
import { loadDevClusterState } from "../localcluster/devcluster.ts";
import { listNetns, run } from "../localcluster/nodes.ts";
import { BPFFS_ROOT } from "../node-agent/bpf/loader.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const prefix = `demo${process.pid % 100000}-`;

interface Run {
  code: number;
  output: string;
}

function runIn(dir: string, argv: string[], timeoutMs: number, env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: repoRoot,
      env: { ...process.env, MEMBRANE_DEV_DIR: dir, MEMBRANE_DEV_PREFIX: prefix, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (b: Buffer) => (output += b.toString()));
    child.stderr.on("data", (b: Buffer) => (output += b.toString()));
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), output });
    });
  });
}

/** The demo's output (no colours: not a terminal) cut at its "== N. title" lines: title → text of that chapter. */
function chapters(output: string): Map<string, string> {
  const out = new Map<string, string>();
  const parts = output.split(/^== \d+\. /m).slice(1);
  for (const p of parts) {
    const nl = p.indexOf("\n");
    out.set(p.slice(0, nl).trim(), p.slice(nl + 1));
  }
  return out;
}

function chapter(all: Map<string, string>, startsWith: string): string {
  const key = [...all.keys()].find((k) => k.startsWith(startsWith));
  assert.ok(key, `the demo tells "${startsWith}…"; chapters: ${[...all.keys()].join(" | ")}`);
  return all.get(key)!;
}

/** The verdict the demo printed for `dev probe default/FROM … 80` in a chapter. */
function probeVerdict(text: string, from: string): string | undefined {
  return new RegExp(`\\$ bin/membrane dev probe default/${from} \\S+ 80\\n(\\w+)`).exec(text)?.[1];
}

/**
 * Every pid the local cluster recorded: control plane, kubelet, operator, webhook, agents, the story's
 * pod servers (namespace default). Not the stand-ins of the chart's pods (membrane-system): the
 * controller manager owns those, and a second `helm upgrade --install` replaces them today.
 */
async function recordedPids(dir: string): Promise<number[]> {
  const read = (f: string): number[] => {
    const n = Number.parseInt(existsSync(f) ? readFileSync(f, "utf8") : "", 10);
    return Number.isInteger(n) ? [n] : [];
  };
  const procs = await loadDevClusterState(dir);
  const pods = Object.values((await loadPodRecords(dir)).pods).flatMap((p) => (p.pid && p.namespace === "default" ? [p.pid] : []));
  return [
    ...read(controlPlanePaths(dir).pidFile),
    ...read(kubeletPaths(dir).pidFile),
    ...[procs.operatorPid, procs.webhookPid].filter((p): p is number => p !== undefined),
    ...procs.agents.map((a) => a.pid),
    ...pods,
  ];
}

async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const until = Date.now() + ms;
  while (pids.some(isProcessAlive) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  return pids.filter(isProcessAlive);
}

const pinned = (): string[] => (existsSync(BPFFS_ROOT) ? readdirSync(BPFFS_ROOT).filter((s) => s.startsWith(prefix)) : []);

describe("make demo (two nodes, the chart, the empire/deathstar/xwing story)", { timeout: 20 * 60_000 }, () => {
  let parent = "";
  let dir = "";
  let demo: Run = { code: -1, output: "" };
  let pids: number[] = [];

  before(async () => {
    await ensureControlPlaneBuilt();
    parent = await mkdtemp(join(tmpdir(), `${prefix}`));
    dir = join(parent, "dev");
  });

  after(async () => {
    // Whatever happened: `dev down` in this dir, then by recorded pid and by our prefix only.
    await runIn(dir, ["bin/membrane", "dev", "down"], 120_000);
    for (const pid of pids) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(parent)) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const ns of await listNetns(prefix)) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    for (const scope of pinned()) await rm(join(BPFFS_ROOT, scope), { recursive: true, force: true });
    await rm(parent, { recursive: true, force: true });
  });

  it("runs from start to end and says the story happened", async () => {
    demo = await runIn(dir, ["bash", "localcluster/demo.sh"], 15 * 60_000);
    pids = await recordedPids(dir);
    assert.equal(demo.code, 0, demo.output.slice(-4000));
    assert.match(demo.output, /the story happened as told/);
    assert.match(demo.output, new RegExp(`MEMBRANE_DEV_DIR=${dir} MEMBRANE_DEV_PREFIX=${prefix} bin/membrane dev down`), "it says how to tear down");
  });

  it("prints what a user would see at each turn of the story", () => {
    const all = chapters(demo.output);
    const cluster = chapter(all, "A local cluster");
    assert.match(cluster, new RegExp(`${prefix}node-1 +Ready`));
    assert.match(cluster, new RegExp(`${prefix}node-2 +Ready`));
    const install = chapter(all, "Install Membrane with its chart");
    assert.match(install, /STATUS: deployed/);
    assert.match(install, /can-i list ciliumnodes\.cilium\.io --as=system:serviceaccount:membrane-system:membrane-agent -A\nyes\n/);
    assert.match(install, /can-i create ciliumnetworkpolicies\.cilium\.io --as=system:serviceaccount:membrane-system:membrane-agent -n default\nno\n/);
    assert.match(install, /can-i get secrets --as=system:serviceaccount:membrane-system:membrane-agent -n membrane-system\nno\n/);
    assert.match(install, /^webhook: pid \d+ at https:\/\/127\.0\.0\.1:\d+\/validate$/m, "dev status names the webhook process");
    const app = chapter(all, "The demo application");
    for (const pod of ["deathstar", "tiefighter", "xwing"]) assert.match(app, new RegExp(`^${pod} +1/1 +Running +0 `, "m"), `${pod} runs, never restarted`);

    const open = chapter(all, "No policy");
    assert.equal(probeVerdict(open, "tiefighter"), "connected");
    assert.equal(probeVerdict(open, "xwing"), "connected");
    const deny = chapter(all, "A default deny");
    assert.equal(probeVerdict(deny, "tiefighter"), "timeout");
    assert.equal(probeVerdict(deny, "xwing"), "timeout");
    const allow = chapter(all, "A label-based allow");
    assert.equal(probeVerdict(allow, "tiefighter"), "connected", "the empire lands, from the other node");
    assert.equal(probeVerdict(allow, "xwing"), "timeout", "the alliance does not");

    const bad = chapter(all, "A bad policy");
    assert.match(bad, /admission webhook "policies\.membrane\.io" denied the request: spec\.egress\[0\]\.toCIDRSet\[0\]\.except\[0\]: except "11\.0\.0\.0\/16" is not inside cidr "10\.0\.0\.0\/8"/);
    assert.match(bad, /"xwing-escape" not found/);

    const conditions = chapter(all, "The policies and their conditions");
    assert.match(conditions, /^NAME +VALID +ENFORCED +SELECTED/m);
    assert.match(conditions, /^rule1 +True +1\/1 +1 /m);
    assert.match(conditions, /^default-deny +True +2\/2 +3 /m);
    assert.match(conditions, /^Enforced=True \(Acknowledged\)/m);

    const drop = chapter(all, "The xwing's attempt");
    assert.match(drop, new RegExp(`^\\S+ +${prefix}node-1 +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
  });

  it("run again on the running cluster, it tells the story again without starting anything twice", async () => {
    const again = await runIn(dir, ["bash", "localcluster/demo.sh"], 10 * 60_000);
    assert.equal(again.code, 0, again.output.slice(-4000));
    assert.match(again.output, /control plane already running/);
    assert.match(again.output, /the story starts again without them/);
    assert.match(again.output, /the story happened as told/);
    assert.deepEqual((await recordedPids(dir)).sort(), [...pids].sort(), "the same processes");
  });

  it("`membrane observe` with no kubeconfig and no --server finds the local cluster's agents", async () => {
    // A new shell: no KUBECONFIG, a home without ~/.kube/config; only MEMBRANE_DEV_DIR says where the cluster is.
    const home = await mkdtemp(join(tmpdir(), "membrane-home-"));
    try {
      const r = await runIn(dir, ["bin/membrane", "observe", "--verdict", "DROPPED", "--from-pod", "default/xwing", "--last", "1"], 60_000, { KUBECONFIG: undefined, HOME: home });
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, new RegExp(`^\\S+ +${prefix}node-1 +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("leaves the cluster running, and `dev down` then removes every process, netns, pinned map and file", async () => {
    assert.ok(pids.length >= 9, `control plane, kubelet, operator, webhook, 2 agents, 3 pods recorded: ${pids.join(", ")}`);
    assert.deepEqual(pids.filter((p) => !isProcessAlive(p)), [], "everything still runs after the demo");
    assert.ok((await listNetns(prefix)).length >= 6, "nodes, underlay and pods exist");
    const down = await runIn(dir, ["bin/membrane", "dev", "down"], 120_000);
    assert.equal(down.code, 0, down.output);
    assert.deepEqual(await waitGone(pids, 15_000), [], "no process left");
    assert.deepEqual(await listNetns(prefix), [], "no network namespace left");
    assert.deepEqual(pinned(), [], "no pinned maps left");
    assert.equal(existsSync(dir), false, `${dir} is gone`);
  });
});
