// TracingPolicy enforcement with the real kernel: real processes in network namespaces standing for pods open
// files and exec binaries that policies name; fanotify permission events deny (Override), kill (Sigkill) or only
// report (Post), and the events name the pod, the binary and the file. Run under flock /tmp/membrane-kernel.lock
// (it creates network namespaces).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import koffi from "koffi";
import { pino } from "pino";
import { parse as parseYaml } from "yaml";
import type { ProcessKprobeEvent, ProcessLsmEvent, RuntimeEvent } from "../../core/process-event.ts";
import { NetnsFixture } from "../bpf/netns.ts";
import { RuntimeEnforcement, type HookEnforcer } from "./enforcement.ts";
import { ProcessEvents } from "./events.ts";

const SELECTED_NS = `rt-enf-a-${process.pid}`;
const OTHER_NS = `rt-enf-b-${process.pid}`;
const EXAMPLE = new URL("../../crds/examples/tetragon-docs/monitor-sensitive-files.yaml", import.meta.url);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

/** Runs a command in a namespace without blocking the event loop (it answers the permission events). */
function runIn(netns: string, cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", netns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("close", (code, signal) => resolve({ code, signal, out, err }));
  });
}

const setrlimit = koffi.load("libc.so.6").func("int setrlimit(int resource, const uint8_t *rlim)") as (resource: number, rlim: Buffer) => number;
/** This process's RLIMIT_NOFILE, set in place: no process (it would need fds) and nothing opened. */
function setOpenFilesLimit(soft: bigint, hard: bigint): void {
  const rlim = Buffer.alloc(16);
  rlim.writeBigUInt64LE(soft, 0);
  rlim.writeBigUInt64LE(hard, 8);
  assert.equal(setrlimit(7 /* RLIMIT_NOFILE */, rlim), 0, "setrlimit(RLIMIT_NOFILE)");
}

function fanotifyFds(): number {
  let n = 0;
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === "anon_inode:[fanotify]") n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

function tracingPolicy(name: string, spec: Record<string, unknown>, namespace?: string): Record<string, unknown> {
  return {
    apiVersion: "cilium.io/v1alpha1",
    kind: namespace !== undefined ? "TracingPolicyNamespaced" : "TracingPolicy",
    metadata: { name, ...(namespace !== undefined ? { namespace } : {}) },
    spec,
  };
}

function fileHook(call: string, operator: string, values: string[], action: Record<string, unknown>): Record<string, unknown> {
  return {
    kprobes: [{ call, syscall: false, args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator, values }], matchActions: [action] }] }],
  };
}

