// The agent runs the DNS proxy from the operator's stream: real agent, real distribution server (mTLS), real maps and packets; the proxy's sockets live in the node's netns while the agent runs outside it (as in the local cluster).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { MIN_FQDN_IDENTITY, MIN_LOCAL_IDENTITY, WORLD_CLASS_PEER, cidrLabels } from "../../core/identity.ts";
import type { NodeState } from "../../core/wire.ts";
import { makePki, type TestPki } from "../../kube/testing/pki.ts";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { callAgent } from "../cni/agent-socket.ts";
import { NodeAgent } from "../agent.ts";
import { AgentDns } from "./agent-dns.ts";
import { AgentL7 } from "../l7proxy/agent-l7.ts";
import { killProxyIn } from "../l7proxy/testing/topology.ts";
import { ADDR, CLIENT, DnsTopology, PROBE, ROOT } from "./testing/topology.ts";
import { waitForLine } from "../bpf/netns.ts";
import { capturingLogger, until } from "../testing/agent.ts";
import { Registry } from "prom-client";
import { HubbleMetrics } from "../observer/hubble-metrics.ts";
import { observeFlows } from "../../localcluster/hubble/cli.ts";
import type { HubbleFlow } from "../../flowapi/hubble/types.ts";
import { label, labelSetFrom } from "../../core/labels.ts";
import { decodeFqdnStateWithJournal } from "../../core/dns/cache-state.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { PolicyCompiler, policyKey } from "../../core/compiler.ts";
import type { Flow } from "../../flowapi/flow.ts";

const run = promisify(execFile);
const MEMBRANE = path.join(ROOT, "bin", "membrane");
const tag = `m5a${process.pid % 100000}`;
const node = `${tag}-node`;
const SERVERS = { allowed: "10.205.0.20", denied: "10.205.0.21", deep: "10.205.0.22" };
// Cilium's DNS example (examples/policies/l7/dns/dns.yaml): its names answer these outside addresses.
const CILIUM = { apex: "10.205.0.30", sub: "10.205.0.31", service1: "10.205.0.32", special: "10.205.0.33", other: "10.205.0.34", deep: "10.205.0.35" };
const NONSTANDARD_DNS_PORT = 5353;
const POD_ID = 1300;
const RESOLVER_ID = 2300;
const DNS_RULE = 11;
const FQDN_RULE = 12;
const PROXY_PORT = 10153;
const ZONE = {
  "api.allowed.test": [{ type: "A", data: SERVERS.allowed, ttl: 30 }],
  "evil.denied.test": [{ type: "A", data: SERVERS.denied, ttl: 30 }],
  "x.y.deep.test": [{ type: "A", data: SERVERS.deep, ttl: 30 }],
  "cilium.io": [{ type: "A", data: CILIUM.apex, ttl: 30 }],
  "sub.cilium.io": [{ type: "A", data: CILIUM.sub, ttl: 30 }],
  "service1.api.cilium.io": [{ type: "A", data: CILIUM.service1, ttl: 30 }],
  "special-x-service.api.cilium.io": [{ type: "A", data: CILIUM.special, ttl: 30 }],
  "other.cilium.io": [{ type: "A", data: CILIUM.other, ttl: 30 }],
  "a.b.cilium.io": [{ type: "A", data: CILIUM.deep, ttl: 30 }],
  // More than a UDP answer may carry (EDNS 1232 bytes): the resolver truncates it and the client asks again over TCP.
  "many.allowed.test": Array.from({ length: 100 }, (_, i) => ({ type: "A", data: `10.206.0.${i + 1}`, ttl: 30 })),
};

const topo = new DnsTopology(tag);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-dns-"));
const agentLines: Record<string, unknown>[] = [];
let pki: TestPki | undefined;
let server: DistributionServer | undefined;
let agent: NodeAgent | undefined;
let agentDns: AgentDns | undefined;
let port = 0;
const HUBBLE_SOCKET = path.join(stateDir, "hubble.sock");

const entry = (p: Omit<PolicyEntry, "subject" | "direction" | "verdict">): PolicyEntry => ({ subject: POD_ID, direction: "egress", verdict: "allow", ...p });
const dnsEntries = [
  entry({ peer: RESOLVER_ID, proto: PROTO_NUMBER.UDP, port: 53, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: DNS_RULE }),
  entry({ peer: RESOLVER_ID, proto: PROTO_NUMBER.TCP, port: 53, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: DNS_RULE }),
];
const TCP_8080 = [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }];

