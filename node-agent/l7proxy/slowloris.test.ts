// Slowloris against the L7 proxy in a process of its own on loopback: N connections sending their request head one byte a second do not stop another client's requests, the proxy's memory stays bounded, and each is cut at the head timeout without reaching the server (make test-l7-slowloris: 1,000).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { once } from "node:events";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DEFAULT_LIMITS } from "./config.ts";

const N = Number(process.env.SLOWLORIS_CONNECTIONS ?? 200);
const PROXY_PORT = 19080 + (process.pid % 500);
const HERE = path.dirname(fileURLToPath(import.meta.url));
// Generous for a shared machine, yet far below what N connections each holding a request's worth of buffers would take.
const RSS_BOUND = (40 << 20) + N * (32 << 10);

let upstream: http.Server;
let proxy: ChildProcess | undefined;
const slowSeen: string[] = [];

before(async () => {
  upstream = http.createServer((req, res) => {
    if (req.headers["x-slow"] !== undefined) slowSeen.push(req.url ?? "");
    res.writeHead(200, { "content-length": "2" });
    res.end("ok");
  });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  proxy = spawn(process.execPath, ["--import", "tsx", path.join(HERE, "testing/loopback-proxy.ts"), String(PROXY_PORT), String(upstreamPort)], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  proxy.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  for (let t = 0; !out.includes("ready"); t += 50) {
    assert.ok(t < 30_000 && proxy.exitCode === null, `the proxy did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  if (proxy?.pid !== undefined && proxy.exitCode === null) {
    proxy.kill("SIGTERM");
    const gone = await Promise.race([once(proxy, "exit").then(() => true), new Promise((r) => setTimeout(() => r(false), 3000))]);
    if (!gone) proxy.kill("SIGKILL");
  }
  upstream.closeAllConnections();
  upstream.close();
});

const rss = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;

/** One plain request through the proxy on a new connection: its status and how long it took. */
function request(): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: PROXY_PORT, path: "/fast", agent: false, headers: { host: "deathstar" }, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve({ status: 0, ms: performance.now() - started }));
  });
}

interface Slow {
  readonly socket: net.Socket;
  got: string;
  closedAt?: number;
}

test(`${N} connections sending their head one byte a second: another client's requests are all served, the proxy's memory stays bounded, each slow connection is cut at the head timeout (408) and none reaches the server`, { timeout: 90_000 }, async () => {
  const pid = proxy!.pid!;
  const baseline = rss(pid);
  const head = "GET /slow HTTP/1.1\r\nHost: deathstar\r\nX-Slow: 1\r\nX-Padding: " + "a".repeat(64) + "\r\n\r\n";
  const slow: Slow[] = [];
  // Opened in batches so the listen backlog never overflows (that would be the kernel's refusal, not the proxy's).
  for (let i = 0; i < N; i += 100) {
    const batch = Array.from({ length: Math.min(100, N - i) }, () => {
      const s: Slow = { socket: net.connect(PROXY_PORT, "127.0.0.1"), got: "" };
      s.socket.on("data", (d: Buffer) => (s.got += d.toString("latin1")));
      s.socket.on("close", () => (s.closedAt ??= Date.now()));
      s.socket.on("error", () => {});
      slow.push(s);
      return once(s.socket, "connect");
    });
    await Promise.all(batch);
  }
  const started = Date.now();
  let sent = 0;
  const drip = setInterval(() => {
    for (const s of slow) if (s.closedAt === undefined && sent < head.length) s.socket.write(head[sent]!);
    sent++;
  }, 1000);
  let maxRss = rss(pid);
  const sampler = setInterval(() => (maxRss = Math.max(maxRss, rss(pid))), 250);
  const served: { status: number; ms: number }[] = [];
  try {
    // Another client, a new connection every 250 ms, until every slow connection is gone (or long after the head timeout).
    const deadline = started + DEFAULT_LIMITS.headersTimeoutMs + 8000;
    while (Date.now() < deadline && slow.some((s) => s.closedAt === undefined)) {
      served.push(await request());
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    clearInterval(drip);
    clearInterval(sampler);
  }
  const open = slow.filter((s) => s.closedAt === undefined).length;
  const cutAt = slow.map((s) => (s.closedAt ?? Date.now()) - started).sort((a, b) => a - b);
  const with408 = slow.filter((s) => s.got.startsWith("HTTP/1.1 408")).length;
  for (const s of slow) s.socket.destroy();
  const growth = maxRss - baseline;
  const worst = Math.max(...served.map((r) => r.ms));
  process.stdout.write(`# slowloris: ${N} connections, ${served.length} other requests (worst ${worst.toFixed(0)} ms), proxy RSS ${(baseline / 2 ** 20).toFixed(1)} MB → max ${(maxRss / 2 ** 20).toFixed(1)} MB, cut between ${cutAt[0]} and ${cutAt[cutAt.length - 1]} ms, ${with408} answered 408\n`);

  assert.ok(served.length >= 20, `only ${served.length} requests of the other client`);
  assert.deepEqual(served.filter((r) => r.status !== 200), [], "every request of the other client is served");
  assert.ok(worst < 2000, `the other client's worst request took ${worst.toFixed(0)} ms`);
  assert.equal(open, 0, "every slow connection is closed by the proxy");
  assert.ok(cutAt[0]! >= DEFAULT_LIMITS.headersTimeoutMs - 1500, `a slow connection was cut after ${cutAt[0]} ms, before the head timeout`);
  assert.ok(with408 >= N * 0.95, `${with408} of ${N} slow connections were answered 408`);
  assert.deepEqual(slowSeen, [], "no slow request reached the server");
  assert.ok(growth < RSS_BOUND, `the proxy's RSS grew by ${(growth / 2 ** 20).toFixed(1)} MB (bound ${(RSS_BOUND / 2 ** 20).toFixed(1)} MB)`);
});
