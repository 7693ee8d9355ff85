// `membrane observe` as a client of Hubble's Observer API (agents' HubbleServers on unix sockets): filters, merging, follow, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { pino } from "pino";
import { FlowBuffer } from "../node-agent/observer/buffer.ts";
import { HubbleServer } from "../node-agent/observer/hubble-server.ts";
import { dropFlow, endpoint, flow } from "../flowapi/testing/flows.ts";
import type { Flow } from "../flowapi/flow.ts";
import { observe as observeIn, parseObserveArgs } from "./observe.ts";

const membrane = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const log = pino({ level: "silent" });

async function startAgent(t: test.TestContext, name: string, flows: Flow[]): Promise<{ buffer: FlowBuffer; addr: string; server: HubbleServer }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observe-"));
  const buffer = new FlowBuffer({ capacity: 1000 });
  for (const f of flows) buffer.push(f);
  const server = new HubbleServer(buffer, name, log);
  const [addr] = await server.start({ socketPath: path.join(dir, `${name}.sock`) });
  t.after(async () => {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { buffer, addr: addr!, server };
}

const observe = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  promisify(execFile)(membrane, ["observe", ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/** `membrane observe` in this process (the CLI's own code path, minus process startup). */
async function observeHere(...args: string[]): Promise<string> {
  const parsed = parseObserveArgs(args);
  if (!parsed.ok) throw new Error(parsed.error);
  let out = "";
  await observeIn(parsed.value, (s) => (out += s));
  return out;
}

/** `membrane observe -f -o json ARGS` as a process: its output so far, and the child (killed after the test). */
function following(t: test.TestContext, ...args: string[]): { child: ChildProcess; out: () => string; err: () => string } {
  const child = spawn(membrane, ["observe", "-f", "-o", "json", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  return { child, out: () => out, err: () => err };
}

const jsonLines = (s: string): Flow[] => s.trimEnd().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Flow);

test("observe merges two agents' flows by time, prints them as they were enriched, and applies filters and --last", async (t) => {
  const deny = dropFlow({ time: "2026-01-01T00:00:03.000Z", node: "node-a", dropReason: "policy denied", decidedBy: { kind: "rule", policyKind: "NetworkPolicy", namespace: "shop", name: "deny", rule: "spec.ingressDeny[0]" }, destination: endpoint({ namespace: "shop", pod: "web-0", port: 8080 }) });
  const a = await startAgent(t, "node-a", [flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a" }), deny]);
  const b = await startAgent(t, "node-b", [dropFlow({ time: "2026-01-01T00:00:02.000Z", node: "node-b" }), flow({ time: "2026-01-01T00:00:04.000Z", node: "node-b", protocol: "UDP" })]);
  const all = jsonLines(await observeHere("--server", a.addr, "--server", b.addr, "-o", "json"));
  assert.deepEqual(all.map((f) => `${f.node} ${f.verdict}`), ["node-a FORWARDED", "node-b DROPPED", "node-a DROPPED", "node-b FORWARDED"]);
  assert.deepEqual(all[2], JSON.parse(JSON.stringify(deny)), "the flow reads back through Hubble's shape unchanged");

  const drops = await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--verdict", "DROPPED", "--to-pod", "shop/web-0", "--port", "8080");
  assert.deepEqual(jsonLines(drops).map((f) => f.node), ["node-a"]);
  // NS/POD names one pod exactly (Hubble reads it as a prefix: the CLI filters the answers again).
  assert.equal(jsonLines(await observeHere("--server", a.addr, "-o", "json", "--pod", "shop/web")).length, 0);
  assert.equal(jsonLines(await observeHere("--server", a.addr, "-o", "json", "--pod", "web")).length, 2, "a bare name is a prefix in any namespace");
  assert.deepEqual(jsonLines(await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--namespace", "shop", "--protocol", "udp")).map((f) => f.node), ["node-b"]);
  assert.deepEqual(jsonLines(await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--type", "drop", "--label", "k8s:app=web")).map((f) => f.time), ["2026-01-01T00:00:02.000Z"]);

  const last = await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--last", "2");
  assert.deepEqual(jsonLines(last).map((f) => f.time), ["2026-01-01T00:00:03.000Z", "2026-01-01T00:00:04.000Z"]);
  const lastExact = await observeHere("--server", a.addr, "-o", "json", "--from-pod", "default/client-1", "--to-pod", "shop/web-0", "--last", "1");
  assert.deepEqual(jsonLines(lastExact).map((f) => f.time), ["2026-01-01T00:00:03.000Z"]);

  const table = await observe("--server", a.addr.slice("unix:".length), "--verdict", "DROPPED");
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split("\n");
  assert.match(rows[0]!, /^TIME\s+NODE\s+SOURCE\s+DESTINATION/);
  assert.equal(rows.length, 2);
  assert.match(rows[1]!, /default\/client-1:40000 \(256\)\s+shop\/web-0:8080 \(256\)\s+TCP\s+DROPPED\s+drop\s+policy denied\s+NetworkPolicy shop\/deny spec\.ingressDeny\[0\]/);
});

test("bad flags and addresses fail naming the flag; an unreachable server names itself", async (t) => {
  const a = await startAgent(t, "node-a", []);
  const bad = await observe("--server", a.addr, "--verdict", "LOST");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--verdict: "LOST" is not FORWARDED or DROPPED/);
  const noServer = parseObserveArgs(["--verdict", "DROPPED"]);
  assert.ok(noServer.ok && noServer.value.servers.length === 0, "no --server: the agents are found in the cluster");
  const both = parseObserveArgs(["--server", a.addr, "--kubeconfig", "/x"]);
  assert.ok(!both.ok && /--kubeconfig: not together with --server/.test(both.error));
  const badServer = parseObserveArgs(["--server", "http://1.2.3.4:5"]);
  assert.ok(!badServer.ok && /--server: "http:\/\/1.2.3.4:5" is not unix:\/PATH, \/PATH or HOST:PORT/.test(badServer.error));
  const halfTls = parseObserveArgs(["--server", "relay:4245", "--tls-ca-cert-files", "/ca.crt"]);
  assert.ok(!halfTls.ok && /give all three/.test(halfTls.error));
  const missingTls = parseObserveArgs(["--server", "relay:4245", "--tls-ca-cert-files", "/nonexistent/ca.crt", "--tls-client-cert-file", "/x", "--tls-client-key-file", "/y"]);
  assert.ok(!missingTls.ok && /^--tls-ca-cert-files: ENOENT/.test(missingTls.error), missingTls.ok ? "" : missingTls.error);
  const badOutput = parseObserveArgs(["--server", a.addr, "-o", "yaml"]);
  assert.ok(!badOutput.ok && /-o: "yaml" is not table or json/.test(badOutput.error));
  await assert.rejects(observeHere("--server", "unix:/nonexistent/hubble.sock"), /unix:\/nonexistent\/hubble\.sock: .*(ENOENT|No connection established)/);
});

test("observe -f replays, then streams new matching flows from every server as they happen", async (t) => {
  const a = await startAgent(t, "node-a", [dropFlow({ node: "node-a", time: new Date(Date.now() - 60_000).toISOString() })]);
  const b = await startAgent(t, "node-b", []);
  const { child, out, err } = following(t, "--verdict", "DROPPED", "--server", a.addr, "--server", b.addr);
  const waitFor = async (n: number): Promise<Flow[]> => {
    const deadline = Date.now() + 60_000; // the CLI starts through tsx: seconds on a loaded machine
    while (Date.now() < deadline) {
      const lines = jsonLines(out());
      if (lines.length >= n) return lines;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.fail(`waited for ${n} flows, got: ${out()} ${err()}`);
  };
  assert.deepEqual((await waitFor(1)).map((f) => f.node), ["node-a"], "the buffer is replayed before following");
  // Give both follow streams time to be open before pushing.
  await new Promise((r) => setTimeout(r, 300));
  b.buffer.push(flow({ node: "node-b", time: new Date().toISOString() })); // forwarded: filtered out
  b.buffer.push(dropFlow({ node: "node-b", time: new Date().toISOString() }));
  a.buffer.push(dropFlow({ node: "node-a", time: new Date().toISOString(), destination: endpoint({ port: 9 }) }));
  // Printed while it follows (no wall-clock bound: on a loaded machine that measured the machine, not the stream).
  const got = await waitFor(3);
  assert.deepEqual(got.map((f) => `${f.node} ${f.verdict}`).sort(), ["node-a DROPPED", "node-a DROPPED", "node-b DROPPED"]);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGINT");
  assert.equal(await exited, 0);
});

test("observe -f says on stderr when a server tells it lost events (Hubble's LostEvent), and goes on", async (t) => {
  const a = await startAgent(t, "node-a", []);
  const { out, err } = following(t, "--server", a.addr);
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 60_000;
    while (!cond()) {
      if (Date.now() > deadline) assert.fail(`waited for ${what}: ${out()} ${err()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  // The stream is open once a flow pushed now arrives.
  await until(() => {
    if (out() === "") a.buffer.push(dropFlow({ node: "node-a", time: new Date().toISOString() }));
    return out() !== "";
  }, "the first flow");
  a.server.reportLost("PERF_EVENT_RING_BUFFER", 5, Date.now());
  await until(() => err().includes("EVENTS LOST"), "the lost events");
  assert.match(err(), /^membrane observe: EVENTS LOST: PERF_EVENT_RING_BUFFER 5 \(node node-a\)$/m);
  const before = jsonLines(out()).length;
  a.buffer.push(dropFlow({ node: "node-a", time: new Date().toISOString() }));
  await until(() => jsonLines(out()).length > before, "a flow after the loss");
  assert.ok(jsonLines(out()).every((f) => f.node === "node-a"), "no line for the loss on stdout");
});

test("a server that does not answer is reported on stderr and the others' flows are still shown", async (t) => {
  const a = await startAgent(t, "node-a", [dropFlow({ node: "node-a" })]);
  const dead = `unix:${path.join(os.tmpdir(), `membrane-no-hubble-${process.pid}.sock`)}`;
  const r = await observe("--server", dead, "--server", a.addr, "-o", "json");
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout).map((f) => f.node), ["node-a"]);
  assert.match(r.stderr, new RegExp(`${dead.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: .*its flows are missing`));
  const none = await observe("--server", dead);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no-hubble/);
});
