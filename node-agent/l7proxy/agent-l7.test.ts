// The agent runs the L7 proxy from the operator's stream: real agent, real distribution server (mTLS), real `membrane l7proxy` process, real maps and packets (the star-wars demo on one node).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { promisify } from "node:util";
import { pino } from "pino";
import { PROTO_NUMBER, type PolicyEntry, type RuleTls, type SubjectPolicy } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import { label, labelSetFrom } from "../../core/labels.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { PolicyCompiler, policyKey } from "../../core/compiler.ts";
import { makePki, type TestPki } from "../../kube/testing/pki.ts";
import { issueCA, issueCert } from "../../kube/pki.ts";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { callAgent } from "../cni/agent-socket.ts";
import { NodeAgent, type AgentDatapath } from "../agent.ts";
import { capturingLogger, until } from "../testing/agent.ts";
import { AgentL7 } from "./agent-l7.ts";
import type { ServedPorts } from "./supervisor.ts";
import { ADDR, L7Topology, ROOT, killProxyIn, proxyPidIn, starWarsPeers } from "./testing/topology.ts";
import { Registry, type RegistryContentType } from "prom-client";
import { HubbleMetrics } from "../observer/hubble-metrics.ts";
import { observeFlows } from "../../localcluster/hubble/cli.ts";
import type { HubbleFlow } from "../../flowapi/hubble/types.ts";

const run = promisify(execFile);
const tag = `m7a${process.pid % 100000}`;
const node = `${tag}-node`;
const XWING = 1000;
const DEATHSTAR = 2000;
const HTTP_RULE = 7;
const INGRESS_RULE = 9;
const PROXY_PORT = 10082;
const KEEPALIVE = path.join(ROOT, "node-agent/l7proxy/testing/keepalive-client.ts");

const topo = new L7Topology(tag);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-l7-"));
const agentLines: Record<string, unknown>[] = [];
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let agent: NodeAgent | undefined;
let port = 0;
/** Ordering mistakes seen by the wrappers: a port served before the proxy listened, an entry naming a port not served. */
const violations: string[] = [];
/** Ports unserved, in order. */
const unserved: number[] = [];

const INGRESS_PROXY_PORT = 10083;
const HUBBLE_SOCKET = path.join(stateDir, "hubble.sock");

/**
 * The star-wars rule as Cilium's demo writes it, on the deathstar's ingress (the x-wing's egress not
 * enforced); with `xwingL7`, the x-wing's egress to it is proxied too.
 */
function ingressState(generation: number, xwingL7 = false): NodeState {
  const s = state(generation, xwingL7);
  const deathstar: SubjectPolicy = {
    subject: DEATHSTAR,
    ingressEnforced: true,
    egressEnforced: false,
    entries: [{ subject: DEATHSTAR, direction: "ingress", verdict: "allow", peer: XWING, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: INGRESS_PROXY_PORT, ruleId: INGRESS_RULE }],
    http: [{ ruleId: INGRESS_RULE, direction: "ingress", rules: [{ method: "POST", path: "/v1/request-landing" }, ...(xwingL7 ? [{ method: "GET", path: "/v1/ships" }] : [])] }],
  };
  const xwing = xwingL7 ? { ...s.policies[0]!, http: [{ ruleId: HTTP_RULE, direction: "egress" as const, rules: [{ method: "POST|PUT" }] }] } : { ...s.policies[0]!, egressEnforced: false, entries: [] };
  return { ...s, policies: [xwing, deathstar] };
}

/** What the operator sends: the x-wing's egress to the deathstar through the proxy (the star-wars rule), the deathstar admitting the x-wing. */
function state(generation: number, http: boolean): NodeState {
  const xwingEntry: PolicyEntry = { subject: XWING, direction: "egress", verdict: "allow", peer: DEATHSTAR, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: http ? PROXY_PORT : 0, ruleId: HTTP_RULE };
  const policies: SubjectPolicy[] = [
    { subject: XWING, ingressEnforced: false, egressEnforced: true, entries: [xwingEntry], ...(http ? { http: [{ ruleId: HTTP_RULE, direction: "egress" as const, rules: [{ method: "POST", path: "/v1/request-landing" }] }] } : {}) },
    { subject: DEATHSTAR, ingressEnforced: true, egressEnforced: false, entries: [{ subject: DEATHSTAR, direction: "ingress", verdict: "allow", peer: XWING, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: 0, ruleId: INGRESS_RULE }] },
  ];
  return {
    policies,
    ...starWarsPeers({ xwing: XWING, deathstar: DEATHSTAR }),
    rules: [
      { id: HTTP_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "rule1", ruleIndex: 0, path: "spec.egress[0]" } },
      { id: INGRESS_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deathstar", ruleIndex: 0, path: "spec.ingress[0]" } },
    ],
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/rule1", uid: "u1", generation }],
  };
}

/** The proxy's own report of the ports it listens on (its --status-file). */
function proxyListening(): number[] {
  try {
    return (JSON.parse(fs.readFileSync(path.join(stateDir, "l7proxy.status.json"), "utf8")) as { ports: number[] }).ports;
  } catch {
    return [];
  }
}

