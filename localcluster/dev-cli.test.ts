// `membrane dev up/status/env/down` against a real control plane in a temp state dir: idempotent, crash-safe, leaves nothing behind.
// Process-based cluster because: (a) it tests `membrane dev` itself, `dev up --process-nodes` included (its flags, its clean-up after a part-way failure); the real-node `dev up` is here only failing part-way, and whole in e2e/demo.e2e.test.ts.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { controllerProcesses, ensureControlPlaneBuilt, isProcessAlive } from "./cluster.ts";
import { devNodesDown } from "../cli/dev-pods.ts";
import { devClusterPaths, loadDevClusterState } from "./devcluster.ts";

const membrane = fileURLToPath(new URL("../bin/membrane", import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(devDir: string, args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(
      membrane,
      ["dev", ...args],
      { env: { ...process.env, MEMBRANE_DEV_DIR: devDir, ...extraEnv } },
      (err, stdout, stderr) =>
        done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

let kubectlIn: (args: string[], input?: string) => Promise<Run>;

function pidIn(devDir: string): number {
  return Number.parseInt(readFileSync(join(devDir, "controlplane.pid"), "utf8"), 10);
}

async function waitGone(pid: number, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (isProcessAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
}

describe("membrane dev", { timeout: 60 * 60_000 }, () => {
  let parent: string;
  let devDir: string;
  const started: number[] = [];

  before(async () => {
    await ensureControlPlaneBuilt();
    parent = await mkdtemp(join(tmpdir(), "membrane-dev-test-"));
    devDir = join(parent, "dev");
    kubectlIn = (args, input) =>
      new Promise((done) => {
        const child = execFile(
          "kubectl",
          [`--kubeconfig=${join(devDir, "kubeconfig")}`, `--cache-dir=${join(parent, "kube-cache")}`, ...args],
          (err, stdout, stderr) => done({ code: err ? 1 : 0, stdout, stderr }),
        );
        child.stdin?.on("error", () => undefined); // a kubectl that exits without reading its input
        child.stdin?.end(input ?? "");
      });
  });

  after(async () => {
    // Whatever happened above: stop what this test started, by pid, then remove its files.
    await cli(devDir, ["down"]);
    for (const pid of started) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(devDir)) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await rm(parent, { recursive: true, force: true });
  });

  test("status and env say nothing runs before up", async () => {
    const status = await cli(devDir, ["status"]);
    assert.equal(status.code, 1);
    assert.match(status.stdout, /not running/);
    const env = await cli(devDir, ["env"]);
    assert.equal(env.code, 1);
    assert.match(env.stderr, /dev up/);
  });

  test("up starts a control plane that outlives the CLI; a second up says it is running", async () => {
    const up = await cli(devDir, ["up", "--process-nodes"]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /control plane running at https:\/\/127\.0\.0\.1:\d+/);
    const pid = pidIn(devDir);
    started.push(pid);
    assert.ok(isProcessAlive(pid), "the control plane outlives `dev up`");

    const again = await cli(devDir, ["up", "--process-nodes"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already running/);
    assert.equal(pidIn(devDir), pid, "no second process");
  });

  test("status reports ready and env points kubectl at it", async () => {
    const status = await cli(devDir, ["status"]);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    assert.match(status.stdout, /running/);
    assert.match(status.stdout, /ready: yes/);
    // The controllers run as children of the control plane, and status names them with their pids.
    const children = controllerProcesses(pidIn(devDir));
    assert.deepEqual(children.map((c) => c.component), ["kube-controller-manager", "kube-scheduler"]);
    for (const c of children) assert.ok(status.stdout.includes(`${c.component}: pid ${c.pid}\n`), status.stdout);
    // Hubble's relay in the operator, on loopback without TLS: a line that names it, with the address for `hubble --server`.
    const relay = (await loadDevClusterState(devDir)).hubbleRelay;
    assert.match(relay ?? "", /^127\.0\.0\.1:\d+$/);
    assert.ok(status.stdout.includes(`hubble relay: ${relay} (hubble observe --server ${relay})\n`), status.stdout);

    const env = await cli(devDir, ["env"]);
    assert.equal(env.code, 0, env.stderr);
    const m = /^export KUBECONFIG=(\S+)\n$/.exec(env.stdout);
    assert.ok(m?.[1], env.stdout);
    const ns = await new Promise<Run>((done) =>
      execFile(
        "kubectl",
        [
          `--kubeconfig=${m[1]}`,
          `--cache-dir=${join(parent, "kube-cache")}`,
          "get",
          "ns",
          "default",
          "-o",
          "name",
        ],
        (err, stdout, stderr) => done({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    assert.equal(ns.stdout.trim(), "namespace/default", ns.stderr);
  });

  test("up runs the admission webhook: kubectl apply of a bad policy is rejected with the field and the reason", async () => {
    const { webhookPid } = await loadDevClusterState(devDir);
    assert.ok(webhookPid !== undefined && isProcessAlive(webhookPid), "the webhook runs");
    started.push(webhookPid);
    const bad = JSON.stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "xwing-escape", namespace: "default" },
      spec: { endpointSelector: { matchLabels: { class: "xwing" } }, egress: [{ toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["11.0.0.0/16"] }] }] },
    });
    const r = await kubectlIn(["apply", "-f", "-"], bad);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /admission webhook "policies\.membrane\.io" denied the request: spec\.egress\[0\]\.toCIDRSet\[0\]\.except\[0\]: except "11\.0\.0\.0\/16" is not inside cidr "10\.0\.0\.0\/8"/);
    const good = bad.replace('"10.0.0.0/8"', '"11.0.0.0/8"');
    const ok = await kubectlIn(["apply", "--dry-run=server", "-f", "-"], good);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test("up gives the operator and the webhook the chart's policy secrets namespace (created): the operator reads TLS rules' Secrets there, and the webhook warns about a Secret named elsewhere", async () => {
    const ns = await kubectlIn(["get", "namespace", "membrane-secrets", "-o", "name"]);
    assert.equal(ns.stdout.trim(), "namespace/membrane-secrets", ns.stderr);
    // This operator's own line (the log is appended to across runs): it parsed the flag and set its Secret informer there.
    const { operatorPid } = await loadDevClusterState(devDir);
    const said = readFileSync(devClusterPaths(devDir).operatorLog, "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { id?: string; msg?: string; policySecretsNamespace?: string | null })
      .filter((l) => l.id === `${hostname()}_${operatorPid}` && l.msg?.startsWith("TLS rules' Secrets"));
    assert.deepEqual(said.map((l) => l.policySecretsNamespace), ["membrane-secrets"]);
    const tls = (secretNamespace?: string): string =>
      JSON.stringify({
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "front-tls", namespace: "default" },
        spec: {
          endpointSelector: { matchLabels: { app: "web" } },
          egress: [{ toEntities: ["world"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], terminatingTLS: { secret: { ...(secretNamespace ? { namespace: secretNamespace } : {}), name: "front" } }, rules: { http: [{ method: "GET" }] } }] }],
        },
      });
    const outside = await kubectlIn(["apply", "--dry-run=server", "-f", "-"], tls());
    assert.equal(outside.code, 0, outside.stderr);
    assert.match(outside.stderr, /Warning: spec\.egress\[0\]\.toPorts\[0\]\.terminatingTLS: Secret default\/front is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets/);
    const inside = await kubectlIn(["apply", "--dry-run=server", "-f", "-"], tls("membrane-secrets"));
    assert.equal(inside.code, 0, inside.stderr);
    assert.doesNotMatch(inside.stderr, /is not read/);
  });

  test("down's teardown stops the webhook and deletes its ValidatingWebhookConfiguration", async () => {
    const { webhookPid } = await loadDevClusterState(devDir);
    assert.ok(webhookPid !== undefined);
    const cfg = await kubectlIn(["get", "validatingwebhookconfiguration", "membrane-policy-validation", "-o", "name"]);
    assert.equal(cfg.stdout.trim(), "validatingwebhookconfiguration.admissionregistration.k8s.io/membrane-policy-validation", cfg.stderr);
    // What `dev down` runs before it destroys the control plane; the API server is still up to look.
    await devNodesDown(devDir, join(devDir, "kubeconfig"));
    await waitGone(webhookPid, 5_000);
    assert.equal(isProcessAlive(webhookPid), false, `webhook ${webhookPid} still runs`);
    const gone = await kubectlIn(["get", "validatingwebhookconfiguration", "membrane-policy-validation", "-o", "name"]);
    assert.match(gone.stderr, /NotFound/);
    assert.equal(existsSync(join(devDir, "membrane")), false, "the processes' files are gone");
    // Bring them back for the tests that follow.
    const up = await cli(devDir, ["up", "--process-nodes"]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /webhook running \(pid \d+/);
  });

  test("up after a crash cleans up the stale pid file and starts again", async () => {
    const crashed = pidIn(devDir);
    const oldWebhook = (await loadDevClusterState(devDir)).webhookPid;
    const oldControllers = controllerProcesses(crashed);
    assert.equal(oldControllers.length, 2, "scheduler and controller manager run");
    process.kill(crashed, "SIGKILL");
    await waitGone(crashed);
    // The kernel ends them with their parent (PR_SET_PDEATHSIG): a crash leaves no controller behind.
    for (const c of oldControllers) {
      await waitGone(c.pid, 5_000);
      assert.equal(isProcessAlive(c.pid), false, `${c.component} (pid ${c.pid}) outlived the crashed control plane`);
    }
    const status = await cli(devDir, ["status"]);
    assert.match(status.stdout, /not running/);

    const up = await cli(devDir, ["up", "--process-nodes"]);
    assert.equal(up.code, 0, up.stderr);
    const pid = pidIn(devDir);
    started.push(pid);
    assert.notEqual(pid, crashed);
    assert.equal((await cli(devDir, ["status"])).code, 0);
    const { webhookPid } = await loadDevClusterState(devDir);
    assert.ok(webhookPid !== undefined && webhookPid !== oldWebhook && isProcessAlive(webhookPid), "a fresh webhook runs");
    started.push(webhookPid);
    if (oldWebhook !== undefined) assert.equal(isProcessAlive(oldWebhook), false, "the crashed run's webhook was stopped");
  });

  test("down stops exactly that process and leaves no file; a second down is fine", async () => {
    const pid = pidIn(devDir);
    const procs = await loadDevClusterState(devDir);
    const membranePids = [procs.operatorPid, procs.webhookPid].filter((p): p is number => p !== undefined);
    assert.equal(membranePids.length, 2, "operator and webhook recorded");
    const controllers = controllerProcesses(pid);
    assert.equal(controllers.length, 2, "scheduler and controller manager run");
    const down = await cli(devDir, ["down"]);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /stopped/);
    await waitGone(pid, 5_000);
    assert.equal(isProcessAlive(pid), false, `process ${pid} still exists`);
    assert.deepEqual(membranePids.filter(isProcessAlive), [], "operator and webhook stopped");
    assert.deepEqual(controllers.filter((c) => isProcessAlive(c.pid)), [], "scheduler and controller manager stopped");
    assert.equal(existsSync(devDir), false, `${devDir} still exists`);

    const again = await cli(devDir, ["down"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /not running/);
  });

  test("up with a prefix no node can have stops before starting anything", async () => {
    const r = await cli(devDir, ["up", "--nodes", "1"], { MEMBRANE_DEV_PREFIX: "Bad_" });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /MEMBRANE_DEV_PREFIX: prefix: only lowercase letters, digits and "-" are allowed, got "Bad_"/);
    assert.equal(existsSync(devDir), false, "no control plane dir was made");
  });

  test("flags only the process-based cluster takes, and a bad --nodes, stop before anything starts", async () => {
    for (const [args, flag] of [[["--host-firewall"], "--host-firewall"], [["--encryption", "wireguard"], "--encryption"], [["--wireguard-routing=vxlan"], "--wireguard-routing"]] as const) {
      const r = await cli(devDir, ["up", ...args]);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`membrane dev up: ${flag}: needs --process-nodes`));
    }
    const none = await cli(devDir, ["up", "--nodes", "0"]);
    assert.equal(none.code, 2, none.stdout + none.stderr);
    assert.match(none.stderr, /membrane dev up: --nodes: must be an integer from 1 to 200, got "0"/);
    assert.equal(existsSync(devDir), false, "no control plane dir was made");
  });

  test("rejects unknown subcommands and arguments", async () => {
    const bad = await cli(devDir, ["frobnicate"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown subcommand "frobnicate"/);
    const extra = await cli(devDir, ["up", "--bogus"]);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /unexpected argument "--bogus"/);
  });
});

const ip = (args: string[]): Promise<Run> => new Promise((done) => execFile("ip", args, (err, stdout, stderr) => done({ code: err ? 1 : 0, stdout, stderr })));

/**
 * A dev dir whose `dev up` will fail part-way: a network namespace named `blocker` exists before it (made in the
 * suite's before(), removed with the dir in its after(), after a `dev down` whatever happened).
 */
function blockedDevUp(prefix: string, blocker: string): { devDir: () => string } {
  let parent = "";
  before(async () => {
    await ensureControlPlaneBuilt();
    parent = await mkdtemp(join(tmpdir(), "membrane-dev-rollback-"));
    const made = await ip(["netns", "add", blocker]);
    assert.equal(made.code, 0, made.stderr);
  });
  after(async () => {
    await cli(join(parent, "dev"), ["down"], { MEMBRANE_DEV_PREFIX: prefix });
    await ip(["netns", "del", blocker]);
    await rm(parent, { recursive: true, force: true });
  });
  return { devDir: () => join(parent, "dev") };
}

describe("membrane dev up --process-nodes that fails part-way", { timeout: 10 * 60_000 }, () => {
  // A network namespace with the name node 1 would get makes node creation fail after the control
  // plane, the operator and the webhook are up: all of them must be gone afterwards, and the
  // namespace that was there before must still be there.
  const prefix = `rb${process.pid % 100_000}-`;
  const blocker = `${prefix}node-1`;
  const blocked = blockedDevUp(prefix, blocker);

  test("removes everything it started, and only that, and says what", async () => {
    const devDir = blocked.devDir();
    const r = await cli(devDir, ["up", "--process-nodes", "--nodes", "1"], { MEMBRANE_DEV_PREFIX: prefix });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /membrane dev up: failed: /);
    const removed = /removed what it started: (.*)/.exec(r.stderr)?.[1] ?? "";
    const pids = [...removed.matchAll(/(operator|webhook|control plane) \(pid (\d+)\)/g)].map((m) => ({ what: m[1]!, pid: Number(m[2]) }));
    assert.deepEqual(pids.map((p) => p.what).sort(), ["control plane", "operator", "webhook"], r.stderr);
    for (const p of pids) {
      await waitGone(p.pid, 10_000);
      assert.equal(isProcessAlive(p.pid), false, `${p.what} (pid ${p.pid}) still runs`);
    }
    assert.equal(existsSync(devDir), false, `${devDir} still exists`);
    const netns = (await ip(["netns", "list"])).stdout;
    assert.match(netns, new RegExp(`^${blocker}\\b`, "m"), "the namespace that was there before is kept");
    assert.doesNotMatch(netns, new RegExp(`^${prefix}underlay\\b`, "m"), "the underlay namespace it made is gone");
  });
});

