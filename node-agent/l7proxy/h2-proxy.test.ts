// The proxy's HTTP/2 side on loopback with real servers: a gRPC door manager (@grpc/grpc-js) and a plain HTTP/2 server; verdicts per stream, streaming, trailers, resets, limits. Real packets through the datapath: grpc-l7.test.ts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { once } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, type ProxyConfig } from "./config.ts";
import { httpFlows } from "./http-flows.ts";
import { REFUSAL_REASON } from "./request-flow.ts";
import { DEFAULT_HTTP_REDACTION } from "../../core/l7/redaction.ts";
import { DOOR_MANAGER, doormanClient, serveDoorman } from "./testing/doorman.ts";
import { h2c, request } from "./testing/h2c-client.ts";

const GRPC_PORT = 19080 + (process.pid % 1000);
const H2_PORT = GRPC_PORT + 1000;
const GRPC_RULE = 5;
const H2_RULE = 6;
const flows: HttpFlow[] = [];
const doormanCalls: { method: string; peer: string }[] = [];
let doorman: grpc.Server;
let doormanPort = 0;
let h2server: http2.Http2Server;
let h2serverPort = 0;
const h2seen: { path: string; headers: http2.IncomingHttpHeaders; body: number; trailers?: http2.IncomingHttpHeaders }[] = [];
const BIG_TOTAL = 64 << 20;
let bigWritten = 0;
let release: (() => void) | undefined;
let aborted = 0;
let upstreamDown = false;

/** A proxy whose every client "was going to" `upstream()`: what the datapath's record would say (one proxy a port, so the record is fixed). */
function proxyTo(proxyPort: number, upstream: () => number, ruleId: number): HttpProxy {
  return new HttpProxy({
    redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstream(), proxyPort, subject: 1000, ruleId }) },
    onFlow: (f) => flows.push(f),
    // Loopback needs no mark; port 1 stands for a destination that refuses.
    connectUpstream: (ip, port) => net.connect(upstreamDown ? 1 : port, ip),
  });
}
const grpcProxy = proxyTo(GRPC_PORT, () => doormanPort, GRPC_RULE);
const h2Proxy = proxyTo(H2_PORT, () => h2serverPort, H2_RULE);

const CONFIG: ProxyConfig = {
  address: "127.0.0.1",
  limits: { ...DEFAULT_LIMITS, maxHeaderBytes: 4096 },
  ports: [
    {
      port: GRPC_PORT,
      // Cilium's gRPC demo: the door's name and location may be asked, its access code not set.
      http: [
        { ruleId: GRPC_RULE, index: 0, rule: { method: "POST", path: `${DOOR_MANAGER}/GetName` } },
        { ruleId: GRPC_RULE, index: 1, rule: { method: "POST", path: `${DOOR_MANAGER}/(GetLocation|WatchStatus)` } },
      ],
    },
    {
      port: H2_PORT,
      http: [
        { ruleId: H2_RULE, index: 0, rule: { method: "GET|POST", path: "/stream/.*" } },
        { ruleId: H2_RULE, index: 1, rule: { method: "GET", path: "/headers", headerMatches: [{ name: "X-Role", value: "pilot", mismatch: "REPLACE" }] } },
      ],
    },
  ],
};

before(async () => {
  const d = await serveDoorman("127.0.0.1", 0, (method, peer) => doormanCalls.push({ method, peer }));
  doorman = d.server;
  doormanPort = d.port;
  h2server = http2.createServer();
  h2server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    const path = String(headers[":path"]);
    let body = 0;
    const entry: (typeof h2seen)[number] = { path, headers, body: 0 };
    h2seen.push(entry);
    stream.on("data", (d: Buffer) => (body += d.length));
    stream.on("trailers", (t: http2.IncomingHttpHeaders) => (entry.trailers = t));
    stream.on("aborted", () => aborted++);
    stream.on("error", () => {});
    stream.on("end", () => {
      entry.body = body;
      if (path === "/stream/hold") {
        // One chunk now, the rest and the trailers when the test says.
        stream.respond({ ":status": 200 }, { waitForTrailers: true });
        stream.write("first;");
        stream.on("wantTrailers", () => stream.sendTrailers({ "x-checksum": "abc" }));
        release = () => stream.end("last");
        return;
      }
      if (path === "/stream/big") {
        const chunk = Buffer.alloc(1 << 20, 120);
        let left = BIG_TOTAL / chunk.length;
        stream.respond({ ":status": 200, "content-length": BIG_TOTAL });
        const pump = (): void => {
          while (left > 0) {
            left--;
            bigWritten += chunk.length;
            if (!stream.write(chunk)) return void stream.once("drain", pump);
          }
          stream.end();
        };
        return pump();
      }
      if (path === "/stream/never") return; // answers nothing: the client gives up
      stream.respond({ ":status": 200, "content-type": "text/plain" });
      stream.end(`ok ${path} (${body} bytes)`);
    });
  });
  h2server.listen(0, "127.0.0.1");
  await once(h2server, "listening");
  h2serverPort = (h2server.address() as net.AddressInfo).port;
  await grpcProxy.apply({ ...CONFIG, ports: CONFIG.ports.filter((p) => p.port === GRPC_PORT) });
  await h2Proxy.apply({ ...CONFIG, ports: CONFIG.ports.filter((p) => p.port === H2_PORT) });
});