/** The datapath as the agent sees it, checking that an entry naming a proxy port is written only once that port is served. */
function checkingDatapath(): AgentDatapath {
  const dp = topo.dp;
  const check = (entries: readonly PolicyEntry[]): void => {
    const served = new Set(dp.redirect.servedPorts());
    for (const e of entries) if (e.proxyPort !== 0 && !served.has(e.proxyPort)) violations.push(`entry naming ${e.proxyPort} written before it was served`);
  };
  return new Proxy(dp, {
    get(target, prop, receiver) {
      if (prop === "setSubjectPolicy") return (p: SubjectPolicy, eps?: readonly { ip: string; ifindex: number }[]) => (check(p.entries), target.setSubjectPolicy(p, eps));
      if (prop === "addSubjectEntries") return (p: SubjectPolicy, added: readonly PolicyEntry[]) => (check(added), target.addSubjectEntries(p, added));
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as AgentDatapath;
}

/** The redirect's ports as the proxy's supervisor sees them, checking that a port is served only once the proxy listens on it. */
const checkingPorts: ServedPorts = {
  setProxyAddress: (ip) => topo.dp.redirect.setProxyAddress(ip),
  serve: (p) => {
    if (!proxyListening().includes(p)) violations.push(`port ${p} served before the proxy listened on it`);
    topo.dp.redirect.serve(p);
  },
  unserve: (p) => {
    unserved.push(p);
    topo.dp.redirect.unserve(p);
  },
  servedPorts: () => topo.dp.redirect.servedPorts(),
};

function newAgent(l7: { launcher?: readonly string[]; listenTimeoutMs?: number } = {}): NodeAgent {
  return new NodeAgent({
    nodeName: node,
    operator: `127.0.0.1:${port}`,
    tls: { ca: pki!.read("ca.crt"), cert: pki!.read(`${node}.crt`), key: pki!.read(`${node}.key`) },
    datapath: checkingDatapath(),
    cniSocket: path.join(stateDir, "agent.sock"),
    netns: topo.ns.host,
    nodeIP: ADDR.node,
    endpointsFile: path.join(stateDir, "endpoints.json"),
    appliedFile: path.join(stateDir, "applied.json"),
    hostLinks: {
      list: () => [
        { ifname: `${tag}h`, ifindex: topo.ifindex.xwing },
        { ifname: `${tag}e`, ifindex: topo.ifindex.deathstar },
      ],
      remove: () => undefined,
    },
    // The agent's observer: the proxy's requests are its L7 flows (hubble observe reads them here).
    observer: { hubble: { socketPath: HUBBLE_SOCKET } },
    // The supervisor looks for a dead proxy only every 3 s here, so the window in which it is down can be seen.
    l7: new AgentL7({
      datapath: checkingPorts,
      stateDir,
      address: ADDR.node,
      bpfScope: topo.scope,
      launcher: l7.launcher ?? ["nsenter", `--net=/var/run/netns/${topo.ns.host}`],
      checkIntervalMs: 3000,
      healthIntervalMs: 100,
      // Each request in the proxy's log (l7proxy.log) with the rule that decided it.
      logFlows: true,
      ...(l7.listenTimeoutMs !== undefined ? { listenTimeoutMs: l7.listenTimeoutMs } : {}),
      log: capturingLogger(agentLines),
    }),
    log: capturingLogger(agentLines),
    backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
  });
}

const status = (method: string, p: string, headers: readonly string[] = []): Promise<number | undefined> => topo.xwingStatus(method, p, headers);

const report = () => server?.reports().find((r) => r.node === node);
const ackedGeneration = () => report()?.acked?.policyGenerations[0]?.generation;
const proxyPid = (): number | undefined => proxyPidIn(stateDir);

before(async () => {
  // No policy entries of the topology's own: the agent writes what the operator sends.
  await topo.setUp({ policies: [{ subject: XWING, ingressEnforced: true, egressEnforced: true, entries: [] }, { subject: DEATHSTAR, ingressEnforced: true, egressEnforced: true, entries: [] }] });
  pki = await makePki([node]);
  server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
  port = await server.listen(0);
  server.publish(node, state(1, true));
  agent = newAgent();
  await agent.start();
  for (const [pod, ifname, ifindex, ip] of [["xwing", `${tag}h`, topo.ifindex.xwing, ADDR.xwing], ["deathstar", `${tag}e`, topo.ifindex.deathstar, ADDR.deathstar]] as const) {
    const add = { op: "endpoint-add" as const, containerId: `${tag}-${pod}`, namespace: "default", pod, ifname: "eth0", netns: `/var/run/netns/${topo.ns.xwing}`, hostIfname: ifname, hostIfindex: ifindex, ips: [ip] };
    assert.deepEqual(await callAgent(path.join(stateDir, "agent.sock"), add), { ok: true });
  }
  await until("state 1 acknowledged", () => ackedGeneration() === 1, 30_000);
});

after(async () => {
  await agent?.stop();
  killProxyIn(stateDir);
  await server?.close();
  await topo.cleanup();
  pki?.remove();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test("the agent runs the proxy from the stream: the hello says so, the port is served only once the proxy listens, and the star-wars rule is enforced", async () => {
  assert.equal(report()?.l7Proxy, true);
  assert.deepEqual(agent!.status().l7Proxy, { running: true, servedPorts: [PROXY_PORT] });
  assert.deepEqual(violations, []);
  let l7 = 0;
  const unsubscribe = agent!.observer!.onEveryFlow((f) => void (f.l7 ? l7++ : 0));
  try {
    assert.equal(await status("POST", "/v1/request-landing"), 200);
    assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
    assert.doesNotMatch(topo.deathstarLog, /exhaust-port/, "the denied request never reached the deathstar");
    // The proxy sends its flows in batches (at most one write per 20 ms): these reach the agent before the next test counts its own.
    await until("the two requests' four L7 flows reached the agent", () => l7 === 4, 5_000);
  } finally {
    unsubscribe();
  }
});

test("the proxy's requests are L7 flows of the agent's observer: the real hubble CLI shows method, url and code (the denied request DROPPED, named by its rule), and Hubble's http metrics count them", async () => {
  const registry = new Registry();
  const metrics = new HubbleMetrics(registry);
  const unsubscribe = agent!.observer!.onEveryFlow(metrics.observe);
  const since = new Date(Date.now() - 1).toISOString();
  try {
    assert.equal(await status("POST", "/v1/request-landing"), 200);
    assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
    const observe = (...args: string[]): Promise<HubbleFlow[]> => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, ...args]);
    let http: HubbleFlow[] = [];
    for (const end = Date.now() + 10_000; http.length < 4 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) http = await observe("--protocol", "http");
    if (http.length < 4) {
      const proxyLog = fs.readFileSync(path.join(stateDir, "l7proxy.log"), "utf8").split("\n").slice(-15).join("\n");
      assert.fail(`${http.length} HTTP flows observed\nproxy log:\n${proxyLog}\nagent: ${JSON.stringify(agentLines.filter((l) => /flow|observer/i.test(String(l.msg))))}\nall: ${JSON.stringify((await observe()).map((f) => [f.Type, f.verdict, f.l4]))}`);
    }
    const byPhase = http.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.method, f.l7?.http?.url, f.l7?.http?.code ?? 0]);
    assert.deepEqual(byPhase, [
      ["FORWARDED", "REQUEST", "POST", `http://${ADDR.deathstar}/v1/request-landing`, 0],
      ["FORWARDED", "RESPONSE", "POST", `http://${ADDR.deathstar}/v1/request-landing`, 200],
      ["DROPPED", "REQUEST", "PUT", `http://${ADDR.deathstar}/v1/exhaust-port`, 0],
      ["FORWARDED", "RESPONSE", "PUT", `http://${ADDR.deathstar}/v1/exhaust-port`, 403],
    ]);
    const denied = http[2]!;
    assert.deepEqual([denied.source.pod_name, denied.source.identity, denied.destination.pod_name, denied.destination.identity], ["xwing", XWING, "deathstar", DEATHSTAR]);
    assert.ok(denied.source.labels?.includes("k8s:class=xwing"));
    assert.equal(denied.IP.source, ADDR.xwing);
    assert.equal(denied.l4?.TCP?.destination_port, 80);
    assert.equal(denied.traffic_direction, "EGRESS");
    assert.equal(denied.drop_reason_desc, "POLICY_DENIED");
    assert.deepEqual(denied.egress_denied_by?.map((p) => [p.kind, p.namespace, p.name]), [["CiliumNetworkPolicy", "default", "rule1"]]);
    assert.deepEqual(http[0]!.egress_allowed_by?.map((p) => p.name), ["rule1"]);
    assert.ok(Number(http[1]!.l7?.latency_ns) > 0, "the response carries the time it took");
    assert.deepEqual((await observe("--http-status", "403")).map((f) => f.l7?.http?.method), ["PUT"]);
    assert.deepEqual((await observe("--type", "l7", "--verdict", "DROPPED")).map((f) => f.l7?.http?.url), [`http://${ADDR.deathstar}/v1/exhaust-port`]);
    const text = await registry.metrics();
    const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
    has('hubble_http_requests_total{method="POST",protocol="HTTP/1.1",reporter="client"} 1');
    has('hubble_http_requests_total{method="PUT",protocol="HTTP/1.1",reporter="client"} 1');
    has('hubble_http_responses_total{method="PUT",protocol="HTTP/1.1",status="403",reporter="client"} 1');
    has('hubble_http_responses_total{method="POST",protocol="HTTP/1.1",status="200",reporter="client"} 1');
    has('hubble_http_request_duration_seconds_count{method="POST",reporter="client"} 1');
    has('hubble_policy_verdicts_total{direction="egress",match="l7/http",action="dropped"} 1');
    has('hubble_drop_total{reason="POLICY_DENIED",protocol="HTTP"} 1');
  } finally {
    unsubscribe();
  }
});

test("a request's W3C traceparent is its flows' trace id (Hubble's trace_context): hubble observe --trace-id selects the request and its response, refused or not; with OpenMetrics the http metrics carry it as an exemplar", async (t) => {
  const registry = new Registry();
  (registry as unknown as Registry<RegistryContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  const metrics = new HubbleMetrics(registry, undefined, { openMetrics: true });
  t.after(agent!.observer!.onEveryFlow(metrics.observe));
  const since = new Date(Date.now() - 1).toISOString();
  const landing = "4bf92f3577b34da6a3ce929d0e0e4736";
  const exhaust = "0af7651916cd43dd8448eb211c80319c";
  assert.equal(await status("POST", "/v1/request-landing", [`traceparent: 00-${landing}-00f067aa0ba902b7-01`]), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port", [`traceparent: 00-${exhaust}-b7ad6b7169203331-01`]), 403);
  assert.equal(await status("POST", "/v1/request-landing", ["traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01"]), 200, "an invalid one");
  const observe = (...args: string[]): Promise<HubbleFlow[]> => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--protocol", "http", ...args]);
  let all: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; all.length < 6 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) all = await observe();
  assert.deepEqual(all.map((f) => f.trace_context?.parent?.trace_id ?? ""), [landing, landing, exhaust, exhaust, "", ""]);
  const traced = await observe("--trace-id", exhaust);
  assert.deepEqual(traced.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.code ?? 0]), [
    ["DROPPED", "REQUEST", 0],
    ["FORWARDED", "RESPONSE", 403],
  ]);
  assert.deepEqual(await observe("--trace-id", "ffffffffffffffffffffffffffffffff"), []);
  const text = await registry.metrics();
  const sample = (series: string): string | undefined => text.split("\n").find((l) => l.startsWith(series + " "));
  assert.match(sample('hubble_http_requests_total{method="PUT",protocol="HTTP/1.1",reporter="client"}') ?? text, new RegExp(`^\\S+ 1 # \\{traceID="${exhaust}"\\} 1`));
  assert.match(sample('hubble_http_responses_total{method="PUT",protocol="HTTP/1.1",status="403",reporter="client"}') ?? text, new RegExp(`# \\{traceID="${exhaust}"\\}`));
  // Two POSTs, the second's traceparent invalid: the exemplar is the traced one's.
  assert.match(sample('hubble_http_requests_total{method="POST",protocol="HTTP/1.1",reporter="client"}') ?? text, new RegExp(`^\\S+ 2 # \\{traceID="${landing}"\\}`));
  assert.ok(text.trimEnd().endsWith("# EOF"), "OpenMetrics");
});

