// The host firewall with real packets to real listeners in a node namespace: the reference host policy (SSH from the management network, the kubelet from nodes, default deny, replies to the node's own connections, loopback), a pod on the node, the lock-out guard, audit mode.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { IDENTITY } from "../../core/identity.ts";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, ifindexIn, ipIn, sh, waitForLine } from "./netns.ts";
import { DROP_REASON_CODES, type VerdictEvent } from "./layout.ts";
import { enrich, type EnrichLookups } from "../observer/enrich.ts";
import { flowTableRow, type Flow } from "../../flowapi/flow.ts";
import { flowPredicate, parseFilterArgs } from "../../flowapi/filter.ts";
import { fromHubbleFlow, toHubbleFlow } from "../../flowapi/hubble/flow.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `hfw${process.pid % 100000}`;
const NS = { underlay: `${tag}-u`, node: `${tag}-node`, peer: `${tag}-peer`, outside: `${tag}-out`, mgmt: `${tag}-mgmt`, pod: `${tag}-pod` };
const NODE_IP = "10.205.0.1";
const PEER_NODE_IP = "10.205.0.2";
const OUTSIDE_IP = "10.205.0.3";
const MGMT_IP = "10.206.0.5";
const MGMT_CIDR = "10.206.0.0/24";
const POD_IP = "10.207.0.10";
const POD_GW = "10.207.0.1";
const MGMT_ID = (1 << 24) + 7; // the management CIDR's local identity
const POD_ID = 1300;
const SSH = 22;
const KUBELET = 10250;
const EXTRA = 9999;
const VXLAN = 8472;
const OUTSIDE_WEB = 8080;
const RULE_SSH = 501;
const RULE_KUBELET = 502;
const RULE_POD_KUBELET = 503;

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let nodeIfindex = 0;
let podHostIfindex = 0;
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;

