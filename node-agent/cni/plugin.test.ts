// The real membrane-cni binary, run as a container runtime would, inside a "node" netns wiring "pod" netns.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EndpointSocketServer, type AgentReply, type AgentRequest } from "./agent-socket.ts";
import { hostIfname } from "./podnet.ts";

const PLUGIN = fileURLToPath(new URL("../../bin/membrane-cni", import.meta.url));
const tag = `mbrcni${process.pid}`;
const NODE = `${tag}-node`;
const POD_CIDR = "10.251.7.0/24";
const GATEWAY = "10.251.7.1";

const namespaces: string[] = [];
const children: ChildProcess[] = [];
let tmp = "";
let agent: EndpointSocketServer | undefined;
const agentRequests: AgentRequest[] = [];
let agentReply: AgentReply = { ok: true };

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

function addNetns(suffix: string): string {
  const name = `${tag}-${suffix}`;
  sh("ip", ["netns", "add", name]);
  namespaces.push(name);
  sh("ip", ["-n", name, "link", "set", "lo", "up"]);
  return name;
}

function delNetns(name: string): void {
  const i = namespaces.indexOf(name);
  if (i >= 0) namespaces.splice(i, 1);
  sh("ip", ["netns", "del", name]);
}

const nsPath = (name: string): string => `/var/run/netns/${name}`;

interface Conf {
  podCIDR?: string;
  agentSocket?: string;
  stateDir?: string;
  [k: string]: unknown;
}

function netConf(over: Conf = {}): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "membrane-test",
    type: "membrane-cni",
    podCIDR: POD_CIDR,
    stateDir: path.join(tmp, "state"),
    logLevel: "silent",
    ...over,
  };
}

interface CniRun {
  code: number;
  out: Record<string, unknown>;
  stdout: string;
  stderr: string;
}

/** Runs the plugin in the node's netns with CNI_* env and the config on stdin, like a runtime does. */
function cni(
  command: string,
  env: Record<string, string>,
  conf: Record<string, unknown> | string = netConf(),
): Promise<CniRun> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", NODE, PLUGIN], {
      env: {
        PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        CNI_COMMAND: command,
        CNI_PATH: "/opt/cni/bin",
        ...env,
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      let out: Record<string, unknown> = {};
      if (stdout.trim() !== "") {
        try {
          out = JSON.parse(stdout) as Record<string, unknown>;
        } catch {
          reject(new Error(`plugin printed non-JSON: ${stdout} (stderr: ${stderr})`));
          return;
        }
      }
      resolve({ code: code ?? -1, out, stdout, stderr });
    });
    child.stdin.end(typeof conf === "string" ? conf : JSON.stringify(conf));
  });
}

