// Real IPv6 packets through the real L7 proxy on one node (netns, the datapath on both pods' veths, `membrane l7proxy` as its own process): the datapath steers an IPv6 pod's flow to the proxy's IPv6 address as it does IPv4, and without one it drops the flow (fail closed).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { Datapath } from "../bpf/datapath.ts";
import { DROP_REASONS, type VerdictEvent } from "../bpf/layout.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "../bpf/netns.ts";
import { DEFAULT_LIMITS, parseProxyConfig, writeProxyConfig } from "./config.ts";
import { ROOT } from "./testing/topology.ts";

const run = promisify(execFile);
const tag = `m76${process.pid % 100000}`;
const XWING = 1000;
const DEATHSTAR = 2000;
const INGRESS_PORT = 10090; // the deathstar's ingress rules
const EGRESS_PORT = 10091; // the x-wing's egress rules
const INGRESS_RULE = 9;
const EGRESS_RULE = 7;
const PLAIN_RULE = 11;
const ADDR = {
  xwing: "fd07:207::1", node: "fd07:207::2", // the node end of the x-wing's veth: the proxy's IPv6 address
  deathstar: "fd07:207:1::1", nodeToDeathstar: "fd07:207:1::2",
  node4: "10.217.0.2", // the proxy's IPv4 address (the proxy always has one)
};
const ns = { node: `${tag}-n`, xwing: `${tag}-x`, deathstar: `${tag}-d` };
const fx = new NetnsFixture();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-l76-"));
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;
let dp: Datapath | undefined;
let proxy: ChildProcess | undefined;
let proxyLog = "";
let deathstarLog = "";
const ifindex = { xwing: 0, deathstar: 0 };

const entry = (subject: number, direction: "ingress" | "egress", peer: number, proxyPort: number, ruleId: number): PolicyEntry => ({
  subject, direction, peer, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort, ruleId,
});
const xwingPolicy = (proxied: boolean): SubjectPolicy => ({
  subject: XWING, ingressEnforced: false, egressEnforced: true, entries: [entry(XWING, "egress", DEATHSTAR, proxied ? EGRESS_PORT : 0, proxied ? EGRESS_RULE : PLAIN_RULE)],
});
const deathstarPolicy = (proxied: boolean): SubjectPolicy => ({
  subject: DEATHSTAR, ingressEnforced: true, egressEnforced: false, entries: [entry(DEATHSTAR, "ingress", XWING, proxied ? INGRESS_PORT : 0, proxied ? INGRESS_RULE : PLAIN_RULE)],
});
function setPolicies(xwingProxied: boolean, deathstarProxied: boolean): void {
  dp!.setSubjectPolicy(xwingPolicy(xwingProxied), [{ ip: ADDR.xwing, ifindex: ifindex.xwing }]);
  dp!.setSubjectPolicy(deathstarPolicy(deathstarProxied), [{ ip: ADDR.deathstar, ifindex: ifindex.deathstar }]);
  dp!.clearConntrack();
}

/** curl -6 in the x-wing's netns: the status and body, or undefined when the connection failed. */
async function xwing(method: string, p: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", ns.xwing, "curl", "-6", "-sS", "--max-time", "3", "-X", method, ...(method === "GET" ? [] : ["-d", ""]), "-w", "\n@@%{http_code}", `http://[${ADDR.deathstar}]${p}`]);
    const at = stdout.lastIndexOf("\n@@");
    return { status: Number(stdout.slice(at + 3)), body: stdout.slice(0, at) };
  } catch {
    return undefined;
  }
}

interface Flow { method: string; path: string; verdict: string; status: number; rule?: { ruleId: number }; source: { identity: number } }

/** The proxy's flows (--log-flows) logged from `since` on, once there are `n` of them. */
async function flowsSoon(since: number, n: number): Promise<Flow[]> {
  const read = (): Flow[] =>
    proxyLog.split("\n").filter((l) => l.includes('"http request"')).map((l) => JSON.parse(l) as { time: number; flow: Flow }).filter((l) => l.time >= since).map((l) => l.flow);
  for (let i = 0; i < 40 && read().length < n; i++) await new Promise((r) => setTimeout(r, 50));
  return read();
}

