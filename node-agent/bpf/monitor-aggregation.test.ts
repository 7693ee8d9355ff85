// Monitor aggregation with real packets between two netns: what each level reports of allowed connections, and drops at every level.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { MONITOR_AGGREGATION_LEVELS, type MonitorAggregation } from "../monitor-aggregation.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import { LAYOUT, MONITOR_AGGREGATION_FLAGS, type VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5m${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IF = `${tag}p`;
const HOST_IF = `${tag}h`;
const POD_IP = "10.203.0.1";
const HOST_IP = "10.203.0.2";
const POD_ID = 1000;
const HOST_PEER_ID = 2000;
const TCP_ALLOWED = 8080;
const TCP_DENIED = 8082; // an explicit deny entry
const TCP_DEFAULT_DENIED = 8081; // no entry: egress default deny
const UDP_ALLOWED = 5353;
const INGRESS_DENIED = 9090; // the pod's server; ingress enforced, nothing allowed

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let hostIfindex = 0;
let events: VerdictEvent[] = [];
let drain: () => number = () => 0;

async function connect(fromNetns: string, proto: "tcp" | "udp", host: string, port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", PROBE, "connect", proto, host, String(port), "1000"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

/** IPv4 packets the host end of the veth passed (rx: the pod's, through from-container; tx: to the pod, through to-container). */
function vethPackets(): number {
  const [link] = JSON.parse(ipIn(NS_HOST, "-s", "-j", "link", "show", "dev", HOST_IF)) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
  return link!.stats64.rx.packets + link!.stats64.tx.packets;
}

/** The events of one connection (either direction) after its packets have settled. */
async function eventsOf(port: number): Promise<VerdictEvent[]> {
  await new Promise((r) => setTimeout(r, 300)); // the closing FIN/ACK exchange outlives the client process
  drain();
  return events.filter((e) => e.dport === port || e.sport === port);
}

const show = (xs: readonly VerdictEvent[]): string => JSON.stringify(xs.map((e) => `${e.verdict} ${e.ctState} ${e.direction} ${e.src}:${e.sport}>${e.dst}:${e.dport} flags=${e.tcpFlags}`));

let rule = 300;
const entry = (p: Pick<PolicyEntry, "direction" | "proto" | "port">, verdict: PolicyEntry["verdict"] = "allow"): PolicyEntry => ({
  subject: POD_ID, peer: HOST_PEER_ID, portPrefixLen: 16, proxyPort: 0, ruleId: rule++, verdict, ...p,
});

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_HOST);
  fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_HOST, ifname: HOST_IF, cidr: `${HOST_IP}/24` });
  // Only this test's IPv4 packets cross the veth: no IPv6 (router/neighbour solicitations), no ARP (static neighbours).
  for (const [ns, ifname, peerNs, peerIf, peerIp] of [[NS_POD, POD_IF, NS_HOST, HOST_IF, HOST_IP], [NS_HOST, HOST_IF, NS_POD, POD_IF, POD_IP]] as const) {
    await run("ip", ["netns", "exec", ns, "sysctl", "-q", "-w", `net.ipv6.conf.${ifname}.disable_ipv6=1`]);
    const [peer] = JSON.parse(ipIn(peerNs, "-j", "link", "show", "dev", peerIf)) as { address: string }[];
    ipIn(ns, "neigh", "replace", peerIp, "lladdr", peer!.address, "dev", ifname, "nud", "permanent");
  }
  hostIfindex = ifindexIn(NS_HOST, HOST_IF);
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: `${HOST_IP}/32`, identity: HOST_PEER_ID });
  dp.setSubjectPolicy(
    {
      subject: POD_ID, ingressEnforced: true, egressEnforced: true,
      entries: [
        entry({ direction: "egress", proto: PROTO_NUMBER.TCP, port: TCP_ALLOWED }),
        entry({ direction: "egress", proto: PROTO_NUMBER.UDP, port: UDP_ALLOWED }),
        entry({ direction: "egress", proto: PROTO_NUMBER.TCP, port: TCP_DENIED }, "deny"),
      ],
    },
    [{ ip: POD_IP, ifindex: hostIfindex }],
  );
  drain = dp.onEvents((e) => events.push(e));
  dp.attachEndpoint(hostIfindex, NS_HOST);
  const servers = [
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(TCP_ALLOWED)]),
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", String(UDP_ALLOWED)]),
    fx.spawn(NS_POD, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(INGRESS_DENIED)]),
  ];
  await Promise.all(servers.map((s) => waitForLine(s, /^listening/, 15000)));
});