after(async () => {
  await grpcProxy.stop();
  await h2Proxy.stop();
  doorman.forceShutdown();
  h2server.close();
});

/** gRPC calls through the proxy, the way a gRPC client makes them: grpc-js over its own connection to the proxy port. */
const grpcThroughProxy = (): ReturnType<typeof doormanClient> => doormanClient(`127.0.0.1:${GRPC_PORT}`);

test("gRPC: allowed methods answer, a denied one gets PERMISSION_DENIED, all on one connection, and the denied call never reaches the server", async () => {
  const client = grpcThroughProxy();
  const before = doormanCalls.length;
  const flowsBefore = flows.length;
  try {
    const name = await client.call("GetName");
    assert.deepEqual([name.code, name.reply], [0, { message: "Door 1: Bespin Door" }]);
    const denied = await client.call("SetAccessCode", { doorId: 1, accessCode: 42 });
    assert.deepEqual([denied.code, denied.details], [7, "Access denied"], "PERMISSION_DENIED");
    const location = await client.call("GetLocation");
    assert.deepEqual([location.code, location.reply], [0, { message: "Cloud City, Bespin" }], "the connection carries the next call");
  } finally {
    client.close();
  }
  const calls = doormanCalls.slice(before);
  assert.deepEqual(calls.map((c) => c.method), ["GetName", "GetLocation"], "SetAccessCode never reached the door manager");
  assert.equal(new Set(calls.map((c) => c.peer)).size, 1, "one upstream connection");
  const mine = flows.slice(flowsBefore);
  assert.deepEqual(
    mine.map((f) => [f.protocol, f.method, f.path, f.verdict, f.status, f.rule?.index]),
    [
      ["HTTP/2", "POST", `${DOOR_MANAGER}/GetName`, "forwarded", 200, 0],
      ["HTTP/2", "POST", `${DOOR_MANAGER}/SetAccessCode`, "denied", 200, undefined],
      ["HTTP/2", "POST", `${DOOR_MANAGER}/GetLocation`, "forwarded", 200, 1],
    ],
  );
  assert.equal(new Set(mine.map((f) => f.source.port)).size, 1, "one client connection");
  assert.equal(mine[0]!.host, `127.0.0.1:${GRPC_PORT}`, ":authority is the host");
  assert.ok(mine.every((f) => f.latencyMs > 0));
});

test("gRPC: a server-streaming call streams through, message by message, with its status in the trailers", async () => {
  const grpcjs = await import("@grpc/grpc-js");
  const protoLoader = await import("@grpc/proto-loader");
  const def = protoLoader.loadSync(new URL("./testing/cloudcity.proto", import.meta.url).pathname, { defaults: true });
  const Door = (grpcjs.loadPackageDefinition(def) as unknown as { cloudcity: { DoorManager: grpc.ServiceClientConstructor } }).cloudcity.DoorManager;
  const client = new Door(`127.0.0.1:${GRPC_PORT}`, grpcjs.credentials.createInsecure()) as unknown as { WatchStatus(req: unknown): grpc.ClientReadableStream<{ message: string }> } & grpc.Client;
  try {
    const call = client.WatchStatus({ doorId: 1, count: 5 });
    const got: { message: string; at: number }[] = [];
    call.on("data", (m: { message: string }) => got.push({ message: m.message, at: Date.now() }));
    const [status] = (await once(call, "status")) as [grpc.StatusObject];
    assert.equal(status.code, 0);
    assert.deepEqual(got.map((g) => g.message), ["status 0: closed", "status 1: closed", "status 2: closed", "status 3: closed", "status 4: closed"]);
    assert.ok(got.at(-1)!.at - got[0]!.at >= 40, "the messages arrived as the server sent them (20 ms apart), not all at the end");
  } finally {
    client.close();
  }
});

