// Hubble's Observer API of the agent, asked by the real `hubble` CLI (built from the pinned Cilium module) and by grpc-js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { FlowBuffer } from "./buffer.ts";
import { HubbleServer, MAX_FOLLOW_BACKLOG } from "./hubble-server.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { HubbleClient } from "../../flowapi/hubble/client.ts";
import { hubbleBinary, jsonFlows, jsonLostEvents, runHubble, type HubbleRun } from "../../localcluster/hubble/cli.ts";
import type { HubbleFlow } from "../../flowapi/hubble/types.ts";
import { makePki } from "../../kube/testing/pki.ts";
import { httpFlows } from "../l7proxy/http-flows.ts";
import { DEFAULT_HTTP_REDACTION } from "../../core/l7/redaction.ts";
import type { HttpFlow } from "../l7proxy/http-proxy.ts";
import { dnsFlows } from "../dns/dns-flows.ts";
import type { DnsFlow } from "../dns/proxy.ts";
import type { EnrichLookups } from "./enrich.ts";

const log = pino({ level: "silent" });

interface Running {
  buffer: FlowBuffer;
  hubble: HubbleServer;
  server: string;
  socket: string;
}

async function start(t: test.TestContext): Promise<Running> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-hubble-"));
  const buffer = new FlowBuffer({ capacity: 100 });
  const now = Date.now();
  buffer.push(flow({ time: new Date(now - 4000).toISOString() }));
  buffer.push(
    dropFlow({
      time: new Date(now - 3000).toISOString(),
      source: endpoint({ pod: "xwing", ip: "10.0.0.7", identity: 301, labels: ["k8s:class=xwing", "k8s:io.kubernetes.pod.namespace=default"], workloads: [{ kind: "Deployment", name: "xwing" }] }),
      destination: endpoint({
        pod: "deathstar-1",
        ip: "10.0.1.9",
        port: 80,
        identity: 302,
        labels: ["k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default"],
        workloads: [{ kind: "StatefulSet", name: "deathstar" }],
      }),
      dropReason: "policy denied",
      decidedBy: { kind: "rule", policyKind: "CiliumNetworkPolicy", namespace: "default", name: "deny-xwing", rule: "spec.ingressDeny[0]" },
    }),
  );
  buffer.push(dropFlow({ time: new Date(now - 2000).toISOString(), protocol: "UDP", direction: "egress" }));
  const socket = path.join(dir, "hubble.sock");
  const server = new HubbleServer(buffer, "node-a", log);
  await server.start({ socketPath: socket });
  t.after(async () => {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { buffer, hubble: server, server: `unix://${socket}`, socket };
}

const hubble = (...args: string[]): Promise<HubbleRun> => runHubble(args);

test("hubble status and hubble list nodes read the agent's ring", async (t) => {
  const r = await start(t);
  const status = await hubble("status", "--server", r.server);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /Healthcheck \(via unix:\/\/.*\): Ok/);
  assert.match(status.stdout, /Current\/Max Flows: 3\/100/);
  const nodes = await hubble("list", "nodes", "--server", r.server, "-o", "json");
  assert.equal(nodes.code, 0, nodes.stderr);
  const list = JSON.parse(nodes.stdout) as { name: string; state: string; num_flows: number }[];
  assert.deepEqual(
    list.map((n) => [n.name, n.state, Number(n.num_flows)]), // uint64 is a string in protojson
    [["node-a", "NODE_CONNECTED", 3]],
  );
});