test("an HTTP/2 request through the proxy is an L7 flow like HTTP/1's: curl --http2-prior-knowledge gets 403, and the real hubble CLI shows it DROPPED with protocol HTTP/2 and the 403 response", async () => {
  const since = new Date(Date.now() - 1).toISOString();
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "2", "--http2-prior-knowledge", "-X", "PUT", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", `http://${ADDR.deathstar}/v1/exhaust-port`]);
  assert.equal(stdout, "403 2");
  let http: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; http.length < 2 && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
    http = await observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--protocol", "http"]);
  assert.deepEqual(
    http.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.method, f.l7?.http?.url, f.l7?.http?.protocol, f.l7?.http?.code ?? 0]),
    [
      ["DROPPED", "REQUEST", "PUT", `http://${ADDR.deathstar}/v1/exhaust-port`, "HTTP/2", 0],
      ["FORWARDED", "RESPONSE", "PUT", `http://${ADDR.deathstar}/v1/exhaust-port`, "HTTP/2", 403],
    ],
  );
  assert.deepEqual(http[0]!.egress_denied_by?.map((p) => p.name), ["rule1"]);
});

test("a rapid reset (CVE-2023-44487) from the x-wing through the proxy: its connection is closed, and the agent logs it once as a warning naming the pod (rapid-reset-warnings.ts), the proxy knowing only its address", async () => {
  const since = agentLines.length;
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/rapid-reset-client.ts"), ADDR.deathstar, "80", "/v1/request-landing", "1500"], { cwd: ROOT });
  assert.ok((JSON.parse(stdout) as number[]).length > 0, "the connection got a GOAWAY");
  const warned = (): Record<string, unknown>[] => agentLines.slice(since).filter((l) => /rapid reset/.test(String(l.msg)));
  await until("the agent's warning", () => warned().length > 0, 10_000);
  // The proxy's flows reach the agent in order: once a request after the flood has its flow, so did the flood's.
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(warned().map((l) => [l.level, l.namespace, l.pod, l.ip, l.identity, l.destination]), [[40, "default", "xwing", ADDR.xwing, XWING, `${ADDR.deathstar}:80`]]);
});

