// `bin/membrane agent` attaches the node device's programs itself: on the device holding --node-ip or on every link a --node-device list selects (a wildcard's new links too), adopted (never doubled) by a restarted agent, and detached by --node-device none without touching another's tc filter or the host firewall's device.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { makePki, type TestPki } from "../kube/testing/pki.ts";
import { Datapath } from "./bpf/datapath.ts";
import { BPFFS_ROOT, tcxProgramIds, type TcTarget } from "./bpf/loader.ts";
import { NetnsFixture, ifindexIn } from "./bpf/netns.ts";
import { parseAgentFlags } from "./flags.ts";
import { removePins } from "./uninstall.ts";
import { until } from "./testing/agent.ts";

const MEMBRANE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bin/membrane");
const tag = `nd${process.pid % 100000}`;
const node = `${tag}-node`;
const NS_NODE = `${tag}-node`;
const NS_OUT = `${tag}-out`;
const NODE_IP = "10.209.0.1";
const scope = `test-${tag}`;

describe("the agent's node device programs", { timeout: 120_000 }, () => {
  const fx = new NetnsFixture();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-node-device-"));
  const lines: Record<string, unknown>[] = [];
  let pki: TestPki | undefined;
  let server: DistributionServer | undefined;
  let port = 0;
  let eth0 = 0;
  let child: ChildProcess | undefined;

  const target = (direction: "ingress" | "egress"): TcTarget => ({ ifindex: eth0, direction, netns: NS_NODE });
  const programs = (): { ingress: number[]; egress: number[] } => ({ ingress: tcxProgramIds(target("ingress")), egress: tcxProgramIds(target("egress")) });
  /** How many tcx programs each direction of a link of the node holds. */
  const countOn = (ifname: string): { ingress: number; egress: number } => {
    const ifindex = ifindexIn(NS_NODE, ifname);
    return { ingress: tcxProgramIds({ ifindex, direction: "ingress", netns: NS_NODE }).length, egress: tcxProgramIds({ ifindex, direction: "egress", netns: NS_NODE }).length };
  };
  /** The clsact filters on eth0's egress, where another's filter (its own priority) sits: what Membrane must leave alone. */
  const tcFilters = (): string => spawnSyncText("ip", ["netns", "exec", NS_NODE, "tc", "filter", "show", "dev", "eth0", "egress"]);

  /** Starts the agent with extra flags and waits for its node device line (or its exit). */
  const startAgent = async (...extra: string[]): Promise<Record<string, unknown>> => {
    lines.length = 0;
    killAgents(); // one a failed test left running
    child = spawn(MEMBRANE, [
      "agent", "--node-name", node, "--operator", `127.0.0.1:${port}`,
      "--tls-cert", pki!.file(`${node}.crt`), "--tls-key", pki!.file(`${node}.key`), "--tls-ca", pki!.file("ca.crt"),
      "--bpf-scope", scope, "--cni-socket", path.join(dir, "agent.sock"), "--state-dir", path.join(dir, "state"), "--netns", NS_NODE,
      "--node-ip", NODE_IP, "--enable-dns-proxy=false", "--enable-l7-proxy=false",
      "--hubble-socket", path.join(dir, "hubble.sock"), "--metrics-address", "127.0.0.1:0", ...extra,
    ], { stdio: ["ignore", "pipe", "inherit"] });
    agents.add(child);
    readline.createInterface({ input: child.stdout! }).on("line", (l) => {
      if (l.startsWith("{")) lines.push(JSON.parse(l) as Record<string, unknown>);
    });
    return until("agent started", () => lines.find((l) => l.msg === "agent started"), 30_000);
  };
  const stopAgent = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await exited;
  };
  /** SIGKILLs every agent this file started that still runs, and the processes it started (its link monitor). */
  const agents = new Set<ChildProcess>();
  const killAgents = (): void => {
    for (const a of agents) {
      if (a.pid && a.exitCode === null && a.signalCode === null) {
        const children = (() => {
          try {
            return fs.readFileSync(`/proc/${a.pid}/task/${a.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
          } catch {
            return [];
          }
        })();
        a.kill("SIGKILL");
        for (const pid of children) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
      }
      agents.delete(a);
    }
    child = undefined;
  };
  const logged = (msg: string): Record<string, unknown> | undefined => lines.find((l) => l.msg === msg);

  before(async () => {
    fx.addNetns(NS_NODE);
    fx.addNetns(NS_OUT);
    fx.addVeth({ netns: NS_NODE, ifname: "eth0", cidr: `${NODE_IP}/24` }, { netns: NS_OUT, ifname: "eth0", cidr: "10.209.0.2/24" });
    eth0 = ifindexIn(NS_NODE, "eth0");
    spawnSyncText("ip", ["netns", "exec", NS_NODE, "tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    spawnSyncText("ip", ["netns", "exec", NS_NODE, "tc", "filter", "add", "dev", "eth0", "egress", "pref", "7", "bpf", "bytecode", "1,6 0 0 0"]);
    pki = await makePki([node]);
    server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "warn" }));
    port = await server.listen(0);
    server.publish(node, { policies: [], ipcache: [], identities: [], rules: [], policyGenerations: [] });
  });

  after(async () => {
    killAgents();
    await server?.close();
    try {
      const dp = Datapath.load(scope);
      if (eth0) dp.detachHostDevice(eth0, NS_NODE);
      dp.close();
      dp.unpin();
    } catch {
      // nothing pinned, or the netns is gone
    }
    fx.cleanup();
    pki?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("--node-device: a list of names and prefix+ wildcards, or none; a bad entry is refused naming the flag and the reason", () => {
    const base = ["--node-name", "n", "--operator", "127.0.0.1:9", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
    const devices = (...extra: string[]) => {
      const r = parseAgentFlags([...base, ...extra]);
      assert.ok(r.ok, JSON.stringify(r));
      return (r as { flags: { nodeDevices?: unknown } }).flags.nodeDevices;
    };
    assert.deepEqual(devices("--node-device", "bond0"), [{ kind: "name", name: "bond0" }]);
    assert.deepEqual(devices("--node-device", "eth0,rnm+"), [{ kind: "name", name: "eth0" }, { kind: "prefix", prefix: "rnm" }]);
    assert.equal(devices("--node-device=none"), null);
    assert.equal(devices(), undefined);
    const refused = (text: string) => parseAgentFlags([...base, "--node-device", text]);
    assert.deepEqual(refused("eth0,e+th"), { ok: false, error: '--node-device: entry 2: "+" is only a wildcard at the end of a name, got "e+th" (names and prefix+ wildcards, comma-separated, or none)' });
    assert.deepEqual(refused("eth0,,rnm+"), { ok: false, error: '--node-device: entry 2 is empty, got "eth0,,rnm+" (names and prefix+ wildcards, comma-separated, or none)' });
    assert.match(JSON.stringify(refused("eth 0")), /--node-device: entry 1: must be an interface name/);
  });

  it("a started agent has to-host and from-host on the device holding --node-ip, beside another's tc filter", async () => {
    await startAgent();
    const attached = logged("node device programs attached");
    assert.equal(attached?.device, "eth0");
    assert.equal(attached?.detected, true);
    assert.equal(attached?.adopted, false);
    const p = programs();
    assert.equal(p.ingress.length, 1, `one program on eth0's ingress: ${JSON.stringify(p)}`);
    assert.equal(p.egress.length, 1, `one program on eth0's egress: ${JSON.stringify(p)}`);
    assert.match(tcFilters(), /pref 7 bpf.*bytecode/, "another's filter is still there");
  });

  it("a restarted agent adopts them: still one program per direction, never a second", async () => {
    const before = programs();
    await stopAgent();
    assert.deepEqual(programs(), before, "a stopped agent leaves them attached (restarts do not interrupt)");
    await startAgent();
    assert.equal(logged("node device programs attached")?.adopted, true);
    const p = programs();
    assert.equal(p.ingress.length, 1, JSON.stringify(p));
    assert.equal(p.egress.length, 1, JSON.stringify(p));
    await stopAgent();
  });

  it("--node-device none detaches exactly what an agent attached: another's filter stays; the host firewall's device keeps them", async () => {
    await startAgent("--node-device", "none");
    assert.ok(logged("node device programs detached"));
    assert.deepEqual(programs(), { ingress: [], egress: [] });
    assert.match(tcFilters(), /pref 7 bpf.*bytecode/, "another's filter is still there");
    await stopAgent();
    // The host firewall attaches the same programs on eth0: the node device's cleanup leaves them to it.
    await startAgent("--host-firewall-device", "eth0");
    await stopAgent();
    await startAgent("--host-firewall-device", "eth0", "--node-device", "none");
    assert.ok(logged("node device programs kept: the host firewall attaches there"));
    assert.equal(programs().egress.length, 1);
    await stopAgent();
  });

  it("--node-device eth0,peer+: every matching link gets them, a link matching later too (the agent watches links); none detaches them all", async () => {
    fx.addVeth({ netns: NS_NODE, ifname: "peera", cidr: "10.209.1.1/30" }, { netns: NS_OUT, ifname: "outa", cidr: "10.209.1.2/30" });
    fx.addVeth({ netns: NS_NODE, ifname: "peerb", cidr: "10.209.2.1/30" }, { netns: NS_OUT, ifname: "outb", cidr: "10.209.2.2/30" });
    await startAgent("--node-device", "eth0,peer+");
    const attached = lines.filter((l) => l.msg === "node device programs attached").map((l) => l.device).sort();
    assert.deepEqual(attached, ["eth0", "peera", "peerb"]);
    for (const dev of ["eth0", "peera", "peerb"]) assert.deepEqual(countOn(dev), { ingress: 1, egress: 1 }, dev);
    assert.deepEqual(countOn("lo"), { ingress: 0, egress: 0 }, "lo is never a node device");
    // A peer link made while the agent runs: the link monitor's event has the programs attached there.
    execFileSync("ip", ["-n", NS_NODE, "link", "add", "peerc", "type", "veth", "peer", "name", "outc", "netns", NS_OUT]);
    const appeared = await until("the new link peerc attached", () => lines.find((l) => l.msg === "node device programs attached" && l.device === "peerc"), 20_000);
    assert.equal(appeared.trigger, "link event");
    assert.deepEqual(countOn("peerc"), { ingress: 1, egress: 1 });
    // The link goes: the agent forgets it (its record names only live links).
    execFileSync("ip", ["-n", NS_NODE, "link", "del", "peerc"]);
    await until("peerc forgotten", () => lines.find((l) => l.msg === "node device programs detached" && l.device === "peerc"), 20_000);
    await stopAgent();
    const record = JSON.parse(fs.readFileSync(path.join(dir, "state", "node-device.json"), "utf8")) as { devices: { device: string }[] };
    assert.deepEqual(record.devices.map((d) => d.device).sort(), ["eth0", "peera", "peerb"]);
    await startAgent("--node-device", "none");
    assert.deepEqual(lines.filter((l) => l.msg === "node device programs detached").map((l) => l.device).sort(), ["eth0", "peera", "peerb"]);
    for (const dev of ["eth0", "peera", "peerb"]) assert.deepEqual(countOn(dev), { ingress: 0, egress: 0 }, dev);
    assert.match(tcFilters(), /pref 7 bpf.*bytecode/, "another's filter is still there");
    await stopAgent();
  });

  it("the link monitor goes with its agent: an agent killed with SIGKILL leaves no `ip monitor link` behind (its parent-death signal)", async () => {
    await startAgent("--node-device", "peer+");
    const agent = child!;
    const monitor = await until("the agent's link monitor", () => childPids(agent.pid!).find((pid) => cmdline(pid).includes("monitor link")), 20_000);
    try {
      const exited = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGKILL");
      await exited;
      // Reparented when its agent died: gone (or a zombie not yet reaped by its new parent) once its signal came.
      await until(`the link monitor (pid ${monitor}) gone after its agent's SIGKILL`, () => (alive(monitor) ? undefined : true), 10_000);
    } finally {
      if (alive(monitor)) process.kill(monitor, "SIGKILL");
      child = undefined;
    }
  });

  it("the uninstall's pin removal (also membrane node cleanup's) detaches them from every device of the list", async () => {
    await startAgent("--node-device", "peer+");
    await stopAgent();
    for (const dev of ["peera", "peerb"]) assert.deepEqual(countOn(dev), { ingress: 1, egress: 1 }, dev);
    removePins(path.join(BPFFS_ROOT, scope), pino({ level: "silent" }));
    for (const dev of ["peera", "peerb"]) assert.deepEqual(countOn(dev), { ingress: 0, egress: 0 }, dev);
    fs.rmSync(path.join(dir, "state", "node-device.json"), { force: true });
  });

  it("a named device that does not exist stops the agent with an error naming the flag", async () => {
    lines.length = 0;
    child = spawn(MEMBRANE, [
      "agent", "--node-name", node, "--operator", `127.0.0.1:${port}`,
      "--tls-cert", pki!.file(`${node}.crt`), "--tls-key", pki!.file(`${node}.key`), "--tls-ca", pki!.file("ca.crt"),
      "--bpf-scope", scope, "--cni-socket", path.join(dir, "agent.sock"), "--state-dir", path.join(dir, "state"), "--netns", NS_NODE,
      "--node-ip", NODE_IP, "--enable-dns-proxy=false", "--enable-l7-proxy=false", "--node-device", "nosuch0",
      "--hubble-socket", path.join(dir, "hubble.sock"), "--metrics-address", "127.0.0.1:0",
    ], { stdio: ["ignore", "pipe", "inherit"] });
    agents.add(child);
    readline.createInterface({ input: child.stdout! }).on("line", (l) => {
      if (l.startsWith("{")) lines.push(JSON.parse(l) as Record<string, unknown>);
    });
    const code = await new Promise((r) => child!.once("exit", r));
    assert.equal(code, 1);
    const failed = await until("the failure logged", () => logged("attaching the node device's programs failed"), 5000);
    assert.match(String(failed.error), /--node-device nosuch0: no such link/);
  });
});

/** The processes `pid` started (any of its threads). */
function childPids(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
}

/** Whether pid runs (a zombie has exited). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function spawnSyncText(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}