test("hubble observe --last prints the ring in Hubble's shape, with Cilium's drop reasons and the deciding policy", async (t) => {
  const r = await start(t);
  const all = await hubble("observe", "--server", r.server, "--last", "20", "-o", "jsonpb");
  assert.equal(all.code, 0, all.stderr);
  const flows = jsonFlows(all.stdout);
  assert.equal(flows.length, 3);
  const [allowed, denied, defaultDeny] = flows as [HubbleFlow, HubbleFlow, HubbleFlow];
  assert.equal(allowed.verdict, "FORWARDED");
  assert.equal(allowed.traffic_direction, "INGRESS");
  assert.deepEqual(allowed.ingress_allowed_by?.map((p) => [p.kind, p.namespace, p.name]), [["CiliumNetworkPolicy", "shop", "allow-web"]]);
  assert.equal(denied.verdict, "DROPPED");
  assert.equal(denied.drop_reason_desc, "POLICY_DENY");
  assert.equal(denied.drop_reason, 181);
  assert.deepEqual([denied.source.namespace, denied.source.pod_name, denied.source.identity], ["default", "xwing", 301]);
  assert.ok(denied.source.labels?.includes("k8s:class=xwing"));
  assert.deepEqual(denied.l4, { TCP: { source_port: 40000, destination_port: 80 } });
  assert.equal(denied.IP.source, "10.0.0.7");
  assert.ok(denied.ingress_denied_by?.[0]?.labels.includes("membrane:rule=spec.ingressDeny[0]"));
  assert.equal(defaultDeny.drop_reason_desc, "POLICY_DENIED");
  assert.equal(defaultDeny.traffic_direction, "EGRESS");
  assert.deepEqual(defaultDeny.egress_denied_by?.map((p) => p.kind), ["DefaultDeny"]);
  // The compact form names Cilium's reason, as for a Cilium cluster.
  const compact = await hubble("observe", "--server", r.server, "--last", "20");
  assert.match(compact.stdout, /default\/xwing:40000 \(ID:301\) -> default\/deathstar-1:80 \(ID:302\) Policy denied by denylist DROPPED/);
});

test("hubble observe filters: --from-pod with --verdict, --to-label, --protocol with --port, --last 1", async (t) => {
  const r = await start(t);
  const pods = (out: string): string[] => jsonFlows(out).map((f) => `${f.source.pod_name}>${f.destination.pod_name}`);
  const xwing = await hubble("observe", "--server", r.server, "--verdict", "DROPPED", "--from-pod", "default/xwing", "-o", "json");
  assert.deepEqual(pods(xwing.stdout), ["xwing>deathstar-1"]);
  const label = await hubble("observe", "--server", r.server, "--to-label", "class=deathstar", "-o", "json");
  assert.deepEqual(pods(label.stdout), ["xwing>deathstar-1"]);
  const labelIn = await hubble("observe", "--server", r.server, "--to-label", "k8s:app in (web, db)", "-o", "json");
  assert.deepEqual(pods(labelIn.stdout), ["client-1>web-0", "client-1>web-0"]);
  const tcp80 = await hubble("observe", "--server", r.server, "--protocol", "tcp", "--port", "80", "-o", "json");
  assert.deepEqual(pods(tcp80.stdout), ["client-1>web-0", "xwing>deathstar-1"]);
  const udp = await hubble("observe", "--server", r.server, "--protocol", "udp", "-o", "json");
  assert.deepEqual(jsonFlows(udp.stdout).map((f) => f.l4?.UDP?.destination_port), [80]);
  const notDropped = await hubble("observe", "--server", r.server, "--not", "--verdict", "DROPPED", "-o", "json");
  assert.deepEqual(jsonFlows(notDropped.stdout).map((f) => f.verdict), ["FORWARDED"]);
  const last = await hubble("observe", "--server", r.server, "--last", "1", "-o", "json");
  assert.deepEqual(jsonFlows(last.stdout).map((f) => f.l4?.UDP !== undefined), [true]);
  const first = await hubble("observe", "--server", r.server, "--first", "1", "-o", "json");
  assert.deepEqual(jsonFlows(first.stdout).map((f) => f.verdict), ["FORWARDED"]);
  const egress = await hubble("observe", "--server", r.server, "--traffic-direction", "egress", "-o", "json");
  assert.deepEqual(jsonFlows(egress.stdout).map((f) => f.traffic_direction), ["EGRESS"]);
  const ident = await hubble("observe", "--server", r.server, "--from-identity", "301", "-o", "json");
  assert.deepEqual(pods(ident.stdout), ["xwing>deathstar-1"]);
  const reason = await hubble("observe", "--server", r.server, "--drop-reason-desc", "POLICY_DENIED", "-o", "json");
  assert.deepEqual(jsonFlows(reason.stdout).map((f) => f.drop_reason_desc), ["POLICY_DENIED"]);
  const type = await hubble("observe", "--server", r.server, "--type", "policy-verdict", "-o", "json");
  assert.deepEqual(jsonFlows(type.stdout).map((f) => f.verdict), ["FORWARDED"]);
  const node = await hubble("observe", "--server", r.server, "--node-name", "node-*", "-o", "json");
  assert.equal(jsonFlows(node.stdout).length, 3);
  const otherNode = await hubble("observe", "--server", r.server, "--node-name", "node-b", "-o", "json");
  assert.equal(jsonFlows(otherNode.stdout).length, 0);
  const ip = await hubble("observe", "--server", r.server, "--to-ip", "10.0.1.0/28", "-o", "json");
  assert.equal(jsonFlows(ip.stdout).length, 3);
});

