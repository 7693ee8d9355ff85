// TracingPolicy tracepoints with the real kernel: bpf/tracepoint.c on syscalls/sys_enter_openat kills (bpf_send_signal)
// a real `cat` of a pod (a network namespace) opening the file a matchArgs names, leaves the same `cat` in another
// namespace's pod alone, posts Tetragon's process_tracepoint naming pod and binary; an unknown tracepoint is
// HookUnavailable; loading and removing leaves no program, link, perf event or map. Run under flock
// /tmp/membrane-kernel.lock (network namespaces, programs on tracepoints).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import type { ProcessTracepointEvent, RuntimeEvent } from "../../core/process-event.ts";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { NetnsFixture } from "../bpf/netns.ts";
import { RuntimeEnforcement } from "./enforcement.ts";
import type { PodRef } from "./events.ts";
import { TracepointEnforcer } from "./tracepoint-enforcer.ts";
import { TP_ARGS_MAX, TP_BINARIES_MAX, TP_FILTERS_MAX, TP_HOOKS_MAX, TP_LAYOUT, TP_RULES_MAX, TP_SETS, TP_STR_MAX } from "./tracepoint-layout.ts";
import { ProcessVisibility } from "./visibility.ts";

const SELECTED_NS = `rt-tp-a-${process.pid}`;
const OTHER_NS = `rt-tp-b-${process.pid}`;
const SCOPE = `test-runtime-tp-${process.pid}`;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

function runIn(netns: string, cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", netns, cmd, ...args], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", (code, signal) => resolve({ code, signal, out }));
  });
}

/** BPF objects (programs, links, maps) and perf events this process holds. */
function kernelFds(): { bpf: number; perf: number } {
  const n = { bpf: 0, perf: 0 };
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      const l = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (l.startsWith("anon_inode:bpf")) n.bpf++;
      if (l === "anon_inode:[perf_event]") n.perf++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

const openatPolicy = (name: string, selectors: unknown[], namespace = "default", event = "sys_enter_openat") => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name, namespace },
  spec: { tracepoints: [{ subsystem: "syscalls", event, args: [{ index: 5, type: "int" }, { index: 6, type: "string" }], selectors }] },
});

