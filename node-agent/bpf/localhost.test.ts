// Real packets from a node to its own pods (--allow-localhost, bpf/lib/localhost.h): by default (always) the node reaches
// them whatever their ingress policy says, as Kubernetes demands (the kubelet's probes); with policy, their ingress policy
// judges it as reserved:host's. A pod at reserved:init (adopted before the operator's first state) is reachable by its
// node in both modes, and by nothing else; it reaches nothing itself.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { IDENTITY } from "../../core/identity.ts";
import { PROTO_NUMBER } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import type { VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5i${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_NODE = `${tag}-node`;
const NS_OUT = `${tag}-out`;
// The pod's veth (programs on the node's end) and a link from the node to the outside, which the node forwards.
const POD_IP = "10.205.0.1";
const GATEWAY = "10.205.0.2";
const OUT_IP = "10.206.0.1";
const NODE_OUT_IP = "10.206.0.2";

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let podIfindex = 0;
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;

async function reaches(fromNetns: string, proto: "tcp" | "udp", host: string, port: number, source?: string): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", PROBE, "connect", proto, host, String(port), "1500", ...(source ? [source] : [])], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

/** The pod's endpoint entry as the agent writes it for an identity it does not know yet, or for `identity` (no allow entry). */
function endpointAt(identity: number): void {
  dp!.setEndpoint({ ip: POD_IP, ifindex: podIfindex, identity, ingressEnforced: true, egressEnforced: true });
  dp!.clearConntrack();
}

const KNOWN = 1000;

/** The pod at KNOWN with an ingress policy allowing only `fromEntities: host` on TCP 9090. */
function allowHostOn9090(): void {
  dp!.setSubjectPolicy(
    {
      subject: KNOWN,
      ingressEnforced: true,
      egressEnforced: true,
      entries: [{ subject: KNOWN, direction: "ingress", peer: IDENTITY.host, proto: PROTO_NUMBER.TCP, port: 9090, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 7 }],
    },
    [{ ip: POD_IP, ifindex: podIfindex }],
  );
  dp!.clearConntrack();
}

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_NODE);
  fx.addNetns(NS_OUT);
  fx.addVeth({ netns: NS_POD, ifname: `${tag}p`, cidr: `${POD_IP}/24` }, { netns: NS_NODE, ifname: `${tag}h`, cidr: `${GATEWAY}/24` });
  fx.addVeth({ netns: NS_OUT, ifname: `${tag}o`, cidr: `${OUT_IP}/24` }, { netns: NS_NODE, ifname: `${tag}n`, cidr: `${NODE_OUT_IP}/24` });
  ipIn(NS_POD, "route", "add", "default", "via", GATEWAY);
  ipIn(NS_OUT, "route", "add", "default", "via", NODE_OUT_IP);
  await run("ip", ["netns", "exec", NS_NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  podIfindex = ifindexIn(NS_NODE, `${tag}h`);
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  drain = dp.onEvents((e) => events.push(e));
  dp.attachEndpoint(podIfindex, NS_NODE);
  const servers = [
    fx.spawn(NS_POD, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "9090"]),
    fx.spawn(NS_POD, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", "5353"]),
    fx.spawn(NS_NODE, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080"]),
    fx.spawn(NS_OUT, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080"]),
  ];
  await Promise.all(servers.map((s) => waitForLine(s, /^listening/, 20_000)));
});

after(() => {
  try {
    if (dp && podIfindex) dp.detachEndpoint(podIfindex, NS_NODE);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

test("the node reaches a pod at reserved:init over TCP and UDP from its own addresses, the replies come back, and the flow is reserved:host's", async () => {
  endpointAt(IDENTITY.init);
  // As the kubelet's probes: from the address the node's route to the pod picks (the gateway, which no map names).
  assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), true, "tcp from the gateway address");
  assert.equal(await reaches(NS_NODE, "udp", POD_IP, 5353), true, "udp from the gateway address");
  // Another of the node's own addresses.
  assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090, NODE_OUT_IP), true, "tcp from the node's other address");
  drain();
  const allowed = events.find((e) => e.verdict === "forwarded" && e.dport === 9090 && e.src === GATEWAY);
  assert.ok(allowed, `a forwarded event for the node's connection in ${JSON.stringify(events.slice(-5), (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  assert.equal(allowed.srcIdentity, IDENTITY.host);
  assert.equal(allowed.dstIdentity, IDENTITY.init);
});

test("everything else stays closed at reserved:init: a connection the node forwards from outside and the pod's own connections", async () => {
  endpointAt(IDENTITY.init);
  events.length = 0;
  assert.equal(await reaches(NS_OUT, "tcp", POD_IP, 9090), false, "outside → pod, forwarded by the node");
  assert.equal(await reaches(NS_OUT, "udp", POD_IP, 5353), false, "outside → pod over UDP");
  assert.equal(await reaches(NS_POD, "tcp", GATEWAY, 8080), false, "pod → node");
  assert.equal(await reaches(NS_POD, "tcp", OUT_IP, 8080), false, "pod → outside");
  drain();
  const drop = events.find((e) => e.verdict === "dropped" && e.dport === 9090 && e.src === OUT_IP);
  assert.ok(drop, "the forwarded connection's drop is reported");
  assert.equal(drop.reason, "policy denied (default deny)");
  assert.equal(drop.srcIdentity, IDENTITY.world);
  assert.equal(drop.dstIdentity, IDENTITY.init);
  // Once the pod has its identity (its policy allowing nothing), the node still reaches it: --allow-localhost always.
  endpointAt(KNOWN);
  assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), true, "the node → a pod whose ingress allows nothing (always)");
  assert.equal(await reaches(NS_OUT, "tcp", POD_IP, 9090), false, "outside → that pod, forwarded by the node");
});

test("--allow-localhost always (the default): the node reaches its pods whatever their ingress policy says, over TCP and UDP, reported as reserved:host's", async () => {
  dp!.setLocalhostPolicy(false);
  endpointAt(KNOWN);
  events.length = 0;
  assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), true, "tcp from the gateway address");
  assert.equal(await reaches(NS_NODE, "udp", POD_IP, 5353), true, "udp from the gateway address");
  assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090, NODE_OUT_IP), true, "tcp from the node's other address");
  drain();
  const allowed = events.find((e) => e.verdict === "forwarded" && e.dport === 9090 && e.src === GATEWAY);
  assert.ok(allowed, "a forwarded event");
  assert.equal(allowed.srcIdentity, IDENTITY.host);
  assert.equal(allowed.dstIdentity, KNOWN);
});

test("--allow-localhost policy: the pod's ingress policy judges the node as reserved:host (fromEntities: host allows it, default deny drops it naming reserved:host); reserved:init pods stay reachable", async () => {
  dp!.setLocalhostPolicy(true);
  try {
    endpointAt(KNOWN);
    events.length = 0;
    assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), false, "default deny drops the node");
    drain();
    const drop = events.find((e) => e.verdict === "dropped" && e.dport === 9090 && e.src === GATEWAY);
    assert.ok(drop, "the node's drop is reported");
    assert.equal(drop.reason, "policy denied (default deny)");
    assert.equal(drop.srcIdentity, IDENTITY.host, "judged as reserved:host, not world (the gateway address is in no map)");
    allowHostOn9090();
    assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), true, "fromEntities host allows the node (from the gateway)");
    assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090, NODE_OUT_IP), true, "and from its other address");
    assert.equal(await reaches(NS_NODE, "udp", POD_IP, 5353), false, "but not on a port the rule does not name");
    assert.equal(await reaches(NS_OUT, "tcp", POD_IP, 9090), false, "an outside host forwarded by the node is not the host");
    endpointAt(IDENTITY.init);
    assert.equal(await reaches(NS_NODE, "tcp", POD_IP, 9090), true, "a reserved:init pod: the node reaches it in policy mode too");
  } finally {
    dp!.setLocalhostPolicy(false);
  }
});
