// containerSelector and the container of events with the real kernel: two "containers" of one pod (one network
// namespace, each process in its own cgroup v2 directory named by a container ID, as the kubelet makes them), a
// policy selecting one container by name refuses (connect, EPERM), denies (file open, EPERM) or kills (a tracepoint's
// Sigkill, judged in the kernel by the caller's cgroup v2 id) only that container's process, the events name the
// container, and a pod without containers is never selected. Run under flock /tmp/membrane-kernel.lock (network
// namespaces, BPF programs on the cgroup root and on tracepoints, fanotify).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import type { RuntimeEvent, TetragonProcess } from "../../core/process-event.ts";
import { NetnsFixture } from "../bpf/netns.ts";
import { CGROUP2_ROOT, ConnectEnforcer } from "./connect-enforcer.ts";
import { ContainerCgroups } from "./containers.ts";
import { RuntimeEnforcement } from "./enforcement.ts";
import type { PodRef } from "./events.ts";
import { TracepointEnforcer } from "./tracepoint-enforcer.ts";
import { ProcessVisibility } from "./visibility.ts";

const POD_NS = `rt-ctr-a-${process.pid}`;
const BARE_NS = `rt-ctr-b-${process.pid}`;
const SCOPE = `test-runtime-containers-${process.pid}`;
const CGROUP_DIR = path.join(CGROUP2_ROOT, `membrane-test-containers-${process.pid}`);
const APP_ID = `${"a1".repeat(31)}${String(process.pid % 100).padStart(2, "0")}`;
const SIDECAR_ID = `${"b2".repeat(31)}${String(process.pid % 100).padStart(2, "0")}`;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** Runs python3 code in a network namespace, joined to a cgroup v2 directory first (as a container's process is). */
function runIn(netns: string, cgroup: string | undefined, script: string): Promise<Run> {
  const join = cgroup !== undefined ? `echo $$ > ${cgroup}/cgroup.procs && ` : "";
  return new Promise((resolve) => {
    const child = spawn("sh", ["-c", `${join}exec ip netns exec ${netns} /usr/bin/python3 -c "$0"`, script], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", (code, signal) => resolve({ code, signal, out: out.trim() }));
  });
}
const connectScript = (port: number) => `import socket\ns = socket.socket()\ntry:\n  s.connect(("127.0.0.1", ${port}))\n  print("connected")\nexcept OSError as e:\n  print(type(e).__name__, e.errno)`;
const openScript = (file: string) => `try:\n  open("${file}").read()\n  print("read")\nexcept OSError as e:\n  print(type(e).__name__, e.errno)`;

const policy = (name: string, containerSelector: unknown, kprobe: unknown) => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name, namespace: "default" },
  spec: { containerSelector, kprobes: [kprobe] },
});
const onlyApp = { matchExpressions: [{ key: "name", operator: "In", values: ["app"] }] };
/** sys_enter_openat with the filename listed (its format's field 6) and Sigkill on an Equal path. */
const openatKill = (name: string, containerSelector: unknown, file: string) => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name, namespace: "default" },
  spec: {
    containerSelector,
    tracepoints: [{
      subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6, type: "string" }],
      selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: [file] }], matchActions: [{ action: "Sigkill" }] }],
    }],
  },
});

/** sys_enter_openat with the filename listed and Sigkill on Equal values, for the pods podSelector selects (and their containers containerSelector selects). */
const openatPolicyOf = (name: string, containerSelector: unknown, files: readonly string[], podSelector: unknown) => ({
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicyNamespaced",
  metadata: { name, namespace: "default" },
  spec: {
    podSelector,
    ...(containerSelector !== undefined ? { containerSelector } : {}),
    tracepoints: [{
      subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6, type: "string" }],
      selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: files }], matchActions: [{ action: "Sigkill" }] }],
    }],
  },
});