test("workloads: hubble observe prints each endpoint's workloads and --from-workload, --to-workload, --workload filter by them", async (t) => {
  const r = await start(t);
  const pods = (out: string): string[] => jsonFlows(out).map((f) => `${f.source.pod_name}>${f.destination.pod_name}`);
  const all = await hubble("observe", "--server", r.server, "--last", "20", "-o", "jsonpb");
  assert.equal(all.code, 0, all.stderr);
  const denied = jsonFlows(all.stdout).find((f) => f.source.pod_name === "xwing")!;
  assert.deepEqual(denied.source.workloads, [{ kind: "Deployment", name: "xwing" }]);
  assert.deepEqual(denied.destination.workloads, [{ kind: "StatefulSet", name: "deathstar" }]);
  const from = await hubble("observe", "--server", r.server, "--from-workload", "Deployment/xwing", "-o", "json");
  assert.equal(from.code, 0, from.stderr);
  assert.deepEqual(pods(from.stdout), ["xwing>deathstar-1"]);
  const byName = await hubble("observe", "--server", r.server, "--to-workload", "deathstar", "-o", "json");
  assert.deepEqual(pods(byName.stdout), ["xwing>deathstar-1"]);
  const byKind = await hubble("observe", "--server", r.server, "--workload", "StatefulSet/", "-o", "json");
  assert.deepEqual(pods(byKind.stdout), ["xwing>deathstar-1"]);
  const wrongKind = await hubble("observe", "--server", r.server, "--from-workload", "StatefulSet/xwing", "-o", "json");
  assert.equal(wrongKind.code, 0, wrongKind.stderr);
  assert.deepEqual(pods(wrongKind.stdout), []);
  const notXwing = await hubble("observe", "--server", r.server, "--not", "--workload", "xwing", "-o", "json");
  assert.equal(jsonFlows(notXwing.stdout).length, 2, "the two flows of pods without a workload");
});

test("ICMP: hubble observe reads the message's type and code (destination unreachable, administratively prohibited)", async (t) => {
  const r = await start(t);
  r.buffer.push(dropFlow({ time: new Date().toISOString(), protocol: "ICMP", icmpCode: 13, source: endpoint({ port: 0 }), destination: endpoint({ pod: "web-0", ip: "10.0.1.5", port: 3 }) }));
  const last = await hubble("observe", "--server", r.server, "--last", "1", "--protocol", "icmp", "-o", "jsonpb");
  assert.equal(last.code, 0, last.stderr);
  assert.deepEqual(jsonFlows(last.stdout).map((f) => f.l4), [{ ICMPv4: { type: 3, code: 13 } }]);
});

test("TCP flags: hubble observe prints each flow's flags and --tcp-flags selects the flows that have them all", async (t) => {
  const r = await start(t);
  const at = (pod: string, tcpFlags: number) => flow({ time: new Date().toISOString(), tcpFlags, source: endpoint({ pod }) });
  r.buffer.push(at("syn", 0x02));
  r.buffer.push(at("syn-ack", 0x12));
  r.buffer.push(at("fin-ack", 0x11));
  const pods = (out: string): (string | undefined)[] => jsonFlows(out).map((f) => f.source.pod_name);
  const all = jsonFlows((await hubble("observe", "--server", r.server, "--last", "3", "-o", "jsonpb")).stdout);
  assert.deepEqual(all.map((f) => f.l4?.TCP?.flags), [{ SYN: true }, { SYN: true, ACK: true }, { FIN: true, ACK: true }]);
  const syn = await hubble("observe", "--server", r.server, "--tcp-flags", "SYN", "-o", "json");
  assert.equal(syn.code, 0, syn.stderr);
  assert.deepEqual(pods(syn.stdout), ["syn", "syn-ack"]);
  assert.deepEqual(pods((await hubble("observe", "--server", r.server, "--tcp-flags", "syn,ack", "-o", "json")).stdout), ["syn-ack"]);
  assert.deepEqual(pods((await hubble("observe", "--server", r.server, "--tcp-flags", "FIN", "--tcp-flags", "RST", "-o", "json")).stdout), ["fin-ack"]);
});