async function tcp(fromNetns: string, host: string, port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", host, String(port), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

async function udp(fromNetns: string, host: string, port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", PROBE, "connect", "udp", host, String(port), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

async function takeEvents(port: number): Promise<VerdictEvent[]> {
  await new Promise((r) => setTimeout(r, 200));
  drain();
  const mine = events.filter((e) => e.dport === port);
  events.length = 0;
  return mine;
}

const show = (events: readonly VerdictEvent[]): string => JSON.stringify(events, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));

const hostEntry = (p: Pick<PolicyEntry, "peer" | "port" | "ruleId">): PolicyEntry => ({
  subject: IDENTITY.host, direction: "ingress", proto: PROTO_NUMBER.TCP, portPrefixLen: 16, proxyPort: 0, verdict: "allow", ...p,
});

/** The reference host firewall (as a CCNP nodeSelector policy compiles): default-deny ingress, SSH from the management network, the kubelet from nodes. */
function referencePolicy(): void {
  dp!.setSubjectPolicy({
    subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false,
    entries: [hostEntry({ peer: MGMT_ID, port: SSH, ruleId: RULE_SSH }), hostEntry({ peer: IDENTITY.remoteNode, port: KUBELET, ruleId: RULE_KUBELET })],
  });
  dp!.setHostAddress({ ip: NODE_IP, ingressEnforced: true, egressEnforced: false });
}

before(async () => {
  for (const ns of Object.values(NS)) fx.addNetns(ns);
  ipIn(NS.underlay, "link", "add", "br0", "type", "bridge");
  ipIn(NS.underlay, "link", "set", "br0", "up");
  const join = (ns: string, cidr: string, short: string): void => {
    fx.addVeth({ netns: ns, ifname: "eth0", cidr }, { netns: NS.underlay, ifname: `${short}-br`, cidr: "" });
    ipIn(NS.underlay, "link", "set", `${short}-br`, "master", "br0");
  };
  join(NS.node, `${NODE_IP}/24`, "n");
  join(NS.peer, `${PEER_NODE_IP}/24`, "p");
  join(NS.outside, `${OUTSIDE_IP}/24`, "o");
  join(NS.mgmt, `${MGMT_IP}/24`, "m");
  // The management network is its own CIDR on the same underlay (on-link routes both ways).
  ipIn(NS.node, "route", "add", MGMT_CIDR, "dev", "eth0");
  ipIn(NS.mgmt, "route", "add", "10.205.0.0/24", "dev", "eth0");
  // A pod on the node: its veth's host side in the node namespace.
  fx.addVeth({ netns: NS.pod, ifname: "eth0", cidr: `${POD_IP}/24` }, { netns: NS.node, ifname: `${tag}v`, cidr: `${POD_GW}/24` });
  ipIn(NS.pod, "route", "add", "default", "via", POD_GW, "dev", "eth0");
  nodeIfindex = ifindexIn(NS.node, "eth0");
  podHostIfindex = ifindexIn(NS.node, `${tag}v`);

  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: `${NODE_IP}/32`, identity: IDENTITY.host });
  dp.setIpcache({ cidr: `${PEER_NODE_IP}/32`, identity: IDENTITY.remoteNode, node: true });
  dp.setIpcache({ cidr: MGMT_CIDR, identity: MGMT_ID });
  dp.setIpcache({ cidr: `${POD_IP}/32`, identity: POD_ID });
  dp.setSubjectPolicy({ subject: POD_ID, ingressEnforced: false, egressEnforced: false, entries: [] }, [{ ip: POD_IP, ifindex: podHostIfindex }]);
  dp.setHostGuard([{ direction: "ingress", proto: PROTO_NUMBER.UDP, port: VXLAN, peers: "nodes", why: "overlay (VXLAN) between nodes" }]);
  referencePolicy();
  drain = dp.onEvents((e) => events.push(e));
  dp.attachHostDevice(nodeIfindex, NS.node);
  dp.attachEndpoint(podHostIfindex, NS.node);
  const servers = [
    fx.spawn(NS.node, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(SSH), String(KUBELET), String(EXTRA)]),
    fx.spawn(NS.node, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", String(VXLAN)]),
    fx.spawn(NS.outside, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(OUTSIDE_WEB)]),
  ];
  await Promise.all(servers.map((s) => waitForLine(s, /^listening/, 15000)));
});

