// `membrane runtime` as the process a node runs: it reads the pods file and the TracingPolicy file, writes each
// policy's status, kills a pod's process that opens the watched file (the reference example), exports the event
// with the pod next to exec/exit events, follows a change of the policy file, and removes everything at SIGTERM;
// its connect and tracepoint programs outlive it when it is killed (pinned), or SIGTERMed with --keep-sensors-on-exit,
// and the next runtime adopts them. Every runtime here pins under a scope of this run's own (--bpf-scope), so a
// concurrent run (another worktree, CI) and a node's real runtime are never touched.
// Loads eBPF and creates network namespaces: run under flock /tmp/membrane-kernel.lock.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml, stringify } from "yaml";
import type { RuntimeEvent } from "../../core/process-event.ts";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { NetnsFixture } from "../bpf/netns.ts";
import { AgentRuntime } from "./agent-runtime.ts";
import { removeRuntimePins, runtimePinScopes } from "./pin-scopes.ts";
import { pino } from "pino";

const NS = `rt-proc-${process.pid}`;
/** This run's pin scopes: the first runtime's, and those of the killed and kept runtimes. */
const SCOPE = `test-rt-${process.pid}`;
const FO_SCOPE = `test-rt-fo-${process.pid}`;
/** Which of a scope's pin directories exist. */
const pinned = (scope: string): string[] => Object.values(runtimePinScopes(scope)).filter((d) => fs.existsSync(path.join(BPFFS_ROOT, d)));
const OTHER_NS = `rt-proc-b-${process.pid}`;
const MEMBRANE = new URL("../../bin/membrane", import.meta.url).pathname;
const EXAMPLE = new URL("../../crds/examples/tetragon-docs/monitor-sensitive-files.yaml", import.meta.url);

function catIn(netns: string, file: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", netns, "/bin/cat", file], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", (code, signal) => resolve({ code, signal, out }));
  });
}

async function until<T>(what: string, find: () => T | undefined | Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await find();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** connect() to 127.0.0.1:port from a namespace; the error's name and errno, or "connected". */
function connectIn(netns: string, port: number): Promise<string> {
  const script = `import socket\ns = socket.socket()\ntry:\n  s.connect(("127.0.0.1", ${port}))\n  print("connected")\nexcept OSError as e:\n  print(type(e).__name__, e.errno)`;
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", netns, "/usr/bin/python3", "-c", script], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", () => resolve(out.trim()));
  });
}

