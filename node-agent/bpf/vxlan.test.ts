// Cross-node: two node netns with collect-metadata VXLAN devices; the source identity rides in the VNI.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type SubjectPolicy } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import type { VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5x${process.pid % 100000}`;
const ns = { node1: `${tag}-n1`, node2: `${tag}-n2`, pod1: `${tag}-p1`, pod2: `${tag}-p2` };
const UNDERLAY = { node1: "192.168.77.1", node2: "192.168.77.2" };
const POD1 = { ip: "10.210.1.1", gw: "10.210.1.254", identity: 1001 };
const POD2 = { ip: "10.210.2.1", gw: "10.210.2.254", identity: 2001 };
const REMOTE_NODE = 6;

const fx = new NetnsFixture();
let dp1: Datapath | undefined;
let dp2: Datapath | undefined;
const ifx = { h1: 0, h2: 0, vx1: 0, vx2: 0 };
const events2: VerdictEvent[] = [];
let drain2: () => number = () => 0;

function node(netns: string, podNetns: string, pod: typeof POD1, hostIf: string, vxIf: string, podIf: string): void {
  ipIn(netns, "link", "add", vxIf, "type", "vxlan", "external", "dstport", "4789", "nolearning");
  ipIn(netns, "link", "set", vxIf, "up");
  fx.addVeth({ netns: podNetns, ifname: podIf, cidr: `${pod.ip}/24` }, { netns, ifname: hostIf, cidr: `${pod.gw}/24` });
  ipIn(podNetns, "route", "add", "default", "via", pod.gw);
  for (const k of ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", `net.ipv4.conf.${vxIf}.rp_filter=0`]) {
    execIn(netns, "sysctl", ["-qw", k]);
  }
}

