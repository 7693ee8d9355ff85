// End to end: kill -9 a node's agent under a continuous stream of connections; enforcement never gaps, the restarted agent converges with no duplicate endpoints and wires a pod created right after it.
// Process-based cluster because: (a) the test kills the agent by pid and restarts it by hand, with its recorded argv, at a moment it picks (a kubelet restarts a killed container on its own schedule, with back-off), then reads the restarted agent's log, endpoints.json and pinned maps from the host.
// Real-pod counterpart of the stream part: realnode.test.ts "the server node's agent pod deleted with kubectl, then the client node's agent killed with SIGKILL, ..." (there allowed connections while an agent is away are counted, not required).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { devClusterUp, devNodesDown, probeFromPod } from "../cli/dev-pods.ts";
import { isProcessAlive, startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { listNetns, run, terminateProcess } from "../localcluster/nodes.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { devClusterPaths, loadDevClusterState } from "../localcluster/devcluster.ts";
import { Datapath } from "../node-agent/bpf/datapath.ts";

const prefix = `ar${process.pid % 100000}-`;
const node1 = `${prefix}node-1`;
const ECHO_PORT = 8080;

const pods = [
  { name: "deathstar", node: node1, labels: { org: "empire", class: "deathstar" } },
  { name: "tiefighter", node: `${prefix}node-2`, labels: { org: "empire", class: "tiefighter" } },
  { name: "xwing", node: `${prefix}node-2`, labels: { org: "alliance", class: "xwing" } },
  // Same node as the deathstar: its agent's kill matters for both directions of this pair.
  { name: "tiefighter-local", node: node1, labels: { org: "empire", class: "tiefighter" } },
  { name: "xwing-local", node: node1, labels: { org: "alliance", class: "xwing" } },
];

/** Every endpoint default-deny both ways (as realnode.test.ts's policy matrix): only what empire-only allows passes. */
const defaultDeny = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "default-deny-allow-only" },
  spec: { endpointSelector: {}, ingress: [{}], egress: [{}] },
};
/** The empire may reach the deathstar on `ports` (its ingress and their egress); the alliance may not. */
const policy = (ports: string[]) => {
  const toPorts = [{ ports: ports.map((port) => ({ port, protocol: "TCP" })) }];
  return {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "empire-only", namespace: "default" },
    specs: [
      { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [{ matchLabels: { org: "empire" } }], toPorts }] },
      { endpointSelector: { matchLabels: { org: "empire" } }, egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts }] },
    ],
  };
};

let cp: ControlPlane | undefined;
let dir = "";
const ips = new Map<string, string>();
const netns = new Map<string, string>();
/** Processes this test started itself (echo server and client, the restarted agent): stopped by pid in after(). */
const children: ChildProcess[] = [];
let restartedAgentPid: number | undefined;

async function kubectl(args: string[], input?: string): Promise<string> {
  const res = await cp!.kubectl(args, input);
  assert.equal(res.code, 0, `kubectl ${args.join(" ")}: ${res.stderr}`);
  return res.stdout;
}

/** A TCP handshake from a pod (`dev probe`'s own probe, run in the pod's netns). */
async function connects(from: string, to: string, port: number, timeoutMs = 2_000): Promise<boolean> {
  return (await probeFromPod("default", from, ips.get(to)!, port, { timeoutMs }, dir)).verdict === "connected";
}

