// End to end, HTTP rules whose client and destination run on different nodes of the local cluster: the agents' own L7 proxies, the overlay, real curl and a real HTTP server in the pods' namespaces.
// Run under flock /tmp/membrane-kernel.lock (network namespaces, bpffs).
// Process-based cluster because: (c) realnode.test.ts runs the same star-wars HTTP rules across nodes on real pods through the chart's membrane-l7proxy pods ("a client on the other node: the deathstar's node proxy answers ...", "an egress HTTP rule on a
// client pod is applied by the proxy on top of the deathstar's ingress rules"); what stays here is the proxy the agent starts itself (the chart's l7Proxy.mode embedded), for the CI budget.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { TestCluster, waitEnforced } from "./harness.ts";
import { CNPS } from "../kube/resources.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { terminateProcess } from "../localcluster/nodes.ts";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEATHSTAR = fileURLToPath(new URL("../node-agent/l7proxy/testing/deathstar.ts", import.meta.url));
const NS = "l7-e2e";
const PORT = 8080;

const starWars = (name: string, spec: object) => ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: NS }, spec });
/** Cilium's star-wars rule on the deathstar's ingress (the x-wing is on the other node). */
const DEATHSTAR_INGRESS = starWars("deathstar-ingress", {
  endpointSelector: { matchLabels: { class: "deathstar" } },
  ingress: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: String(PORT), protocol: "TCP" }], rules: { http: [{ method: "POST", path: "/v1/request-landing" }, { method: "GET", path: "/v1/ships" }] } }] }],
});
/** The x-wing's own egress rules towards the deathstar. */
const XWING_EGRESS = starWars("xwing-egress", {
  endpointSelector: { matchLabels: { class: "xwing" } },
  egress: [{ toEndpoints: [{ matchLabels: { class: "deathstar" } }], toPorts: [{ ports: [{ port: String(PORT), protocol: "TCP" }], rules: { http: [{ method: "POST|PUT" }] } }] }],
});

describe("HTTP rules across nodes in the local cluster (the agents' L7 proxies, VXLAN between the nodes)", { timeout: 600_000 }, () => {
  const tc = new TestCluster(`l7e${process.pid % 10000}-`);
  let server: ChildProcess | undefined;
  let serverLog = "";
  let xwingNetns = "";
  let deathstarIP = "";

  /** curl from the x-wing's namespace: the status, or undefined when the connection failed. */
  const xwing = async (method: string, path: string): Promise<number | undefined> => {
    try {
      const { stdout } = await run("ip", ["netns", "exec", xwingNetns, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, ...(method === "GET" ? [] : ["-d", ""]), `http://${deathstarIP}:${PORT}${path}`]);
      return Number(stdout);
    } catch {
      return undefined;
    }
  };
  const apply = async (obj: object): Promise<void> => void (await tc.kubectl(["apply", "-f", "-"], JSON.stringify(obj)));

  before(async () => {
    await tc.start(2);
    const ips = await tc.createPods({ [NS]: {} }, [
      { namespace: NS, name: "xwing", node: 1, labels: { org: "alliance", class: "xwing" }, ports: [] },
      { namespace: NS, name: "deathstar", node: 2, labels: { org: "empire", class: "deathstar" }, ports: [] },
    ]);
    deathstarIP = ips.get(`${NS}/deathstar`)!;
    const pods = (await loadPodRecords(tc.dir)).pods;
    xwingNetns = pods[`${NS}/xwing`]!.netns;
    // The deathstar's HTTP server in its pod's namespace (the pod's own stand-in answers its containerPorts with its name, not HTTP: it has none).
    const s = spawn("ip", ["netns", "exec", pods[`${NS}/deathstar`]!.netns, process.execPath, "--import", "tsx", DEATHSTAR, "0.0.0.0", String(PORT)], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    server = s;
    s.stdout.on("data", (d: Buffer) => (serverLog += d.toString()));
    await new Promise<void>((resolve, reject) => {
      s.stdout.on("data", () => (serverLog.includes("listening") ? resolve() : undefined));
      s.once("exit", (code) => reject(new Error(`deathstar exited ${code}`)));
    });
  });

  after(async () => {
    if (server?.pid && server.exitCode === null) await terminateProcess(server.pid, 2000).catch(() => undefined);
    await tc.stop();
  });

  it("without a policy the x-wing reaches the deathstar's HTTP server on the other node (the checks below can fail)", async () => {
    assert.equal(await xwing("PUT", "/v1/exhaust-port"), 200);
  });

  it("the deathstar's ingress HTTP rule: the x-wing's connection from the other node is proxied on the deathstar's node, POST /v1/request-landing 200, PUT /v1/exhaust-port 403 never reaching the server", async () => {
    await apply(DEATHSTAR_INGRESS);
    await waitEnforced(tc, CNPS, NS, "deathstar-ingress", 1);
    const seen = serverLog.length;
    assert.equal(await xwing("POST", "/v1/request-landing"), 200);
    assert.equal(await xwing("PUT", "/v1/exhaust-port"), 403);
    assert.doesNotMatch(serverLog.slice(seen), /exhaust-port/);
  });

  it("both ends with HTTP rules across nodes: the x-wing's egress proxy, then the deathstar's ingress proxy; a request either denies gets 403", async () => {
    await apply(XWING_EGRESS);
    await waitEnforced(tc, CNPS, NS, "xwing-egress", 1);
    const seen = serverLog.length;
    assert.equal(await xwing("POST", "/v1/request-landing"), 200, "both allow it");
    assert.equal(await xwing("PUT", "/v1/exhaust-port"), 403, "the deathstar's ingress rules deny it");
    assert.equal(await xwing("GET", "/v1/ships"), 403, "the x-wing's egress rules deny it");
    assert.doesNotMatch(serverLog.slice(seen), /exhaust-port|\/v1\/ships/);
  });

  it("the x-wing's egress HTTP rule alone: the proxied request arrives at the deathstar as the x-wing (an L4 allow of the x-wing only)", async () => {
    await apply(starWars("deathstar-ingress", {
      endpointSelector: { matchLabels: { class: "deathstar" } },
      ingress: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: String(PORT), protocol: "TCP" }] }] }],
    }));
    await waitEnforced(tc, CNPS, NS, "deathstar-ingress", 1);
    assert.equal(await xwing("POST", "/v1/request-landing"), 200);
    assert.equal(await xwing("GET", "/v1/ships"), 403);
  });
});
