// Real packets: a pod netns and a host/peer netns joined by a veth with the programs attached on the host end.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { attachedProgramId } from "./loader.ts";
import { NetnsFixture, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import type { VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5v${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IF = `${tag}p`;
const HOST_IF = `${tag}h`;
const POD_IP = "10.201.0.1";
const HOST_IP = "10.201.0.2";
const POD_ID = 1000;
const HOST_PEER_ID = 2000;

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let hostIfindex = 0;
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;
let udpServer: ChildProcess | undefined;
let udpLog = "";

/** Sends count new-flow datagrams from the pod while during() runs; returns how many arrived. */
async function floodDuring(tag: string, count: number, during: () => Promise<void> | void): Promise<number> {
  const sender = run("ip", ["netns", "exec", NS_POD, process.execPath, "--import", "tsx", PROBE, "flood", HOST_IP, "5353", String(count), tag], { cwd: root });
  await during();
  await sender;
  await new Promise((r) => setTimeout(r, 300));
  return udpLog.split("\n").filter((l) => l.includes(` ${tag} `)).length;
}

async function reaches(fromNetns: string, proto: "tcp" | "udp", host: string, port: number, source?: string): Promise<boolean> {
  const args = [PROBE, "connect", proto, host, String(port), "1500", ...(source ? [source] : [])];
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", ...args], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

let rule = 100;
const allow = (p: Omit<PolicyEntry, "verdict" | "proxyPort" | "ruleId">): PolicyEntry => ({ ...p, verdict: "allow", proxyPort: 0, ruleId: rule++ });

function install(policy: SubjectPolicy): void {
  dp!.setSubjectPolicy(policy, [{ ip: POD_IP, ifindex: hostIfindex }]);
}

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_HOST);
  fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_HOST, ifname: HOST_IF, cidr: `${HOST_IP}/24` });
  hostIfindex = ifindexIn(NS_HOST, HOST_IF);
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: `${HOST_IP}/32`, identity: HOST_PEER_ID });
  drain = dp.onEvents((e) => events.push(e));
  dp.attachEndpoint(hostIfindex, NS_HOST);
  udpServer = fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", "5353"]);
  udpServer.stdout?.on("data", (d: Buffer) => (udpLog += d.toString()));
  const servers = [
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080", "8081"]),
    udpServer,
    fx.spawn(NS_POD, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "9090"]),
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

test("the programs are attached to the host end of the veth (ingress and egress)", () => {
  assert.ok(attachedProgramId({ ifindex: hostIfindex, direction: "ingress", netns: NS_HOST }));
  assert.ok(attachedProgramId({ ifindex: hostIfindex, direction: "egress", netns: NS_HOST }));
});

