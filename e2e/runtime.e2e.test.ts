// End to end (issue #18 item 4): a TracingPolicy reaches the node through the operator's stream, the agent runs the
// runtime enforcer on it (membrane runtime, supervised), and the policy's status counts the node. One local node
// (the runtime enforcer watches the whole kernel: one per host), a real pod, real opens judged by fanotify.
// Loads eBPF and creates network namespaces: run under flock /tmp/membrane-kernel.lock.
// Process-based cluster because: (a) it tests the agent-supervised runtime (`--enable-runtime` alone: the agent starts `membrane runtime` as its child; a restarted agent adopts it, or stops it when restarted by hand with the runtime off), the chart's
// runtime.mode embedded, which no real-node test runs (the chart's default, external, is a membrane-runtime DaemonSet pod: realnode.test.ts's "runtime.enabled: ..." tests).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isProcessAlive } from "../localcluster/cluster.ts";
import { devClusterPaths, loadDevClusterState, startAgents } from "../localcluster/devcluster.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { loadNodesState } from "../localcluster/nodes.ts";
import { TestCluster } from "./harness.ts";

const prefix = `rt${process.pid % 100000}-`;
const MEMBRANE = new URL("../bin/membrane", import.meta.url).pathname;
const NS = "rt";

/** `cat FILE` in the pod's network namespace (as a process of the pod: the runtime tells pods by their netns). */
function catIn(netns: string | undefined, file: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const argv = netns === undefined ? ["/bin/cat", file] : ["ip", "netns", "exec", netns, "/bin/cat", file];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("close", (code, signal) => resolve({ code, signal, out, err }));
  });
}