test("an HTTP flow carries the request's headers as Hubble's http.headers (the response flow the response's after them), credentials redacted by default: hubble observe shows X-Has-Force and curl's User-Agent, Authorization and Cookie as HUBBLE_REDACTED, the secret is in no flow and not in the proxy's log, and --http-header selects by a shown header only", async () => {
  const since = new Date(Date.now() - 1).toISOString();
  const secret = `s3cret-${tag}`;
  assert.equal(await status("POST", "/v1/request-landing", ["X-Has-Force: true", `Authorization: Bearer ${secret}`, `Cookie: session=${secret}`]), 200);
  let http: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; http.length < 2 && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
    http = await observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--protocol", "http"]);
  assert.equal(http.length, 2, JSON.stringify(http));
  for (const f of http) {
    const headers = f.l7?.http?.headers ?? [];
    // The response flow adds the deathstar's response headers after the request's.
    const response = f.l7?.type === "RESPONSE" ? ["content-length: 12", "content-type: text/plain"] : [];
    assert.deepEqual(
      headers.filter((h) => h.key !== "user-agent" && h.key !== "date").map((h) => `${h.key}: ${h.value}`),
      ["accept: */*", "authorization: HUBBLE_REDACTED", "cookie: HUBBLE_REDACTED", `host: ${ADDR.deathstar}`, "x-has-force: true", ...response],
      `${f.l7?.type}: headers sorted by name`,
    );
    assert.match(headers.find((h) => h.key === "user-agent")?.value ?? "", /^curl\//);
    assert.equal(f.l7?.http?.url, `http://${ADDR.deathstar}/v1/request-landing`);
  }
  assert.doesNotMatch(JSON.stringify(http), new RegExp(secret));
  // Hubble's http_header filter on them: the shown header selects both flows, a redacted value nothing.
  const byHeader = (h: string) => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--http-header", h]);
  assert.deepEqual((await byHeader("x-has-force:true")).map((f) => f.l7?.type), ["REQUEST", "RESPONSE"]);
  assert.deepEqual(await byHeader(`cookie:session=${secret}`), []);
  assert.doesNotMatch(fs.readFileSync(path.join(stateDir, "l7proxy.log"), "utf8"), new RegExp(secret), "the proxy never logs headers");
});

test("an answer the proxy made because the destination failed is Hubble's ERROR, not FORWARDED: the deathstar resetting port 80 gives the x-wing 503, and hubble observe --verdict ERROR shows that response, allowed by its rule; a refusal stays DROPPED", async (t) => {
  // The deathstar's kernel answers port 80 with a reset (a real refused connect), until the test ends.
  const table = `${tag}-refuse`;
  await run("ip", ["netns", "exec", topo.ns.deathstar, "nft", `add table inet ${table}; add chain inet ${table} in { type filter hook input priority 0; }; add rule inet ${table} in tcp dport 80 reject with tcp reset`]);
  t.after(() => run("ip", ["netns", "exec", topo.ns.deathstar, "nft", "delete", "table", "inet", table]).catch(() => undefined));
  const since = new Date(Date.now() - 1).toISOString();
  assert.equal(await status("POST", "/v1/request-landing"), 503);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "refused before any connect");
  const observe = (...args: string[]): Promise<HubbleFlow[]> => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--protocol", "http", ...args]);
  let http: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; http.length < 4 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) http = await observe();
  assert.deepEqual(
    http.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.method, f.l7?.http?.code ?? 0]),
    [
      ["FORWARDED", "REQUEST", "POST", 0],
      ["ERROR", "RESPONSE", "POST", 503],
      ["DROPPED", "REQUEST", "PUT", 0],
      ["FORWARDED", "RESPONSE", "PUT", 403],
    ],
  );
  const errors = await observe("--verdict", "ERROR");
  assert.deepEqual(errors.map((f) => [f.l7?.http?.code, f.egress_allowed_by?.map((p) => p.name), f.egress_denied_by, f.drop_reason_desc]), [[503, ["rule1"], undefined, undefined]]);
});