/** What the operator sends: the DNS entries, the DNS rules of their rule and the toFQDNs selectors. */
function state(generation: number, fqdnSelectors: NonNullable<SubjectPolicy["dns"]>["fqdnSelectors"]): NodeState {
  return {
    policies: [
      {
        subject: POD_ID,
        ingressEnforced: false,
        egressEnforced: true,
        entries: dnsEntries,
        dns: { dnsRules: [{ ruleId: DNS_RULE, rules: [{ matchPattern: "*.allowed.test" }, { matchPattern: "**.deep.test" }] }], fqdnSelectors },
      },
    ],
    ipcache: [
      { prefix: `${ADDR.pod}/32`, identity: POD_ID, node: ADDR.node, pod: "default/client" },
      { prefix: `${ADDR.resolver}/32`, identity: RESOLVER_ID },
    ],
    identities: [
      { id: POD_ID, labels: ["k8s:app=client"] },
      { id: RESOLVER_ID, labels: ["k8s:k8s-app=kube-dns"] },
    ],
    rules: [
      { id: DNS_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "fqdn", ruleIndex: 0, path: "spec.egress[0]" } },
      { id: FQDN_RULE, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "fqdn", ruleIndex: 1, path: "spec.egress[1]" } },
    ],
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/fqdn", uid: "u1", generation }],
  };
}
const SELECTORS = [
  { ruleId: FQDN_RULE, matchName: "api.allowed.test", ports: TCP_8080 },
  { ruleId: FQDN_RULE, matchPattern: "**.deep.test", ports: TCP_8080 },
];

function newAgent(): NodeAgent {
  return new NodeAgent({
    nodeName: node,
    operator: `127.0.0.1:${port}`,
    tls: { ca: pki!.read("ca.crt"), cert: pki!.read(`${node}.crt`), key: pki!.read(`${node}.key`) },
    datapath: topo.dp,
    cniSocket: path.join(stateDir, "agent.sock"),
    netns: topo.ns.host,
    nodeIP: ADDR.node,
    endpointsFile: path.join(stateDir, "endpoints.json"),
    hostLinks: { list: () => [{ ifname: `${tag}h`, ifindex: topo.hostIfindex }], remove: () => undefined },
    dns: (agentDns = new AgentDns({
      datapath: topo.dp,
      proxyAddress: ADDR.node,
      stateFile: path.join(stateDir, "fqdn-cache.json"),
      cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 5 },
      rejectCode: "refused",
      netns: topo.ns.host,
      log: pino({ level: "warn" }),
    })),
    // And the L7 proxy, as under the chart: toFQDNs with HTTP rules send the learned addresses' connections there.
    l7: new AgentL7({ datapath: topo.dp.redirect, stateDir, address: ADDR.node, bpfScope: topo.scope, launcher: ["nsenter", `--net=/var/run/netns/${topo.ns.host}`], log: pino({ level: "warn" }) }),
    // The agent's observer: the proxy's queries are its L7 flows (hubble observe reads them here).
    observer: { hubble: { socketPath: HUBBLE_SOCKET } },
    log: capturingLogger(agentLines),
    backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
  });
}

async function resolve(name: string, proto: "udp" | "tcp" = "udp", timeoutMs = 2000, dnsPort = 53): Promise<{ rcode: string; from: string; answers: { data: string }[] } | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", CLIENT, proto, ADDR.resolver, String(dnsPort), name, "A", String(timeoutMs)], { cwd: ROOT });
    return JSON.parse(stdout) as { rcode: string; from: string; answers: { data: string }[] };
  } catch {
    return undefined;
  }
}

async function connects(ip: string, port = 8080): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", ip, String(port), "1500"], { cwd: ROOT });
    return true;
  } catch {
    return false;
  }
}

const report = () => server?.reports().find((r) => r.node === node);
const ackedGeneration = () => report()?.acked?.policyGenerations[0]?.generation;

before(async () => {
  // No policy of the topology's own: the agent writes what the operator sends.
  await topo.setUp({ zone: ZONE, resolverPorts: [53, NONSTANDARD_DNS_PORT], resolverIdentity: RESOLVER_ID, policy: { subject: POD_ID, ingressEnforced: true, egressEnforced: true, entries: [] } });
  pki = await makePki([node]);
  server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
  port = await server.listen(0);
  server.publish(node, state(1, SELECTORS));
  agent = newAgent();
  await agent.start();
  const add = { op: "endpoint-add" as const, containerId: `${tag}-c`, namespace: "default", pod: "client", ifname: "eth0", netns: `/var/run/netns/${topo.ns.pod}`, hostIfname: `${tag}h`, hostIfindex: topo.hostIfindex, ips: [ADDR.pod] };
  assert.deepEqual(await callAgent(path.join(stateDir, "agent.sock"), add), { ok: true });
  await until("state 1 acknowledged", () => ackedGeneration() === 1, 20_000);
});

