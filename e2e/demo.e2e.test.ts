// `make demo` from start to end in its own state dir and node name prefix, on a real node with the chart's pods: the story it prints happens, `membrane observe` finds the agents alone, and `dev down` leaves no process, netns, cgroup, route or file.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { controlPlanePaths, ensureControlPlaneBuilt, isProcessAlive } from "../localcluster/cluster.ts";
import { CGROUP_HIERARCHIES, realNodePaths } from "../localcluster/realnode/config.ts";
import { devRealNodePaths } from "../localcluster/realnode/dev-paths.ts";
import { destroyRealNode, type RealNodeState } from "../localcluster/realnode/realnode.ts";
import { KUBELET_SYSCTLS, SYSCTL_RECORD } from "../localcluster/realnode/sysctls.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const prefix = `demo${process.pid % 100000}-`;
const nodeName = `${prefix}node-1`;

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

/** The verdicts the demo printed for FROM's `METHOD PATH` requests in a chapter, in order. */
function verdicts(text: string, from: string, method: string, path: string): string[] {
  const re = new RegExp(`^\\$ kubectl exec ${from} -- sh -c "printf '${method} ${path.replaceAll("/", "\\/")} HTTP/1\\.0.*\\n(.*)$`, "gm");
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/** The real node's state as `dev up` recorded it (its pids, addresses, dir). */
function nodeState(dir: string): RealNodeState {
  return JSON.parse(readFileSync(realNodePaths(devRealNodePaths(dir).nodeDir(nodeName)).stateFile, "utf8")) as RealNodeState;
}

function sysctls(): Record<string, string> {
  return Object.fromEntries(KUBELET_SYSCTLS.map((k) => [k, readFileSync(`/proc/sys/${k}`, "utf8").trim()]));
}

async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const until = Date.now() + ms;
  while (pids.some(isProcessAlive) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  return pids.filter(isProcessAlive);
}

describe("make demo (a real node, the chart's pods, the empire/deathstar/xwing story)", { timeout: 20 * 60_000 }, () => {
  let parent = "";
  let dir = "";
  let demo: Run = { code: -1, output: "" };
  let sysctlsBefore: Record<string, string>;
  let otherRealNodesBefore: boolean;

  before(async () => {
    sysctlsBefore = sysctls();
    otherRealNodesBefore = existsSync(SYSCTL_RECORD);
    await ensureControlPlaneBuilt();
    parent = await mkdtemp(join(tmpdir(), `${prefix}`));
    dir = join(parent, "dev");
  });

  after(async () => {
    // Whatever happened: `dev down` in this dir, then the node by its own record, then the files.
    await runIn(dir, ["bin/membrane", "dev", "down"], 180_000);
    await destroyRealNode(devRealNodePaths(dir).nodeDir(nodeName)).catch(() => undefined);
    await rm(parent, { recursive: true, force: true });
  });

  it("runs from start to end and says the story happened", async () => {
    demo = await runIn(dir, ["bash", "localcluster/demo.sh"], 15 * 60_000);
    assert.equal(demo.code, 0, demo.output.slice(-4000));
    assert.match(demo.output, /the story happened as told/);
    assert.match(demo.output, new RegExp(`MEMBRANE_DEV_DIR=${dir} MEMBRANE_DEV_PREFIX=${prefix} bin/membrane dev down`), "it says how to tear down");
  });

  it("prints what a user would see at each turn of the story", () => {
    const all = chapters(demo.output);
    const cluster = chapter(all, "A local cluster on a real node");
    assert.match(cluster, new RegExp(`^${nodeName} +Ready .*containerd://1\\.`, "m"));
    assert.match(cluster, /helm install membrane charts\/membrane -n membrane-system/);
    for (const pod of ["agent", "l7proxy", "operator", "webhook"]) assert.match(cluster, new RegExp(`^membrane-${pod}-\\S+ +1/1 +Running +\\d+ .* ${nodeName} `, "m"), `the chart's ${pod} runs as a pod on the node`);
    assert.match(cluster, /can-i create ciliumnetworkpolicies\.cilium\.io --as=system:serviceaccount:membrane-system:membrane-agent -n default\nno\n/);
    const app = chapter(all, "The demo application");
    for (const pod of ["deathstar", "tiefighter", "xwing"]) assert.match(app, new RegExp(`^${pod} +1/1 +Running +0 +\\S+ +10\\.244\\.\\d+\\.\\d+ +${nodeName} `, "m"), `${pod} runs on Membrane's pod network, never restarted`);

    const open = chapter(all, "No policy");
    assert.deepEqual([...verdicts(open, "tiefighter", "POST", "/v1/request-landing"), ...verdicts(open, "xwing", "POST", "/v1/request-landing")], ["200 Ship landed", "200 Ship landed"]);
    const deny = chapter(all, "A default deny");
    assert.deepEqual([...verdicts(deny, "tiefighter", "POST", "/v1/request-landing"), ...verdicts(deny, "xwing", "POST", "/v1/request-landing")], ["timeout", "timeout"]);
    const l4 = chapter(all, "A label-based allow");
    assert.deepEqual(verdicts(l4, "tiefighter", "POST", "/v1/request-landing"), ["200 Ship landed"], "the empire lands");
    assert.deepEqual(verdicts(l4, "xwing", "POST", "/v1/request-landing"), ["timeout"], "the alliance does not");
    assert.deepEqual(verdicts(l4, "tiefighter", "PUT", "/v1/exhaust-port"), ["200 Ship landed"], "L3/L4 lets any request of the empire through");
    const l7 = chapter(all, "An HTTP-aware rule");
    assert.deepEqual(verdicts(l7, "tiefighter", "PUT", "/v1/exhaust-port"), ["403 Access denied"]);
    assert.deepEqual(verdicts(l7, "tiefighter", "POST", "/v1/request-landing"), ["200 Ship landed"]);
    assert.deepEqual(verdicts(l7, "xwing", "POST", "/v1/request-landing"), ["timeout"]);

    const bad = chapter(all, "A bad policy");
    assert.match(bad, /admission webhook "policies\.membrane\.io" denied the request: spec\.egress\[0\]\.toCIDRSet\[0\]\.except\[0\]: except "11\.0\.0\.0\/16" is not inside cidr "10\.0\.0\.0\/8"/);
    const conditions = chapter(all, "The policies and their conditions");
    assert.match(conditions, /^rule1 +True +1\/1 +1 /m);
    assert.match(conditions, /^default-deny +True +1\/1 +3 /m);
    assert.match(conditions, /^Enforced=True \(Acknowledged\)/m);

    const seen = chapter(all, "What the agents saw");
    assert.match(seen, new RegExp(`^\\S+ +${nodeName} +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
    assert.match(seen, new RegExp(`^\\S+ +${nodeName} +default/tiefighter:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +l7 HTTP PUT http://deathstar/v1/exhaust-port +policy denied \\(L7\\) +CiliumNetworkPolicy default/rule1`, "m"));
  });

  it("dev up again on the running cluster starts nothing twice", async () => {
    const before = nodeState(dir).pids;
    const again = await runIn(dir, ["bin/membrane", "dev", "up"], 120_000);
    assert.equal(again.code, 0, again.output);
    assert.match(again.output, /control plane already running/);
    assert.match(again.output, new RegExp(`real node ${nodeName} already up`));
    assert.deepEqual(nodeState(dir).pids, before);
  });

  it("`membrane observe` with no kubeconfig, no --server and no TLS flags finds the agent on the real node", async () => {
    // A new shell: no KUBECONFIG, a home without ~/.kube/config; only MEMBRANE_DEV_DIR says where the cluster is.
    const home = await mkdtemp(join(tmpdir(), "membrane-home-"));
    try {
      const r = await runIn(dir, ["bin/membrane", "observe", "--verdict", "DROPPED", "--from-pod", "default/xwing", "--last", "1"], 60_000, { KUBECONFIG: undefined, HOME: home });
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, new RegExp(`^\\S+ +${nodeName} +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("`dev down` removes the node's processes, netns, cgroups and host route, the control plane and every file", async () => {
    const node = nodeState(dir);
    const pids = [...Object.values(node.pids), Number(readFileSync(controlPlanePaths(dir).pidFile, "utf8"))].filter((p): p is number => typeof p === "number");
    assert.deepEqual(pids.filter((p) => !isProcessAlive(p)), [], "everything still runs after the demo");
    assert.ok((node.hostRoutes ?? []).length === 1, "the webhook Service's ClusterIP is routed through the node");
    const down = await runIn(dir, ["bin/membrane", "dev", "down"], 180_000);
    assert.equal(down.code, 0, down.output);
    assert.match(down.output, new RegExp(`real node ${nodeName} removed`));
    assert.deepEqual(await waitGone(pids, 15_000), [], "no process left");
    assert.ok(!existsSync(`/run/netns/${node.plan.netns}`), "the node's netns is gone");
    for (const h of CGROUP_HIERARCHIES) assert.ok(!existsSync(join("/sys/fs/cgroup", h, node.plan.cgroupName)), `cgroup ${h} removed`);
    const routes = await new Promise<string>((r) => execFile("ip", ["-4", "route", "show"], (_e, out) => r(out)));
    assert.ok(!routes.includes(`via ${node.plan.nodeAddress} `), routes);
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      } catch {
        continue;
      }
      assert.ok(!cmd.includes(dir), `process ${pid} of the cluster still runs: ${cmd.replaceAll("\0", " ")}`);
    }
    assert.equal(existsSync(dir), false, `${dir} is gone`);
    // The host sysctls the kubelet changed are restored once no real node runs on the machine (another test's may).
    if (!otherRealNodesBefore && !existsSync(SYSCTL_RECORD)) assert.deepEqual(sysctls(), sysctlsBefore);
  });
});