test("h2c: a request denied by method or path gets 403 Access denied; the connection's other streams, one of them open meanwhile, go on", async () => {
  const session = h2c(H2_PORT);
  try {
    // A stream held open by the server while others on the connection are answered.
    const held = session.request({ ":path": "/stream/hold" }, { endStream: true });
    const [heldHeaders] = (await once(held, "response")) as [http2.IncomingHttpHeaders];
    assert.equal(heldHeaders[":status"], 200);
    const seen = h2seen.length;
    const denied = await request(session, { ":method": "PUT", ":path": "/v1/exhaust-port" }, "boom!");
    assert.deepEqual([denied.status, denied.body], [403, "Access denied"]);
    assert.equal((await request(session, { ":method": "DELETE", ":path": "/stream/a" })).status, 403, "method");
    assert.equal((await request(session, { ":path": "/streamx" })).status, 403, "the path regex matches the whole path");
    const allowed = await request(session, { ":method": "POST", ":path": "/stream/upload" }, "abc");
    assert.deepEqual([allowed.status, allowed.body], [200, "ok /stream/upload (3 bytes)"]);
    assert.deepEqual(h2seen.slice(seen).map((s) => s.path), ["/stream/upload"], "the denied requests never reached the server");
    // The held stream: its first chunk came while the others were served; the rest and its trailers now.
    let text = "";
    held.on("data", (d: Buffer) => (text += d.toString()));
    const trailers = once(held, "trailers");
    release!();
    await once(held, "end");
    assert.equal(text, "first;last");
    assert.deepEqual((await trailers)[0]["x-checksum"], "abc", "the server's trailers reach the client");
  } finally {
    session.destroy();
  }
  const denied = flows.filter((f) => f.path === "/v1/exhaust-port").at(-1);
  assert.deepEqual([denied?.protocol, denied?.method, denied?.verdict, denied?.status], ["HTTP/2", "PUT", "denied", 403]);
});

test("h2c: a request's headers and trailers arrive as sent, a REPLACE mismatch applied", async () => {
  const session = h2c(H2_PORT);
  try {
    const req = session.request({ ":method": "GET", ":path": "/headers", "x-role": "stormtrooper", "x-custom": "kept" }, { endStream: true });
    req.resume();
    await once(req, "end");
    const s = h2seen.at(-1)!;
    assert.equal(s.headers["x-role"], "pilot", "REPLACE put the rule's value");
    assert.equal(s.headers["x-custom"], "kept");
    assert.equal(s.headers[":authority"], `deathstar:${H2_PORT}`);
    assert.deepEqual(flows.at(-1)?.mismatches, [{ name: "x-role", action: "REPLACE" }]);

    const withTrailers = session.request({ ":method": "POST", ":path": "/stream/trailers" }, { waitForTrailers: true });
    withTrailers.on("wantTrailers", () => withTrailers.sendTrailers({ "x-digest": "sha-256=abc" }));
    withTrailers.resume();
    withTrailers.end("body");
    await once(withTrailers, "end");
    assert.equal(h2seen.at(-1)?.trailers?.["x-digest"], "sha-256=abc", "the client's trailers reach the server");
    assert.equal(h2seen.at(-1)?.body, 4);
  } finally {
    session.destroy();
  }
});

test("h2c: a large response is not held by the proxy: a stream whose client stops reading stops the server's writes", async () => {
  bigWritten = 0;
  const session = h2c(H2_PORT);
  try {
    const req = session.request({ ":path": "/stream/big" }, { endStream: true });
    await once(req, "response");
    req.pause();
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(bigWritten < BIG_TOTAL / 2, `the server got ${(bigWritten / 1048576).toFixed(1)} MiB of ${BIG_TOTAL / 1048576} MiB out while the client read nothing`);
    let bytes = 0;
    req.on("data", (d: Buffer) => (bytes += d.length));
    req.resume();
    await once(req, "end");
    assert.equal(bytes, BIG_TOTAL, "and all of it arrives once the client reads");
  } finally {
    session.destroy();
  }
});

test("h2c: a stream the client cancels is cancelled at the server too; the connection goes on", async () => {
  const session = h2c(H2_PORT);
  try {
    const before = aborted;
    const req = session.request({ ":path": "/stream/never" }, { endStream: true });
    req.on("error", () => {});
    for (let i = 0; i < 100 && h2seen.at(-1)?.path !== "/stream/never"; i++) await new Promise((r) => setTimeout(r, 10));
    req.close(http2.constants.NGHTTP2_CANCEL);
    for (let i = 0; i < 100 && aborted === before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(aborted, before + 1, "the server's stream was reset");
    assert.equal((await request(session, { ":path": "/stream/after" })).status, 200);
  } finally {
    session.destroy();
  }
});

test("a header block over the limit resets that stream only", async () => {
  const session = h2c(H2_PORT);
  try {
    // The limit is the proxy's SETTINGS_MAX_HEADER_LIST_SIZE: in force once the client has it (before, nghttp2's 64 KiB).
    assert.equal((await request(session, { ":path": "/stream/first" })).status, 200);
    const req = session.request({ ":path": "/stream/a", "x-big": "a".repeat(8000) }, { endStream: true });
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      req.on("error", resolve);
      req.on("response", () => resolve(undefined));
    });
    assert.ok(err, "refused");
    assert.equal((await request(session, { ":path": "/stream/small" })).status, 200, "the connection still works");
  } finally {
    session.destroy();
  }
});

