// End to end: a toServices egress policy with real packets — a Service's EndpointSlices decide which pods a client reaches, and a selector-less Service's hand-written slice pointing outside the cluster works as toCIDR;
// a toCIDRSet cidrGroupRef reaches the outside host as its CiliumCIDRGroup says.
// The Services here have no selector, so the EndpointSlice controller (which the local cluster runs) leaves them to the slices the test writes: that is how the test decides which pods back a Service and when. No Service VIP routing yet: the backends are probed by their pod IPs.
// Process-based cluster because: (a) its selector-less Service's slice points at an outside host the test adds on the nodes' shared underlay bridge (routed back to the pod CIDRs, no masquerade), which real nodes (point-to-point veths, no outside
// hosts) do not have; the slice-driven pod cases could move (realnode.test.ts has an egress toServices rule on real pods, over IPv6).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { TestCluster, type PodProber } from "./harness.ts";
import { run } from "../localcluster/nodes.ts";

const prefix = `s${process.pid % 100000}-`;
const NS = "default";
/** An address on the underlay bridge that is no node's and no pod's: a host outside the cluster. */
const OUTSIDE = "172.30.0.250";
const OUTSIDE_PORT = 8080;

interface TestPod {
  name: string;
  node: number;
  labels: Record<string, string>;
  ip?: string;
}
const pods: TestPod[] = [
  { name: "client", node: 1, labels: { app: "client" } },
  { name: "db-1", node: 2, labels: { app: "db" } },
  // Labelled like db-1 but not in the Service's slice yet: the slice decides, not labels.
  { name: "db-2", node: 1, labels: { app: "db", track: "canary" } },
  { name: "other", node: 2, labels: { app: "other" } },
];
const byName = (n: string): TestPod => pods.find((p) => p.name === n)!;

const tc = new TestCluster(prefix);
let client: PodProber | undefined;
let outsideServer: ChildProcess | undefined;

const kubectl = (args: string[], input?: string): Promise<string> => tc.kubectl(args, input);
const apply = (obj: object): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));

const service = (name: string, selector?: Record<string, string>, port = 80): object => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: NS },
  spec: { ...(selector ? { selector } : {}), ports: [{ port, protocol: "TCP" }] },
});
const slice = (name: string, svc: string, addresses: string[], port = 80): object => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name, namespace: NS, labels: { "kubernetes.io/service-name": svc } },
  addressType: "IPv4",
  ports: [{ port, protocol: "TCP" }],
  endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
});

/** Where the client connects now, of the pods and the outside host. */
async function reached(): Promise<string[]> {
  const targets = [...pods.filter((p) => p.name !== "client").map((p) => ({ name: p.name, ip: p.ip!, port: 80 })), { name: "outside", ip: OUTSIDE, port: OUTSIDE_PORT }];
  const out: string[] = [];
  await Promise.all(
    targets.map(async (t) => {
      if ((await client!.probe(t.ip, t.port, { timeoutMs: 1_000 })).verdict === "connected") out.push(t.name);
    }),
  );
  return out.sort();
}

