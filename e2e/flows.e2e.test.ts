// End to end: a connection denied across nodes appears in `membrane observe --verdict DROPPED` (agents found through the cluster) within a second, naming both pods, identities, port and the deciding policy.
// Process-based cluster because: (b) nothing here needs it (`membrane observe` finds the agents on real nodes too: e2e/demo.e2e.test.ts; realnode.test.ts's cross-node CNP test reads a drop flow); it stays process-based for the CI budget (a real-node cluster costs 1-2 min to start).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { TestCluster, waitEnforced, type PodProber } from "./harness.ts";
import { devClusterPaths } from "../localcluster/devcluster.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import { CNPS } from "../kube/resources.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import type { Flow } from "../flowapi/flow.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const NODES = 2;
const tc = new TestCluster(`fl${process.pid % 100000}-`);

/** shop/web on node 1 admits default/client on 8080 only; 8082 is denied by an explicit rule; 8081 falls to default deny. */
const webPolicy = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "web-ingress", namespace: "shop" },
  spec: {
    endpointSelector: { matchLabels: { app: "web" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: "client", "k8s:io.kubernetes.pod.namespace": "default" } }], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] }],
    ingressDeny: [{ fromEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "default" } }], toPorts: [{ ports: [{ port: "8082", protocol: "TCP" }] }] }],
  },
};

/** A running `membrane observe -f -o json`: its flows as they are printed, and its stderr. */
class Follower {
  readonly flows: { flow: Flow; at: number }[] = [];
  stderr = "";
  private readonly child: ChildProcess;
  private partial = "";