describe("membrane runtime --policy-file --pods-file --status-file (a process of its own)", () => {
  const fixture = new NetnsFixture();
  let dir = "";
  let runtime: ChildProcess | undefined;
  let stderr = "";
  let stdout = "";
  const files = { events: "", policies: "", status: "", pods: "", secret: "" };

  const status = (): Record<string, { enforced: boolean }> | undefined => {
    try {
      return (JSON.parse(fs.readFileSync(files.status, "utf8")) as { policies: Record<string, { enforced: boolean }> }).policies;
    } catch {
      return undefined;
    }
  };
  const events = (): RuntimeEvent[] => fs.readFileSync(files.events, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as RuntimeEvent);

  before(() => {
    fixture.addNetns(NS);
    fixture.addNetns(OTHER_NS);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-runtime-proc-"));
    files.events = path.join(dir, "events.log");
    files.policies = path.join(dir, "policies.yaml");
    files.status = path.join(dir, "status.json");
    files.pods = path.join(dir, "pods.json");
    files.secret = path.join(dir, "secret", "shadow");
    fs.mkdirSync(path.dirname(files.secret));
    fs.writeFileSync(files.secret, "s3cret\n");
    fs.writeFileSync(files.pods, JSON.stringify({ pods: [
      { netns: `/var/run/netns/${NS}`, namespace: "default", name: "shell", labels: { app: "shell" } },
      { netns: `/var/run/netns/${OTHER_NS}`, namespace: "other", name: "idle", labels: { app: "idle" } },
    ] }));
    const example = parseYaml(fs.readFileSync(EXAMPLE, "utf8")) as { spec: { kprobes: { selectors: { matchArgs: { values: string[] }[] }[] }[] } };
    example.spec.kprobes[0]!.selectors[0]!.matchArgs[0]!.values = [files.secret];
    fs.writeFileSync(files.policies, stringify(example));
    runtime = spawn(MEMBRANE, ["runtime", "--export-file", files.events, "--policy-file", files.policies, "--status-file", files.status, "--pods-file", files.pods, "--node-name", "node-rt", "--metrics-address", "127.0.0.1:0", "--bpf-scope", SCOPE], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    runtime.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    runtime.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  });

  after(async () => {
    if (runtime && runtime.exitCode === null) {
      runtime.kill("SIGKILL");
      await new Promise((r) => runtime!.once("close", r));
    }
    removeRuntimePins(SCOPE);
    fixture.cleanup();
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true });
  });

  it("enforces the reference example from the policy file: the pod's cat is killed, the event names pod, binary and file", async () => {
    await until(`the status file (stderr: ${stderr})`, () => (status()?.["default/monitor-sensitive-files"]?.enforced ? true : undefined));
    const killed = await catIn(NS, files.secret);
    assert.equal(killed.signal, "SIGKILL", JSON.stringify(killed));
    const e = await until("the process_kprobe event in the export file", () => events().find((x) => "process_kprobe" in x));
    assert.ok("process_kprobe" in e);
    assert.equal(e.node_name, "node-rt");
    assert.deepEqual(e.process_kprobe.process.pod, { namespace: "default", name: "shell" });
    assert.match(e.process_kprobe.process.binary, /\/cat$/);
    assert.deepEqual(e.process_kprobe.args, [{ file_arg: { path: files.secret } }]);
    assert.equal(e.process_kprobe.action, "KPROBE_ACTION_SIGKILL");
    // The same export carries the exec and the exit (by SIGKILL) of that cat, with the pod.
    const exit = await until("the cat's exit", () => events().find((x) => "process_exit" in x && x.process_exit.process.pid === e.process_kprobe.process.pid));
    assert.ok("process_exit" in exit && exit.process_exit.signal === "SIGKILL");
  });

  it("membrane observe --type process --follow --pod streams the pod's events live from the runtime, not another pod's", async () => {
    const address = await until("the runtime's address in its log", () => /"address":"([^"]+)"/.exec(stdout)?.[1]);
    assert.equal((JSON.parse(fs.readFileSync(files.status, "utf8")) as { address?: string }).address, address, "the status file names it (the agent shows it on its CiliumNode)");
    const observer = spawn(MEMBRANE, ["observe", "--type", "process", "--runtime-address", address, "--follow", "--last", "0", "--pod", "shell", "-o", "json"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    observer.stdout.on("data", (d: Buffer) => (out += d.toString()));
    observer.stderr.on("data", (d: Buffer) => (err += d.toString()));
    try {
      // The client is following once the runtime counts it; what runs after that must arrive without a new request.
      let metrics = "";
      await until("observe following the runtime", async () => {
        metrics = await (await fetch(`http://${address}/metrics`)).text();
        return /^membrane_process_stream_clients 1$/m.test(metrics) ? true : undefined;
      });
      const echoed = await new Promise<number>((resolve) => {
        const c = spawn("ip", ["netns", "exec", OTHER_NS, "/bin/echo", "idle"], { stdio: "ignore" });
        c.on("close", () => {
          const d = spawn("ip", ["netns", "exec", NS, "/bin/echo", "live"], { stdio: "ignore" });
          d.on("close", (code) => resolve(code ?? -1));
        });
      });
      assert.equal(echoed, 0);
      const seen = await until(`the pod's echo on observe's stdout (stderr: ${err})`, () =>
        out.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as RuntimeEvent).find((e) => "process_exec" in e && e.process_exec.process.arguments === "live"),
      );
      assert.ok("process_exec" in seen);
      assert.deepEqual([seen.process_exec.process.binary, seen.process_exec.process.pod], ["/bin/echo", { namespace: "default", name: "shell" }]);
      assert.ok(!out.includes('"idle"'), "the other pod's events are not sent");
      assert.equal(observer.exitCode, null, "still following");
    } finally {
      const closed = new Promise<number | null>((r) => observer.once("close", r));
      observer.kill("SIGINT");
      assert.equal(await closed, 0, `interrupted, observe exits 0 (stderr: ${err})`);
    }
  });

  it("follows the policy file: emptied, the same open succeeds and the status lists no policy", async () => {
    fs.writeFileSync(`${files.policies}.tmp`, "");
    fs.renameSync(`${files.policies}.tmp`, files.policies);
    await until("an empty status", () => (status() !== undefined && Object.keys(status()!).length === 0 ? true : undefined));
    const read = await catIn(NS, files.secret);
    assert.deepEqual([read.code, read.out], [0, "s3cret\n"]);
  });

  it("stops at SIGTERM with exit 0 and leaves no pins", async () => {
    const closed = new Promise<number | null>((r) => runtime!.once("close", r));
    runtime!.kill("SIGTERM");
    assert.equal(await closed, 0, stderr);
    assert.deepEqual(pinned(SCOPE), []);
  });
});

