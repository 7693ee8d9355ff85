// The chart's membrane-l7proxy DaemonSet on a real node (issue #16 item 2): with an L7 rule applied, a proxied keep-alive stream outlives `kubectl delete pod` of the agent, a denied request stays denied, and a deleted proxy pod fails new connections closed until its replacement is configured.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";
import { after, before, describe, test } from "node:test";
import { startControlPlane, type ControlPlane } from "../cluster.ts";
import { CHART_DIR, setArgs } from "../chart.ts";
import { realNodePaths } from "./config.ts";
import { buildMembraneImage, destroyRealNode, startRealNode, type RealNode } from "./realnode.ts";
import { eventually } from "./eventually.ts";

const TIMEOUT_MS = 30 * 60_000;
const AGENT_NS = "membrane-system";
const NS = "realnode-l7";
const PORT = 8080;

interface PodView {
  metadata: { name: string; uid: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

/** The deathstar: answers every request, and streams a line every 100 ms on GET /v1/stream. */
const DEATHSTAR = `require("http").createServer((q, s) => {
  console.log("request " + q.method + " " + q.url);
  if (q.method === "GET" && q.url === "/v1/stream") { s.writeHead(200); const t = setInterval(() => s.write("tick\\n"), 100); s.on("close", () => clearInterval(t)); return; }
  q.resume(); q.on("end", () => { s.writeHead(200); s.end("ok\\n"); });
}).listen(${PORT});`;

/** One keep-alive stream: a line per chunk ("chunk"), then how it ended. */
const STREAM = (ip: string): string => `require("http").get({ host: "${ip}", port: ${PORT}, path: "/v1/stream", agent: false }, (r) => {
  console.log("status " + r.statusCode);
  r.on("data", () => console.log("chunk " + Date.now()));
  r.on("end", () => console.log("ended"));
  r.on("error", (e) => console.log("error " + e.message));
}).on("error", (e) => console.log("error " + e.message));`;

/** A new connection's answer: the status code, or "fail" when the connection failed. */
const REQUEST = (ip: string, method: string, path: string): string =>
  `fetch("http://${ip}:${PORT}${path}", { method: "${method}", signal: AbortSignal.timeout(3000) }).then((r) => console.log(r.status), () => console.log("fail"));`;

describe("the external L7 proxy on a real node", { timeout: TIMEOUT_MS }, () => {
  let scratch: string;
  let cp: ControlPlane | undefined;
  let node: RealNode | undefined;
  let stream: ChildProcess | undefined;
  const name = `rn-l7-${process.pid}`;
  // Its own /30, away from realnode.test's (pid % 255).
  const index = 128 + (process.pid % 120);
  const kubectl = (args: string[], input?: string) => cp!.kubectl(args, input);

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "membrane-realnode-l7-"));
    cp = await startControlPlane({ dir: join(scratch, "cp"), controllers: true });
    node = await startRealNode({ name, dir: join(scratch, "node"), controlPlane: { dir: cp.dir, server: cp.server }, index });
    const image = await buildMembraneImage();
    await node.importImage(image.archive);
  });

  after(async () => {
    if (stream && stream.exitCode === null) stream.kill("SIGKILL");
    await destroyRealNode(join(scratch, "node")).catch((err: unknown) => console.error("realnode cleanup:", err));
    await cp?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  async function readyPods(ns: string, selector: string): Promise<PodView[]> {
    const r = await kubectl(["get", "pods", "-n", ns, "-l", selector, "-o", "json"]);
    return (JSON.parse(r.stdout) as { items: PodView[] }).items.filter((p) => p.status.phase === "Running" && p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
  }

  const nodeExec = (pod: string, script: string) => kubectl(["exec", "-n", NS, pod, "--", "node", "-e", script]);

  test("a proxied keep-alive stream outlives the agent pod's deletion, a denied request stays denied; the proxy pod deleted fails new connections until it is back", async () => {
    const paths = realNodePaths(node!.plan.dir);
    const image = (await buildMembraneImage()).ref;
    const install = await cp!.helm(["install", "membrane", CHART_DIR, "--namespace", AGENT_NS, "--create-namespace", ...setArgs({
      "operator.replicas": 1,
      "operator.hostNetwork": true,
      "webhook.enabled": false,
      "agent.cniBinDir": paths.cniBinDir,
      "agent.cniConfDir": paths.cniConfDir,
    })]);
    assert.equal(install.code, 0, install.stderr);
    const operatorIP = (await kubectl(["get", "service", "-n", AGENT_NS, "membrane-operator", "-o", "jsonpath={.spec.clusterIP}"])).stdout;
    await node!.addHost(operatorIP, `membrane-operator.${AGENT_NS}.svc`);
    assert.equal((await kubectl(["delete", "pod", "-n", AGENT_NS, "-l", "app.kubernetes.io/component=agent", "--wait=false"])).code, 0);
    const agentSelector = "app.kubernetes.io/component=agent";
    const proxySelector = "app.kubernetes.io/component=l7proxy";
    const firstAgent = await eventually("a Ready agent pod", 180_000, async () => (await readyPods(AGENT_NS, agentSelector))[0]);
    const firstProxy = await eventually("a Running proxy pod", 120_000, async () => (await readyPods(AGENT_NS, proxySelector))[0]);

    assert.equal((await kubectl(["create", "namespace", NS])).code, 0);
    const pod = (podName: string, labels: Record<string, string>, command: string[]) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: podName, namespace: NS, labels },
      spec: { terminationGracePeriodSeconds: 1, containers: [{ name: "c", image, imagePullPolicy: "Never", command }] },
    });
    for (const p of [pod("deathstar", { org: "empire", class: "deathstar" }, ["node", "-e", DEATHSTAR]), pod("xwing", { org: "alliance", class: "xwing" }, ["sleep", "3600"])]) {
      const r = await kubectl(["apply", "-f", "-"], JSON.stringify(p));
      assert.equal(r.code, 0, r.stderr);
    }
    const ip = await eventually("both pods Running", 120_000, async () => {
      const r = await kubectl(["get", "pods", "-n", NS, "-o", "json"]);
      const pods = (JSON.parse(r.stdout) as { items: PodView[] }).items;
      return pods.length === 2 && pods.every((p) => p.status.phase === "Running" && p.status.podIP) ? pods.find((p) => p.metadata.name === "deathstar")!.status.podIP : undefined;
    });
    const policy = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "rule1", namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { org: "empire", class: "deathstar" } },
        ingress: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: String(PORT), protocol: "TCP" }], rules: { http: [{ method: "POST", path: "/v1/request-landing" }, { method: "GET", path: "/v1/stream" }] } }] }],
      },
    };
    assert.equal((await kubectl(["apply", "-f", "-"], JSON.stringify(policy))).code, 0);
    const enforced = await kubectl(["wait", "ciliumnetworkpolicy/rule1", "-n", NS, "--for=condition=Enforced", "--timeout=90s"]);
    assert.equal(enforced.code, 0, `${enforced.stderr}${(await kubectl(["get", "ciliumnetworkpolicy", "rule1", "-n", NS, "-o", "jsonpath={.status}"])).stdout}`);
    const request = async (method: string, path: string): Promise<string> => (await nodeExec("xwing", REQUEST(ip, method, path))).stdout.trim();
    await eventually("the landing allowed through the proxy", 30_000, async () => ((await request("POST", "/v1/request-landing")) === "200" ? true : undefined));
    assert.equal(await request("PUT", "/v1/exhaust-port"), "403", "the star-wars rule denies the exhaust port");

    // The stream: one keep-alive connection through the proxy, its chunks timed by the client.
    stream = spawn("kubectl", ["--kubeconfig", cp!.kubeconfig, "exec", "-n", NS, "xwing", "--", "node", "-e", STREAM(ip)], { stdio: ["ignore", "pipe", "inherit"] });
    const lines: string[] = [];
    readline.createInterface({ input: stream.stdout! }).on("line", (l) => lines.push(l));
    await eventually("the stream flowing", 30_000, async () => (lines.filter((l) => l.startsWith("chunk")).length > 5 ? true : undefined));
    assert.equal(lines[0], "status 200");

    assert.equal((await kubectl(["delete", "pod", "-n", AGENT_NS, firstAgent.metadata.name, "--wait=true", "--timeout=60s"])).code, 0);
    const secondAgent = await eventually("the DaemonSet's new agent pod Ready", 180_000, async () => (await readyPods(AGENT_NS, agentSelector)).find((p) => p.metadata.uid !== firstAgent.metadata.uid));
    await new Promise((r) => setTimeout(r, 2000));
    const chunks = lines.filter((l) => l.startsWith("chunk")).map((l) => Number(l.split(" ")[1]));
    const gaps = chunks.slice(1).map((t, i) => t - chunks[i]!);
    assert.ok(!lines.some((l) => l === "ended" || l.startsWith("error")), `the stream never broke: ${lines.filter((l) => !l.startsWith("chunk")).join(", ")}`);
    assert.ok(Math.max(...gaps) < 2000, `no stall over 2 s while the agent pod was replaced (largest gap ${Math.max(...gaps)} ms)`);
    assert.ok(chunks.at(-1)! > Date.now() - 1500, "still streaming after the new agent is Ready");
    assert.equal(await request("PUT", "/v1/exhaust-port"), "403", "after the agent's replacement: denied stays denied");
    assert.equal(await request("POST", "/v1/request-landing"), "200");
    const logs = await kubectl(["logs", "-n", AGENT_NS, secondAgent.metadata.name]);
    assert.match(logs.stdout, /"the external L7 proxy connected"/, "the new agent reached the same proxy");

    // The proxy pod deleted: new redirected connections fail (never bypass) until the replacement is configured.
    assert.equal((await kubectl(["delete", "pod", "-n", AGENT_NS, firstProxy.metadata.name, "--wait=true", "--timeout=60s"])).code, 0);
    const whileGone = await request("PUT", "/v1/exhaust-port");
    assert.notEqual(whileGone, "200", "no bypass while the proxy is gone");
    const deathstarLog = await kubectl(["logs", "-n", NS, "deathstar"]);
    assert.doesNotMatch(deathstarLog.stdout, /request PUT \/v1\/exhaust-port/, "the denied request never reached the deathstar");
    await eventually("the new proxy pod configured: landing allowed again", 120_000, async () => ((await request("POST", "/v1/request-landing")) === "200" ? true : undefined));
    assert.equal(await request("PUT", "/v1/exhaust-port"), "403", "after the proxy's replacement: denied");
    const proxyNow = (await readyPods(AGENT_NS, proxySelector))[0];
    assert.ok(proxyNow && proxyNow.metadata.uid !== firstProxy.metadata.uid, "a new proxy pod");
    stream.kill("SIGKILL");
  });
});
