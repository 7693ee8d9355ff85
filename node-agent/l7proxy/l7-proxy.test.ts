// Real packets: the star-wars demo. An x-wing pod's HTTP to the deathstar is steered by the datapath to the node's L7 proxy (its own process), which enforces the HTTP rules and connects onward as the x-wing's identity.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { IDENTITY } from "../../core/identity.ts";
import type { VerdictEvent } from "../bpf/layout.ts";
import { DEFAULT_LIMITS, writeProxyConfig, type ProxyConfig } from "./config.ts";
import { ADDR, L7Topology } from "./testing/topology.ts";

const run = promisify(execFile);

const tag = `m7l${process.pid % 100000}`;
const XWING = 1000; // org=alliance, class=xwing
const DEATHSTAR = 2000; // org=empire, class=deathstar
const HTTP_RULE = 7;
const DEATHSTAR_INGRESS_RULE = 9;
const PROXY_PORT = 10080;

const egress = (p: Omit<PolicyEntry, "subject" | "direction" | "verdict">): PolicyEntry => ({ subject: XWING, direction: "egress", verdict: "allow", ...p });
const POLICIES: SubjectPolicy[] = [
  {
    subject: XWING,
    ingressEnforced: false,
    egressEnforced: true,
    entries: [egress({ peer: DEATHSTAR, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: HTTP_RULE })],
  },
  {
    // The deathstar admits only the x-wing's identity on port 80: the proxy's connection must carry it.
    subject: DEATHSTAR,
    ingressEnforced: true,
    egressEnforced: false,
    entries: [{ subject: DEATHSTAR, direction: "ingress", verdict: "allow", peer: XWING, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: 0, ruleId: DEATHSTAR_INGRESS_RULE }],
  },
];
// Cilium's star-wars rule, plus a second rule ORed with it (regexes match the whole value).
const CONFIG: ProxyConfig = {
  address: ADDR.node,
  limits: DEFAULT_LIMITS,
  ports: [
    {
      port: PROXY_PORT,
      http: [
        { ruleId: HTTP_RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } },
        { ruleId: HTTP_RULE, index: 1, rule: { method: "GET|HEAD", path: "/v1/(ships|status)" } },
      ],
    },
  ],
};

const topo = new L7Topology(tag);
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;

before(async () => {
  await topo.setUp({ policies: POLICIES, config: CONFIG });
  drain = topo.dp.onEvents((e) => events.push(e));
  await topo.startProxy();
});

after(async () => {
  await topo.cleanup();
});

interface Reply {
  status: number;
  body: string;
  /** 1: this request opened a connection, 0: it reused the previous one (keep-alive). */
  connects: number;
}

/**
 * curl in a netns (a real client nobody here wrote): the requests in order, on one connection when
 * curl can keep it (`--next`). undefined when curl failed (connection refused or reset).
 */
async function curl(netns: string, requests: readonly [method: string, path: string][], host: string = ADDR.deathstar, timeoutS = 3): Promise<Reply[] | undefined> {
  const args: string[] = [];
  requests.forEach(([method, p], i) => {
    if (i > 0) args.push("--next");
    args.push("-sS", "--max-time", String(timeoutS), ...(method === "HEAD" ? ["-I"] : ["-X", method]), "-w", "\n@@ %{http_code} %{num_connects}\n", ...(method === "POST" || method === "PUT" ? ["-d", ""] : []), `http://${host}${p}`);
  });
  try {
    const { stdout } = await run("ip", ["netns", "exec", netns, "curl", ...args]);
    const out: Reply[] = [];
    const re = /([\s\S]*?)\n?@@ (\d+) (\d+)\n/g;
    for (let m = re.exec(stdout); m; m = re.exec(stdout)) out.push({ body: m[1]!, status: Number(m[2]), connects: Number(m[3]) });
    return out;
  } catch {
    return undefined;
  }
}

const xwing = (requests: readonly [string, string][]): Promise<Reply[] | undefined> => curl(topo.ns.xwing, requests);

test("star wars: POST /v1/request-landing is allowed, PUT /v1/exhaust-port gets 403 Access denied and never reaches the deathstar", async () => {
  const [landing] = (await xwing([["POST", "/v1/request-landing"]])) ?? [];
  assert.equal(landing?.status, 200);
  assert.equal(landing?.body, "Ship landed\n");
  const [exhaust] = (await xwing([["PUT", "/v1/exhaust-port"]])) ?? [];
  assert.equal(exhaust?.status, 403);
  assert.equal(exhaust?.body, "Access denied");
  assert.match(topo.deathstarLog, /request POST \/v1\/request-landing/);
  assert.doesNotMatch(topo.deathstarLog, /exhaust-port/, "the denied request never reached the server");
  const flows = await topo.flowsWhen("the landing's and the exhaust port's flows", (fs) => fs.some((f) => f.path === "/v1/request-landing") && fs.some((f) => f.path === "/v1/exhaust-port"));
  const landed = flows.find((f) => f.path === "/v1/request-landing");
  assert.deepEqual([landed?.verdict, landed?.status, landed?.rule, landed?.source.identity], ["forwarded", 200, { ruleId: HTTP_RULE, index: 0 }, XWING]);
  const denied = flows.find((f) => f.path === "/v1/exhaust-port");
  assert.deepEqual([denied?.verdict, denied?.status, denied?.rule], ["denied", 403, undefined]);
});

