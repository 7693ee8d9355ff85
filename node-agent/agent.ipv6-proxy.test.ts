// The agent's DNS and L7 proxies for an IPv6 pod on an IPv6-only node: real agent and distribution server (mTLS), real maps and packets, the proxies on the node's IPv6 address (the agent's --node-ip) in the node's netns while the agent runs outside it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { PROTO_NUMBER, type PolicyEntry } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { makePki, type TestPki } from "../kube/testing/pki.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { NodeAgent } from "./agent.ts";
import { Datapath } from "./bpf/datapath.ts";
import { DROP_REASONS, type VerdictEvent } from "./bpf/layout.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "./bpf/netns.ts";
import { AgentDns } from "./dns/agent-dns.ts";
import { AgentL7 } from "./l7proxy/agent-l7.ts";
import { CLIENT, ROOT } from "./dns/testing/topology.ts";
import { killProxyIn } from "./l7proxy/testing/topology.ts";
import { capturingLogger, until } from "./testing/agent.ts";
import { nodeIPFlags } from "./flags.ts";

const run = promisify(execFile);
const tag = `m6p${process.pid % 100000}`;
const node = `${tag}-node`;
const XWING = 1400;
const SERVER = 2400; // kube-dns and the deathstar: one outside address
const DNS_RULE = 21;
const FQDN_RULE = 22;
const HTTP_RULE = 23;
const DNS_PORT = 10253;
const HTTP_PORT = 10254;
const ADDR = {
  xwing: "fd5e:1::1",
  node: "fd5e:1::2", // the node end of the x-wing's veth: the node's only address, where both proxies listen
  uplink: "fd5e:2::1",
  server: "fd5e:2::2",
  learned: "fd5e:5::20", // what api.allowed.test answers (AAAA), on the outside netns's loopback
};
const ZONE = {
  "api.allowed.test": [{ type: "AAAA", data: ADDR.learned, ttl: 30 }],
  "evil.denied.test": [{ type: "AAAA", data: "fd5e:5::21", ttl: 30 }],
};
const ns = { node: `${tag}-n`, xwing: `${tag}-x`, out: `${tag}-o` };
const fx = new NetnsFixture();
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-ipv6-"));
const agentLines: Record<string, unknown>[] = [];
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;
let dp: Datapath | undefined;
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let agent: NodeAgent | undefined;
let port = 0;
let hostIfindex = 0;
let deathstarLog = "";

const entry = (proto: number, p: number, proxyPort: number, ruleId: number): PolicyEntry => ({
  subject: XWING, direction: "egress", verdict: "allow", peer: SERVER, proto, port: p, portPrefixLen: 16, proxyPort, ruleId,
});

/** What the operator sends: DNS rules on 53, an HTTP rule on 80 (both through the proxies), toFQDNs api.allowed.test on 8080. */
const STATE: NodeState = {
  policies: [
    {
      subject: XWING,
      ingressEnforced: false,
      egressEnforced: true,
      entries: [entry(PROTO_NUMBER.UDP, 53, DNS_PORT, DNS_RULE), entry(PROTO_NUMBER.TCP, 53, DNS_PORT, DNS_RULE), entry(PROTO_NUMBER.TCP, 80, HTTP_PORT, HTTP_RULE)],
      dns: {
        dnsRules: [{ ruleId: DNS_RULE, rules: [{ matchPattern: "*.allowed.test" }] }],
        fqdnSelectors: [{ ruleId: FQDN_RULE, matchName: "api.allowed.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] }],
      },
      http: [{ ruleId: HTTP_RULE, portRule: 0, direction: "egress", rules: [{ method: "GET", path: "/public" }], proxyPorts: [HTTP_PORT] }],
    },
  ],
  ipcache: [
    { prefix: `${ADDR.xwing}/128`, identity: XWING, node: ADDR.node, pod: "default/xwing" },
    { prefix: `${ADDR.server}/128`, identity: SERVER },
  ],
  identities: [
    { id: XWING, labels: ["k8s:class=xwing"] },
    { id: SERVER, labels: ["k8s:k8s-app=kube-dns"] },
  ],
  rules: [
    { id: DNS_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "v6", ruleIndex: 0, path: "spec.egress[0]" } },
    { id: FQDN_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "v6", ruleIndex: 1, path: "spec.egress[1]" } },
    { id: HTTP_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "v6", ruleIndex: 2, path: "spec.egress[2]" } },
  ],
  policyGenerations: [{ key: "CiliumNetworkPolicy/default/v6", uid: "u1", generation: 1 }],
};