before(async () => {
  for (const n of Object.values(ns)) fx.addNetns(n);
  fx.addVeth({ netns: ns.xwing, ifname: `${tag}x`, cidr: "" }, { netns: ns.node, ifname: `${tag}h`, cidr: `${ADDR.node4}/24` });
  fx.addVeth({ netns: ns.deathstar, ifname: `${tag}d`, cidr: "" }, { netns: ns.node, ifname: `${tag}e`, cidr: "" });
  // nodad: the addresses are usable at once (the proxy binds the node's, curl leaves from the x-wing's).
  ipIn(ns.xwing, "addr", "add", `${ADDR.xwing}/64`, "dev", `${tag}x`, "nodad");
  ipIn(ns.node, "addr", "add", `${ADDR.node}/64`, "dev", `${tag}h`, "nodad");
  ipIn(ns.deathstar, "addr", "add", `${ADDR.deathstar}/64`, "dev", `${tag}d`, "nodad");
  ipIn(ns.node, "addr", "add", `${ADDR.nodeToDeathstar}/64`, "dev", `${tag}e`, "nodad");
  ipIn(ns.xwing, "-6", "route", "add", "default", "via", ADDR.node);
  ipIn(ns.deathstar, "-6", "route", "add", "default", "via", ADDR.nodeToDeathstar);
  execIn(ns.node, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
  ifindex.xwing = ifindexIn(ns.node, `${tag}h`);
  ifindex.deathstar = ifindexIn(ns.node, `${tag}e`);

  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  setPolicies(false, true);
  dp.attachEndpoint(ifindex.xwing, ns.node);
  dp.attachEndpoint(ifindex.deathstar, ns.node);
  drain = dp.onEvents((e) => events.push(e));

  const server = fx.spawn(ns.deathstar, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), "::", "80"]);
  server.stdout?.on("data", (d: Buffer) => (deathstarLog += d.toString()));
  await waitForLine(server, /^listening/, 20000);

  const file = path.join(dir, "l7proxy.json");
  writeProxyConfig(file, {
    address: ADDR.node4, address6: ADDR.node, limits: { ...DEFAULT_LIMITS, connectTimeoutMs: 1500 },
    ports: [
      { port: INGRESS_PORT, direction: "ingress", http: [
        { ruleId: INGRESS_RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } },
        { ruleId: INGRESS_RULE, index: 1, rule: { method: "GET", path: "/v1/ships" } },
      ] },
      { port: EGRESS_PORT, http: [{ ruleId: EGRESS_RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } }] },
    ],
  });
  proxy = spawn("nsenter", [`--net=/var/run/netns/${ns.node}`, process.execPath, "--import", "tsx", path.join(ROOT, "cli/main.ts"), "l7proxy", "--config", file, "--bpf-scope", `test-${tag}`, "--log-flows"], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"],
  });
  proxy.stdout?.on("data", (d: Buffer) => (proxyLog += d.toString()));
  proxy.stderr?.on("data", (d: Buffer) => process.stderr.write(d));
  await waitForLine(proxy, /l7 proxy ready/, 30000);
  // What the agent does for a proxy: its addresses, then the ports it serves (once it listens).
  dp.redirect.setProxyAddress(ADDR.node4, ADDR.node);
  dp.redirect.serve(INGRESS_PORT);
  dp.redirect.serve(EGRESS_PORT);
});

after(async () => {
  if (proxy && proxy.exitCode === null && proxy.signalCode === null) {
    const exited = new Promise((r) => proxy!.once("exit", r));
    proxy.kill("SIGKILL");
    await exited;
  }
  try {
    fx.cleanup();
  } finally {
    dp?.close();
    dp?.unpin();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("ingress HTTP rule for an IPv6 pod: the connection goes to the proxy's IPv6 address, allowed requests reach the deathstar, a denied one gets 403, the flows name the x-wing", async () => {
  drain();
  events.length = 0;
  const since = Date.now();
  const landing = await xwing("POST", "/v1/request-landing");
  assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
  const exhaust = await xwing("PUT", "/v1/exhaust-port");
  assert.deepEqual([exhaust?.status, exhaust?.body], [403, "Access denied"]);
  assert.doesNotMatch(deathstarLog, /exhaust-port/, "the denied request never reached the deathstar");
  assert.match(deathstarLog, new RegExp(`request POST /v1/request-landing ${ADDR.node}\n`), "the proxy's upstream connection brought it, from the proxy's IPv6 address");
  const f = (await flowsSoon(since, 2)).map((x) => [x.method, x.verdict, x.status, x.rule?.ruleId, x.source.identity]);
  assert.deepEqual(f, [["POST", "forwarded", 200, INGRESS_RULE, XWING], ["PUT", "denied", 403, undefined, XWING]]);
  drain();
  assert.deepEqual(events.filter((e) => e.reason === DROP_REASONS[13]), [], "no PROXY_REDIRECT drop");
});

test("egress HTTP rule for an IPv6 pod: the x-wing's requests are judged by its egress rules, and the deathstar's L4 allow of the x-wing admits the proxied connection", async () => {
  setPolicies(true, false);
  const since = Date.now();
  try {
    const landing = await xwing("POST", "/v1/request-landing");
    assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
    const ships = await xwing("GET", "/v1/ships");
    assert.deepEqual([ships?.status, ships?.body], [403, "Access denied"]);
    const f = (await flowsSoon(since, 2)).map((x) => [x.method, x.verdict, x.status, x.rule?.ruleId, x.source.identity]);
    assert.deepEqual(f, [["POST", "forwarded", 200, EGRESS_RULE, XWING], ["GET", "denied", 403, undefined, XWING]]);
  } finally {
    setPolicies(false, true);
  }
});

test("without an IPv6 proxy address, an IPv6 flow the policy sends to the proxy is dropped as PROXY_REDIRECT, never passed", async () => {
  dp!.redirect.setProxyAddress(ADDR.node4);
  dp!.clearConntrack();
  drain();
  events.length = 0;
  try {
    assert.equal(await xwing("POST", "/v1/request-landing"), undefined, "the connection fails");
    drain();
    const drop = events.find((e) => e.verdict === "dropped" && e.dport === 80);
    assert.deepEqual([drop?.srcIdentity, drop?.reason], [XWING, DROP_REASONS[13]]);
  } finally {
    dp!.redirect.setProxyAddress(ADDR.node4, ADDR.node);
    dp!.clearConntrack();
  }
});

test("the proxy's configuration takes an IPv6 address beside the IPv4 one, and refuses one that is not IPv6, naming address6", () => {
  const good = parseProxyConfig(JSON.stringify({ address: ADDR.node4, address6: ADDR.node, ports: [] }));
  assert.deepEqual(good.ok && [good.value.address, good.value.address6], [ADDR.node4, ADDR.node]);
  const bad = parseProxyConfig(JSON.stringify({ address: ADDR.node4, address6: ADDR.node4, ports: [] }));
  assert.deepEqual(!bad.ok && bad.errors.map((e) => e.path), ["address6"]);
});