test("an agent restart adopts the running proxy: the same process, and an open keep-alive connection goes on", async () => {
  const pid = proxyPid();
  assert.ok(pid);
  const client: ChildProcess = spawn("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", KEEPALIVE, ADDR.deathstar, "80"], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  const replies = readline.createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
  const ask = async (line: string): Promise<{ status?: number; reused?: boolean; error?: string }> => {
    client.stdin!.write(`${line}\n`);
    return JSON.parse((await replies.next()).value as string) as { status?: number; reused?: boolean; error?: string };
  };
  try {
    assert.deepEqual(await ask("POST /v1/request-landing"), { status: 200, reused: false });
    const unservedBefore = unserved.length;
    await agent!.stop();
    agent = newAgent();
    await agent.start();
    assert.equal(proxyPid(), pid, "adopted, not restarted");
    assert.equal(agent.status().l7Proxy?.running, true);
    assert.deepEqual(await ask("PUT /v1/exhaust-port"), { status: 403, reused: true }, "the same connection, through the same proxy");
    assert.deepEqual(await ask("POST /v1/request-landing"), { status: 200, reused: true });
    await until("the restarted agent connected", () => report()?.connected === true && report()?.l7Proxy === true, 20_000);
    assert.equal(unserved.length, unservedBefore, "the port stayed served throughout (no window in which the entry was a plain allow)");
  } finally {
    client.stdin!.end();
    client.kill();
  }
  assert.deepEqual(violations, []);
});

test("a killed proxy: the agent reports it down and its connections fail (no bypass); the supervisor brings it back", async () => {
  const pid = proxyPid()!;
  process.kill(pid, "SIGKILL");
  await until("the agent reports the proxy down", () => agent!.status().l7Proxy?.running === false, 2_000);
  // Logged by the agent's next health check (every second; its start no longer logs a proxy it then finds running as down).
  await until("the proxy's fall logged", () => agentLines.some((l) => l.msg === "L7 proxy down: connections steered to it fail until it is back"), 3_000);
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [PROXY_PORT], "the port stays served");
  const seen = topo.deathstarLog.length;
  assert.equal(await status("POST", "/v1/request-landing"), undefined, "fails while down");
  assert.equal(topo.deathstarLog.length, seen, "nothing reached the deathstar");
  await until("the proxy restarted", () => agent!.status().l7Proxy?.running === true && proxyPid() !== pid, 10_000);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
});