describe("membrane dev up on a real node that fails part-way", { timeout: 15 * 60_000 }, () => {
  // A network namespace with the name the real node's would get makes the node fail after the control plane is up:
  // the control plane, the node's cgroups and the dir must be gone afterwards, and the namespace kept.
  const prefix = `rr${process.pid % 100_000}-`;
  const blocker = `rn-${prefix}node-1`;
  const blocked = blockedDevUp(prefix, blocker);

  test("removes the control plane and the node it began, and only that, and says what", async () => {
    const devDir = blocked.devDir();
    const r = await cli(devDir, ["up"], { MEMBRANE_DEV_PREFIX: prefix });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /control plane running at https:\/\/127\.0\.0\.1:\d+ \(pid \d+/, "it got as far as the control plane");
    assert.match(r.stderr, new RegExp(`membrane dev up: failed: .*${blocker}`));
    const pid = Number(/removed what it started: .*control plane \(pid (\d+)\)/.exec(r.stderr)?.[1]);
    assert.ok(pid > 0, r.stderr);
    await waitGone(pid, 10_000);
    assert.equal(isProcessAlive(pid), false, `control plane (pid ${pid}) still runs`);
    assert.equal(existsSync(devDir), false, `${devDir} still exists`);
    assert.equal(existsSync(`/sys/fs/cgroup/pids/membrane-realnode-${prefix}node-1`), false, "the node's cgroups are gone");
    assert.match((await ip(["netns", "list"])).stdout, new RegExp(`^${blocker}\\b`, "m"), "the namespace that was there before is kept");
  });
});