test("egress: TCP to the allowed port connects; another port and UDP are dropped and reported", async () => {
  install({
    subject: POD_ID, ingressEnforced: false, egressEnforced: true,
    entries: [allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 })],
  });
  dp!.clearConntrack();
  assert.equal(await reaches(NS_POD, "tcp", HOST_IP, 8080), true, "tcp 8080");
  assert.equal(await reaches(NS_POD, "tcp", HOST_IP, 8081), false, "tcp 8081");
  assert.equal(await reaches(NS_POD, "udp", HOST_IP, 5353), false, "udp 5353");
  drain();
  const drop = events.find((e) => e.verdict === "dropped" && e.dport === 8081);
  assert.ok(drop, `a drop event for tcp 8081 in ${JSON.stringify(events.slice(-5), (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  assert.equal(drop.reason, "policy denied (default deny)");
  assert.equal(drop.src, POD_IP);
  assert.equal(drop.dst, HOST_IP);
  assert.equal(drop.srcIdentity, POD_ID);
  assert.equal(drop.dstIdentity, HOST_PEER_ID);
  assert.equal(drop.ifindex, hostIfindex);
  assert.ok(events.some((e) => e.verdict === "forwarded" && e.dport === 8080 && e.ruleId !== undefined), "the allowed connection names its rule");
});

test("egress: a map update opens UDP without touching the open TCP rule", async () => {
  install({
    subject: POD_ID, ingressEnforced: false, egressEnforced: true,
    entries: [
      allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }),
      allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.UDP, port: 5353, portPrefixLen: 16 }),
    ],
  });
  assert.equal(await reaches(NS_POD, "udp", HOST_IP, 5353), true, "udp 5353");
  assert.equal(await reaches(NS_POD, "tcp", HOST_IP, 8080), true, "tcp 8080");
});

test("ingress: an enforced pod refuses connections until the peer's identity is allowed", async () => {
  install({ subject: POD_ID, ingressEnforced: true, egressEnforced: false, entries: [] });
  dp!.clearConntrack();
  assert.equal(await reaches(NS_HOST, "tcp", POD_IP, 9090), false, "default deny");
  install({
    subject: POD_ID, ingressEnforced: true, egressEnforced: false,
    entries: [allow({ subject: POD_ID, direction: "ingress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 9090, portPrefixLen: 16 })],
  });
  assert.equal(await reaches(NS_HOST, "tcp", POD_IP, 9090), true, "allowed peer");
  // A different identity for the same address (the ipcache changed): denied again.
  dp!.setIpcache({ cidr: `${HOST_IP}/32`, identity: HOST_PEER_ID + 1 });
  dp!.clearConntrack();
  assert.equal(await reaches(NS_HOST, "tcp", POD_IP, 9090), false, "other identity");
  dp!.setIpcache({ cidr: `${HOST_IP}/32`, identity: HOST_PEER_ID });
});

test("a spoofed source address from the pod is dropped on the wire and counted", async () => {
  install({ subject: POD_ID, ingressEnforced: false, egressEnforced: false, entries: [] });
  const before = dp!.dropCount(3);
  // The pod claims another address: the datapath must not take it (nor an identity) from the packet.
  ipIn(NS_POD, "addr", "add", "10.201.0.66/24", "dev", POD_IF);
  assert.equal(await reaches(NS_POD, "udp", HOST_IP, 5353, "10.201.0.66"), false);
  assert.ok(dp!.dropCount(3) > before);
});

test("re-loading the object reuses the pinned maps and re-attaches without a gap", async () => {
  install({ subject: POD_ID, ingressEnforced: false, egressEnforced: true,
    entries: [allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 })] });
  const second = Datapath.load(`test-${tag}`);
  try {
    assert.ok(second.object.map("membrane_endpoints").keys().length >= 1, "the endpoint written by the first loader is there");
    second.attachEndpoint(hostIfindex, NS_HOST);
    assert.equal(await reaches(NS_POD, "tcp", HOST_IP, 8080), true);
    assert.equal(await reaches(NS_POD, "tcp", HOST_IP, 8081), false);
  } finally {
    second.close();
  }
});

test("policy churn opens no window: every new flow passes while its allow is rewritten in another form", async () => {
  const exact = allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.UDP, port: 5353, portPrefixLen: 16 });
  const block = allow({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.UDP, port: 5352, portPrefixLen: 15 });
  const forms = [[exact], [block], [exact, block]];
  let stop = false;
  const arrived = await floodDuring("churn", 300, async () => {
    for (let i = 0; !stop && i < 400; i++) {
      install({ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries: forms[i % forms.length]! });
      await new Promise((r) => setTimeout(r, 1));
    }
  });
  stop = true;
  assert.equal(arrived, 300);
});

test("re-attaching programs (agent restart) never lets a denied flow through", async () => {
  install({ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries: [] });
  dp!.clearConntrack(); // flows the previous test allowed may share a source port with ours
  const arrived = await floodDuring("reattach", 200, async () => {
    for (let i = 0; i < 20; i++) {
      const again = Datapath.load(`test-${tag}`);
      try {
        again.attachEndpoint(hostIfindex, NS_HOST);
      } finally {
        again.close();
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  });
  assert.equal(arrived, 0);
});