test("HTTP rules removed by the operator: the entry becomes a plain allow and the port is unserved", async () => {
  server!.publish(node, state(2, false));
  await until("state 2 acknowledged", () => ackedGeneration() === 2, 20_000);
  assert.deepEqual(topo.dp.redirect.servedPorts(), []);
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, []);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 200, "an L4 allow lets every request through");
  server!.publish(node, state(3, true));
  await until("state 3 acknowledged", () => ackedGeneration() === 3, 20_000);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "back through the proxy");
  assert.deepEqual(violations, []);
});

test("ingress: the star-wars rule on the deathstar's ingress steers the x-wing's connection to the proxy; 403 Access denied, and the next request on the same keep-alive connection works", async () => {
  server!.publish(node, ingressState(4));
  await until("state 4 acknowledged", () => ackedGeneration() === 4, 20_000);
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [INGRESS_PROXY_PORT]);
  const seen = topo.deathstarLog.length;
  const client: ChildProcess = spawn("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", KEEPALIVE, ADDR.deathstar, "80"], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  const replies = readline.createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
  const ask = async (line: string): Promise<unknown> => {
    client.stdin!.write(`${line}\n`);
    return JSON.parse((await replies.next()).value as string) as unknown;
  };
  try {
    assert.deepEqual(await ask("POST /v1/request-landing"), { status: 200, reused: false });
    assert.deepEqual(await ask("PUT /v1/exhaust-port"), { status: 403, reused: true });
    assert.deepEqual(await ask("POST /v1/request-landing"), { status: 200, reused: true });
  } finally {
    client.stdin!.end();
    client.kill();
  }
  const log = topo.deathstarLog.slice(seen);
  assert.equal(log.match(/request POST \/v1\/request-landing/g)?.length, 2);
  assert.doesNotMatch(log, /exhaust-port/, "the denied request never reached the deathstar");
  // The proxy connected onward as the x-wing: the deathstar's entry admits only the x-wing's identity.
  assert.match(log, new RegExp(`request POST /v1/request-landing ${ADDR.nodeToDeathstar.replace(/\./g, "\\.")}`), "from the node's address (the proxy)");
  assert.deepEqual(violations, []);
});

test("both ends with HTTP rules on one node: the proxy applies the x-wing's egress rules, then the deathstar's ingress rules, and a request either denies gets 403 and never reaches the deathstar", async () => {
  server!.publish(node, ingressState(5, true));
  await until("state 5 acknowledged", () => ackedGeneration() === 5, 20_000);
  const seen = topo.deathstarLog.length;
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403, "the x-wing's egress rules allow PUT; the deathstar's ingress rules do not");
  assert.equal(await status("GET", "/v1/ships"), 403, "the deathstar's ingress rules allow it; the x-wing's egress rules do not");
  assert.equal(await status("POST", "/v1/request-landing"), 200, "both allow it: it reaches the deathstar as the x-wing, its ingress rules applied");
  const log = topo.deathstarLog.slice(seen);
  assert.doesNotMatch(log, /exhaust-port|\/v1\/ships/, "no denied request reached the deathstar");
  assert.match(log, /request POST \/v1\/request-landing/);
  server!.publish(node, ingressState(6));
  await until("state 6 acknowledged", () => ackedGeneration() === 6, 20_000);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
});

/**
 * The state the operator's compiler makes of these CiliumNetworkPolicy specs (on the deathstar and
 * x-wing identities of this test); with `c`, one compiler kept across states as the operator keeps
 * it (its policies not in `specs` are removed).
 */
function compiledState(generation: number, specs: readonly { name: string; spec: unknown }[], c = new PolicyCompiler()): NodeState {
  const pod = (cls: string, org: string) => labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "default"), label("k8s", "class", cls), label("k8s", "org", org)]);
  c.upsertIdentity(XWING, pod("xwing", "alliance"));
  c.upsertIdentity(DEATHSTAR, pod("deathstar", "empire"));
  const key = (name: string): string => policyKey({ kind: "CiliumNetworkPolicy", namespace: "default", name });
  for (const o of [...c.ruleTable().values()]) if (!specs.some((s) => s.name === o.name)) c.removePolicy(key(o.name));
  for (const { name, spec } of specs) {
    const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "default", uid: name, generation }, spec });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    c.upsertPolicy(key(name), r.value);
  }
  const subjects = [c.snapshot(XWING), c.snapshot(DEATHSTAR)];
  const ruleIds = [...new Set(subjects.flatMap((p) => [...p.entries.map((e) => e.ruleId), ...(p.http ?? []).map((r) => r.ruleId)]))];
  const base = state(generation, false);
  return { ...base, policies: subjects, rules: ruleIds.map((id) => ({ id, origin: c.ruleOrigin(id)! })), policyGenerations: [{ key: "CiliumNetworkPolicy/default/rule1", uid: "u1", generation }] };
}

