// `membrane status` without a cluster: what counts as healthy, which warnings name what, the text and JSON views, and flag errors.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition } from "../kube/conditions.ts";
import { type CiliumNodeObject, type ClusterSnapshot, type LeaseObject, type PolicyObject, formatStatus, parseFlags, statusReport } from "./status.ts";

const NOW = new Date("2026-12-03T12:00:00Z");
const cond = (type: string, status: Condition["status"], reason = "R", message = ""): Condition => ({ type, status, reason, message, lastTransitionTime: "2026-12-03T11:00:00Z" });
const readyNode = (name: string, policyVersion = 4): CiliumNodeObject => ({
  metadata: { name },
  status: { conditions: [cond("Ready", "True", "Enforcing"), cond("DatapathLoaded", "True", "Loaded"), cond("PolicySynced", "True", "Acknowledged")], agent: { version: "0.1.0", policyVersion } },
});
/** An agent's heartbeat Lease as node-agent/health.ts renews it (40 s duration). */
const agentLease = (node: string, renewTime = "2026-12-03T11:59:55.000000Z"): LeaseObject => ({
  metadata: { name: `membrane-agent-${node}`, namespace: "kube-node-lease" },
  spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime },
});
const policy = (name: string, conditions: Condition[], generation = 1, observedGeneration = 1): PolicyObject => ({
  metadata: { name, namespace: "default", generation },
  status: { observedGeneration, conditions },
});

function healthy(): ClusterSnapshot {
  return {
    leases: [{ metadata: { name: "membrane-operator", namespace: "kube-system" }, spec: { holderIdentity: "op-a", leaseDurationSeconds: 15, renewTime: "2026-12-03T11:59:58.000000Z" } }],
    deployments: [
      { metadata: { name: "membrane-operator", namespace: "kube-system", labels: { "app.kubernetes.io/name": "membrane", "app.kubernetes.io/component": "operator" } }, spec: { replicas: 2 }, status: { readyReplicas: 2 } },
      { metadata: { name: "other", namespace: "kube-system" }, spec: { replicas: 1 }, status: { readyReplicas: 0 } },
    ],
    nodes: [readyNode("node-b"), readyNode("node-a")],
    agentLeases: [agentLease("node-a"), agentLease("node-b"), { metadata: { name: "node-a", namespace: "kube-node-lease" }, spec: { holderIdentity: "node-a", leaseDurationSeconds: 40 } }],
    agentLeaseNamespace: "kube-node-lease",
    identities: 3,
    policies: [{ kind: "CiliumNetworkPolicy", obj: policy("web", [cond("Valid", "True", "Parsed"), cond("Enforced", "True", "Acknowledged")]) }],
    pods: [
      { metadata: { name: "a", annotations: { "membrane.io/identity": "256" } } },
      { metadata: { name: "b" } },
      { metadata: { name: "h" }, spec: { hostNetwork: true } },
    ],
  };
}

