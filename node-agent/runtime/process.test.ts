// Process visibility with the real kernel: real processes in a network namespace standing for a pod produce
// Tetragon-shaped process_exec/process_exit events with binary, arguments, cwd, uid, parent, ancestors, the pod
// (by netns inode), exit status and signal. Loads eBPF: run under flock /tmp/membrane-kernel.lock.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import { after, before, describe, it } from "node:test";
import { NetnsFixture } from "../bpf/netns.ts";
import { type ProcessEvent, type ProcessExecEvent, type ProcessExitEvent, matchesProcessFilter } from "../../core/process-event.ts";
import { ProcessEvents } from "./events.ts";
import { PROCESS_LAYOUT } from "./layout.ts";
import { ProcessSensor } from "./sensor.ts";
import os from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { ProcessVisibility } from "./visibility.ts";

const NETNS = `rt-test-${process.pid}`;
const SCOPE = `test-runtime-${process.pid}`;
const POD = { namespace: "default", name: "rt-pod" };

describe("process visibility (tp_btf sched_process_exec/exit → Tetragon events)", () => {
  const fixture = new NetnsFixture();
  const events: ProcessEvent[] = [];
  let sensor: ProcessSensor;
  let podInode = 0;

  const execs = (): ProcessExecEvent[] => events.filter((e): e is ProcessExecEvent => "process_exec" in e);
  const exits = (): ProcessExitEvent[] => events.filter((e): e is ProcessExitEvent => "process_exit" in e);
  async function until<T>(what: string, find: () => T | undefined, ms = 5000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      sensor.drain();
      const v = find();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms; saw ${events.length} events`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  before(() => {
    fixture.addNetns(NETNS);
    podInode = fs.statSync(`/var/run/netns/${NETNS}`).ino;
    const tetragon = new ProcessEvents({ nodeName: "node-a", resolvePod: (inode) => (inode === podInode ? POD : undefined) });
    sensor = new ProcessSensor({ scope: SCOPE }, (raw) => {
      const e = tetragon.handle(raw);
      if (e) events.push(e);
    });
    sensor.start();
  });

  after(() => {
    sensor?.stop();
    fixture.cleanup();
  });

  it("reports an exec in the pod's namespace with binary, arguments, cwd, uid, pod, its shell as parent and the ancestors", async () => {
    // The agent reads cwd from /proc when it takes the record: the shell waits on a sleep long enough for that.
    const child = spawn("ip", ["netns", "exec", NETNS, "/bin/sh", "-c", "cd /tmp && /bin/sleep 0.5 && echo done; exit 3"], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    const sleep = await until("exec of /bin/sleep 0.5", () => execs().find((e) => e.process_exec.process.binary === "/bin/sleep" && e.process_exec.process.arguments === "0.5"));
    assert.deepEqual([await closed, out], [3, "done\n"]);
    const p = sleep.process_exec.process;
    assert.equal(p.cwd, "/tmp");
    assert.equal(p.uid, process.getuid?.());
    assert.deepEqual(p.pod, POD);
    assert.equal(p.flags, "execve");
    assert.match(p.start_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    assert.ok(Math.abs(Date.parse(p.start_time) - Date.now()) < 10_000, p.start_time);
    const parent = sleep.process_exec.parent;
    assert.ok(parent, "the exec names its parent");
    assert.equal(parent.binary, "/bin/sh");
    assert.equal(parent.arguments, "-c cd /tmp && /bin/sleep 0.5 && echo done; exit 3");
    assert.deepEqual(parent.pod, POD);
    assert.equal(p.parent_exec_id, parent.exec_id);
    // `ip netns exec` execs the shell in its own process: the shell's parent is this test's process.
    const ancestors = sleep.process_exec.ancestors ?? [];
    assert.equal(ancestors[0]?.pid, process.pid, JSON.stringify(ancestors.map((a) => [a.pid, a.binary])));
    assert.equal(ancestors[0]?.pod, undefined, "the test process is on the host, in no pod");
    // The shell exits with status 3, the sleep with 0, neither by a signal.
    const shExit = await until("exit of the shell", () => exits().find((e) => e.process_exit.process.pid === parent.pid));
    assert.equal(shExit.process_exit.status, 3);
    assert.equal(shExit.process_exit.signal, undefined);
    assert.equal(shExit.process_exit.process.exec_id, parent.exec_id);
    const sleepExit = await until("exit of the sleep", () => exits().find((e) => e.process_exit.process.pid === p.pid));
    assert.equal(sleepExit.process_exit.status, 0);
    assert.equal(sleepExit.process_exit.parent?.exec_id, parent.exec_id);
  });

  it("names the cwd of a process gone before its record is read, as the kernel saw it at exec (across mounts)", async () => {
    const deep = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cwd-"));
    try {
      fs.mkdirSync(path.join(deep, "a b", "c"), { recursive: true });
      const where = fs.realpathSync(path.join(deep, "a b", "c"));
      // Synchronous: the sensor's reader cannot take the records before both processes have exited.
      execFileSync("ip", ["netns", "exec", NETNS, "/bin/sh", "-c", `cd '${where}' && /bin/true gone-here; cd /proc/sys/kernel && /bin/true gone-proc`]);
      const here = await until("exec of /bin/true gone-here", () => execs().find((e) => e.process_exec.process.arguments === "gone-here"));
      assert.equal(here.process_exec.process.cwd, where);
      const proc = await until("exec of /bin/true gone-proc", () => execs().find((e) => e.process_exec.process.arguments === "gone-proc"));
      assert.equal(proc.process_exec.process.cwd, "/proc/sys/kernel", "procfs is a mount of its own: the walk crosses to its mount point");
      assert.deepEqual(proc.process_exec.process.pod, POD);
    } finally {
      fs.rmSync(deep, { recursive: true, force: true });
    }
  });

  it("reports a process killed by SIGKILL with the signal", async () => {
    const child = spawn("ip", ["netns", "exec", NETNS, "/bin/sleep", "30"], { stdio: "ignore" });
    const pid = child.pid ?? -1;
    await until("exec of sleep 30", () => execs().find((e) => e.process_exec.process.pid === pid && e.process_exec.process.binary === "/bin/sleep"));
    child.kill("SIGKILL");
    const exit = await until("exit of sleep 30", () => exits().find((e) => e.process_exit.process.pid === pid));
    assert.equal(exit.process_exit.signal, "SIGKILL");
    assert.deepEqual(exit.process_exit.process.pod, POD);
  });

  it("attributes host processes to no pod, and the filters of observe --type process select by pod, namespace and binary", async () => {
    execFileSync("/bin/true", ["host-side"]);
    const host = await until("exec of /bin/true host-side", () => execs().find((e) => e.process_exec.process.arguments === "host-side"));
    assert.equal(host.process_exec.process.pod, undefined);
    const sleep = execs().find((e) => e.process_exec.process.binary === "/bin/sleep");
    assert.ok(sleep);
    assert.ok(matchesProcessFilter(sleep, { namespace: "default", pod: "rt-pod", binary: "sleep" }));
    assert.ok(matchesProcessFilter(sleep, { binary: "/bin/sleep" }));
    assert.ok(!matchesProcessFilter(sleep, { pod: "other" }));
    assert.ok(!matchesProcessFilter(host, { namespace: "default" }));
    assert.ok(!matchesProcessFilter(sleep, { binary: "leep" }));
  });

  it("loses no event and decodes every record", () => {
    assert.equal(sensor.lost(), 0n);
    assert.equal(sensor.undecodable, 0);
  });

  it("the record layout matches bpf/lib/process.h", () => {
    const h = fs.readFileSync(new URL("../../bpf/lib/process.h", import.meta.url), "utf8");
    assert.match(h, /#define PROCESS_FILENAME_MAX 256\n/);
    assert.match(h, /#define PROCESS_ARGS_MAX 1024\n/);
    assert.match(h, /#define PROCESS_CWD_MAX 1024 /);
    assert.match(h, /#define PROCESS_CWD_NAME_MAX 256 /);
    assert.equal(PROCESS_LAYOUT.exec.size, PROCESS_LAYOUT.header.size + 256 + 1024 + 4 + 4 + 1024 + 256);
    assert.equal(PROCESS_LAYOUT.exec.cwd, PROCESS_LAYOUT.header.size + 256 + 1024 + 8);
  });
});

describe("process visibility as a service: export file and metrics", () => {
  it("appends Tetragon JSON lines to the export file, counts them, and removes its pins when stopped", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-runtime-"));
    const file = path.join(dir, "events.log");
    const registry = new Registry();
    const scope = `test-runtime-svc-${process.pid}`;
    const v = new ProcessVisibility({ nodeName: "node-b", exportFile: file, registry, scope });
    v.start();
    try {
      execFileSync("/bin/true", ["visibility-export"]);
      const end = Date.now() + 5000;
      let lines: ProcessEvent[] = [];
      while (Date.now() < end) {
        v.drain();
        lines = fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as ProcessEvent);
        if (lines.some((e) => "process_exit" in e && e.process_exit.process.arguments === "visibility-export")) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const exec = lines.find((e): e is ProcessExecEvent => "process_exec" in e && e.process_exec.process.arguments === "visibility-export");
      assert.ok(exec, "the exec is in the export file");
      assert.equal(exec.node_name, "node-b");
      assert.equal(exec.process_exec.process.binary, "/bin/true");
      const metrics = await registry.metrics();
      const count = (type: string): number => Number(new RegExp(`membrane_process_events_total\\{type="${type}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
      assert.ok(count("process_exec") >= 1 && count("process_exit") >= 1, metrics);
      assert.match(metrics, /membrane_process_events_lost 0\n/);
    } finally {
      v.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, scope)), false, "pins removed");
  });
});
