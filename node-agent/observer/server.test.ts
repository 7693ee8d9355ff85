// The observer API and `membrane observe` end to end over a local unix socket: filters, two servers, follow.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { FlowBuffer } from "./buffer.ts";
import { ObserverServer } from "./server.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import type { Flow } from "../../flowapi/flow.ts";
import { observe as observeIn, parseObserveArgs } from "../../cli/observe.ts";
import { readFlows } from "../../flowapi/client.ts";
import { parseFilterArgs } from "../../flowapi/filter.ts";

const membrane = fileURLToPath(new URL("../../bin/membrane", import.meta.url));

async function startObserver(t: test.TestContext, name: string, flows: Flow[]): Promise<{ buffer: FlowBuffer; addr: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observer-"));
  const buffer = new FlowBuffer({ capacity: 1000 });
  for (const f of flows) buffer.push(f);
  const server = new ObserverServer(buffer);
  const addr = await server.start({ socketPath: path.join(dir, `${name}.sock`) });
  t.after(async () => {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { buffer, addr };
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

const jsonLines = (s: string): Flow[] => s.trimEnd().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Flow);

test("observe merges two agents' flows by time and applies filters and --last", async (t) => {
  const a = await startObserver(t, "a", [
    flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a" }),
    dropFlow({ time: "2026-01-01T00:00:03.000Z", node: "node-a", destination: endpoint({ namespace: "shop", pod: "web-0", port: 8080 }) }),
  ]);
  const b = await startObserver(t, "b", [
    dropFlow({ time: "2026-01-01T00:00:02.000Z", node: "node-b" }),
    flow({ time: "2026-01-01T00:00:04.000Z", node: "node-b", protocol: "UDP" }),
  ]);
  const all = await observeHere("--server", a.addr, "--server", b.addr, "-o", "json");
  assert.deepEqual(jsonLines(all).map((f) => `${f.node} ${f.verdict}`), ["node-a FORWARDED", "node-b DROPPED", "node-a DROPPED", "node-b FORWARDED"]);

  const drops = await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--verdict", "DROPPED", "--to-pod", "shop/web-0", "--port", "8080");
  assert.deepEqual(jsonLines(drops).map((f) => f.node), ["node-a"]);

  const last = await observeHere("--server", a.addr, "--server", b.addr, "-o", "json", "--last", "2");
  assert.deepEqual(jsonLines(last).map((f) => f.time), ["2026-01-01T00:00:03.000Z", "2026-01-01T00:00:04.000Z"]);

  const table = await observe("--server", a.addr, "--verdict", "DROPPED");
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split("\n");
  assert.match(rows[0]!, /^TIME\s+NODE\s+SOURCE\s+DESTINATION/);
  assert.equal(rows.length, 2);
  assert.match(rows[1]!, /default\/client-1:40000 \(256\)\s+shop\/web-0:8080 \(256\)\s+TCP\s+DROPPED\s+drop\s+policy denied \(default deny\)\s+default deny/);
});

test("bad filters and addresses fail with the flag named, from the CLI and from the API", async (t) => {
  const a = await startObserver(t, "a", []);
  const bad = await observe("--server", a.addr, "--verdict", "LOST");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--verdict: "LOST" is not FORWARDED or DROPPED/);
  const noServer = parseObserveArgs(["--verdict", "DROPPED"]);
  assert.ok(noServer.ok && noServer.value.servers.length === 0, "no --server: the agents are found in the cluster");
  const both = parseObserveArgs(["--server", a.addr, "--kubeconfig", "/x"]);
  assert.ok(!both.ok && /--kubeconfig: not together with --server/.test(both.error));
  const badServer = parseObserveArgs(["--server", "tcp://1.2.3.4:5"]);
  assert.ok(!badServer.ok && /--server: "tcp:\/\/1.2.3.4:5" is not unix:\/PATH/.test(badServer.error));
  const badOutput = parseObserveArgs(["--server", a.addr, "-o", "yaml"]);
  assert.ok(!badOutput.ok && /-o: "yaml" is not table or json/.test(badOutput.error));
  await assert.rejects(observeHere("--server", "unix:/nonexistent/observer.sock"), /unix:\/nonexistent\/observer.sock: .*ENOENT/);
  const body = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    http
      .get({ socketPath: a.addr.slice(5), path: "/flows?port=x" }, (res) => {
        let s = "";
        res.on("data", (c: Buffer) => (s += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: s }));
      })
      .on("error", reject);
  });
  assert.equal(body.status, 400);
  assert.match(body.body, /--port: \\"x\\" is not a port/);
});

