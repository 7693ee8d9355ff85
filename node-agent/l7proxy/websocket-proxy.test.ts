// WebSocket through the HTTP/1.1 proxy on loopback: Node's own WebSocket client, an RFC 6455 echo server; an upgrade the rules allow is joined, a denied one gets 403, a refused one never becomes a tunnel.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS } from "./config.ts";
import { attachWebSocketEcho } from "./testing/websocket-echo.ts";

const PROXY_PORT = 20080 + (process.pid % 1000);
const flows: HttpFlow[] = [];
const upgrades: string[] = [];
const requests: string[] = [];
let server: http.Server;
let serverPort = 0;

const proxy = new HttpProxy({
  redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: serverPort, proxyPort: PROXY_PORT, subject: 1000, ruleId: 3 }) },
  onFlow: (f) => flows.push(f),
  connectUpstream: (ip, port) => net.connect(port, ip),
});

before(async () => {
  server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.end("plain");
  });
  attachWebSocketEcho(server, (p) => upgrades.push(p));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  serverPort = (server.address() as net.AddressInfo).port;
  await proxy.apply({
    address: "127.0.0.1",
    limits: { ...DEFAULT_LIMITS, idleTimeoutMs: 1500 },
    ports: [{ port: PROXY_PORT, http: [{ ruleId: 3, index: 0, rule: { method: "GET", path: "/ws/(chat|refuse)" } }] }],
  });
});

after(async () => {
  await proxy.stop();
  server.closeAllConnections();
  server.close();
});

/** A raw client: writes, and collects what comes back until the connection closes or `ms` pass. */
async function raw(data: string, ms = 2000): Promise<{ text: string; closed: boolean; socket: net.Socket }> {
  const socket = net.connect(PROXY_PORT, "127.0.0.1");
  let text = "";
  let closed = false;
  socket.on("data", (d: Buffer) => (text += d.toString()));
  socket.on("close", () => (closed = true));
  socket.on("error", () => {});
  socket.write(data);
  for (let t = 0; t < ms && !closed; t += 20) await new Promise((r) => setTimeout(r, 20));
  return { text, closed, socket };
}

const HANDSHAKE = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

test("an upgrade the rules allow: Node's WebSocket client talks to the server through the proxy, and the flow says 101", async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${PROXY_PORT}/ws/chat`);
  const got: string[] = [];
  ws.addEventListener("message", (e) => got.push(String(e.data)));
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve());
    ws.addEventListener("error", () => reject(new Error("the WebSocket did not open")));
  });
  ws.send("hello");
  ws.send("x".repeat(1000));
  for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(got, ["echo: hello", `echo: ${"x".repeat(1000)}`]);
  const closed = new Promise((r) => ws.addEventListener("close", r));
  ws.close(1000);
  await closed;
  const f = flows.at(-1)!;
  assert.deepEqual([f.method, f.path, f.verdict, f.status, f.rule?.index], ["GET", "/ws/chat", "forwarded", 101, 0]);
});

test("a denied upgrade gets 403 Access denied, the connection closes, and the server never sees it", async () => {
  const before = upgrades.length;
  const r = await raw(HANDSHAKE("/ws/admin"));
  assert.match(r.text, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\nAccess denied$/);
  assert.equal(r.closed, true);
  assert.equal(upgrades.length, before);
  assert.deepEqual([flows.at(-1)?.path, flows.at(-1)?.verdict, flows.at(-1)?.status], ["/ws/admin", "denied", 403]);
});

test("an upgrade the server refuses: its answer reaches the client and the connection closes, so no later request passes unjudged", async () => {
  const before = requests.length;
  const r = await raw(`${HANDSHAKE("/ws/refuse")}GET /ws/smuggled HTTP/1.1\r\nHost: chat\r\n\r\n`);
  assert.match(r.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.match(r.text, /refused$/);
  assert.equal(r.closed, true);
  assert.deepEqual(requests.slice(before), [], "the request sent after the handshake reached nobody");
  assert.deepEqual([flows.at(-1)?.path, flows.at(-1)?.verdict, flows.at(-1)?.status], ["/ws/refuse", "forwarded", 400]);
});

test("a joined WebSocket idle past the idle timeout is closed", async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${PROXY_PORT}/ws/chat`);
  await once(ws as unknown as EventTarget, "open");
  const t0 = Date.now();
  await once(ws as unknown as EventTarget, "close");
  const took = Date.now() - t0;
  assert.ok(took >= 1200 && took < 5000, `closed after ${took} ms (idle timeout 1500 ms)`);
});

test("a plain request on the same port is still plain HTTP/1.1", async () => {
  const res = await fetch(`http://127.0.0.1:${PROXY_PORT}/ws/chat`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "plain");
});

test("a port the configuration drops takes its joined WebSockets with it", async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${PROXY_PORT}/ws/chat`);
  await once(ws as unknown as EventTarget, "open");
  const closed = once(ws as unknown as EventTarget, "close");
  const t0 = Date.now();
  await proxy.apply({ address: "127.0.0.1", limits: { ...DEFAULT_LIMITS, idleTimeoutMs: 1500 }, ports: [] });
  await closed;
  assert.ok(Date.now() - t0 < 1000, `closed after ${Date.now() - t0} ms`);
});
