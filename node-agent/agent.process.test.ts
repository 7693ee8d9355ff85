// `bin/membrane agent` as a real process: flags, connect and ACK, kill -9 keeps enforcing (connections and denials), a restart converges with its endpoints, resumes, reconciles links, and honours the enforcement mode.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { Datapath } from "./bpf/datapath.ts";
import { attachedProgramId } from "./bpf/loader.ts";
import { callAgent } from "./cni/agent-socket.ts";
import { parseAgentFlags } from "./flags.ts";
import { AgentTestbed, HOST_IP, POD_ID, POD_IP, capturingLogger, stateAllowing, until } from "./testing/agent.ts";
import { hostIfname } from "./cni/podnet.ts";
import { ipIn } from "./bpf/netns.ts";

const run = promisify(execFile);

const MEMBRANE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bin/membrane");
const MEMBRANE_CNI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bin/membrane-cni");

describe("membrane agent (process)", () => {
  const tb = new AgentTestbed(`m6p${process.pid % 100000}`);
  let server: DistributionServer | undefined;
  let port = 0;
  const children: ChildProcess[] = [];
  const lines: Record<string, unknown>[] = [];

  const report = () => server?.reports().find((r) => r.node === tb.node);
  /** The CNI plugin's IPAM state dir of this "node" (read by the agent at start to tell pods it must adopt from stale links). */
  const cniStateDir = (): string => path.join(tb.dir, "cni-state");
  const startAgent = (...extra: string[]): ChildProcess => {
    const child = spawn(MEMBRANE, [
      "agent", "--node-name", tb.node, "--operator", `127.0.0.1:${port}`,
      "--tls-cert", tb.pki!.file(`${tb.node}.crt`), "--tls-key", tb.pki!.file(`${tb.node}.key`), "--tls-ca", tb.pki!.file("ca.crt"),
      "--bpf-scope", tb.scope, "--cni-socket", tb.socketPath, "--state-dir", path.join(tb.dir, "state"), "--cni-state-dir", cniStateDir(), "--netns", tb.nsHost,
      "--hubble-socket", path.join(tb.dir, "hubble.sock"), "--metrics-address", "127.0.0.1:0", ...extra,
    ], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let buf = "";
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      for (const l of parts) if (l.startsWith("{")) lines.push(JSON.parse(l) as Record<string, unknown>);
    });
    return child;
  };
  const exited = (c: ChildProcess): Promise<number | null> => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve(c.exitCode) : new Promise((r) => c.once("exit", (code) => r(code))));

  before(async () => {
    await tb.setUp();
    fs.mkdirSync(cniStateDir());
    server = new DistributionServer(tb.serverTls(), capturingLogger([]));
    port = await server.listen(0);
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await server?.close();
    try {
      const dp = Datapath.load(tb.scope);
      dp.detachEndpoint(tb.hostIfindex, tb.nsHost);
      dp.close();
      dp.unpin();
    } catch {
      // nothing was pinned or the netns is gone
    }
    tb.cleanup();
  });

  it("flags: the required ones are named when missing, and the operator address is checked", () => {
    assert.deepEqual(parseAgentFlags(["--operator", "127.0.0.1:1"]), { ok: false, error: "--node-name: required" });
    const bad = parseAgentFlags(["--node-name", "n", "--operator", "nowhere", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
    assert.deepEqual(bad, { ok: false, error: '--operator: must be HOST:PORT, got "nowhere"' });
    // The chart's $(MEMBRANE_OPERATOR_SERVICE_HOST) left as it is by a kubelet that had no such Service: the error says why.
    const unset = parseAgentFlags(["--node-name", "n", "--operator", "$(MEMBRANE_OPERATOR_SERVICE_HOST):4245", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
    assert.ok(!unset.ok && /still holds \$\(MEMBRANE_OPERATOR_SERVICE_HOST\).*create the operator Service first/.test(unset.error), JSON.stringify(unset));
    const good = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:9", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
    assert.ok(good.ok && good.flags.bpfScope === "n" && good.flags.cniSocket === "/run/membrane/agent.sock" && good.flags.netns === undefined);
  });

  it("runs, applies the operator's state to a registered pod, and kill -9 neither cuts an established connection nor lets a denied one through", async () => {
    server!.publish(tb.node, stateAllowing([8080], 1));
    const first = startAgent();
    await until("state acked", () => report()?.acked?.policyGenerations[0]?.generation === 1, 20000);
    await until("socket serving", () => lines.some((l) => l.msg === "endpoint socket serving"));
    assert.deepEqual(await callAgent(tb.socketPath, tb.addRequest()), { ok: true });
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false });
    // An established connection that must outlive the agent: bash holds it open and echoes through it.
    const held = spawn("ip", ["netns", "exec", tb.nsPod, "bash", "-c", `exec 3<>/dev/tcp/10.202.0.2/8080; read line; echo "$line" >&3; read -t 3 reply <&3; echo "got:$reply"`], { stdio: ["pipe", "pipe", "ignore"] });
    children.push(held);
    await new Promise((r) => setTimeout(r, 300));
    first.kill("SIGKILL");
    await exited(first);
    held.stdin?.end("still-here\n");
    let out = "";
    held.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    await exited(held);
    assert.match(out, /got:still-here/, "the established connection still carries data after kill -9");
    assert.deepEqual(await tb.verdicts(), { 8080: true, 8081: false }, "the maps keep enforcing without an agent");
    assert.ok(attachedProgramId({ ifindex: tb.hostIfindex, direction: "ingress", netns: tb.nsHost }), "programs stay attached");
  });

  it("a restarted agent restores its endpoints, converges on the new state, and SIGTERM exits 0 leaving enforcement in place", async () => {
    lines.length = 0;
    const previousProgram = attachedProgramId({ ifindex: tb.hostIfindex, direction: "ingress", netns: tb.nsHost });
    server!.publish(tb.node, stateAllowing([8081], 2));
    const second = startAgent();
    await until("restored", () => lines.find((l) => l.msg === "endpoints restored" && l.endpoints === 1), 20000);
    const reconciled = await until("reconciled", () => lines.find((l) => l.msg === "endpoints reconciled with host links"), 20000);
    assert.equal(reconciled.reattached, 1, "the kept endpoint runs the new agent's programs");
    // The same object and settings: the restart reuses the programs the kernel verified (7a1f253), so the one attached stays.
    assert.ok(lines.some((l) => l.msg === "bpf programs reused: same object and settings as the pinned ones, not verified again"), "the pinned programs were reused");
    const program = attachedProgramId({ ifindex: tb.hostIfindex, direction: "ingress", netns: tb.nsHost });
    assert.ok(program !== undefined && program === previousProgram, `program ${previousProgram} stays attached (now ${program})`);
    await until("new state acked", () => report()?.acked?.policyGenerations[0]?.generation === 2, 20000);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
    const signalledAt = Date.now();
    second.kill("SIGTERM");
    assert.equal(await exited(second), 0);
    // Bounded shutdown: each step has its own bound, the process a 3 s backstop; 5 s absorbs a loaded machine.
    assert.ok(Date.now() - signalledAt < 5_000, `the agent took ${Date.now() - signalledAt} ms to exit after SIGTERM`);
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
  });

  it("a restart with nothing new resumes from the last acknowledged version: no snapshot, and the stream counts as up", async () => {
    lines.length = 0;
    const third = startAgent();
    await until("resumed", () => lines.find((l) => l.msg === "resuming from the last acknowledged state" && l.version === report()?.ackedVersion), 20000);
    await until("stream up", () => lines.find((l) => l.msg === "operator stream connected" && l.resumeFrom === report()?.ackedVersion), 20000);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(lines.filter((l) => l.msg === "state applied").length, 0, "nothing re-applied");
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
    third.kill("SIGTERM");
    assert.equal(await exited(third), 0);
  });

  it("at start, a record whose link is gone is dropped, a pod veth with no record whose pod the CNI plugin's IPAM does not hold is removed, and ghost endpoint entries go; the real pod keeps its policy", async () => {
    const stateDir = path.join(tb.dir, "state");
    const records = JSON.parse(fs.readFileSync(path.join(stateDir, "endpoints.json"), "utf8")) as unknown[];
    records.push({ containerId: "gone", namespace: "default", pod: "gone", hostIfname: "mbr00000000000", hostIfindex: 99999, ips: ["10.202.0.77"] });
    fs.writeFileSync(path.join(stateDir, "endpoints.json"), JSON.stringify(records));
    const orphan = "mbr0a0a0a0a0a0";
    ipIn(tb.nsHost, "link", "add", orphan, "type", "veth", "peer", "name", `${tb.tag}o`);
    const dp = Datapath.load(tb.scope);
    try {
      for (const ip of ["10.202.0.77", "10.202.0.88"]) dp.setEndpoint({ ip, ifindex: 99999, identity: 9999, ingressEnforced: false, egressEnforced: false });
    } finally {
      dp.close();
    }
    lines.length = 0;
    const fourth = startAgent();
    const done = await until("reconciled", () => lines.find((l) => l.msg === "endpoints reconciled with host links"), 20000);
    assert.deepEqual([done.endpoints, done.dropped, done.linksRemoved, done.ghostEntries], [1, 1, 1, 2]);
    assert.ok(lines.some((l) => l.msg === "endpoint record without its host link dropped" && l.containerId === "gone"));
    assert.ok(lines.some((l) => l.msg === "host link without an endpoint record removed" && l.hostIfname === orphan));
    assert.throws(() => ipIn(tb.nsHost, "link", "show", "dev", orphan), "the orphan veth is gone");
    const kept = JSON.parse(fs.readFileSync(path.join(stateDir, "endpoints.json"), "utf8")) as { containerId: string }[];
    assert.deepEqual(kept.map((e) => e.containerId), [tb.containerId]);
    const check = Datapath.load(tb.scope);
    try {
      assert.equal(check.object.map("membrane_endpoints").keys().length, 1, "only the real pod's endpoint entry is left");
    } finally {
      check.close();
    }
    assert.deepEqual(await tb.verdicts(), { 8080: false, 8081: true });
    fourth.kill("SIGTERM");
    assert.equal(await exited(fourth), 0);
  });

  it("a pod the CNI plugin wired while no agent ran (a network config without the agent) keeps its network and is adopted and enforced by the agent that starts", async () => {
    const podNs = `${tb.tag}-early`;
    const containerId = `${tb.tag}-early-container`;
    const conf = { cniVersion: "1.0.0", name: "membrane", type: "membrane-cni", podCIDR: "10.202.5.0/24", stateDir: cniStateDir(), logLevel: "silent" };
    const plugin = (command: "ADD" | "DEL", extra: Record<string, unknown> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const child = spawn("ip", ["netns", "exec", tb.nsHost, MEMBRANE_CNI], {
          env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: command, CNI_PATH: "/opt/cni/bin", CNI_CONTAINERID: containerId, CNI_NETNS: `/var/run/netns/${podNs}`, CNI_IFNAME: "eth0", CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=early" },
          stdio: ["pipe", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        child.on("close", (code) => resolve({ code, stdout, stderr }));
        child.stdin.end(JSON.stringify({ ...conf, ...extra }));
      });
    // From the pod to the testbed's server on the node (HOST_IP: the peer the policy names).
    const reaches = async (port: number): Promise<boolean> => {
      try {
        await run("ip", ["netns", "exec", podNs, "timeout", "1.5", "bash", "-c", `exec 3<>/dev/tcp/${HOST_IP}/${port}`]);
        return true;
      } catch {
        return false;
      }
    };
    await run("ip", ["netns", "add", podNs]);
    try {
      const added = await plugin("ADD");
      assert.equal(added.code, 0, `ADD without an agent: ${added.stdout} ${added.stderr}`);
      const ip = ((JSON.parse(added.stdout) as { ips: { address: string }[] }).ips[0]!.address).split("/")[0]!;
      assert.deepEqual([await reaches(8080), await reaches(8081)], [true, true], "wired and not enforced before the agent");
      // The operator knows the pod (its identity is the registered pod's, which may reach 8081 only).
      server!.publish(tb.node, stateAllowing([8081], 30, [{ prefix: `${ip}/32`, identity: POD_ID, node: "192.0.2.1" }]));
      lines.length = 0;
      const agent = startAgent();
      const done = await until("reconciled", () => lines.find((l) => l.msg === "endpoints reconciled with host links"), 20000);
      assert.deepEqual([done.adopted, done.linksRemoved], [1, 0], JSON.stringify(done));
      assert.ok(lines.some((l) => l.msg === "pod veth wired without the agent adopted as an endpoint" && l.containerId === containerId && Array.isArray(l.ips) && l.ips.length === 1 && l.ips[0] === ip));
      const hostIf = hostIfname(containerId);
      const ifindex = Number(JSON.parse((await run("ip", ["-n", tb.nsHost, "-j", "link", "show", "dev", hostIf])).stdout)[0].ifindex);
      assert.ok(attachedProgramId({ ifindex, direction: "ingress", netns: tb.nsHost }), "the agent's programs run on the adopted veth");
      const records = JSON.parse(fs.readFileSync(path.join(tb.dir, "state", "endpoints.json"), "utf8")) as { containerId: string; ips: string[] }[];
      assert.deepEqual(records.find((r) => r.containerId === containerId)?.ips, [ip]);
      await until("new state acked", () => report()?.acked?.policyGenerations[0]?.generation === 30, 20000);
      assert.deepEqual([await reaches(8080), await reaches(8081)], [false, true], "the adopted pod keeps its network and its policy is enforced");
      // Its DEL through the agent, as the runtime would send it now: record and link gone.
      const deleted = await plugin("DEL", { agentSocket: tb.socketPath });
      assert.equal(deleted.code, 0, deleted.stderr);
      assert.ok(!(JSON.parse(fs.readFileSync(path.join(tb.dir, "state", "endpoints.json"), "utf8")) as { containerId: string }[]).some((r) => r.containerId === containerId));
      agent.kill("SIGTERM");
      assert.equal(await exited(agent), 0);
    } finally {
      await run("ip", ["netns", "del", podNs]).catch(() => undefined);
    }
  });

  it("--policy-enforcement-mode: never lets everything through, always enforces a direction no policy selects, default only what policy selects", async () => {
    // A server in the pod, reached from the host side: the pod's ingress, which the policy does not select.
    const podServer = spawn("ip", ["netns", "exec", tb.nsPod, process.execPath, "-e", `require("net").createServer(s=>s.end()).listen(9090,()=>console.log("listening"))`], { stdio: ["ignore", "pipe", "ignore"] });
    children.push(podServer);
    await new Promise<void>((resolve) => podServer.stdout?.once("data", () => resolve()));
    const inbound = async (): Promise<boolean> => {
      try {
        await run("ip", ["netns", "exec", tb.nsHost, "timeout", "1.5", "bash", "-c", `exec 3<>/dev/tcp/${POD_IP}/9090`]);
        return true;
      } catch {
        return false;
      }
    };
    const withMode = async (mode: string) => {
      lines.length = 0;
      const agent = startAgent("--policy-enforcement-mode", mode);
      await until(`${mode}: applied`, () => lines.find((l) => l.msg === "state applied"), 20000);
      const seen = { ...(await tb.verdicts()), inbound: await inbound() };
      agent.kill("SIGTERM");
      assert.equal(await exited(agent), 0);
      return seen;
    };
    assert.deepEqual(await withMode("never"), { 8080: true, 8081: true, inbound: true }, "never: nothing enforced, the egress policy included");
    assert.deepEqual(await withMode("always"), { 8080: false, 8081: true, inbound: false }, "always: ingress enforced with no policy selecting it");
    assert.deepEqual(await withMode("default"), { 8080: false, 8081: true, inbound: true }, "default: only the selected egress is enforced");
    void HOST_IP;
  });
});
