// The L7 proxy as a process the agent does not own (`membrane agent --external-l7-proxy`, `membrane l7proxy --agent-socket`), as the chart's membrane-l7proxy DaemonSet runs it: real agent and proxy processes, distribution server (mTLS), maps and packets (issue #16 item 2).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { pino } from "pino";
import type { NodeState } from "../../core/wire.ts";
import { makePki, type TestPki } from "../../kube/testing/pki.ts";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { callAgent } from "../cni/agent-socket.ts";
import { until } from "../testing/agent.ts";
import { CONFIG_SOCKET_NAME, EXTERNAL_FLOW_SOCKET_NAME, parseReport } from "./external.ts";
import { ADDR, L7Topology, ROOT, proxyPidIn, streamingStarWarsState, XwingStreams, type StreamReport } from "./testing/topology.ts";

const tag = `m7e${process.pid % 100000}`;
const node = `${tag}-node`;
const XWING = 1000;
const DEATHSTAR = 2000;
const HTTP_RULE = 7;
const PROXY_PORT = 10085;
const STREAMS = 20;
const MEMBRANE = path.join(ROOT, "bin/membrane");
const CLI = path.join(ROOT, "cli/main.ts");

const topo = new L7Topology(tag);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-l7-external-"));
/** The directory both share, as the chart's hostPath /var/run/membrane/l7proxy. */
const socketDir = path.join(stateDir, "l7proxy-sockets");
const agentLines: Record<string, unknown>[] = [];
const proxyLines: Record<string, unknown>[] = [];
const children: ChildProcess[] = [];
let agent: ChildProcess | undefined;
let proxy: ChildProcess | undefined;
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let port = 0;

const state = (): NodeState => streamingStarWarsState({ xwing: XWING, deathstar: DEATHSTAR }, PROXY_PORT, HTTP_RULE);

function collect(child: ChildProcess, into: Record<string, unknown>[]): void {
  readline.createInterface({ input: child.stdout! }).on("line", (l) => {
    if (l.startsWith("{")) into.push(JSON.parse(l) as Record<string, unknown>);
  });
}

/** `bin/membrane agent --external-l7-proxy`: it starts no proxy, it waits for one on its socket. */
function startAgent(): ChildProcess {
  const child = spawn(MEMBRANE, [
    "agent", "--node-name", node, "--operator", `127.0.0.1:${port}`,
    "--tls-cert", pki!.file(`${node}.crt`), "--tls-key", pki!.file(`${node}.key`), "--tls-ca", pki!.file("ca.crt"),
    "--bpf-scope", topo.scope, "--cni-socket", path.join(stateDir, "agent.sock"), "--state-dir", stateDir, "--netns", topo.ns.host,
    "--node-ip", ADDR.node, "--node-device", "none", "--enable-dns-proxy=false", "--hubble-socket", path.join(stateDir, "hubble.sock"), "--metrics-address", "127.0.0.1:0",
    "--external-l7-proxy", "--l7-proxy-socket-dir", socketDir,
  ], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  collect(child, agentLines);
  agent = child;
  return child;
}

/** `membrane l7proxy --agent-socket` in the node's network namespace, as the DaemonSet's pod runs it (hostNetwork). */
function startProxy(): ChildProcess {
  const child = spawn("nsenter", [
    `--net=/var/run/netns/${topo.ns.host}`, process.execPath, "--import", "tsx", CLI, "l7proxy",
    "--agent-socket", path.join(socketDir, CONFIG_SOCKET_NAME), "--flow-socket", path.join(socketDir, EXTERNAL_FLOW_SOCKET_NAME), "--bpf-scope", topo.scope,
  ], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  collect(child, proxyLines);
  proxy = child;
  return child;
}

const exited = (c: ChildProcess): Promise<unknown> => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once("exit", r)));
const kill9 = async (c: ChildProcess | undefined): Promise<void> => {
  if (!c) return;
  if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await exited(c);
};
const report = () => server?.reports().find((r) => r.node === node);
const status = (method: string, p: string): Promise<number | undefined> => topo.xwingStatus(method, p);
const agentSaid = (msg: string): Record<string, unknown> | undefined => agentLines.find((l) => l.msg === msg);

before(async () => {
  await topo.setUp({ policies: [{ subject: XWING, ingressEnforced: true, egressEnforced: true, entries: [] }, { subject: DEATHSTAR, ingressEnforced: true, egressEnforced: true, entries: [] }] });
  pki = await makePki([node]);
  server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
  port = await server.listen(0);
  server.publish(node, state());
  // The proxy's pod may start first: it waits for the agent's pinned map and socket.
  startProxy();
  startAgent();
  await until("endpoint socket serving", () => agentSaid("endpoint socket serving") !== undefined, 30_000);
  for (const [pod, ifname, ifindex, ip] of [["xwing", `${tag}h`, topo.ifindex.xwing, ADDR.xwing], ["deathstar", `${tag}e`, topo.ifindex.deathstar, ADDR.deathstar]] as const) {
    const add = { op: "endpoint-add" as const, containerId: `${tag}-${pod}`, namespace: "default", pod, ifname: "eth0", netns: `/var/run/netns/${topo.ns.xwing}`, hostIfname: ifname, hostIfindex: ifindex, ips: [ip] };
    assert.deepEqual(await callAgent(path.join(stateDir, "agent.sock"), add), { ok: true });
  }
  await until("state acknowledged with the proxy connected", () => report()?.acked?.policyGenerations[0]?.generation === 1 && agentSaid("the external L7 proxy connected") !== undefined, 60_000);
});

