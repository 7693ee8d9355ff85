// `bin/membrane status` against a real kube-apiserver: CiliumNodes, Leases and a policy made by the test; healthy exits 0, an unready agent or one whose heartbeat expired exits 1 naming its node, --wait returns 0 once healthy.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import type { StatusReport } from "./status.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));

describe("membrane status against a real API server", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  /** Runs `membrane status`; `stderrSoFar` reads what it has written while it still runs. */
  const status = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }> & { stderrSoFar: () => string } => {
    const start = Date.now();
    let live = "";
    const done = new Promise<{ code: number; stdout: string; stderr: string; ms: number }>((resolve) => {
      const child = execFile(MEMBRANE, ["status", "--kubeconfig", cp!.kubeconfig, ...args], (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        resolve({ code, stdout, stderr, ms: Date.now() - start });
      });
      child.stderr?.on("data", (chunk: Buffer | string) => {
        live += String(chunk);
      });
    });
    return Object.assign(done, { stderrSoFar: () => live });
  };
  const conditions = (ready: boolean): unknown[] => {
    const t = "2026-12-03T00:00:00Z";
    return ready
      ? [
          { type: "Ready", status: "True", reason: "Enforcing", message: "2 endpoint(s); enforcing version 9", lastTransitionTime: t },
          { type: "DatapathLoaded", status: "True", reason: "Loaded", message: "maps pinned", lastTransitionTime: t },
          { type: "PolicySynced", status: "True", reason: "Acknowledged", message: "version 9 applied and acknowledged", lastTransitionTime: t },
        ]
      : [
          { type: "Ready", status: "False", reason: "OperatorUnreachable", message: "no stream to the operator; enforcing version 9", lastTransitionTime: t },
          { type: "DatapathLoaded", status: "True", reason: "Loaded", message: "maps pinned", lastTransitionTime: t },
          { type: "PolicySynced", status: "False", reason: "OperatorUnreachable", message: "no stream to the operator; enforcing version 9", lastTransitionTime: t },
        ];
  };
  /** What the agent publishes on its CiliumNode (node-agent/health.ts), written here through the status subresource. */
  const publish = (node: string, ready: boolean): Promise<string> =>
    kubectl(["patch", "ciliumnode", node, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { conditions: conditions(ready), agent: { version: "0.1.0", policyVersion: 9 } } })]);

  const microTime = (msAgo: number): string => new Date(Date.now() - msAgo).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
  /** The agent's heartbeat Lease as node-agent/health.ts renews it (40 s unless a test keeps it live longer), last renewed `agoMs` ago. */
  const heartbeat = (node: string, agoMs: number, leaseDurationSeconds = 40): Promise<string> =>
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: `membrane-agent-${node}`, namespace: "kube-node-lease" }, spec: { holderIdentity: node, leaseDurationSeconds, renewTime: microTime(agoMs) } }),
    );

  before(async () => {
    cp = await startControlPlane({ name: `status-${process.pid}` });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    // Established is not yet servable: a new CRD's storage answers "storage is (re)initializing" for a moment.
    for (let i = 0; (await cp.kubectl(["get", "cnp,ccnp,ciliumnodes,ciliumidentities", "-A"])).code !== 0; i++) {
      if (i > 100) throw new Error("the CRDs never became servable");
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const node of ["node-a", "node-b"]) {
      await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: node }, spec: {} }));
      await publish(node, true);
      // A long duration keeps it live for the whole test, as the operator's Lease below; only the case about a dead agent lets it expire.
      await heartbeat(node, 0, 3600);
    }
    // The operator's Lease as kube/leader.ts writes it; a long duration keeps it live for the whole test.
    const now = new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
    await kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "membrane-operator", namespace: "kube-system" }, spec: { holderIdentity: "op-test_1", leaseDurationSeconds: 3600, acquireTime: now, renewTime: now } }),
    );
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumIdentity", metadata: { name: "256" }, "security-labels": { "k8s:app": "web" } }));
    await kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "web", namespace: "default" }, spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{}] } }),
    );
    const t = "2026-12-03T00:00:00Z";
    await kubectl([
      "patch", "cnp", "web", "-n", "default", "--subresource=status", "--type=merge", "-p",
      JSON.stringify({ status: { observedGeneration: 1, conditions: [{ type: "Valid", status: "True", reason: "Parsed", message: "1 rule", lastTransitionTime: t }, { type: "Enforced", status: "True", reason: "Acknowledged", message: "2/2 nodes", lastTransitionTime: t }] } }),
    ]);
  });

  after(async () => {
    await cp?.stop();
  });

  it("healthy: exit 0, the leader, both agents with their versions, and the counts", async () => {
    const r = await status();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^Operator: +leader op-test_1 \(lease kube-system\/membrane-operator, renewed \d+s ago\); replicas unknown$/m);
    assert.match(r.stdout, /^ +node-a +True +True +True +0\.1\.0 +9$/m);
    assert.match(r.stdout, /^ +node-b +True +True +True +0\.1\.0 +9$/m);
    assert.match(r.stdout, /^Identities: +1$/m);
    assert.match(r.stdout, /^Policies: +1 \(1 valid, 0 invalid; 1 enforced, 0 not enforced, 0 pending\)$/m);
    assert.match(r.stdout, /^Status: +healthy$/m);

    const j = await status("-o", "json");
    assert.equal(j.code, 0);
    const report = JSON.parse(j.stdout) as StatusReport;
    assert.equal(report.healthy, true);
    assert.equal(report.operator.leader, "op-test_1");
    assert.deepEqual(report.agents.map((a) => [a.node, a.ready, a.policyVersion]), [["node-a", true, 9], ["node-b", true, 9]]);
  });

  it("an unready agent: exit 1, and the warning names the node and why", async () => {
    await publish("node-b", false);
    const r = await status();
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^ {2}! agent on node node-b is not ready: Ready=False \(OperatorUnreachable\): no stream to the operator; enforcing version 9$/m);
    assert.match(r.stdout, /^Agents: +1\/2 ready$/m);
    assert.match(r.stdout, /^Status: +unhealthy \(1 warning\)$/m);
    const j = JSON.parse((await status("-o", "json")).stdout) as StatusReport;
    assert.equal(j.healthy, false);
    assert.equal(j.agents.find((a) => a.node === "node-b")?.ready, false);
  });

  it("--wait returns 0 once the agent is ready again, and says what it waits for meanwhile", async () => {
    const waiting = status("--wait", "--wait-duration", "60s");
    // Ready only once it has said what it waits for (a fixed pause lost the race to a slow start on a loaded machine).
    const deadline = Date.now() + 50_000;
    while (!/^waiting: agent on node node-b is not ready/m.test(waiting.stderrSoFar())) {
      assert.ok(Date.now() < deadline, `no waiting line yet: ${waiting.stderrSoFar()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await publish("node-b", true);
    const r = await waiting;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^Status: +healthy$/m);
  });

  it("a dead agent: Ready=True left on its CiliumNode but its heartbeat Lease expired → exit 1, naming the node and when it was last seen", async () => {
    await heartbeat("node-b", 130_000);
    try {
      const r = await status();
      assert.equal(r.code, 1, r.stdout + r.stderr);
      // 130 s plus the command's start (seconds through tsx on a loaded machine).
      assert.match(r.stdout, /^ {2}! agent on node node-b is not ready: last seen 2m[1-5]\ds ago \(heartbeat Lease kube-node-lease\/membrane-agent-node-b expired; its conditions are stale\)$/m);
      assert.match(r.stdout, /^ +node-b +Unknown \(HeartbeatExpired\) +True +True +0\.1\.0 +9$/m);
      assert.match(r.stdout, /^Agents: +1\/2 ready$/m);
      const j = JSON.parse((await status("-o", "json")).stdout) as StatusReport;
      const b = j.agents.find((a) => a.node === "node-b");
      assert.equal(b?.ready, false);
      assert.ok(b?.lastSeenSecondsAgo !== undefined && b.lastSeenSecondsAgo >= 130, `last seen ${b?.lastSeenSecondsAgo}s ago`);
      await kubectl(["delete", "lease", "membrane-agent-node-b", "-n", "kube-node-lease"]);
      const missing = await status();
      assert.equal(missing.code, 1);
      assert.match(missing.stdout, /^ {2}! agent on node node-b is not ready: no heartbeat Lease kube-node-lease\/membrane-agent-node-b /m);
    } finally {
      await heartbeat("node-b", 0, 3600);
    }
  });

  it("--wait gives up after --wait-duration with exit 1 when the operator has no leader", async () => {
    await kubectl(["delete", "lease", "membrane-operator", "-n", "kube-system"]);
    const r = await status("--wait", "--wait-duration", "2s");
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^ {2}! no operator leader: no operator Lease found$/m);
    assert.match(r.stderr, /not healthy after waiting 2s/);
  });
});