/** One DNS query from the x-wing to the server over IPv6; undefined without an answer. */
async function resolve(name: string, proto: "udp" | "tcp" = "udp"): Promise<{ rcode: string; from: string; answers: { data: string }[] } | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", ns.xwing, process.execPath, "--import", "tsx", CLIENT, proto, ADDR.server, "53", name, "AAAA", "3000"], { cwd: ROOT });
    return JSON.parse(stdout) as { rcode: string; from: string; answers: { data: string }[] };
  } catch {
    return undefined;
  }
}

/** curl -6 from the x-wing: status and body, or undefined when the connection failed. */
async function curl(url: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", ns.xwing, "curl", "-6", "-sS", "--max-time", "3", "-w", "\n@@%{http_code}", url]);
    const at = stdout.lastIndexOf("\n@@");
    return { status: Number(stdout.slice(at + 3)), body: stdout.slice(0, at) };
  } catch {
    return undefined;
  }
}

before(async () => {
  for (const n of Object.values(ns)) fx.addNetns(n);
  fx.addVeth({ netns: ns.xwing, ifname: `${tag}x`, cidr: "" }, { netns: ns.node, ifname: `${tag}h`, cidr: "" });
  fx.addVeth({ netns: ns.node, ifname: `${tag}u`, cidr: "" }, { netns: ns.out, ifname: `${tag}o`, cidr: "" });
  // nodad: the addresses are usable at once (the proxies bind the node's).
  ipIn(ns.xwing, "addr", "add", `${ADDR.xwing}/64`, "dev", `${tag}x`, "nodad");
  ipIn(ns.node, "addr", "add", `${ADDR.node}/64`, "dev", `${tag}h`, "nodad");
  ipIn(ns.node, "addr", "add", `${ADDR.uplink}/64`, "dev", `${tag}u`, "nodad");
  ipIn(ns.out, "addr", "add", `${ADDR.server}/64`, "dev", `${tag}o`, "nodad");
  ipIn(ns.out, "addr", "add", `${ADDR.learned}/128`, "dev", "lo");
  ipIn(ns.xwing, "-6", "route", "add", "default", "via", ADDR.node);
  ipIn(ns.out, "-6", "route", "add", "fd5e:1::/64", "via", ADDR.uplink);
  ipIn(ns.node, "-6", "route", "add", "fd5e:5::/64", "via", ADDR.server);
  execIn(ns.node, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
  hostIfindex = ifindexIn(ns.node, `${tag}h`);

  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.attachEndpoint(hostIfindex, ns.node);
  drain = dp.onEvents((e) => events.push(e));

  const resolver = fx.spawn(ns.out, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/dns/testing/resolver.ts"), ADDR.server, "53", JSON.stringify(ZONE)]);
  const deathstar = fx.spawn(ns.out, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), "::", "80"]);
  deathstar.stdout?.on("data", (d: Buffer) => (deathstarLog += d.toString()));
  const outside = fx.spawn(ns.out, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), "::", "8080"]);
  await Promise.all([waitForLine(resolver, /^listening/, 20000), waitForLine(deathstar, /^listening/, 20000), waitForLine(outside, /^listening/, 20000)]);

  pki = await makePki([node]);
  server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
  port = await server.listen(0);
  server.publish(node, STATE);
  // The agent's flags on an IPv6-only node: --node-ip is its IPv6 address, and both proxies listen there.
  const flags = nodeIPFlags(ADDR.node, undefined);
  assert.ok(typeof flags !== "string" && flags.proxyAddresses);
  const proxy = flags.proxyAddresses;
  assert.deepEqual(proxy, { address6: ADDR.node });
  agent = new NodeAgent({
    nodeName: node,
    operator: `127.0.0.1:${port}`,
    tls: { ca: pki.read("ca.crt"), cert: pki.read(`${node}.crt`), key: pki.read(`${node}.key`) },
    datapath: dp,
    cniSocket: path.join(stateDir, "agent.sock"),
    netns: ns.node,
    nodeIP: ADDR.node,
    endpointsFile: path.join(stateDir, "endpoints.json"),
    appliedFile: path.join(stateDir, "applied.json"),
    hostLinks: { list: () => [{ ifname: `${tag}h`, ifindex: hostIfindex }], remove: () => undefined },
    dns: new AgentDns({
      datapath: dp,
      proxyAddress6: proxy.address6!,
      stateFile: path.join(stateDir, "fqdn-cache.json"),
      cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 5 },
      rejectCode: "refused",
      netns: ns.node,
      log: pino({ level: "warn" }),
    }),
    l7: new AgentL7({
      datapath: dp.redirect,
      stateDir,
      ...proxy,
      bpfScope: `test-${tag}`,
      launcher: ["nsenter", `--net=/var/run/netns/${ns.node}`],
      log: capturingLogger(agentLines),
    }),
    log: capturingLogger(agentLines),
    backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
  });
  await agent.start();
  const add = { op: "endpoint-add" as const, containerId: `${tag}-xwing`, namespace: "default", pod: "xwing", ifname: "eth0", netns: `/var/run/netns/${ns.xwing}`, hostIfname: `${tag}h`, hostIfindex, ips: [ADDR.xwing] };
  assert.deepEqual(await callAgent(path.join(stateDir, "agent.sock"), add), { ok: true });
  await until("state 1 acknowledged", () => server?.reports().find((r) => r.node === node)?.acked?.policyGenerations[0]?.generation === 1, 30_000);
  await until("the L7 proxy serves its port", () => agent?.status().l7Proxy?.servedPorts.includes(HTTP_PORT), 30_000);
});