describe("TracingPolicy enforcement (fanotify permission events, real processes in pods' network namespaces)", () => {
  const fixture = new NetnsFixture();
  const events: RuntimeEvent[] = [];
  let dir = "";
  let shadow = "";
  let other = "";
  let engine: RuntimeEnforcement;
  let pods = new Map<number, { namespace: string; name: string }>();

  const kprobes = (): ProcessKprobeEvent["process_kprobe"][] => events.flatMap((e) => ("process_kprobe" in e ? [e.process_kprobe] : []));
  const lsms = (): ProcessLsmEvent["process_lsm"][] => events.flatMap((e) => ("process_lsm" in e ? [e.process_lsm] : []));

  before(() => {
    fixture.addNetns(SELECTED_NS);
    fixture.addNetns(OTHER_NS);
    pods = new Map([
      [fs.statSync(`/var/run/netns/${SELECTED_NS}`).ino, { namespace: "default", name: "client" }],
      [fs.statSync(`/var/run/netns/${OTHER_NS}`).ino, { namespace: "other", name: "client" }],
    ]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-enforce-"));
    fs.mkdirSync(path.join(dir, "etc"));
    shadow = path.join(dir, "etc", "shadow");
    other = path.join(dir, "etc", "hostname");
    fs.writeFileSync(shadow, "root:*:1::::::\n");
    fs.writeFileSync(other, "node\n");
    fs.copyFileSync("/bin/true", path.join(dir, "forbidden"));
    fs.chmodSync(path.join(dir, "forbidden"), 0o755);
    engine = new RuntimeEnforcement({
      nodeName: "node-a",
      events: new ProcessEvents({ nodeName: "node-a", resolvePod: (ino) => pods.get(ino) }),
      emit: (e) => events.push(e),
      log: pino({ level: "silent" }),
      resolvePod: (ino) => pods.get(ino),
    });
  });

  after(() => {
    engine?.stop();
    fixture.cleanup();
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true });
  });

  it("the reference example monitor-sensitive-files kills a process of a pod in default that opens the file, names pod, binary and file, and leaves a pod elsewhere alone", async () => {
    const example = parseYaml(fs.readFileSync(EXAMPLE, "utf8")) as { spec: { kprobes: { selectors: { matchArgs: { values: string[] }[] }[] }[] } };
    // The example names /etc/shadow and /etc/passwd; the test's shadow file stands in for them.
    example.spec.kprobes[0]!.selectors[0]!.matchArgs[0]!.values = [shadow];
    const status = engine.apply([example]);
    assert.deepEqual(status.get("default/monitor-sensitive-files"), { enforced: true, hooks: 1 });

    const killed = await runIn(SELECTED_NS, "/bin/cat", [shadow]);
    assert.equal(killed.signal, "SIGKILL", JSON.stringify(killed));
    assert.equal(killed.out, "", "nothing was read");
    const e = kprobes().find((k) => k.policy_name === "monitor-sensitive-files");
    assert.ok(e, "a process_kprobe event");
    assert.equal(e.function_name, "fd_install");
    assert.equal(e.action, "KPROBE_ACTION_SIGKILL");
    assert.match(e.process.binary, /\/cat$/);
    assert.deepEqual(e.process.pod, { namespace: "default", name: "client" });
    assert.deepEqual(e.args, [{ file_arg: { path: shadow } }]);
    assert.ok(e.parent, "the event names the parent");

    const elsewhere = await runIn(OTHER_NS, "/bin/cat", [shadow]);
    assert.deepEqual([elsewhere.code, elsewhere.signal, elsewhere.out], [0, null, "root:*:1::::::\n"]);
    const unrelated = await runIn(SELECTED_NS, "/bin/cat", [other]);
    assert.deepEqual([unrelated.code, unrelated.out], [0, "node\n"], "another file of the same directory opens");
    assert.equal(kprobes().length, 1, "one event: the pod elsewhere and the other file are not reported");
  });

  it("Override denies the open (EPERM) and reports it; Post only reports, and the open succeeds", async () => {
    events.length = 0;
    engine.apply([
      tracingPolicy("deny-shadow", { lsmhooks: [{ hook: "file_open", args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [shadow] }], matchActions: [{ action: "Override", argError: -1 }] }] }] }),
      // Prefix scopes the marks to the test's directory, Postfix picks the file.
      tracingPolicy("watch-hostname", {
        kprobes: [{ call: "security_file_open", syscall: false, args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "Prefix", values: [`${dir}/`] }, { index: 0, operator: "Postfix", values: ["/hostname"] }], matchActions: [{ action: "Post" }] }] }],
      }),
    ]);
    const denied = await runIn(SELECTED_NS, "/bin/cat", [shadow]);
    assert.equal(denied.code, 1);
    assert.match(denied.err, /Operation not permitted/);
    const lsm = lsms().find((l) => l.policy_name === "deny-shadow");
    assert.ok(lsm, "a process_lsm event");
    assert.deepEqual([lsm.function_name, lsm.action], ["file_open", "KPROBE_ACTION_OVERRIDE"]);

    const posted = await runIn(OTHER_NS, "/bin/cat", [other]);
    assert.deepEqual([posted.code, posted.out], [0, "node\n"]);
    const k = kprobes().find((x) => x.policy_name === "watch-hostname");
    assert.ok(k, "the Post policy reported the open");
    assert.deepEqual([k.action, k.args], ["KPROBE_ACTION_POST", [{ file_arg: { path: other } }]]);
    assert.deepEqual(k.process.pod, { namespace: "other", name: "client" });
  });

  it("exec hooks: Override makes the exec fail (EPERM), Sigkill kills the process that execs, matchBinaries and matchNamespaces narrow who", async () => {
    events.length = 0;
    const forbidden = path.join(dir, "forbidden");
    const selectedNet = [...pods].find(([, p]) => p.namespace === "default")![0];
    engine.apply([
      tracingPolicy("no-forbidden-exec", {
        kprobes: [{
          call: "sys_execve", syscall: true, args: [{ index: 0, type: "string" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [forbidden] }], matchNamespaces: [{ namespace: "Net", operator: "In", values: [String(selectedNet)] }], matchActions: [{ action: "Override", argError: -1 }] }],
        }],
      }),
    ]);
    const denied = await runIn(SELECTED_NS, "/bin/sh", ["-c", `exec ${forbidden}`]);
    assert.equal(denied.code, 126, JSON.stringify(denied));
    assert.match(denied.err, /Operation not permitted/);
    const allowed = await runIn(OTHER_NS, "/bin/sh", ["-c", `exec ${forbidden}`]);
    assert.equal(allowed.code, 0, "the same binary runs in a pod the namespace filter does not select");

    // A policy naming a symlink judges the file it points to (fanotify names the file opened).
    const link = path.join(dir, "etc", "forbidden-link");
    fs.symlinkSync(forbidden, link);
    engine.apply([
      tracingPolicy("no-link-exec", {
        kprobes: [{ call: "sys_execve", syscall: true, args: [{ index: 0, type: "string" }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [link] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
      }),
    ]);
    const viaLink = await runIn(OTHER_NS, "/bin/sh", ["-c", `exec ${link}`]);
    assert.equal(viaLink.code, 126, JSON.stringify(viaLink));
    fs.rmSync(link);

    engine.apply([
      tracingPolicy("kill-forbidden-from-sh", {
        kprobes: [{
          call: "security_bprm_check", syscall: false, args: [{ index: 0, type: "linux_binprm" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "Prefix", values: [forbidden] }], matchBinaries: [{ operator: "In", values: ["/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/dash"] }], matchActions: [{ action: "Sigkill" }] }],
        }],
      }),
    ]);
    const killed = await runIn(SELECTED_NS, "/bin/sh", ["-c", `exec ${forbidden}`]);
    assert.equal(killed.signal, "SIGKILL", JSON.stringify(killed));
    const e = kprobes().find((k) => k.policy_name === "kill-forbidden-from-sh");
    assert.ok(e);
    assert.deepEqual([e.function_name, e.action, e.args], ["security_bprm_check", "KPROBE_ACTION_SIGKILL", [{ linux_binprm_arg: { path: forbidden } }]]);
    // Not from a shell (matchBinaries): env execs it and it runs.
    const viaEnv = await runIn(SELECTED_NS, "/usr/bin/env", [forbidden]);
    assert.equal(viaEnv.code, 0, JSON.stringify(viaEnv));
  });

  it("a policy with a hook this kernel cannot serve is not loaded and its status names the hook; the others stay enforced", () => {
    const status = engine.apply([
      tracingPolicy("needs-kprobe", { kprobes: [{ call: "commit_creds", syscall: false, args: [{ index: 0, type: "cred" }] }] }),
      tracingPolicy("mask-arg", { kprobes: [{ call: "security_file_permission", syscall: false, args: [{ index: 0, type: "file" }, { index: 1, type: "int" }], selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: ["4"] }] }] }] }),
      tracingPolicy("watch-shadow", fileHook("fd_install", "Equal", [shadow], { action: "Post" })),
    ]);
    const unavailable = status.get("needs-kprobe");
    assert.ok(unavailable && !unavailable.enforced);
    assert.equal(unavailable.reason, "HookUnavailable");
    assert.match(unavailable.message, /spec\.kprobes\[0\]: kprobe commit_creds: kprobes are not configured in this kernel/);
    const mask = status.get("mask-arg");
    assert.ok(mask && !mask.enforced);
    assert.match(mask.message, /spec\.kprobes\[0\]\.selectors\[0\]\.matchArgs\[0\]\.index: argument 1 is of type int/);
    assert.deepEqual(status.get("watch-shadow"), { enforced: true, hooks: 1 });
  });

  it("10 policies loaded and removed 100 times leave no fanotify group and no other fd behind", () => {
    engine.apply([]);
    const fdsBefore = fs.readdirSync("/proc/self/fd").length;
    assert.equal(fanotifyFds(), 0, "no group while no policy is loaded");
    const ten = Array.from({ length: 10 }, (_, i) => tracingPolicy(`churn-${i}`, fileHook("security_file_open", i % 2 === 0 ? "Equal" : "Prefix", [path.join(dir, "etc", `f${i}`)], i % 3 === 0 ? { action: "Override", argError: -1 } : { action: "Post" })));
    ten[0]!.spec = { kprobes: [{ call: "sys_execve", syscall: true, args: [{ index: 0, type: "string" }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [path.join(dir, "forbidden")] }], matchActions: [{ action: "Sigkill" }] }] }] };
    for (let round = 0; round < 100; round++) {
      const status = engine.apply(ten);
      if (round === 0) assert.ok([...status.values()].every((s) => s.enforced), JSON.stringify([...status]));
      assert.equal(fanotifyFds(), 1, "one group for all the policies");
      engine.apply([]);
    }
    assert.equal(fanotifyFds(), 0);
    assert.equal(fs.readdirSync("/proc/self/fd").length, fdsBefore);
  });

  it("an open whose judging fails is denied (fail closed) and the log says why, naming the pid; the same failure again within a minute is counted, not logged again", async () => {
    engine.apply([]);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const broken = new RuntimeEnforcement({
      nodeName: "node-a",
      events: new ProcessEvents({ nodeName: "node-a" }),
      emit: () => {},
      log,
      resolvePod: () => {
        throw new Error("the pods file cannot be read");
      },
    });
    try {
      // A Post policy: judged, the open would succeed; the judging itself fails.
      const status = broken.apply([tracingPolicy("post-hostname", fileHook("security_file_open", "Equal", [other], { action: "Post" }))]);
      assert.deepEqual(status.get("post-hostname"), { enforced: true, hooks: 1 });
      const denied = await runIn(OTHER_NS, "/bin/cat", [other]);
      assert.equal(denied.code, 1, JSON.stringify(denied));
      assert.match(denied.err, /Operation not permitted/);
      const said = lines.filter((l) => l.msg === "permission event denied without a verdict: judging it failed");
      assert.equal(said.length, 1, JSON.stringify(lines));
      assert.equal(said[0]!.err, "the pods file cannot be read");
      assert.equal(typeof said[0]!.pid, "number");
      assert.equal((await runIn(OTHER_NS, "/bin/cat", [other])).code, 1, "denied again");
      assert.equal(lines.filter((l) => l.msg === said[0]!.msg).length, 1, "not logged twice within a minute");
    } finally {
      broken.stop();
    }
  });
  it("a read of the group that fails (EMFILE: no fd for the event) denies that open and the next open is judged as before: the group keeps reading", async () => {
    engine.apply([]);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const runtime = new RuntimeEnforcement({ nodeName: "node-a", events: new ProcessEvents({ nodeName: "node-a" }), emit: () => {}, log, resolvePod: (ino) => pods.get(ino) });
    // One shell opens the file twice, each when told on stdin: no process (and no fd of ours) starts in between.
    const child = spawn("ip", ["netns", "exec", OTHER_NS, "sh", "-c", `read a; timeout 10 cat ${other}; echo "rc=$?"; read b; timeout 10 cat ${other}; echo "rc=$?"`], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const rounds = async (n: number): Promise<void> => {
      for (let i = 0; i < 200 && (out.match(/rc=\d+/g) ?? []).length < n; i++) await new Promise((r) => setTimeout(r, 50));
    };
    const limits = fs.readFileSync("/proc/self/limits", "utf8").match(/Max open files\s+(\d+)\s+(\d+)/);
    assert.ok(limits, "the open files limit");
    try {
      // A Post policy: judged, the open succeeds.
      assert.deepEqual(runtime.apply([tracingPolicy("post-hostname", fileHook("security_file_open", "Equal", [other], { action: "Post" }))]).get("post-hostname"), { enforced: true, hooks: 1 });
      // No new fd at all (the open ones stay): none can be made for the event, so the kernel denies the open it cannot
      // hand over and the read fails.
      setOpenFilesLimit(0n, BigInt(limits[2]!));
      try {
        child.stdin.write("go\n");
        await rounds(1);
      } finally {
        setOpenFilesLimit(BigInt(limits[1]!), BigInt(limits[2]!));
      }
      assert.match(out, /Operation not permitted[\s\S]*rc=1/, out);
      child.stdin.write("go\n");
      await rounds(2);
      assert.match(out, /rc=1\n[\s\S]*node\nrc=0/, `the next open is judged (Post: it succeeds), not left waiting: ${out}`);
      const said = lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("reading the fanotify group failed"));
      assert.equal(said.length, 1, JSON.stringify(lines));
      assert.match(String(said[0]!.err), /read\(fanotify\): errno 24/);
    } finally {
      child.kill("SIGKILL");
      runtime.stop();
    }
  });
});