test("cluster names: hubble observe reads each pod's cluster and --from-cluster/--cluster select by it", async (t) => {
  const r = await start(t);
  const inCluster = (pod: string, cluster: string) => flow({ time: new Date().toISOString(), source: endpoint({ pod, labels: ["k8s:app=client", `k8s:io.cilium.k8s.policy.cluster=${cluster}`] }) });
  r.buffer.push(inCluster("east-1", "east"));
  r.buffer.push(inCluster("west-1", "west"));
  const pods = (out: string): (string | undefined)[] => jsonFlows(out).map((f) => f.source.pod_name);
  const east = await hubble("observe", "--server", r.server, "--from-cluster", "east", "-o", "jsonpb");
  assert.equal(east.code, 0, east.stderr);
  assert.deepEqual(pods(east.stdout), ["east-1"]);
  assert.deepEqual(jsonFlows(east.stdout).map((f) => f.source.cluster_name), ["east"]);
  assert.deepEqual(pods((await hubble("observe", "--server", r.server, "--cluster", "west", "-o", "json")).stdout), ["west-1"]);
});

test("an unsupported filter is an error naming the field, from the hubble CLI and from grpc-js", async (t) => {
  const r = await start(t);
  const service = await hubble("observe", "--server", r.server, "--from-service", "default/web");
  assert.notEqual(service.code, 0);
  assert.match(service.stderr, /InvalidArgument.*whitelist\[0\]\.source_service: not supported/);
  const status = await hubble("observe", "--server", r.server, "--type", "drop", "--http-status", "403");
  assert.match(status.stderr, /InvalidArgument.*http_status_code: filtering by http status code requires the event type filter to match 'l7' events/);
  const client = new HubbleClient(`unix:${r.socket}`);
  t.after(() => client.close());
  await assert.rejects(client.collectFlows({ whitelist: [{ source_service: ["default/web"] }] }), (e: Error & { code?: number }) => {
    assert.equal(e.code, 3); // INVALID_ARGUMENT
    assert.match(e.message, /whitelist\[0\]\.source_service: not supported/);
    return true;
  });
  await assert.rejects(client.collectFlows({ blacklist: [{ source_ip: ["10.0.0.300"] }] }), /blacklist\[0\]\.source_ip: "10\.0\.0\.300" is not an IP address/);
});

test("hubble observe -f streams a drop that happens while it follows", async (t) => {
  const r = await start(t);
  const child = execFile(hubbleBinary(), ["observe", "--server", r.server, "-f", "--last", "1", "--verdict", "DROPPED", "--from-pod", "default/xwing", "-o", "json"]);
  t.after(() => child.kill());
  let out = "";
  child.stdout!.on("data", (c: string) => (out += c));
  // The replayed xwing drop (--last 1) arrives first: the stream is open. (`-f` alone replays nothing, as in Hubble.)
  await waitFor(() => out.includes("xwing"));
  r.buffer.push(dropFlow({ time: new Date().toISOString(), source: endpoint({ pod: "xwing-2", ip: "10.0.0.8" }), dropReason: "spoofed source", decidedBy: undefined as never }));
  r.buffer.push(flow({ time: new Date().toISOString(), source: endpoint({ pod: "xwing-3" }) })); // forwarded: filtered out
  await waitFor(() => out.includes("xwing-2"));
  const flows = jsonFlows(out);
  assert.deepEqual(
    flows.map((f) => [f.source.pod_name, f.drop_reason_desc]),
    [
      ["xwing", "POLICY_DENY"],
      ["xwing-2", "INVALID_SOURCE_IP"],
    ],
  );
});