after(() => {
  try {
    if (dp && hostIfindex) dp.detachEndpoint(hostIfindex, NS_HOST);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

/** Switches the level and starts from an empty conntrack and event list. */
function atLevel(level: MonitorAggregation): void {
  dp!.setMonitorAggregation(level);
  dp!.clearConntrack();
  drain();
  events = [];
}

test("the level is written to the config map's flags; the tunnel device next to it stays", () => {
  const key = Buffer.alloc(4);
  dp!.setConfig({ vxlanIfindex: 77, monitorAggregation: "maximum" });
  for (const level of MONITOR_AGGREGATION_LEVELS) {
    dp!.setMonitorAggregation(level);
    const value = dp!.object.map("membrane_config").lookup(key)!;
    assert.equal(value.readUInt32LE(LAYOUT.config_value.fields.flags.offset), MONITOR_AGGREGATION_FLAGS[level], level);
    assert.equal(value.readUInt32LE(LAYOUT.config_value.fields.vxlan_ifindex.offset), 77, `${level}: tunnel device kept`);
  }
  dp!.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
});

test("none: every packet of an allowed TCP connection is reported, in both programs, each naming its rule", async () => {
  atLevel("none");
  const before = vethPackets();
  assert.equal(await connect(NS_POD, "tcp", HOST_IP, TCP_ALLOWED), true);
  const got = await eventsOf(TCP_ALLOWED);
  const packets = vethPackets() - before;
  assert.ok(packets >= 8, `a TCP connection with data and a close is at least 8 packets, saw ${packets}`);
  assert.equal(got.length, packets, `one event per packet: ${show(got)}`);
  assert.ok(got.every((e) => e.verdict === "forwarded" && e.direction === "egress" && e.ruleId !== undefined), show(got));
  assert.deepEqual(got.slice(0, 3).map((e) => [e.ctState, e.tcpFlags]), [["new", SYN], ["reply", SYN | ACK], ["established", ACK]]);
  assert.ok(got.filter((e) => e.ctState === "reply").every((e) => e.src === HOST_IP && e.srcIdentity === HOST_PEER_ID && e.dstIdentity === POD_ID), "replies carry the packet's own source and identities");
  assert.ok(got.filter((e) => e.ctState !== "reply").every((e) => e.src === POD_IP && e.srcIdentity === POD_ID && e.dstIdentity === HOST_PEER_ID));
});

test("low: the new connection, its first reply and each side's FIN, once each however many packets", async () => {
  atLevel("low");
  const before = vethPackets();
  assert.equal(await connect(NS_POD, "tcp", HOST_IP, TCP_ALLOWED), true);
  const got = await eventsOf(TCP_ALLOWED);
  const packets = vethPackets() - before;
  const has = (ctState: VerdictEvent["ctState"], flag: number) => got.filter((e) => e.ctState === ctState && (e.tcpFlags & flag) !== 0).length;
  assert.equal(has("new", SYN), 1, show(got));
  assert.equal(has("reply", SYN), 1, `the SYN-ACK: ${show(got)}`);
  assert.equal(has("established", FIN), 1, `the client's FIN: ${show(got)}`);
  assert.equal(has("reply", FIN), 1, `the server's FIN: ${show(got)}`);
  // Nothing else but an RST (never twice in a direction): no pure ACKs, no data packets.
  const rsts = got.filter((e) => (e.tcpFlags & RST) !== 0 && (e.tcpFlags & (SYN | FIN)) === 0);
  assert.equal(got.length, 4 + rsts.length, show(got));
  assert.ok(rsts.length <= 2);
  assert.ok(got.length < packets, `fewer events (${got.length}) than packets (${packets})`);
  assert.ok(got.every((e) => e.verdict === "forwarded" && e.direction === "egress" && e.ruleId !== undefined), show(got));

  // A protocol without flags: the first packet and the first reply.
  assert.equal(await connect(NS_POD, "udp", HOST_IP, UDP_ALLOWED), true);
  const udp = await eventsOf(UDP_ALLOWED);
  assert.deepEqual(udp.map((e) => [e.ctState, e.src, e.tcpFlags]), [["new", POD_IP, 0], ["reply", HOST_IP, 0]], show(udp));
});

test("medium (the default): exactly one event per allowed connection, the one policy decided", async () => {
  atLevel("medium");
  assert.equal(await connect(NS_POD, "tcp", HOST_IP, TCP_ALLOWED), true);
  const got = await eventsOf(TCP_ALLOWED);
  assert.equal(got.length, 1, show(got));
  assert.deepEqual([got[0]!.verdict, got[0]!.ctState, got[0]!.tcpFlags, got[0]!.direction, got[0]!.src, got[0]!.dst], ["forwarded", "new", SYN, "egress", POD_IP, HOST_IP]);
  assert.ok(got[0]!.ruleId !== undefined);
  assert.equal(await connect(NS_POD, "udp", HOST_IP, UDP_ALLOWED), true);
  assert.equal((await eventsOf(UDP_ALLOWED)).length, 1);
});

test("maximum: no event for allowed connections", async () => {
  atLevel("maximum");
  assert.equal(await connect(NS_POD, "tcp", HOST_IP, TCP_ALLOWED), true);
  assert.equal(await connect(NS_POD, "udp", HOST_IP, UDP_ALLOWED), true);
  assert.deepEqual(await eventsOf(TCP_ALLOWED), []);
  assert.deepEqual(await eventsOf(UDP_ALLOWED), []);
});

for (const level of MONITOR_AGGREGATION_LEVELS) {
  test(`${level}: every drop is counted and reported with its reason (explicit deny, egress default deny, ingress default deny)`, async () => {
    atLevel(level);
    const cases = [
      { from: NS_POD, to: HOST_IP, port: TCP_DENIED, reason: "policy denied", code: 1, direction: "egress", src: POD_ID, dst: HOST_PEER_ID },
      { from: NS_POD, to: HOST_IP, port: TCP_DEFAULT_DENIED, reason: "policy denied (default deny)", code: 2, direction: "egress", src: POD_ID, dst: HOST_PEER_ID },
      { from: NS_HOST, to: POD_IP, port: INGRESS_DENIED, reason: "policy denied (default deny)", code: 2, direction: "ingress", src: HOST_PEER_ID, dst: POD_ID },
    ] as const;
    for (const c of cases) {
      const counted = dp!.dropCount(c.code);
      assert.equal(await connect(c.from, "tcp", c.to, c.port), false, `tcp ${c.port} is dropped`);
      const got = await eventsOf(c.port);
      assert.ok(got.length >= 1, `${c.port}: a drop event`);
      for (const e of got) {
        assert.deepEqual([e.verdict, e.reason, e.direction, e.srcIdentity, e.dstIdentity, e.tcpFlags], ["dropped", c.reason, c.direction, c.src, c.dst, SYN], `${c.port}: ${show(got)}`);
      }
      assert.equal(dp!.dropCount(c.code) - counted, BigInt(got.length), `${c.port}: every counted drop was reported`);
    }
    assert.equal(dp!.dropCounters().lostEvents, 0n);
  });
}