describe("membrane runtime killed: its connect and tracepoint programs keep acting, the next runtime adopts them", () => {
  const fixture = new NetnsFixture();
  const NS_A = `rt-fo-${process.pid}`;
  const NS_B = `rt-fo-b-${process.pid}`;
  const [DENIED, ALSO_DENIED] = [7101, 7102];
  let dir = "";
  const pins = runtimePinScopes(FO_SCOPE);
  const running: ChildProcess[] = [];
  const denyPort = (name: string, port: number): unknown => ({
    apiVersion: "cilium.io/v1alpha1",
    kind: "TracingPolicyNamespaced",
    metadata: { name, namespace: "default" },
    spec: { kprobes: [{ call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }], selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: [String(port)] }], matchActions: [{ action: "Override", argError: -1 }] }] }] },
  });
  const killOpen = (name: string, file: string): unknown => ({
    apiVersion: "cilium.io/v1alpha1",
    kind: "TracingPolicyNamespaced",
    metadata: { name, namespace: "default" },
    spec: { tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6, type: "string" }], selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: [file] }], matchActions: [{ action: "Sigkill" }] }] }] },
  });
  const writePolicies = (objs: unknown[]): void => {
    fs.writeFileSync(path.join(dir, "p.tmp"), objs.map((o) => stringify(o)).join("---\n"));
    fs.renameSync(path.join(dir, "p.tmp"), path.join(dir, "runtime-policies.yaml"));
  };
  const status = (): Record<string, { enforced: boolean }> | undefined => {
    try {
      return (JSON.parse(fs.readFileSync(path.join(dir, "runtime-status.json"), "utf8")) as { policies: Record<string, { enforced: boolean }> }).policies;
    } catch {
      return undefined;
    }
  };
  /** A runtime as the agent starts it (AgentRuntime's file names, so its shutdown() finds them); recorded in the pid file. */
  const startRuntime = (...flags: string[]): { child: ChildProcess; stderr: () => string } => {
    fs.rmSync(path.join(dir, "runtime-status.json"), { force: true });
    return spawnRuntime(flags);
  };
  /** A runtime started beside the files the last one left (its own pod's process: no agent removes them first). */
  const spawnRuntime = (flags: readonly string[], writePid = true): { child: ChildProcess; stderr: () => string } => {
    const child = spawn(MEMBRANE, ["runtime", "--export-file", path.join(dir, "events.log"), "--policy-file", path.join(dir, "runtime-policies.yaml"), "--status-file", path.join(dir, "runtime-status.json"), "--pods-file", path.join(dir, "runtime-pods.json"), "--node-name", "node-fo", "--metrics-address", "127.0.0.1:0", "--bpf-scope", FO_SCOPE, ...flags], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    running.push(child);
    if (writePid) fs.writeFileSync(path.join(dir, "runtime.pid"), `${child.pid}\n`);
    return { child, stderr: () => err };
  };
  /** connect() to the port in a loop until stop(): how many failed with EPERM, and every other outcome by name. */
  const startProber = (netns: string, port: number): { marker: string; stop: () => Promise<{ eperm: number; other: Record<string, number> }> } => {
    const marker = path.join(dir, `prober-${port}`);
    const script = [
      "import socket, os, json, errno",
      `open(${JSON.stringify(`${marker}.started`)}, "w").close()`,
      "eperm, other = 0, {}",
      `while not os.path.exists(${JSON.stringify(marker)}):`,
      "  s = socket.socket()",
      "  try:",
      `    s.connect(("127.0.0.1", ${port}))`,
      "    other['connected'] = other.get('connected', 0) + 1",
      "  except OSError as e:",
      "    if e.errno == errno.EPERM: eperm += 1",
      "    else: other[errno.errorcode.get(e.errno, str(e.errno))] = other.get(errno.errorcode.get(e.errno, str(e.errno)), 0) + 1",
      "  s.close()",
      "print(json.dumps({'eperm': eperm, 'other': other}))",
    ].join("\n");
    const child = spawn("ip", ["netns", "exec", netns, "/usr/bin/python3", "-c", script], { stdio: ["ignore", "pipe", "inherit"] });
    running.push(child);
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    const closed = new Promise((r) => child.once("close", r));
    return {
      marker,
      stop: async () => {
        fs.writeFileSync(marker, "");
        await closed;
        return JSON.parse(out) as { eperm: number; other: Record<string, number> };
      },
    };
  };
  const kill = async (child: ChildProcess): Promise<void> => {
    const closed = new Promise((r) => child.once("close", r));
    child.kill("SIGKILL");
    await closed;
  };

  /** The agent's end of the runtime (its files in dir, this run's scope): its shutdown() is the enforcer switched off or the uninstall. */
  const agentRuntime = (external = false, externalExitWaitMs?: number): AgentRuntime =>
    new AgentRuntime({ stateDir: dir, nodeName: "node-fo", log: pino({ level: "silent" }), bpfScope: FO_SCOPE, external, ...(externalExitWaitMs !== undefined ? { externalExitWaitMs } : {}) });
  before(() => {
    fixture.addNetns(NS_A);
    fixture.addNetns(NS_B);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-runtime-fo-"));
    fs.writeFileSync(path.join(dir, "runtime-pods.json"), JSON.stringify({ pods: [
      { netns: `/var/run/netns/${NS_A}`, namespace: "default", name: "client", labels: { app: "client" } },
      { netns: `/var/run/netns/${NS_B}`, namespace: "other", name: "client", labels: { app: "client" } },
    ] }));
  });

  after(async () => {
    for (const c of running) if (c.exitCode === null && c.signalCode === null) await kill(c);
    removeRuntimePins(FO_SCOPE);
    fixture.cleanup();
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true });
  });

  it("SIGKILLed, its connect Override still refuses the selected pod (EPERM) and its tracepoint Sigkill still kills; a new runtime adopts with no connect let through, drops a policy deleted meanwhile, and the agent's shutdown removes what is pinned", async () => {
    const [kept, dropped] = [path.join(dir, "kept-secret"), path.join(dir, "dropped-secret")];
    for (const f of [kept, dropped]) fs.writeFileSync(f, "s3cret\n");
    writePolicies([denyPort("deny-a", DENIED), denyPort("deny-b", ALSO_DENIED), killOpen("kill-kept", kept), killOpen("kill-dropped", dropped)]);
    const first = startRuntime();
    await until("the policies enforced", () => (["deny-a", "deny-b", "kill-kept", "kill-dropped"].every((n) => status()?.[`default/${n}`]?.enforced) ? true : undefined), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; status: ${JSON.stringify(status())}; stderr: ${first.stderr()}`);
    });
    assert.equal(await connectIn(NS_A, DENIED), "PermissionError 1");
    assert.equal((await catIn(NS_A, kept)).signal, "SIGKILL");
    await kill(first.child);
    // No runtime runs: the pinned links and rules answer alone.
    assert.equal(await connectIn(NS_A, DENIED), "PermissionError 1", "refused with no runtime running");
    assert.equal(await connectIn(NS_A, ALSO_DENIED), "PermissionError 1");
    assert.equal(await connectIn(NS_B, DENIED), "ConnectionRefusedError 111", "another namespace's pod is still refused by nobody");
    assert.equal((await catIn(NS_A, kept)).signal, "SIGKILL", "the tracepoint's Sigkill with no runtime running");
    assert.equal((await catIn(NS_B, kept)).out, "s3cret\n", "another namespace's pod reads it");
    // deny-a and kill-dropped are deleted while no runtime runs; the next one adopts the programs and rewrites the
    // rules, while a prober in the pod connects again and again: none of its connects may get through meanwhile.
    writePolicies([denyPort("deny-b", ALSO_DENIED), killOpen("kill-kept", kept)]);
    const prober = startProber(NS_A, ALSO_DENIED);
    await until("the prober running", () => (fs.existsSync(`${prober.marker}.started`) ? true : undefined));
    const second = startRuntime();
    // As long as the first start may take (the verifier under load, beside a prober that connects without pause).
    await until("deny-b enforced by the new runtime", () => (status()?.["default/deny-b"]?.enforced ? true : undefined), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; status: ${JSON.stringify(status())}; stderr: ${second.stderr()}`);
    });
    await new Promise((r) => setTimeout(r, 300));
    const probed = await prober.stop();
    assert.ok(probed.eperm > 0, JSON.stringify(probed));
    assert.deepEqual(probed.other, {}, `every connect while the new runtime started was refused with EPERM: ${JSON.stringify(probed)}`);
    assert.equal(status()?.["default/deny-a"], undefined);
    assert.equal(await connectIn(NS_A, DENIED), "ConnectionRefusedError 111", "the deleted policy no longer refuses");
    assert.equal(await connectIn(NS_A, ALSO_DENIED), "PermissionError 1");
    assert.deepEqual(fs.readdirSync(path.join(BPFFS_ROOT, pins.connect, "links")).sort(), ["membrane_connect4", "membrane_connect6"], "the same two links, adopted");
    assert.equal((await catIn(NS_A, dropped)).out, "s3cret\n", "the deleted tracepoint policy no longer kills");
    assert.equal((await catIn(NS_A, kept)).signal, "SIGKILL");
    // Killed again, then the agent stops the enforcer (switched off, uninstall): what it left pinned goes too.
    await kill(second.child);
    assert.equal(await connectIn(NS_A, ALSO_DENIED), "PermissionError 1");
    await agentRuntime().shutdown();
    assert.deepEqual(pinned(FO_SCOPE), [], "no pins left");
    assert.equal(await connectIn(NS_A, ALSO_DENIED), "ConnectionRefusedError 111", "nothing refuses once removed");
    assert.equal((await catIn(NS_A, kept)).out, "s3cret\n", "nothing kills once removed");
  });

  it("--keep-sensors-on-exit: SIGTERMed, its connect Override goes on refusing (no connect let through until the next runtime is ready), the next runtime adopts it and applies a changed policy, and the uninstall removes what it kept; without the flag SIGTERM removes it", async () => {
    const [KEPT, DELETED, ADDED] = [7103, 7104, 7105];
    const pidFile = path.join(dir, "runtime.pid");
    const keep = ["--keep-sensors-on-exit", "--pid-file", pidFile];
    const enforced = async (names: string[], r: { stderr: () => string }): Promise<void> => {
      await until(`${names.join(", ")} enforced`, () => (names.every((n) => status()?.[`default/${n}`]?.enforced) ? true : undefined), 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; status: ${JSON.stringify(status())}; stderr: ${r.stderr()}`);
      });
    };
    const term = async (child: ChildProcess): Promise<number | null> => {
      const closed = new Promise<number | null>((r) => child.once("close", r));
      child.kill("SIGTERM");
      return closed;
    };
    writePolicies([denyPort("keep-a", KEPT), denyPort("keep-b", DELETED)]);
    const first = startRuntime(...keep);
    await enforced(["keep-a", "keep-b"], first);
    // A prober in the pod from before the SIGTERM until the next runtime is ready: every connect must be refused.
    const prober = startProber(NS_A, KEPT);
    await until("the prober running", () => (fs.existsSync(`${prober.marker}.started`) ? true : undefined));
    assert.equal(await term(first.child), 0, first.stderr());
    assert.deepEqual(fs.readdirSync(path.join(BPFFS_ROOT, pins.connect, "links")).sort(), ["membrane_connect4", "membrane_connect6"], "its links stay pinned");
    assert.equal(await connectIn(NS_A, DELETED), "PermissionError 1", "refused with no runtime running");
    assert.equal(await connectIn(NS_B, KEPT), "ConnectionRefusedError 111", "another namespace's pod is still refused by nobody");
    // Changed while none runs: keep-b deleted, keep-c added; the next runtime adopts the links and rewrites the rules.
    writePolicies([denyPort("keep-a", KEPT), denyPort("keep-c", ADDED)]);
    const second = startRuntime(...keep);
    await enforced(["keep-a", "keep-c"], second);
    await new Promise((r) => setTimeout(r, 300));
    const probed = await prober.stop();
    assert.ok(probed.eperm > 0, JSON.stringify(probed));
    assert.deepEqual(probed.other, {}, `every connect from before the SIGTERM until the next runtime was ready was refused with EPERM: ${JSON.stringify(probed)}`);
    assert.equal(await connectIn(NS_A, DELETED), "ConnectionRefusedError 111", "the deleted policy no longer refuses");
    assert.equal(await connectIn(NS_A, ADDED), "PermissionError 1", "the added policy refuses");
    assert.deepEqual(fs.readdirSync(path.join(BPFFS_ROOT, pins.connect, "links")).sort(), ["membrane_connect4", "membrane_connect6"], "the same two links, adopted");
    // Uninstall, the runtime pod ending first: it keeps its programs, and the agent's uninstall (external: it does not
    // stop that pod) removes them.
    assert.equal(await term(second.child), 0, second.stderr());
    assert.equal(await connectIn(NS_A, KEPT), "PermissionError 1", "kept at its SIGTERM");
    await agentRuntime(true).shutdown();
    assert.deepEqual(pinned(FO_SCOPE), [], "the uninstall leaves nothing pinned");
    assert.equal(await connectIn(NS_A, KEPT), "ConnectionRefusedError 111", "nothing refuses once removed");
    // Without the flag, SIGTERM removes its programs and pins.
    writePolicies([denyPort("keep-a", KEPT)]);
    const third = startRuntime();
    await enforced(["keep-a"], third);
    assert.equal(await connectIn(NS_A, KEPT), "PermissionError 1");
    assert.equal(await term(third.child), 0, third.stderr());
    assert.deepEqual(pinned(FO_SCOPE), [], "SIGTERM without the flag leaves nothing pinned");
    assert.equal(await connectIn(NS_A, KEPT), "ConnectionRefusedError 111", "nothing refuses after it");
    // Uninstall, the agent first while the runtime (flag on) still runs: its policy file goes, so the runtime removes
    // its programs, and its SIGTERM after that keeps nothing.
    writePolicies([denyPort("keep-a", KEPT)]);
    const fourth = startRuntime(...keep);
    await enforced(["keep-a"], fourth);
    await agentRuntime(true, 200).shutdown();
    await until("the runtime's pins gone once its policy file is", () => (fs.existsSync(path.join(BPFFS_ROOT, pins.connect)) ? undefined : true));
    assert.equal(await term(fourth.child), 0, fourth.stderr());
    assert.deepEqual(pinned(FO_SCOPE), [], "nothing kept at a SIGTERM after the uninstall removed its policy file");
    assert.equal(await connectIn(NS_A, KEPT), "ConnectionRefusedError 111");
  });

  it("two runtimes overlap (the chart's surge rollout): each --ready-file appears once its policies are in force; the newer adopts the pinned connect and tracepoint programs and records itself their owner, so the older one's SIGTERM without --keep-sensors-on-exit leaves them refusing and killing (no connect let through); the newer one's SIGTERM removes them, and an older one whose newer owner died removes them too", async () => {
    const PORT = 7107;
    const secret = path.join(dir, "overlap-secret");
    fs.writeFileSync(secret, "s3cret\n");
    const pidFile = path.join(dir, "runtime.pid");
    const term = async (child: ChildProcess): Promise<number | null> => {
      const closed = new Promise<number | null>((r) => child.once("close", r));
      child.kill("SIGTERM");
      return closed;
    };
    const ready = async (file: string, r: { stderr: () => string }): Promise<void> => {
      await until(`${path.basename(file)}`, () => (fs.existsSync(file) ? true : undefined), 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; status: ${JSON.stringify(status())}; stderr: ${r.stderr()}`);
      });
    };
    const links = (): string[] => [pins.connect, pins.tracepoint].flatMap((scope) => fs.readdirSync(path.join(BPFFS_ROOT, scope, "links"))).sort();
    writePolicies([denyPort("overlap-port", PORT), killOpen("overlap-kill", secret)]);
    const [readyOld, readyNew] = [path.join(dir, "ready-old"), path.join(dir, "ready-new")];
    const older = startRuntime("--pid-file", pidFile, "--ready-file", readyOld);
    await ready(readyOld, older);
    assert.ok(status()?.["default/overlap-port"]?.enforced && status()?.["default/overlap-kill"]?.enforced, JSON.stringify(status()));
    assert.equal(await connectIn(NS_A, PORT), "PermissionError 1");
    const adopted = links();
    const prober = startProber(NS_A, PORT);
    await until("the prober running", () => (fs.existsSync(`${prober.marker}.started`) ? true : undefined));
    // The new pod's runtime beside the old one (no agent removes the old one's files first, and it writes its own pid).
    // Its start leaves the older one's status in place: the node's policies never read as pending meanwhile.
    const newer = spawnRuntime(["--pid-file", pidFile, "--ready-file", readyNew], false);
    const notEnforced: string[] = [];
    for (let t = Date.now(); !fs.existsSync(readyNew) && Date.now() - t < 60_000; await new Promise((r) => setTimeout(r, 10))) {
      const st = status();
      if (!st?.["default/overlap-port"]?.enforced || !st["default/overlap-kill"]?.enforced) notEnforced.push(JSON.stringify(st ?? null));
    }
    assert.deepEqual(notEnforced.slice(0, 3), [], "while the newer runtime started, the status file kept both policies enforced");
    await ready(readyNew, newer);
    assert.equal(fs.readFileSync(pidFile, "utf8").trim(), String(newer.child.pid), "the pid file names the newer runtime");
    // The status file is the newer runtime's (the agent reads the address of the event stream in it): the older one,
    // applying a pods-file change while the newer one is stopped, does not write it.
    const statusAddress = (): string | undefined => (JSON.parse(fs.readFileSync(path.join(dir, "runtime-status.json"), "utf8")) as { address?: string }).address;
    const newerAddress = await until("the newer runtime's status", () => statusAddress());
    const podsFile = path.join(dir, "runtime-pods.json");
    newer.child.kill("SIGSTOP");
    try {
      const pods = fs.readFileSync(podsFile, "utf8");
      fs.writeFileSync(`${podsFile}.tmp`, `${pods.trimEnd()}\n\n`);
      fs.renameSync(`${podsFile}.tmp`, podsFile);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(statusAddress(), newerAddress, "the older runtime left the newer one's status file");
    } finally {
      newer.child.kill("SIGCONT");
    }
    assert.equal(await term(older.child), 0, older.stderr());
    assert.equal(fs.existsSync(readyOld), false, "the older runtime's ready file goes with it");
    assert.deepEqual(links(), adopted, "the links the newer runtime adopted stay pinned");
    assert.equal(await connectIn(NS_A, PORT), "PermissionError 1", "refused after the older runtime's SIGTERM");
    assert.equal((await catIn(NS_A, secret)).signal, "SIGKILL", "killed after the older runtime's SIGTERM");
    const probed = await prober.stop();
    assert.ok(probed.eperm > 0, JSON.stringify(probed));
    assert.deepEqual(probed.other, {}, `every connect while both ran and after the older one's SIGTERM refused with EPERM: ${JSON.stringify(probed)}`);
    assert.equal(fs.readFileSync(pidFile, "utf8").trim(), String(newer.child.pid), "the older runtime left the newer one's pid file");
    assert.equal(await term(newer.child), 0, newer.stderr());
    assert.deepEqual(pinned(FO_SCOPE), [], "the owner's SIGTERM leaves nothing pinned");
    assert.equal(await connectIn(NS_A, PORT), "ConnectionRefusedError 111", "nothing refuses after it");
    // The newer owner SIGKILLed (its pod gone, no runtime after it): the older one, SIGTERMed, removes what nobody else would.
    const third = startRuntime("--pid-file", pidFile, "--ready-file", readyOld);
    await ready(readyOld, third);
    const fourth = spawnRuntime(["--pid-file", pidFile, "--ready-file", readyNew]);
    await ready(readyNew, fourth);
    await kill(fourth.child);
    assert.equal(await term(third.child), 0, third.stderr());
    assert.deepEqual(pinned(FO_SCOPE), [], "an older runtime whose newer owner is dead removes the pins at its SIGTERM");
    assert.equal(await connectIn(NS_A, PORT), "ConnectionRefusedError 111");
  });

  it("started as its own pod's process beside the status the last runtime left, it removes that status before its pid can be found: an agent never reads the last runtime's policies as enforced by this one (2026-12-05: Enforced 2/2 ~2 s before the new runtime had applied them)", async () => {
    const ownPid = path.join(dir, "own.pid");
    fs.rmSync(ownPid, { force: true });
    writePolicies([denyPort("fresh", 7106)]);
    // What the last runtime left: a policy it enforced that this one's file does not have.
    fs.writeFileSync(path.join(dir, "runtime-status.json"), JSON.stringify({ node: "node-fo", policies: { "default/stale": { enforced: true, hooks: 1 } } }));
    const r = spawnRuntime(["--pid-file", ownPid]);
    await until("the new runtime's pid written", () => (fs.existsSync(ownPid) ? true : undefined), 30_000);
    assert.equal(status()?.["default/stale"], undefined, "the last runtime's status is gone once this one's pid can be found");
    await until("fresh enforced", () => (status()?.["default/fresh"]?.enforced ? true : undefined), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; status: ${JSON.stringify(status())}; stderr: ${r.stderr()}`);
    });
    assert.equal(await connectIn(NS_A, 7106), "PermissionError 1");
    const closed = new Promise<number | null>((done) => r.child.once("close", done));
    r.child.kill("SIGTERM");
    assert.equal(await closed, 0, r.stderr());
    assert.deepEqual(pinned(FO_SCOPE), [], "SIGTERM without --keep-sensors-on-exit leaves nothing pinned");
  });
});
