// Real packets through the ClusterIP translation: a pod netns dials a Service's ClusterIP and the datapath's policy
// (attached on the host end of its veth) judges the backend it was translated to, for TCP and UDP, IPv4 and IPv6 (and an
// IPv4 ClusterIP dialled from an IPv6 socket as a v4-mapped address), as endpoints change; and a node's address at a
// NodePort, both families.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import type { Frontend } from "../../core/service-translation.ts";
import { Datapath } from "../bpf/datapath.ts";
import type { VerdictEvent } from "../bpf/layout.ts";
import { NetnsFixture, ifindexIn, waitForLine } from "../bpf/netns.ts";
import { BPFFS_ROOT, cgroupProgramIds, closePinnedMap, openPinnedMap } from "../bpf/loader.ts";
import { CGROUP2_ROOT } from "../runtime/connect-enforcer.ts";
import { nodeKey, SVC6_LAYOUT, SVC_LAYOUT } from "./layout.ts";
import { ServiceTranslator } from "./translator.ts";

const run = promisify(execFile);
const PROBE = new URL("../bpf/probe.ts", import.meta.url).pathname;
const tag = `svc${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IP = "10.203.0.1";
const BACKEND_IP = "10.203.0.2";
const VIP = "10.96.203.10";
const POD_IP6 = "fd00:203::1";
const BACKEND_IP6 = "fd00:203::2";
const VIP6 = "fd00:96::203:10";
/** A node's address for the NodePort tests: off the pod's link (routed to the host side, where nothing has it). */
const NODE_IP = "10.204.0.3";
const NODE_IP6 = "fd00:204::3";
const POD_ID = 1300;
const BACKEND_ID = 2300;

/** One dial from a netns: TCP connect + echo, UDP send (unconnected, or connected first) + echo; prints what the application saw. */
const DIAL = `
const [proto, host, port, mode] = process.argv.slice(1);
const out = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
setTimeout(() => out({ ok: false, code: "TIMEOUT" }), 1500);
if (proto === "tcp") {
  const net = require("node:net");
  const s = net.connect({ host, port: Number(port) }, () => { const peer = s.remoteAddress + ":" + s.remotePort; s.write("ping"); s.on("data", () => out({ ok: true, peer })); });
  s.on("error", (e) => out({ ok: false, code: e.code }));
} else {
  const s = require("node:dgram").createSocket(host.includes(":") ? "udp6" : "udp4");
  s.on("message", (m, r) => out({ ok: true, from: r.address + ":" + r.port, ...(mode === "connected" ? { peer: s.remoteAddress().address + ":" + s.remoteAddress().port } : {}) }));
  s.on("error", (e) => out({ ok: false, code: e.code }));
  if (mode === "connected") s.connect(Number(port), host, () => s.send("ping"));
  else s.send("ping", Number(port), host);
}`;

/** IPv6-only echo servers on the backend's side: TCP 8090, UDP 5354. */
const SERVE6 = `
let pending = 2;
const ready = () => { if (--pending === 0) console.log("listening"); };
require("node:net").createServer((s) => s.pipe(s).on("error", () => s.destroy())).listen({ port: 8090, host: "::", ipv6Only: true }, ready);
const u = require("node:dgram").createSocket({ type: "udp6", ipv6Only: true });
u.on("message", (m, r) => u.send(m, r.port, r.address));
u.bind(5354, "::", ready);`;

interface Dialled {
  ok: boolean;
  code?: string;
  peer?: string;
  from?: string;
}

async function dial(netns: string, proto: "tcp" | "udp", host: string, port: number, mode = ""): Promise<Dialled> {
  const { stdout } = await run("ip", ["netns", "exec", netns, process.execPath, "-e", DIAL, proto, host, String(port), mode]);
  return JSON.parse(stdout.trim()) as Dialled;
}

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let translator: ServiceTranslator | undefined;
let hostIfindex = 0;
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;
const log = pino({ level: "warn" });

const frontend = (port: number, protocol: "TCP" | "UDP", backends: { address: string; port: number }[], address = VIP): Frontend => ({
  namespace: "shop", service: "web", portName: "", address, port, protocol, backends,
});
let rule = 500;
const allow = (proto: number, port: number): PolicyEntry => ({ subject: POD_ID, direction: "egress", peer: BACKEND_ID, proto, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: rule++ });
const egress = (entries: PolicyEntry[]): void => {
  dp!.setSubjectPolicy({ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries }, [{ ip: POD_IP, ifindex: hostIfindex }, { ip: POD_IP6, ifindex: hostIfindex }]);
  dp!.clearConntrack();
};

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_HOST);
  fx.addVeth({ netns: NS_POD, ifname: `${tag}p`, cidr: `${POD_IP}/24` }, { netns: NS_HOST, ifname: `${tag}h`, cidr: `${BACKEND_IP}/24` });
  // Untranslated, the ClusterIP would leave the pod towards the host side (and find nothing there).
  await run("ip", ["-n", NS_POD, "route", "add", "default", "via", BACKEND_IP]);
  hostIfindex = ifindexIn(NS_HOST, `${tag}h`);
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "none" });
  dp.setIpcache({ cidr: `${BACKEND_IP}/32`, identity: BACKEND_ID });
  drain = dp.onEvents((e) => events.push(e));
  dp.attachEndpoint(hostIfindex, NS_HOST);
  for (const [ns, ifname, addr] of [[NS_POD, `${tag}p`, POD_IP6], [NS_HOST, `${tag}h`, BACKEND_IP6]] as const)
    await run("ip", ["-n", ns, "addr", "add", `${addr}/64`, "dev", ifname, "nodad"]);
  await run("ip", ["-n", NS_POD, "-6", "route", "add", "default", "via", BACKEND_IP6]);
  dp.setIpcache({ cidr: `${BACKEND_IP6}/128`, identity: BACKEND_ID });
  const servers: ChildProcess[] = [
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080", "8081"]),
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", "5353"]),
    fx.spawn(NS_HOST, process.execPath, ["-e", SERVE6]),
  ];
  await Promise.all(servers.map((s) => waitForLine(s, /^listening/, 15000)));
  translator = new ServiceTranslator({ log, scope: `test-${tag}-svc` });
  translator.start();
  translator.setScope([fs.statSync(`/var/run/netns/${NS_POD}`).ino]);
});

after(() => {
  translator?.remove();
  try {
    if (dp && hostIfindex) dp.detachEndpoint(hostIfindex, NS_HOST);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

describe("ClusterIP translation at the socket, judged by policy as the backend", () => {
  it("TCP to the ClusterIP reaches the backend when egress allows only the backend's identity; the application still sees the ClusterIP", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP, port: 8080 }])]);
    egress([allow(PROTO_NUMBER.TCP, 8080)]);
    events.length = 0;
    assert.deepEqual(await dial(NS_POD, "tcp", VIP, 80), { ok: true, peer: `${VIP}:80` });
    drain();
    const fwd = events.find((e) => e.verdict === "forwarded" && e.proto === PROTO_NUMBER.TCP && e.src === POD_IP);
    assert.ok(fwd, "a forwarded flow");
    assert.equal(fwd.dst, BACKEND_IP);
    assert.equal(fwd.dport, 8080);
    assert.equal(fwd.dstIdentity, BACKEND_ID);
    assert.ok(!events.some((e) => e.dst === VIP), "no packet to the ClusterIP");
  });

  it("without an allow for the backend, the connect is dropped with the backend (not world) as destination", async () => {
    egress([allow(PROTO_NUMBER.TCP, 9999)]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "tcp", VIP, 80)).ok, false);
    drain();
    const drop = events.find((e) => e.verdict === "dropped" && e.src === POD_IP);
    assert.ok(drop, "a drop event");
    assert.equal(drop.dst, BACKEND_IP);
    assert.equal(drop.dport, 8080);
    assert.equal(drop.dstIdentity, BACKEND_ID);
  });

  it("UDP, unconnected and connected: sent to the backend, the reply comes from the ClusterIP", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP, port: 8080 }]), frontend(53, "UDP", [{ address: BACKEND_IP, port: 5353 }])]);
    egress([allow(PROTO_NUMBER.UDP, 5353)]);
    assert.deepEqual(await dial(NS_POD, "udp", VIP, 53), { ok: true, from: `${VIP}:53` });
    assert.deepEqual(await dial(NS_POD, "udp", VIP, 53, "connected"), { ok: true, from: `${VIP}:53`, peer: `${VIP}:53` });
    egress([allow(PROTO_NUMBER.TCP, 8080)]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "udp", VIP, 53)).ok, false, "UDP denied once only TCP is allowed");
    drain();
    assert.ok(events.some((e) => e.verdict === "dropped" && e.proto === PROTO_NUMBER.UDP && e.dst === BACKEND_IP && e.dport === 5353), "UDP drop names the backend");
  });

  it("endpoints change: no ready backend refuses the connect (ECONNREFUSED), a new backend is used at once, a removed Service is no longer translated", async () => {
    egress([allow(PROTO_NUMBER.TCP, 8080), allow(PROTO_NUMBER.TCP, 8081)]);
    assert.deepEqual(translator!.set([frontend(80, "TCP", [])]), { frontends: 1, backends: 0, refusing: 1 });
    assert.deepEqual(await dial(NS_POD, "tcp", VIP, 80), { ok: false, code: "ECONNREFUSED" });
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP, port: 8081 }])]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "tcp", VIP, 80)).ok, true);
    drain();
    assert.ok(events.some((e) => e.verdict === "forwarded" && e.dst === BACKEND_IP && e.dport === 8081), "the new backend's port");
    translator!.set([]);
    assert.equal((await dial(NS_POD, "tcp", VIP, 80)).code, "TIMEOUT", "the ClusterIP itself goes nowhere here");
  });

  it("goes ahead of the connect4 programs already on the cgroup root (BPF_F_BEFORE), so one appended later, as the runtime enforcer's is, sees the backend", () => {
    const other = new ServiceTranslator({ log, scope: `test-${tag}-svc2` });
    try {
      other.start(); // stands in for any connect4 program; attached after ours, BPF_F_BEFORE puts it first
      const ids = cgroupProgramIds(CGROUP2_ROOT, 10);
      const ours = translator!.programIds().get("membrane_svc_connect4")!;
      const theirs = other.programIds().get("membrane_svc_connect4")!;
      assert.ok(ids.includes(ours) && ids.includes(theirs), `both attached: ${ids.join(",")}`);
      assert.equal(ids[0], theirs, "the last translator attached runs first");
      // Restarting ours (the agent's restart) switches its pinned link in place and loads a new program.
      translator!.close();
      translator!.start();
      const after = cgroupProgramIds(CGROUP2_ROOT, 10);
      assert.equal(after.length, ids.length, "no link added or lost by the restart");
      assert.ok(after.includes(translator!.programIds().get("membrane_svc_connect4")!));
    } finally {
      other.remove();
    }
  });

  it("a network namespace outside the scope is not translated (another node's or the host's processes)", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP, port: 8080 }])]);
    egress([allow(PROTO_NUMBER.TCP, 8080)]);
    assert.equal((await dial(NS_POD, "tcp", VIP, 80)).ok, true);
    assert.equal((await dial(NS_HOST, "tcp", VIP, 80)).ok, false);
  });
});

describe("IPv6 ClusterIPs, and IPv4 ones dialled from an IPv6 socket", () => {
  it("the object's IPv4 and IPv6 maps (node addresses included) have the key and value sizes the agent writes", () => {
    const scope = `test-${tag}-svc`;
    const sizes: [string, number, number][] = [
      ["membrane_svc_frontends", SVC_LAYOUT.frontendKey.size, SVC_LAYOUT.frontend.size],
      ["membrane_svc_backends", SVC_LAYOUT.backendKey.size, SVC_LAYOUT.backend.size],
      ["membrane_svc_revnat", SVC_LAYOUT.revnatKey.size, SVC_LAYOUT.revnat.size],
      ["membrane_svc6_frontends", SVC6_LAYOUT.frontendKey.size, SVC_LAYOUT.frontend.size],
      ["membrane_svc6_backends", SVC_LAYOUT.backendKey.size, SVC6_LAYOUT.backend.size],
      ["membrane_svc6_revnat", SVC6_LAYOUT.revnatKey.size, SVC6_LAYOUT.revnat.size],
      ["membrane_svc_nodes", nodeKey("10.0.0.1").key.length, 4],
      ["membrane_svc6_nodes", nodeKey("fd00::1").key.length, 4],
    ];
    for (const [name, key, value] of sizes) {
      const m = openPinnedMap(path.join(BPFFS_ROOT, scope, name), name);
      try {
        assert.deepEqual([m.keySize, m.valueSize], [key, value], name);
      } finally {
        closePinnedMap(m);
      }
    }
  });

  it("TCP and UDP to an IPv6 ClusterIP reach the IPv6 backend, judged as the backend; the application sees the ClusterIP", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP6, port: 8090 }], VIP6), frontend(53, "UDP", [{ address: BACKEND_IP6, port: 5354 }], VIP6)]);
    egress([allow(PROTO_NUMBER.TCP, 8090), allow(PROTO_NUMBER.UDP, 5354)]);
    events.length = 0;
    assert.deepEqual(await dial(NS_POD, "tcp", VIP6, 80), { ok: true, peer: `${VIP6}:80` });
    drain();
    const fwd = events.find((e) => e.verdict === "forwarded" && e.proto === PROTO_NUMBER.TCP && e.src === POD_IP6);
    assert.ok(fwd, "a forwarded IPv6 flow");
    assert.deepEqual([fwd.dst, fwd.dport, fwd.dstIdentity], [BACKEND_IP6, 8090, BACKEND_ID]);
    assert.ok(!events.some((e) => e.dst === VIP6), "no packet to the IPv6 ClusterIP");
    assert.deepEqual(await dial(NS_POD, "udp", VIP6, 53), { ok: true, from: `${VIP6}:53` });
    assert.deepEqual(await dial(NS_POD, "udp", VIP6, 53, "connected"), { ok: true, from: `${VIP6}:53`, peer: `${VIP6}:53` });
  });

  it("an IPv6 backend without an allow is dropped naming it; an IPv6 frontend without ready backends refuses", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP6, port: 8090 }], VIP6), frontend(81, "TCP", [], VIP6)]);
    egress([allow(PROTO_NUMBER.TCP, 9999)]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "tcp", VIP6, 80)).ok, false);
    drain();
    const drop = events.find((e) => e.verdict === "dropped" && e.src === POD_IP6);
    assert.ok(drop, "a drop event");
    assert.deepEqual([drop.dst, drop.dport, drop.dstIdentity], [BACKEND_IP6, 8090, BACKEND_ID]);
    assert.deepEqual(await dial(NS_POD, "tcp", VIP6, 81), { ok: false, code: "ECONNREFUSED" });
  });

  it("an IPv4 ClusterIP dialled as ::ffff:a.b.c.d from an IPv6 socket goes to the IPv4 backend and shows the ClusterIP again", async () => {
    translator!.set([frontend(80, "TCP", [{ address: BACKEND_IP, port: 8080 }]), frontend(53, "UDP", [{ address: BACKEND_IP, port: 5353 }])]);
    egress([allow(PROTO_NUMBER.TCP, 8080), allow(PROTO_NUMBER.UDP, 5353)]);
    events.length = 0;
    assert.deepEqual(await dial(NS_POD, "tcp", `::ffff:${VIP}`, 80), { ok: true, peer: `::ffff:${VIP}:80` });
    drain();
    assert.ok(events.some((e) => e.verdict === "forwarded" && e.dst === BACKEND_IP && e.dport === 8080), "the IPv4 backend");
    assert.deepEqual(await dial(NS_POD, "udp", `::ffff:${VIP}`, 53), { ok: true, from: `::ffff:${VIP}:53` });
  });
});

describe("NodePorts: a node's address at a Service's node port, translated at the socket as a ClusterIP is", () => {
  const nodePorts = (): Frontend[] => [
    frontend(30080, "TCP", [{ address: BACKEND_IP, port: 8080 }], "0.0.0.0"),
    frontend(30053, "UDP", [{ address: BACKEND_IP, port: 5353 }], "0.0.0.0"),
    frontend(30080, "TCP", [{ address: BACKEND_IP6, port: 8090 }], "::"),
    frontend(30053, "UDP", [{ address: BACKEND_IP6, port: 5354 }], "::"),
  ];

  it("TCP and UDP to a node's IPv4 and IPv6 address at the node port reach the backend, judged as the backend (the node's address is not allowed); the application sees the node's address", async () => {
    translator!.setNodeAddresses([NODE_IP, NODE_IP6]);
    translator!.set(nodePorts());
    egress([allow(PROTO_NUMBER.TCP, 8080), allow(PROTO_NUMBER.UDP, 5353), allow(PROTO_NUMBER.TCP, 8090), allow(PROTO_NUMBER.UDP, 5354)]);
    events.length = 0;
    assert.deepEqual(await dial(NS_POD, "tcp", NODE_IP, 30080), { ok: true, peer: `${NODE_IP}:30080` });
    assert.deepEqual(await dial(NS_POD, "tcp", NODE_IP6, 30080), { ok: true, peer: `${NODE_IP6}:30080` });
    assert.deepEqual(await dial(NS_POD, "udp", NODE_IP, 30053), { ok: true, from: `${NODE_IP}:30053` });
    assert.deepEqual(await dial(NS_POD, "udp", NODE_IP6, 30053, "connected"), { ok: true, from: `${NODE_IP6}:30053`, peer: `${NODE_IP6}:30053` });
    drain();
    for (const [dst, proto, dport] of [[BACKEND_IP, PROTO_NUMBER.TCP, 8080], [BACKEND_IP6, PROTO_NUMBER.TCP, 8090], [BACKEND_IP, PROTO_NUMBER.UDP, 5353], [BACKEND_IP6, PROTO_NUMBER.UDP, 5354]] as const)
      assert.ok(events.some((e) => e.verdict === "forwarded" && e.dst === dst && e.proto === proto && e.dport === dport && e.dstIdentity === BACKEND_ID), `forwarded to ${dst} ${proto}/${dport}`);
    assert.ok(!events.some((e) => e.dst === NODE_IP || e.dst === NODE_IP6), "no packet to the node's address");
  });

  it("without an allow for the backend the IPv6 node port is dropped naming the backend; an address that is no node's is not translated, and its packet is judged as that address", async () => {
    translator!.setNodeAddresses([NODE_IP, NODE_IP6]);
    translator!.set(nodePorts());
    egress([allow(PROTO_NUMBER.TCP, 8080)]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "tcp", NODE_IP6, 30080)).ok, false);
    drain();
    const drop = events.find((e) => e.verdict === "dropped" && e.src === POD_IP6);
    assert.ok(drop, "a drop event");
    assert.deepEqual([drop.dst, drop.dport, drop.dstIdentity], [BACKEND_IP6, 8090, BACKEND_ID]);

    translator!.setNodeAddresses([NODE_IP6]);
    events.length = 0;
    assert.equal((await dial(NS_POD, "tcp", NODE_IP, 30080)).ok, false, `${NODE_IP} is no node's address any more`);
    drain();
    assert.ok(events.some((e) => e.verdict === "dropped" && e.dst === NODE_IP && e.dport === 30080), "dropped as the address itself, untranslated");
    translator!.setNodeAddresses([]);
  });
});
