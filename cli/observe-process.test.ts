// `membrane observe --type process` over an export file: filters by pod, namespace and binary, compact and JSON output.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type ProcessEvent, type RuntimeEvent, type TetragonProcess, processOf } from "../core/process-event.ts";
import { compactLine, observeType, parseProcessArgs, selectProcessEvents } from "./observe-process.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const proc = (pid: number, binary: string, args: string, pod?: { namespace: string; name: string }): TetragonProcess => ({
  exec_id: `id-${pid}`, pid, uid: 0, cwd: "/", binary, arguments: args, flags: "execve", start_time: "2026-12-03T20:00:00.000000000Z", ...(pod ? { pod } : {}), tid: pid,
});
const web = { namespace: "default", name: "web" };
const EVENTS: ProcessEvent[] = [
  { process_exec: { process: proc(10, "/bin/sh", "-c id", web) }, node_name: "n", time: "t" },
  { process_exec: { process: proc(11, "/usr/bin/id", "", web), parent: proc(10, "/bin/sh", "-c id", web) }, node_name: "n", time: "t" },
  { process_exit: { process: proc(11, "/usr/bin/id", "", web), status: 0, time: "t" }, node_name: "n", time: "t" },
  { process_exec: { process: proc(20, "/usr/bin/id", "", { namespace: "kube-system", name: "dns" }) }, node_name: "n", time: "t" },
  { process_exit: { process: proc(30, "/bin/sleep", "30"), signal: "SIGKILL", status: 0, time: "t" }, node_name: "n", time: "t" },
];
const TEXT = EVENTS.map((e) => JSON.stringify(e)).join("\n") + "\n";