after(async () => {
  await agent?.stop();
  killProxyIn(stateDir);
  await server?.close();
  await topo.cleanup();
  pki?.remove();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test("the agent says in its hello that it runs the DNS proxy, and listens on the node address in the node's netns", async () => {
  assert.equal(report()?.dnsProxy, true);
  assert.equal(server!.answers().find((a) => a.node === node)?.dnsProxy, true);
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.host, "ss", "-lnu"]);
  assert.match(stdout, new RegExp(`${ADDR.node.replace(/\./g, "\\.")}:${PROXY_PORT}\\b`), "the UDP socket is the node netns's");
});

test("DNS rules from the stream decide queries; a toFQDNs name from the stream opens its learned address at once", async () => {
  assert.equal(await connects(SERVERS.allowed), false, "not reachable before the lookup");
  const a = await resolve("api.allowed.test");
  assert.equal(a?.rcode, "NOERROR");
  assert.equal(a?.from, `${ADDR.resolver}:53`, "the answer comes from the server asked");
  assert.deepEqual(a?.answers.map((r) => r.data), [SERVERS.allowed]);
  assert.equal(await connects(SERVERS.allowed), true, "reachable at once after the answer");
  const denied = await resolve("evil.denied.test");
  assert.equal(denied?.rcode, "REFUSED");
  assert.equal(await connects(SERVERS.denied), false);
  assert.equal((await resolve("x.y.deep.test", "tcp"))?.rcode, "NOERROR", "**.deep.test over TCP");
  assert.equal(await connects(SERVERS.deep), true);
  const file = path.join(stateDir, "fqdn-cache.json");
  const decoded = decodeFqdnStateWithJournal(fs.readFileSync(file, "utf8"), fs.existsSync(`${file}.journal`) ? fs.readFileSync(`${file}.journal`, "utf8") : "");
  assert.ok(decoded.ok);
  const saved = decoded.value;
  assert.ok(saved.identities.some((i) => i.ip === SERVERS.allowed && i.identity >= MIN_FQDN_IDENTITY), "persisted in the agent's state directory");
});

test("the proxy's queries are L7 flows of the agent's observer: the real hubble CLI shows the answer with its address and the refused query DROPPED, named by the rule; Hubble's dns metrics count them", async () => {
  const registry = new Registry();
  const metrics = new HubbleMetrics(registry);
  const unsubscribe = agent!.observer!.onEveryFlow(metrics.observe);
  const since = new Date(Date.now() - 1).toISOString();
  try {
    assert.equal((await resolve("api.allowed.test"))?.rcode, "NOERROR");
    assert.equal((await resolve("evil.denied.test"))?.rcode, "REFUSED");
    const observe = (...args: string[]): Promise<HubbleFlow[]> => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, ...args]);
    let dns: HubbleFlow[] = [];
    for (const end = Date.now() + 10_000; dns.length < 3 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) dns = await observe("--protocol", "dns");
    assert.deepEqual(
      dns.map((f) => [f.verdict, f.l7?.type, f.l7?.dns?.query, f.l7?.dns?.ips ?? [], f.l7?.dns?.rcode ?? 0]),
      [
        ["FORWARDED", "REQUEST", "api.allowed.test.", [], 0],
        ["FORWARDED", "RESPONSE", "api.allowed.test.", [SERVERS.allowed], 0],
        ["DROPPED", "REQUEST", "evil.denied.test.", [], 0],
      ],
    );
    const [request, answer, refused] = dns as [HubbleFlow, HubbleFlow, HubbleFlow];
    assert.deepEqual([request.source.pod_name, request.source.identity, request.destination.identity], ["client", POD_ID, RESOLVER_ID]);
    assert.ok(request.destination.labels?.includes("k8s:k8s-app=kube-dns"), "the server's identity from the ipcache");
    assert.deepEqual([answer.IP.source, answer.IP.destination, answer.l4?.UDP?.source_port], [ADDR.resolver, ADDR.pod, 53]);
    assert.ok(Number(answer.l7?.latency_ns) > 0);
    assert.equal(answer.l7?.dns?.ttl, 30, "the zone's TTL");
    assert.equal(refused.drop_reason_desc, "POLICY_DENIED");
    assert.deepEqual(refused.egress_denied_by?.map((p) => [p.name, p.labels.find((l) => l.startsWith("membrane:rule="))]), [["fqdn", "membrane:rule=spec.egress[0]"]]);
    assert.deepEqual((await observe("--type", "l7", "--verdict", "DROPPED")).map((f) => f.l7?.dns?.query), ["evil.denied.test."]);
    const text = await registry.metrics();
    const has = (line: string): void => assert.ok(text.includes(line), `${line}\n${text}`);
    has('hubble_dns_queries_total{rcode="",qtypes="A",ips_returned="0"} 1');
    has('hubble_dns_queries_total{rcode="Policy denied",qtypes="A",ips_returned="0"} 1');
    has('hubble_dns_responses_total{rcode="No Error",qtypes="A",ips_returned="1"} 1');
    has('hubble_flows_processed_total{protocol="DNS",type="L7",subtype="DNS",verdict="DROPPED"} 1');
  } finally {
    unsubscribe();
  }
});

