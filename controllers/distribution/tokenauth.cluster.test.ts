// Agent token authentication against a real kube-apiserver: pod-bound ServiceAccount tokens minted by the TokenRequest API, checked by TokenReview, over the distribution stream with the chart's one shared client certificate.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { startControlPlane } from "../../localcluster/cluster.ts";
import { agentCredentials } from "../../node-agent/token-auth.ts";
import { KubeClient } from "../../kube/kube.ts";
import { OperatorMetrics } from "../../kube/metrics.ts";
import { AgentClient } from "../testing/agent.ts";
import { eventually } from "../testing/operator-process.ts";
import { type TestPki, makePki } from "../../kube/testing/pki.ts";
import { DistributionServer, nodeStreamState } from "./server.ts";
import { TokenAuthenticator } from "./tokenauth.ts";
import { EMPTY_STATE } from "../../core/nodestate.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
const NS = "membrane-tokenauth";
const AUDIENCE = "membrane-operator";
const SHARED_CERT = "membrane-agent";

let cp: ControlPlane | undefined;
let client: KubeClient | undefined;
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let tmp: string | undefined;
let port = 0;
const metrics = new OperatorMetrics();
const agents: AgentClient[] = [];

async function kubectl(args: string[], input?: string): Promise<string> {
  const r = await (cp as ControlPlane).kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Polls often: these waits are for in-process streams, not for controllers. */
const until = <T>(what: string, f: () => T | undefined | false): Promise<T> => eventually(what, () => f() || undefined, 10_000, 20);

const node = (name: string): string => JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name } });
const pod = (name: string, sa: string, nodeName: string): string =>
  JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS },
    spec: { serviceAccountName: sa, nodeName, automountServiceAccountToken: false, containers: [{ name: "agent", image: "membrane/agent:test" }] },
  });

/** A token from the TokenRequest API, bound to `podName` (as kubelet's projected volume would get). */
async function mint(sa: string, podName: string, audience = AUDIENCE): Promise<string> {
  return (await kubectl(["create", "token", sa, "-n", NS, "--audience", audience, "--bound-object-kind", "Pod", "--bound-object-name", podName, "--duration", "10m"])).trim();
}

/** An agent with the shared certificate that reads its token from a file, as the DaemonSet's agent does. */
function connect(nodeName: string, token: string): AgentClient {
  const file = path.join(tmp as string, `token-${agents.length}`);
  fs.writeFileSync(file, `${token}\n`);
  const p = pki as TestPki;
  const tls = { ca: p.read("ca.crt"), cert: p.read(`${SHARED_CERT}.crt`), key: p.read(`${SHARED_CERT}.key`) };
  const a = new AgentClient(`127.0.0.1:${port}`, tls, nodeName, { credentials: agentCredentials(`127.0.0.1:${port}`, tls, file) });
  agents.push(a);
  return a;
}

async function scrape(name: string): Promise<string[]> {
  return (await metrics.registry.metrics()).split("\n").filter((l) => l.startsWith(name));
}