async function eventually<T>(what: string, f: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms${last ? ` (${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Status {
  enforced?: string;
  nodeErrors?: { node: string; reason: string; message: string }[];
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

describe("TracingPolicy through the operator's stream to the agent's runtime enforcer (1 node, a real pod)", { timeout: 8 * 60_000 }, () => {
  const tc = new TestCluster(prefix);
  let dir = "";
  let secret = "";
  let podNetns = "";

  const policy = (name: string, extra: Record<string, unknown> = {}): string =>
    JSON.stringify({
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicyNamespaced",
      metadata: { name, namespace: NS },
      spec: {
        lsmhooks: [
          {
            hook: "file_open",
            args: [{ index: 0, type: "file" }],
            selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [secret] }], matchActions: [{ action: "Override", argError: -1 }] }],
          },
        ],
        ...extra,
      },
    });
  const status = async (name: string): Promise<Status> =>
    ((JSON.parse(await tc.kubectl(["get", "tracingpolicynamespaced", name, "-n", NS, "-o", "json"])) as { status?: Status }).status ?? {});
  const condition = (s: Status, type: string): Status["conditions"] extends (infer C)[] | undefined ? C | undefined : never => s.conditions?.find((c) => c.type === type);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}secret-`));
    secret = join(dir, "shadow");
    writeFileSync(secret, "s3cret\n");
    await tc.start(1, { runtime: true });
    await tc.createPods({ [NS]: {} }, [{ namespace: NS, name: "shell", node: 1, labels: { app: "shell" }, ports: [] }]);
    const rec = (await loadPodRecords(tc.dir)).pods[`${NS}/shell`];
    assert.ok(rec, "the pod runs on the local node");
    podNetns = rec.netns;
  });

  after(async () => {
    await tc.stop();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  it("kubectl apply: the pod's open is denied, the host's is not, and the status says Enforced 1/1", async () => {
    assert.deepEqual((await catIn(podNetns, secret)).out, "s3cret\n", "before the policy the pod reads the file");
    await tc.kubectl(["apply", "-f", "-"], policy("deny-secret"));
    const s = await eventually("Enforced 1/1", async () => {
      const st = await status("deny-secret");
      return st.enforced === "1/1" && condition(st, "Enforced")?.status === "True" ? st : undefined;
    });
    assert.deepEqual(s.nodeErrors, []);
    assert.equal(condition(s, "Loaded")?.status, "True");
    const denied = await catIn(podNetns, secret);
    assert.notEqual(denied.code, 0, JSON.stringify(denied));
    assert.equal(denied.out, "");
    assert.match(denied.err, /Operation not permitted|Permission denied/);
    // A process of no pod (the host) is not selected by a namespaced policy.
    assert.equal((await catIn(undefined, secret)).out, "s3cret\n");
    // The node says so on its CiliumNode.
    const cond = await eventually("RuntimeEnforcer on the CiliumNode", async () => {
      const cn = JSON.parse(await tc.kubectl(["get", "ciliumnode", tc.nodeName(1), "-o", "json"])) as { status?: { conditions?: { type: string; status: string; reason: string; message: string }[] } };
      const c = cn.status?.conditions?.find((x) => x.type === "RuntimeEnforcer");
      return c?.status === "True" && /1 TracingPolicy\(ies\) enforced/.test(c.message) ? c : undefined;
    });
    assert.equal(cond.reason, "Running");
    // It names where the runtime serves its process events, and membrane observe reads the pod's there.
    const address = /--runtime-address (\S+)$/.exec(cond.message)?.[1];
    assert.ok(address !== undefined, cond.message);
    const observer = spawn(MEMBRANE, ["observe", "--type", "process", "--runtime-address", address, "--follow", "--last", "0", "--pod", "shell", "--namespace", NS], { stdio: ["ignore", "pipe", "ignore"] });
    let observed = "";
    observer.stdout.on("data", (d: Buffer) => (observed += d.toString()));
    try {
      await eventually("membrane observe following the runtime", async () => (/^membrane_process_stream_clients 1$/m.test(await (await fetch(`http://${address}/metrics`)).text()) ? true : undefined), 20_000);
      await catIn(undefined, secret);
      await catIn(podNetns, secret);
      await eventually("the pod's cat in membrane observe --type process --follow", async () => (observed.includes(`🚀 process ${NS}/shell /bin/cat ${secret}`) ? true : undefined), 20_000);
    } finally {
      observer.kill("SIGINT");
    }
    assert.doesNotMatch(observed, /host /, "only the pod's processes");
  });

  it("Sigkill on exec of a named binary: the pod's exec is killed, the host's runs; deleted, the pod's runs again", async () => {
    const binary = join(dir, "forbidden-tool");
    copyFileSync("/bin/true", binary);
    chmodSync(binary, 0o755);
    const run = (netns: string | undefined): Promise<{ code: number | null; signal: NodeJS.Signals | null }> =>
      new Promise((resolve) => {
        const argv = netns === undefined ? [binary] : ["ip", "netns", "exec", netns, binary];
        const child = spawn(argv[0]!, argv.slice(1), { stdio: "ignore" });
        child.on("close", (code, signal) => resolve({ code, signal }));
      });
    assert.deepEqual(await run(podNetns), { code: 0, signal: null }, "before the policy it runs");
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify({
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicyNamespaced",
      metadata: { name: "kill-tool", namespace: NS },
      spec: {
        kprobes: [{
          call: "security_bprm_check", syscall: false, args: [{ index: 0, type: "linux_binprm" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [binary] }], matchActions: [{ action: "Sigkill" }] }],
        }],
      },
    }));
    await eventually("kill-tool Enforced 1/1", async () => ((await status("kill-tool")).enforced === "1/1" ? true : undefined));
    assert.equal((await run(podNetns)).signal, "SIGKILL", "the pod's exec is killed");
    assert.deepEqual(await run(undefined), { code: 0, signal: null }, "the host's exec runs");
    await tc.kubectl(["delete", "tracingpolicynamespaced", "kill-tool", "-n", NS]);
    await eventually("the pod's exec runs again", async () => ((await run(podNetns)).code === 0 ? true : undefined), 30_000);
  });

  it("a policy the node cannot load is counted as such: Enforced False 0/1 naming the node and the reason", async () => {
    // Admitted (Tetragon's schema has it), but the namespace a process's children get is not read on this node: the node refuses it.
    await tc.kubectl(["apply", "-f", "-"], policy("by-children", {
      lsmhooks: [{ hook: "file_open", args: [{ index: 0, type: "file" }], selectors: [{ matchNamespaces: [{ namespace: "PidForChildren", operator: "In", values: ["1"] }], matchActions: [{ action: "Post" }] }] }],
    }));
    const s = await eventually("the node's refusal in the status", async () => {
      const st = await status("by-children");
      return st.enforced === "0/1" && st.nodeErrors?.[0]?.reason === "HookUnavailable" ? st : undefined;
    });
    assert.equal(s.nodeErrors?.[0]?.node, tc.nodeName(1));
    assert.match(s.nodeErrors?.[0]?.message ?? "", /spec\.lsmhooks\[0\]\.selectors\[0\]\.matchNamespaces\[0\]\.namespace: PidForChildren/);
    assert.deepEqual([condition(s, "Enforced")?.status, condition(s, "Enforced")?.reason], ["False", "HookUnavailable"]);
    await tc.kubectl(["delete", "tracingpolicynamespaced", "by-children", "-n", NS]);
  });

  it("a tracepoint through the stream: Sigkill + matchArgs on sys_enter_openat kills the pod's cat of the file, the host's reads it; an unknown tracepoint is Loaded=False HookUnavailable naming it", async () => {
    // A file of its own: deny-secret still denies opens of the secret (the restart test below relies on it).
    const plans = join(dir, "plans");
    writeFileSync(plans, "the plans\n");
    const tracepoint = (name: string, event: string): string =>
      JSON.stringify({
        apiVersion: "cilium.io/v1alpha1",
        kind: "TracingPolicyNamespaced",
        metadata: { name, namespace: NS },
        spec: {
          tracepoints: [{
            subsystem: "syscalls", event, args: [{ index: 5, type: "int" }, { index: 6, type: "string" }],
            selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: [plans] }], matchActions: [{ action: "Sigkill" }] }],
          }],
        },
      });
    await tc.kubectl(["apply", "-f", "-"], tracepoint("kill-open", "sys_enter_openat"));
    const s = await eventually("kill-open Enforced 1/1", async () => {
      const st = await status("kill-open");
      return st.enforced === "1/1" && condition(st, "Loaded")?.status === "True" ? st : undefined;
    });
    assert.match(condition(s, "Loaded")?.message ?? "", /spec\.tracepoints\[0\] \(tracepoint syscalls\/sys_enter_openat\) → tracepoint/);
    const killed = await catIn(podNetns, plans);
    assert.deepEqual([killed.signal, killed.out], ["SIGKILL", ""], JSON.stringify(killed));
    assert.equal((await catIn(undefined, plans)).out, "the plans\n", "a process of no pod is not selected");
    await tc.kubectl(["delete", "tracingpolicynamespaced", "kill-open", "-n", NS]);
    await eventually("the pod reads the file again", async () => ((await catIn(podNetns, plans)).out === "the plans\n" ? true : undefined), 30_000);

    await tc.kubectl(["apply", "-f", "-"], tracepoint("no-such", "sys_enter_no_such_call"));
    const u = await eventually("no-such refused by the node", async () => {
      const st = await status("no-such");
      return condition(st, "Loaded")?.reason === "HookUnavailable" ? st : undefined;
    });
    assert.equal(condition(u, "Loaded")?.status, "False");
    assert.match(condition(u, "Loaded")?.message ?? "", /spec\.tracepoints\[0\]\.event: tracepoint syscalls\/sys_enter_no_such_call does not exist on this kernel/);
    assert.equal(u.enforced, "0/1");
    await tc.kubectl(["delete", "tracingpolicynamespaced", "no-such", "-n", NS]);
  });

  it("an agent killed and restarted: the runtime enforcer keeps denying meanwhile and is adopted, not restarted", async () => {
    const state = await loadDevClusterState(tc.dir);
    const agent = state.agents[0]!;
    const runtimePid = Number(readFileSync(join(devClusterPaths(tc.dir).agentDir(agent.node), "state", "runtime.pid"), "utf8").trim());
    assert.ok(isProcessAlive(runtimePid), "the runtime enforcer runs");
    process.kill(agent.pid, "SIGKILL");
    await eventually("the agent is gone", async () => (isProcessAlive(agent.pid) ? undefined : true), 10_000);
    const denied = await catIn(podNetns, secret);
    assert.notEqual(denied.code, 0, `denied with no agent: ${JSON.stringify(denied)}`);
    await startAgents(tc.dir, (await loadNodesState(tc.dir))!.nodes, tc.cp!.kubeconfig);
    const restarted = (await loadDevClusterState(tc.dir)).agents[0]!;
    assert.notEqual(restarted.pid, agent.pid);
    assert.ok(isProcessAlive(runtimePid), "the same runtime enforcer still runs (adopted)");
    // The restarted agent reports again: still Enforced 1/1.
    await eventually("Enforced 1/1 after the restart", async () => ((await status("deny-secret")).enforced === "1/1" ? true : undefined));
    assert.notEqual((await catIn(podNetns, secret)).code, 0);
  });

  it("kubectl delete: the same open succeeds again", async () => {
    await tc.kubectl(["delete", "tracingpolicynamespaced", "deny-secret", "-n", NS]);
    const read = await eventually("the pod reads the file again", async () => {
      const r = await catIn(podNetns, secret);
      return r.code === 0 ? r : undefined;
    }, 30_000);
    assert.equal(read.out, "s3cret\n");
  });

  it("an agent restarted with the enforcer off stops the runtime an earlier agent left running", async () => {
    const agent = (await loadDevClusterState(tc.dir)).agents[0]!;
    const runtimePid = Number(readFileSync(join(devClusterPaths(tc.dir).agentDir(agent.node), "state", "runtime.pid"), "utf8").trim());
    assert.ok(isProcessAlive(runtimePid), "the runtime enforcer runs");
    process.kill(agent.pid, "SIGKILL");
    await eventually("the agent is gone", async () => (isProcessAlive(agent.pid) ? undefined : true), 10_000);
    await startAgents(tc.dir, (await loadNodesState(tc.dir))!.nodes, tc.cp!.kubeconfig, { runtime: false });
    await eventually("the runtime enforcer is stopped", async () => (isProcessAlive(runtimePid) ? undefined : true), 20_000);
  });
});