function spawnInPod(pod: string, script: string): ChildProcess {
  const child = spawn("ip", ["netns", "exec", netns.get(pod)!, process.execPath, "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return child;
}

/** An established connection that keeps exchanging data: a line every 100 ms, each echoed back; reports every echo and the end. */
function longLivedConnection(): { echoes: () => number; lastEchoAt: () => number; closed: () => string | undefined } {
  const client = spawnInPod(
    "tiefighter",
    `const s=require("net").connect(${ECHO_PORT},${JSON.stringify(ips.get("deathstar"))});let n=0;s.setNoDelay(true);` +
      `s.on("connect",()=>setInterval(()=>s.write("ping "+(n++)+"\\n"),100));` +
      `let buf="";s.on("data",d=>{buf+=d;const l=buf.split("\\n");buf=l.pop();for(const x of l)console.log("echo");});` +
      `s.on("close",()=>{console.log("closed");process.exit(0)});s.on("error",e=>console.log("error "+e.code));`,
  );
  let echoes = 0;
  let last = Date.now();
  let closed: string | undefined;
  let buf = "";
  client.stdout?.on("data", (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split("\n");
    buf = lines.pop() ?? "";
    for (const l of lines) {
      if (l === "echo") {
        echoes++;
        last = Date.now();
      } else if (l) closed = l;
    }
  });
  client.on("exit", () => (closed ??= "client exited"));
  return { echoes: () => echoes, lastEchoAt: () => last, closed: () => closed };
}

/** Repeated new connections on an allowed and on a denied pair (each across and within nodes) until stopped. */
function connectionStream(): { stop: () => Promise<{ allowedOk: number; allowedFailed: string[]; deniedOk: string[]; deniedRefused: number; rounds: { start: number; end: number }[] }> } {
  let running = true;
  const r = { allowedOk: 0, allowedFailed: [] as string[], deniedOk: [] as string[], deniedRefused: 0, rounds: [] as { start: number; end: number }[] };
  const loop = (async () => {
    while (running) {
      const start = Date.now();
      const t = new Date(start).toISOString();
      // A denied probe waits out its timeout: 1.5 s still covers the SYN retransmitted after 1 s.
      const [a1, a2, d1, d2] = await Promise.all([connects("tiefighter", "deathstar", 80), connects("tiefighter-local", "deathstar", 80), connects("xwing", "deathstar", 80, 1_500), connects("xwing-local", "deathstar", 80, 1_500)]);
      r.rounds.push({ start, end: Date.now() });
      for (const [ok, pair] of [[a1, "tiefighter"], [a2, "tiefighter-local"]] as const) {
        if (ok) r.allowedOk++;
        else r.allowedFailed.push(`${t} ${pair}`);
      }
      for (const [ok, pair] of [[d1, "xwing"], [d2, "xwing-local"]] as const) {
        if (ok) r.deniedOk.push(`${t} ${pair}`);
        else r.deniedRefused++;
      }
      await new Promise((res) => setTimeout(res, 150));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return r;
    },
  };
}

async function eventually<T>(what: string, f: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const agentLog = (): Record<string, unknown>[] =>
  readFileSync(join(dir, "restarted-agent.log"), "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe("agent kill -9 under a continuous stream of connections (2 nodes, real packets)", { timeout: 8 * 60_000 }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), `${prefix}dev-`));
    cp = await startControlPlane({ name: `${prefix}cp` });
    await devClusterUp(dir, cp.kubeconfig, cp.kubectl, 2, { prefix });
    await kubectl(["create", "serviceaccount", "default", "-n", "default"]);
    const manifests = pods.map((p) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: p.name, namespace: "default", labels: p.labels },
      spec: { nodeName: p.node, automountServiceAccountToken: false, containers: [{ name: "main", image: "any", ports: [{ containerPort: 80, protocol: "TCP" }] }] },
    }));
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: manifests }));
    await kubectl(["wait", "pod", "--all", "-n", "default", "--for=condition=Ready", "--timeout=120s"]);
    const records = await loadPodRecords(dir);
    for (const p of pods) {
      const rec = records.pods[`default/${p.name}`];
      assert.ok(rec?.ip && rec.netns, `pod ${p.name} is wired`);
      ips.set(p.name, rec.ip);
      netns.set(p.name, rec.netns);
    }
    // The long-lived connection's far end: an echo server in the deathstar's netns.
    const echo = spawnInPod("deathstar", `require("net").createServer(s=>{s.on("error",()=>{});s.pipe(s)}).listen(${ECHO_PORT},()=>console.log("listening"));`);
    await new Promise<void>((resolve, reject) => {
      echo.stdout?.once("data", () => resolve());
      echo.once("exit", (c) => reject(new Error(`echo server exited ${c}`)));
    });
    await kubectl(["apply", "-f", "-"], JSON.stringify(defaultDeny));
    await kubectl(["apply", "-f", "-"], JSON.stringify(policy(["80", String(ECHO_PORT)])));
    await kubectl(["wait", "ciliumnetworkpolicy/empire-only", "-n", "default", "--for=condition=Enforced", "--timeout=60s"]);
    await eventually("policy in force (empire in, alliance out)", async () =>
      (await connects("tiefighter", "deathstar", 80)) && (await connects("tiefighter-local", "deathstar", 80)) && !(await connects("xwing", "deathstar", 80)) && !(await connects("xwing-local", "deathstar", 80)) ? true : undefined,
    );
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    if (restartedAgentPid !== undefined && isProcessAlive(restartedAgentPid)) await terminateProcess(restartedAgentPid, 5_000);
    await devNodesDown(dir, cp?.kubeconfig).catch(() => undefined);
    for (const ns of await listNetns(prefix)) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    await cp?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("kill -9 of the agent: the established connection lives, denied stays denied, allowed keeps connecting; the restarted agent converges with no duplicate endpoints and a pod created right after the restart becomes Ready under the policy", async () => {
    const conn = longLivedConnection();
    await eventually("the long-lived connection echoes", async () => (conn.echoes() >= 5 ? true : undefined), 10_000);
    const stream = connectionStream();
    await new Promise((r) => setTimeout(r, 2_000));

    // kill -9 the agent of the node that hosts the deathstar (it enforces its ingress) and remember how it ran.
    const procs = await loadDevClusterState(dir);
    const victim = procs.agents.find((a) => a.node === node1);
    assert.ok(victim && isProcessAlive(victim.pid), "node-1's agent runs");
    const argv = readFileSync(`/proc/${victim.pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "");
    process.kill(victim.pid, "SIGKILL");
    const killedAt = Date.now();
    await eventually("the agent is gone", async () => (isProcessAlive(victim.pid) ? undefined : true), 10_000);
    const echoesAtKill = conn.echoes();
    await new Promise((r) => setTimeout(r, 7_000)); // the node runs on its pinned maps alone
    assert.ok(conn.echoes() > echoesAtKill + 10, `the established connection kept exchanging data with no agent (${echoesAtKill} -> ${conn.echoes()})`);

    // Restart it exactly as it ran, plus API access so it publishes its health.
    const logFd = openSync(join(dir, "restarted-agent.log"), "a");
    const restarted = spawn(argv[0]!, [...argv.slice(1), "--kubeconfig", cp!.kubeconfig], { detached: true, stdio: ["ignore", logFd, logFd] });
    closeSync(logFd);
    restarted.unref();
    restartedAgentPid = restarted.pid;
    const restartedAt = Date.now();
    await eventually("the restarted agent is started", async () => (agentLog().some((l) => l.msg === "agent started") ? true : undefined));
    // A new pod on the node right after the restart: its CNI ADD is the restarted agent's to answer.
    const newPodAt = Date.now();
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Pod", metadata: { name: "tiefighter-new", namespace: "default", labels: { org: "empire", class: "tiefighter" } }, spec: { nodeName: node1, automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] } }));
    await new Promise((r) => setTimeout(r, 5_000));
    const r = await stream.stop();

    assert.equal(conn.closed(), undefined, "the established connection was never closed");
    assert.ok(Date.now() - conn.lastEchoAt() < 2_000, "the established connection still echoes after the restart");
    assert.deepEqual(r.deniedOk, [], "no denied connection got through at any time");
    assert.deepEqual(r.allowedFailed, [], "every allowed new connection succeeded, before, during and after the restart");
    // A round's probes connect within its first 1.5 s (denied ones then wait out their timeout).
    const whileDead = r.rounds.filter((x) => x.start >= killedAt && x.start + 1_500 <= restartedAt).length;
    const afterRestart = r.rounds.filter((x) => x.start >= restartedAt).length;
    assert.ok(whileDead >= 1 && afterRestart >= 2, `the stream ran throughout: ${r.rounds.length} rounds, ${whileDead} with no agent, ${afterRestart} from the restart on`);

    // The same datapath object: the restart opened the programs the killed agent had pinned instead of loading them again.
    const loaded = agentLog().filter((l) => typeof l.msg === "string" && l.msg.startsWith("bpf programs"));
    assert.deepEqual(loaded.map((l) => l.msg), ["bpf programs reused: same object and settings as the pinned ones, not verified again"], "the restarted agent did not load (and the kernel did not verify) the programs again");
    // Converged: it reconciled its endpoints (nothing to drop) and acknowledges the operator's current version.
    const reconciled = agentLog().find((l) => l.msg === "endpoints reconciled with host links");
    assert.ok(reconciled, "the restarted agent reconciled its endpoints");
    assert.deepEqual([reconciled.endpoints, reconciled.dropped, reconciled.linksRemoved], [3, 0, 0]);
    await kubectl(["apply", "-f", "-"], JSON.stringify(policy(["80", String(ECHO_PORT), "81"])));
    await kubectl(["wait", "ciliumnetworkpolicy/empire-only", "-n", "default", "--for=condition=Enforced", "--timeout=60s"]);
    const synced = await eventually("PolicySynced on node-1's CiliumNode", async () => {
      const cn = JSON.parse(await kubectl(["get", "ciliumnode", node1, "-o", "json"])) as { metadata: { annotations?: Record<string, string> }; status?: { conditions?: { type: string; status: string; message: string }[] } };
      const c = cn.status?.conditions?.find((x) => x.type === "PolicySynced");
      const applied = agentLog().filter((l) => l.msg === "state applied").at(-1);
      return c?.status === "True" && applied && c.message.includes(`version ${String(applied.version)} `) ? { cn, applied } : undefined;
    });
    assert.match(synced.cn.metadata.annotations?.["membrane.io/hubble-address"] ?? "", /^unix:\//);
    assert.ok(await connects("tiefighter", "deathstar", 80) && !(await connects("xwing", "deathstar", 80)), "after the update: empire in, alliance out");

    // The pod made right after the restart is Ready, wired by the restarted agent and under the policy like its peers.
    await kubectl(["wait", "pod/tiefighter-new", "--for=condition=Ready", "--timeout=60s"]);
    console.log(`a pod created right after the agent's restart: Ready within ${Date.now() - newPodAt} ms (checked after the convergence checks)`);
    const newRec = (await loadPodRecords(dir)).pods["default/tiefighter-new"];
    assert.ok(newRec?.ip && newRec.netns, "the new pod is wired");
    ips.set("tiefighter-new", newRec.ip);
    assert.ok(await connects("tiefighter-new", "deathstar", 80), "the new empire pod reaches the deathstar");

    // No duplicate or ghost endpoints: one record and one map entry per pod on the node.
    const records = JSON.parse(readFileSync(join(devClusterPaths(dir).agentDir(node1), "state", "endpoints.json"), "utf8")) as { containerId: string; ips: string[] }[];
    const onNode = [...pods.filter((p) => p.node === node1).map((p) => ips.get(p.name)!), newRec.ip];
    assert.deepEqual(records.flatMap((e) => e.ips).sort(), [...onNode].sort());
    assert.equal(new Set(records.map((e) => e.containerId)).size, records.length);
    const dp = Datapath.load(node1);
    try {
      assert.equal(dp.object.map("membrane_endpoints").keys().length, onNode.length, "one endpoint map entry per pod");
    } finally {
      dp.close();
    }
  });
});