const STAR_WARS = {
  name: "rule1",
  spec: {
    endpointSelector: { matchLabels: { org: "empire", class: "deathstar" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "POST", path: "/v1/request-landing" }] } }] }],
  },
};
const L4_ONLY = {
  name: "l4",
  spec: { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [{ matchLabels: { class: "xwing" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
};

test("compiled by the operator's compiler: the star-wars rule is enforced; an L4-only allow of the same peer and port in another policy lets every request through", async () => {
  server!.publish(node, compiledState(7, [STAR_WARS]));
  await until("state 7 acknowledged", () => ackedGeneration() === 7, 20_000);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
  server!.publish(node, compiledState(8, [STAR_WARS, L4_ONLY]));
  await until("state 8 acknowledged", () => ackedGeneration() === 8, 20_000);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 200, "the L4-only allow: every request");
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [], "no entry names the proxy port any more");
  assert.deepEqual(violations, []);
});

const L4_ANY_PEER = {
  name: "l4-any-peer",
  spec: { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
};

test("compiled by the operator's compiler: an L4-only allow from every peer on port 80 (a wider key than the star-wars rule's) lets every request of the x-wing through, not proxied, as Cilium does; when it goes the rule is enforced again", async () => {
  const operator = new PolicyCompiler();
  server!.publish(node, compiledState(30, [STAR_WARS, L4_ANY_PEER], operator));
  await until("state 30 acknowledged", () => ackedGeneration() === 30, 20_000);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 200, "every request");
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [], "nothing is sent to the proxy");
  server!.publish(node, compiledState(31, [STAR_WARS], operator));
  await until("state 31 acknowledged", () => ackedGeneration() === 31, 20_000);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.deepEqual(violations, []);
});

/** The requests the proxy logged (--log-flows) for `requestPath`, with the name of the policy whose rule decided each. */
function flowsFor(requestPath: string, s: NodeState): { verdict: string; status: number; policy?: string }[] {
  const lines = fs.readFileSync(path.join(stateDir, "l7proxy.log"), "utf8").split("\n").filter((l) => l.startsWith("{"));
  const flows = lines.map((l) => JSON.parse(l) as { msg?: string; flow?: { path: string; verdict: string; status: number; rule?: { ruleId: number } } }).filter((l) => l.msg === "http request" && l.flow?.path === requestPath);
  return flows.map(({ flow }) => {
    const policy = flow!.rule ? s.rules.find((r) => r.id === flow!.rule!.ruleId)?.origin.name : undefined;
    return { verdict: flow!.verdict, status: flow!.status, ...(policy !== undefined ? { policy } : {}) };
  });
}

const pathRule = (name: string, path: string) => ({
  name,
  spec: {
    endpointSelector: { matchLabels: { org: "empire", class: "deathstar" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { org: "alliance" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path }] } }] }],
  },
});

test("two policies allowing the x-wing to the deathstar's port 80 with HTTP rules are ORed through the proxy: GET /a and GET /b 200, each named by its own policy, GET /c 403 naming none; removing one refuses its path again", async () => {
  const operator = new PolicyCompiler();
  const both = compiledState(9, [pathRule("path-a", "/a"), pathRule("path-b", "/b")], operator);
  server!.publish(node, both);
  await until("state 9 acknowledged", () => ackedGeneration() === 9, 20_000);
  const union = both.policies.find((p) => p.subject === DEATHSTAR)!.entries.find((e) => e.peer === XWING)!.proxyPort;
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [union]);
  const seen = topo.deathstarLog.length;
  assert.equal(await status("GET", "/a"), 200);
  assert.equal(await status("GET", "/b"), 200);
  assert.equal(await status("GET", "/c"), 403);
  const log = topo.deathstarLog.slice(seen);
  assert.match(log, /request GET \/a /);
  assert.match(log, /request GET \/b /);
  assert.doesNotMatch(log, /request GET \/c /, "the refused request never reached the deathstar");
  await until("the proxy logged the three requests", () => ["/a", "/b", "/c"].every((p) => flowsFor(p, both).length > 0), 5_000);
  assert.deepEqual(flowsFor("/a", both), [{ verdict: "forwarded", status: 200, policy: "path-a" }]);
  assert.deepEqual(flowsFor("/b", both), [{ verdict: "forwarded", status: 200, policy: "path-b" }]);
  assert.deepEqual(flowsFor("/c", both), [{ verdict: "denied", status: 403 }]);

  const one = compiledState(10, [pathRule("path-a", "/a")], operator);
  server!.publish(node, one);
  await until("state 10 acknowledged", () => ackedGeneration() === 10, 20_000);
  const alone = one.policies.find((p) => p.subject === DEATHSTAR)!.entries.find((e) => e.peer === XWING)!.proxyPort;
  assert.notEqual(alone, union, "the union's port is not the remaining rule's");
  assert.deepEqual(agent!.status().l7Proxy?.servedPorts, [alone], "the union's port is unserved");
  assert.equal(await status("GET", "/a"), 200);
  assert.equal(await status("GET", "/b"), 403, "path-b's rule is gone");
  assert.deepEqual(violations, []);
});

