// Health on the CiliumNode: the conditions each agent state reports, and publishing them to a real API server; the agent's heartbeat Lease created and renewed there.
import { after, before, describe, it, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { KubeClient } from "../kube/kube.ts";
import type { Condition } from "../kube/conditions.ts";
import type { AgentStatus } from "./agent.ts";
import { AGENT_LEASE_NAMESPACE } from "../kube/heartbeat.ts";
import { CiliumNodeHealth, agentHeartbeat, agentReport, healthConditions, hostFirewallCondition, l7ProxyCondition, membraneVersion, runtimeCondition } from "./health.ts";
import { parseAgentFlags } from "./flags.ts";
import { capturingLogger, until } from "./testing/agent.ts";

const CRD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../crds/generated/ciliumnodes.cilium.io.yaml");
const base: AgentStatus = { connected: true, version: 7, lastError: undefined, endpoints: 2, policyEnforcementMode: "default", policyAuditMode: false, auditedEndpoints: 0 };
const byType = (cs: readonly { type: string; status: string; reason: string; message: string }[]) => Object.fromEntries(cs.map((c) => [c.type, `${c.status}/${c.reason}`]));

describe("agent health conditions", () => {
  it("the agent block carries the build version, and the policy version once one is acknowledged", () => {
    assert.deepEqual(agentReport({ ...base, version: undefined }, "0.1.0"), { version: "0.1.0", policyAuditMode: false, auditedEndpoints: 0 });
    assert.deepEqual(agentReport(base, "0.1.0"), { version: "0.1.0", policyVersion: 7, policyAuditMode: false, auditedEndpoints: 0 });
    assert.match(membraneVersion(), /^\d+\.\d+\.\d+/);
  });

  it("audit mode shows in the agent block and in Ready's message, for the node and for annotated endpoints", () => {
    assert.deepEqual(agentReport({ ...base, policyAuditMode: true }, "0.1.0"), { version: "0.1.0", policyVersion: 7, policyAuditMode: true, auditedEndpoints: 0 });
    const ready = (s: AgentStatus): string => healthConditions(s, "maps pinned").find((c) => c.type === "Ready")!.message;
    assert.match(ready({ ...base, policyAuditMode: true }), /policy audit mode: policy drops pass and are reported as AUDIT/);
    assert.match(ready({ ...base, auditedEndpoints: 1 }), /1 endpoint\(s\) in policy audit mode/);
    assert.doesNotMatch(ready(base), /audit/);
  });

  it("connected with an acknowledged version: Ready, DatapathLoaded and PolicySynced are True, and the message names the version", () => {
    const cs = healthConditions(base, "maps pinned", 3);
    assert.deepEqual(byType(cs), { Ready: "True/Enforcing", DatapathLoaded: "True/Loaded", PolicySynced: "True/Acknowledged" });
    assert.match(cs.find((c) => c.type === "PolicySynced")!.message, /version 7 applied and acknowledged/);
    assert.ok(cs.every((c) => c.observedGeneration === 3));
  });

  it("a refused state: not synced and not ready, with the error and the version still enforced", () => {
    const cs = healthConditions({ ...base, lastError: "policies[0].entries[3]: bad port" }, "maps pinned");
    assert.deepEqual(byType(cs), { Ready: "False/StateRefused", DatapathLoaded: "True/Loaded", PolicySynced: "False/StateRefused" });
    assert.match(cs.find((c) => c.type === "PolicySynced")!.message, /bad port; enforcing version 7/);
  });

  it("operator unreachable: the last version is still enforced, and says so", () => {
    const cs = healthConditions({ ...base, connected: false }, "maps pinned");
    assert.deepEqual(byType(cs), { Ready: "False/OperatorUnreachable", DatapathLoaded: "True/Loaded", PolicySynced: "False/OperatorUnreachable" });
    assert.match(cs[0]!.message, /enforcing version 7/);
  });

  it("the heartbeat Lease's namespace: kube-node-lease unless --lease-namespace says otherwise; a bad name is refused naming the flag", () => {
    const required = ["--node-name", "n", "--operator", "127.0.0.1:9", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
    const flags = (extra: string[]) => parseAgentFlags([...required, ...extra]);
    const d = flags([]);
    assert.ok(d.ok);
    assert.equal(d.flags.leaseNamespace, "kube-node-lease");
    const m = flags(["--lease-namespace", "membrane-system"]);
    assert.ok(m.ok);
    assert.equal(m.flags.leaseNamespace, "membrane-system");
    assert.deepEqual(flags(["--lease-namespace", "Kube_Node"]), { ok: false, error: `--lease-namespace: must be a namespace name (lowercase letters, digits, '-'), got "Kube_Node"` });
  });

  it("connected but nothing applied yet: waiting", () => {
    assert.deepEqual(byType(healthConditions({ ...base, version: undefined }, "maps pinned")), { Ready: "False/Waiting", DatapathLoaded: "True/Loaded", PolicySynced: "False/Waiting" });
  });
});

describe("CiliumNode health against a real API server", { timeout: 180_000 }, () => {
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  let health: CiliumNodeHealth | undefined;
  const node = `health-${process.pid}`;
  const lines: Record<string, unknown>[] = [];
  let status: AgentStatus = { ...base, connected: false, version: undefined };
  const listeners: (() => void)[] = [];
  const changed = (s: AgentStatus): void => {
    status = s;
    for (const l of listeners) l();
  };
  const cidrs: string[][] = [];

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const ciliumNode = async () => JSON.parse(await kubectl(["get", "ciliumnode", node, "-o", "json"])) as { metadata: { annotations?: Record<string, string> }; status?: { conditions?: Condition[]; agent?: { version?: string; policyVersion?: number } } };
  const eventually = async <T>(what: string, f: () => Promise<T | undefined>): Promise<T> => {
    const end = Date.now() + 20_000;
    for (;;) {
      const v = await f().catch(() => undefined);
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  before(async () => {
    cp = await startControlPlane({ name: `health${process.pid}` });
    await kubectl(["apply", "-f", CRD]);
    await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "-f", CRD]);
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
  });

  after(async () => {
    await health?.stop();
    client?.close();
    await cp?.stop();
  });

  it("publishing before the operator made the CiliumNode is retried, not fatal; once it exists the conditions and the observer address appear", async () => {
    health = new CiliumNodeHealth({
      client: client!,
      nodeName: node,
      status: () => status,
      onStatus: (f) => {
        listeners.push(f);
        return () => listeners.splice(listeners.indexOf(f), 1);
      },
      datapath: "maps pinned under /sys/fs/bpf/membrane/test",
      agentVersion: "0.0.0-test",
      hubbleAddress: () => "unix:/run/membrane/hubble.sock",
      onPodCIDRs: (c) => cidrs.push([...c]),
      log: capturingLogger(lines),
      backoff: { baseMs: 100, maxMs: 500, jitter: 0 },
    });
    health.start();
    await until("a failed publish logged", () => lines.find((l) => l.msg === "publishing health on the CiliumNode failed; enforcement is not affected"), 10_000);
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: node }, spec: { ipam: { podCIDRs: ["10.244.7.0/24"] } } }));
    const cn = await eventually("conditions on the CiliumNode", async () => {
      const o = await ciliumNode();
      return o.status?.conditions?.length === 3 && o.metadata.annotations?.["membrane.io/hubble-address"] ? o : undefined;
    });
    assert.deepEqual(byType(cn.status!.conditions!), { Ready: "False/OperatorUnreachable", DatapathLoaded: "True/Loaded", PolicySynced: "False/OperatorUnreachable" });
    assert.equal(cn.metadata.annotations!["membrane.io/hubble-address"], "unix:/run/membrane/hubble.sock");
    assert.deepEqual(cn.status!.agent, { version: "0.0.0-test", policyAuditMode: false, auditedEndpoints: 0 }, "the version is published before any policy version");
    assert.deepEqual(cidrs.at(-1), ["10.244.7.0/24"]);
    assert.equal(lines.filter((l) => l.msg === "publishing health on the CiliumNode failed; enforcement is not affected").length, 1, "one line per distinct failure, not per retry");
  });

  it("an acknowledged version turns Ready and PolicySynced True; DatapathLoaded keeps its transition time", async () => {
    const before = (await ciliumNode()).status!.conditions!;
    await new Promise((r) => setTimeout(r, 1100)); // transition times have seconds precision
    changed({ ...base, version: 12 });
    const after = await eventually("PolicySynced True", async () => {
      const cs = (await ciliumNode()).status?.conditions;
      return cs?.find((c) => c.type === "PolicySynced")?.status === "True" ? cs : undefined;
    });
    assert.deepEqual(byType(after), { Ready: "True/Enforcing", DatapathLoaded: "True/Loaded", PolicySynced: "True/Acknowledged" });
    assert.match(after.find((c) => c.type === "PolicySynced")!.message, /version 12/);
    const agent = await eventually("status.agent with the acknowledged version", async () => {
      const a = (await ciliumNode()).status?.agent;
      return a?.policyVersion === 12 ? a : undefined;
    });
    assert.deepEqual(agent, { version: "0.0.0-test", policyVersion: 12, policyAuditMode: false, auditedEndpoints: 0 });
    const ltt = (cs: Condition[], t: string) => cs.find((c) => c.type === t)!.lastTransitionTime;
    assert.equal(ltt(after, "DatapathLoaded"), ltt(before, "DatapathLoaded"));
    assert.notEqual(ltt(after, "Ready"), ltt(before, "Ready"));
  });

  it("a refused state is published with its error", async () => {
    changed({ ...base, version: 12, lastError: "policies[0].entries[1]: port 70000 out of range" });
    const cs = await eventually("PolicySynced False", async () => {
      const c = (await ciliumNode()).status?.conditions;
      return c?.find((x) => x.type === "PolicySynced")?.reason === "StateRefused" ? c : undefined;
    });
    assert.match(cs.find((c) => c.type === "PolicySynced")!.message, /port 70000 out of range; enforcing version 12/);
  });

  type LeaseJSON = { metadata: { ownerReferences?: unknown[] }; spec: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string } };
  it("the heartbeat Lease membrane-agent-<node> is created in kube-node-lease, held by the node, renewed while the agent runs, and left to expire once it stops", async () => {
    const log: Record<string, unknown>[] = [];
    const heartbeat = agentHeartbeat({ client: client!, nodeName: node, namespace: AGENT_LEASE_NAMESPACE, log: capturingLogger(log), timing: { renewMs: 500, leaseDurationSeconds: 2 } });
    const lease = async () => JSON.parse(await kubectl(["get", "lease", "-n", AGENT_LEASE_NAMESPACE, `membrane-agent-${node}`, "-o", "json"])) as LeaseJSON;
    heartbeat.start();
    try {
      const first = await eventually("the heartbeat Lease", async () => (await lease()).spec);
      assert.equal(first.holderIdentity, node);
      assert.equal(first.leaseDurationSeconds, 2);
      const renewed = await eventually("a renewal", async () => {
        const s = (await lease()).spec;
        return s.renewTime !== first.renewTime ? s : undefined;
      });
      assert.ok(Date.parse(renewed.renewTime!) > Date.parse(first.renewTime!), `${renewed.renewTime} after ${first.renewTime}`);
      assert.equal(log.filter((l) => l.msg === "heartbeat Lease created").length, 1, "created once, then renewed");
    } finally {
      await heartbeat.stop();
    }
    const last = (await lease()).spec.renewTime;
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal((await lease()).spec.renewTime, last, "a stopped agent renews nothing");
    assert.equal((await lease()).metadata.ownerReferences, undefined, "no Node object, no owner");
  });

  it("the heartbeat Lease is owned by the agent's Node (the garbage collector deletes it when the node leaves): a Lease made before the Node is adopted at the next renewal, a new one is created owned", async () => {
    const heartbeat = agentHeartbeat({ client: client!, nodeName: node, namespace: AGENT_LEASE_NAMESPACE, log: capturingLogger([]), timing: { renewMs: 500, leaseDurationSeconds: 2 } });
    const owners = async () => (JSON.parse(await kubectl(["get", "lease", "-n", AGENT_LEASE_NAMESPACE, `membrane-agent-${node}`, "-o", "json"])) as LeaseJSON).metadata.ownerReferences;
    await kubectl(["create", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: node } }));
    const uid = (await kubectl(["get", "node", node, "-o", "jsonpath={.metadata.uid}"])).trim();
    const want = [{ apiVersion: "v1", kind: "Node", name: node, uid }];
    heartbeat.start();
    try {
      assert.deepEqual(await eventually("the Lease adopted by the Node", async () => ((await owners())?.length ? owners() : undefined)), want);
      await kubectl(["delete", "lease", "-n", AGENT_LEASE_NAMESPACE, `membrane-agent-${node}`]);
      assert.deepEqual(await eventually("the Lease created again, owned", async () => owners().catch(() => undefined)), want);
    } finally {
      await heartbeat.stop();
      await kubectl(["delete", "node", node]);
    }
  });

  it("conditions overwritten by someone else are healed", async () => {
    await kubectl(["patch", "ciliumnode", node, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { conditions: [] } })]);
    changed(status); // a status event (as any change would); the periodic resync would do it too
    await eventually("conditions back", async () => ((await ciliumNode()).status?.conditions?.length === 3 ? true : undefined));
  });
});

