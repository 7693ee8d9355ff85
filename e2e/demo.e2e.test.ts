// `make demo` from start to end in its own state dir and node name prefix, on two real nodes with the chart's pods (`dev up --nodes 2`; MEMBRANE_DEMO_NODES=1 runs the one-node variant): the story it prints happens across the nodes, `membrane observe` finds the agents alone, and `dev down` leaves no process, netns, link, mount, cgroup, route or file.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { controlPlanePaths, ensureControlPlaneBuilt, isProcessAlive } from "../localcluster/cluster.ts";
import { CGROUP_HIERARCHIES, realNodePaths, UNDERLAY_DEVICE_PREFIX } from "../localcluster/realnode/config.ts";
import { devRealNodePaths } from "../localcluster/realnode/dev-paths.ts";
import { destroyRealNode, type RealNodeState } from "../localcluster/realnode/realnode.ts";
import { KUBELET_SYSCTLS, SYSCTL_RECORD } from "../localcluster/realnode/sysctls.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const prefix = `demo${process.pid % 100000}-`;
// The demo's own default is two nodes; the variable passes through to it.
const nodeCount = Number(process.env.MEMBRANE_DEMO_NODES ?? "2");
const nodeNames = Array.from({ length: nodeCount }, (_, i) => `${prefix}node-${i + 1}`);
/** demo.sh puts the deathstar on the first node and the ships on the last. */
const deathstarNode = nodeNames[0]!;
const shipsNode = nodeNames.at(-1)!;

interface Run {
  code: number;
  output: string;
}

