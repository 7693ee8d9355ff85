// `kill -9` of a real `membrane agent` process while 100 connections stream through its L7 proxy: real agent process, distribution server (mTLS), `membrane l7proxy`, maps and packets (issue #16).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { promisify } from "node:util";
import { pino } from "pino";
import type { NodeState } from "../../core/wire.ts";
import { makePki, type TestPki } from "../../kube/testing/pki.ts";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { callAgent } from "../cni/agent-socket.ts";
import { until } from "../testing/agent.ts";
import { ADDR, L7Topology, ROOT, killProxyIn, proxyPidIn, streamingStarWarsState, XwingStreams, type StreamReport } from "./testing/topology.ts";

const run = promisify(execFile);
const tag = `m7k${process.pid % 100000}`;
const node = `${tag}-node`;
const XWING = 1000;
const DEATHSTAR = 2000;
const HTTP_RULE = 7;
const PROXY_PORT = 10084;
const STREAMS = 100;
const MEMBRANE = path.join(ROOT, "bin/membrane");

const topo = new L7Topology(tag);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-kill-"));
const agentLines: Record<string, unknown>[] = [];
const children: ChildProcess[] = [];
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let port = 0;

const state = (): NodeState => streamingStarWarsState({ xwing: XWING, deathstar: DEATHSTAR }, PROXY_PORT, HTTP_RULE);

/** `bin/membrane agent` as the node's agent: its own process, the proxy started in the node netns. */
function startAgent(): ChildProcess {
  const child = spawn(MEMBRANE, [
    "agent", "--node-name", node, "--operator", `127.0.0.1:${port}`,
    "--tls-cert", pki!.file(`${node}.crt`), "--tls-key", pki!.file(`${node}.key`), "--tls-ca", pki!.file("ca.crt"),
    "--bpf-scope", topo.scope, "--cni-socket", path.join(stateDir, "agent.sock"), "--state-dir", stateDir, "--netns", topo.ns.host,
    // The node address sits on the x-wing's host veth in this one-node topology: no node device to attach.
    "--node-ip", ADDR.node, "--node-device", "none", "--enable-dns-proxy=false", "--hubble-socket", path.join(stateDir, "hubble.sock"), "--metrics-address", "127.0.0.1:0",
  ], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  readline.createInterface({ input: child.stdout! }).on("line", (l) => {
    if (l.startsWith("{")) agentLines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return child;
}

const exited = (c: ChildProcess): Promise<unknown> => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once("exit", r)));
const report = () => server?.reports().find((r) => r.node === node);
const proxyPid = (): number | undefined => proxyPidIn(stateDir);

const status = (method: string, p: string): Promise<number | undefined> => topo.xwingStatus(method, p);

/** Client connections the proxy holds open now (in the node netns). */
async function proxiedConnections(): Promise<number> {
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.host, "ss", "-Htn", "state", "established", `( sport = :${PROXY_PORT} )`]);
  return stdout.split("\n").filter((l) => l.trim() !== "").length;
}

before(async () => {
  await topo.setUp({ policies: [{ subject: XWING, ingressEnforced: true, egressEnforced: true, entries: [] }, { subject: DEATHSTAR, ingressEnforced: true, egressEnforced: true, entries: [] }] });
  pki = await makePki([node]);
  server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
  port = await server.listen(0);
  server.publish(node, state());
  startAgent();
  await until("endpoint socket serving", () => agentLines.some((l) => l.msg === "endpoint socket serving"), 30_000);
  for (const [pod, ifname, ifindex, ip] of [["xwing", `${tag}h`, topo.ifindex.xwing, ADDR.xwing], ["deathstar", `${tag}e`, topo.ifindex.deathstar, ADDR.deathstar]] as const) {
    const add = { op: "endpoint-add" as const, containerId: `${tag}-${pod}`, namespace: "default", pod, ifname: "eth0", netns: `/var/run/netns/${topo.ns.xwing}`, hostIfname: ifname, hostIfindex: ifindex, ips: [ip] };
    assert.deepEqual(await callAgent(path.join(stateDir, "agent.sock"), add), { ok: true });
  }
  await until("state acknowledged with the proxy running", () => report()?.acked?.policyGenerations[0]?.generation === 1 && report()?.l7Proxy === true, 30_000);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await Promise.all(children.map(exited));
  killProxyIn(stateDir);
  await server?.close();
  await topo.cleanup();
  pki?.remove();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test("agent kill -9 while 100 connections stream through the L7 proxy: none breaks or stalls, the proxy keeps judging new connections while the agent is gone, and the restarted agent adopts the same proxy", async () => {
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
  const clients = new XwingStreams(topo, STREAMS);
  children.push(clients.process);
  /** Every connection still streams and got more chunks since `earlier`. */
  const stillStreaming = async (what: string, earlier: StreamReport): Promise<StreamReport> => {
    const { now, broken, stalled } = await clients.since(earlier);
    assert.deepEqual(broken, [], `${what}: no stream broke`);
    assert.deepEqual(stalled, [], `${what}: every stream got more chunks`);
    return now;
  };
  await clients.streaming();
  assert.ok((await proxiedConnections()) >= STREAMS, "the streams go through the proxy");
  const pid = proxyPid();
  assert.ok(pid);
  const atKill = await clients.report();
  assert.deepEqual(atKill.broken, []);

  const first = children.find((c) => c.spawnfile === MEMBRANE)!;
  first.kill("SIGKILL");
  await exited(first);
  await new Promise((r) => setTimeout(r, 1000));
  const agentGone = await stillStreaming("agent killed", atKill);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "a new connection is judged while no agent runs: denied stays denied");
  assert.equal(await status("POST", "/v1/request-landing"), 200, "and an allowed one is served");

  agentLines.length = 0;
  startAgent();
  await until("the restarted agent connected with its proxy", () => agentLines.some((l) => l.msg === "endpoint socket serving") && report()?.connected === true && report()?.l7Proxy === true, 30_000);
  assert.equal(proxyPid(), pid, "the same proxy process, adopted");
  await new Promise((r) => setTimeout(r, 500));
  await stillStreaming("agent restarted", agentGone);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "after the restart: denied");
  assert.equal(await status("GET", "/v1/other"), 403, "after the restart: a path no rule names is denied");
  assert.equal(await status("POST", "/v1/request-landing"), 200, "after the restart: allowed");
  assert.ok((await proxiedConnections()) >= STREAMS, "the streams are still the proxy's");
  clients.end();
});