describe("membrane status: health judgement", () => {
  it("a leader, ready agents and enforced policies are healthy, with the counts a user reads", () => {
    const r = statusReport(healthy(), NOW);
    assert.equal(r.healthy, true);
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.operator, { leader: "op-a", lease: "kube-system/membrane-operator", renewedSecondsAgo: 2, replicas: { desired: 2, ready: 2 } });
    assert.deepEqual(r.agents.map((a) => [a.node, a.ready, a.version, a.policyVersion]), [["node-a", true, "0.1.0", 4], ["node-b", true, "0.1.0", 4]]);
    assert.equal(r.identities, 3);
    assert.deepEqual(r.policies, { total: 1, valid: 1, invalid: 0, enforced: 1, notEnforced: 0, pending: 0 });
    assert.deepEqual(r.endpoints, { withIdentity: 1, pods: 2 }, "host-network pods are not endpoints");
  });

  it("an agent that is not ready is unhealthy, and the warning names the node and the failing condition", () => {
    const s = healthy();
    const b: CiliumNodeObject = { metadata: { name: "node-b" }, status: { conditions: [cond("Ready", "False", "OperatorUnreachable", "no stream to the operator"), cond("DatapathLoaded", "True"), cond("PolicySynced", "False", "OperatorUnreachable", "no stream to the operator")] } };
    const r = statusReport({ ...s, nodes: [readyNode("node-a"), b] }, NOW);
    assert.equal(r.healthy, false);
    assert.deepEqual(r.warnings, ["agent on node node-b is not ready: Ready=False (OperatorUnreachable): no stream to the operator"]);
    assert.equal(r.agents[1]?.conditions.Ready, "False (OperatorUnreachable)");
  });

  it("a host firewall that cannot be enforced (no Node object) is a warning naming the node and why; True is not", () => {
    const s = healthy();
    const a = readyNode("node-a");
    const withHf = (n: CiliumNodeObject, c: Condition): CiliumNodeObject => ({ ...n, status: { ...n.status, conditions: [...(n.status?.conditions ?? []), c] } });
    const r = statusReport({ ...s, nodes: [withHf(a, cond("HostFirewall", "False", "NoNodeObject", "no Node object for this node")), withHf(readyNode("node-b"), cond("HostFirewall", "True", "Enforced", "host policy enforced on ingress"))] }, NOW);
    assert.equal(r.healthy, false);
    assert.deepEqual(r.warnings, ["host firewall on node node-a: HostFirewall=False (NoNodeObject): no Node object for this node"]);
  });

  it("an agent that never published conditions is not ready", () => {
    const r = statusReport({ ...healthy(), nodes: [{ metadata: { name: "fresh" } }], agentLeases: [agentLease("fresh")] }, NOW);
    assert.deepEqual(r.warnings, ["agent on node fresh is not ready: it has not published its conditions"]);
    assert.equal(r.agents[0]?.conditions.Ready, "missing");
  });

  it("an agent whose heartbeat Lease expired is not ready though its CiliumNode still says Ready=True; the warning says when it was last seen", () => {
    // renewTime + 40 s + 5 s skew: 11:59:15 is exactly at the limit (alive), 11:57:50 is 2m10s ago (dead).
    const atLimit = statusReport({ ...healthy(), agentLeases: [agentLease("node-a"), agentLease("node-b", "2026-12-03T11:59:15.000000Z")] }, NOW);
    assert.equal(atLimit.healthy, true, atLimit.warnings.join("; "));
    const r = statusReport({ ...healthy(), agentLeases: [agentLease("node-a"), agentLease("node-b", "2026-12-03T11:57:50.000000Z")] }, NOW);
    assert.equal(r.healthy, false);
    assert.deepEqual(r.warnings, ["agent on node node-b is not ready: last seen 2m10s ago (heartbeat Lease kube-node-lease/membrane-agent-node-b expired; its conditions are stale)"]);
    const b = r.agents.find((a) => a.node === "node-b")!;
    assert.equal(b.ready, false);
    assert.equal(b.lastSeenSecondsAgo, 130);
    assert.equal(b.conditions.Ready, "Unknown (HeartbeatExpired)", "the stale Ready=True is not shown as current");
    assert.match(formatStatus(r), /^Agents: +1\/2 ready$/m);
  });

  it("an agent without a heartbeat Lease is not ready, and the warning names the node and the Lease it looked for", () => {
    const r = statusReport({ ...healthy(), agentLeases: [agentLease("node-a")] }, NOW);
    assert.deepEqual(r.warnings, ["agent on node node-b is not ready: no heartbeat Lease kube-node-lease/membrane-agent-node-b (the agent has not started, or cannot reach the API server)"]);
    assert.equal(r.agents.find((a) => a.node === "node-b")?.conditions.Ready, "Unknown (NoHeartbeat)");
  });

  it("no lease, an expired lease or a released one means no operator leader", () => {
    assert.deepEqual(statusReport({ ...healthy(), leases: [] }, NOW).warnings, ["no operator leader: no operator Lease found"]);
    const expired = { metadata: { name: "membrane-operator", namespace: "kube-system" }, spec: { holderIdentity: "op-a", leaseDurationSeconds: 15, renewTime: "2026-12-03T11:58:00.000000Z" } };
    assert.deepEqual(statusReport({ ...healthy(), leases: [expired] }, NOW).warnings, ["no operator leader: kube-system/membrane-operator (last held by op-a, expired)"]);
    const released = { ...expired, spec: { holderIdentity: null, leaseDurationSeconds: 1, renewTime: "2026-12-03T11:59:59.000000Z" } };
    assert.deepEqual(statusReport({ ...healthy(), leases: [released] }, NOW).warnings, ["no operator leader: kube-system/membrane-operator (released)"]);
  });

  it("invalid and not-enforced policies are unhealthy and named with the operator's reason; pending and stale ones are counted, not warned about", () => {
    const s = healthy();
    const r = statusReport(
      {
        ...s,
        policies: [
          { kind: "CiliumNetworkPolicy", obj: policy("bad", [cond("Valid", "False", "ParseError", "spec.ingress[0].toPorts[0].ports[0].port: must be 0-65535"), cond("Enforced", "False", "Invalid")]) },
          { kind: "CiliumNetworkPolicy", obj: policy("l7", [cond("Valid", "True"), cond("Enforced", "False", "RulesNotEnforced", "1/1 nodes; spec.ingress[0].toPorts[0].rules.http: not enforced yet")]) },
          { kind: "CiliumClusterwideNetworkPolicy", obj: { metadata: { name: "new", generation: 1 } } },
          { kind: "CiliumNetworkPolicy", obj: policy("stale", [cond("Valid", "True"), cond("Enforced", "False", "Refused")], 3, 2) },
          { kind: "CiliumNetworkPolicy", obj: policy("rolling", [cond("Valid", "True"), cond("Enforced", "Unknown", "Pending")]) },
        ],
      },
      NOW,
    );
    assert.equal(r.healthy, false);
    assert.deepEqual(r.policies, { total: 5, valid: 3, invalid: 1, enforced: 0, notEnforced: 1, pending: 3 });
    assert.deepEqual(r.warnings, [
      "CiliumNetworkPolicy default/bad is invalid: spec.ingress[0].toPorts[0].ports[0].port: must be 0-65535",
      "CiliumNetworkPolicy default/l7 is not enforced (RulesNotEnforced): 1/1 nodes; spec.ingress[0].toPorts[0].rules.http: not enforced yet",
    ]);
  });

  it("no agent at all, or operator replicas not ready, is unhealthy", () => {
    assert.deepEqual(statusReport({ ...healthy(), nodes: [] }, NOW).warnings, ["no agent has registered: no CiliumNode exists"]);
    const s = healthy();
    const deployments = s.deployments!.map((d) => (d.metadata.name === "membrane-operator" ? { ...d, status: { readyReplicas: 1 } } : d));
    assert.deepEqual(statusReport({ ...s, deployments }, NOW).warnings, ["operator: 1/2 replicas ready"]);
    assert.equal(statusReport({ ...s, deployments: undefined }, NOW).operator.replicas, undefined, "replicas unknown when Deployments cannot be read");
  });
});

