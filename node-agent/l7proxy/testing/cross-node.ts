// Test support: HTTP rules whose client and destination live on different simulated nodes (netns, collect-metadata
// VXLAN, the datapath on each, each node's L7 proxy as its own process), over the overlay or, with `wireguard`,
// routed through real WireGuard devices between the nodes (wireguard-go, strict mode) with every request
// captured on the underlay. cross-node.test.ts and cross-node-wireguard.test.ts run the same cases; over the overlay
// the pods and the nodes are dual-stack too, and the ingress and egress cases run again over IPv6.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pino from "pino";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../../core/model.ts";
import { Datapath } from "../../bpf/datapath.ts";
import { DROP_REASONS, type VerdictEvent } from "../../bpf/layout.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "../../bpf/netns.ts";
import { WireguardEncryption } from "../../encryption/wireguard.ts";
import { UAPI_DIR } from "../../encryption/wireguard-uapi.ts";
import { DEFAULT_LIMITS, writeProxyConfig, type ProxyConfig } from "../config.ts";
import { ROOT } from "./topology.ts";

/** What a capture on an interface saw (e2e/capture.ts: the test passes it in). */
export interface UnderlayCapture {
  stop(): Promise<{ readonly frames: number; readonly markerFrames: number }>;
}

export interface CrossNodeOptions {
  /** Real WireGuard between the nodes, routed (pod packets into the device without VXLAN), strict. */
  readonly wireguard?: {
    /** The wireguard-go binary. */
    readonly binary: string;
    /** Starts capturing frames on `ifname` in `netns` that carry any of `markers`. */
    readonly capture: (netns: string, ifname: string, markers: readonly string[]) => Promise<UnderlayCapture>;
  };
}

/** Strings only an HTTP exchange of these tests carries: the request line's path, the deathstar's and the proxy's answers. */
const CLEAR_TEXT = ["/v1/", "Ship landed", "Access denied", "deathstar"];