function runIn(dir: string, argv: string[], timeoutMs: number, env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: repoRoot,
      env: { ...process.env, MEMBRANE_DEV_DIR: dir, MEMBRANE_DEV_PREFIX: prefix, MEMBRANE_DEMO_NODES: String(nodeCount), ...env },
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

/** A real node's state as `dev up` recorded it (its pids, addresses, dir). */
function nodeState(dir: string, name: string): RealNodeState {
  return JSON.parse(readFileSync(realNodePaths(devRealNodePaths(dir).nodeDir(name)).stateFile, "utf8")) as RealNodeState;
}

function sysctls(): Record<string, string> {
  return Object.fromEntries(KUBELET_SYSCTLS.map((k) => [k, readFileSync(`/proc/sys/${k}`, "utf8").trim()]));
}

async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const until = Date.now() + ms;
  while (pids.some(isProcessAlive) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  return pids.filter(isProcessAlive);
}

describe(`make demo (${nodeCount} real node${nodeCount === 1 ? "" : "s"}, the chart's pods, the empire/deathstar/xwing story)`, { timeout: 20 * 60_000 }, () => {
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
    // Whatever happened: `dev down` in this dir, then each node by its own record, then the files.
    await runIn(dir, ["bin/membrane", "dev", "down"], 180_000);
    for (const name of nodeNames) await destroyRealNode(devRealNodePaths(dir).nodeDir(name)).catch(() => undefined);
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
    const cluster = chapter(all, "A local cluster on ");
    assert.match(cluster, new RegExp(`^\\$ bin/membrane dev up --nodes ${nodeCount}$`, "m"));
    const anyNode = `(${nodeNames.join("|")})`;
    for (const name of nodeNames) {
      assert.match(cluster, new RegExp(`^${name} +Ready .*containerd://1\\.`, "m"), `${name} is a Ready node`);
      for (const pod of ["agent", "l7proxy"]) assert.match(cluster, new RegExp(`^membrane-${pod}-\\S+ +1/1 +Running +\\d+ .* ${name} `, "m"), `the chart's ${pod} runs as a pod on ${name}`);
    }
    assert.equal([...cluster.matchAll(/^\S+node-\d+ +Ready /gm)].length, nodeCount, "no other node");
    assert.match(cluster, /helm install membrane charts\/membrane -n membrane-system/);
    for (const pod of ["operator", "webhook"]) assert.match(cluster, new RegExp(`^membrane-${pod}-\\S+ +1/1 +Running +\\d+ .* ${anyNode} `, "m"), `the chart's ${pod} runs as a pod on a node`);
    assert.match(cluster, /can-i create ciliumnetworkpolicies\.cilium\.io --as=system:serviceaccount:membrane-system:membrane-agent -n default\nno\n/);
    const app = chapter(all, "The demo application");
    for (const [pod, node] of [["deathstar", deathstarNode], ["tiefighter", shipsNode], ["xwing", shipsNode]] as const) {
      assert.match(app, new RegExp(`^${pod} +1/1 +Running +0 +\\S+ +10\\.244\\.\\d+\\.\\d+ +${node} `, "m"), `${pod} runs on ${node}, on Membrane's pod network, never restarted`);
    }

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
    // default-deny selects the three pods: its ENFORCED counts the nodes they run on.
    const concerned = new Set([deathstarNode, shipsNode]).size;
    assert.match(conditions, new RegExp(`^default-deny +True +${concerned}/${concerned} +3 `, "m"));
    assert.match(conditions, /^Enforced=True \(Acknowledged\)/m);

    const seen = chapter(all, "What the agents saw");
    // Both verdicts are the deathstar's node's (ingress, its agent and its L7 proxy), wherever the ships are.
    assert.match(seen, new RegExp(`^\\S+ +${deathstarNode} +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
    assert.match(seen, new RegExp(`^\\S+ +${deathstarNode} +default/tiefighter:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +l7 HTTP PUT http://deathstar/v1/exhaust-port +policy denied \\(L7\\) +CiliumNetworkPolicy default/rule1`, "m"));
  });

  it("dev up again on the running cluster starts nothing twice", async () => {
    const before = nodeNames.map((n) => nodeState(dir, n).pids);
    const again = await runIn(dir, ["bin/membrane", "dev", "up"], 120_000);
    assert.equal(again.code, 0, again.output);
    assert.match(again.output, /control plane already running/);
    for (const name of nodeNames) assert.match(again.output, new RegExp(`real node ${name} already up`));
    assert.deepEqual(nodeNames.map((n) => nodeState(dir, n).pids), before);
  });

  it("`membrane observe` with no kubeconfig, no --server and no TLS flags finds the agent of the deathstar's node", async () => {
    // A new shell: no KUBECONFIG, a home without ~/.kube/config; only MEMBRANE_DEV_DIR says where the cluster is.
    const home = await mkdtemp(join(tmpdir(), "membrane-home-"));
    try {
      const r = await runIn(dir, ["bin/membrane", "observe", "--verdict", "DROPPED", "--from-pod", "default/xwing", "--last", "1"], 60_000, { KUBECONFIG: undefined, HOME: home });
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, new RegExp(`^\\S+ +${deathstarNode} +default/xwing:\\d+ \\(\\d+\\) +default/deathstar:80 \\(\\d+\\) +TCP +DROPPED +drop +policy denied`, "m"));
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("`dev down` removes every node's processes, netns, links, mounts, cgroups and host route, the control plane and every file", async () => {
    const nodes = nodeNames.map((n) => nodeState(dir, n));
    const pids = [...nodes.flatMap((n) => Object.values(n.pids)), Number(readFileSync(controlPlanePaths(dir).pidFile, "utf8"))].filter((p): p is number => typeof p === "number");
    assert.deepEqual(pids.filter((p) => !isProcessAlive(p)), [], "everything still runs after the demo");
    assert.deepEqual(nodes.map((n) => (n.hostRoutes ?? []).length), nodeNames.map((_, i) => (i === 0 ? 1 : 0)), "the webhook Service's ClusterIP is routed through the first node");
    const mountsBefore = readFileSync("/proc/self/mountinfo", "utf8");
    for (const n of nodes) {
      assert.ok(existsSync(`/sys/class/net/${n.plan.hostInterface}`), `${n.plan.name}'s veth on the host`);
      assert.ok(mountsBefore.includes(`/run/netns/${n.plan.netns} `), `${n.plan.name}'s netns is mounted`);
      if (nodeCount > 1) {
        const links = await new Promise<string>((r) => execFile("ip", ["-n", n.plan.netns, "-o", "link", "show"], (_e, out) => r(out)));
        assert.match(links, new RegExp(`: ${UNDERLAY_DEVICE_PREFIX}\\S*@`), `${n.plan.name} has its underlay link to the other node`);
      }
    }
    const down = await runIn(dir, ["bin/membrane", "dev", "down"], 180_000);
    assert.equal(down.code, 0, down.output);
    for (const name of nodeNames) assert.match(down.output, new RegExp(`real node ${name} removed`));
    assert.deepEqual(await waitGone(pids, 15_000), [], "no process left");
    const routes = await new Promise<string>((r) => execFile("ip", ["-4", "route", "show"], (_e, out) => r(out)));
    const mounts = readFileSync("/proc/self/mountinfo", "utf8");
    for (const n of nodes) {
      assert.ok(!existsSync(`/run/netns/${n.plan.netns}`), `${n.plan.name}'s netns is gone (its underlay links with it)`);
      assert.ok(!mounts.includes(`/run/netns/${n.plan.netns} `), `${n.plan.name}'s netns is unmounted`);
      assert.ok(!existsSync(`/sys/class/net/${n.plan.hostInterface}`), `${n.plan.name}'s veth ${n.plan.hostInterface} is gone from the host`);
      for (const h of CGROUP_HIERARCHIES) assert.ok(!existsSync(join("/sys/fs/cgroup", h, n.plan.cgroupName)), `${n.plan.name}'s cgroup ${h} removed`);
      assert.ok(!routes.includes(`via ${n.plan.nodeAddress} `), routes);
    }
    assert.deepEqual(mounts.split("\n").filter((l) => l.includes(dir)), [], "nothing is mounted under the dev dir");
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
