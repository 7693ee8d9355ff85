// Test and benchmark fixture: a pod netns, a node netns running the datapath on the pod's veth, an "outside" netns with a resolver, and the node's DNS service.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../../../core/model.ts";
import { Datapath } from "../../bpf/datapath.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "../../bpf/netns.ts";
import { AGENT_NODE_OPTIONS } from "../../flags.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../../..");
export const PROBE = path.join(ROOT, "node-agent/bpf/probe.ts");
export const CLIENT = path.join(here, "client.ts");
export const LOOKUP_CONNECT = path.join(here, "lookup-connect.ts");
const RESOLVER = path.join(here, "resolver.ts");
const NODE_DNS = path.join(here, "node-dns.ts");

export const ADDR = {
  pod: "10.203.0.1",
  node: "10.203.0.2", // the host end of the pod's veth: also the proxy's address
  uplink: "10.204.0.1",
  resolver: "10.204.0.2",
} as const;
/** Prefixes on the outside netns's loopback (names answer addresses there), routed through the node. */
export const OUTSIDE_PREFIXES = ["10.205.0.0/24", "10.206.0.0/16"];

/** The pod's and the resolver's identities in these fixtures. */
export const POD_IDENTITY = 1000;
export const RESOLVER_IDENTITY = 2000;

/** One DNS port of the pod's egress policy to the resolver: `proxyPort` 0 is a plain allow. */
export interface DnsPort {
  readonly port: number;
  readonly protos: readonly ("UDP" | "TCP")[];
  readonly proxyPort: number;
  readonly ruleId: number;
}

/** The pod's egress policy (egress enforced): an allow to the resolver's identity per port and protocol. */
export function podDnsPolicy(ports: readonly DnsPort[]): SubjectPolicy {
  const entries: PolicyEntry[] = ports.flatMap((p) =>
    p.protos.map((proto) => ({ subject: POD_IDENTITY, direction: "egress" as const, verdict: "allow" as const, peer: RESOLVER_IDENTITY, proto: PROTO_NUMBER[proto], port: p.port, portPrefixLen: 16, proxyPort: p.proxyPort, ruleId: p.ruleId })),
  );
  return { subject: POD_IDENTITY, ingressEnforced: false, egressEnforced: true, entries };
}

/** The three namespaces, the datapath on the pod's veth, a resolver and a TCP server outside; torn down by cleanup(). */
export class DnsTopology {
  readonly ns: { pod: string; host: string; out: string };
  readonly fx = new NetnsFixture();
  readonly scope: string;
  dp!: Datapath;
  hostIfindex = 0;
  resolverLog = "";
  private nodeDns: ChildProcess | undefined;

  constructor(readonly tag: string) {
    this.ns = { pod: `${tag}-pod`, host: `${tag}-host`, out: `${tag}-out` };
    this.scope = `test-${tag}`;
  }

  /** Builds it all; `zone` is the resolver's (resolver.ts), served on every port of `resolverPorts`. */
  async setUp(opts: { zone: unknown; resolverPorts: readonly number[]; resolverIdentity: number; policy: SubjectPolicy; quietResolver?: boolean }): Promise<void> {
    const { pod, host, out } = this.ns;
    this.fx.addNetns(pod);
    this.fx.addNetns(host);
    this.fx.addNetns(out);
    this.fx.addVeth({ netns: pod, ifname: `${this.tag}p`, cidr: `${ADDR.pod}/24` }, { netns: host, ifname: `${this.tag}h`, cidr: `${ADDR.node}/24` });
    this.fx.addVeth({ netns: host, ifname: `${this.tag}u`, cidr: `${ADDR.uplink}/24` }, { netns: out, ifname: `${this.tag}o`, cidr: `${ADDR.resolver}/24` });
    ipIn(pod, "route", "add", "default", "via", ADDR.node);
    ipIn(out, "route", "add", "10.203.0.0/24", "via", ADDR.uplink);
    for (const p of OUTSIDE_PREFIXES) {
      ipIn(host, "route", "add", p, "via", ADDR.resolver);
      ipIn(out, "route", "add", "local", p, "dev", "lo");
    }
    execIn(host, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
    this.hostIfindex = ifindexIn(host, `${this.tag}h`);

    this.dp = Datapath.load(this.scope);
    this.dp.clearAll();
    this.dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
    this.dp.setIpcache({ cidr: `${ADDR.resolver}/32`, identity: opts.resolverIdentity });
    this.dp.setSubjectPolicy(opts.policy, [{ ip: ADDR.pod, ifindex: this.hostIfindex }]);
    this.dp.attachEndpoint(this.hostIfindex, host);

    const resolver = this.fx.spawn(out, process.execPath, [
      "--import", "tsx", RESOLVER, ADDR.resolver, opts.resolverPorts.join(","), JSON.stringify(opts.zone), ...(opts.quietResolver ? ["quiet"] : []),
    ]);
    resolver.stdout?.on("data", (d: Buffer) => (this.resolverLog += d.toString()));
    const server = this.fx.spawn(out, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080"]);
    await Promise.all([waitForLine(resolver, /^listening/, 20000), waitForLine(server, /^listening/, 20000)]);
  }

  /**
   * Starts the node's DNS service (node-dns.ts) in the node netns with `config` (its Config, scope
   * and endpoints filled in); `onLine` gets its stdout lines. nsenter, not `ip netns exec`: only the
   * network namespace changes, so /sys/fs/bpf (the pinned maps) stays the host's. It runs with the
   * agent's Node options (the chart's), so its garbage collector is the agent's.
   */
  async startNodeDns(config: Record<string, unknown>, onLine: (line: string) => void = () => {}): Promise<ChildProcess> {
    const full = { scope: this.scope, proxyAddress: ADDR.node, endpoints: [{ ip: ADDR.pod, ifindex: this.hostIfindex }], ...config };
    const child = spawn("nsenter", [`--net=/var/run/netns/${this.ns.host}`, process.execPath, ...AGENT_NODE_OPTIONS.split(" "), "--import", "tsx", NODE_DNS, JSON.stringify(full)], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.nodeDns = child;
    let buf = "";
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const l of lines) {
        if (l.startsWith("gc ")) this.gcWaiters.shift()?.(JSON.parse(l.slice(3)) as string[]);
        onLine(l);
      }
    });
    child.stderr?.on("data", (d: Buffer) => process.stderr.write(d));
    await waitForLine(child, /^ready/, 30000);
    return child;
  }