test("HostFirewall: only with the host firewall; False/NoNodeObject without a Node object (naming what the last state holds), else NoHostPolicy or Enforced", () => {
  const base = { connected: true, version: 3, lastError: undefined, endpoints: 0, policyEnforcementMode: "default" as const, policyAuditMode: false, auditedEndpoints: 0 };
  assert.ok(!healthConditions(base, "dp").some((c) => c.type === "HostFirewall"));
  const of = (h: { ingressEnforced: boolean; egressEnforced: boolean; nodeObject?: boolean }) => healthConditions({ ...base, hostFirewall: h }, "dp").find((c) => c.type === "HostFirewall")!;
  assert.deepEqual([of({ ingressEnforced: false, egressEnforced: false, nodeObject: false }).status, of({ ingressEnforced: false, egressEnforced: false, nodeObject: false }).reason], ["False", "NoNodeObject"]);
  assert.match(of({ ingressEnforced: true, egressEnforced: true, nodeObject: false }).message, /the last state held enforces ingress and egress$/);
  assert.deepEqual([of({ ingressEnforced: false, egressEnforced: false }).status, of({ ingressEnforced: false, egressEnforced: false }).reason], ["True", "NoHostPolicy"]);
  assert.deepEqual([of({ ingressEnforced: false, egressEnforced: true, nodeObject: true }).reason, of({ ingressEnforced: false, egressEnforced: true, nodeObject: true }).message], ["Enforced", "host policy enforced on egress"]);
  assert.deepEqual(hostFirewallCondition({ ingressEnforced: true, egressEnforced: false }, { observedGeneration: 4 }).observedGeneration, 4);
});