describe("agent authentication by pod-bound ServiceAccount token", { timeout: 300_000 }, () => {
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-tokenauth-"));
    pki = await makePki([SHARED_CERT]);
    cp = await startControlPlane({ name: "tokenauth-test" });
    await kubectl(["create", "namespace", NS]);
    await kubectl(["create", "serviceaccount", "-n", NS, "membrane-agent"]);
    await kubectl(["create", "serviceaccount", "-n", NS, "intruder"]);
    await kubectl(["apply", "-f", "-"], node("ta-node-1"));
    await kubectl(["apply", "-f", "-"], node("ta-node-2"));
    await kubectl(["apply", "-f", "-"], pod("agent-1", "membrane-agent", "ta-node-1"));
    await kubectl(["apply", "-f", "-"], pod("intruder-1", "intruder", "ta-node-1"));
    await kubectl(["apply", "-f", "-"], pod("doomed", "membrane-agent", "ta-node-2"));
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    const reviewer = new TokenAuthenticator(client, { serviceAccount: `${NS}/membrane-agent`, audience: AUDIENCE, cacheTtlMs: 1000 });
    const p = pki;
    server = new DistributionServer({ ca: p.read("ca.crt"), cert: p.read("operator.crt"), key: p.read("operator.key") }, pino({ level: "silent" }), 10_000, (h) => reviewer.authenticate(h), {
      authFailure: (reason) => metrics.agentAuthFailures.inc({ reason }),
    });
    metrics.observeNodes(() => (server as DistributionServer).reports().map(nodeStreamState));
    port = await server.listen(0);
    server.publish("ta-node-1", EMPTY_STATE);
  });

  after(async () => {
    for (const a of agents) a.close();
    await server?.close();
    client?.close();
    await cp?.stop();
    pki?.remove();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("accepts the agent's token as the node its pod runs on, and reads a rotated token on reconnect", async () => {
    const a = connect("ta-node-1", await mint("membrane-agent", "agent-1"));
    await until("snapshot", () => a.received.length >= 1 || (a.status && assert.fail(`refused: ${a.status.details}`)));
    assert.equal(a.received[0]?.type, "snapshot");
    await until("acked", () => (server as DistributionServer).reports().find((r) => r.node === "ta-node-1" && r.connected && r.ackedVersion !== undefined));
    assert.ok((await scrape("membrane_operator_nodes")).includes('membrane_operator_nodes{state="acked"} 1'));
    a.close();
    // A second token for the same pod (what kubelet's rotation produces) is read fresh on the next connect.
    const again = connect("ta-node-1", await mint("membrane-agent", "agent-1"));
    await until("snapshot after rotation", () => again.received.length >= 1 || (again.status && assert.fail(`refused: ${again.status.details}`)));
    again.close();
  });

  it("refuses a valid token whose pod runs on another node than the hello claims", async () => {
    const a = connect("ta-node-2", await mint("membrane-agent", "agent-1"));
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.PERMISSION_DENIED);
    assert.match(st.details, /token is for a pod on ta-node-1, not ta-node-2/);
    assert.equal(a.received.length, 0);
  });

  it("refuses a token of another ServiceAccount", async () => {
    const a = connect("ta-node-1", await mint("intruder", "intruder-1"));
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.UNAUTHENTICATED);
    assert.match(st.details, new RegExp(`belongs to system:serviceaccount:${NS}:intruder, not system:serviceaccount:${NS}:membrane-agent`));
    assert.equal(a.received.length, 0);
  });

  it("refuses a token for another audience", async () => {
    const a = connect("ta-node-1", await mint("membrane-agent", "agent-1", "some-other-service"));
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.UNAUTHENTICATED);
    assert.match(st.details, /agent token refused: token not authenticated/);
    assert.equal(a.received.length, 0);
  });

  it("refuses a token whose pod is gone: at once if never used, and a used one once the API server's and our caches expire", async () => {
    const used = await mint("membrane-agent", "doomed");
    const unused = await mint("membrane-agent", "doomed");
    const before = connect("ta-node-2", used);
    await until("accepted while the pod exists", () => before.received.length >= 1 || (before.status && assert.fail(`refused: ${before.status.details}`)));
    before.close();
    await kubectl(["delete", "pod", "-n", NS, "doomed", "--grace-period=0", "--force", "--wait=true"]);
    const a = connect("ta-node-2", unused);
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.UNAUTHENTICATED);
    assert.match(st.details, /token not authenticated/);
    // kube-apiserver itself caches a successful token authentication for 10 s; ours (1 s here) adds to that.
    await new Promise((r) => setTimeout(r, 11_500));
    const late = connect("ta-node-2", used);
    const lateStatus = await until("status", () => late.status);
    assert.equal(lateStatus.code, grpc.status.UNAUTHENTICATED);
    assert.equal(late.received.length, 0);
  });

  it("refuses an agent with the shared certificate but no token", async () => {
    const p = pki as TestPki;
    const a = new AgentClient(`127.0.0.1:${port}`, { ca: p.read("ca.crt"), cert: p.read(`${SHARED_CERT}.crt`), key: p.read(`${SHARED_CERT}.key`) }, "ta-node-1");
    agents.push(a);
    const st = await until("status", () => a.status);
    assert.equal(st.code, grpc.status.UNAUTHENTICATED);
    assert.match(st.details, /no bearer token/);
    const failures = await scrape("membrane_operator_agent_auth_failures_total");
    assert.ok(failures.some((l) => /reason="token"} [5-9]/.test(l)), failures.join("\n"));
    assert.ok(failures.includes('membrane_operator_agent_auth_failures_total{reason="mismatch"} 1'), failures.join("\n"));
  });
});