  constructor(args: string[]) {
    this.child = spawn(MEMBRANE, ["observe", "-f", "-o", "json", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout!.on("data", (d: Buffer) => {
      const at = Date.now();
      this.partial += d.toString();
      const lines = this.partial.split("\n");
      this.partial = lines.pop()!;
      for (const l of lines) if (l.trim() !== "") this.flows.push({ flow: JSON.parse(l) as Flow, at });
    });
    this.child.stderr!.on("data", (d: Buffer) => (this.stderr += d.toString()));
  }

  async waitFor(what: string, pred: (f: Flow) => boolean, timeoutMs: number): Promise<{ flow: Flow; at: number }> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.flows.find((x) => pred(x.flow));
      if (hit) return hit;
      if (this.child.exitCode !== null) assert.fail(`membrane observe exited (${this.child.exitCode}) before ${what}: ${this.stderr}`);
      if (Date.now() > end) assert.fail(`${what}: not printed within ${timeoutMs} ms; printed: ${JSON.stringify(this.flows.map((x) => x.flow))} stderr: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((r) => this.child.once("exit", (code) => r(code)));
    this.child.kill("SIGINT");
    return exited;
  }
}

describe("flows of denied connections, across nodes, through membrane observe", () => {
  let client: PodProber | undefined;
  let follower: Follower | undefined;
  const ips = new Map<string, string>();
  const identities = new Map<string, number>();

  before(async () => {
    await tc.start(NODES);
    const got = await tc.createPods({ shop: { team: "shop" }, default: {} }, [
      { namespace: "shop", name: "web", node: 1, labels: { app: "web" }, ports: [8080, 8081, 8082].map((port) => ({ port, protocol: "TCP" as const })) },
      { namespace: "default", name: "client", node: 2, labels: { app: "client" }, ports: [] },
    ]);
    for (const [k, v] of got) ips.set(k, v);
    for (const [ns, pod] of [["shop", "web"], ["default", "client"]] as const) {
      const end = Date.now() + 30_000;
      for (;;) {
        const p = JSON.parse(await tc.kubectl(["get", "pod", "-n", ns, pod, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
        const id = p.metadata.annotations?.[IDENTITY_ANNOTATION];
        if (id !== undefined) {
          identities.set(`${ns}/${pod}`, Number(id));
          break;
        }
        if (Date.now() > end) assert.fail(`${ns}/${pod} has no identity annotation`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(webPolicy));
    // Enforced on the nodes that host a selected pod: web runs on node 1 only.
    await waitEnforced(tc, CNPS, "shop", "web-ingress", 1);
    client = await tc.prober("default", "client");
    await waitObserverAnnotations();
  });

  after(async () => {
    await follower?.stop();
    await tc.stop();
  });

  /** Each agent publishes its Hubble address on its CiliumNode: discovery finds it there, nothing else tells it. */
  async function waitObserverAnnotations(): Promise<void> {
    const end = Date.now() + 30_000;
    for (let i = 1; i <= NODES; i++) {
      const node = tc.nodeName(i);
      const want = `unix:${join(devClusterPaths(tc.dir).agentDir(node), "hubble.sock")}`;
      for (;;) {
        const cn = JSON.parse(await tc.kubectl(["get", "ciliumnode", node, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
        const got = cn.metadata.annotations?.[HUBBLE_ADDRESS_ANNOTATION];
        if (got !== undefined) {
          assert.equal(got, want, `${node}: the agent published another Hubble address`);
          break;
        }
        if (Date.now() > end) assert.fail(`${node}: the agent did not publish ${HUBBLE_ADDRESS_ANNOTATION} on its CiliumNode within 30 s`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  it("the allowed port connects and the others do not (the policy is in force)", async () => {
    const web = ips.get("shop/web")!;
    assert.equal((await client!.probe(web, 8080, { timeoutMs: 3000 })).verdict, "connected");
    assert.notEqual((await client!.probe(web, 8081, { timeoutMs: 1000 })).verdict, "connected");
  });

  it("a connection denied by default deny is printed by `membrane observe --verdict DROPPED -f` within a second, with both pods (the remote one too), identities, port and 'default deny'", async () => {
    const web = ips.get("shop/web")!;
    const clientIp = ips.get("default/client")!;
    follower = new Follower(["--kubeconfig", tc.cp!.kubeconfig, "--verdict", "DROPPED"]);
    // A first denied connection proves the follower is attached to both agents (replay or stream).
    await client!.probe(web, 8081, { timeoutMs: 500 });
    await follower.waitFor("the first drop", (f) => f.destination.port === 8081, 15_000);
    const seen = new Set(follower.flows.map((x) => x.flow.source.port));

    const t0 = Date.now();
    const attempt = client!.probe(web, 8081, { timeoutMs: 1500 });
    const { flow, at } = await follower.waitFor("the new connection's drop", (f) => f.destination.port === 8081 && !seen.has(f.source.port), 3000);
    console.log(`# drop printed ${at - t0} ms after the connect started`);
    assert.notEqual((await attempt).verdict, "connected");
    assert.ok(at - t0 < 1000, `printed after ${at - t0} ms`);

    assert.equal(flow.verdict, "DROPPED");
    assert.equal(flow.type, "drop");
    assert.equal(flow.direction, "ingress");
    assert.equal(flow.protocol, "TCP");
    assert.equal(flow.node, tc.nodeName(1), "the web pod's node judged it");
    assert.deepEqual(
      { identity: flow.source.identity, namespace: flow.source.namespace, pod: flow.source.pod, ip: flow.source.ip },
      { identity: identities.get("default/client"), namespace: "default", pod: "client", ip: clientIp },
      "the source is the remote pod, named from the ipcache",
    );
    assert.ok(flow.source.labels.includes("k8s:app=client"), `source labels ${JSON.stringify(flow.source.labels)}`);
    assert.deepEqual(
      { identity: flow.destination.identity, namespace: flow.destination.namespace, pod: flow.destination.pod, ip: flow.destination.ip, port: flow.destination.port },
      { identity: identities.get("shop/web"), namespace: "shop", pod: "web", ip: web, port: 8081 },
    );
    assert.equal(flow.dropReason, "policy denied (default deny)");
    assert.deepEqual(flow.decidedBy, { kind: "default-deny" });
    assert.equal(follower.stderr, "", "every node's observer answered");
  });

  it("a connection denied by a deny rule names the policy and the rule, in json and in the table", async () => {
    const web = ips.get("shop/web")!;
    const t0 = Date.now();
    assert.notEqual((await client!.probe(web, 8082, { timeoutMs: 1000 })).verdict, "connected");
    const { flow, at } = await follower!.waitFor("the 8082 drop", (f) => f.destination.port === 8082, 3000);
    assert.ok(at - t0 < 2000, `printed after ${at - t0} ms`);
    assert.equal(flow.dropReason, "policy denied");
    assert.deepEqual(flow.decidedBy, { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "web-ingress", rule: "spec.ingressDeny[0]" });
    assert.equal(flow.source.pod, "client");
    assert.equal(flow.destination.pod, "web");

    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn(MEMBRANE, ["observe", "--kubeconfig", tc.cp!.kubeconfig, "--verdict", "DROPPED", "--to-pod", "shop/web", "--port", "8082", "--last", "1"], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      c.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trimEnd().split("\n");
    assert.equal(rows.length, 2, r.stdout);
    assert.match(rows[1]!, new RegExp(`${tc.nodeName(1)}\\s+default/client:\\d+ \\(${identities.get("default/client")}\\)\\s+shop/web:8082 \\(${identities.get("shop/web")}\\)\\s+TCP\\s+DROPPED\\s+drop\\s+policy denied\\s+CiliumNetworkPolicy shop/web-ingress spec\\.ingressDeny\\[0\\]`));
  });
});