describe("TracingPolicy tracepoints (bpf/tracepoint.c on syscalls/sys_enter_openat, real processes in pods' network namespaces)", () => {
  const fixture = new NetnsFixture();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-tp-"));
  const secret = path.join(dir, "secret");
  const events: RuntimeEvent[] = [];
  let pods = new Map<number, PodRef>();
  let visibility: ProcessVisibility;
  let tracepoints: TracepointEnforcer;
  let engine: RuntimeEnforcement;
  const posted = (): ProcessTracepointEvent["process_tracepoint"][] => events.flatMap((e) => ("process_tracepoint" in e ? [e.process_tracepoint] : []));
  async function until<T>(what: string, find: () => T | undefined): Promise<T> {
    const end = Date.now() + 5000;
    for (;;) {
      visibility.drain();
      tracepoints.drain();
      const v = find();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`no ${what}; events: ${JSON.stringify(posted())}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  before(() => {
    fs.writeFileSync(secret, "the plans\n");
    fixture.addNetns(SELECTED_NS);
    fixture.addNetns(OTHER_NS);
    pods = new Map([
      [fs.statSync(`/var/run/netns/${SELECTED_NS}`).ino, { namespace: "default", name: "reader", labels: { app: "reader" } }],
      [fs.statSync(`/var/run/netns/${OTHER_NS}`).ino, { namespace: "other", name: "reader", labels: { app: "reader" } }],
    ]);
    const log = pino({ level: "silent" });
    const emit = (e: RuntimeEvent): void => void events.push(e);
    // The process sensor feeds the process cache, so a process the program killed is still named in its event.
    visibility = new ProcessVisibility({ nodeName: "node-a", exportFile: path.join(dir, "export.jsonl"), registry: new Registry(), resolvePod: (ino) => pods.get(ino), scope: `${SCOPE}-proc` });
    visibility.start();
    tracepoints = new TracepointEnforcer({ events: visibility.processes, nodeName: "node-a", emit, log, pods: () => pods, scope: SCOPE });
    engine = new RuntimeEnforcement({ nodeName: "node-a", events: visibility.processes, emit, log, resolvePod: (ino) => pods.get(ino), tracepoints });
  });

  after(() => {
    engine?.stop();
    visibility?.stop();
    fixture.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("Sigkill with matchArgs: cat of the named file dies by SIGKILL in the selected pod, reads it in another namespace's pod; the event names pod, binary and arguments", async () => {
    const status = engine.apply([openatPolicy("kill-secret", [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchActions: [{ action: "Sigkill" }] }])]);
    assert.deepEqual(status.get("default/kill-secret"), { enforced: true, hooks: 1 });
    assert.equal(tracepoints.attachedTracepoints, 1);
    const killed = await runIn(SELECTED_NS, "cat", [secret]);
    assert.deepEqual([killed.signal, killed.out], ["SIGKILL", ""], "killed before it read");
    assert.deepEqual(await runIn(SELECTED_NS, "cat", [`${secret}.not`]), { code: 1, signal: null, out: "" }, "another path is not touched");
    assert.deepEqual(await runIn(OTHER_NS, "cat", [secret]), { code: 0, signal: null, out: "the plans\n" }, "another namespace's pod reads it");
    const e = await until("the Sigkill event", () => posted().find((t) => t.policy_name === "kill-secret"));
    assert.deepEqual([e.subsys, e.event, e.action], ["syscalls", "sys_enter_openat", "KPROBE_ACTION_SIGKILL"]);
    assert.deepEqual(e.args, [{ int_arg: -100 }, { string_arg: secret }], "dfd AT_FDCWD and the filename");
    assert.equal(e.process.binary, "/usr/bin/cat");
    assert.deepEqual(e.process.pod, { namespace: "default", name: "reader" });
    assert.equal(posted().filter((t) => t.policy_name === "kill-secret").length, 1, "only the selected pod's open of that file");
  });

  it("Post with Prefix and matchBinaries judged in the kernel: cat's open is reported with its pod; head's never leaves the kernel, and both read", async () => {
    events.length = 0;
    const status = engine.apply([
      openatPolicy("watch-cat", [{ matchArgs: [{ index: 1, operator: "Prefix", values: [dir] }], matchBinaries: [{ operator: "In", values: ["/usr/bin/cat"] }] }], "other"),
    ]);
    assert.deepEqual(status.get("other/watch-cat"), { enforced: true, hooks: 1 });
    tracepoints.drain();
    const before = tracepoints.records;
    assert.equal((await runIn(OTHER_NS, "head", ["-n1", secret])).out, "the plans\n");
    await new Promise((r) => setTimeout(r, 100));
    tracepoints.drain();
    assert.equal(tracepoints.records, before, "head's open of the file sent nothing to user space");
    assert.equal((await runIn(OTHER_NS, "cat", [secret])).out, "the plans\n");
    const e = await until("the Post event", () => posted().find((t) => t.policy_name === "watch-cat"));
    assert.deepEqual([e.action, e.process.binary, e.process.pod, e.args[1]], ["KPROBE_ACTION_POST", "/usr/bin/cat", { namespace: "other", name: "reader" }, { string_arg: secret }]);
    assert.equal(tracepoints.records, before + 1, "cat's open is the one record");
    assert.deepEqual(posted().map((t) => t.process.binary), ["/usr/bin/cat"], "head is not reported");
  });

  it("Sigkill with matchBinaries is sent by the program: python3 dies at its open before it can print, cat reads the file, NotIn spares the named binary", async () => {
    events.length = 0;
    const status = engine.apply([
      openatPolicy("kill-python", [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchBinaries: [{ operator: "In", values: ["/usr/bin/python3"] }], matchActions: [{ action: "Sigkill" }] }]),
    ]);
    assert.deepEqual(status.get("default/kill-python"), { enforced: true, hooks: 1 });
    const script = `open(${JSON.stringify(secret)}).close()\nprint("opened", flush=True)`;
    const py = await runIn(SELECTED_NS, "/usr/bin/python3", ["-c", script]);
    assert.deepEqual([py.signal, py.out], ["SIGKILL", ""], "killed when its open returned, before the next statement");
    assert.equal((await runIn(SELECTED_NS, "cat", [secret])).out, "the plans\n", "another binary is not touched");
    const e = await until("the Sigkill event", () => posted().find((x) => x.policy_name === "kill-python"));
    assert.deepEqual([e.action, e.process.binary], ["KPROBE_ACTION_SIGKILL", "/usr/bin/python3"]);
    engine.apply([
      openatPolicy("kill-not-cat", [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchBinaries: [{ operator: "NotIn", values: ["/usr/bin/cat"] }], matchActions: [{ action: "Sigkill" }] }]),
    ]);
    assert.equal((await runIn(SELECTED_NS, "cat", [secret])).out, "the plans\n", "NotIn: the named binary reads");
    assert.equal((await runIn(SELECTED_NS, "head", ["-n1", secret])).signal, "SIGKILL", "NotIn: another binary dies");
  });

  it("matchBinaries entries in one selector are ANDed (values ORed), and a selector takes filters from selectorsMacros: Prefix /usr/bin/, Postfix head|python3, NotIn python3 kill head only", async () => {
    const kill = openatPolicy("kill-head", [{
      macros: ["secret-sigkill"],
      matchBinaries: [{ operator: "Prefix", values: ["/usr/bin/"] }, { operator: "Postfix", values: ["/head", "/python3"] }, { operator: "NotIn", values: ["/usr/bin/python3"] }],
    }]);
    const macros = { "secret-sigkill": { matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchActions: [{ action: "Sigkill" }] } };
    const status = engine.apply([{ ...kill, spec: { ...kill.spec, selectorsMacros: macros } }]);
    assert.deepEqual(status.get("default/kill-head"), { enforced: true, hooks: 1 });
    assert.equal((await runIn(SELECTED_NS, "/usr/bin/head", ["-n1", secret])).signal, "SIGKILL", "all three entries hold for /usr/bin/head");
    const py = await runIn(SELECTED_NS, "/usr/bin/python3", ["-c", `print(open(${JSON.stringify(secret)}).read(), end="")`]);
    assert.deepEqual([py.signal, py.out], [null, "the plans\n"], "NotIn python3 fails: python3 reads");
    assert.equal((await runIn(SELECTED_NS, "/usr/bin/cat", [secret])).out, "the plans\n", "Postfix fails: cat reads");
    const ownHead = path.join(dir, "head");
    fs.copyFileSync("/usr/bin/head", ownHead);
    fs.chmodSync(ownHead, 0o755);
    assert.deepEqual(await runIn(SELECTED_NS, ownHead, ["-n1", secret]), { code: 0, signal: null, out: "the plans\n" }, "Prefix fails: a head outside /usr/bin reads (the entries are not ORed)");
    assert.equal((await runIn(OTHER_NS, "/usr/bin/head", ["-n1", secret])).out, "the plans\n", "another namespace's pod is not selected");
  });

  it("a process that started before its matchBinaries policy is judged by its binary: python3 already running is killed at its open", async () => {
    engine.apply([]);
    const script = `import time\ntime.sleep(1.5)\nopen(${JSON.stringify(secret)}).close()\nprint("opened", flush=True)`;
    const running = runIn(SELECTED_NS, "/usr/bin/python3", ["-c", script]);
    await new Promise((r) => setTimeout(r, 600));
    engine.apply([
      openatPolicy("kill-python", [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchBinaries: [{ operator: "In", values: ["/usr/bin/python3"] }], matchActions: [{ action: "Sigkill" }] }]),
    ]);
    const py = await running;
    assert.deepEqual([py.signal, py.out], ["SIGKILL", ""]);
  });

  it("a tracepoint this kernel lacks, an array field and an operator the program does not evaluate are HookUnavailable naming them, while another policy is enforced", () => {
    const missing = openatPolicy("missing", [], "default", "sys_enter_no_such_call");
    const array = { ...openatPolicy("array", []), spec: { tracepoints: [{ subsystem: "raw_syscalls", event: "sys_enter", args: [{ index: 5 }] }] } };
    const substring = openatPolicy("substring", [{ matchArgs: [{ index: 1, operator: "SubString", values: ["x"] }] }]);
    const status = engine.apply([missing, array, substring, openatPolicy("fine", [])]);
    assert.deepEqual(status.get("default/missing"), {
      enforced: false,
      reason: "HookUnavailable",
      message: "spec.tracepoints[0].event: tracepoint syscalls/sys_enter_no_such_call does not exist on this kernel (no events/syscalls/sys_enter_no_such_call in tracefs)",
    });
    const a = status.get("default/array");
    assert.ok(a && !a.enforced && a.reason === "HookUnavailable");
    assert.match(a.message, /^spec\.tracepoints\[0\]\.args\[0\]: field 5 \(unsigned long args\[6\]\) is an array/);
    const s = status.get("default/substring");
    assert.ok(s && !s.enforced);
    assert.match(s.message, /SubString/);
    assert.deepEqual(status.get("default/fine"), { enforced: true, hooks: 1 });
  });

  it("processes beyond the kernel's matchBinaries set are counted (seeded and exec'd alike), not lost silently", async () => {
    // A set of 2 entries: 3 sleeps running before the policy (seeded from /proc) and 3 exec'd after it overflow it.
    const small = new TracepointEnforcer({ events: visibility.processes, nodeName: "node-a", emit: () => {}, log: pino({ level: "silent" }), pods: () => pods, scope: `${SCOPE}-small`, procsMax: 2 });
    const smallEngine = new RuntimeEnforcement({ nodeName: "node-a", events: visibility.processes, emit: () => {}, log: pino({ level: "silent" }), resolvePod: (ino) => pods.get(ino), tracepoints: small });
    const sleeps: ReturnType<typeof spawn>[] = [];
    // A binary of this test's own: the kernel's set is the whole host's, and other processes run sleep too.
    const sleeper = path.join(dir, "sleeper");
    fs.copyFileSync("/usr/bin/sleep", sleeper);
    fs.chmodSync(sleeper, 0o755);
    try {
      for (let i = 0; i < 3; i++) sleeps.push(spawn(sleeper, ["30"], { stdio: "ignore" }));
      await new Promise((r) => setTimeout(r, 200));
      const status = smallEngine.apply([openatPolicy("watch-sleep", [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchBinaries: [{ operator: "In", values: [sleeper] }] }])]);
      assert.deepEqual(status.get("default/watch-sleep"), { enforced: true, hooks: 1 });
      assert.equal(small.binarySetOverflows(), 1n, "3 running sleeps, 2 entries: one seeded process did not fit");
      for (let i = 0; i < 3; i++) sleeps.push(spawn(sleeper, ["30"], { stdio: "ignore" }));
      const end = Date.now() + 5000;
      while (small.binarySetOverflows() < 4n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(small.binarySetOverflows(), 4n, "each exec of it that did not fit is counted by the kernel");
    } finally {
      for (const c of sleeps) c.kill("SIGKILL");
      smallEngine.stop();
      small.close();
    }
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, `${SCOPE}-small`)), false, "pins removed");
  });

  it("10 policies loaded and removed 100 times leave no BPF program, link, map or perf event fd and no pins", () => {
    engine.apply([]);
    assert.equal(tracepoints.attachedTracepoints, 0, "no policy: attached nowhere");
    tracepoints.close();
    const before = kernelFds();
    // Two tracepoints: detaching one waits for the kernel's tracepoint grace period (~60 ms here), 100 × 2 of them.
    const events = ["sys_enter_lseek", "sys_enter_fchmod"];
    const ten = Array.from({ length: 10 }, (_, i) => ({
      ...openatPolicy(`churn-${i}`, []),
      spec: { tracepoints: [{ subsystem: "syscalls", event: events[i % events.length], args: [{ index: 5 }], selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: [String(1000 + i)] }], matchActions: [{ action: i % 2 === 0 ? "Post" : "Sigkill" }] }] }] },
    }));
    for (let round = 0; round < 100; round++) {
      const status = engine.apply(ten);
      assert.ok([...status.values()].every((st) => st.enforced), `round ${round}: ${JSON.stringify([...status])}`);
      assert.equal(tracepoints.attachedTracepoints, 2);
      engine.apply([]);
    }
    assert.equal(tracepoints.attachedTracepoints, 0);
    assert.equal(kernelFds().perf, before.perf, "perf events closed with their links");
    tracepoints.close(); // the program stays loaded while the enforcer lives; closing it unloads it
    assert.deepEqual(kernelFds(), before, "programs, links, maps and perf events closed");
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, SCOPE)), false, "pins removed");
  });

  it("the hook, rule and event layout matches bpf/lib/tracepoint.h", () => {
    const h = fs.readFileSync(new URL("../../bpf/lib/tracepoint.h", import.meta.url), "utf8");
    for (const [name, v] of [["TP_RULES_MAX", TP_RULES_MAX], ["TP_ARGS_MAX", TP_ARGS_MAX], ["TP_FILTERS_MAX", TP_FILTERS_MAX], ["TP_STR_MAX", TP_STR_MAX]] as const) {
      assert.match(h, new RegExp(`#define ${name} ${v}\\b`));
    }
    assert.equal(TP_LAYOUT.filter.size, 1 + 1 + 1 + 1 + 4 + 8 + TP_STR_MAX);
    assert.equal(TP_LAYOUT.rule.size, 4 * 3 + 4 + 8 * 4 + TP_FILTERS_MAX * TP_LAYOUT.filter.size);
    assert.match(h, new RegExp(`#define TP_HOOKS_MAX ${TP_HOOKS_MAX}\\b`));
    assert.match(h, new RegExp(`#define TP_SETS ${TP_SETS}\\b`));
    assert.equal(TP_LAYOUT.indexKey.size, 4 + 1 + 1 + 2 + 8);
    assert.equal(TP_LAYOUT.index.size, 4 * 4);
    assert.equal(TP_LAYOUT.binary.size, 1 + 3 + 4 + TP_STR_MAX);
    assert.match(h, new RegExp(`#define TP_BINARIES_MAX ${TP_BINARIES_MAX}\\b`));
    assert.equal(TP_LAYOUT.event.size, 4 * 5 + 4 + 8 + TP_ARGS_MAX * 8 + TP_ARGS_MAX * TP_STR_MAX);
  });
});