describe("membrane status: output and flags", () => {
  it("the text view shows the leader, one row per agent, the counts and the verdict", () => {
    const text = formatStatus(statusReport(healthy(), NOW));
    assert.match(text, /^Operator: +leader op-a \(lease kube-system\/membrane-operator, renewed 2s ago\); 2\/2 replicas ready$/m);
    assert.match(text, /^Agents: +2\/2 ready$/m);
    assert.match(text, /^ +NODE +READY +DATAPATH-LOADED +POLICY-SYNCED +VERSION +ACKED-POLICY-VERSION$/m);
    assert.match(text, /^ +node-a +True +True +True +0\.1\.0 +4$/m);
    assert.match(text, /^Identities: +3$/m);
    assert.match(text, /^Policies: +1 \(1 valid, 0 invalid; 1 enforced, 0 not enforced, 0 pending\)$/m);
    assert.match(text, /^Endpoints: +1 pods with an identity \(of 2\)$/m);
    assert.match(text, /^Status: +healthy$/m);
    assert.doesNotMatch(text, /Warnings/);
  });

  it("the text view lists warnings and says unhealthy", () => {
    const text = formatStatus(statusReport({ ...healthy(), leases: [] }, NOW));
    assert.match(text, /^Operator: +NO LEADER; 2\/2 replicas ready$/m);
    assert.match(text, /^Warnings:\n {2}! no operator leader: no operator Lease found$/m);
    assert.match(text, /^Status: +unhealthy \(1 warning\)$/m);
  });

  it("flags: defaults, --wait with a duration, and errors that name the flag", () => {
    assert.deepEqual(parseFlags([]), { output: "text", lease: { leaseName: "membrane-operator" } });
    assert.deepEqual(parseFlags(["--wait", "-o", "json", "--lease-namespace", "membrane-system", "--kubeconfig", "/k"]), {
      kubeconfig: "/k",
      output: "json",
      waitMs: 300_000,
      lease: { leaseName: "membrane-operator", leaseNamespace: "membrane-system" },
    });
    assert.equal((parseFlags(["--wait", "--wait-duration", "90s"]) as { waitMs: number }).waitMs, 90_000);
    assert.deepEqual((parseFlags(["--agent-lease-namespace", "membrane-system"]) as { lease: unknown }).lease, { leaseName: "membrane-operator", agentLeaseNamespace: "membrane-system" });
    assert.deepEqual(parseFlags(["--agent-lease-namespace", ""]), { error: "--agent-lease-namespace: must not be empty" });
    assert.deepEqual(parseFlags(["-o", "yaml"]), { error: '--output: "yaml" is not text or json' });
    assert.deepEqual(parseFlags(["--wait", "--wait-duration", "soon"]), { error: '--wait-duration: "soon" is not a positive duration (e.g. 30s, 5m, 1h)' });
    assert.deepEqual(parseFlags(["--wait-duration", "1m"]), { error: "--wait-duration: only with --wait" });
    assert.match((parseFlags(["--bogus"]) as { error: string }).error, /--bogus/);
    assert.deepEqual(parseFlags(["-h"]), { help: true });
  });

  it("the binary: a usage error exits 2 naming the flag, an unreadable kubeconfig exits 1 saying so", async () => {
    const membrane = fileURLToPath(new URL("../bin/membrane", import.meta.url));
    const run = (...args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) => execFile(membrane, ["status", ...args], (err, _out, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr })));
    const usage = await run("--output", "yaml");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^membrane status: --output: "yaml" is not text or json$/m);
    const missing = await run("--kubeconfig", "/nonexistent/kubeconfig");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^membrane status: cannot load the kubeconfig: .*\/nonexistent\/kubeconfig/m);
  });
});
