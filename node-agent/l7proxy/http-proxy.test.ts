// The HTTP/1.1 proxy on loopback with a real upstream server: verdicts, keep-alive after a denial, streaming, limits. The datapath's redirect is the kernel test's (l7-proxy.test.ts).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { spawn } from "node:child_process";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, parseProxyConfig, type ProxyConfig } from "./config.ts";
import { httpFlows } from "./http-flows.ts";
import { DEFAULT_HTTP_REDACTION } from "../../core/l7/redaction.ts";

const PROXY_PORT = 18080 + (process.pid % 1000);
const flows: HttpFlow[] = [];
let upstreamPort = 0;
let upstream: http.Server;
let upstreamConnections = 0;
let hold: (() => void) | undefined;
const BIG_TOTAL = 128 << 20;
let bigWritten = 0;
const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: number }[] = [];

// Every loopback client "was going to" the upstream server: what the datapath's record would say.
const records = { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPort, proxyPort: PROXY_PORT, subject: 1000, ruleId: 3 }) };
let recordsOn = true;
const proxy = new HttpProxy({
  redirects: { originalDestination: () => (recordsOn ? records.originalDestination() : undefined) },
  onFlow: (f) => flows.push(f),
  // Loopback needs no mark; the marked socket is the kernel test's.
  connectUpstream: (ip, port) => net.connect(port, ip),
});

const CONFIG: ProxyConfig = {
  address: "127.0.0.1",
  limits: { ...DEFAULT_LIMITS, maxHeaderBytes: 4096, headersTimeoutMs: 600, idleTimeoutMs: 1500 },
  ports: [
    {
      port: PROXY_PORT,
      http: [
        { ruleId: 3, index: 0, rule: { method: "POST", path: "/v1/request-landing" } },
        { ruleId: 3, index: 1, rule: { method: "GET|POST", path: "/stream/.*" } },
        { ruleId: 3, index: 2, rule: { method: "GET", path: "/headers", headerMatches: [{ name: "X-Role", value: "pilot", mismatch: "REPLACE" }] } },
      ],
    },
  ],
};

before(async () => {
  upstream = http.createServer((req, res) => {
    let body = 0;
    req.on("data", (d: Buffer) => (body += d.length));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (req.url === "/stream/hold") {
        // One chunk now, the rest when the test says: the client must see the first before the end.
        res.writeHead(200, { "transfer-encoding": "chunked", trailer: "x-checksum" });
        res.write("first;");
        hold = () => {
          res.addTrailers({ "x-checksum": "abc" });
          res.end("last");
        };
        return;
      }
      if (req.url === "/stream/big") {
        const chunk = Buffer.alloc(1 << 20, 120);
        let left = BIG_TOTAL / chunk.length;
        res.writeHead(200, { "content-length": String(BIG_TOTAL) });
        const pump = (): void => {
          while (left > 0) {
            left--;
            bigWritten += chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
          res.end();
        };
        return pump();
      }
      const text = `ship landed (${body} bytes)`;
      const cookie = req.headers["x-want-cookie"] !== undefined ? { "set-cookie": "session=s3cret-cookie", "x-served-by": "deathstar" } : {};
      res.writeHead(200, { "content-type": "text/plain", "content-length": String(Buffer.byteLength(text)), connection: "keep-alive", "keep-alive": "timeout=5", ...cookie });
      res.end(text);
    });
  });
  upstream.on("connection", () => upstreamConnections++);
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  await proxy.apply(CONFIG);
});

after(async () => {
  await proxy.stop();
  upstream.closeAllConnections();
  upstream.close();
});

