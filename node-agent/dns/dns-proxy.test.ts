// Real packets: a pod netns whose DNS the datapath steers to the node's DNS proxy, a resolver and servers in an "outside" netns.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { PROTO_NUMBER } from "../../core/model.ts";
import { MIN_FQDN_IDENTITY } from "../../core/identity.ts";
import type { VerdictEvent } from "../bpf/layout.ts";
import type { DnsFlow } from "./proxy.ts";
import { decodeFqdnStateWithJournal, encodeFqdnState, type FqdnCacheState } from "../../core/dns/cache-state.ts";
import { pino } from "pino";
import { ServiceTranslator } from "../services/translator.ts";
import { ADDR, CLIENT, DnsTopology, RESOLVER_IDENTITY as RESOLVER_ID, ROOT, podDnsPolicy } from "./testing/topology.ts";

const run = promisify(execFile);

const tag = `m5d${process.pid % 100000}`;
const SERVERS = { allowed: "10.205.0.10", other: "10.205.0.11", denied: "10.205.0.12", cnameEnd: "10.205.0.13", shared: "10.205.0.14", alt: "10.205.0.15" };
const DNS_RULE = 7;
const FQDN_RULE = 8;
const PROXY_PORT = 10053;

const ZONE = {
  "api.allowed.test": [{ type: "A", data: SERVERS.allowed, ttl: 30 }],
  "other.allowed.test": [{ type: "A", data: SERVERS.other, ttl: 30 }],
  "evil.denied.test": [{ type: "A", data: SERVERS.denied, ttl: 30 }],
  "www.chain.test": [{ type: "CNAME", data: "edge.cdn.test", ttl: 30 }],
  "edge.cdn.test": [{ type: "A", data: SERVERS.cnameEnd, ttl: 30 }],
  "a.b.deep.test": [{ type: "A", data: SERVERS.alt, ttl: 30 }],
  "deep.test": [{ type: "A", data: SERVERS.shared, ttl: 30 }],
  "one.shared.test": [{ type: "A", data: SERVERS.shared, ttl: 30 }],
};

const topo = new DnsTopology(tag);
const flows: DnsFlow[] = [];
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-dns-"));

const POLICY = podDnsPolicy([{ port: 53, protos: ["UDP", "TCP"], proxyPort: PROXY_PORT, ruleId: DNS_RULE }]);
// DNS rules: what the pod may resolve. toFQDNs: what it may then connect to (TCP 8080).
const DNS_RULES = [
  { ruleId: DNS_RULE, index: 0, matchName: "api.allowed.test" },
  { ruleId: DNS_RULE, index: 1, matchPattern: "*.allowed.test" },
  { ruleId: DNS_RULE, index: 2, matchName: "www.chain.test" },
  { ruleId: DNS_RULE, index: 3, matchPattern: "**.deep.test" },
  { ruleId: DNS_RULE, index: 4, matchName: "deep.test" },
  { ruleId: DNS_RULE, index: 5, matchName: "one.shared.test" },
];
const FQDN_SELECTORS = [
  { ruleId: FQDN_RULE, matchName: "api.allowed.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] },
  { ruleId: FQDN_RULE, matchName: "edge.cdn.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] },
  { ruleId: FQDN_RULE, matchPattern: "**.deep.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] },
  { ruleId: FQDN_RULE, matchName: "one.shared.test", ports: [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }] },
];

interface Answer {
  rcode: string;
  from: string;
  answers: { name: string; type: string; data: string }[];
}

async function resolve(name: string, proto: "udp" | "tcp" = "udp", timeoutMs = 2000, server: string = ADDR.resolver): Promise<Answer | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", topo.ns.pod, process.execPath, "--import", "tsx", CLIENT, proto, server, "53", name, "A", String(timeoutMs)], { cwd: ROOT });
    return JSON.parse(stdout) as Answer;
  } catch {
    return undefined;
  }
}

const connects = (ip: string, port = 8080): Promise<boolean> => topo.connects(ip, port);

async function startNodeDns(extra: Record<string, unknown> = {}): Promise<void> {
  await topo.startNodeDns(
    {
      stateFile: path.join(stateDir, "fqdn-cache.json"),
      cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 1 },
      policy: POLICY,
      dnsRules: [[DNS_RULE, DNS_RULES]],
      fqdnSelectors: FQDN_SELECTORS,
      ...extra,
    },
    (l) => {
      if (l.startsWith("flow ")) flows.push(JSON.parse(l.slice(5)) as DnsFlow);
    },
  );
}

before(async () => {
  await topo.setUp({ zone: ZONE, resolverPorts: [53], resolverIdentity: RESOLVER_ID, policy: POLICY });
  drain = topo.dp.onEvents((e) => events.push(e));
  await startNodeDns();
});

