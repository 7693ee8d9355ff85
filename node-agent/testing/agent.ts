// Test fixture for the agent tests: a pod netns and a host netns joined by a veth, a TCP server on the host side, TLS material, and probes.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { pino, type Logger } from "pino";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import { type TestPki, makePki } from "../../kube/testing/pki.ts";
import { NetnsFixture, ifindexIn, waitForLine } from "../bpf/netns.ts";
import { type EndpointAddRequest, type EndpointDelRequest } from "../cni/agent-socket.ts";
import type { Datapath } from "../bpf/datapath.ts";
import type { NodeAgent } from "../agent.ts";

const run = promisify(execFile);
const PROBE = fileURLToPath(new URL("../bpf/probe.ts", import.meta.url));

export const POD_IP = "10.202.0.1";
export const HOST_IP = "10.202.0.2";
export const POD_ID = 1100;
export const HOST_PEER_ID = 2100;

/** pino lines captured as objects, so tests can see what was logged. */
export function capturingLogger(lines: Record<string, unknown>[]): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return pino({ level: "info" }, sink);
}

export async function until<T>(what: string, f: () => T | undefined | false, ms = 8000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The pod may send TCP to the host peer on exactly `ports` (egress enforced). */
export function stateAllowing(ports: number[], generation: number, extraIpcache: NodeState["ipcache"] = []): NodeState {
  const entries: PolicyEntry[] = ports.map((port) => ({ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: port }));
  return {
    policies: [{ subject: POD_ID, ingressEnforced: false, egressEnforced: true, entries }],
    ipcache: [{ prefix: `${POD_IP}/32`, identity: POD_ID, node: "192.0.2.1" }, { prefix: `${HOST_IP}/32`, identity: HOST_PEER_ID }, ...extraIpcache],
    identities: [{ id: POD_ID, labels: ["k8s:app=client"] }, { id: HOST_PEER_ID, labels: ["k8s:app=server"] }],
    rules: ports.map((port) => ({ id: port, origin: { policyKind: "CiliumNetworkPolicy" as const, namespace: "default", name: `allow-${port}`, ruleIndex: 0, path: "spec.egress[0]" } })),
    policyGenerations: [{ key: "CiliumNetworkPolicy/default/p", uid: "u1", generation }],
  };
}

/** Everything one agent test creates, named after `tag`, removed by cleanup() even after a failure. */
export class AgentTestbed {
  readonly node: string;
  readonly nsPod: string;
  readonly nsHost: string;
  readonly hostIf: string;
  readonly scope: string;
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-"));
  readonly socketPath = path.join(this.dir, "agent.sock");
  readonly containerId: string;
  hostIfindex = 0;
  pki: TestPki | undefined;
  private readonly fx = new NetnsFixture();

  constructor(readonly tag: string) {
    this.node = `${tag}-node`;
    this.nsPod = `${tag}-pod`;
    this.nsHost = `${tag}-host`;
    this.hostIf = `${tag}h`;
    this.scope = `test-${tag}`;
    this.containerId = `${tag}-container`;
  }

  async setUp(): Promise<void> {
    this.pki = await makePki([this.node]);
    this.fx.addNetns(this.nsPod);
    this.fx.addNetns(this.nsHost);
    this.fx.addVeth({ netns: this.nsPod, ifname: `${this.tag}p`, cidr: `${POD_IP}/24` }, { netns: this.nsHost, ifname: this.hostIf, cidr: `${HOST_IP}/24` });
    this.hostIfindex = ifindexIn(this.nsHost, this.hostIf);
    await waitForLine(this.fx.spawn(this.nsHost, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080", "8081"]), /^listening/, 15000);
  }

  serverTls(): { ca: Buffer; cert: Buffer; key: Buffer } {
    return { ca: this.pki!.read("ca.crt"), cert: this.pki!.read("operator.crt"), key: this.pki!.read("operator.key") };
  }

  agentTls(): { ca: Buffer; cert: Buffer; key: Buffer } {
    return { ca: this.pki!.read("ca.crt"), cert: this.pki!.read(`${this.node}.crt`), key: this.pki!.read(`${this.node}.key`) };
  }

  addRequest(): EndpointAddRequest {
    return { op: "endpoint-add", containerId: this.containerId, namespace: "default", pod: "client", ifname: "eth0", netns: `/var/run/netns/${this.nsPod}`, hostIfname: this.hostIf, hostIfindex: this.hostIfindex, ips: [POD_IP] };
  }

  delRequest(): EndpointDelRequest {
    return { op: "endpoint-del", containerId: this.containerId, ifname: "eth0", hostIfname: this.hostIf };
  }

  /** A TCP connect from the pod (bash's /dev/tcp: no runtime start-up eats the timeout); true when the handshake completes. */
  async reaches(port: number): Promise<boolean> {
    try {
      await run("ip", ["netns", "exec", this.nsPod, "timeout", "1.5", "bash", "-c", `exec 3<>/dev/tcp/${HOST_IP}/${port}`]);
      return true;
    } catch {
      return false;
    }
  }

  async verdicts(): Promise<{ 8080: boolean; 8081: boolean }> {
    const [a, b] = await Promise.all([this.reaches(8080), this.reaches(8081)]);
    return { 8080: a, 8081: b };
  }

  cleanup(): void {
    this.fx.cleanup();
    this.pki?.remove();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Stops what an agent test started, in order, then removes the testbed; tolerant of parts never started. */
export async function teardownAgentTest(
  tb: AgentTestbed,
  parts: { agent?: NodeAgent; server?: { close(): Promise<void> }; dp?: Datapath },
): Promise<void> {
  await parts.agent?.stop();
  await parts.server?.close();
  try {
    if (parts.dp && tb.hostIfindex) parts.dp.detachEndpoint(tb.hostIfindex, tb.nsHost);
  } catch {
    // the netns may already be gone
  }
  parts.dp?.close();
  parts.dp?.unpin();
  tb.cleanup();
}