test("flows to a learned address carry its name (destination_names): hubble observe --to-fqdn / --fqdn select them with Hubble's wildcards, and so does membrane observe", async () => {
  const since = new Date(Date.now() - 1).toISOString();
  assert.equal((await resolve("api.allowed.test"))?.rcode, "NOERROR");
  assert.equal((await resolve("x.y.deep.test"))?.rcode, "NOERROR");
  assert.equal(await connects(SERVERS.allowed), true);
  assert.equal(await connects(SERVERS.deep), true);
  const observe = (...args: string[]): Promise<HubbleFlow[]> => observeFlows(`unix://${HUBBLE_SOCKET}`, ["--since", since, ...args]);
  let allowed: HubbleFlow[] = [];
  for (const end = Date.now() + 10_000; allowed.length === 0 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) allowed = await observe("--to-fqdn", "api.allowed.test");
  assert.ok(allowed.length > 0, "the connection to api.allowed.test's address is selected by its name");
  assert.deepEqual(
    [...new Set(allowed.map((f) => JSON.stringify([f.IP.destination, f.l4?.TCP?.destination_port, f.destination_names, f.source.pod_name])))],
    [JSON.stringify([SERVERS.allowed, 8080, ["api.allowed.test"], "client"])],
  );
  assert.ok(allowed.some((f) => f.verdict === "FORWARDED" && f.egress_allowed_by?.some((p) => p.labels.includes("membrane:rule=spec.egress[1]"))), "the toFQDNs rule allowed it");
  const destinations = (flows: HubbleFlow[]): string[] => [...new Set(flows.map((f) => f.IP.destination))].sort();
  assert.deepEqual(destinations(await observe("--to-fqdn", "*.allowed.test")), [SERVERS.allowed], "* in a pattern");
  assert.deepEqual(destinations(await observe("--to-fqdn", "*.test", "--port", "8080")), [SERVERS.allowed, SERVERS.deep].sort(), "* spans labels (x.y.deep.test)");
  assert.deepEqual(destinations(await observe("--fqdn", "X.Y.DEEP.TEST.")), [SERVERS.deep], "either side, any case, trailing dot");
  assert.deepEqual(await observe("--to-fqdn", "allowed.test"), [], "the whole name, not a suffix");
  assert.ok((await observe("--from-fqdn", "*")).every((f) => (f.source_names ?? []).length > 0), "--from-fqdn looks at the source's names only");
  // Our own CLI, through the same API and filter.
  const { stdout } = await run(MEMBRANE, ["observe", "--server", `unix:${HUBBLE_SOCKET}`, "--since", since, "--to-fqdn", "*.deep.test", "-o", "json"]);
  const ours = stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Flow);
  assert.ok(ours.length > 0);
  assert.deepEqual([...new Set(ours.map((f) => JSON.stringify([f.destination.ip, f.destination.names])))], [JSON.stringify([SERVERS.deep, ["x.y.deep.test"]])]);
});