test("a follower more than 50,000 flows behind loses the rest and is told: hubble observe prints EVENTS LOST (HUBBLE_RING_BUFFER) with the count, and follows on", async (t) => {
  const r = await start(t);
  const f = await following(t, r, "compact");
  // One burst in one turn of the event loop: more than the bound at once, so exactly the excess is lost to this client.
  const burst = MAX_FOLLOW_BACKLOG + 10_000;
  const base = Date.now();
  for (let i = 0; i < burst; i++) r.buffer.push(flow({ time: new Date(base + Math.floor(i / 100)).toISOString(), source: endpoint({ pod: "burst", port: 1024 + (i % 60000) }) }));
  await waitFor(() => f.out().includes("EVENTS LOST"), 60_000);
  r.buffer.push(flow({ time: new Date().toISOString(), source: endpoint({ pod: "marker-1" }) }));
  await waitFor(() => f.out().includes("marker-1"), 60_000);
  const lines = f.out().split("\n").filter((l) => l !== "");
  const lostAt = lines.findIndex((l) => l.includes("EVENTS LOST"));
  assert.match(lines[lostAt]!, /EVENTS LOST: HUBBLE_RING_BUFFER CPU\(0\) 10000 \(first: .*, last: .*\)/);
  assert.equal(lines.filter((l) => l.includes("default/burst:")).length, MAX_FOLLOW_BACKLOG, "every flow that fit arrived");
  assert.equal(lostAt, lines.length - 2, "told after the flows that fit, before the next flow");
  assert.ok(lines.at(-1)!.includes("marker-1"), "the client follows on");
});

test("events lost before the ring (the datapath's ring buffer was full) reach every follower as PERF_EVENT_RING_BUFFER, in -o json too", async (t) => {
  const r = await start(t);
  const f = await following(t, r, "json");
  const t0 = Date.now();
  r.hubble.reportLost("PERF_EVENT_RING_BUFFER", 7, t0 - 1000, t0);
  await waitFor(() => jsonLostEvents(f.out()).length > 0);
  const [lost] = jsonLostEvents(f.out());
  assert.equal(lost!.source, "PERF_EVENT_RING_BUFFER");
  assert.equal(Number(lost!.num_events_lost), 7); // uint64: a string in protojson
  assert.equal(Date.parse(lost!.last as unknown as string), t0);
  assert.equal(Date.parse(lost!.first as unknown as string), t0 - 1000);
});

test("on TCP the API is served with mutual TLS only: the hubble CLI and grpc-js with a client certificate, none without", async (t) => {
  const pki = await makePki(["relay"]);
  t.after(() => pki.remove());
  const buffer = new FlowBuffer({ capacity: 10 });
  buffer.push(dropFlow({ time: new Date().toISOString() }));
  const server = new HubbleServer(buffer, "node-a", log);
  // The serving certificate is the test PKI's server certificate for 127.0.0.1; clients are signed by the same CA.
  const [address] = await server.start({ tcp: { address: "127.0.0.1:0", cert: pki.read("operator.crt"), key: pki.read("operator.key"), clientCa: pki.read("ca.crt") } });
  t.after(() => server.stop());
  const tls = ["--tls", "--tls-ca-cert-files", pki.file("ca.crt"), "--tls-client-cert-file", pki.file("relay.crt"), "--tls-client-key-file", pki.file("relay.key")];
  const observed = await hubble("observe", "--server", address!, ...tls, "-o", "json");
  assert.equal(observed.code, 0, observed.stderr);
  assert.equal(jsonFlows(observed.stdout).length, 1);
  const noCert = await hubble("observe", "--server", address!, "--tls", "--tls-ca-cert-files", pki.file("ca.crt"), "-o", "json");
  assert.notEqual(noCert.code, 0);
  const plain = await hubble("observe", "--server", address!, "-o", "json");
  assert.notEqual(plain.code, 0);
  const client = new HubbleClient(address!, { ca: pki.read("ca.crt"), cert: pki.read("relay.crt"), key: pki.read("relay.key") });
  t.after(() => client.close());
  assert.equal(Number((await client.serverStatus()).num_flows), 1);
});