describe("membrane observe --type process", () => {
  it("filters by pod, namespace and binary", () => {
    const pids = (f: Parameters<typeof selectProcessEvents>[1]): number[] =>
      selectProcessEvents(TEXT, f).events.map((e) => processOf(e).pid);
    assert.deepEqual(pids({}), [10, 11, 11, 20, 30]);
    assert.deepEqual(pids({ namespace: "default" }), [10, 11, 11]);
    assert.deepEqual(pids({ pod: "dns" }), [20]);
    assert.deepEqual(pids({ binary: "id" }), [11, 11, 20]);
    assert.deepEqual(pids({ binary: "/usr/bin/id", namespace: "default" }), [11, 11]);
  });

  it("reads a policy's hook events (process_kprobe, process_lsm), filters them like the others and prints the action", () => {
    const kill: RuntimeEvent = {
      process_kprobe: { process: proc(40, "/usr/bin/cat", "/etc/shadow", web), function_name: "fd_install", args: [{ file_arg: { path: "/etc/shadow" } }], action: "KPROBE_ACTION_SIGKILL", policy_name: "monitor-sensitive-files" },
      node_name: "n",
      time: "t",
    };
    const deny: RuntimeEvent = {
      process_lsm: { process: proc(41, "/usr/bin/curl", "", { namespace: "other", name: "c" }), function_name: "socket_connect", args: [{ sockaddr_arg: { family: "AF_INET", addr: "10.0.0.1", port: 4444 } }], action: "KPROBE_ACTION_OVERRIDE", policy_name: "no-4444" },
      node_name: "n",
      time: "t",
    };
    const text = [kill, deny].map((e) => JSON.stringify(e)).join("\n");
    const r = selectProcessEvents(text, { namespace: "default" });
    assert.deepEqual(r, { events: [kill], errors: [] });
    assert.equal(compactLine(kill), "🔧 fd_install default/web /usr/bin/cat /etc/shadow SIGKILL (monitor-sensitive-files)");
    assert.equal(compactLine(deny), "🔧 socket_connect other/c /usr/bin/curl 10.0.0.1:4444 OVERRIDE (no-4444)");
  });

  it("names a line that is not a process event", () => {
    assert.deepEqual(selectProcessEvents('{"flow":{}}\nnope\n', {}).errors, ["line 1: not a process_exec, process_exit, process_kprobe, process_lsm, process_tracepoint event", "line 2: not JSON"]);
  });

  it("parses --type and its flags, refusing what it does not know", () => {
    assert.deepEqual(observeType(["--type", "process", "--pod", "x"]), { ok: true, type: "process", rest: ["--pod", "x"] });
    assert.deepEqual(observeType(["--from-pod", "a"]), { ok: true, type: "flow", rest: ["--from-pod", "a"] });
    // Other types are flow types, left to the flow filter's parser (which names the flag for a wrong one).
    assert.deepEqual(observeType(["--type=kprobe"]), { ok: true, type: "flow", rest: ["--type", "kprobe"] });
    assert.deepEqual(observeType(["--type", "l7", "--type", "drop", "--verdict", "DROPPED"]), { ok: true, type: "flow", rest: ["--type", "l7", "--type", "drop", "--verdict", "DROPPED"] });
    assert.deepEqual(observeType(["--type", "flow", "--last", "3"]), { ok: true, type: "flow", rest: ["--last", "3"] });
    assert.deepEqual(observeType(["--type", "process", "--type", "drop"]), { ok: false, error: "--type: process cannot be combined with a flow type" });
    // dns: the DNS proxy's L7 flows (issue #15), as --type l7 --protocol DNS; alone, since the protocol filter would narrow another type too.
    assert.deepEqual(observeType(["--type", "dns", "--dns-query", "api"]), { ok: true, type: "flow", rest: ["--dns-query", "api", "--type", "l7", "--protocol", "DNS"] });
    assert.deepEqual(observeType(["--type=dns", "--type", "drop"]), { ok: false, error: "--type: dns (the DNS proxy's L7 flows) cannot be combined with another flow type" });
    assert.deepEqual(observeType(["--type", "dns", "--type", "process"]), { ok: false, error: "--type: process cannot be combined with a flow type" });
    // Without a source: every node's agent, found in the cluster as for flows.
    assert.deepEqual(parseProcessArgs(["--pod", "x"]), { ok: true, value: { source: { kind: "agents", servers: [], follow: false }, filter: { pod: "x" }, output: "compact" } });
    assert.deepEqual(parseProcessArgs(["--server", "/run/h.sock", "-f", "--last", "2"]), { ok: true, value: { source: { kind: "agents", servers: ["unix:/run/h.sock"], follow: true, last: 2 }, filter: {}, output: "compact" } });
    assert.deepEqual(parseProcessArgs(["--server", "10.0.0.1:4244", "--kubeconfig", "k"]), { ok: false, error: "--kubeconfig: not together with --server (the servers are given, nothing is discovered)" });
    assert.deepEqual(parseProcessArgs(["--tls-ca-cert-files", "/ca"]), { ok: false, error: "--tls-ca-cert-files, --tls-client-cert-file, --tls-client-key-file: give all three (mutual TLS)" });
    assert.deepEqual(parseProcessArgs(["--runtime-address", "127.0.0.1:1", "--server", "a:1"]), { ok: false, error: "--server: reads the agents; --runtime-address reads one runtime: give one" });
    assert.deepEqual(parseProcessArgs(["--input-file", "f", "--kubeconfig", "k"]), { ok: false, error: "--kubeconfig: reads the agents; --input-file reads a file: give one" });
    assert.deepEqual(parseProcessArgs(["--runtime-address", "10.0.0.1:9964", "-f", "--last", "5"]), { ok: true, value: { source: { kind: "runtime", address: "10.0.0.1:9964", follow: true, last: 5 }, filter: {}, output: "compact" } });
    assert.deepEqual(parseProcessArgs(["--input-file", "f", "--follow"]), { ok: false, error: "--follow: follows the live stream, not a file" });
    assert.deepEqual(parseProcessArgs(["--input-file", "f", "--runtime-address", "a:1"]), { ok: false, error: "--input-file: reads a file; --runtime-address reads the runtime: give one" });
    assert.deepEqual(parseProcessArgs(["--runtime-address", "nowhere"]), { ok: false, error: '--runtime-address: "nowhere" is not HOST:PORT' });
    assert.deepEqual(parseProcessArgs(["--last=x"]), { ok: false, error: '--last: "x" is not a count of events' });
    assert.deepEqual(parseProcessArgs(["--input-file", "f", "-o", "table"]), { ok: false, error: '-o: "table" is not compact or json' });
  });

  it("prints compact lines and JSON lines through bin/membrane", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observe-process-"));
    try {
      const file = path.join(dir, "events.log");
      fs.writeFileSync(file, TEXT);
      const compact = execFileSync(MEMBRANE, ["observe", "--type", "process", "--input-file", file, "--namespace", "default"]).toString();
      assert.equal(compact, "🚀 process default/web /bin/sh -c id\n🚀 process default/web /usr/bin/id\n💥 exit    default/web /usr/bin/id 0\n");
      const json = execFileSync(MEMBRANE, ["observe", "--type", "process", "--input-file", file, "--binary", "sleep", "-o", "json"]).toString();
      assert.deepEqual(JSON.parse(json), EVENTS[4]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("prints every event to a pipe whose reader falls behind, the newest last (not only the first 64 KiB the pipe held when the command exited)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observe-process-"));
    try {
      const file = path.join(dir, "events.log");
      // ~1 MB of events, as a node's recent events of one pod are behind `kubectl exec` (2026-12-05: the real-node
      // file/exec test read 40 and 70 of them, never the newest, the Override events it waited for).
      const many = Array.from({ length: 600 }, (_, i) => JSON.stringify({ process_exec: { process: proc(i + 1, "/bin/sh", `-c ${"x".repeat(1500)}`, web) }, node_name: "n", time: `t${String(i).padStart(5, "0")}` }));
      fs.writeFileSync(file, `${many.join("\n")}\n`);
      // The reader takes the first line (the command is writing), then reads nothing for 2 s: a command that exits
      // meanwhile without waiting for the pipe loses what it had no room for.
      const script = `"$0" observe --type process --input-file "$1" -o json | { IFS= read -r first; sleep 2; tail -n 1; }; echo "status \${PIPESTATUS[0]}"`;
      const out = execFileSync("bash", ["-c", script, MEMBRANE, file]).toString().trim().split("\n");
      assert.equal(out.at(-1), "status 0");
      assert.equal((JSON.parse(out[0]!) as { time: string }).time, "t00599", "the newest event, printed last, reached the reader");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