test("a new state (delta) and a new snapshot keep the learned entries and addresses", async () => {
  // A delta: another DNS entry value (rule id) for the same keys.
  const s2 = state(2, SELECTORS);
  server!.publish(node, s2);
  await until("state 2 acknowledged", () => ackedGeneration() === 2, 20_000);
  assert.equal(await connects(SERVERS.allowed), true, "still allowed after a delta");
  // A snapshot: a restarted agent with no record of what it applied gets one and sweeps the maps.
  await agent!.stop();
  assert.equal(await connects(SERVERS.allowed), true, "learned addresses stay reachable while the agent is away");
  assert.equal(await resolve("api.allowed.test", "udp", 1000), undefined, "a query while the proxy is down fails, never bypasses");
  agent = newAgent();
  await agent.start();
  const snapshots = (): number => agentLines.filter((l) => l.msg === "state applied" && l.kind === "snapshot").length;
  const before = snapshots();
  await until("a snapshot after the restart", () => snapshots() > before, 20_000);
  assert.equal(await connects(SERVERS.allowed), true, "the snapshot's sweep kept the learned entry and ipcache address");
  assert.equal(await connects(SERVERS.deep), true);
  assert.equal((await resolve("api.allowed.test"))?.rcode, "NOERROR", "the client's retry succeeds once the agent is back");
});

test("a toFQDNs selector removed by the operator closes its learned address; the other stays open", async () => {
  server!.publish(node, state(3, [SELECTORS[1]!]));
  await until("state 3 acknowledged", () => ackedGeneration() === 3, 20_000);
  topo.dp.clearConntrack();
  assert.equal(await connects(SERVERS.allowed), false, "api.allowed.test is no longer selected");
  assert.equal(await connects(SERVERS.deep), true, "**.deep.test still is");
});

/** Cilium's dns.yaml as documented, its DNS port `dnsPort` ("53" there). */
function ciliumDnsExample(dnsPort: string): unknown {
  return {
    endpointSelector: { matchLabels: { "any:org": "alliance" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: dnsPort, protocol: "ANY" }], rules: { dns: [{ matchName: "cilium.io" }, { matchPattern: "*.cilium.io" }, { matchPattern: "*.api.cilium.io" }] } }],
      },
      {
        toFQDNs: [{ matchName: "cilium.io" }, { matchName: "sub.cilium.io" }, { matchName: "service1.api.cilium.io" }, { matchPattern: "special*service.api.cilium.io" }],
        toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }],
      },
    ],
  };
}

/** What the operator's compiler makes of `spec` as the CNP default/tofqdn-dns-visibility, on this test's client and resolver identities (and a CIDR identity per prefix of `cidrs`, in the ipcache). */
function compiledState(generation: number, spec: unknown, cidrs: readonly string[] = []): NodeState {
  const c = new PolicyCompiler();
  const cidrIds = cidrs.map((prefix, i) => ({ prefix, identity: MIN_LOCAL_IDENTITY + 100 + i }));
  for (const x of cidrIds) c.upsertIdentity(x.identity, cidrLabels(x.prefix));
  c.upsertIdentity(POD_ID, labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "default"), label("k8s", "org", "alliance")]));
  c.upsertIdentity(RESOLVER_ID, labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "kube-system"), label("k8s", "k8s-app", "kube-dns")]));
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "tofqdn-dns-visibility", namespace: "default", uid: "u1", generation }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  c.upsertPolicy(policyKey({ kind: "CiliumNetworkPolicy", namespace: "default", name: "tofqdn-dns-visibility" }), r.value);
  const subject = c.snapshot(POD_ID);
  const ruleIds = [...new Set([...subject.entries.map((e) => e.ruleId), ...(subject.dns?.dnsRules ?? []).map((d) => d.ruleId), ...(subject.dns?.fqdnSelectors ?? []).map((f) => f.ruleId)])];
  const base = state(generation, []);
  return { ...base, ipcache: [...base.ipcache, ...cidrIds], policies: [subject], rules: ruleIds.map((id) => ({ id, origin: c.ruleOrigin(id)! })), policyGenerations: [{ key: "CiliumNetworkPolicy/default/fqdn", uid: "u1", generation }] };
}