describe("a policy beyond the node's kernel rules", () => {
  it("is refused by name before anything is written: the kernel never holds one policy without the others, not even for a moment", () => {
    const connectPolicy = (name: string, port: string): Record<string, unknown> => tracingPolicy(name, {
      kprobes: [{ call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }], selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: [port] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
    }, "default");
    // What the connect programs are given, set by set; "big" does not fit (beyond the node's rules), the others do.
    const written: string[][] = [];
    const tooMany = (plans: ReadonlyMap<string, unknown>): string | undefined => (plans.has("default/big") ? "connect hooks expand to 5000 rules; this node holds 4096" : undefined);
    const connect: HookEnforcer = {
      set: (plans) => {
        const why = tooMany(plans);
        if (why !== undefined) throw new Error(why);
        written.push([...plans.keys()].sort());
      },
      check: tooMany,
      close: () => {},
    };
    const engine = new RuntimeEnforcement({ nodeName: "node-a", events: new ProcessEvents({ nodeName: "node-a" }), emit: () => {}, log: pino({ level: "silent" }), connect });
    try {
      const status = engine.apply([connectPolicy("a", "4450"), connectPolicy("big", "4451"), connectPolicy("b", "4452")]);
      assert.deepEqual(status.get("default/big"), { enforced: false, reason: "LoadFailed", message: "connect hooks expand to 5000 rules; this node holds 4096" });
      assert.deepEqual([status.get("default/a"), status.get("default/b")], [{ enforced: true, hooks: 1 }, { enforced: true, hooks: 1 }]);
      assert.deepEqual(written, [["default/a", "default/b"]], "one write, with both policies that fit");
    } finally {
      engine.stop();
    }
  });
});