test("the destination down: gRPC gets UNAVAILABLE, h2c 503", async () => {
  upstreamDown = true;
  try {
    const client = grpcThroughProxy();
    try {
      const r = await client.call("GetName");
      assert.equal(r.code, 14, "UNAVAILABLE");
    } finally {
      client.close();
    }
    const session = h2c(H2_PORT);
    try {
      assert.equal((await request(session, { ":path": "/stream/a" })).status, 503);
    } finally {
      session.close();
    }
  } finally {
    upstreamDown = false;
  }
  assert.deepEqual(flows.slice(-2).map((f) => [f.protocol, f.verdict, f.status]), [["HTTP/2", "error", 200], ["HTTP/2", "error", 503]]);
});

test("an HTTP/2 request's flows read as Hubble's: protocol HTTP/2, url from :authority and :path, the code", () => {
  const f = flows.find((x) => x.path === `${DOOR_MANAGER}/SetAccessCode`)!;
  const [req, res] = httpFlows(f, { node: "n1", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: () => new Date() }, DEFAULT_HTTP_REDACTION);
  const { headers, ...http } = req!.l7!.http!;
  assert.deepEqual(http, { method: "POST", url: `http://127.0.0.1:${GRPC_PORT}${DOOR_MANAGER}/SetAccessCode`, protocol: "HTTP/2" });
  assert.ok(headers?.some((h) => h.key === "content-type" && h.value === "application/grpc"), JSON.stringify(headers));
  assert.equal(req?.verdict, "DROPPED");
  assert.equal(res?.l7?.http?.code, 200);
});

test("a stream the proxy refused itself reads as a refusal with its reason: reset unanswered (one DROPPED request), redirected (DROPPED, then its 307), ended after it was forwarded (the response an ERROR)", () => {
  const lookups = { node: "n1", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: () => new Date() };
  const base = flows.find((x) => x.path === `${DOOR_MANAGER}/SetAccessCode`)!;
  const shown = (f: HttpFlow) => httpFlows(f, lookups, DEFAULT_HTTP_REDACTION).map((x) => [x.l7?.type, x.verdict, x.dropReason, x.l7?.http?.code]);
  assert.deepEqual(shown({ ...base, verdict: "denied", status: 0, reason: REFUSAL_REASON.malformedH2 }), [["REQUEST", "DROPPED", REFUSAL_REASON.malformedH2, undefined]]);
  assert.deepEqual(shown({ ...base, verdict: "denied", status: 307, reason: REFUSAL_REASON.escapedSlash }), [
    ["REQUEST", "DROPPED", REFUSAL_REASON.escapedSlash, undefined],
    ["RESPONSE", "FORWARDED", undefined, 307],
  ]);
  assert.deepEqual(shown({ ...base, verdict: "error", status: 0, reason: REFUSAL_REASON.rapidReset }), [
    ["REQUEST", "FORWARDED", undefined, undefined],
    ["RESPONSE", "ERROR", REFUSAL_REASON.rapidReset, 0],
  ]);
});

test("an HTTP/1.1 client on the same port is still served as HTTP/1.1 (an Upgrade: h2c is ignored, as RFC 9113 allows)", async () => {
  const c = net.connect(H2_PORT, "127.0.0.1");
  let buf = "";
  c.on("data", (d: Buffer) => (buf += d.toString()));
  await once(c, "connect");
  c.write("PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n");
  for (let i = 0; i < 100 && !buf.includes("Access denied"); i++) await new Promise((r) => setTimeout(r, 10));
  c.destroy();
  assert.match(buf, /^HTTP\/1\.1 403 Forbidden\r\n/);
});

test("a port the configuration drops closes its connections at once: an HTTP/2 session, and a client that has sent nothing yet", async () => {
  const session = h2c(H2_PORT);
  assert.equal((await request(session, { ":path": "/stream/a" })).status, 200);
  const silent = net.connect(H2_PORT, "127.0.0.1");
  silent.on("error", () => {});
  await once(silent, "connect");
  const t0 = Date.now();
  await h2Proxy.apply({ ...CONFIG, ports: [] });
  if (!silent.destroyed) await once(silent, "close");
  if (!session.destroyed) await once(session, "close");
  assert.ok(Date.now() - t0 < 2000, `closed after ${Date.now() - t0} ms (the head timeout is ${CONFIG.limits.headersTimeoutMs} ms)`);
});