  private readonly gcWaiters: ((removed: string[]) => void)[] = [];

  /** With config `manualGc`: runs the node's FQDN GC as of `nowMs` and resolves to the addresses it removed. */
  gcAt(nowMs: number): Promise<string[]> {
    const child = this.nodeDns;
    if (!child || child.exitCode !== null) return Promise.reject(new Error("the node's DNS service is not running"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the node's DNS service did not answer a gc request within 30 s")), 30_000);
      this.gcWaiters.push((removed) => {
        clearTimeout(timer);
        resolve(removed);
      });
      child.stdin!.write(`gc ${Math.floor(nowMs)}\n`);
    });
  }

  /**
   * Runs lookup-connect.ts in the pod with `options` (its Options; server and port default to the
   * resolver's port 53); `onStep` gets each step's number. Resolves to its summary line.
   */
  async lookupConnect(options: Record<string, unknown>, onStep: (i: number) => void = () => {}): Promise<Record<string, unknown>> {
    const child = spawn("ip", ["netns", "exec", this.ns.pod, process.execPath, "--import", "tsx", LOOKUP_CONNECT, JSON.stringify({ server: ADDR.resolver, port: 53, ...options })], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let buf = "";
    let last = "";
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const l of lines) {
        const m = /^step (\d+)$/.exec(l);
        if (m) onStep(Number(m[1]));
        else if (l.trim()) last = l;
      }
    });
    child.stderr.on("data", (d: Buffer) => process.stderr.write(d));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    if (code !== 0) throw new Error(`lookup-connect exited ${code}`);
    return JSON.parse(last) as Record<string, unknown>;
  }

  /** The node's DNS service's pid while it runs (nsenter execs it: its pid is the child's). */
  nodeDnsPid(): number | undefined {
    return this.nodeDns?.pid;
  }

  /** CPU time (user + system, ms) the node's DNS service has used so far (nsenter execs it: its pid is the child's). */
  nodeDnsCpuMs(): number {
    const pid = this.nodeDns?.pid;
    if (pid === undefined) return NaN;
    // /proc/PID/stat: the fields after the command's closing parenthesis; utime and stime are the 12th and 13th, in clock ticks (100/s).
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  }

  /** Whether a TCP connect from the pod to ip:port succeeds within `timeoutMs`. */
  async connects(ip: string, port: number, timeoutMs = 1500): Promise<boolean> {
    const child = spawn("ip", ["netns", "exec", this.ns.pod, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", ip, String(port), String(timeoutMs)], { cwd: ROOT, stdio: "ignore" });
    return (await new Promise<number | null>((r) => child.once("exit", r))) === 0;
  }

  /** Stops the node's DNS service (SIGKILL: as an agent killed -9). */
  async stopNodeDns(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.nodeDns;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }

  async cleanup(): Promise<void> {
    await this.stopNodeDns();
    try {
      if (this.dp && this.hostIfindex) this.dp.detachEndpoint(this.hostIfindex, this.ns.host);
    } catch {
      // the netns may already be gone
    }
    this.fx.cleanup();
    this.dp?.close();
    this.dp?.unpin();
  }
}