after(async () => {
  // L7_EXTERNAL_DEBUG=1 prints both processes' log lines (what each saw when an assertion failed).
  if (process.env.L7_EXTERNAL_DEBUG) for (const [who, lines] of [["agent", agentLines], ["proxy", proxyLines]] as const) for (const l of lines) console.error(who, JSON.stringify(l).slice(0, 400));
  for (const c of children) await kill9(c);
  await server?.close();
  await topo.cleanup();
  pki?.remove();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test("the report line from the proxy is parsed at the edge, naming the wrong field", () => {
  assert.deepEqual(parseReport('{"pid":12,"ports":[10001],"generation":3}'), { ok: true, value: { pid: 12, ports: [10001], generation: 3 } });
  assert.deepEqual(parseReport('{"pid":12,"ports":[]}'), { ok: true, value: { pid: 12, ports: [] } });
  assert.deepEqual(parseReport('{"pid":0,"ports":[]}'), { ok: false, error: "pid: must be a positive integer" });
  assert.deepEqual(parseReport('{"pid":3,"ports":[70000]}'), { ok: false, error: "ports: must be a list of port numbers" });
  assert.deepEqual(parseReport('{"pid":3,"ports":[],"generation":"x"}'), { ok: false, error: "generation: must be a non-negative integer" });
  assert.equal(parseReport("nope").ok, false);
});

test("agent kill -9 while keep-alive connections stream through the external proxy: none breaks, a denied request stays denied with no agent, and the restarted agent re-sends its configuration to the same proxy", async () => {
  assert.equal(proxyPidIn(stateDir), undefined, "the agent started no proxy of its own");
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
  const atKill = await clients.report();
  assert.deepEqual(atKill.broken, []);
  const proxyPid = proxy!.pid;

  await kill9(agent);
  await until("the proxy saw the agent go", () => proxyLines.some((l) => typeof l.msg === "string" && l.msg.startsWith("the agent's config socket closed")), 10_000);
  await new Promise((r) => setTimeout(r, 1000));
  const agentGone = await stillStreaming("agent killed", atKill);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "no agent: a new connection's denied request stays denied");
  assert.equal(await status("POST", "/v1/request-landing"), 200, "no agent: an allowed one is served by the last configuration");

  agentLines.length = 0;
  const reconnects = proxyLines.filter((l) => l.msg === "connected to the agent").length;
  startAgent();
  await until("the restarted agent connected to the operator and its proxy", () => report()?.connected === true && agentSaid("the external L7 proxy connected") !== undefined, 30_000);
  assert.equal(agentSaid("the external L7 proxy connected")!.pid, proxyPid, "the same proxy process");
  await until("the proxy reconnected", () => proxyLines.filter((l) => l.msg === "connected to the agent").length > reconnects, 10_000);
  await new Promise((r) => setTimeout(r, 500));
  await stillStreaming("agent restarted", agentGone);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "after the restart: denied");
  assert.equal(await status("GET", "/v1/other"), 403, "after the restart: a path no rule names is denied");
  assert.equal(await status("POST", "/v1/request-landing"), 200, "after the restart: allowed");
  assert.equal(agentSaid("L7 proxy down: connections steered to it fail until it is back"), undefined, "the restarted agent never saw its proxy down");
  clients.end();
  await exited(clients.process);
});

test("external proxy kill -9: new redirected connections fail (no bypass) and the agent says the proxy is down naming its socket; a new proxy, started empty, is configured by the agent as it connects and serves again", async () => {
  await kill9(proxy);
  const down = await until("the agent reported the proxy down", () => agentSaid("L7 proxy down: connections steered to it fail until it is back"), 10_000);
  assert.match(String(down.reason), new RegExp(`no L7 proxy connected on ${path.join(socketDir, CONFIG_SOCKET_NAME).replaceAll("/", "\\/")}`));
  assert.deepEqual(down.servedPorts, [PROXY_PORT], "its port stays served: steered, not let through");
  for (const [method, p] of [["POST", "/v1/request-landing"], ["PUT", "/v1/exhaust-port"]] as const)
    assert.equal(await status(method, p), undefined, `${method} ${p} without a proxy: the connection fails, it never reaches the deathstar`);
  assert.doesNotMatch(topo.deathstarLog, /PUT \/v1\/exhaust-port/, "the denied request never reached the deathstar");

  proxyLines.length = 0;
  startProxy();
  await until("the agent reported the proxy back", () => agentSaid("L7 proxy back"), 30_000);
  const applied = await until("the new proxy was sent the agent's configuration", () => proxyLines.find((l) => l.msg === "configuration applied"), 10_000);
  assert.deepEqual(applied.ports, [PROXY_PORT]);
  assert.equal(await status("POST", "/v1/request-landing"), 200, "proxy back: allowed");
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "proxy back: denied");
});