after(async () => {
  await topo.cleanup();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

/** What the node's DNS service has on disk: its snapshot with the journal applied. */
function stateOnDisk(): FqdnCacheState {
  const file = path.join(stateDir, "fqdn-cache.json");
  const journal = fs.existsSync(`${file}.journal`) ? fs.readFileSync(`${file}.journal`, "utf8") : "";
  const state = decodeFqdnStateWithJournal(fs.readFileSync(file, "utf8"), journal);
  assert.ok(state.ok, `the state reads back: ${JSON.stringify(state)}`);
  return state.value;
}

const lastFlow = (name: string): DnsFlow | undefined => [...flows].reverse().find((f) => f.query.replace(/\.$/, "") === name);

test("an allowed name resolves through the proxy, the answer comes from the server asked, and its address is then reachable", async () => {
  assert.equal(await connects(SERVERS.allowed), false, "not reachable before the lookup");
  const a = await resolve("api.allowed.test");
  assert.ok(a, "an answer");
  assert.equal(a.rcode, "NOERROR");
  assert.equal(a.from, `${ADDR.resolver}:53`, "the pod sees the server it asked answer");
  assert.deepEqual(a.answers.map((r) => r.data), [SERVERS.allowed]);
  assert.equal(await connects(SERVERS.allowed), true, "reachable at once after the answer");
  const f = lastFlow("api.allowed.test");
  assert.equal(f?.verdict, "allowed");
  assert.equal(f?.rule?.index, 0);
  assert.equal(f?.ruleId, DNS_RULE);
  assert.deepEqual(f?.addresses, [SERVERS.allowed]);
  const id = stateOnDisk();
  assert.ok(id.identities.some((i) => i.ip === SERVERS.allowed && i.identity >= MIN_FQDN_IDENTITY), "a node-local FQDN identity, persisted");
});

test("a name the DNS rules allow but no toFQDNs selects resolves, and its address stays dropped", async () => {
  const a = await resolve("other.allowed.test");
  assert.equal(a?.rcode, "NOERROR");
  assert.equal(lastFlow("other.allowed.test")?.rule?.index, 1, "matched by the pattern *.allowed.test");
  assert.equal(await connects(SERVERS.other), false);
});

test("a denied name is answered REFUSED by the proxy, never reaches the resolver, and its address is dropped", async () => {
  const a = await resolve("evil.denied.test");
  assert.equal(a?.rcode, "REFUSED");
  assert.equal(a?.from, `${ADDR.resolver}:53`);
  assert.deepEqual(a?.answers, []);
  const f = lastFlow("evil.denied.test");
  assert.equal(f?.verdict, "denied");
  assert.equal(f?.rule, undefined);
  assert.equal(await connects(SERVERS.denied), false);
  assert.match(topo.resolverLog, /query udp api\.allowed\.test/, "allowed queries reach the resolver");
  assert.doesNotMatch(topo.resolverLog, /evil\.denied\.test/, "the denied one never does");
  drain();
  assert.ok(events.some((e) => e.verdict === "dropped" && e.dst === SERVERS.denied && e.dport === 8080), "the drop is reported");
});

test("DNS over TCP goes through the proxy the same way", async () => {
  const a = await resolve("api.allowed.test", "tcp");
  assert.equal(a?.rcode, "NOERROR");
  assert.equal(a?.from, `${ADDR.resolver}:53`);
  assert.deepEqual(a?.answers.map((r) => r.data), [SERVERS.allowed]);
  assert.equal(lastFlow("api.allowed.test")?.protocol, "tcp");
  assert.equal((await resolve("evil.denied.test", "tcp"))?.rcode, "REFUSED");
});

test("a query to the cluster DNS Service's ClusterIP, translated at the pod's socket, goes through the proxy and is answered from the ClusterIP", async () => {
  const KUBE_DNS = "10.96.0.10";
  const translator = new ServiceTranslator({ log: pino({ level: "warn" }), scope: `test-${tag}-svc` });
  try {
    translator.start();
    translator.setScope([fs.statSync(`/var/run/netns/${topo.ns.pod}`).ino]);
    const backends = [{ address: ADDR.resolver, port: 53 }];
    translator.set((["UDP", "TCP"] as const).map((protocol) => ({ namespace: "kube-system", service: "kube-dns", portName: "dns", address: KUBE_DNS, port: 53, protocol, backends })));
    flows.length = 0;
    const a = await resolve("api.allowed.test", "udp", 2000, KUBE_DNS);
    assert.equal(a?.rcode, "NOERROR", "answered");
    assert.equal(a.from, `${KUBE_DNS}:53`, "from the ClusterIP the pod asked");
    assert.deepEqual(a.answers.map((r) => r.data), [SERVERS.allowed]);
    assert.equal(lastFlow("api.allowed.test")?.server.ip, ADDR.resolver, "the proxy saw (and asked) the backend");
    const denied = await resolve("evil.denied.test", "udp", 2000, KUBE_DNS);
    assert.deepEqual([denied?.rcode, denied?.from], ["REFUSED", `${KUBE_DNS}:53`], "the DNS rules still decide");
    const tcp = await resolve("api.allowed.test", "tcp", 2000, KUBE_DNS);
    assert.deepEqual([tcp?.rcode, tcp?.from], ["NOERROR", `${KUBE_DNS}:53`], "over TCP too");
  } finally {
    translator.remove();
  }
});

test("a CNAME chain: the address is learned for the target name a toFQDNs selects", async () => {
  const a = await resolve("www.chain.test");
  assert.equal(a?.rcode, "NOERROR");
  assert.deepEqual(a?.answers.map((r) => r.type), ["CNAME", "A"]);
  assert.equal(await connects(SERVERS.cnameEnd), true);
});

test("**. matches subdomains, not the bare name; an address answered for two names carries both", async () => {
  assert.equal((await resolve("a.b.deep.test"))?.rcode, "NOERROR");
  assert.equal(await connects(SERVERS.alt), true, "a.b.deep.test is selected by **.deep.test");
  // deep.test itself is allowed by its own DNS rule, but **.deep.test does not select it.
  assert.equal((await resolve("deep.test"))?.rcode, "NOERROR");
  assert.equal(await connects(SERVERS.shared), false, "the bare suffix is not selected");
  // The same address answered for one.shared.test, which a selector names: now it is allowed.
  assert.equal((await resolve("one.shared.test"))?.rcode, "NOERROR");
  assert.equal(await connects(SERVERS.shared), true);
  const state = stateOnDisk();
  assert.deepEqual(state.entries.filter((e) => e.ip === SERVERS.shared).map((e) => e.name).sort(), ["deep.test.", "one.shared.test."]);
});

test("proxy down: a query fails (never bypasses); after a restart the cache is restored and the retry succeeds", async () => {
  await topo.stopNodeDns("SIGKILL");
  assert.equal(await resolve("api.allowed.test", "udp", 1000), undefined, "no answer while the proxy is down");
  assert.equal(await resolve("evil.denied.test", "udp", 1000), undefined, "nor for a denied name");
  assert.equal(await connects(SERVERS.allowed), true, "learned addresses stay reachable while the agent is away");
  await startNodeDns();
  assert.equal(await connects(SERVERS.cnameEnd), true, "restored from the state file");
  assert.equal((await resolve("api.allowed.test"))?.rcode, "NOERROR", "the client's retry succeeds");
  assert.equal((await resolve("evil.denied.test"))?.rcode, "REFUSED");
});

test("the reject code can be NXDOMAIN (Cilium's --tofqdns-dns-reject-response-code)", async () => {
  await topo.stopNodeDns();
  await startNodeDns({ rejectCode: "nameError" });
  assert.equal((await resolve("evil.denied.test"))?.rcode, "NXDOMAIN");
});

test("TTL expiry removes access after the grace period, not before", async () => {
  await topo.stopNodeDns();
  // Every learned deadline moved to t0 (as if the TTLs ran out then), with an 8 s grace period. The GC
  // runs when the test says, as of the time it names: how long the start takes under load changes nothing.
  const file = path.join(stateDir, "fqdn-cache.json");
  const state = stateOnDisk();
  const t0 = Date.now();
  fs.writeFileSync(file, encodeFqdnState(state.entries.map((e) => ({ ...e, expiresAt: t0 })), state.identities, state.seq));
  fs.rmSync(`${file}.journal`, { force: true });
  await startNodeDns({ cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 8 }, manualGc: true });
  assert.equal(await connects(SERVERS.allowed), true, "expired, restored, not yet collected: still allowed");
  topo.dp.clearConntrack(); // no connection keeps an address in use
  assert.deepEqual(await topo.gcAt(t0 + 8000 - 1), [], "1 ms before the grace period ends nothing is forgotten");
  assert.equal(await connects(SERVERS.allowed), true, "inside the grace period: still allowed");
  topo.dp.clearConntrack();
  const removed = await topo.gcAt(t0 + 8000 + 1);
  assert.ok(removed.includes(SERVERS.allowed), `after the grace period the address is forgotten (removed ${JSON.stringify(removed)})`);
  assert.deepEqual([...new Set(removed)].sort(), [...new Set(state.entries.map((e) => e.ip))].sort(), "every expired address, and only those");
  assert.equal(await connects(SERVERS.allowed), false, "after the grace period: dropped");
});