test("Cilium's DNS example (dns.yaml) compiled by the operator's compiler, on its documented port 53 and on the non-standard port 5353: the DNS rules decide on that port only, the proxy asks the server on the port the pod asked, and exactly the toFQDNs names connect", async () => {
  // The outside servers answer on port 80, the example's.
  const web = topo.fx.spawn(topo.ns.out, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "80"]);
  await waitForLine(web, /^listening/, 20_000);
  topo.dp.clearConntrack();
  for (const [generation, dnsPort, otherPort] of [[20, 53, NONSTANDARD_DNS_PORT], [21, NONSTANDARD_DNS_PORT, 53]] as const) {
    const s = compiledState(generation, ciliumDnsExample(String(dnsPort)));
    const proxied = s.policies[0]!.entries.filter((e) => e.proxyPort !== 0);
    assert.deepEqual([...new Set(proxied.map((e) => e.port))], [dnsPort], "the compiler redirects the DNS rules' port");
    server!.publish(node, s);
    await until(`state ${generation} acknowledged`, () => ackedGeneration() === generation, 20_000);
    const ask = (name: string, proto: "udp" | "tcp" = "udp") => resolve(name, proto, 2000, dnsPort);
    for (const [name, ip] of [["cilium.io", CILIUM.apex], ["sub.cilium.io", CILIUM.sub], ["service1.api.cilium.io", CILIUM.service1], ["special-x-service.api.cilium.io", CILIUM.special]] as const) {
      const a = await ask(name, name === "sub.cilium.io" ? "tcp" : "udp");
      assert.equal(a?.rcode, "NOERROR", `${name} on port ${dnsPort}`);
      assert.equal(a?.from, `${ADDR.resolver}:${dnsPort}`, "the answer comes from the server and port the pod asked");
      assert.equal(await connects(ip, 80), true, `${name} (toFQDNs) connects on port 80 at once`);
    }
    assert.equal((await ask("other.cilium.io"))?.rcode, "NOERROR", "*.cilium.io lets other.cilium.io resolve");
    assert.equal(await connects(CILIUM.other, 80), false, "but no toFQDNs selects it");
    assert.equal((await ask("a.b.cilium.io"))?.rcode, "REFUSED", "* stays inside one label");
    assert.equal((await ask("api.allowed.test"))?.rcode, "REFUSED", "a name outside the DNS rules");
    assert.equal(await resolve("cilium.io", "udp", 1000, otherPort), undefined, `port ${otherPort} is not allowed at all`);
    assert.match(topo.resolverLog, new RegExp(`^query udp cilium\\.io ${dnsPort}$`, "m"), `the proxy asked the server on port ${dnsPort}`);
    assert.doesNotMatch(topo.resolverLog, new RegExp(`^query udp cilium\\.io ${otherPort}$`, "m"), "and only there");
    topo.resolverLog = "";
  }
});