test("a denied request and then an allowed one on the same keep-alive connection", async () => {
  const replies = await xwing([["PUT", "/v1/exhaust-port"], ["POST", "/v1/request-landing"], ["GET", "/v1/ships"]]);
  assert.deepEqual(replies?.map((r) => [r.status, r.connects]), [[403, 1], [200, 0], [200, 0]], "one connection: curl reused it after the 403");
});

test("method and path are regular expressions matching the whole value", async () => {
  const replies = await xwing([
    ["GET", "/v1/ships"],
    ["HEAD", "/v1/status"],
    ["GET", "/v1/shipsx"],
    ["GET", "/v1/ships/1"],
    ["GET", "/x/v1/ships"],
    ["POST", "/v1/ships"],
    ["POST", "/v1/request-landing/now"],
    ["OPTIONS", "/v1/ships"],
  ]);
  assert.deepEqual(replies?.map((r) => r.status), [200, 200, 403, 403, 403, 403, 403, 403]);
  // One connection, logged in order: once the last request's flow is there, so is the GET's.
  const flows = await topo.flowsWhen("the OPTIONS request's flow", (fs) => fs.some((f) => f.method === "OPTIONS" && f.path === "/v1/ships"));
  const byPath = flows.filter((f) => f.method === "GET" && f.path === "/v1/ships");
  assert.deepEqual(byPath.at(-1)?.rule, { ruleId: HTTP_RULE, index: 1 }, "the second rule decided");
});

test("the deathstar's ingress policy sees the x-wing's identity on the proxy's connection; the node itself is judged as reserved:host (dropped under --allow-localhost policy)", async () => {
  drain();
  const before = events.length;
  assert.equal((await xwing([["GET", "/v1/status"]]))?.[0]?.status, 200);
  drain();
  const upstream = events.slice(before).find((e) => e.direction === "ingress" && e.dst === ADDR.deathstar && e.dport === 80 && e.verdict === "forwarded" && e.ctState === "new");
  assert.ok(upstream, "the proxy's connection to the deathstar is a new ingress connection there");
  assert.equal(upstream.src, ADDR.nodeToDeathstar, "it comes from the node's address");
  assert.equal(upstream.srcIdentity, XWING, "but as the x-wing's identity");
  assert.equal(upstream.ruleId, DEATHSTAR_INGRESS_RULE);
  // Control: the same node address without the proxy's mark is the node itself (reserved:host), which the deathstar's policy
  // does not admit once the node's own connections are judged by it (--allow-localhost policy; by default they pass).
  topo.dp.setLocalhostPolicy(true);
  try {
    assert.equal(await curl(topo.ns.host, [["GET", "/v1/status"]], ADDR.deathstar, 2), undefined, "an unmarked connection from the node is dropped");
  } finally {
    topo.dp.setLocalhostPolicy(false);
  }
  drain();
  assert.ok(
    events.some((e) => e.verdict === "dropped" && e.dst === ADDR.deathstar && e.src === ADDR.nodeToDeathstar && e.srcIdentity === IDENTITY.host),
    "and the drop is reported as the host's, not the x-wing's",
  );
});

test("the x-wing cannot reach the deathstar around the proxy: a port without an allow stays dropped", async () => {
  assert.equal(await curl(topo.ns.xwing, [["GET", "/v1/status"]], `${ADDR.deathstar}:8080`, 2), undefined);
});

test("proxy killed: a new connection fails (no bypass) and the deathstar sees nothing; restarted: it succeeds", async () => {
  await topo.stopProxy("SIGKILL");
  const seen = topo.deathstarLog.length;
  assert.equal(await xwing([["POST", "/v1/request-landing"]]), undefined, "no answer while the proxy is down");
  assert.equal(topo.deathstarLog.length, seen, "nothing reached the deathstar");
  await topo.startProxy();
  const [after] = (await xwing([["POST", "/v1/request-landing"]])) ?? [];
  assert.equal(after?.status, 200);
  assert.equal((await xwing([["PUT", "/v1/exhaust-port"]]))?.[0]?.status, 403, "and the rules are back with it");
});

test("new rules from the agent's file apply without a restart", async () => {
  writeProxyConfig(topo.configFile, { ...CONFIG, ports: [{ port: PROXY_PORT, http: [{ ruleId: HTTP_RULE, index: 0, rule: { method: "PUT", path: "/v1/exhaust-port" } }] }] });
  try {
    let status: number | undefined;
    for (let i = 0; i < 40 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await xwing([["PUT", "/v1/exhaust-port"]]))?.[0]?.status;
    }
    assert.equal(status, 200, "the exhaust port is now allowed");
    assert.equal((await xwing([["POST", "/v1/request-landing"]]))?.[0]?.status, 403, "and landing is not");
  } finally {
    writeProxyConfig(topo.configFile, CONFIG);
  }
});
