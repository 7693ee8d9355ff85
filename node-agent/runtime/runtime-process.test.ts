// `membrane runtime` as the process a node runs: it reads the pods file and the TracingPolicy file, writes each
// policy's status, kills a pod's process that opens the watched file (the reference example), exports the event
// with the pod next to exec/exit events, follows a change of the policy file, and removes everything at SIGTERM.
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

const NS = `rt-proc-${process.pid}`;
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

  let pinsBefore: boolean[] = [];
  before(() => {
    pinsBefore = ["runtime", "runtime-connect"].map((d) => fs.existsSync(path.join(BPFFS_ROOT, d)));
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
    runtime = spawn(MEMBRANE, ["runtime", "--export-file", files.events, "--policy-file", files.policies, "--status-file", files.status, "--pods-file", files.pods, "--node-name", "node-rt", "--metrics-address", "127.0.0.1:0"], {
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
    assert.deepEqual(pinsBefore, [false, false], "another runtime's pins were there before the test: it cannot tell");
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, "runtime")), false);
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, "runtime-connect")), false);
  });
});