test("the DNS rules of two toPorts entries stay apart (issue #15): port 53 allows *.allowed.test and port 5353 cilium.io, so cilium.io on port 53 and api.allowed.test on port 5353 are REFUSED by the proxy", async () => {
  const spec = {
    endpointSelector: { matchLabels: { "any:org": "alliance" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [
          { ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.allowed.test" }] } },
          { ports: [{ port: String(NONSTANDARD_DNS_PORT), protocol: "UDP" }], rules: { dns: [{ matchName: "cilium.io" }] } },
        ],
      },
    ],
  };
  const s = compiledState(30, spec);
  server!.publish(node, s);
  await until("state 30 acknowledged", () => ackedGeneration() === 30, 20_000);
  topo.resolverLog = "";
  const ask = (name: string, dnsPort: number, proto: "udp" | "tcp" = "udp") => resolve(name, proto, 2000, dnsPort);
  assert.equal((await ask("api.allowed.test", 53))?.rcode, "NOERROR", "port 53's own rule");
  assert.equal((await ask("api.allowed.test", 53, "tcp"))?.rcode, "NOERROR", "port 53 over TCP (protocol ANY)");
  assert.equal((await ask("cilium.io", NONSTANDARD_DNS_PORT))?.rcode, "NOERROR", "port 5353's own rule");
  assert.equal((await ask("cilium.io", 53))?.rcode, "REFUSED", "port 5353's rule does not open port 53");
  assert.equal((await ask("api.allowed.test", NONSTANDARD_DNS_PORT))?.rcode, "REFUSED", "port 53's rule does not open port 5353");
  assert.doesNotMatch(topo.resolverLog, /^query udp cilium\.io 53$/m, "the refused query never reached the server");
  assert.doesNotMatch(topo.resolverLog, new RegExp(`^query udp api\\.allowed\\.test ${NONSTANDARD_DNS_PORT}$`, "m"));
});

test("toFQDNs with HTTP rules of their own (Cilium's L7-on-FQDN, issue #15/#16): curl's own lookup goes through the DNS proxy, its first connection to the learned address goes through the L7 proxy at once, /public is answered and /private gets 403; the rule's plain port connects plainly", async () => {
  const plain = topo.fx.spawn(topo.ns.out, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8081"]);
  const web = topo.fx.spawn(topo.ns.out, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), "0.0.0.0", "8082"]);
  let webLog = "";
  web.stdout?.on("data", (d: Buffer) => (webLog += d.toString()));
  await Promise.all([waitForLine(plain, /^listening/, 20_000), waitForLine(web, /^listening/, 20_000)]);
  const spec = {
    endpointSelector: { matchLabels: { "any:org": "alliance" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }],
      },
      { toFQDNs: [{ matchName: "cilium.io" }], toPorts: [{ ports: [{ port: "8081", protocol: "TCP" }] }, { ports: [{ port: "8082", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/public" }] } }] },
    ],
  };
  const s = compiledState(31, spec);
  const proxyPort = s.policies[0]!.dns?.fqdnSelectors[0]?.ports.find((p) => p.port === 8082)?.proxyPort;
  assert.ok(proxyPort, "the compiler gives the HTTP entry's port a proxy port for the learned addresses");
  server!.publish(node, s);
  await until("state 31 acknowledged", () => ackedGeneration() === 31, 20_000);
  await until("the L7 proxy serves the learned addresses' port", () => agent?.status().l7Proxy?.servedPorts.includes(proxyPort), 30_000);
  topo.dp.clearConntrack();
  // curl resolves cilium.io itself through the pod's resolver (ip netns exec binds this file over /etc/resolv.conf).
  const etc = path.join("/etc/netns", topo.ns.pod);
  fs.mkdirSync(etc, { recursive: true });
  fs.writeFileSync(path.join(etc, "resolv.conf"), `nameserver ${ADDR.resolver}\n`);
  const curl = async (p: string): Promise<{ status: number; body: string } | undefined> => {
    try {
      const { stdout } = await run("ip", ["netns", "exec", topo.ns.pod, "curl", "-4", "-sS", "--max-time", "4", "-w", "\n@@%{http_code}", `http://cilium.io:8082${p}`]);
      const at = stdout.lastIndexOf("\n@@");
      return { status: Number(stdout.slice(at + 3)), body: stdout.slice(0, at) };
    } catch {
      return undefined;
    }
  };
  try {
    const allowed = await curl("/public");
    assert.deepEqual([allowed?.status, allowed?.body], [200, "deathstar: GET /public\n"], "the first connection after the answer goes through");
    const denied = await curl("/private");
    assert.deepEqual([denied?.status, denied?.body], [403, "Access denied"]);
    assert.doesNotMatch(webLog, /private/, "the denied request never reached the server");
    assert.match(webLog, new RegExp(`request GET /public ${ADDR.uplink.replaceAll(".", "\\.")}`), "the L7 proxy's upstream connection brought the allowed one");
  } finally {
    fs.rmSync(etc, { recursive: true, force: true });
  }
  assert.equal(await connects(CILIUM.apex, 8081), true, "the plain port is allowed as before");
  assert.equal(await connects(CILIUM.other, 8082), false, "a name no toFQDNs selects stays closed on the HTTP port");
});

test("a truncated UDP answer's retry over TCP goes through the proxy under the same rules (issue #15): the pod's own resolver (c-ares) gets all 100 addresses of a name too large for UDP", async () => {
  const spec = {
    endpointSelector: { matchLabels: { "any:org": "alliance" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.allowed.test" }] } }],
      },
    ],
  };
  server!.publish(node, compiledState(32, spec));
  await until("state 32 acknowledged", () => ackedGeneration() === 32, 20_000);
  topo.resolverLog = "";
  // Node's resolver (c-ares), as a pod's program resolves: it retries over TCP by itself on a truncated answer.
  const lookup = (name: string) =>
    run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "-e", `const r = new (require("node:dns").promises.Resolver)({ timeout: 3000, tries: 1 }); r.setServers(["${ADDR.resolver}"]); r.resolve4(${JSON.stringify(name)}).then((a) => console.log(JSON.stringify(a)), (e) => console.log(JSON.stringify(e.code)))`]).then((r) => JSON.parse(r.stdout) as string[] | string);
  const many = await lookup("many.allowed.test");
  assert.ok(Array.isArray(many), `an answer: ${JSON.stringify(many)}`);
  assert.equal(many.length, 100);
  assert.match(topo.resolverLog, /^truncated many\.allowed\.test \d+$/m, "the UDP answer was truncated");
  assert.match(topo.resolverLog, /^query tcp many\.allowed\.test 53$/m, "and the retry came over TCP, through the proxy");
  assert.equal(await lookup("many.cilium.io"), "EREFUSED", "a name outside the rules is refused");
  assert.doesNotMatch(topo.resolverLog, /many\.cilium\.io/, "and never reaches the server");
});

test("a learned address is a world peer (issue #21/#15): toEntities [world] reaches an address the DNS proxy learned for a name no toFQDNs selects, and a world deny on a port wins over a toFQDNs allow of it", async () => {
  const servers = [8084, 8085].map((p) => topo.fx.spawn(topo.ns.out, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(p)]));
  await Promise.all(servers.map((x) => waitForLine(x, /^listening/, 20_000)));
  const spec = (worldDeny: boolean) => ({
    endpointSelector: { matchLabels: { "any:org": "alliance" } },
    egress: [
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.cilium.io" }, { matchName: "cilium.io" }] } }],
      },
      { toFQDNs: [{ matchName: "cilium.io" }], toPorts: [{ ports: [{ port: "8084", protocol: "TCP" }] }] },
      { toEntities: ["world"], toPorts: [{ ports: [{ port: "8080", protocol: "TCP" }] }] },
      // A CIDR rule gives its prefix's identity entries of its own: a learned address inside gets them too.
      { toCIDR: ["10.205.0.0/24"], toPorts: [{ ports: [{ port: "8085", protocol: "TCP" }] }] },
    ],
    ...(worldDeny ? { egressDeny: [{ toEntities: ["world"], toPorts: [{ ports: [{ port: "8084", protocol: "TCP" }] }] }] } : {}),
  });
  const CIDRS = ["10.205.0.0/24"];
  server!.publish(node, compiledState(40, spec(false), CIDRS));
  await until("state 40 acknowledged", () => ackedGeneration() === 40, 20_000);
  topo.dp.clearConntrack();
  assert.equal(await connects(CILIUM.deep, 8080), true, "an address nobody asked for is the world's (the world class)");
  for (const name of ["cilium.io", "other.cilium.io"]) assert.equal((await resolve(name))?.rcode, "NOERROR", name);
  for (const ip of [CILIUM.other, CILIUM.apex]) assert.ok((agentDns?.service.fqdn.identity(ip) ?? 0) >= MIN_FQDN_IDENTITY, `${ip} has a learned identity`);
  assert.equal(await connects(CILIUM.other, 8080), true, "toEntities [world] reaches the address learned for other.cilium.io");
  assert.equal(await connects(CILIUM.other, 8084), false, "which no toFQDNs selects on 8084");
  assert.equal(await connects(CILIUM.apex, 8084), true, "cilium.io's toFQDNs allow");
  assert.equal(await connects(CILIUM.apex, 8080), true, "and the world's, for the same learned address");
  assert.equal(await connects(CILIUM.other, 8085), true, "toCIDR 10.205.0.0/24 reaches a learned address inside it");
  const s41 = compiledState(41, spec(true), CIDRS);
  server!.publish(node, s41);
  await until("state 41 acknowledged", () => ackedGeneration() === 41, 20_000);
  topo.dp.clearConntrack();
  assert.equal(await connects(CILIUM.apex, 8084), false, "the world deny on 8084 wins over cilium.io's toFQDNs allow");
  // Hubble's policy_match_type of such flows: the learned address's own key (the agent's), or the world class's.
  const p41 = s41.policies[0]!;
  const ruleOf = (verdict: string, port: number) => p41.entries.find((e) => e.peer === WORLD_CLASS_PEER && e.verdict === verdict && e.port === port)!.ruleId;
  const match = agent!.enrichLookups().policyMatch!;
  const apex = agentDns!.service.fqdn.identity(CILIUM.apex)!;
  const other = agentDns!.service.fqdn.identity(CILIUM.other)!;
  assert.equal(match(ruleOf("deny", 8084), POD_ID, "egress", apex, 6, 8084), "L3-L4", "the world deny's key the agent wrote for cilium.io's address");
  assert.equal(match(ruleOf("allow", 8080), POD_ID, "egress", apex, 6, 8080), "L3-L4", "the world allow's, merged with toFQDNs");
  assert.equal(match(ruleOf("allow", 8080), POD_ID, "egress", other, 6, 8080), "L3-L4", "the world class's key, for other.cilium.io's address");
  const cidrRule = p41.entries.find((e) => e.peer >= MIN_LOCAL_IDENTITY && e.port === 8085)!.ruleId;
  assert.equal(match(cidrRule, POD_ID, "egress", other, 6, 8085), "L3-L4", "the CIDR rule's key the agent copied for the learned address");
  assert.equal(await connects(CILIUM.apex, 8080), true, "the world allow on 8080 stays");
  assert.equal((await resolve("cilium.io"))?.rcode, "NOERROR", "asked again");
  assert.equal(await connects(CILIUM.apex, 8084), false, "and still denied after a new answer");
});
