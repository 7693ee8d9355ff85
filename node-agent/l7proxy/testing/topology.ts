// Test fixture: an x-wing pod and the deathstar pod behind one node's datapath, and the node's L7 proxy (membrane l7proxy) as its own process.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import readline from "node:readline";
import { PROTO_NUMBER, type SubjectPolicy } from "../../../core/model.ts";
import type { NodeState } from "../../../core/wire.ts";
import { Datapath } from "../../bpf/datapath.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "../../bpf/netns.ts";
import { writeProxyConfig, type ProxyConfig } from "../config.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../../..");
const DEATHSTAR = path.join(here, "deathstar.ts");
const STREAM_CLIENTS = path.join(here, "stream-clients.ts");
const CLI = path.join(ROOT, "cli/main.ts");
const run = promisify(execFile);

/** The pid of the proxy an agent (or supervisor) with this state directory started, from its pid file. */
export function proxyPidIn(stateDir: string): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(stateDir, "l7proxy.pid"), "utf8"));
  } catch {
    return undefined;
  }
}

/** Ends the proxy of that state directory (it outlives agents by design, so a test ends it). */
export function killProxyIn(stateDir: string): void {
  const pid = proxyPidIn(stateDir);
  if (!pid) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

export const ADDR = {
  xwing: "10.207.0.1",
  node: "10.207.0.2", // the host end of the x-wing's veth: also the proxy's address
  deathstar: "10.207.1.1",
  nodeToDeathstar: "10.207.1.2",
} as const;

/** The x-wing's and the deathstar's ipcache entries and identities, as a node's state carries them. */
export function starWarsPeers(ids: { xwing: number; deathstar: number }): Pick<NodeState, "ipcache" | "identities"> {
  return {
    ipcache: [
      { prefix: `${ADDR.xwing}/32`, identity: ids.xwing, node: ADDR.node, pod: "default/xwing" },
      { prefix: `${ADDR.deathstar}/32`, identity: ids.deathstar, node: ADDR.node, pod: "default/deathstar" },
    ],
    identities: [
      { id: ids.xwing, labels: ["k8s:org=alliance", "k8s:class=xwing"] },
      { id: ids.deathstar, labels: ["k8s:org=empire", "k8s:class=deathstar"] },
    ],
  };
}

/**
 * A node's state from the operator: the x-wing's egress to the deathstar's port 80 through `proxyPort`, landing and
 * the stream (GET /v1/stream) allowed by `ruleId`'s HTTP rules, anything else 403; the deathstar admits the x-wing.
 */
export function streamingStarWarsState(ids: { xwing: number; deathstar: number }, proxyPort: number, ruleId: number): NodeState {
  const policies: SubjectPolicy[] = [
    {
      subject: ids.xwing,
      ingressEnforced: false,
      egressEnforced: true,
      entries: [{ subject: ids.xwing, direction: "egress", verdict: "allow", peer: ids.deathstar, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort, ruleId }],
      http: [{ ruleId, direction: "egress", rules: [{ method: "POST", path: "/v1/request-landing" }, { method: "GET", path: "/v1/stream" }] }],
    },
    { subject: ids.deathstar, ingressEnforced: true, egressEnforced: false, entries: [{ subject: ids.deathstar, direction: "ingress", verdict: "allow", peer: ids.xwing, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: 0, ruleId }] },
  ];
  return {
    policies,
    ...starWarsPeers(ids),
    rules: [{ id: ruleId, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "rule1", ruleIndex: 0, path: "spec.egress[0]" } }],
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/rule1", uid: "u1", generation: 1 }],
  };
}

/** What the stream clients say: chunks so far per connection, and the errors or ends of those that stopped. */
export interface StreamReport {
  readonly chunks: number[];
  readonly broken: string[];
}

