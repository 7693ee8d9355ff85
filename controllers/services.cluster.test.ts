// The operator against a real kube-apiserver: a toServices policy's compiled entries follow the Service's EndpointSlices as they change.
// No kube-controller-manager runs here, so the test writes the EndpointSlices itself, as the EndpointSlice controller would.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";
import { AgentClient } from "./testing/agent.ts";
import { makePki } from "../kube/testing/pki.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import type { Downstream, NodeState } from "../core/wire.ts";

const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const NS = "svc";
const NODE = "svc-node";

describe("toServices follows Services and EndpointSlices through the real API server", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;
  let agent: AgentClient | undefined;
  let pki: Awaited<ReturnType<typeof makePki>> | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const apply = (obj: object): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));

  /** A pod on the test node with an address, as a kubelet would report it. */
  async function pod(name: string, app: string, ip: string): Promise<number> {
    await apply({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { app } }, spec: { nodeName: NODE, automountServiceAccountToken: false, containers: [{ name: "c", image: "example.invalid/none" }] } });
    await kubectl(["patch", "pod", "-n", NS, name, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } })]);
    return Number(
      await eventually(`${name} identity`, async () => {
        const p = JSON.parse(await kubectl(["get", "pod", "-n", NS, name, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
        return p.metadata.annotations?.[IDENTITY_ANNOTATION];
      }),
    );
  }

  /** An EndpointSlice as the EndpointSlice controller writes it for `service`. */
  const slice = (name: string, service: string, addresses: string[]): object => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: NS, labels: { "kubernetes.io/service-name": service } },
    addressType: "IPv4",
    ports: [{ name: "db", port: 5432, protocol: "TCP" }],
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
  });
  const service = (name: string, selector?: Record<string, string>): object => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: NS },
    spec: { ...(selector ? { selector } : {}), ports: [{ name: "db", port: 5432, protocol: "TCP" }] },
  });

  /** The egress peers the agent's state allows for `subject`. */
  const allowedPeers = (state: NodeState, subject: number): number[] =>
    [...new Set((state.policies.find((p) => p.subject === subject)?.entries ?? []).filter((e) => e.direction === "egress" && e.verdict === "allow").map((e) => e.peer))].sort((a, b) => a - b);

  before(async () => {
    cp = await startControlPlane({ name: `services-${process.pid}` });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    // Established is not yet servable: a new CRD's storage answers "storage is (re)initializing" for a moment (as policy-l7.cluster.test.ts waits).
    for (let i = 0; (await cp.kubectl(["get", "cnp,ccnp,ciliumnodes,ciliumidentities", "-A"])).code !== 0; i++) {
      if (i > 100) throw new Error("the CRDs never became servable");
      await new Promise((r) => setTimeout(r, 200));
    }
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    await apply({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: NS } });
    await apply({ apiVersion: "v1", kind: "Node", metadata: { name: NODE }, status: { addresses: [{ type: "InternalIP", address: "192.0.2.20" }] } });
    pki = await makePki([NODE]);
    op = new OperatorProcess("op-services", cp.kubeconfig, [
      "--leader-elect", "false", "--controllers", "identity,policy",
      "--distribution-port", "0", "--tls-ca", pki.file("ca.crt"), "--tls-cert", pki.file("operator.crt"), "--tls-key", pki.file("operator.key"),
    ]);
  });

  after(async () => {
    agent?.close();
    await op?.stop("SIGTERM");
    pki?.remove();
    await cp?.stop();
  });

  it("a client's egress allows exactly the pods its Service's EndpointSlices list, follows them, and a selector-less Service's address becomes a CIDR identity", async () => {
    const port = (await op!.waitForLog((l) => l.msg === "distribution stream listening")).port as number;
    const client = await pod("client", "client", "10.20.0.2");
    const db1 = await pod("db-1", "db", "10.20.0.3");
    const db2 = await pod("db-2", "db-canary", "10.20.0.4");
    await apply(service("db", { app: "db" }));
    await apply(slice("db-abc12", "db", ["10.20.0.3"]));
    await apply({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "client-to-db", namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toServices: [{ k8sService: { serviceName: "db" } }, { k8sService: { serviceName: "external-db" } }] }] },
    });
    agent = new AgentClient(`127.0.0.1:${port}`, { ca: pki!.read("ca.crt"), cert: pki!.read(`${NODE}.crt`), key: pki!.read(`${NODE}.key`) }, NODE);
    const a = agent;
    await eventually("client → db-1 allowed", () => (allowedPeers(a.state, client).join() === String(db1) ? true : undefined));
    assert.equal(a.state.policies.find((p) => p.subject === client)?.egressEnforced, true);

    // The controller would add the second pod to the slice: the entry appears, and the delta that
    // brings it removes nothing (no window for db-1).
    const seen = a.received.length;
    await apply(slice("db-abc12", "db", ["10.20.0.3", "10.20.0.4"]));
    await eventually("client → db-1, db-2", () => (allowedPeers(a.state, client).join() === [db1, db2].sort((x, y) => x - y).join() ? true : undefined));
    const grew = a.received.slice(seen).filter((m): m is Extract<Downstream, { type: "delta" }> => m.type === "delta");
    const carried = grew.flatMap((d) => d.subjects.filter((sd) => sd.subject === client));
    assert.ok(carried.some((sd) => sd.added.some((e) => e.peer === db2)), "a delta carried the entries to db-2");
    assert.ok(carried.every((sd) => sd.removed.every((e) => e.peer !== db1)), "and removed nothing of db-1");

    // db-1 leaves the slice: its entries go, db-2 stays.
    await apply(slice("db-abc12", "db", ["10.20.0.4"]));
    await eventually("client → db-2 only", () => (allowedPeers(a.state, client).join() === String(db2) ? true : undefined));

    // A Service without a selector and a slice written by hand, pointing outside the cluster: a CIDR identity, in the ipcache.
    await apply(service("external-db"));
    await apply(slice("external-db-1", "external-db", ["203.0.113.7"]));
    const ext = await eventually("203.0.113.7/32 in the ipcache", () => a.state.ipcache.find((e) => e.prefix === "203.0.113.7/32")?.identity);
    assert.ok(ext >= 1 << 24, "a local CIDR identity");
    await eventually("client → the external address", () => (allowedPeers(a.state, client).includes(ext) ? true : undefined));

    // Services deleted: nothing is selected (never allow-all), and the CIDR identity is released.
    await kubectl(["delete", "service", "-n", NS, "db", "external-db"]);
    await eventually("no egress allows left", () => (allowedPeers(a.state, client).length === 0 ? true : undefined));
    assert.equal(a.state.policies.find((p) => p.subject === client)?.egressEnforced, true, "still default deny");
    await eventually("CIDR identity released", () => (a.state.ipcache.some((e) => e.prefix === "203.0.113.7/32") ? undefined : true));
  });
});