/** Registers the cross-node L7 cases (before/after included) in the calling test file. */
export function crossNodeL7Suite(opts: CrossNodeOptions = {}): void {
  const run = promisify(execFile);
  const wg = opts.wireguard;
  const tag = `m7${wg ? "w" : "n"}${process.pid % 100000}`;
  const XWING = 1000;
  const DEATHSTAR = 2000;
  const OTHER = 3000; // an identity that is neither pod's
  const REMOTE_NODE = 6;
  const UNDERLAY = { node1: "192.168.78.1", node2: "192.168.78.2" };
  const POD1 = { ip: "10.211.1.1", gw: "10.211.1.254", ip6: "fd7e:211:1::1", gw6: "fd7e:211:1::fe" }; // the x-wing, on node1
  const POD2 = { ip: "10.211.2.1", gw: "10.211.2.254", ip6: "fd7e:211:2::1", gw6: "fd7e:211:2::fe" }; // the deathstar, on node2
  // Over the overlay the nodes are dual-stack (the underlay's IPv6 addresses are their proxies' IPv6 addresses); the
  // tunnel itself stays IPv4. The WireGuard variant stays IPv4 only (its peers' allowed IPs hold IPv4 pods).
  const dual = !wg;
  const UNDERLAY6 = { node1: "fd7e:78::1", node2: "fd7e:78::2" };
  const INGRESS_PORT = 10080; // node2's proxy: the deathstar's ingress rules
  const EGRESS_PORT = 10081; // node1's proxy: the x-wing's egress rules
  const INGRESS_RULE = 9;
  const EGRESS_RULE = 7;
  const PLAIN_RULE = 11;

  const ns = { node1: `${tag}-n1`, node2: `${tag}-n2`, pod1: `${tag}-p1`, pod2: `${tag}-p2` };
  const fx = new NetnsFixture();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-l7n-"));
  const dp: { node1?: Datapath; node2?: Datapath } = {};
  const proxies: { child: ChildProcess; log: string }[] = [];
  const events2: VerdictEvent[] = [];
  let drain2: () => number = () => 0;
  let deathstarLog = "";
  const devices: { node1?: WireguardEncryption; node2?: WireguardEncryption } = {};
  const wireguardPidFiles: string[] = [];

  function node(netns: string, podNetns: string, pod: typeof POD1, i: 1 | 2): { host: number; vxlan: number; underlay: number } {
    ipIn(netns, "link", "add", `${tag}v${i}`, "type", "vxlan", "external", "dstport", "4789", "nolearning");
    ipIn(netns, "link", "set", `${tag}v${i}`, "up");
    fx.addVeth({ netns: podNetns, ifname: `${tag}p${i}`, cidr: `${pod.ip}/24` }, { netns, ifname: `${tag}h${i}`, cidr: `${pod.gw}/24` });
    ipIn(podNetns, "route", "add", "default", "via", pod.gw);
    if (dual) {
      ipIn(podNetns, "-6", "addr", "add", `${pod.ip6}/64`, "dev", `${tag}p${i}`, "nodad");
      ipIn(netns, "-6", "addr", "add", `${pod.gw6}/64`, "dev", `${tag}h${i}`, "nodad");
      ipIn(podNetns, "-6", "route", "add", "default", "via", pod.gw6);
      execIn(netns, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
    }
    // Routed through WireGuard, pods get the device's MTU (podMtu): their packets enter the device as they are.
    if (wg) {
      ipIn(podNetns, "link", "set", `${tag}p${i}`, "mtu", "1420");
      ipIn(netns, "link", "set", `${tag}h${i}`, "mtu", "1420");
    }
    for (const k of ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", `net.ipv4.conf.${tag}v${i}.rp_filter=0`, `net.ipv4.conf.${tag}u${i}.rp_filter=0`]) {
      execIn(netns, "sysctl", ["-qw", k]);
    }
    return { host: ifindexIn(netns, `${tag}h${i}`), vxlan: ifindexIn(netns, `${tag}v${i}`), underlay: ifindexIn(netns, `${tag}u${i}`) };
  }

  const entry = (subject: number, direction: "ingress" | "egress", peer: number, proxyPort: number, ruleId: number): PolicyEntry => ({
    subject, direction, peer, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort, ruleId,
  });

  /** A pod's endpoint addresses behind its node's veth: IPv4, and IPv6 when dual-stack. */
  const addrs = (pod: typeof POD1, ifindex: number): { ip: string; ifindex: number }[] =>
    [{ ip: pod.ip, ifindex }, ...(dual ? [{ ip: pod.ip6, ifindex }] : [])];

  /** The x-wing's egress: a plain allow to the deathstar, or through node1's proxy. */
  function xwingPolicy(proxied: boolean): SubjectPolicy {
    return { subject: XWING, ingressEnforced: false, egressEnforced: true, entries: [entry(XWING, "egress", DEATHSTAR, proxied ? EGRESS_PORT : 0, proxied ? EGRESS_RULE : PLAIN_RULE)] };
  }

  /** The deathstar's ingress on 80: from `peer`, plain or through node2's proxy. */
  function deathstarPolicy(peer: number, proxied: boolean): SubjectPolicy {
    return { subject: DEATHSTAR, ingressEnforced: true, egressEnforced: false, entries: [entry(DEATHSTAR, "ingress", peer, proxied ? INGRESS_PORT : 0, proxied ? INGRESS_RULE : PLAIN_RULE)] };
  }

  /** Starts `membrane l7proxy` in a node's netns (nsenter: /sys/fs/bpf stays the host's) with `config`. */
  async function startProxy(netns: string, scope: string, config: ProxyConfig): Promise<{ child: ChildProcess; log: string }> {
    const file = path.join(dir, `${netns}.json`);
    writeProxyConfig(file, config);
    const child = spawn("nsenter", [`--net=/var/run/netns/${netns}`, process.execPath, "--import", "tsx", path.join(ROOT, "cli/main.ts"), "l7proxy", "--config", file, "--bpf-scope", scope, "--log-flows"], {
      cwd: ROOT, stdio: ["ignore", "pipe", "pipe"],
    });
    const p = { child, log: "" };
    proxies.push(p);
    child.stdout?.on("data", (d: Buffer) => (p.log += d.toString()));
    child.stderr?.on("data", (d: Buffer) => process.stderr.write(d));
    await waitForLine(child, /l7 proxy ready/, 30000);
    return p;
  }

  interface Flow { method: string; path: string; verdict: string; status: number; rule?: { ruleId: number }; source: { identity: number } }

  /** The flows a proxy logged (--log-flows), oldest first; with `since`, those logged from that time (ms) on. */
  function flows(p: { log: string }, since = 0): Flow[] {
    return p.log
      .split("\n")
      .filter((l) => l.includes('"http request"'))
      .map((l) => JSON.parse(l) as { time: number; flow: Flow })
      .filter((l) => l.time >= since)
      .map((l) => l.flow);
  }

  /** The flows logged since `since` once there are `n` of them (the proxy's log reaches us through a pipe, a moment after the reply). */
  async function flowsSoon(p: { log: string }, since: number, n: number): Promise<Flow[]> {
    for (let i = 0; i < 40 && flows(p, since).length < n; i++) await new Promise((r) => setTimeout(r, 50));
    return flows(p, since);
  }

  /** Underlay frames that carried an HTTP exchange in clear, per request (with WireGuard: none may). */
  const clearFrames: { request: string; frames: number }[] = [];

  /** curl in the x-wing's netns: the status and body, or undefined when the connection failed. With WireGuard, the
   * underlay between the nodes is captured meanwhile and any frame carrying the exchange in clear is recorded. */
  async function xwing(method: string, p: string, host = POD2.ip): Promise<{ status: number; body: string } | undefined> {
    const capture = wg ? await wg.capture(ns.node1, `${tag}u1`, CLEAR_TEXT) : undefined;
    try {
      const { stdout } = await run("ip", ["netns", "exec", ns.pod1, "curl", "-sS", "--max-time", "4", "-X", method, ...(method === "GET" ? [] : ["-d", ""]), "-w", "\n@@%{http_code}", `http://${host.includes(":") ? `[${host}]` : host}${p}`]);
      const at = stdout.lastIndexOf("\n@@");
      return { status: Number(stdout.slice(at + 3)), body: stdout.slice(0, at) };
    } catch {
      return undefined;
    } finally {
      const seen = await capture?.stop();
      if (seen && seen.markerFrames > 0) clearFrames.push({ request: `${method} ${p}`, frames: seen.markerFrames });
    }
  }

  /** With WireGuard: no request of the test crossed the underlay in clear, nor any answer. */
  function assertNothingInClear(): void {
    if (wg) assert.deepEqual(clearFrames, [], "no frame on the underlay carries the HTTP exchange in clear");
  }

  /** Packets a node's tunnel device (VXLAN, or WireGuard when routed) has received so far. */
  function tunnelRxPackets(netns: string, ifname: string): number {
    const [link] = JSON.parse(ipIn(netns, "-s", "-j", "link", "show", "dev", ifname)) as { stats64: { rx: { packets: number } } }[];
    return link!.stats64.rx.packets;
  }

  /** node1's tunnel device: the answers of node2 arrive there. */
  const tunnel1 = (): string => devices.node1?.ifname ?? `${tag}v1`;

  /** node2's drops so far, for a failed assertion: which packet came first. */
  function droppedText(): string {
    return events2.filter((e) => e.verdict === "dropped").map((e) => `${e.src}:${e.sport} -> ${e.dst}:${e.dport} flags ${e.tcpFlags} identity ${e.srcIdentity} ${e.reason}`).join(", ");
  }

  function resetConntrack(): void {
    dp.node1!.clearConntrack();
    dp.node2!.clearConntrack();
  }

  let ingressProxy: { child: ChildProcess; log: string };
  let egressProxy: { child: ChildProcess; log: string };

  before(async () => {
    for (const n of Object.values(ns)) fx.addNetns(n);
    fx.addVeth({ netns: ns.node1, ifname: `${tag}u1`, cidr: `${UNDERLAY.node1}/24` }, { netns: ns.node2, ifname: `${tag}u2`, cidr: `${UNDERLAY.node2}/24` });
    const if1 = node(ns.node1, ns.pod1, POD1, 1);
    const if2 = node(ns.node2, ns.pod2, POD2, 2);
    // As the local cluster routes them: each node reaches the other's pods over the underlay (the node's own traffic; pods' goes through the tunnel).
    ipIn(ns.node1, "route", "add", `${POD2.ip}/32`, "via", UNDERLAY.node2);
    ipIn(ns.node2, "route", "add", `${POD1.ip}/32`, "via", UNDERLAY.node1);
    if (dual) {
      ipIn(ns.node1, "-6", "addr", "add", `${UNDERLAY6.node1}/64`, "dev", `${tag}u1`, "nodad");
      ipIn(ns.node2, "-6", "addr", "add", `${UNDERLAY6.node2}/64`, "dev", `${tag}u2`, "nodad");
      ipIn(ns.node1, "-6", "route", "add", `${POD2.ip6}/128`, "via", UNDERLAY6.node2);
      ipIn(ns.node2, "-6", "route", "add", `${POD1.ip6}/128`, "via", UNDERLAY6.node1);
    }

    dp.node1 = Datapath.load(`test-${tag}-node1`);
    dp.node2 = Datapath.load(`test-${tag}-node2`);
    for (const d of [dp.node1, dp.node2]) {
      d.clearAll();
      d.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
    }
    dp.node1.setSubjectPolicy(xwingPolicy(false), addrs(POD1, if1.host));
    dp.node1.setIpcache({ cidr: `${POD2.ip}/32`, identity: DEATHSTAR, tunnelEndpoint: UNDERLAY.node2 });
    dp.node1.setIpcache({ cidr: `${UNDERLAY.node2}/32`, identity: REMOTE_NODE, node: true });
    dp.node2.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, if2.host));
    dp.node2.setIpcache({ cidr: `${POD1.ip}/32`, identity: XWING, tunnelEndpoint: UNDERLAY.node1 });
    dp.node2.setIpcache({ cidr: `${UNDERLAY.node1}/32`, identity: REMOTE_NODE, node: true });
    if (dual) {
      dp.node1.setIpcache({ cidr: `${POD2.ip6}/128`, identity: DEATHSTAR, tunnelEndpoint: UNDERLAY.node2 });
      dp.node2.setIpcache({ cidr: `${POD1.ip6}/128`, identity: XWING, tunnelEndpoint: UNDERLAY.node1 });
    }
    drain2 = dp.node2.onEvents((e) => events2.push(e));
    for (const [d, netns, ifx] of [[dp.node1, ns.node1, if1], [dp.node2, ns.node2, if2]] as const) {
      d.attachEndpoint(ifx.host, netns);
      d.attachOverlay(ifx.vxlan, netns);
      d.attachHostDevice(ifx.underlay, netns);
    }
    if (wg) await startWireguard();

    const server = fx.spawn(ns.pod2, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), "0.0.0.0", "80"]);
    server.stdout?.on("data", (d: Buffer) => (deathstarLog += d.toString()));
    await waitForLine(server, /^listening/, 20000);
    if (dual) {
      const server6 = fx.spawn(ns.pod2, process.execPath, ["--import", "tsx", path.join(ROOT, "node-agent/l7proxy/testing/deathstar.ts"), POD2.ip6, "80"]);
      server6.stdout?.on("data", (d: Buffer) => (deathstarLog += d.toString()));
      await waitForLine(server6, /^listening/, 20000);
    }

    // node2's proxy: the deathstar's ingress rules (Cilium's star-wars rule plus GET /v1/ships); node1's: the x-wing's egress rules.
    dp.node2.redirect.setProxyAddress(UNDERLAY.node2, dual ? UNDERLAY6.node2 : undefined);
    dp.node2.redirect.serve(INGRESS_PORT);
    ingressProxy = await startProxy(ns.node2, `test-${tag}-node2`, {
      address: UNDERLAY.node2, ...(dual ? { address6: UNDERLAY6.node2 } : {}), limits: { ...DEFAULT_LIMITS, connectTimeoutMs: 1500 },
      ports: [{ port: INGRESS_PORT, direction: "ingress", http: [
        { ruleId: INGRESS_RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } },
        { ruleId: INGRESS_RULE, index: 1, rule: { method: "GET", path: "/v1/ships" } },
      ] }],
    });
    dp.node1.redirect.setProxyAddress(UNDERLAY.node1, dual ? UNDERLAY6.node1 : undefined);
    dp.node1.redirect.serve(EGRESS_PORT);
    egressProxy = await startProxy(ns.node1, `test-${tag}-node1`, {
      address: UNDERLAY.node1, ...(dual ? { address6: UNDERLAY6.node1 } : {}), limits: { ...DEFAULT_LIMITS, connectTimeoutMs: 1500 },
      ports: [{ port: EGRESS_PORT, http: [
        { ruleId: EGRESS_RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } },
        { ruleId: EGRESS_RULE, index: 1, rule: { method: "PUT", path: "/v1/exhaust-port" } },
      ] }],
    });
  });

  /** A WireGuard device on each node as the agent runs it (routed, strict), peered with the other's, each peer's allowed IPs its pod. */
  async function startWireguard(): Promise<void> {
    const log = pino({ level: "warn" });
    for (const [key, netns, d] of [["node1", ns.node1, dp.node1!], ["node2", ns.node2, dp.node2!]] as const) {
      const stateDir = fs.mkdtempSync(path.join(dir, `wg-${key}-`));
      wireguardPidFiles.push(path.join(stateDir, "wireguard-go.pid"));
      devices[key] = new WireguardEncryption({ nodeName: `${tag}-${key}`, netns, stateDir, binary: wg!.binary, vxlanPort: 4789, routing: "routed", strict: true, datapath: d, log });
      await devices[key].start();
    }
    const nodes = [
      { name: `${tag}-node1`, publicKey: devices.node1!.publicKey(), internalIP: UNDERLAY.node1 },
      { name: `${tag}-node2`, publicKey: devices.node2!.publicKey(), internalIP: UNDERLAY.node2 },
    ];
    await devices.node1!.setRemotePods(new Map([[UNDERLAY.node2, [`${POD2.ip}/32`]]]));
    await devices.node2!.setRemotePods(new Map([[UNDERLAY.node1, [`${POD1.ip}/32`]]]));
    await devices.node1!.setPeers(nodes);
    await devices.node2!.setPeers(nodes);
  }

  /** Stops each node's wireguard-go by the pid it recorded (its device goes with the namespace). */
  function stopWireguard(): void {
    for (const file of wireguardPidFiles) {
      const pid = fs.existsSync(file) ? Number.parseInt(fs.readFileSync(file, "utf8"), 10) : 0;
      try {
        if (pid > 0) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const d of [devices.node1, devices.node2]) {
      d?.stop();
      if (d) fs.rmSync(path.join(UAPI_DIR, `${d.ifname}.sock`), { force: true });
    }
  }

  after(async () => {
    stopWireguard();
    for (const p of proxies) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        const exited = new Promise((r) => p.child.once("exit", r));
        p.child.kill("SIGKILL");
        await exited;
      }
    }
    try {
      fx.cleanup(); // deleting the node netns removes their links and tc programs
    } finally {
      for (const d of [dp.node1, dp.node2]) {
        d?.close();
        d?.unpin();
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("ingress HTTP rule, client on another node: the connection from the tunnel is proxied on the destination's node and judged as the client's identity; the answers come back through the tunnel", async () => {
    drain2();
    events2.length = 0;
    const rx = tunnelRxPackets(ns.node1, tunnel1());
    const landing = await xwing("POST", "/v1/request-landing");
    assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
    const exhaust = await xwing("PUT", "/v1/exhaust-port");
    assert.deepEqual([exhaust?.status, exhaust?.body], [403, "Access denied"]);
    assert.doesNotMatch(deathstarLog, /exhaust-port/, "the denied request never reached the deathstar");
    // Each connection's SYN-ACK, answer and FIN at least: node2's proxy answered inside the tunnel, not on the underlay.
    assert.ok(tunnelRxPackets(ns.node1, tunnel1()) - rx >= 6, "node1 received the proxy's answers from the tunnel");
    const f = await flowsSoon(ingressProxy, 0, 2);
    const landed = f.find((x) => x.path === "/v1/request-landing");
    assert.deepEqual([landed?.verdict, landed?.status, landed?.rule?.ruleId, landed?.source.identity], ["forwarded", 200, INGRESS_RULE, XWING]);
    const denied = f.find((x) => x.path === "/v1/exhaust-port");
    assert.deepEqual([denied?.verdict, denied?.status, denied?.source.identity], ["denied", 403, XWING]);
    drain2();
    assert.deepEqual(events2.filter((e) => e.reason === DROP_REASONS[13]), [], "no valid redirect failed (PROXY_REDIRECT)");
    assertNothingInClear();
  });

  test("ingress HTTP rule across nodes: a client the rule does not name is dropped in the datapath, never proxied", async () => {
    dp.node2!.setSubjectPolicy(deathstarPolicy(OTHER, true), [{ ip: POD2.ip, ifindex: ifindexIn(ns.node2, `${tag}h2`) }]);
    resetConntrack();
    drain2();
    events2.length = 0;
    const since = Date.now();
    try {
      assert.equal(await xwing("POST", "/v1/request-landing"), undefined, "the connection fails");
      drain2();
      const drop = events2.find((e) => e.verdict === "dropped" && e.dport === 80);
      assert.deepEqual([drop?.srcIdentity, drop?.dstIdentity, drop?.reason], [XWING, DEATHSTAR, "policy denied (default deny)"]);
      assert.deepEqual(flows(ingressProxy, since), [], "no request reached the proxy");
      assertNothingInClear();
    } finally {
      dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), [{ ip: POD2.ip, ifindex: ifindexIn(ns.node2, `${tag}h2`) }]);
      resetConntrack();
    }
  });

  test("egress HTTP rule towards a pod on another node: the proxy's upstream carries the client's identity in the VNI, and the receiver's ingress policy judges it", async () => {
    const ifx = { h1: ifindexIn(ns.node1, `${tag}h1`), h2: ifindexIn(ns.node2, `${tag}h2`) };
    dp.node1!.setSubjectPolicy(xwingPolicy(true), addrs(POD1, ifx.h1));
    try {
      // The deathstar admits only the x-wing, no proxy on its side: the proxied request arrives as the x-wing.
      dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, false), addrs(POD2, ifx.h2));
      resetConntrack();
      drain2();
      events2.length = 0;
      const landing = await xwing("POST", "/v1/request-landing");
      assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
      assert.match(deathstarLog, new RegExp(`request POST /v1/request-landing ${UNDERLAY.node1.replaceAll(".", "\\.")}`), "the upstream connection is the node1 proxy's");
      const denied = await xwing("GET", "/v1/ships");
      assert.equal(denied?.status, 403, "the x-wing's egress rules are applied on node1");
      drain2();
      const allowed = events2.find((e) => e.verdict === "forwarded" && e.dport === 80 && e.dstIdentity === DEATHSTAR);
      assert.deepEqual([allowed?.srcIdentity, allowed?.ruleId], [XWING, PLAIN_RULE], "node2 saw the x-wing's identity, not node1's");
      const f = (await flowsSoon(egressProxy, 0, 1)).find((x) => x.path === "/v1/request-landing");
      assert.deepEqual([f?.verdict, f?.status, f?.source.identity, f?.rule?.ruleId], ["forwarded", 200, XWING, EGRESS_RULE]);

      // A deathstar that admits another identity only: the same proxied request is dropped there as the x-wing's.
      dp.node2!.setSubjectPolicy(deathstarPolicy(OTHER, false), addrs(POD2, ifx.h2));
      resetConntrack();
      events2.length = 0;
      const refused = await xwing("POST", "/v1/request-landing");
      assert.equal(refused?.status, 504, "the proxy's upstream connection was dropped (connect timeout)");
      drain2();
      const drop = events2.find((e) => e.verdict === "dropped" && e.dport === 80);
      assert.deepEqual([drop?.srcIdentity, drop?.dstIdentity, drop?.reason], [XWING, DEATHSTAR, "policy denied (default deny)"]);
      assertNothingInClear();
    } finally {
      dp.node1!.setSubjectPolicy(xwingPolicy(false), addrs(POD1, ifx.h1));
      dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, ifx.h2));
      resetConntrack();
    }
  });

  test("HTTP rules on both ends across nodes: the request passes the client's egress proxy and the destination's ingress proxy, judged by both", async () => {
    const ifx = { h1: ifindexIn(ns.node1, `${tag}h1`) };
    dp.node1!.setSubjectPolicy(xwingPolicy(true), addrs(POD1, ifx.h1));
    resetConntrack();
    const since = Date.now();
    try {
      const landing = await xwing("POST", "/v1/request-landing"); // both allow
      assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
      const exhaust = await xwing("PUT", "/v1/exhaust-port"); // egress allows, ingress denies
      assert.deepEqual([exhaust?.status, exhaust?.body], [403, "Access denied"]);
      const ships = await xwing("GET", "/v1/ships"); // ingress would allow, egress denies
      assert.deepEqual([ships?.status, ships?.body], [403, "Access denied"]);
      assert.doesNotMatch(deathstarLog, /exhaust-port|GET \/v1\/ships/, "no denied request reached the deathstar");
      const eg = (await flowsSoon(egressProxy, since, 3)).map((x) => [x.method, x.verdict, x.status, x.source.identity]);
      const ing = (await flowsSoon(ingressProxy, since, 2)).map((x) => [x.method, x.verdict, x.status, x.source.identity]);
      assert.deepEqual(eg, [["POST", "forwarded", 200, XWING], ["PUT", "forwarded", 403, XWING], ["GET", "denied", 403, XWING]], "node1 judged all three by the egress rules");
      assert.deepEqual(ing, [["POST", "forwarded", 200, XWING], ["PUT", "denied", 403, XWING]], "node2 judged what node1 let through, as the x-wing");
      assertNothingInClear();
    } finally {
      dp.node1!.setSubjectPolicy(xwingPolicy(false), addrs(POD1, ifx.h1));
      resetConntrack();
    }
  });

  if (dual) {
    test("IPv6, ingress HTTP rule, client on another node: from-overlay steers the connection to the proxy's IPv6 address, the proxy judges it as the client's identity and its answers go back into the tunnel as the deathstar", async () => {
      resetConntrack();
      drain2();
      events2.length = 0;
      const since = Date.now();
      const rx = tunnelRxPackets(ns.node1, tunnel1());
      const landing = await xwing("POST", "/v1/request-landing", POD2.ip6);
      assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
      const exhaust = await xwing("PUT", "/v1/exhaust-port", POD2.ip6);
      assert.deepEqual([exhaust?.status, exhaust?.body], [403, "Access denied"]);
      assert.doesNotMatch(deathstarLog, /exhaust-port/, "the denied request never reached the deathstar");
      // The allowed request reached the deathstar from node2's proxy (its upstream), not from the x-wing directly.
      assert.match(deathstarLog, /request POST \/v1\/request-landing fd7e:78::2\n/, "the deathstar was asked by node2's proxy, from its IPv6 address");
      assert.ok(tunnelRxPackets(ns.node1, tunnel1()) - rx >= 6, "node1 received the proxy's answers from the tunnel");
      const f = await flowsSoon(ingressProxy, since, 2);
      const landed = f.find((x) => x.path === "/v1/request-landing");
      assert.deepEqual([landed?.verdict, landed?.status, landed?.rule?.ruleId, landed?.source.identity], ["forwarded", 200, INGRESS_RULE, XWING]);
      const denied = f.find((x) => x.path === "/v1/exhaust-port");
      assert.deepEqual([denied?.verdict, denied?.status, denied?.source.identity], ["denied", 403, XWING]);
      drain2();
      assert.deepEqual(events2.filter((e) => e.reason === DROP_REASONS[13]), [], "no valid redirect failed (PROXY_REDIRECT)");
    });

    test("IPv6, ingress HTTP rule across nodes: a client the rule does not name is dropped in the datapath, and without the proxy's IPv6 address the connection is dropped as PROXY_REDIRECT (fails closed), never reaching the deathstar", async () => {
      const h2 = ifindexIn(ns.node2, `${tag}h2`);
      dp.node2!.setSubjectPolicy(deathstarPolicy(OTHER, true), addrs(POD2, h2));
      resetConntrack();
      drain2();
      events2.length = 0;
      const since = Date.now();
      const before = deathstarLog.length;
      try {
        assert.equal(await xwing("POST", "/v1/request-landing", POD2.ip6), undefined, "the connection fails");
        drain2();
        // This connection's drop, to the deathstar's IPv6 address: the first port-80 drop was once (1 of 12 runs at load
        // 17-48) an IPv4 packet as reserved:world to its IPv4 address, a late packet of an IPv4 test's connection (see below).
        const drop = events2.find((e) => e.verdict === "dropped" && e.dport === 80 && e.dst === POD2.ip6);
        assert.deepEqual([drop?.srcIdentity, drop?.dstIdentity, drop?.reason, drop?.dst], [XWING, DEATHSTAR, "policy denied (default deny)", POD2.ip6], droppedText());

        // The rule names the x-wing again, but node2's proxy has no IPv6 address in the datapath.
        dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, h2));
        dp.node2!.redirect.setProxyAddress(UNDERLAY.node2);
        resetConntrack();
        events2.length = 0;
        assert.equal(await xwing("POST", "/v1/request-landing", POD2.ip6), undefined, "the connection fails");
        drain2();
        const failed = events2.find((e) => e.verdict === "dropped" && e.dport === 80);
        assert.deepEqual([failed?.srcIdentity, failed?.reason, failed?.dst], [XWING, DROP_REASONS[13], POD2.ip6]);
        assert.deepEqual(flows(ingressProxy, since), [], "no request reached the proxy");
        assert.equal(deathstarLog.slice(before), "", "nothing reached the deathstar");
      } finally {
        dp.node2!.redirect.setProxyAddress(UNDERLAY.node2, UNDERLAY6.node2);
        dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, h2));
        resetConntrack();
      }
    });

    test("IPv6, egress HTTP rule towards a pod on another node: the proxy's IPv6 upstream carries the client's identity in the VNI, and the receiver's ingress policy judges it", async () => {
      const ifx = { h1: ifindexIn(ns.node1, `${tag}h1`), h2: ifindexIn(ns.node2, `${tag}h2`) };
      dp.node1!.setSubjectPolicy(xwingPolicy(true), addrs(POD1, ifx.h1));
      try {
        dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, false), addrs(POD2, ifx.h2));
        resetConntrack();
        drain2();
        events2.length = 0;
        const since = Date.now();
        const landing = await xwing("POST", "/v1/request-landing", POD2.ip6);
        assert.deepEqual([landing?.status, landing?.body], [200, "Ship landed\n"]);
        assert.match(deathstarLog, /request POST \/v1\/request-landing fd7e:78::1\n/, "the upstream connection is the node1 proxy's");
        const denied = await xwing("GET", "/v1/ships", POD2.ip6);
        assert.equal(denied?.status, 403, "the x-wing's egress rules are applied on node1");
        drain2();
        const allowed = events2.find((e) => e.verdict === "forwarded" && e.dport === 80 && e.dst === POD2.ip6);
        assert.deepEqual([allowed?.srcIdentity, allowed?.ruleId], [XWING, PLAIN_RULE], "node2 saw the x-wing's identity, not node1's");
        const f = (await flowsSoon(egressProxy, since, 1)).find((x) => x.path === "/v1/request-landing");
        assert.deepEqual([f?.verdict, f?.status, f?.source.identity, f?.rule?.ruleId], ["forwarded", 200, XWING, EGRESS_RULE]);

        dp.node2!.setSubjectPolicy(deathstarPolicy(OTHER, false), addrs(POD2, ifx.h2));
        resetConntrack();
        events2.length = 0;
        const refused = await xwing("POST", "/v1/request-landing", POD2.ip6);
        assert.equal(refused?.status, 504, "the proxy's upstream connection was dropped (connect timeout)");
        drain2();
        // The refused upstream connection's drop, from node1's proxy address: another connection's drop (one as the
        // world's, to port 80, was seen in 2 of 4 runs at load 12-40) is not this one. That one is no IPv6 packet
        // outside the ipcache (no NDP, link-local or router solicitation: those carry no port): in 12 runs of this file
        // at load 17-48 (2026-12-06) the only such drop was IPv4, reserved:world to the deathstar's IPv4 address, port
        // 80, caught by the IPv6 ingress test above: a packet of an earlier IPv4 test's connection that reached node2
        // after resetConntrack() without the tunnel's identity (its source was not recorded: the x-wing's address over
        // the underlay, which is the world's, or one node2's ipcache does not hold). The deathstar's IPv4 server is up
        // in every test, so such a late packet can land in any test's events; droppedText() now names it.
        const drop = events2.find((e) => e.verdict === "dropped" && e.dport === 80 && e.src === UNDERLAY6.node1);
        assert.deepEqual([drop?.srcIdentity, drop?.dstIdentity, drop?.reason], [XWING, DEATHSTAR, "policy denied (default deny)"], droppedText());
      } finally {
        dp.node1!.setSubjectPolicy(xwingPolicy(false), addrs(POD1, ifx.h1));
        dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, ifx.h2));
        resetConntrack();
      }
    });
  }

  if (!wg) return;

  test("strict encryption without a working peer back to node1: the deathstar's answers to node1's egress proxy are dropped as UNENCRYPTED, never sent in clear", async () => {
    const ifx = { h1: ifindexIn(ns.node1, `${tag}h1`), h2: ifindexIn(ns.node2, `${tag}h2`) };
    dp.node1!.setSubjectPolicy(xwingPolicy(true), addrs(POD1, ifx.h1));
    dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, false), addrs(POD2, ifx.h2));
    // node2 no longer counts node1 as encrypted (as when its peer is gone); node1 still sends through its tunnel.
    dp.node2!.setEncryptedNodes([]);
    resetConntrack();
    drain2();
    events2.length = 0;
    try {
      const refused = await xwing("POST", "/v1/request-landing");
      assert.equal(refused?.status, 504, "the proxy's upstream connection got no answer (connect timeout)");
      drain2();
      const drop = events2.find((e) => e.verdict === "dropped" && e.sport === 80);
      assert.deepEqual([drop?.srcIdentity, drop?.reason?.split(":")[0]], [DEATHSTAR, "UNENCRYPTED"], "the deathstar's SYN-ACK to node1's address was dropped");
      assertNothingInClear();
    } finally {
      dp.node2!.setEncryptedNodes([UNDERLAY.node1], new Set([UNDERLAY.node1]));
      dp.node1!.setSubjectPolicy(xwingPolicy(false), addrs(POD1, ifx.h1));
      dp.node2!.setSubjectPolicy(deathstarPolicy(XWING, true), addrs(POD2, ifx.h2));
      resetConntrack();
    }
  });
}
