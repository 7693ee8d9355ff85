// A host-firewall agent on a node without a Node object (real API server, real maps): not failed closed, but named — a warning in
// its log and the CiliumNode's HostFirewall condition False/NoNodeObject; the Node appearing and a host policy make it True; the
// Node deleted keeps the host policy the last state held, and says so. Run under flock /tmp/membrane-kernel.lock (bpffs).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { IDENTITY } from "../core/identity.ts";
import type { NodeState } from "../core/wire.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import type { Condition } from "../kube/conditions.ts";
import { KubeClient, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";
import { Datapath } from "./bpf/datapath.ts";
import { NodeAgent } from "./agent.ts";
import { AuditModeWatch } from "./audit-mode.ts";
import { CiliumNodeHealth } from "./health.ts";
import { HostFirewall } from "./hostfw.ts";
import { AgentTestbed, HOST_IP, capturingLogger, stateAllowing, teardownAgentTest, until } from "./testing/agent.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const CRD = path.join(here, "../crds/generated/ciliumnodes.cilium.io.yaml");

/** A state whose host policy enforces the host's ingress (default deny, no entries). */
function stateWithHostPolicy(generation: number): NodeState {
  const base = stateAllowing([8080], generation);
  return { ...base, policies: [{ subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false, entries: [] }, ...base.policies] };
}

describe("a host-firewall agent whose node has no Node object", { timeout: 300_000 }, () => {
  const tb = new AgentTestbed(`hfn${process.pid % 100000}`);
  const lines: Record<string, unknown>[] = [];
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  let server: DistributionServer | undefined;
  let dp: Datapath | undefined;
  let agent: NodeAgent | undefined;
  let watch: AuditModeWatch | undefined;
  let health: CiliumNodeHealth | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  /** The CiliumNode's HostFirewall condition once it has `reason`. */
  const condition = async (reason: string, ms = 20_000): Promise<Condition> => {
    const end = Date.now() + ms;
    let last: Condition | undefined;
    for (;;) {
      const cn = await client!.get<{ status?: { conditions?: Condition[] } }>(resourcePath(CILIUM_NODES, undefined, tb.node));
      last = cn.status?.conditions?.find((c) => c.type === "HostFirewall");
      if (last?.reason === reason) return last;
      if (Date.now() > end) assert.fail(`HostFirewall condition still ${JSON.stringify(last)}, waiting for ${reason}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const report = () => server?.reports().find((r) => r.node === tb.node);

  before(async () => {
    await tb.setUp();
    cp = await startControlPlane({ name: `hfnode${process.pid}` });
    await kubectl(["apply", "-f", CRD]);
    await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "-f", CRD]);
    // The CiliumNode the agent publishes on, and no Node.
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: tb.node }, spec: {} }));
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    const port = await server.listen(0);
    dp = Datapath.load(tb.scope);
    dp.clearAll();
    dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
    const log = capturingLogger(lines);
    // No device to attach: what is tested is what the agent says, with the host address in the real map.
    const hostFirewall = new HostFirewall({ datapath: dp, devices: [], netns: tb.nsHost, addresses: [HOST_IP], guard: [], log });
    agent = new NodeAgent({
      nodeName: tb.node, operator: `127.0.0.1:${port}`, tls: tb.agentTls(), datapath: dp, cniSocket: tb.socketPath, netns: tb.nsHost, log,
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 }, hostFirewall,
    });
    await agent.start();
    health = new CiliumNodeHealth({
      client, nodeName: tb.node, status: () => agent!.status(), onStatus: (f) => agent!.onStatus(f), datapath: "test", agentVersion: "0.0.0-test", log,
      backoff: { baseMs: 100, maxMs: 500, jitter: 0 },
    });
    health.start();
    watch = new AuditModeWatch({ client, nodeName: tb.node, apply: (a) => agent!.setAuditAnnotations(a), log });
    watch.start();
    await watch.synced();
  });

  after(async () => {
    await watch?.stop();
    await health?.stop();
    client?.close();
    await teardownAgentTest(tb, { agent, server, dp });
    await cp?.stop();
  });

  it("says so: a warning in its log, and HostFirewall False/NoNodeObject on its CiliumNode", async () => {
    const c = await condition("NoNodeObject");
    assert.equal(c.status, "False");
    assert.match(c.message, /no Node object for this node: no host policy \(CCNP nodeSelector\) can select it; the host endpoint is not enforced/);
    assert.ok(lines.some((l) => l.level === 40 && /host firewall: this node has no Node object/.test(String(l.msg))), JSON.stringify(lines.filter((l) => Number(l.level) >= 40)));
    assert.deepEqual(agent!.status().hostFirewall, { ingressEnforced: false, egressEnforced: false, nodeObject: false });
  });

  it("the Node appearing makes it True (no host policy, then Enforced once a state's host policy arrives)", async () => {
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: tb.node } }));
    assert.equal((await condition("NoHostPolicy")).status, "True");
    await until("empty snapshot acked", () => report()?.ackedVersion !== undefined);
    server!.publish(tb.node, stateWithHostPolicy(1));
    const c = await condition("Enforced");
    assert.deepEqual([c.status, c.message], ["True", "host policy enforced on ingress"]);
  });

  it("the Node deleted: False/NoNodeObject again, and the host policy the last state held stays enforced (a deleted Node opens nothing)", async () => {
    await kubectl(["delete", "node", tb.node]);
    const c = await condition("NoNodeObject");
    assert.match(c.message, /; the last state held enforces ingress$/);
    assert.deepEqual(agent!.status().hostFirewall, { ingressEnforced: true, egressEnforced: false, nodeObject: false });
  });
});