test("observe -f replays, then streams new matching flows from every server as they happen", async (t) => {
  const a = await startObserver(t, "a", [dropFlow({ node: "node-a", time: new Date().toISOString() })]);
  const b = await startObserver(t, "b", []);
  const child = spawn(membrane, ["observe", "-f", "-o", "json", "--verdict", "DROPPED", "--server", a.addr, "--server", b.addr], { stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const waitFor = async (n: number): Promise<Flow[]> => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const lines = jsonLines(out);
      if (lines.length >= n) return lines;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.fail(`waited for ${n} flows, got: ${out} ${err}`);
  };
  assert.deepEqual((await waitFor(1)).map((f) => f.node), ["node-a"]);
  // Give both follow streams time to be open before pushing.
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  b.buffer.push(flow({ node: "node-b", time: new Date().toISOString() })); // forwarded: filtered out
  b.buffer.push(dropFlow({ node: "node-b", time: new Date().toISOString() }));
  a.buffer.push(dropFlow({ node: "node-a", time: new Date().toISOString(), destination: endpoint({ port: 9 }) }));
  const got = await waitFor(3);
  assert.ok(Date.now() - t0 < 1000, `new drops took ${Date.now() - t0} ms to show`);
  assert.deepEqual(got.map((f) => `${f.node} ${f.verdict}`).sort(), ["node-a DROPPED", "node-a DROPPED", "node-b DROPPED"]);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGINT");
  assert.equal(await exited, 0);
});

test("the agent-side Observer turns events into flows a client reads, and exports them", async (t) => {
  const { Observer } = await import("./observer.ts");
  const { default: pino } = await import("pino");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observer-"));
  const obs = new Observer({
    lookups: {
      node: "node-a",
      identityLabels: (id) => (id === 300 ? ["k8s:app=web"] : undefined),
      endpointByIp: (ip) => (ip === "10.0.1.5" ? { namespace: "shop", pod: "web-0" } : undefined),
      ruleOrigin: () => undefined,
      wallClock: () => new Date("2026-01-01T00:00:00Z"),
    },
    buffer: { capacity: 100, forwardedSampleMs: 1000 },
    listen: { socketPath: path.join(dir, "observer.sock") },
    export: { path: path.join(dir, "flows.jsonl"), maxBytes: 1 << 20, keep: 2 },
    log: pino({ level: "silent" }),
  });
  await obs.start();
  t.after(async () => {
    await obs.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  obs.handle({ timestampNs: 1n, verdict: "dropped", direction: "ingress", ctState: "new", tcpFlags: 2, reasonCode: 2, reason: "policy denied (default deny)", proto: 6, srcIdentity: 2, dstIdentity: 300, ifindex: 3, src: "192.0.2.1", dst: "10.0.1.5", sport: 1234, dport: 443 });
  const got = jsonLines(await observeHere("--server", obs.address, "-o", "json", "--to-pod", "shop/web-0", "--verdict", "DROPPED"));
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.decidedBy, { kind: "default-deny" });
  assert.deepEqual(got[0]!.destination.labels, ["k8s:app=web"]);
  await obs.stop();
  assert.deepEqual(jsonLines(fs.readFileSync(path.join(dir, "flows.jsonl"), "utf8")), got);
});

test("an observer that does not answer is reported on stderr and the others' flows are still shown", async (t) => {
  const a = await startObserver(t, "a", [dropFlow({ node: "node-a" })]);
  const dead = `unix:${path.join(os.tmpdir(), `membrane-no-observer-${process.pid}.sock`)}`;
  const r = await observe("--server", dead, "--server", a.addr, "-o", "json");
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(jsonLines(r.stdout).map((f) => f.node), ["node-a"]);
  assert.match(r.stderr, new RegExp(`${dead.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: connect ENOENT .*its flows are missing`));
  const none = await observe("--server", dead);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /ENOENT/);
});

test("an observer that accepts but never answers counts as not answering, after the timeout", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observer-"));
  const silent = http.createServer(() => {}); // never answers
  const socketPath = path.join(dir, "silent.sock");
  await new Promise<void>((resolve) => silent.listen(socketPath, resolve));
  t.after(async () => {
    silent.closeAllConnections();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const a = await startObserver(t, "a", [dropFlow({ node: "node-a" })]);
  const noFilter = parseFilterArgs([]);
  assert.ok(noFilter.ok);
  await assert.rejects(readFlows(`unix:${socketPath}`, noFilter.filter, false, () => {}, undefined, 200), /no answer within 200 ms/);
  assert.equal(jsonLines(await observeHere("--server", a.addr, "-o", "json")).length, 1, "the answering observer still answers");
});