/** testing/stream-clients.ts in the x-wing's netns: `n` keep-alive GET /v1/stream connections to the deathstar, asked how they do. */
export class XwingStreams {
  readonly process: ChildProcess;
  private readonly lines: AsyncIterator<string>;

  constructor(topo: L7Topology, n: number) {
    this.process = spawn("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", STREAM_CLIENTS, ADDR.deathstar, "80", String(n)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
    this.lines = readline.createInterface({ input: this.process.stdout! })[Symbol.asyncIterator]();
  }

  private async next(): Promise<string> {
    const r = await this.lines.next();
    if (r.done) throw new Error("the stream clients exited");
    return r.value as string;
  }

  /** Until every connection has had a chunk. */
  async streaming(): Promise<void> {
    const line = await this.next();
    if (line !== "streaming") throw new Error(`the stream clients said ${JSON.stringify(line)}, not "streaming"`);
  }

  async report(): Promise<StreamReport> {
    this.process.stdin!.write("report\n");
    return JSON.parse(await this.next()) as StreamReport;
  }

  /** The connections that broke, and those with no chunk since `earlier`. */
  async since(earlier: StreamReport): Promise<{ now: StreamReport; broken: string[]; stalled: number[] }> {
    const now = await this.report();
    return { now, broken: now.broken, stalled: now.chunks.flatMap((c, i) => (c > earlier.chunks[i]! ? [] : [i])) };
  }

  /** Ends the clients (their stdin closes). */
  end(): void {
    this.process.stdin!.end();
  }
}

/** Two pods on one node; the datapath on both veths; torn down by cleanup(). */
export class L7Topology {
  readonly ns: { xwing: string; deathstar: string; host: string };
  readonly fx = new NetnsFixture();
  readonly scope: string;
  readonly configFile: string;
  dp!: Datapath;
  ifindex = { xwing: 0, deathstar: 0 };
  deathstarLog = "";
  proxyLog = "";
  private proxy: ChildProcess | undefined;
  readonly dir: string;

  constructor(readonly tag: string) {
    this.ns = { xwing: `${tag}-x`, deathstar: `${tag}-d`, host: `${tag}-host` };
    this.scope = `test-${tag}`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-l7-"));
    this.configFile = path.join(this.dir, "l7proxy.json");
  }

