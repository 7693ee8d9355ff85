// The HTTP/1.1 proxy's own reading of the wire on loopback with a real upstream server: pipelined requests in order, smuggling shapes refused before anything reaches the server, interim answers and close-delimited responses relayed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS } from "./config.ts";

const PROXY_PORT = 21080 + (process.pid % 1000);
const flows: HttpFlow[] = [];
const seen: string[] = [];
let upstream: http.Server;
let upstreamPort = 0;
/** A raw upstream answering HTTP/1.0 style: no length, the body ends with the connection. */
let closing: net.Server;
let closingPort = 0;
let target = (): number => upstreamPort;

const proxy = new HttpProxy({
  redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: target(), proxyPort: PROXY_PORT, subject: 1000, ruleId: 3 }) },
  onFlow: (f) => flows.push(f),
  connectUpstream: (ip, port) => net.connect(port, ip),
});

before(async () => {
  upstream = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      seen.push(`${req.method} ${req.url} ${body}`);
      res.writeHead(200, { "content-length": String(Buffer.byteLength(`got ${req.url}`)) });
      res.end(`got ${req.url}`);
    });
  });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  closing = net.createServer((s) => {
    s.once("data", () => s.end("HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"));
  });
  closing.listen(0, "127.0.0.1");
  await once(closing, "listening");
  closingPort = (closing.address() as net.AddressInfo).port;
  await proxy.apply({
    address: "127.0.0.1",
    limits: { ...DEFAULT_LIMITS, idleTimeoutMs: 5000 },
    ports: [{ port: PROXY_PORT, http: [{ ruleId: 3, index: 0, rule: { method: "GET|POST", path: "/ok.*" } }] }],
  });
});

after(async () => {
  await proxy.stop();
  upstream.closeAllConnections();
  upstream.close();
  closing.close();
});

/** Writes `data` on a new connection and collects what comes back until it closes or `ms` pass. */
async function exchange(data: string, ms = 1500, until?: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  const socket = net.connect(PROXY_PORT, "127.0.0.1");
  let text = "";
  let closed = false;
  socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
  socket.on("close", () => (closed = true));
  socket.on("error", () => {});
  socket.write(data);
  for (let t = 0; t < ms && !closed && !until?.(text); t += 20) await new Promise((r) => setTimeout(r, 20));
  socket.destroy();
  return { text, closed };
}

const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

test("pipelined requests in one write are answered in order, a denied one among them, each reaching the server only if allowed", async () => {
  const before = seen.length;
  const r = await exchange(
    "GET /ok/1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /ok/2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET /no HTTP/1.1\r\nHost: a\r\n\r\nGET /ok/3 HTTP/1.1\r\nHost: a\r\n\r\n",
    3000,
    (t) => statuses(t).length === 4,
  );
  assert.deepEqual(statuses(r.text), [200, 200, 403, 200]);
  assert.match(r.text, /got \/ok\/1[\s\S]*got \/ok\/2[\s\S]*Access denied[\s\S]*got \/ok\/3/);
  assert.deepEqual(seen.slice(before), ["GET /ok/1 ", "POST /ok/2 body", "GET /ok/3 "]);
});

test("request smuggling is refused with 400 and the connection closed, nothing reaching the server, each with a refusal's flow: Content-Length with Transfer-Encoding, two Content-Lengths, a bare LF, obs-fold", async () => {
  const before = seen.length;
  const flowsBefore = flows.length;
  for (const head of [
    "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /no HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 30\r\n\r\n",
    "GET /ok HTTP/1.1\nHost: a\n\n",
    "GET /ok HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
  ]) {
    const r = await exchange(head);
    assert.match(r.text, /^HTTP\/1\.1 400 Bad Request\r\n/, JSON.stringify(head));
    assert.equal(r.closed, true, JSON.stringify(head));
  }
  assert.deepEqual(seen.slice(before), []);
  assert.deepEqual(
    flows.slice(flowsBefore).map((f) => [f.verdict, f.status, f.reason]),
    Array(4).fill(["denied", 400, "malformed HTTP/1.1 request"]),
  );
});

test("an escaped slash's 307 has a refusal's flow with its Location, the request never reaching the server", async () => {
  const before = seen.length;
  const r = await exchange("GET /ok%2Fx HTTP/1.1\r\nHost: a\r\n\r\n", 1500, (t) => t.includes("\r\n\r\n"));
  assert.match(r.text, /^HTTP\/1\.1 307 /);
  assert.deepEqual(seen.slice(before), []);
  const f = flows.find((x) => x.path === "/ok%2Fx");
  assert.deepEqual([f?.verdict, f?.status, f?.reason, f?.method], ["denied", 307, "escaped slash in the path: redirected to its unescaped path", "GET"]);
  assert.deepEqual(f?.responseHeaders?.[0], { name: "location", value: "/ok/x" });
});

test("an allowed chunked request whose framing turns invalid mid-body: the connection closes and no second request reaches the server", async () => {
  const before = seen.length;
  const r = await exchange("POST /ok/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\nxx\r\n0\r\n\r\nGET /ok/smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal(r.closed, true);
  assert.doesNotMatch(r.text, /got \/ok\/smuggled/);
  assert.deepEqual(seen.slice(before).filter((s) => s.includes("smuggled")), []);
});

test("a denied request's chunked body is read and dropped; the next request on the connection is served", async () => {
  const r = await exchange("POST /no HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\n\r\nGET /ok/after HTTP/1.1\r\nHost: a\r\n\r\n", 3000, (t) => statuses(t).length === 2);
  assert.deepEqual(statuses(r.text), [403, 200]);
  assert.match(r.text, /got \/ok\/after$/);
});

test("Expect: 100-continue on an allowed request: the server's 100 Continue reaches the client, then the final answer", async () => {
  const res = await new Promise<{ continued: boolean; status: number; text: string }>((resolve, reject) => {
    let continued = false;
    const req = http.request({ host: "127.0.0.1", port: PROXY_PORT, method: "POST", path: "/ok/expect", headers: { host: "a", expect: "100-continue", "content-length": "5" }, agent: false }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ continued, status: res.statusCode ?? 0, text }));
    });
    req.on("continue", () => {
      continued = true;
      req.end("hello");
    });
    req.on("error", reject);
  });
  assert.deepEqual(res, { continued: true, status: 200, text: "got /ok/expect" });
  assert.equal(seen.at(-1), "POST /ok/expect hello");
});

test("an HTTP/1.0 server's close-delimited response is relayed whole and the client's connection then closes; the flow says forwarded 200", async () => {
  target = () => closingPort;
  try {
    const r = await exchange("GET /ok/old HTTP/1.1\r\nHost: a\r\n\r\n", 3000);
    assert.match(r.text, /^HTTP\/1\.0 200 OK\r\n/);
    assert.match(r.text, /\r\nconnection: close\r\n/);
    assert.match(r.text, /\r\n\r\nuntil the end$/);
    assert.equal(r.closed, true);
    assert.deepEqual([flows.at(-1)?.verdict, flows.at(-1)?.status, flows.at(-1)?.path, flows.at(-1)?.protocol], ["forwarded", 200, "/ok/old", "HTTP/1.1"]);
  } finally {
    target = () => upstreamPort;
  }
});