after(async () => {
  await agent?.stop();
  killProxyIn(stateDir);
  await server?.close();
  try {
    if (dp && hostIfindex) dp.detachEndpoint(hostIfindex, ns.node);
  } catch {
    // the netns may be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
  pki?.remove();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test("DNS rules for an IPv6 pod: the proxy answers on the node's IPv6 address, an allowed name is answered by the server asked, a denied one is REFUSED; the AAAA it learned opens toFQDNs at once", async () => {
  const { stdout } = await run("ip", ["netns", "exec", ns.node, "ss", "-lnu"]);
  assert.match(stdout, new RegExp(`\\[${ADDR.node}\\]:${DNS_PORT}\\b`), "the DNS proxy's UDP socket is on the node's IPv6 address");
  assert.equal(await curl(`http://[${ADDR.learned}]:8080/`), undefined, "the name's address is closed before the lookup");
  const a = await resolve("api.allowed.test");
  assert.equal(a?.rcode, "NOERROR");
  assert.equal(a?.from, `${ADDR.server}:53`, "the answer comes from the server asked");
  assert.deepEqual(a?.answers.map((r) => r.data), [ADDR.learned]);
  assert.equal((await curl(`http://[${ADDR.learned}]:8080/`))?.status, 200, "the learned IPv6 address connects at once");
  assert.equal((await resolve("evil.denied.test"))?.rcode, "REFUSED");
  assert.equal((await resolve("evil.denied.test", "tcp"))?.rcode, "REFUSED", "over TCP too");
});

test("an HTTP rule for an IPv6 pod: GET /public goes through the L7 proxy on the node's IPv6 address, /private gets 403 and never reaches the server", async () => {
  drain();
  events.length = 0;
  const allowed = await curl(`http://[${ADDR.server}]/public`);
  assert.deepEqual([allowed?.status, allowed?.body], [200, "deathstar: GET /public\n"]);
  const denied = await curl(`http://[${ADDR.server}]/private`);
  assert.deepEqual([denied?.status, denied?.body], [403, "Access denied"]);
  assert.doesNotMatch(deathstarLog, /private/, "the denied request never reached the server");
  assert.match(deathstarLog, new RegExp(`request GET /public ${ADDR.node}\n`), "the proxy's upstream connection brought the allowed one, from the proxy's IPv6 address");
  drain();
  assert.deepEqual(events.filter((e) => e.reason === DROP_REASONS[13]), [], "no PROXY_REDIRECT drop");
});