test("L7Proxy: only with the L7 proxy; True/Running, False/ProxyDown naming the ports whose connections fail, False/ConfigurationNotApplied", () => {
  const base = { connected: true, version: 3, lastError: undefined, endpoints: 0, policyEnforcementMode: "default" as const, policyAuditMode: false, auditedEndpoints: 0 };
  assert.ok(!healthConditions(base, "dp").some((c) => c.type === "L7Proxy"));
  const up = healthConditions({ ...base, l7Proxy: { running: true, servedPorts: [10000] } }, "dp").find((c) => c.type === "L7Proxy")!;
  assert.deepEqual([up.status, up.reason, up.message], ["True", "Running", "HTTP rules enforced by the node's proxy; proxy port 10000"]);
  const down = l7ProxyCondition({ running: false, servedPorts: [10000, 10001], error: "the L7 proxy process is not running (the supervisor restarts it)" });
  assert.deepEqual([down.status, down.reason], ["False", "ProxyDown"]);
  assert.equal(down.message, "the L7 proxy process is not running (the supervisor restarts it): connections to proxy ports 10000, 10001 fail until it is back");
  assert.deepEqual(l7ProxyCondition({ running: true, servedPorts: [], error: "not applied" }, { observedGeneration: 2 }), { type: "L7Proxy", status: "False", reason: "ConfigurationNotApplied", message: "not applied; no proxy port served", observedGeneration: 2 });
});