function podEnv(pod: string, containerId = `${tag}-${pod}`): Record<string, string> {
  return {
    CNI_CONTAINERID: containerId,
    CNI_NETNS: nsPath(`${tag}-${pod}`),
    CNI_IFNAME: "eth0",
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod}`,
  };
}

function assertOk(r: CniRun): void {
  assert.equal(r.code, 0, `plugin failed: ${r.stdout} ${r.stderr}`);
}

function assertCniError(r: CniRun, code: number, msg: RegExp): void {
  assert.notEqual(r.code, 0, "plugin should exit non-zero");
  assert.equal(r.out.code, code, `wrong code in ${r.stdout}`);
  assert.equal(typeof r.out.cniVersion, "string");
  assert.match(String(r.out.msg), msg);
}

function podIP(r: CniRun): string {
  const ips = r.out.ips as { address: string }[];
  return ips[0]!.address.split("/")[0]!;
}

function linkNames(netns: string): string[] {
  return (JSON.parse(sh("ip", ["-n", netns, "-j", "link", "show"])) as { ifname: string }[]).map(
    (l) => l.ifname,
  );
}

function ifindexIn(netns: string, ifname: string): number {
  return (
    JSON.parse(sh("ip", ["-n", netns, "-j", "link", "show", "dev", ifname])) as { ifindex: number }[]
  )[0]!.ifindex;
}

function allocations(): Record<string, { containerId: string }> {
  const file = path.join(tmp, "state", "allocations.json");
  if (!fs.existsSync(file)) return {};
  return (
    JSON.parse(fs.readFileSync(file, "utf8")) as { allocations: Record<string, { containerId: string }> }
  ).allocations;
}

// Plain node scripts (no tsx) so that they start fast inside a namespace.
const SERVER = `require("net").createServer((s) => s.pipe(s).on("error", () => {})).listen(Number(process.argv[1]), process.argv[2], () => console.log("listening"))`;
const CLIENT = `const s = require("net").connect(Number(process.argv[2]), process.argv[1], () => s.write("hello"));
s.on("data", () => process.exit(0)); s.on("error", (e) => { console.error(e.code); process.exit(1); });
setTimeout(() => { console.error("timeout"); process.exit(1); }, 3000);`;

function serveTcp(netns: string, port: number, address = "0.0.0.0"): Promise<void> {
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", SERVER, String(port), address], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => d.toString().includes("listening") && resolve());
    child.on("exit", (code) => reject(new Error(`server in ${netns} exited ${code}`)));
  });
}

/** Whether a TCP connection from `netns` to host:port gets its bytes echoed back. */
function tcpConnects(netns: string, host: string, port: number): boolean {
  try {
    sh("ip", ["netns", "exec", netns, process.execPath, "-e", CLIENT, host, String(port)]);
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-test-"));
  addNetns("node");
  agent = new EndpointSocketServer(path.join(tmp, "agent.sock"), (request) => {
    agentRequests.push(request);
    return agentReply;
  });
  await agent.start();
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await agent?.stop();
  // Deleting the node netns removes every host-side veth in it, and their pod-side peers.
  for (const ns of namespaces.splice(0).reverse()) {
    try {
      sh("ip", ["netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("membrane-cni VERSION and bad input", () => {
  it("VERSION lists the supported spec versions", async () => {
    const r = await cni("VERSION", {}, '{"cniVersion":"1.0.0"}');
    assertOk(r);
    assert.deepEqual(r.out, { cniVersion: "1.0.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] });
  });

  it("rejects a config without a pod CIDR, naming the field", async () => {
    const conf = netConf();
    delete conf.podCIDR;
    assertCniError(await cni("ADD", podEnv("none"), conf), 7, /^network config: podCIDR: required/);
  });

  it("rejects an unsupported cniVersion with code 1 and a bad pod CIDR with code 7", async () => {
    assertCniError(
      await cni("ADD", podEnv("none"), netConf({ cniVersion: "9.9.9" })),
      1,
      /cniVersion: "9.9.9" is not supported/,
    );
    assertCniError(
      await cni("ADD", podEnv("none"), netConf({ ipam: { podCIDR: "10.0.0.0/31" }, podCIDR: undefined })),
      7,
      /ipam.podCIDR: .*too small/,
    );
    assertCniError(await cni("ADD", podEnv("none"), "{nope"), 6, /not valid JSON/);
  });

  it("rejects a missing CNI_NETNS with code 4 and a netns that does not exist with code 3", async () => {
    const env = podEnv("none");
    assertCniError(await cni("ADD", { ...env, CNI_NETNS: "" }), 4, /CNI_NETNS is not set/);
    assertCniError(await cni("ADD", env), 3, /does not exist/);
    assert.deepEqual(allocations(), {}, "a failed ADD must not hold an address");
  });
});

describe("membrane-cni ADD, CHECK and DEL on a node", () => {
  const agentSocket = (): string => path.join(tmp, "agent.sock");
  let ip1 = "";
  let ip2 = "";

  before(() => {
    addNetns("p1");
    addNetns("p2");
  });

  it("ADD wires two pods, registers them with the agent and returns a CNI 1.0 result", async () => {
    agentRequests.length = 0;
    const r1 = await cni("ADD", podEnv("p1"), netConf({ agentSocket: agentSocket() }));
    assertOk(r1);
    const r2 = await cni("ADD", podEnv("p2"), netConf({ agentSocket: agentSocket() }));
    assertOk(r2);
    ip1 = podIP(r1);
    ip2 = podIP(r2);
    assert.notEqual(ip1, ip2);
    const host1 = hostIfname(`${tag}-p1`);
    assert.match(host1, /^mbr[0-9a-f]{11}$/);
    assert.deepEqual(
      {
        ...r1.out,
        interfaces: (r1.out.interfaces as { name: string; sandbox?: string }[]).map((i) => ({
          name: i.name,
          sandbox: i.sandbox,
        })),
      },
      {
        cniVersion: "1.0.0",
        interfaces: [
          { name: host1, sandbox: undefined },
          { name: "eth0", sandbox: nsPath(`${tag}-p1`) },
        ],
        ips: [{ address: `${ip1}/32`, gateway: GATEWAY, interface: 1 }],
        routes: [{ dst: "0.0.0.0/0", gw: GATEWAY }],
        dns: {},
      },
    );
    assert.deepEqual(agentRequests[0], {
      op: "endpoint-add",
      containerId: `${tag}-p1`,
      namespace: "default",
      pod: "p1",
      ifname: "eth0",
      netns: nsPath(`${tag}-p1`),
      hostIfname: host1,
      hostIfindex: ifindexIn(NODE, host1),
      ips: [ip1],
      mtu: 1500,
    });
    assert.equal(agentRequests.length, 2);
    assert.deepEqual(Object.keys(allocations()).sort(), [ip1, ip2].sort());
  });

  it("a pod reaches the gateway on the node, and the two pods reach each other through the node", async () => {
    await serveTcp(NODE, 8081);
    await serveTcp(`${tag}-p1`, 8082);
    await serveTcp(`${tag}-p2`, 8083);
    assert.ok(tcpConnects(`${tag}-p1`, GATEWAY, 8081), "pod 1 → gateway");
    assert.ok(tcpConnects(`${tag}-p2`, ip1, 8082), "pod 2 → pod 1");
    assert.ok(tcpConnects(`${tag}-p1`, ip2, 8083), "pod 1 → pod 2");
    assert.ok(tcpConnects(NODE, ip1, 8082), "node → pod 1");
  });

  it("CHECK passes on a good pod and names what is wrong on a broken one", async () => {
    const prevResult = {
      cniVersion: "1.0.0",
      ips: [{ address: `${ip1}/32`, gateway: GATEWAY, interface: 1 }],
    };
    assertOk(await cni("CHECK", podEnv("p1"), netConf({ prevResult })));
    sh("ip", ["-n", `${tag}-p1`, "route", "del", "default"]);
    assertCniError(
      await cni("CHECK", podEnv("p1"), netConf({ prevResult })),
      103,
      new RegExp(`no default route via ${GATEWAY}`),
    );
    const wrongPrev = { ...prevResult, ips: [{ address: "10.251.7.200/32" }] };
    assertCniError(
      await cni("CHECK", podEnv("p2"), netConf({ prevResult: wrongPrev })),
      103,
      /prevResult has ips/,
    );
  });

  it("ADD again for the same container returns the same address and repairs the wiring", async () => {
    const r = await cni("ADD", podEnv("p1"));
    assertOk(r);
    assert.equal(podIP(r), ip1);
    assertOk(await cni("CHECK", podEnv("p1")));
    assert.ok(tcpConnects(`${tag}-p2`, ip1, 8082), "pod 2 → pod 1 after the repair");
    assert.equal(Object.keys(allocations()).length, 2);
  });

  it("DEL removes the link and frees the address, tells the agent, and is idempotent", async () => {
    agentRequests.length = 0;
    const host2 = hostIfname(`${tag}-p2`);
    assertOk(await cni("DEL", podEnv("p2"), netConf({ agentSocket: agentSocket() })));
    assert.ok(!linkNames(NODE).includes(host2), "host veth is gone");
    assert.ok(!linkNames(`${tag}-p2`).includes("eth0"), "pod interface is gone");
    assert.deepEqual(Object.keys(allocations()), [ip1]);
    assert.deepEqual(agentRequests, [
      { op: "endpoint-del", containerId: `${tag}-p2`, ifname: "eth0", hostIfname: host2 },
    ]);
    assertOk(await cni("DEL", podEnv("p2")));
    // the sandbox is already gone: still fine
    delNetns(`${tag}-p1`);
    assertOk(await cni("DEL", podEnv("p1")));
    assertOk(await cni("DEL", podEnv("p1")));
    assert.deepEqual(allocations(), {});
    assert.deepEqual(linkNames(NODE), ["lo"]);
  });
});

describe("membrane-cni on a dual-stack network (podCIDRv6)", () => {
  const POD_CIDR6 = "fd00:251:7::/64";
  const GATEWAY6 = "fd00:251:7::1";
  const conf6 = (over: Conf = {}): Record<string, unknown> =>
    netConf({ podCIDRv6: POD_CIDR6, stateDir: path.join(tmp, "state6"), agentSocket: path.join(tmp, "agent.sock"), ...over });
  const ipsOf = (r: CniRun): string[] => (r.out.ips as { address: string }[]).map((i) => i.address);

  before(() => {
    addNetns("d1");
    addNetns("d2");
  });

  it("ADD gives each pod an IPv4 and an IPv6 address (IPv4 first, both to the agent), and the pods reach each other over IPv6 through the node", async () => {
    agentRequests.length = 0;
    const r1 = await cni("ADD", podEnv("d1"), conf6());
    assertOk(r1);
    const r2 = await cni("ADD", podEnv("d2"), conf6());
    assertOk(r2);
    const [v4a, v6a] = ipsOf(r1);
    assert.match(v4a!, /^10\.251\.7\.\d+\/32$/);
    assert.equal(v6a, "fd00:251:7::2/128");
    assert.deepEqual(r1.out.routes, [{ dst: "0.0.0.0/0", gw: GATEWAY }, { dst: "::/0", gw: GATEWAY6 }]);
    assert.deepEqual((r1.out.ips as { gateway: string }[]).map((i) => i.gateway), [GATEWAY, GATEWAY6]);
    assert.deepEqual(agentRequests[0]?.op === "endpoint-add" ? agentRequests[0].ips : undefined, [v4a!.split("/")[0], "fd00:251:7::2"]);
    const ip6b = ipsOf(r2)[1]!.split("/")[0]!;
    assert.equal(ip6b, "fd00:251:7::3");
    await serveTcp(`${tag}-d2`, 8084, "::");
    assert.ok(tcpConnects(`${tag}-d1`, ip6b, 8084), "pod 1 → pod 2 over IPv6");
    assert.equal(sh("ip", ["netns", "exec", NODE, "cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).trim(), "1");
  });

  it("CHECK passes and names a missing IPv6 route; a repeated ADD keeps both addresses and repairs it; DEL frees both", async () => {
    const held = (): string[] => {
      const file = path.join(tmp, "state6", "allocations.json");
      return Object.keys((JSON.parse(fs.readFileSync(file, "utf8")) as { allocations: object }).allocations).sort();
    };
    assert.equal(held().length, 4);
    assertOk(await cni("CHECK", podEnv("d1"), conf6()));
    sh("ip", ["-n", `${tag}-d1`, "-6", "route", "del", "default"]);
    assertCniError(await cni("CHECK", podEnv("d1"), conf6()), 103, new RegExp(`no IPv6 default route via ${GATEWAY6}`));
    const again = await cni("ADD", podEnv("d1"), conf6());
    assertOk(again);
    assert.equal(ipsOf(again)[1], "fd00:251:7::2/128");
    assertOk(await cni("CHECK", podEnv("d1"), conf6()));
    assert.equal(held().length, 4, "no address handed out twice");
    assertOk(await cni("DEL", podEnv("d1"), conf6()));
    assertOk(await cni("DEL", podEnv("d2"), conf6()));
    assert.deepEqual(held(), []);
  });

  it("a podCIDRv6 that is not an IPv6 CIDR is refused, naming the field", async () => {
    assertCniError(await cni("ADD", podEnv("d1"), conf6({ podCIDRv6: "10.0.0.0/24" })), 7, /^network config: podCIDRv6: an IPv6 CIDR is required/);
    assertCniError(await cni("ADD", podEnv("d1"), conf6({ podCIDRv6: "fd00::/127" })), 7, /^network config: podCIDRv6: .*too small/);
  });
});

describe("membrane-cni leaves nothing behind when ADD fails", () => {
  before(() => {
    addNetns("p3");
  });

  async function assertAddUndone(conf: Record<string, unknown>, code: number, msg: RegExp): Promise<void> {
    const r = await cni("ADD", podEnv("p3"), conf);
    assertCniError(r, code, msg);
    assert.ok(!linkNames(NODE).includes(hostIfname(`${tag}-p3`)), "no host veth left");
    assert.ok(!linkNames(`${tag}-p3`).includes("eth0"), "no pod interface left");
    assert.ok(!Object.values(allocations()).some((o) => o.containerId === `${tag}-p3`), "no address left");
  }

  it("the agent refusing the endpoint fails ADD with code 102", async () => {
    agentReply = { ok: false, error: "endpoint map is full" };
    try {
      await assertAddUndone(
        netConf({ agentSocket: path.join(tmp, "agent.sock") }),
        102,
        /the agent refused the endpoint: endpoint map is full/,
      );
    } finally {
      agentReply = { ok: true };
    }
  });

  it("an unreachable agent fails ADD with code 11 (try again later)", async () => {
    await assertAddUndone(
      netConf({ agentSocket: path.join(tmp, "no-agent.sock") }),
      11,
      /agent at .*no-agent.sock is unreachable/,
    );
  });

  it("a wiring failure (the interface name is taken in the pod) fails ADD with code 5 and touches nothing it did not make", async () => {
    addNetns("p5");
    sh("ip", ["-n", `${tag}-p5`, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]);
    const r = await cni("ADD", podEnv("p5"));
    assertCniError(r, 5, /creating veth mbr[0-9a-f]{11} with peer eth0/);
    assert.ok(!linkNames(NODE).includes(hostIfname(`${tag}-p5`)), "no host veth left");
    assert.ok(linkNames(`${tag}-p5`).includes("eth0"), "the pod's own eth0 is left alone");
    assert.ok(!Object.values(allocations()).some((o) => o.containerId === `${tag}-p5`), "no address left");
  });

  it("an exhausted pod CIDR fails ADD with code 101", async () => {
    const small = netConf({ podCIDR: "10.251.9.0/30", stateDir: path.join(tmp, "small") });
    addNetns("p4");
    const first = await cni("ADD", podEnv("p4"), small);
    assertOk(first);
    assert.equal(podIP(first), "10.251.9.2");
    await assertAddUndone(small, 101, /no free address in pod CIDR 10.251.9.0\/30/);
    assertOk(await cni("DEL", podEnv("p4"), small));
  });
});

describe("membrane-cni under concurrent ADDs", () => {
  it("pods added at the same time get distinct addresses, the configured MTU, and all work", async () => {
    const pods = ["c1", "c2", "c3"];
    for (const p of pods) addNetns(p);
    const conf = netConf({ mtu: 1400 });
    const results = await Promise.all(pods.map((p) => cni("ADD", podEnv(p), conf)));
    results.forEach(assertOk);
    const ips = results.map(podIP);
    assert.equal(new Set(ips).size, 3, `addresses: ${ips.join(", ")}`);
    const mtu = (netns: string, dev: string): number =>
      (JSON.parse(sh("ip", ["-n", netns, "-j", "link", "show", "dev", dev])) as { mtu: number }[])[0]!.mtu;
    assert.deepEqual([mtu(`${tag}-c1`, "eth0"), mtu(NODE, hostIfname(`${tag}-c1`))], [1400, 1400]);
    await serveTcp(`${tag}-c3`, 8084);
    assert.ok(tcpConnects(`${tag}-c1`, ips[2]!, 8084));
    for (const p of pods) assertOk(await cni("DEL", podEnv(p), conf));
    assert.deepEqual(allocations(), {});
  });
});