  /** Builds it all; `config` is written and its ports served as the agent would, unless `supervised` (then the supervisor does it). */
  /** A new connection's answer from the x-wing (curl), or undefined when it failed. */
  async xwingStatus(method: string, p: string, headers: readonly string[] = []): Promise<number | undefined> {
    try {
      const { stdout } = await run("ip", ["netns", "exec", this.ns.xwing, "curl", "-sS", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", ...headers.flatMap((h) => ["-H", h]), "-X", method, `http://${ADDR.deathstar}${p}`]);
      return Number(stdout);
    } catch {
      return undefined;
    }
  }

  /** `quietServer`: the deathstar's line per request is read and dropped, not kept in deathstarLog (a bench's, as for its other servers). */
  async setUp(opts: { policies: readonly SubjectPolicy[]; config?: ProxyConfig; quietServer?: boolean }): Promise<void> {
    const { xwing, deathstar, host } = this.ns;
    this.fx.addNetns(xwing);
    this.fx.addNetns(deathstar);
    this.fx.addNetns(host);
    this.fx.addVeth({ netns: xwing, ifname: `${this.tag}x`, cidr: `${ADDR.xwing}/24` }, { netns: host, ifname: `${this.tag}h`, cidr: `${ADDR.node}/24` });
    this.fx.addVeth({ netns: deathstar, ifname: `${this.tag}d`, cidr: `${ADDR.deathstar}/24` }, { netns: host, ifname: `${this.tag}e`, cidr: `${ADDR.nodeToDeathstar}/24` });
    ipIn(xwing, "route", "add", "default", "via", ADDR.node);
    ipIn(deathstar, "route", "add", "default", "via", ADDR.nodeToDeathstar);
    execIn(host, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
    this.ifindex = { xwing: ifindexIn(host, `${this.tag}h`), deathstar: ifindexIn(host, `${this.tag}e`) };

    this.dp = Datapath.load(this.scope);
    this.dp.clearAll();
    this.dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
    const eps = { [opts.policies[0]!.subject]: [{ ip: ADDR.xwing, ifindex: this.ifindex.xwing }], [opts.policies[1]!.subject]: [{ ip: ADDR.deathstar, ifindex: this.ifindex.deathstar }] };
    for (const p of opts.policies) this.dp.setSubjectPolicy(p, eps[p.subject]!);
    this.dp.attachEndpoint(this.ifindex.xwing, host);
    this.dp.attachEndpoint(this.ifindex.deathstar, host);
    // What the agent does for a proxy: its address, then the ports it serves (after the proxy listens).
    if (opts.config) {
      this.dp.redirect.setProxyAddress(ADDR.node);
      for (const p of opts.config.ports) this.dp.redirect.serve(p.port);
    }

    const server = this.fx.spawn(deathstar, process.execPath, ["--import", "tsx", DEATHSTAR, "0.0.0.0", "80"]);
    if (!opts.quietServer) server.stdout?.on("data", (d: Buffer) => (this.deathstarLog += d.toString()));
    await waitForLine(server, /^listening/, 20000);
    if (opts.quietServer) server.stdout?.resume();
    if (opts.config) writeProxyConfig(this.configFile, opts.config);
  }

  /**
   * Starts `membrane l7proxy` in the node netns (nsenter: only the network namespace changes, so
   * /sys/fs/bpf stays the host's) and waits until it listens.
   */
  async startProxy(): Promise<ChildProcess> {
    const child = spawn(
      "nsenter",
      [`--net=/var/run/netns/${this.ns.host}`, process.execPath, "--import", "tsx", CLI, "l7proxy", "--config", this.configFile, "--bpf-scope", this.scope, "--log-flows"],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proxy = child;
    child.stdout?.on("data", (d: Buffer) => (this.proxyLog += d.toString()));
    child.stderr?.on("data", (d: Buffer) => process.stderr.write(d));
    await waitForLine(child, /l7 proxy ready/, 30000);
    return child;
  }

  async stopProxy(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.proxy;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }

  /** The flows the proxy logged (--log-flows), oldest first. */
  flows(): { protocol: string; method: string; path: string; verdict: string; status: number; rule?: { ruleId: number; index: number }; source: { identity: number }; tls?: { serverName?: string } }[] {
    return this.proxyLog
      .split("\n")
      .filter((l) => l.includes('"http request"'))
      .map((l) => (JSON.parse(l) as { flow: ReturnType<L7Topology["flows"]>[number] }).flow);
  }

  /**
   * The flows once `ready` holds for them: the proxy logs a flow after it answered, so the client can
   * see its reply before the line reaches this process. Throws after ms naming what was awaited.
   */
  async flowsWhen(what: string, ready: (flows: ReturnType<L7Topology["flows"]>) => boolean, ms = 5000): Promise<ReturnType<L7Topology["flows"]>> {
    const end = Date.now() + ms;
    for (;;) {
      const flows = this.flows();
      if (ready(flows)) return flows;
      if (Date.now() > end) throw new Error(`${what}: not among the proxy's ${flows.length} flows after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async cleanup(): Promise<void> {
    await this.stopProxy("SIGKILL");
    for (const ifindex of [this.ifindex.xwing, this.ifindex.deathstar]) {
      try {
        if (this.dp && ifindex) this.dp.detachEndpoint(ifindex, this.ns.host);
      } catch {
        // the netns may already be gone
      }
    }
    try {
      this.fx.cleanup();
    } finally {
      // Pins and the state dir go even when a namespace or link could not be removed.
      this.dp?.close();
      this.dp?.unpin();
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