test("RuntimeEnforcer: only with the runtime enforcer; True/Running with its counts, False/EnforcerDown naming why", () => {
  const base: AgentStatus = { connected: true, version: 3, lastError: undefined, endpoints: 1, policyEnforcementMode: "default", policyAuditMode: false, auditedEndpoints: 0 };
  assert.ok(!healthConditions(base, "dp").some((c) => c.type === "RuntimeEnforcer"));
  const up = healthConditions({ ...base, runtime: { running: true, pid: 42, enforced: 2, notEnforced: 1 } }, "dp").find((c) => c.type === "RuntimeEnforcer")!;
  assert.deepEqual(up, { type: "RuntimeEnforcer", status: "True", reason: "Running", message: "pid 42; 2 TracingPolicy(ies) enforced, 1 not (see each policy's status)" });
  assert.equal(
    runtimeCondition({ running: true, pid: 42, enforced: 1, notEnforced: 0, address: "127.0.0.1:41234" }).message,
    "pid 42; 1 TracingPolicy(ies) enforced; process events: membrane observe --type process --runtime-address 127.0.0.1:41234",
  );
  assert.deepEqual(runtimeCondition({ running: false, enforced: 0, notEnforced: 2, error: "the runtime enforcer exited at start (see /x/runtime.log)" }, { observedGeneration: 5 }), {
    type: "RuntimeEnforcer",
    status: "False",
    reason: "EnforcerDown",
    message: "the runtime enforcer exited at start (see /x/runtime.log): TracingPolicies are not enforced on this node until it is back",
    observedGeneration: 5,
  });
});