async function reaches(proto: "udp" | "tcp", port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", ns.pod1, process.execPath, "--import", "tsx", PROBE, "connect", proto, POD2.ip, String(port), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

function pod2Policy(): SubjectPolicy {
  return {
    subject: POD2.identity, ingressEnforced: true, egressEnforced: false,
    entries: [{ subject: POD2.identity, direction: "ingress", peer: POD1.identity, proto: PROTO_NUMBER.UDP, port: 7000, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 }],
  };
}

before(async () => {
  for (const n of Object.values(ns)) fx.addNetns(n);
  fx.addVeth({ netns: ns.node1, ifname: `${tag}u1`, cidr: `${UNDERLAY.node1}/24` }, { netns: ns.node2, ifname: `${tag}u2`, cidr: `${UNDERLAY.node2}/24` });
  node(ns.node1, ns.pod1, POD1, `${tag}h1`, `${tag}v1`, `${tag}p1`);
  node(ns.node2, ns.pod2, POD2, `${tag}h2`, `${tag}v2`, `${tag}p2`);
  ifx.h1 = ifindexIn(ns.node1, `${tag}h1`);
  ifx.h2 = ifindexIn(ns.node2, `${tag}h2`);
  ifx.vx1 = ifindexIn(ns.node1, `${tag}v1`);
  ifx.vx2 = ifindexIn(ns.node2, `${tag}v2`);

  // Each node has its own agent state: separate pinned maps per scope.
  dp1 = Datapath.load(`test-${tag}-node1`);
  dp2 = Datapath.load(`test-${tag}-node2`);
  for (const dp of [dp1, dp2]) dp.clearAll();
  dp1.setSubjectPolicy({ subject: POD1.identity, ingressEnforced: false, egressEnforced: false, entries: [] }, [{ ip: POD1.ip, ifindex: ifx.h1 }]);
  dp1.setIpcache({ cidr: `${POD2.ip}/32`, identity: POD2.identity, tunnelEndpoint: UNDERLAY.node2 });
  dp1.setIpcache({ cidr: `${UNDERLAY.node2}/32`, identity: REMOTE_NODE, node: true });
  dp2.setSubjectPolicy(pod2Policy(), [{ ip: POD2.ip, ifindex: ifx.h2 }]);
  dp2.setIpcache({ cidr: `${POD1.ip}/32`, identity: POD1.identity, tunnelEndpoint: UNDERLAY.node1 });
  dp2.setIpcache({ cidr: `${UNDERLAY.node1}/32`, identity: REMOTE_NODE, node: true });
  drain2 = dp2.onEvents((e) => events2.push(e));
  dp1.attachEndpoint(ifx.h1, ns.node1);
  dp1.attachOverlay(ifx.vx1, ns.node1);
  dp2.attachEndpoint(ifx.h2, ns.node2);
  dp2.attachOverlay(ifx.vx2, ns.node2);

  const server = fx.spawn(ns.pod2, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", "7000", "7001"]);
  await waitForLine(server, /^listening/, 15000);
});

after(() => {
  fx.cleanup(); // deleting the node netns removes their links and tc programs
  for (const dp of [dp1, dp2]) {
    dp?.close();
    dp?.unpin();
  }
});

test("a pod reaches a pod on another node through VXLAN when the receiver's policy allows the sender's identity", async () => {
  assert.equal(await reaches("udp", 7000), true, "udp 7000 round trip (request and reply both tunnelled)");
  assert.equal(await reaches("udp", 7001), false, "udp 7001 is not allowed");
  drain2();
  const drop = events2.find((e) => e.verdict === "dropped" && e.dport === 7001);
  assert.equal(drop?.srcIdentity, POD1.identity, "the receiving node took the identity from the VNI");
  assert.equal(drop?.reason, "policy denied (default deny)");
});

test("the identity comes from the VNI, not from the receiver's ipcache", async () => {
  // node1 now says pod1 is identity 1002; node2's ipcache still maps its address to 1001.
  dp1!.setEndpoint({ ip: POD1.ip, ifindex: ifx.h1, identity: 1002, ingressEnforced: false, egressEnforced: false });
  dp1!.clearConntrack();
  dp2!.clearConntrack();
  try {
    assert.equal(await reaches("udp", 7000), false);
    drain2();
    assert.ok(events2.some((e) => e.verdict === "dropped" && e.dport === 7000 && e.srcIdentity === 1002));
  } finally {
    dp1!.setEndpoint({ ip: POD1.ip, ifindex: ifx.h1, identity: POD1.identity, ingressEnforced: false, egressEnforced: false });
  }
});

test("a VNI from an outer source that is not a known node is dropped as such", async () => {
  dp2!.setIpcache({ cidr: `${UNDERLAY.node1}/32`, identity: REMOTE_NODE, node: false });
  dp1!.clearConntrack();
  dp2!.clearConntrack();
  const before = dp2!.dropCount(5);
  try {
    assert.equal(await reaches("udp", 7000), false);
    assert.ok(dp2!.dropCount(5) > before, "counted as VNI from unknown node");
    drain2();
    assert.ok(events2.some((e) => e.reason === "VNI from unknown node" && e.src === POD1.ip));
  } finally {
    dp2!.setIpcache({ cidr: `${UNDERLAY.node1}/32`, identity: REMOTE_NODE, node: true });
  }
  dp2!.clearConntrack();
  assert.equal(await reaches("udp", 7000), true, "trusted again once the node is known");
});

// A frame for a node's own address inside the tunnel: Membrane never tunnels one (node addresses carry no tunnel
// endpoint), so node1 is made to here (its ipcache entry for node2's address names node2 as tunnel endpoint).
test("a frame for the node's own address that arrives inside the tunnel is judged by the host's ingress policy, the VNI's identity as the peer", async () => {
  const HOST_PORT = 7100;
  const server = fx.spawn(ns.node2, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", String(HOST_PORT), String(HOST_PORT + 1)]);
  await waitForLine(server, /^listening/, 15000);
  // node2 answers pod1 on the underlay (the host's replies are not tunnelled).
  ipIn(ns.node2, "route", "add", `${POD1.ip}/32`, "via", UNDERLAY.node1);
  dp1!.setIpcache({ cidr: `${UNDERLAY.node2}/32`, identity: REMOTE_NODE, node: true, tunnelEndpoint: UNDERLAY.node2 });
  dp2!.setSubjectPolicy({
    subject: 1, ingressEnforced: true, egressEnforced: false,
    entries: [{ subject: 1, direction: "ingress", peer: POD1.identity, proto: PROTO_NUMBER.UDP, port: HOST_PORT, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 9 }],
  });
  const toNode2 = async (port: number): Promise<boolean> => {
    try {
      await run("ip", ["netns", "exec", ns.pod1, process.execPath, "--import", "tsx", PROBE, "connect", "udp", UNDERLAY.node2, String(port), "1500"], { cwd: root });
      return true;
    } catch {
      return false;
    }
  };
  try {
    // Not enforced: passes as before (the probe can succeed through the tunnel).
    dp2!.setHostAddress({ ip: UNDERLAY.node2, ingressEnforced: false, egressEnforced: false });
    assert.equal(await toNode2(HOST_PORT + 1), true, "host ingress not enforced: the tunnelled frame reaches the node");
    dp2!.setHostAddress({ ip: UNDERLAY.node2, ingressEnforced: true, egressEnforced: false });
    dp2!.setMonitorAggregation("medium"); // the agent's default: allowed new connections are reported too
    dp2!.clearConntrack();
    drain2();
    events2.length = 0;
    assert.equal(await toNode2(HOST_PORT), true, "allowed for pod1's identity (from the VNI)");
    assert.equal(await toNode2(HOST_PORT + 1), false, "another port: the host's default deny");
    drain2();
    const drop = events2.find((e) => e.verdict === "dropped" && e.dport === HOST_PORT + 1);
    assert.deepEqual([drop?.srcIdentity, drop?.dstIdentity, drop?.reason], [POD1.identity, 1, "policy denied (default deny)"], JSON.stringify(events2.map((e) => [e.verdict, e.dport, e.srcIdentity, e.dstIdentity, e.reason])));
    assert.ok(events2.some((e) => e.verdict === "forwarded" && e.dport === HOST_PORT && e.ruleId === 9 && e.srcIdentity === POD1.identity && e.dstIdentity === 1), "the allow names its rule");
  } finally {
    dp2!.pruneHostAddresses([]);
    dp2!.setSubjectPolicy({ subject: 1, ingressEnforced: false, egressEnforced: false, entries: [] });
    dp1!.setIpcache({ cidr: `${UNDERLAY.node2}/32`, identity: REMOTE_NODE, node: true });
    ipIn(ns.node2, "route", "del", `${POD1.ip}/32`, "via", UNDERLAY.node1);
  }
});

// A pod's first packet can leave before its node's ipcache names the remote pod (the operator's push of a pod that
// just got its address is on its way): that packet is the world's and takes the host's route. What the datapath
// decided for it must not outlive it: once the ipcache names the pod, the next packet of the same connection (here the
// kernel's retransmitted SYN) goes through the tunnel with the sender's identity.
test("a connection whose first SYN left before the node's ipcache knew the remote pod connects through the tunnel once the ipcache names it (the retransmitted SYN is not held to the underlay)", async () => {
  const PORT = 7200;
  const WORLD = 2;
  const server = fx.spawn(ns.pod2, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(PORT)]);
  await waitForLine(server, /^listening/, 15000);
  const policy = pod2Policy();
  dp2!.setSubjectPolicy({ ...policy, entries: [...policy.entries, { ...policy.entries[0]!, proto: PROTO_NUMBER.TCP, port: PORT, ruleId: 2 }] });
  // As on the real nodes: each node routes the other's pod CIDR on the underlay, so an address the ipcache does not
  // name still arrives at its node, without an identity (the world's, which pod2's policy does not allow).
  ipIn(ns.node1, "route", "add", "10.210.2.0/24", "via", UNDERLAY.node2);
  dp1!.deleteIpcache(`${POD2.ip}/32`);
  dp1!.clearConntrack();
  dp2!.clearConntrack();
  drain2();
  events2.length = 0;
  try {
    const client = run("ip", ["netns", "exec", ns.pod1, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", POD2.ip, String(PORT), "20000"], { cwd: root }).then(
      () => true,
      () => false,
    );
    const firstSyn = (): VerdictEvent | undefined => {
      drain2();
      return events2.find((e) => e.verdict === "dropped" && e.dport === PORT);
    };
    for (let i = 0; i < 150 && !firstSyn(); i++) await new Promise((r) => setTimeout(r, 100));
    const drop = firstSyn();
    assert.deepEqual([drop?.srcIdentity, drop?.reason], [WORLD, "policy denied (default deny)"], `the first SYN reached node2 on the underlay as the world's: ${JSON.stringify(events2.map((e) => [e.verdict, e.dport, e.srcIdentity, e.reason]))}`);
    dp1!.setIpcache({ cidr: `${POD2.ip}/32`, identity: POD2.identity, tunnelEndpoint: UNDERLAY.node2 });
    assert.equal(await client, true, "the same connection is answered once node1's ipcache names pod2 (within the client's 20 s)");
  } finally {
    dp1!.setIpcache({ cidr: `${POD2.ip}/32`, identity: POD2.identity, tunnelEndpoint: UNDERLAY.node2 });
    ipIn(ns.node1, "route", "del", "10.210.2.0/24", "via", UNDERLAY.node2);
    dp2!.setSubjectPolicy(policy);
    server.kill();
  }
});
