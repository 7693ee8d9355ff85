// The runtime's live event stream over real HTTP with the CLI's reader (readRuntimeStream): the recent events filtered
// by the runtime, then (follow) each new matching one as it is pushed; a bad query is refused naming the parameter.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Registry } from "prom-client";
import { readRuntimeStream } from "../../cli/observe-process.ts";
import type { ProcessExecEvent, RuntimeEvent } from "../../core/process-event.ts";
import { parseStreamQuery, RuntimeEventStream } from "./event-stream.ts";
import { eventJson } from "./visibility.ts";

const exec = (pid: number, binary: string, pod?: { namespace: string; name: string }): ProcessExecEvent => ({
  process_exec: { process: { exec_id: `id${pid}`, pid, uid: 0, cwd: "/", binary, arguments: "", flags: "execve", start_time: "", tid: pid, ...(pod ? { pod } : {}) } },
  node_name: "node-a",
  time: "2026-12-04T00:00:00.000000000Z",
});
const pidsOf = (es: RuntimeEvent[]): number[] => es.map((e) => ("process_exec" in e ? e.process_exec.process.pid : -1));

describe("the runtime's live event stream (GET /v1/events) read by membrane observe --type process", () => {
  const stream = new RuntimeEventStream(new Registry());
  const server = http.createServer((req, res) => stream.serve(req, res));
  let address = "";

  before(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    stream.push(exec(1, "/usr/bin/cat", { namespace: "default", name: "web" }));
    stream.push(exec(2, "/usr/bin/id", { namespace: "other", name: "db" }));
    stream.push(exec(3, "/usr/bin/cat"));
  });

  after(() => {
    stream.close();
    server.close();
  });

  it("without follow: the recent events the filters select (pod, namespace, binary), oldest first, at most --last", async () => {
    const got: RuntimeEvent[] = [];
    const warnings: string[] = [];
    assert.deepEqual(await readRuntimeStream({ kind: "runtime", address, follow: false }, { binary: "cat" }, (e) => got.push(e), (w) => warnings.push(w)), { ok: true });
    assert.deepEqual(pidsOf(got), [1, 3]);
    got.length = 0;
    await readRuntimeStream({ kind: "runtime", address, follow: false, last: 1 }, {}, (e) => got.push(e), (w) => warnings.push(w));
    assert.deepEqual(pidsOf(got), [3]);
    got.length = 0;
    await readRuntimeStream({ kind: "runtime", address, follow: false }, { namespace: "other" }, (e) => got.push(e), (w) => warnings.push(w));
    assert.deepEqual(pidsOf(got), [2]);
    assert.deepEqual(warnings, []);
  });

  it("follow: each new matching event arrives as it is pushed, until the client aborts", async () => {
    const got: RuntimeEvent[] = [];
    const abort = new AbortController();
    const done = readRuntimeStream({ kind: "runtime", address, follow: true, last: 0 }, { pod: "web" }, (e) => {
      got.push(e);
      if (got.length === 2) abort.abort();
    }, (w) => assert.fail(w), abort.signal);
    for (let i = 0; i < 50 && stream.following === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(stream.following, 1);
    stream.push(exec(4, "/usr/bin/ls", { namespace: "default", name: "web" }));
    stream.push(exec(5, "/usr/bin/ls", { namespace: "default", name: "api" }));
    stream.push(exec(6, "/usr/bin/sh", { namespace: "default", name: "web" }));
    assert.deepEqual(await done, { ok: true });
    assert.deepEqual(pidsOf(got), [4, 6], "the api pod's event is not sent");
    for (let i = 0; i < 50 && stream.following > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(stream.following, 0, "the runtime forgets a client that went");
  });

  it("refuses a bad query naming the parameter; an unreachable runtime is said", async () => {
    assert.deepEqual(parseStreamQuery(new URLSearchParams("follow=yes")), { ok: false, error: 'follow: "yes" is not true or false' });
    assert.deepEqual(parseStreamQuery(new URLSearchParams("podd=x")), { ok: false, error: "podd: unknown parameter (follow, last, pod, namespace, binary)" });
    const res = await fetch(`http://${address}/v1/events?last=x`);
    assert.deepEqual([res.status, await res.text()], [400, 'last: "x" is not a count of events\n']);
    const warnings: string[] = [];
    assert.deepEqual(await readRuntimeStream({ kind: "runtime", address: "127.0.0.1:1", follow: false }, {}, () => {}, (w) => warnings.push(w)), { ok: false });
    assert.match(warnings[0] ?? "", /^the runtime at 127\.0\.0\.1:1 cannot be reached: /);
  });

  it("the export's and stream's JSON (processes serialised once each) is JSON.stringify's, for every event type", () => {
    const parent = exec(10, "/bin/sh", { namespace: "default", name: "web" }).process_exec.process;
    const child = exec(11, "/usr/bin/cat", { namespace: "default", name: "web" }).process_exec.process;
    const events: RuntimeEvent[] = [
      { process_exec: { process: child, parent, ancestors: [parent, parent] }, node_name: "node-a", time: "t" },
      { process_exec: { process: child, parent: undefined }, node_name: "node-a", time: "t" } as unknown as RuntimeEvent,
      { process_exit: { process: child, parent, signal: "SIGKILL", status: 0, time: "t" }, node_name: "node-a", time: "t" },
      { process_kprobe: { process: child, parent, function_name: "fd_install", args: [{ file_arg: { path: "/etc/shadow" } }], action: "KPROBE_ACTION_SIGKILL", policy_name: "p" }, node_name: "n", time: "t" },
      { process_tracepoint: { process: child, subsys: "syscalls", event: "sys_enter_openat", args: [{ int_arg: -100 }, { string_arg: "/x\"y" }], action: "KPROBE_ACTION_POST", policy_name: "p" }, node_name: "n", time: "t" },
    ];
    for (const e of events) {
      assert.equal(eventJson(e), JSON.stringify(e));
      assert.equal(eventJson(e), JSON.stringify(e), "again, from the memo");
    }
  });
});