after(() => {
  try {
    if (dp && nodeIfindex) dp.detachHostDevice(nodeIfindex, NS.node);
    if (dp && podHostIfindex) dp.detachEndpoint(podHostIfindex, NS.node);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

test("SSH only from the management network: the management netns reaches 22, the outside host does not", async () => {
  assert.ok(await tcp(NS.mgmt, NODE_IP, SSH), "management → 22");
  const allowed = await takeEvents(SSH);
  assert.ok(allowed.some((e) => e.verdict === "forwarded" && e.ruleId === RULE_SSH && e.dstIdentity === IDENTITY.host && e.srcIdentity === MGMT_ID), "the allow names its rule");
  assert.equal(await tcp(NS.outside, NODE_IP, SSH), false, "outside → 22");
  const dropped = await takeEvents(SSH);
  assert.ok(dropped.some((e) => e.verdict === "dropped" && e.reasonCode === DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY && e.dstIdentity === IDENTITY.host && e.srcIdentity === IDENTITY.world));
});

// A pod's connection to its own node's address never crosses a node device: from-container hands its
// first packet to pod_to_host (a tail call), which applies the host's ingress policy with the pod as peer.
test("a pod on the node is judged by its node's host policy: port 22 dropped (default deny, naming the pod and the host), a port the host policy allows it connects", async () => {
  await takeEvents(SSH);
  assert.equal(await tcp(NS.pod, NODE_IP, SSH), false, "pod → its node's 22");
  const dropped = await takeEvents(SSH);
  assert.ok(
    dropped.some((e) => e.verdict === "dropped" && e.direction === "ingress" && e.reasonCode === DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY && e.srcIdentity === POD_ID && e.dstIdentity === IDENTITY.host),
    show(dropped),
  );
  assert.equal(await tcp(NS.pod, NODE_IP, SSH), false, "a retransmitted or repeated SYN finds no conntrack entry of the pod's");
  dp!.setSubjectPolicy({
    subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false,
    entries: [hostEntry({ peer: MGMT_ID, port: SSH, ruleId: RULE_SSH }), hostEntry({ peer: IDENTITY.remoteNode, port: KUBELET, ruleId: RULE_KUBELET }), hostEntry({ peer: POD_ID, port: KUBELET, ruleId: RULE_POD_KUBELET })],
  });
  try {
    assert.ok(await tcp(NS.pod, NODE_IP, KUBELET), "pod → its node's 10250, allowed for the pod's identity, and the replies come back");
    const allowed = await takeEvents(KUBELET);
    assert.ok(allowed.some((e) => e.verdict === "forwarded" && e.direction === "ingress" && e.ruleId === RULE_POD_KUBELET && e.srcIdentity === POD_ID && e.dstIdentity === IDENTITY.host), show(allowed));
    assert.equal(await tcp(NS.pod, NODE_IP, EXTRA), false, "pod → its node's extra port");
  } finally {
    referencePolicy();
  }
});

test("a pod's connection to its node passes when the host's ingress is not enforced, without the tail call", async () => {
  dp!.setHostAddress({ ip: NODE_IP, ingressEnforced: false, egressEnforced: false });
  try {
    assert.ok(await tcp(NS.pod, NODE_IP, SSH));
  } finally {
    referencePolicy();
  }
});

test("the kubelet API only from the cluster's nodes: another node reaches 10250, the outside host does not", async () => {
  assert.ok(await tcp(NS.peer, NODE_IP, KUBELET));
  assert.equal(await tcp(NS.outside, NODE_IP, KUBELET), false);
});

test("flows of the host endpoint name the node (reserved:host), a peer node is reserved:remote-node, and --host NODE selects them, also read back through Hubble's shape", async () => {
  await takeEvents(KUBELET);
  await takeEvents(EXTRA);
  assert.ok(await tcp(NS.peer, NODE_IP, KUBELET), "peer node → 10250");
  const allowed = await takeEvents(KUBELET);
  assert.equal(await tcp(NS.outside, NODE_IP, EXTRA), false, "outside → 9999");
  const dropped = await takeEvents(EXTRA);
  // The agent's lookups (node-agent/agent.ts enrichLookups): reserved identities by name, the rules' origins.
  const lookups: EnrichLookups = {
    node: "node-a",
    identityLabels: (id) => ({ [IDENTITY.host]: ["reserved:host"], [IDENTITY.world]: ["reserved:world"], [IDENTITY.remoteNode]: ["reserved:remote-node"] })[id],
    endpointByIp: () => undefined,
    ruleOrigin: (id) => (id === RULE_KUBELET ? { policyKind: "CiliumClusterwideNetworkPolicy", name: "host-reference", ruleIndex: 1, path: "spec.ingress[1]" } : undefined),
    wallClock: () => new Date(),
  };
  const viaHubble = (f: Flow): Flow => fromHubbleFlow({ ...toHubbleFlow(f) });
  const flows = [...allowed, ...dropped].filter((e) => e.ctState === "new").map((e) => viaHubble(enrich(e, lookups)));
  const kubelet = flows.find((f) => f.destination.port === KUBELET && f.verdict === "FORWARDED");
  const extra = flows.find((f) => f.destination.port === EXTRA && f.verdict === "DROPPED");
  assert.ok(kubelet && extra, JSON.stringify(flows));
  assert.deepEqual([kubelet.destination.host, kubelet.destination.identity, kubelet.destination.labels, kubelet.source.identity, kubelet.source.labels, kubelet.source.host], ["node-a", IDENTITY.host, ["reserved:host"], IDENTITY.remoteNode, ["reserved:remote-node"], undefined]);
  assert.deepEqual(kubelet.decidedBy, { kind: "rule", policyKind: "CiliumClusterwideNetworkPolicy", name: "host-reference", rule: "spec.ingress[1]" });
  assert.deepEqual([extra.destination.host, extra.source.labels, extra.decidedBy], ["node-a", ["reserved:world"], { kind: "default-deny" }]);
  assert.match(flowTableRow(extra)[3]!, /^host\/node-a:9999 \(1\)$/);
  const select = (argv: string[]): Flow[] => {
    const f = parseFilterArgs(argv);
    assert.ok(f.ok);
    return flows.filter(flowPredicate(f.filter));
  };
  assert.equal(select(["--host", "node-a"]).length, flows.length, "every flow here is the host's");
  assert.deepEqual(select(["--host", "node-b"]), []);
  assert.deepEqual(select(["--host", "node-a", "--verdict", "DROPPED"]).map((f) => f.destination.port), dropped.filter((e) => e.ctState === "new").map(() => EXTRA));
});

test("monitor aggregation low: the host's known packets are reported with the peer's identity (looked up only for a reported packet)", async () => {
  await takeEvents(KUBELET);
  dp!.setMonitorAggregation("low");
  try {
    assert.ok(await tcp(NS.peer, NODE_IP, KUBELET));
    const got = await takeEvents(KUBELET);
    const known = got.filter((e) => e.verdict === "forwarded" && e.ctState !== "new");
    assert.ok(known.some((e) => e.ctState === "established" && e.srcIdentity === IDENTITY.remoteNode && e.dstIdentity === IDENTITY.host), show(got));
    assert.ok(known.every((e) => [e.srcIdentity, e.dstIdentity].includes(IDENTITY.remoteNode) && [e.srcIdentity, e.dstIdentity].includes(IDENTITY.host)), show(known));
  } finally {
    dp!.setMonitorAggregation("medium");
  }
});

test("an extra port is dropped for everyone", async () => {
  for (const ns of [NS.peer, NS.outside, NS.mgmt]) assert.equal(await tcp(ns, NODE_IP, EXTRA), false, ns);
});

test("the node's own outbound connections get their replies (conntrack), and loopback is untouched", async () => {
  assert.ok(await tcp(NS.node, OUTSIDE_IP, OUTSIDE_WEB), "node → outside host and back");
  assert.ok(await tcp(NS.node, "127.0.0.1", EXTRA), "loopback to the extra port");
});

test("forwarded traffic is not the host's: a pod's connection through the node to the outside host passes the host firewall", async () => {
  sh("ip", ["netns", "exec", NS.node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
  ipIn(NS.outside, "route", "add", `${POD_IP}/32`, "via", NODE_IP);
  assert.ok(await tcp(NS.pod, OUTSIDE_IP, OUTSIDE_WEB));
});

test("lock-out guard: the overlay port passes from another node whatever the host policy says, and only from a node", async () => {
  assert.ok(await udp(NS.peer, NODE_IP, VXLAN), "node → VXLAN port");
  assert.equal(await udp(NS.outside, NODE_IP, VXLAN), false, "not from a non-node");
});

test("host policy in audit mode drops nothing and reports each would-be drop as an audit; switching off enforces again", async () => {
  await takeEvents(EXTRA); // the earlier tests' drops (and their retransmissions)
  dp!.setPolicyAuditMode(true);
  try {
    assert.ok(await tcp(NS.outside, NODE_IP, EXTRA), "extra port passes in audit mode");
    const audits = await takeEvents(EXTRA);
    assert.deepEqual(audits.map((e) => [e.verdict, e.direction, e.reasonCode, e.dstIdentity]), [["audit", "ingress", DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY, IDENTITY.host]]);
  } finally {
    dp!.setPolicyAuditMode(false);
  }
  assert.equal(await tcp(NS.outside, NODE_IP, EXTRA), false);
});

test("without a host policy (not enforced) every port of the node is reachable", async () => {
  dp!.setHostAddress({ ip: NODE_IP, ingressEnforced: false, egressEnforced: false });
  try {
    assert.ok(await tcp(NS.outside, NODE_IP, EXTRA));
  } finally {
    referencePolicy();
  }
});