describe("containerSelector and the container of events (real processes in per-container cgroups)", () => {
  const fixture = new NetnsFixture();
  const events: RuntimeEvent[] = [];
  let pods = new Map<number, PodRef>();
  let visibility: ProcessVisibility;
  let connect: ConnectEnforcer;
  let tracepoints: TracepointEnforcer;
  let engine: RuntimeEnforcement;
  let dir: string;
  const containers = new ContainerCgroups();

  before(() => {
    fixture.addNetns(POD_NS);
    fixture.addNetns(BARE_NS);
    for (const id of [APP_ID, SIDECAR_ID]) fs.mkdirSync(path.join(CGROUP_DIR, "kubepods", "podtest", id), { recursive: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-containers-"));
    fs.writeFileSync(path.join(dir, "secret"), "s3cret\n");
    pods = new Map([
      [fs.statSync(`/var/run/netns/${POD_NS}`).ino, {
        namespace: "default", name: "two", labels: { app: "two" },
        containers: [
          { id: APP_ID, name: "app", image: "docker.io/library/busybox:1.36", imageId: "docker.io/library/busybox@sha256:11", startedAt: "2026-12-05T03:00:00Z" },
          { id: SIDECAR_ID, name: "sidecar", image: "docker.io/library/busybox:1.36", imageId: "docker.io/library/busybox@sha256:11" },
        ],
      }],
      // A process-based pod: no containers (its events carry none; a containerSelector never selects it).
      [fs.statSync(`/var/run/netns/${BARE_NS}`).ino, { namespace: "default", name: "bare", labels: { app: "two" } }],
    ]);
    const resolvePod = (ino: number): PodRef | undefined => pods.get(ino);
    visibility = new ProcessVisibility({ nodeName: "node-a", exportFile: path.join(dir, "events.jsonl"), registry: new Registry(), resolvePod, containers, scope: `${SCOPE}-proc`, onEvent: (e) => events.push(e) });
    visibility.start();
    const log = pino({ level: "silent" });
    const emit = (e: RuntimeEvent): void => visibility.emit(e);
    connect = new ConnectEnforcer({ events: visibility.processes, nodeName: "node-a", emit, log, pods: () => pods, containers, scope: SCOPE });
    tracepoints = new TracepointEnforcer({ events: visibility.processes, nodeName: "node-a", emit, log, pods: () => pods, containers, scope: `${SCOPE}-tp` });
    engine = new RuntimeEnforcement({ nodeName: "node-a", events: visibility.processes, emit, log, resolvePod, containers, pods: () => pods, connect, tracepoints });
  });

  after(() => {
    engine?.stop();
    visibility?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    fixture.cleanup();
    // Deepest first; each is empty once its processes exited.
    for (const d of [path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID), path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID), path.join(CGROUP_DIR, "kubepods", "podtest"), path.join(CGROUP_DIR, "kubepods"), CGROUP_DIR]) {
      try {
        fs.rmdirSync(d);
      } catch (err) {
        console.error(`cgroup ${d} not removed: ${String(err)}`);
      }
    }
  });

  async function event<T>(what: string, find: () => T | undefined): Promise<T> {
    const end = Date.now() + 5000;
    for (;;) {
      visibility.drain();
      connect.drain();
      tracepoints.drain();
      const v = find();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`no ${what}; events: ${JSON.stringify(events.slice(-10))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const processOf = (e: RuntimeEvent): TetragonProcess | undefined => ("process_exec" in e ? e.process_exec.process : "process_kprobe" in e ? e.process_kprobe.process : undefined);

  it("the cgroup v2 tree maps each container's cgroup id to its ID and back", () => {
    containers.refresh();
    const ino = fs.statSync(path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID), { bigint: true }).ino;
    assert.equal(containers.cgroupIdOf(APP_ID), ino);
    assert.equal(containers.ofCgroupId(ino), APP_ID);
    assert.equal(containers.ofPid(process.pid), undefined, "the test process is in no container");
  });

  it("connect: containerSelector name In [app] refuses the app container's connect (EPERM) and not the sidecar's of the same pod, nor a pod without containers", async () => {
    const status = engine.apply([policy("app-no-4450", onlyApp, {
      call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }],
      selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: ["4450"] }], matchActions: [{ action: "Override", argError: -1 }] }],
    })]);
    assert.deepEqual(status.get("default/app-no-4450"), { enforced: true, hooks: 1 });
    const appCg = path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID);
    const sidecarCg = path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID);
    assert.equal((await runIn(POD_NS, appCg, connectScript(4450))).out, "PermissionError 1");
    assert.equal((await runIn(POD_NS, sidecarCg, connectScript(4450))).out, "ConnectionRefusedError 111", "the pod's other container");
    assert.equal((await runIn(POD_NS, undefined, connectScript(4450))).out, "ConnectionRefusedError 111", "a process of the pod in no container's cgroup");
    assert.equal((await runIn(BARE_NS, undefined, connectScript(4450))).out, "ConnectionRefusedError 111", "a pod without containers");
    const e = await event("the Override event", () => events.flatMap((x) => ("process_kprobe" in x && x.process_kprobe.policy_name === "app-no-4450" ? [x.process_kprobe] : []))[0]);
    assert.equal(e.action, "KPROBE_ACTION_OVERRIDE");
    assert.equal(e.process.pod?.container?.name, "app");
    assert.equal(e.process.pod?.container?.id, APP_ID);
  });

  it("file: containerSelector name In [app] denies the app container's open (EPERM) while the sidecar reads the file", async () => {
    events.length = 0;
    const secret = path.join(dir, "secret");
    const status = engine.apply([policy("app-no-secret", onlyApp, {
      call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }],
      selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: [secret] }], matchActions: [{ action: "Override", argError: -1 }] }],
    })]);
    assert.deepEqual(status.get("default/app-no-secret"), { enforced: true, hooks: 1 });
    assert.equal((await runIn(POD_NS, path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID), openScript(secret))).out, "PermissionError 1");
    assert.equal((await runIn(POD_NS, path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID), openScript(secret))).out, "read");
    assert.equal((await runIn(BARE_NS, undefined, openScript(secret))).out, "read", "a pod without containers is never selected");
    const e = await event("the Override event", () => events.flatMap((x) => ("process_kprobe" in x && x.process_kprobe.policy_name === "app-no-secret" ? [x.process_kprobe] : []))[0]);
    assert.equal(e.process.pod?.container?.name, "app");
    engine.apply([]);
  });

  it("file: a container with a mount namespace of its own (as the kubelet's are) has its own root's file denied, marked through /proc/PID/root; the sidecar in that namespace reads it", async () => {
    events.length = 0;
    // The app container's first process: its own mount namespace, where a tmpfs over `private` holds a file that
    // this process (the runtime) cannot see at that path.
    const privateDir = path.join(dir, "private");
    fs.mkdirSync(privateDir);
    const appCg = path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID);
    const holder = spawn("sh", ["-c", `echo $$ > ${appCg}/cgroup.procs && exec ip netns exec ${POD_NS} unshare -m --propagation private sh -c 'mount -t tmpfs own ${privateDir} && echo s3cret > ${privateDir}/only-here && echo up && exec sleep 60'`], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once("data", () => resolve());
        holder.once("exit", (code) => reject(new Error(`the container's holder exited with ${code}`)));
      });
      const file = path.join(privateDir, "only-here");
      assert.equal(fs.existsSync(file), false, "the file is only in the container's mount namespace");
      const status = engine.apply([policy("app-no-own-file", onlyApp, {
        call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }],
        selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: [file] }], matchActions: [{ action: "Override", argError: -1 }] }],
      })]);
      assert.deepEqual(status.get("default/app-no-own-file"), { enforced: true, hooks: 1 });
      // A process of each container, in the holder's mount namespace (as a container's processes share its root).
      const inContainer = (cgroup: string, script: string): Promise<Run> =>
        new Promise((resolve) => {
          const child = spawn("sh", ["-c", `echo $$ > ${cgroup}/cgroup.procs && exec nsenter -t ${holder.pid} -m -n /usr/bin/python3 -c "$0"`, script], { stdio: ["ignore", "pipe", "ignore"] });
          let out = "";
          child.stdout.on("data", (d: Buffer) => (out += d.toString()));
          child.on("close", (code, signal) => resolve({ code, signal, out: out.trim() }));
        });
      assert.equal((await inContainer(appCg, openScript(file))).out, "PermissionError 1");
      assert.equal((await inContainer(path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID), openScript(file))).out, "read", "the sidecar is not selected");
      const e = await event("the Override event", () => events.flatMap((x) => ("process_kprobe" in x && x.process_kprobe.policy_name === "app-no-own-file" ? [x.process_kprobe] : []))[0]);
      assert.equal(e.process.pod?.container?.name, "app");
      assert.deepEqual(e.args, [{ file_arg: { path: file } }], "the path as the container sees it");
    } finally {
      visibility.drain(); // this test's execs are not the next test's
      engine.apply([]);
      holder.kill("SIGKILL");
      await new Promise((r) => (holder.exitCode !== null || holder.signalCode !== null ? r(undefined) : holder.once("exit", r)));
    }
  });

  it("tracepoint: containerSelector name In [app] on sys_enter_openat kills the app container's open in the kernel (SIGKILL, nothing read) while the sidecar, a process of the pod outside both and a pod without containers read the file; only the app's is posted", async () => {
    events.length = 0;
    const secret = path.join(dir, "secret");
    const status = engine.apply([openatKill("app-tp-kill", onlyApp, secret)]);
    assert.deepEqual(status.get("default/app-tp-kill"), { enforced: true, hooks: 1 });
    const appCg = path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID);
    const sidecarCg = path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID);
    const killed = await runIn(POD_NS, appCg, openScript(secret));
    assert.deepEqual([killed.signal, killed.out], ["SIGKILL", ""], "the app container's open: killed before it read");
    assert.equal((await runIn(POD_NS, sidecarCg, openScript(secret))).out, "read", "the pod's other container");
    assert.equal((await runIn(POD_NS, undefined, openScript(secret))).out, "read", "a process of the pod in no container's cgroup");
    assert.equal((await runIn(BARE_NS, undefined, openScript(secret))).out, "read", "a pod without containers");
    const posted = () => events.flatMap((x) => ("process_tracepoint" in x && x.process_tracepoint.policy_name === "app-tp-kill" ? [x.process_tracepoint] : []));
    const e = await event("the Sigkill event", () => posted()[0]);
    assert.equal(e.action, "KPROBE_ACTION_SIGKILL");
    assert.deepEqual([e.process.pod?.name, e.process.pod?.container?.name, e.process.pod?.container?.id], ["two", "app", APP_ID]);
    assert.deepEqual(e.args, [{ int_arg: -100 }, { string_arg: secret }]);
    tracepoints.drain();
    assert.deepEqual(posted().map((x) => x.process.pod?.container?.name), ["app"], "the opens that were not killed were not posted either");
    engine.apply([]);
  });

  it("tracepoint: a container that appears in its pod's status after the policy gets the rule at the next apply (a pods-file change), and loses it once its pod no longer lists it", async () => {
    const secret = path.join(dir, "secret");
    const appCg = path.join(CGROUP_DIR, "kubepods", "podtest", APP_ID);
    const ino = fs.statSync(`/var/run/netns/${POD_NS}`).ino;
    const full = pods.get(ino)!;
    const withContainers = (names: readonly string[]): Map<number, PodRef> =>
      new Map([...pods].map(([k, p]) => [k, k === ino ? { ...full, containers: full.containers!.filter((c) => names.includes(c.name)) } : p]));
    try {
      pods = withContainers(["sidecar"]); // the app container is not in the pod's status yet
      assert.deepEqual(engine.apply([openatKill("app-tp-later", onlyApp, secret)]).get("default/app-tp-later"), { enforced: true, hooks: 1 });
      assert.equal((await runIn(POD_NS, appCg, openScript(secret))).out, "read", "a container the pod's status does not list is not selected yet");
      pods = withContainers(["sidecar", "app"]); // the agent rewrote the pods file: the runtime refreshes the cgroups and applies again
      containers.refresh();
      engine.apply([openatKill("app-tp-later", onlyApp, secret)]);
      assert.equal((await runIn(POD_NS, appCg, openScript(secret))).signal, "SIGKILL", "the container that appeared gets the rule");
      pods = withContainers(["sidecar"]); // the container is gone from the pod's status
      engine.apply([openatKill("app-tp-later", onlyApp, secret)]);
      assert.equal((await runIn(POD_NS, appCg, openScript(secret))).out, "read", "its rule is removed with it");
    } finally {
      pods = new Map([...pods].map(([k, p]) => [k, k === ino ? full : p]));
      engine.apply([]);
      visibility.drain();
      tracepoints.drain();
    }
  });

  /**
   * A node's worth of pods for one test: 110 network namespaces (one `ip -batch`) and 3 containers' cgroup v2
   * directories each, in the pods the enforcers see (labels app=many) beside the others; all removed after.
   */
  async function withManyPods(run: (many: readonly { netns: string; cgroups: readonly string[] }[]) => Promise<void>): Promise<void> {
    const many = Array.from({ length: 110 }, (_, i) => ({
      netns: `rt-many-${process.pid}-${i}`,
      ids: [0, 1, 2].map((c) => `${process.pid.toString(16).padStart(8, "0")}${i.toString(16).padStart(4, "0")}${c.toString(16).padStart(4, "0")}`.padEnd(64, "e")),
    }));
    const cgroupOf = (i: number, c: number): string => path.join(CGROUP_DIR, "many", `pod${i}`, many[i]!.ids[c]!);
    const saved = pods;
    const created: string[] = [];
    try {
      execFileSync("ip", ["-batch", "-"], { input: many.map((m) => `netns add ${m.netns}\n`).join("") });
      created.push(...many.map((m) => m.netns));
      for (let i = 0; i < many.length; i++) for (let c = 0; c < 3; c++) fs.mkdirSync(cgroupOf(i, c), { recursive: true });
      pods = new Map([...saved, ...many.map((m, i) => [fs.statSync(`/var/run/netns/${m.netns}`).ino, {
        namespace: "default", name: `many-${i}`, labels: { app: "many" },
        containers: m.ids.map((id, c) => ({ id, name: `c${c}`, image: "busybox:1.36", imageId: "busybox@sha256:11" })),
      }] as const)]);
      containers.refresh();
      await run(many.map((m, i) => ({ netns: m.netns, cgroups: [0, 1, 2].map((c) => cgroupOf(i, c)) })));
    } finally {
      pods = saved;
      engine.apply([]);
      visibility.drain();
      tracepoints.drain();
      connect.drain();
      if (created.length > 0) execFileSync("ip", ["-batch", "-"], { input: created.map((n) => `netns del ${n}\n`).join("") });
      // Deepest first; each is empty once its processes exited.
      const rmdir = (d: string): void => {
        try {
          fs.rmdirSync(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") console.error(`cgroup ${d} not removed: ${String(err)}`);
        }
      };
      for (let i = 0; i < many.length; i++) {
        for (let c = 0; c < 3; c++) rmdir(cgroupOf(i, c));
        rmdir(path.dirname(cgroupOf(i, 0)));
      }
      rmdir(path.join(CGROUP_DIR, "many"));
    }
  }
  /** Runs each command in its cgroup and network namespace from one shell (sh, nsenter, then the command: cheap); per command one line, its exit status and its output's last line. */
  const runEach = (runs: readonly { cgroup: string; netns: string; command: string }[]): string[] => {
    const script = runs.map((r) => `out=$(sh -c 'echo $$ > ${r.cgroup}/cgroup.procs && exec nsenter --net=/var/run/netns/${r.netns} ${r.command}' 2>&1 | tail -n 1); echo "$? $out"`).join("\n");
    return execFileSync("bash", ["-o", "pipefail", "-c", script], { encoding: "utf8" }).trim().split("\n");
  };
  const allContainers = { matchExpressions: [{ key: "name", operator: "In", values: ["c0", "c1", "c2"] }] };
  const manyPods = { matchLabels: { app: "many" } };

  it("tracepoint: a node's worth of pods (110 pods × 3 containers, 330 container rules and 330 pod rules on one tracepoint, past the 256 rules a node held before) is enforced for every one of them, and a policy beyond the node's rules is refused by name while those stay enforced", async () => {
    const fileA = path.join(dir, "many-a");
    const fileB = path.join(dir, "many-b");
    fs.writeFileSync(fileA, "a\n");
    fs.writeFileSync(fileB, "b\n");
    await withManyPods(async (many) => {
      // Per pod: its 3 values of fileB (pod rules); per container: fileA (container rules). Both on sys_enter_openat.
      const status = engine.apply([
        openatPolicyOf("many-pods", undefined, [fileB, `${fileB}.1`, `${fileB}.2`], manyPods),
        openatPolicyOf("many-containers", allContainers, [fileA], manyPods),
        openatPolicyOf("many-beyond", allContainers, Array.from({ length: 13 }, (_, k) => `${fileA}.${k}`), manyPods),
      ]);
      assert.deepEqual(status.get("default/many-pods"), { enforced: true, hooks: 1 });
      assert.deepEqual(status.get("default/many-containers"), { enforced: true, hooks: 1 });
      const refused = status.get("default/many-beyond");
      assert.equal(refused?.enforced, false);
      assert.match(refused.enforced ? "" : `${refused.reason}: ${refused.message}`, /^HookUnavailable: tracepoint hooks expand to 4290 rules; this node holds 4096$/);
      // Each line's status: 137 is SIGKILL.
      const cat = (runs: readonly { cgroup: string; netns: string }[], file: string): string[] => runEach(runs.map((r) => ({ ...r, command: `cat ${file}` }))).map((l) => l.split(" ")[0]!);
      const everyContainer = many.flatMap((m) => m.cgroups.map((cgroup) => ({ cgroup, netns: m.netns })));
      assert.deepEqual(cat(everyContainer, fileA), everyContainer.map(() => "137"), "each of the 330 containers' open of fileA is killed");
      const lastContainers = many.map((m) => ({ cgroup: m.cgroups[2]!, netns: m.netns }));
      assert.deepEqual(cat(lastContainers, `${fileB}.2`), many.map(() => "137"), "a container's open of fileB's third value, by its pod's rules (each pod's c2)");
      const podOutsideContainers = many.map((m) => ({ cgroup: CGROUP_DIR, netns: m.netns }));
      assert.deepEqual(cat(podOutsideContainers, fileB), many.map(() => "137"), "each pod's process in no container: fileB killed by its pod's rule");
      assert.deepEqual(cat(podOutsideContainers, fileA), many.map(() => "0"), "and fileA read (no container of it)");
      assert.deepEqual(cat([{ cgroup: CGROUP_DIR, netns: POD_NS }, { cgroup: CGROUP_DIR, netns: POD_NS }], fileA), ["0", "0"], "a pod the policies do not select reads");
    });
  });

  it("connect: a node's worth of pods (110 pods × 3 containers, 330 container rules and 330 pod rules, past the 256 rules a node held before) is refused for every one of them (EPERM), and a policy beyond the node's rules is refused by name while those stay enforced", async () => {
    const connectPolicy = (name: string, containerSelector: unknown, ports: readonly string[]) => ({
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicyNamespaced",
      metadata: { name, namespace: "default" },
      spec: {
        podSelector: manyPods,
        ...(containerSelector !== undefined ? { containerSelector } : {}),
        kprobes: [{
          call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }],
          selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: ports }], matchActions: [{ action: "Override", argError: -1 }] }],
        }],
      },
    });
    await withManyPods(async (many) => {
      const status = engine.apply([
        connectPolicy("many-pods", undefined, ["4451", "4452", "4453"]),
        connectPolicy("many-containers", allContainers, ["4450"]),
        connectPolicy("many-beyond", allContainers, Array.from({ length: 13 }, (_, k) => String(5000 + k))),
      ]);
      assert.deepEqual(status.get("default/many-pods"), { enforced: true, hooks: 1 });
      assert.deepEqual(status.get("default/many-containers"), { enforced: true, hooks: 1 });
      const refused = status.get("default/many-beyond");
      assert.equal(refused?.enforced, false);
      assert.match(refused.enforced ? "" : `${refused.reason}: ${refused.message}`, /^LoadFailed: connect hooks expand to 4290 rules; this node holds 4096$/);
      // bash's /dev/tcp: EPERM is "Operation not permitted"; otherwise the namespace's loopback is down ("Network is unreachable").
      const refusedBy = (runs: readonly { cgroup: string; netns: string }[], port: number): boolean[] =>
        runEach(runs.map((r) => ({ ...r, command: `bash -c "exec 3<>/dev/tcp/127.0.0.1/${port}"` }))).map((l) => l.includes("Operation not permitted"));
      const everyContainer = many.flatMap((m) => m.cgroups.map((cgroup) => ({ cgroup, netns: m.netns })));
      assert.deepEqual(refusedBy(everyContainer, 4450), everyContainer.map(() => true), "each of the 330 containers' connect to 4450 is refused");
      const lastContainers = many.map((m) => ({ cgroup: m.cgroups[2]!, netns: m.netns }));
      assert.deepEqual(refusedBy(lastContainers, 4453), many.map(() => true), "a container's connect to 4453, by its pod's rules (each pod's c2)");
      const podOutsideContainers = many.map((m) => ({ cgroup: CGROUP_DIR, netns: m.netns }));
      assert.deepEqual(refusedBy(podOutsideContainers, 4451), many.map(() => true), "each pod's process in no container: 4451 refused by its pod's rule");
      assert.deepEqual(refusedBy(podOutsideContainers, 4450), many.map(() => false), "and 4450 not (no container of it)");
      assert.deepEqual(refusedBy([{ cgroup: CGROUP_DIR, netns: POD_NS }, { cgroup: CGROUP_DIR, netns: POD_NS }], 4451), [false, false], "a pod the policies do not select is refused nothing");
    });
  });

  it("exec events name the container (Tetragon's process.pod.container) and none for a pod without containers", async () => {
    events.length = 0;
    await runIn(POD_NS, path.join(CGROUP_DIR, "kubepods", "podtest", SIDECAR_ID), "print('sidecar')");
    await runIn(BARE_NS, undefined, "print('bare')");
    const sidecar = await event("the sidecar's exec", () => events.map(processOf).find((p) => p?.pod?.name === "two" && p.binary.endsWith("python3") && p.flags === "execve"));
    assert.deepEqual({ ...sidecar.pod!.container!, pid: undefined }, {
      id: SIDECAR_ID, name: "sidecar", image: { id: "docker.io/library/busybox@sha256:11", name: "docker.io/library/busybox:1.36" }, pid: undefined, maybe_exec_probe: false,
    });
    const bare = await event("the bare pod's exec", () => events.map(processOf).find((p) => p?.pod?.name === "bare" && p.binary.endsWith("python3")));
    assert.deepEqual(bare.pod, { namespace: "default", name: "bare" });
  });
});