test("TLS inspection from the stream: the x-wing's HTTPS is terminated with the Secret's certificate the operator sent (written 0600 in the state dir), the rules apply to the decrypted request; a Secret the operator could not read fails the port closed", async () => {
  const ca = await issueCA({ commonName: "pods' test CA", days: 1 });
  const served = await issueCert(ca, { commonName: "deathstar.example", usage: "server", dnsNames: ["deathstar.example"], days: 1 });
  const caFile = path.join(stateDir, "test-ca.crt");
  fs.writeFileSync(caFile, ca.cert);
  const terminating = { secret: { namespace: "default", name: "deathstar-tls" } };
  const withTls = (generation: number, tls: RuleTls): NodeState => {
    const s = state(generation, true);
    return { ...s, policies: [{ ...s.policies[0]!, http: [{ ...s.policies[0]!.http![0]!, tls }] }, s.policies[1]!] };
  };
  const https = async (method: string, p: string): Promise<number | undefined> => {
    try {
      const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "2", "--cacert", caFile, "--resolve", `deathstar.example:80:${ADDR.deathstar}`, "-o", "/dev/null", "-w", "%{http_code}", "-X", method, `https://deathstar.example:80${p}`]);
      return Number(stdout);
    } catch {
      return undefined;
    }
  };
  server!.publish(node, withTls(20, { terminating: { ...terminating, material: { certificate: served.cert, privateKey: served.key } }, serverNames: ["deathstar.example"] }));
  await until("state 20 acknowledged", () => ackedGeneration() === 20, 20_000);
  // The proxy takes the new configuration a moment after the agent wrote it.
  const untilAsync = async (what: string, f: () => Promise<boolean>): Promise<void> => {
    for (const end = Date.now() + 10_000; !(await f()); ) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await untilAsync("the HTTPS request is allowed", async () => (await https("POST", "/v1/request-landing")) === 200);
  const since = new Date(Date.now() - 1).toISOString();
  assert.equal(await https("PUT", "/v1/exhaust-port"), 403, "the rules apply to the decrypted request");
  // The real hubble CLI shows the decrypted request, with the https URL the client used. Only the PUT's flows: a
  // POST of the wait above that curl gave up on (its first TLS handshake can be slow) may still finish after `since`.
  let seenFlows: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; seenFlows.length < 2 && Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
    seenFlows = (await observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, "--protocol", "http"])).filter((f) => f.l7?.http?.method === "PUT");
  assert.deepEqual(
    seenFlows.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.method, f.l7?.http?.url, f.l7?.http?.code ?? 0]),
    [
      ["DROPPED", "REQUEST", "PUT", "https://deathstar.example:80/v1/exhaust-port", 0],
      ["FORWARDED", "RESPONSE", "PUT", "https://deathstar.example:80/v1/exhaust-port", 403],
    ],
  );
  assert.equal(await status("POST", "/v1/request-landing"), undefined, "plain HTTP on the inspected port fails");
  const dir = path.join(stateDir, "l7proxy-tls");
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  const files = fs.readdirSync(dir);
  assert.equal(files.length, 2, files.join(","));
  for (const f of files) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
  assert.doesNotMatch(fs.readFileSync(path.join(stateDir, "l7proxy.json"), "utf8"), /PRIVATE KEY/, "the proxy's configuration names files, not keys");
  assert.equal(fs.statSync(path.join(stateDir, "applied.json")).mode & 0o777, 0o600, "the acknowledged state, which holds the material, is the agent's alone");

  server!.publish(node, withTls(21, { terminating: { ...terminating, unavailable: "not found" } }));
  await until("state 21 acknowledged", () => ackedGeneration() === 21, 20_000);
  await untilAsync("the port refuses connections", async () => (await https("POST", "/v1/request-landing")) === undefined);
  const seen = topo.deathstarLog.length;
  assert.equal(await status("POST", "/v1/request-landing"), undefined, "nor does plain HTTP pass");
  assert.equal(topo.deathstarLog.length, seen, "nothing reached the deathstar");
  const proxyLog = fs.readFileSync(path.join(stateDir, "l7proxy.log"), "utf8");
  assert.match(proxyLog, /terminatingTLS Secret default\/deathstar-tls: not found/);
  assert.doesNotMatch(proxyLog, /PRIVATE KEY/, "no key in the proxy's log");
  await until("the key file is removed with its last use", () => fs.readdirSync(dir).length === 0, 10_000);
  assert.deepEqual(violations, []);
});

test("a proxy that cannot start: the agent serves the new port all the same (its connections fail, never pass), says so, and keeps trying", async () => {
  await agent!.stop();
  const pid = proxyPid();
  if (pid) process.kill(pid, "SIGKILL");
  while (proxyPid() !== undefined && fs.existsSync(`/proc/${pid}`)) await new Promise((r) => setTimeout(r, 20));
  // `false` in place of nsenter: every start of the proxy exits at once.
  agent = newAgent({ launcher: ["false"], listenTimeoutMs: 1000 });
  await agent.start();
  assert.equal(agent.status().l7Proxy?.running, false);
  assert.ok(agentLines.some((l) => l.msg === "L7 proxy not started yet: connections steered to it fail until it runs"));
  server!.publish(node, ingressState(11));
  await until("state 11 acknowledged", () => ackedGeneration() === 11, 20_000);
  assert.ok(topo.dp.redirect.servedPorts().includes(INGRESS_PROXY_PORT), `served although nothing listens (served: ${topo.dp.redirect.servedPorts().join(",")}; agent: ${JSON.stringify(agent.status().l7Proxy)}; acked ${ackedGeneration()})`);
  const seen = topo.deathstarLog.length;
  assert.equal(await status("PUT", "/v1/exhaust-port"), undefined, "fails closed");
  assert.equal(await status("POST", "/v1/request-landing"), undefined, "every request fails while the proxy is not there");
  assert.equal(topo.deathstarLog.length, seen, "nothing reached the deathstar");
  assert.equal(report()?.l7Proxy, true, "the node enforces the HTTP rules (closed): the hello says the agent supervises the proxy");
  assert.match(agent.status().l7Proxy?.error ?? "", /L7 proxy/);
});