/** A raw client connection: write requests, read what comes back. */
class RawClient {
  readonly socket: net.Socket;
  buf = "";
  closed = false;
  constructor(port = PROXY_PORT) {
    this.socket = net.connect(port, "127.0.0.1");
    this.socket.on("data", (d: Buffer) => (this.buf += d.toString("latin1")));
    this.socket.on("close", () => (this.closed = true));
    this.socket.on("error", () => {});
  }
  async response(): Promise<{ status: number; headers: string; body: string }> {
    for (let i = 0; i < 200; i++) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = this.buf.slice(0, end);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? -1);
        if (len >= 0 && this.buf.length >= end + 4 + len) {
          const body = this.buf.slice(end + 4, end + 4 + len);
          this.buf = this.buf.slice(end + 4 + len);
          return { status: Number(head.split(" ")[1]), headers: head, body };
        }
      }
      if (this.closed) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no complete response: ${JSON.stringify(this.buf)}`);
  }
  async waitClosed(ms: number): Promise<boolean> {
    for (let t = 0; t < ms && !this.closed; t += 20) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }
}

test("a denied request gets 403 'Access denied' and the same connection then carries an allowed one", async () => {
  const c = new RawClient();
  const before = seen.length;
  c.socket.write("PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 5\r\n\r\nboom!");
  const denied = await c.response();
  assert.equal(denied.status, 403);
  assert.equal(denied.body, "Access denied");
  c.socket.write("POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 3\r\n\r\nabc");
  const allowed = await c.response();
  assert.equal(allowed.status, 200);
  assert.equal(allowed.body, "ship landed (3 bytes)");
  assert.equal(c.closed, false, "the connection stays open");
  assert.deepEqual(seen.slice(before).map((s) => `${s.method} ${s.url}`), ["POST /v1/request-landing"], "the denied request never reached the server");
  const last = flows.slice(-2);
  assert.deepEqual(last.map((f) => [f.verdict, f.status, f.rule?.index]), [["denied", 403, undefined], ["forwarded", 200, 0]]);
  assert.equal(last[1]!.source.identity, 1000);
  c.socket.destroy();
});

test("the response's headers are recorded (the destination's end-to-end ones, the proxy's own for a 403) and the L7 response flow shows them after the request's, Set-Cookie redacted", async () => {
  const c = new RawClient();
  c.socket.write("POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nX-Want-Cookie: 1\r\nContent-Length: 0\r\n\r\n");
  assert.equal((await c.response()).status, 200);
  const allowed = flows.at(-1)!;
  assert.deepEqual(allowed.responseHeaders?.filter((h) => h.name !== "date"), [
    { name: "content-type", value: "text/plain" },
    { name: "content-length", value: "21" },
    { name: "set-cookie", value: "session=s3cret-cookie" },
    { name: "x-served-by", value: "deathstar" },
  ], "connection and keep-alive end at the proxy");
  const lookups = { node: "n1", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: () => new Date() };
  const [req, res] = httpFlows(allowed, lookups, DEFAULT_HTTP_REDACTION);
  const shown = (f: typeof req) => (f!.l7?.http?.headers ?? []).filter((h) => h.key !== "date").map((h) => `${h.key}: ${h.value}`);
  assert.deepEqual(shown(req), ["content-length: 0", "host: deathstar", "x-want-cookie: 1"]);
  assert.deepEqual(shown(res), ["content-length: 0", "host: deathstar", "x-want-cookie: 1", "content-length: 21", "content-type: text/plain", "set-cookie: HUBBLE_REDACTED", "x-served-by: deathstar"]);
  assert.doesNotMatch(JSON.stringify([req, res]), /s3cret-cookie/);
  c.socket.write("PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n");
  assert.equal((await c.response()).status, 403);
  assert.deepEqual(flows.at(-1)!.responseHeaders, [{ name: "content-type", value: "text/plain" }, { name: "content-length", value: "13" }]);
  c.socket.destroy();
});

test("path and method match the whole value: a longer path or another method is denied", async () => {
  const c = new RawClient();
  for (const [line, status] of [
    ["POST /v1/request-landing/x", 403],
    ["POST /v1/request-landingx", 403],
    ["GET /v1/request-landing", 403],
    ["PATCH /stream/a", 403],
    ["GET /stream/", 200],
    ["POST /v1/request-landing", 200],
  ] as const) {
    c.socket.write(`${line} HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n`);
    assert.equal((await c.response()).status, status, line);
  }
  c.socket.destroy();
});

test("an allowed request's headers arrive as sent, hop-by-hop fields dropped, a REPLACE mismatch applied", async () => {
  const res = await fetchVia("/headers", { "x-role": "stormtrooper", "x-custom": "kept", connection: "x-drop", "x-drop": "1" });
  assert.equal(res.status, 200);
  const s = seen.at(-1)!;
  assert.equal(s.headers.host, "deathstar");
  assert.equal(s.headers["x-custom"], "kept");
  assert.equal(s.headers["x-role"], "pilot", "REPLACE put the rule's value");
  assert.equal(s.headers["x-drop"], undefined, "a field the Connection header names is hop-by-hop");
  assert.notEqual(res.headers.get("keep-alive"), "timeout=5", "the upstream's Keep-Alive is not forwarded (the proxy's own is)");
  assert.deepEqual(flows.at(-1)?.mismatches, [{ name: "x-role", action: "REPLACE" }]);
});

async function fetchVia(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: PROXY_PORT, path, headers: { host: "deathstar", ...headers }, agent: false }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: new Headers(res.headers as Record<string, string>), text }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("a chunked response streams through (the first chunk arrives before the server ends) with its trailers", async () => {
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const r = http.request({ host: "127.0.0.1", port: PROXY_PORT, path: "/stream/hold", headers: { host: "deathstar" }, agent: false }, resolve);
    r.on("error", reject);
    r.end();
  });
  assert.equal(res.headers["transfer-encoding"], "chunked");
  const [first] = (await once(res, "data")) as [Buffer];
  assert.equal(first.toString(), "first;", "the first chunk, while the server still holds the rest");
  let rest = "";
  res.on("data", (d: Buffer) => (rest += d.toString()));
  hold!();
  await once(res, "end");
  assert.equal(rest, "last");
  assert.deepEqual(res.trailers, { "x-checksum": "abc" });
});

test("a chunked request body streams to the server before the client has finished sending it", async () => {
  const got = new Promise<number>((resolve) => {
    upstream.once("request", (req: http.IncomingMessage) => req.once("data", (d: Buffer) => resolve(d.length)));
  });
  const c = new RawClient();
  c.socket.write("POST /stream/upload HTTP/1.1\r\nHost: deathstar\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  assert.equal(await got, 5, "the first chunk reached the server while the request is still open");
  c.socket.write("0\r\n\r\n");
  assert.equal((await c.response()).status, 200);
  c.socket.destroy();
});

test("a large response is not held by the proxy: a client that stops reading stops the server's writes (backpressure)", async () => {
  bigWritten = 0;
  let bytes = 0;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: PROXY_PORT, path: "/stream/big", headers: { host: "deathstar" }, agent: false }, resolve).on("error", reject);
  });
  res.pause();
  await new Promise((r) => setTimeout(r, 1000));
  const whilePaused = bigWritten;
  assert.ok(whilePaused < BIG_TOTAL / 2, `the server got ${(whilePaused / 1048576).toFixed(1)} MiB of ${BIG_TOTAL / 1048576} MiB out while the client read nothing`);
  res.on("data", (d: Buffer) => (bytes += d.length));
  res.resume();
  await once(res, "end");
  assert.equal(bytes, BIG_TOTAL, "and all of it arrives once the client reads");
});

test("a client that half-closes after its request (printf | nc) gets the answer, allowed or denied, then the connection ends", async () => {
  const allowed = new RawClient();
  allowed.socket.end("POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\n\r\nship");
  const ok = await allowed.response();
  assert.equal(ok.status, 200);
  assert.equal(ok.body, "ship landed (4 bytes)");
  assert.equal(await allowed.waitClosed(2000), true, "the proxy ends the connection after answering");
  const denied = new RawClient();
  denied.socket.end("PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n");
  const no = await denied.response();
  assert.equal(no.status, 403);
  assert.equal(no.body, "Access denied");
});

test("a request head over the header limit gets 431 and the connection closes", async () => {
  const c = new RawClient();
  c.socket.write(`GET /stream/a HTTP/1.1\r\nHost: deathstar\r\nX-Big: ${"a".repeat(8000)}\r\n\r\n`);
  assert.match(await waitFor(() => c.buf, 3000), /^HTTP\/1\.1 431/);
  assert.equal(await c.waitClosed(2000), true);
});

async function waitFor(get: () => string, ms: number): Promise<string> {
  for (let t = 0; t < ms && !get(); t += 20) await new Promise((r) => setTimeout(r, 20));
  return get();
}

test("slowloris: a head sent byte by byte is cut at the header timeout while other clients are served", async () => {
  const slow = new RawClient();
  const head = "GET /stream/a HTTP/1.1\r\nHost: deathstar\r\nX-Slow: 1\r\n\r\n";
  let i = 0;
  const drip = setInterval(() => {
    if (i < head.length && !slow.closed) slow.socket.write(head[i++]!);
  }, 100);
  try {
    const started = Date.now();
    assert.equal((await fetchVia("/stream/ok")).status, 200, "another client is served meanwhile");
    assert.equal(await slow.waitClosed(4000), true, "the slow connection is closed");
    const took = Date.now() - started;
    assert.ok(took < 3000, `closed after ${took} ms (timeout 600 ms)`);
    assert.ok(i < head.length, "before its head was complete");
  } finally {
    clearInterval(drip);
  }
});

test("an idle keep-alive connection is closed after the idle timeout", async () => {
  const c = new RawClient();
  c.socket.write("GET /stream/a HTTP/1.1\r\nHost: deathstar\r\n\r\n");
  assert.equal((await c.response()).status, 200);
  assert.equal(await c.waitClosed(800), false, "still open well inside the timeout");
  assert.equal(await c.waitClosed(4000), true, "closed after it");
});

test("a connection the datapath has no record of is closed without an answer (fail closed)", async () => {
  recordsOn = false;
  const before = upstreamConnections;
  try {
    const c = new RawClient();
    c.socket.write("GET /stream/a HTTP/1.1\r\nHost: deathstar\r\n\r\n");
    assert.equal(await c.waitClosed(2000), true);
    assert.equal(c.buf, "");
    assert.equal(upstreamConnections, before);
  } finally {
    recordsOn = true;
  }
});

test("new rules apply to the next request of an open connection", async () => {
  const c = new RawClient();
  c.socket.write("GET /stream/a HTTP/1.1\r\nHost: deathstar\r\n\r\n");
  assert.equal((await c.response()).status, 200);
  await proxy.apply({ ...CONFIG, ports: [{ port: PROXY_PORT, http: [{ ruleId: 4, index: 0, rule: { path: "/only" } }] }] });
  try {
    c.socket.write("GET /stream/a HTTP/1.1\r\nHost: deathstar\r\n\r\n");
    assert.equal((await c.response()).status, 403);
  } finally {
    await proxy.apply(CONFIG);
    c.socket.destroy();
  }
});

test("an upstream whose SYN is dropped: the client gets 504 at the connect timeout, not a hang", async () => {
  // A real listener with a full accept queue (listen(0), never accepting, one connection queued):
  // the kernel drops the next SYN, as a firewall that drops would.
  const listener = spawn("python3", ["-c", 'import socket,sys\ns=socket.socket();s.bind(("127.0.0.1",0));s.listen(0);print(s.getsockname()[1],flush=True);sys.stdin.read()'], { stdio: ["pipe", "pipe", "inherit"] });
  const filler: net.Socket[] = [];
  // Limits take effect when the proxy starts: a proxy of its own with a short connect timeout.
  const port = PROXY_PORT + 1;
  let upstreamPort = 0;
  const timeoutFlows: HttpFlow[] = [];
  const p = new HttpProxy({
    redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPort, proxyPort: port, subject: 1000, ruleId: 3 }) },
    onFlow: (f) => timeoutFlows.push(f),
    connectUpstream: (ip, dport) => net.connect(dport, ip),
  });
  try {
    const [line] = (await once(listener.stdout!, "data")) as [Buffer];
    upstreamPort = Number(line.toString().trim());
    const s = net.connect(upstreamPort, "127.0.0.1");
    filler.push(s);
    await once(s, "connect");
    await p.apply({ ...CONFIG, limits: { ...CONFIG.limits, connectTimeoutMs: 400 }, ports: [{ ...CONFIG.ports[0]!, port }] });
    const c = new RawClient(port);
    const t0 = Date.now();
    c.socket.write("GET /stream/a HTTP/1.1\r\nHost: deathstar\r\n\r\n");
    const r = await c.response();
    const took = Date.now() - t0;
    c.socket.destroy();
    assert.equal(r.status, 504);
    assert.ok(took >= 350 && took < 3000, `answered after ${took} ms`);
    assert.equal(timeoutFlows.length, 1);
    assert.equal(timeoutFlows[0]!.status, 504);
    assert.equal(timeoutFlows[0]!.verdict, "error");
    assert.equal(timeoutFlows[0]!.destination.port, upstreamPort);
  } finally {
    for (const s of filler) s.destroy();
    listener.kill();
    await p.stop();
  }
});

test("the configuration file: every error names its field", () => {
  const r = parseProxyConfig(JSON.stringify({
    address: "10.0.0.300",
    limits: { idleTimeoutMs: 0, nope: 1 },
    ports: [{ port: 70000, http: [{ ruleId: 1, index: 0, rule: { path: "a(", headerMatches: [{ name: "", mismatch: "DROP" }] } }] }, { port: 80, http: {} }],
  }));
  assert.equal(r.ok, false);
  const paths = r.ok ? [] : r.errors.map((e) => e.path);
  assert.deepEqual(paths, [
    "address",
    "limits.nope",
    "limits.idleTimeoutMs",
    "ports[0].port",
    "ports[0].http[0].rule.path",
    "ports[0].http[0].rule.headerMatches[0].name",
    "ports[0].http[0].rule.headerMatches[0].mismatch",
    "ports[1].http",
  ]);
  const notBoolean = parseProxyConfig(JSON.stringify({ ...CONFIG, httpNormalizePath: "no" }));
  assert.deepEqual(notBoolean.ok ? [] : notBoolean.errors, [{ path: "httpNormalizePath", message: '"no" is not true or false' }]);
  const ok = parseProxyConfig(JSON.stringify(CONFIG));
  assert.ok(ok.ok);
  assert.deepEqual(ok.value, CONFIG);
});