/** A running `hubble observe -f -o FORMAT` whose stream is open: a marker flow pushed until it arrives (`-f` alone replays nothing). */
async function following(t: test.TestContext, r: Running, format: "compact" | "json"): Promise<{ out: () => string }> {
  const child = execFile(hubbleBinary(), ["observe", "--server", r.server, "-f", "-o", format], { maxBuffer: 64 * 1024 * 1024 });
  t.after(() => child.kill());
  let out = "";
  child.stdout!.on("data", (c: string) => (out += c));
  await waitFor(() => {
    if (!out.includes("marker-0")) r.buffer.push(flow({ time: new Date().toISOString(), source: endpoint({ pod: "marker-0" }) }));
    return out.includes("marker-0");
  });
  return { out: () => out };
}

async function waitFor(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What the x-wing's node knows: identities, pods, the star-wars policy's rule. */
const starWars: EnrichLookups = {
  node: "node-a",
  identityLabels: (id) => ({ 301: ["k8s:class=xwing", "k8s:io.kubernetes.pod.namespace=default"], 302: ["k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default"], 303: ["k8s:k8s-app=kube-dns", "k8s:io.kubernetes.pod.namespace=kube-system"] })[id],
  endpointByIp: (ip) => ({ "10.0.0.7": { namespace: "default", pod: "xwing" }, "10.0.1.9": { namespace: "default", pod: "deathstar-1" }, "10.0.2.2": { namespace: "kube-system", pod: "dnsmasq-0" } })[ip],
  ruleOrigin: (id) => (id === 7 ? { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "rule1", ruleIndex: 0, path: "spec.egress[0]" } : undefined),
  identityByIp: (ip) => ({ "10.0.0.7": 301, "10.0.1.9": 302, "10.0.2.2": 303 })[ip],
  wallClock: () => new Date(),
};

/** protojson writes the BoolValue wrapper as a bare boolean. */
const isReply = (f: HubbleFlow): boolean => (f.is_reply as unknown) === true || f.is_reply?.value === true;

function httpFlow(over: Partial<HttpFlow>): HttpFlow {
  return {
    time: new Date(Date.now() - 1000).toISOString(),
    source: { ip: "10.0.0.7", port: 41000, identity: 301 },
    destination: { ip: "10.0.1.9", port: 80 },
    proxyPort: 10082,
    ruleId: 7,
    ingress: false,
    protocol: "HTTP/1.1",
    method: "POST",
    path: "/v1/request-landing",
    host: "deathstar.default.svc.cluster.local",
    verdict: "forwarded",
    rule: { ruleId: 7, index: 0 },
    status: 200,
    latencyMs: 2.5,
    ...over,
  };
}

function dnsFlow(over: Partial<DnsFlow>): DnsFlow {
  return { time: new Date(Date.now() - 500), protocol: "udp", source: { ip: "10.0.0.7", port: 5353, identity: 301 }, server: { ip: "10.0.2.2", port: 53 }, query: "api.outside.test.", qtype: "A", verdict: "allowed", ruleId: 7, rcode: "NOERROR", addresses: ["192.0.2.11"], latencyMs: 1.2, ...over };
}

test("the proxies' L7 flows through the real hubble CLI: --protocol http with method, url and code, --type l7, --http-status, --http-method, --http-path, --http-url, --protocol dns; a refused query and a 403 are DROPPED", async (t) => {
  const r = await start(t);
  for (const f of [
    ...httpFlows(httpFlow({}), starWars, DEFAULT_HTTP_REDACTION),
    ...httpFlows(httpFlow({ method: "PUT", path: "/v1/exhaust-port", verdict: "denied", rule: undefined, status: 403, latencyMs: 0.2 }), starWars, DEFAULT_HTTP_REDACTION),
    ...dnsFlows(dnsFlow({}), starWars),
    ...dnsFlows(dnsFlow({ query: "evil.example.", verdict: "denied", rcode: "REFUSED", addresses: [], latencyMs: 0.1 }), starWars),
  ])
    r.buffer.push(f);
  const observe = async (...args: string[]): Promise<HubbleFlow[]> => {
    const out = await hubble("observe", "--server", r.server, ...args, "-o", "json");
    assert.equal(out.code, 0, out.stderr);
    return jsonFlows(out.stdout);
  };
  const http = await observe("--protocol", "http");
  assert.deepEqual(
    http.map((f) => [f.verdict, f.l7?.type, f.l7?.http?.method, f.l7?.http?.url, f.l7?.http?.code ?? 0, isReply(f)]),
    [
      ["FORWARDED", "REQUEST", "POST", "http://deathstar.default.svc.cluster.local/v1/request-landing", 0, false],
      ["FORWARDED", "RESPONSE", "POST", "http://deathstar.default.svc.cluster.local/v1/request-landing", 200, true],
      ["DROPPED", "REQUEST", "PUT", "http://deathstar.default.svc.cluster.local/v1/exhaust-port", 0, false],
      ["FORWARDED", "RESPONSE", "PUT", "http://deathstar.default.svc.cluster.local/v1/exhaust-port", 403, true],
    ],
  );
  const [req, res, denied] = http as [HubbleFlow, HubbleFlow, HubbleFlow];
  assert.equal(req.Type, "L7");
  assert.deepEqual(req.event_type, { type: 129 }); // Cilium's access log message type (protojson leaves out a zero sub_type)
  assert.equal(req.l7?.http?.protocol, "HTTP/1.1");
  assert.deepEqual([req.source.pod_name, req.source.identity, req.destination.pod_name, req.destination.identity], ["xwing", 301, "deathstar-1", 302]);
  assert.ok(req.destination.labels?.includes("k8s:class=deathstar"));
  assert.deepEqual(req.l4, { TCP: { source_port: 41000, destination_port: 80 } });
  assert.equal(Number(res.l7?.latency_ns), 2_500_000);
  assert.deepEqual(req.egress_allowed_by?.map((p) => [p.kind, p.namespace, p.name]), [["CiliumNetworkPolicy", "default", "rule1"]]);
  assert.equal(denied.drop_reason_desc, "POLICY_DENIED");
  assert.deepEqual(denied.egress_denied_by?.map((p) => p.name), ["rule1"]);
  assert.equal((await observe("--type", "l7")).length, 7);
  assert.deepEqual((await observe("--http-status", "403")).map((f) => f.l7?.http?.code), [403]);
  assert.deepEqual((await observe("--http-status", "2+")).map((f) => f.l7?.http?.code), [200]);
  assert.deepEqual((await observe("--http-method", "put")).map((f) => f.l7?.type), ["REQUEST", "RESPONSE"]);
  assert.deepEqual((await observe("--http-path", "^/v1/exhaust")).map((f) => f.l7?.http?.method), ["PUT", "PUT"]);
  assert.deepEqual((await observe("--verdict", "DROPPED", "--protocol", "http")).map((f) => f.l7?.http?.method), ["PUT"]);
  const dns = await observe("--protocol", "dns");
  assert.deepEqual(
    dns.map((f) => [f.verdict, f.l7?.type, f.l7?.dns?.query, f.l7?.dns?.ips ?? [], f.l7?.dns?.rcode ?? 0]),
    [
      ["FORWARDED", "REQUEST", "api.outside.test.", [], 0],
      ["FORWARDED", "RESPONSE", "api.outside.test.", ["192.0.2.11"], 0],
      ["DROPPED", "REQUEST", "evil.example.", [], 0],
    ],
  );
  assert.deepEqual(dns[2]!.l4, { UDP: { source_port: 5353, destination_port: 53 } });
  assert.deepEqual([dns[1]!.source.pod_name, dns[1]!.destination.pod_name], ["dnsmasq-0", "xwing"]);
  assert.deepEqual((await observe("--http-url", "^http://deathstar[.].*landing$")).map((f) => f.l7?.type), ["REQUEST", "RESPONSE"]);
  // The compact form is Hubble's own rendering of an L7 record.
  const compact = await hubble("observe", "--server", r.server, "--type", "l7");
  assert.match(compact.stdout, /default\/xwing:41000 \(ID:301\) -> default\/deathstar-1:80 \(ID:302\) http-request DROPPED \(HTTP\/1.1 PUT http:\/\/deathstar.default.svc.cluster.local\/v1\/exhaust-port\)/);
  assert.match(compact.stdout, /dns-request proxy DROPPED \(DNS Query evil.example. A\)/);
});
