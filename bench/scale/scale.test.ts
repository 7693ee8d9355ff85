// bench/scale: its policies are valid Cilium/Kubernetes policies, its flags name what is wrong, and a small cluster run prints one JSON line with sane measurements (its real agent pins maps in bpffs: run this file under flock /tmp/membrane-kernel.lock).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { scalePolicies } from "./cluster.ts";
import { parseScaleFlags } from "./main.ts";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

describe("bench/scale", () => {
  it("every generated policy parses, and the mix holds CNPs, CCNPs and NetworkPolicies", () => {
    const objs = scalePolicies({ nodes: 10, pods: 100, identities: 50, policies: 200, namespaces: 5 });
    assert.equal(objs.length, 200);
    const kinds = new Map<string, number>();
    for (const o of objs) {
      const r = parsePolicyObject(o.body);
      assert.ok(r.ok, `${String(o.body.kind)} ${JSON.stringify(o.body.metadata)}: ${r.ok ? "" : JSON.stringify(r.errors)}`);
      kinds.set(String(o.body.kind), (kinds.get(String(o.body.kind)) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(kinds), { CiliumNetworkPolicy: 100, NetworkPolicy: 60, CiliumClusterwideNetworkPolicy: 40 });
  });

  it("flags: defaults are the full cluster; a bad value names its flag", () => {
    const d = parseScaleFlags([]);
    assert.ok(d.ok);
    assert.deepEqual([d.flags.nodes, d.flags.pods, d.flags.identities, d.flags.policies, d.flags.idleIdentities], [1000, 50_000, 5000, 2000, 60_000]);
    assert.deepEqual(parseScaleFlags(["--nodes", "x"]), { ok: false, error: '--nodes: "x" is not an integer ≥ 1' });
    assert.deepEqual(parseScaleFlags(["--nodes", "10", "--pods", "5"]), { ok: false, error: "--pods: 5 is fewer than --nodes 10 (every node hosts pods)" });
    assert.deepEqual(parseScaleFlags(["--real-agent", "yes"]), { ok: false, error: '--real-agent: "yes" is not true or false' });
    assert.deepEqual(parseScaleFlags(["--agent-bundle", "no"]), { ok: false, error: '--agent-bundle: "no" is not true or false' });
    assert.deepEqual(parseScaleFlags(["--gc-only", "1"]), { ok: false, error: '--gc-only: "1" is not true or false' });
    const gc = parseScaleFlags(["--gc-only", "true"]);
    assert.ok(gc.ok && gc.flags.gcOnly && !d.flags.gcOnly);
    assert.ok(d.flags.idleLabelled && d.flags.deleteCollectionWorkers === undefined);
    const legacy = parseScaleFlags(["--idle-labelled", "false", "--delete-collection-workers", "16"]);
    assert.ok(legacy.ok && !legacy.flags.idleLabelled && legacy.flags.deleteCollectionWorkers === 16);
    assert.deepEqual(parseScaleFlags(["--idle-labelled", "no"]), { ok: false, error: '--idle-labelled: "no" is not true or false' });
    assert.deepEqual(parseScaleFlags(["--delete-collection-workers", "0"]), { ok: false, error: '--delete-collection-workers: "0" is not an integer ≥ 1' });
    const agentOnly = parseScaleFlags(["--agent-only", "true"]);
    assert.ok(agentOnly.ok && agentOnly.flags.agentOnly && !d.flags.agentOnly);
    assert.deepEqual(parseScaleFlags(["--agent-only", "yes"]), { ok: false, error: '--agent-only: "yes" is not true or false' });
    assert.ok(!parseScaleFlags(["--agent-only", "true", "--gc-only", "true"]).ok);
    assert.ok(!parseScaleFlags(["--agent-only", "true", "--real-agent", "false"]).ok);
    const room = parseScaleFlags(["--idle-identities", "61000"]);
    assert.ok(!room.ok && room.error.startsWith("--idle-identities: 61000"));
  });

  it("a small cluster run prints one JSON line with every figure, and the figures are sane", { timeout: 600_000 }, async () => {
    const args = ["--nodes", "4", "--pods", "40", "--identities", "20", "--policies", "20", "--namespaces", "4", "--idle-identities", "300", "--changes", "3", "--steady-seconds", "3", "--kernel-lock", "none", "--agent-bundle", "false"];
    // One restart of the real agent (the bench's default is 3, for a median).
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, BENCH_AGENT_RESTARTS: "1" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    assert.equal(code, 0, stderr.slice(-3000));
    const lines = stdout.trim().split("\n");
    assert.equal(lines.length, 1, stdout);
    const r = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(r.bench, "scale");
    assert.equal(r.error, undefined);
    for (const k of ["operator_heap_mib", "policy_p99_ms", "pod_p99_ms", "gc_60k_s", "agent_rss_mib", "agent_ready_s", "operator_api_rps", "operator_cpu_pct"]) {
      assert.equal(typeof r[k], "number", `${k}: ${JSON.stringify(r[k])}`);
      assert.ok((r[k] as number) >= 0, `${k} = ${String(r[k])}`);
    }
    assert.equal(r.changes, 3);
    // 20 pod identities, plus the measured policy's peers' none: at least the pods' identities exist.
    assert.ok((r.identities as number) >= 20, `identities ${String(r.identities)}`);
    assert.ok((r.policy_p99_ms as number) < 60_000 && (r.pod_p99_ms as number) < 60_000);
    assert.ok((r.operator_heap_mib as number) > 5 && (r.operator_heap_mib as number) < 2000, `heap ${String(r.operator_heap_mib)}`);
    assert.ok((r.agent_rss_mib as number) > 10 && (r.agent_rss_mib as number) < 2000, `agent RSS ${String(r.agent_rss_mib)}`);
    assert.ok((r.agent_ready_s as number) > 0 && (r.agent_ready_s as number) < 120);
    assert.ok((r.gc_60k_s as number) > 0, "the idle identities were collected");
    assert.deepEqual((r.shape as Record<string, number>).nodes, 4);
  });
});