/** Polls until the client reaches exactly `want`; fails with what it reached at the deadline. */
async function converges(what: string, want: string[], ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await reached();
    if (got.join() === [...want].sort().join()) return;
    if (Date.now() > end) assert.fail(`${what}: after ${ms} ms the client reaches [${got.join(", ")}], expected [${[...want].sort().join(", ")}]`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

describe("toServices end to end (2 nodes, real packets)", { timeout: 6 * 60_000 }, () => {
  before(async () => {
    await tc.start(2);
    const ips = await tc.createPods({ [NS]: {} }, pods.map((p) => ({ namespace: NS, name: p.name, node: p.node, labels: p.labels, ports: [{ port: 80, protocol: "TCP" as const }] })));
    for (const p of pods) p.ip = ips.get(`${NS}/${p.name}`);
    client = await tc.prober(NS, "client");
    // The outside host: an address on the underlay bridge, routes back to the pod CIDRs, and a TCP server.
    const underlay = `${prefix}underlay`;
    await run("ip", ["-n", underlay, "addr", "add", `${OUTSIDE}/24`, "dev", "br0"]);
    for (const i of [1, 2]) await run("ip", ["-n", underlay, "route", "add", `10.244.${i}.0/24`, "via", `172.30.0.${i + 2}`]);
    outsideServer = spawn("ip", ["netns", "exec", underlay, process.execPath, "-e", `require("net").createServer((s) => s.end()).listen(${OUTSIDE_PORT}, ${JSON.stringify(OUTSIDE)})`], { stdio: "ignore" });
  });

  after(async () => {
    outsideServer?.kill("SIGKILL");
    await tc.stop(); // removes the underlay namespace with the address and routes added above
  });

  it("with no policy the client reaches every pod and the outside host", async () => {
    await converges("no policy", ["db-1", "db-2", "other", "outside"]);
  });

  it("a toServices egress policy lets the client reach exactly the pods in the Service's EndpointSlice", async () => {
    await apply(service("db"));
    await apply(slice("db-x1", "db", [byName("db-1").ip!]));
    await apply({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "client-to-services", namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toServices: [{ k8sService: { serviceName: "db" } }, { k8sService: { serviceName: "external-db" } }] }] },
    });
    await kubectl(["wait", "ciliumnetworkpolicy/client-to-services", "-n", NS, "--for=condition=Enforced", "--timeout=60s"]);
    await converges("db-1 in the slice", ["db-1"]);
  });

  it("reaches a new backend once its EndpointSlice lists it (db-1 stays reachable throughout: no window), and no longer one it drops", async () => {
    // A continuous probe to db-1 while the slice changes: the entries for db-2 come without touching db-1's.
    let probing = true;
    const failures: string[] = [];
    let probes = 0;
    const loop = (async () => {
      while (probing) {
        const r = await client!.probe(byName("db-1").ip!, 80, { timeoutMs: 1_000 });
        probes++;
        if (r.verdict !== "connected") failures.push(r.verdict);
        await new Promise((res) => setTimeout(res, 50));
      }
    })();
    await apply(slice("db-x1", "db", [byName("db-1").ip!, byName("db-2").ip!]));
    await converges("db-2 added to the slice", ["db-1", "db-2"]);
    probing = false;
    await loop;
    assert.ok(probes > 5, `the probe ran (${probes} probes)`);
    assert.deepEqual(failures, [], `db-1 was unreachable in ${failures.length} of ${probes} probes while db-2 was added`);
    await apply(slice("db-x1", "db", [byName("db-2").ip!]));
    await converges("db-1 dropped from the slice", ["db-2"]);
  });

  it("a Service without a selector and a hand-written EndpointSlice pointing outside the cluster works as toCIDR", async () => {
    await apply(service("external-db", undefined, OUTSIDE_PORT));
    await apply(slice("external-db-1", "external-db", [OUTSIDE], OUTSIDE_PORT));
    await converges("outside host via external-db", ["db-2", "outside"]);
  });

  it("deleting the Services selects nothing: the client stays in default deny", async () => {
    await kubectl(["delete", "service", "-n", NS, "db", "external-db"]);
    await converges("Services deleted", []);
  });

  it("a toCIDRSet cidrGroupRef reaches the outside host once its CiliumCIDRGroup lists it, and no longer once the group is edited or deleted (the policy untouched)", async () => {
    const group = (cidrs: string[]): object => ({ apiVersion: "cilium.io/v2alpha1", kind: "CiliumCIDRGroup", metadata: { name: `${prefix}outside` }, spec: { externalCIDRs: cidrs } });
    await apply({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "client-to-group", namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toCIDRSet: [{ cidrGroupRef: `${prefix}outside` }], toPorts: [{ ports: [{ port: String(OUTSIDE_PORT), protocol: "TCP" }] }] }] },
    });
    await converges("the group does not exist yet", []);
    await apply(group(["172.30.0.248/29"]));
    await converges("the group lists the outside host", ["outside"]);
    await apply(group(["192.0.2.0/24"]));
    await converges("the group edited", []);
    await apply(group([`${OUTSIDE}/32`]));
    await converges("the group lists it again", ["outside"]);
    await kubectl(["delete", "ciliumcidrgroup", `${prefix}outside`]);
    await converges("the group deleted", []);
    await kubectl(["delete", "ciliumnetworkpolicy", "-n", NS, "client-to-group"]);
  });
});
