// HTTP/2 inside TLS on loopback: the proxy offers ALPN h2 and http/1.1 on a terminatingTLS port, judges every HTTP/2 stream by the port's HTTP rules (403 / gRPC PERMISSION_DENIED as for h2c) and, with originatingTLS, negotiates h2 towards the destination. Clients: curl --http2, Node's http2 over TLS, a gRPC client with TLS credentials.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type tls from "node:tls";
import { once } from "node:events";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { issueCA, issueCert, type Issued } from "../../kube/pki.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, type ProxyConfig, type ProxyPortConfig } from "./config.ts";
import { DOOR_MANAGER, doormanClient, serveDoorman } from "./testing/doorman.ts";
import { ErrorCode, frame, FrameType, headerFrames, rstStream } from "../../core/l7/h2-frame.ts";
import { encodeBlock } from "../../core/l7/hpack.ts";
import { H2_PREFACE } from "./h2-proxy.ts";
import { REFUSAL_REASON } from "./request-flow.ts";

const run = promisify(execFile);
const BASE = 23080 + (process.pid % 500) * 5;
const H2_TLS = BASE; // terminatingTLS + originatingTLS to an HTTP/2 server over TLS
const GRPC_TLS = BASE + 1; // terminatingTLS only: gRPC decrypted, sent on as h2c to a plaintext gRPC server
const H1_ONLY = BASE + 2; // originatingTLS to a server that speaks HTTP/1.1 only
const TERM_H1 = BASE + 3; // terminatingTLS only, to a plaintext HTTP/1.1 server
const ORIG_ONLY = BASE + 4; // originatingTLS only: plaintext from the client, TLS to the HTTP/2 server
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-tls-h2-"));
const flows: HttpFlow[] = [];
const seen: string[] = [];
const doorCalls: string[] = [];
let podCA: Issued;
let podCAFile = "";
const upstreamPorts = new Map<number, number>();
let h2upstream: http2.Http2SecureServer;
let h1upstream: https.Server;
let plainUpstream: http.Server;
let doorman: grpc.Server;

/** A proxy whose every client "was going to" the port's own server through `proxyPort`: what the datapath's record would say. */
const proxyFor = (proxyPort: number): HttpProxy =>
  new HttpProxy({
    redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPorts.get(proxyPort) ?? 1, proxyPort, subject: 1000, ruleId: 7 }) },
    onFlow: (f) => flows.push(f),
    connectUpstream: (ip, port) => net.connect(port, ip),
  });
const proxies = [H2_TLS, GRPC_TLS, H1_ONLY, TERM_H1, ORIG_ONLY].map((p) => ({ port: p, proxy: proxyFor(p) }));

function file(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text, { mode: 0o600 });
  return f;
}

before(async () => {
  podCA = await issueCA({ commonName: "pods' test CA", days: 1 });
  podCAFile = file("pods-ca.crt", podCA.cert);
  const served = await issueCert(podCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  const outsideCA = await issueCA({ commonName: "outside CA", days: 1 });
  const outside = await issueCert(outsideCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  h2upstream = http2.createSecureServer({ cert: outside.cert, key: outside.key, allowHTTP1: true }, (req, res) => {
    seen.push(`${req.method} ${req.url} ${req.httpVersion} sni=${(req.socket as tls.TLSSocket).servername}`);
    res.end(`outside h2 says hello to ${req.url}`);
  });
  h1upstream = https.createServer({ cert: outside.cert, key: outside.key, ALPNProtocols: ["http/1.1"] }, (req, res) => {
    seen.push(`${req.method} ${req.url} ${req.httpVersion}`);
    res.end("outside h1");
  });
  plainUpstream = http.createServer((req, res) => {
    seen.push(`plain ${req.method} ${req.url} ${req.httpVersion} host=${req.headers.host}`);
    res.setHeader("x-served-by", "plain");
    res.end("plain h1");
  });
  for (const s of [h2upstream, h1upstream, plainUpstream]) {
    s.listen(0, "127.0.0.1");
    await once(s, "listening");
  }
  const door = await serveDoorman("127.0.0.1", 0, (method) => doorCalls.push(method));
  doorman = door.server;
  upstreamPorts.set(H2_TLS, (h2upstream.address() as net.AddressInfo).port);
  upstreamPorts.set(H1_ONLY, (h1upstream.address() as net.AddressInfo).port);
  upstreamPorts.set(GRPC_TLS, door.port);
  upstreamPorts.set(TERM_H1, (plainUpstream.address() as net.AddressInfo).port);
  upstreamPorts.set(ORIG_ONLY, (h2upstream.address() as net.AddressInfo).port);
  const terminating = { secret: "kube-system/api-tls", certificateFile: file("term.crt", served.cert), privateKeyFile: file("term.key", served.key) };
  const originating = { secret: "kube-system/outside-ca", trustedCAFile: file("outside-ca.crt", outsideCA.cert) };
  const port = (p: number, http: ProxyPortConfig["http"], withOriginating: boolean): ProxyPortConfig => ({
    port: p,
    http,
    tls: { terminating, ...(withOriginating ? { originating } : {}), serverNames: ["api.example.com"] },
  });
  const ports: ProxyPortConfig[] = [
    port(H2_TLS, [{ ruleId: 7, index: 0, rule: { method: "GET", path: "/public/.*" } }], true),
    port(GRPC_TLS, [{ ruleId: 8, index: 0, rule: { method: "POST", path: `${DOOR_MANAGER}/GetName` } }], false),
    port(H1_ONLY, [{ ruleId: 9, index: 0, rule: { method: "GET", path: "/.*" } }], true),
    port(TERM_H1, [{ ruleId: 10, index: 0, rule: { method: "GET", path: "/public/.*" } }], false),
    { port: ORIG_ONLY, http: [{ ruleId: 11, index: 0, rule: { method: "GET", path: "/public/.*" } }], tls: { originating } },
  ];
  for (const { port: p, proxy } of proxies) await proxy.apply({ address: "127.0.0.1", limits: DEFAULT_LIMITS, ports: ports.filter((c) => c.port === p) } satisfies ProxyConfig);
});

after(async () => {
  for (const { proxy } of proxies) await proxy.stop();
  for (const s of [h2upstream, h1upstream, plainUpstream]) s.close();
  h1upstream.closeAllConnections();
  plainUpstream.closeAllConnections();
  doorman.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** curl --http2 (or --http1.1) to https://api.example.com:PORT/PATH resolved to the proxy, trusting the pods' CA: status, HTTP version and body. */
async function curl(port: number, urlPath: string, version: "--http2" | "--http1.1" = "--http2"): Promise<{ status: number; version: string; body: string }> {
  const { stdout } = await run("curl", ["-sS", "--max-time", "5", version, "--cacert", podCAFile, "--resolve", `api.example.com:${port}:127.0.0.1`, "-w", "\n@@ %{http_code} %{http_version}", `https://api.example.com:${port}${urlPath}`]);
  const m = /([\s\S]*?)\n?@@ (\d+) (\S+)$/.exec(stdout);
  assert.ok(m, stdout);
  return { status: Number(m[2]), version: m[3]!, body: m[1]! };
}

/** An HTTP/2 session over TLS to the proxy port (ALPN h2 only), as api.example.com. */
async function h2session(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://api.example.com:${port}`, { ca: podCA.cert, servername: "api.example.com", host: "127.0.0.1", lookup: (_h, _o, cb) => cb(null, [{ address: "127.0.0.1", family: 4 }]) } as http2.SecureClientSessionOptions);
  await once(session, "connect");
  return session;
}

function get(session: http2.ClientHttp2Session, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ":method": "GET", ":path": urlPath });
    let status = 0;
    let body = "";
    s.on("response", (h) => (status = Number(h[":status"])));
    s.on("data", (d: Buffer) => (body += d.toString()));
    s.on("end", () => resolve({ status, body }));
    s.on("error", reject);
    s.end();
  });
}

test("curl --http2 negotiates h2 with the proxy: an allowed path reaches the HTTPS server as HTTP/2 (verified, with the client's SNI), a denied one gets 403 Access denied", async () => {
  const ok = await curl(H2_TLS, "/public/ships");
  assert.deepEqual(ok, { status: 200, version: "2", body: "outside h2 says hello to /public/ships" });
  assert.equal(seen.at(-1), "GET /public/ships 2.0 sni=api.example.com", "re-encrypted towards the server as HTTP/2 with the client's SNI");
  const f = flows.at(-1)!;
  assert.deepEqual([f.protocol, f.method, f.path, f.host, f.verdict, f.status, f.tls?.serverName], ["HTTP/2", "GET", "/public/ships", `api.example.com:${H2_TLS}`, "forwarded", 200, "api.example.com"]);
  const before = seen.length;
  assert.deepEqual(await curl(H2_TLS, "/private/plans"), { status: 403, version: "2", body: "Access denied" });
  assert.equal(seen.length, before, "the denied request never reached the server");
  assert.deepEqual([flows.at(-1)!.protocol, flows.at(-1)!.verdict, flows.at(-1)!.status], ["HTTP/2", "denied", 403]);
});

test("curl --http1.1 on the same port still gets HTTP/1.1 (ALPN http/1.1) and the same verdicts, sent on as HTTP/1.1", async () => {
  assert.deepEqual(await curl(H2_TLS, "/public/x", "--http1.1"), { status: 200, version: "1.1", body: "outside h2 says hello to /public/x" });
  assert.equal((await curl(H2_TLS, "/private/x", "--http1.1")).status, 403);
  assert.equal(flows.at(-1)!.protocol, "HTTP/1.1");
});

test("Node's http2 client over TLS: a denied stream and an allowed one on the same connection, each judged on its own", async () => {
  const session = await h2session(H2_TLS);
  try {
    assert.equal(session.alpnProtocol, "h2");
    const [denied, allowed] = await Promise.all([get(session, "/private/plans"), get(session, "/public/ok")]);
    assert.deepEqual(denied, { status: 403, body: "Access denied" });
    assert.deepEqual(allowed, { status: 200, body: "outside h2 says hello to /public/ok" });
    assert.deepEqual(await get(session, "/public/again"), { status: 200, body: "outside h2 says hello to /public/again" }, "the connection stays usable");
  } finally {
    session.close();
  }
});

test("a Host naming another authority than :authority is reset (PROTOCOL_ERROR), never judged by one and served by the other, its flow a refusal with the reason; the connection goes on", async () => {
  const session = await h2session(H2_TLS);
  try {
    const before = seen.length;
    const s = session.request({ ":method": "GET", ":path": "/public/ok", ":authority": `api.example.com:${H2_TLS}`, host: "admin.internal" });
    s.on("error", () => {});
    s.end();
    await new Promise((r) => s.once("close", r));
    assert.equal(s.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    assert.equal(seen.length, before, "nothing reached the server");
    const f = flows.find((x) => x.path === "/public/ok" && x.reason !== undefined);
    assert.deepEqual([f?.verdict, f?.status, f?.reason, f?.tls?.serverName], ["denied", 0, "malformed HTTP/2 request", "api.example.com"]);
    assert.equal((await get(session, "/public/%2Fafter")).status, 307);
    const redirected = flows.find((x) => x.path === "/public/%2Fafter");
    assert.deepEqual([redirected?.verdict, redirected?.status, redirected?.reason], ["denied", 307, "escaped slash in the path: redirected to its unescaped path"]);
    assert.equal((await get(session, "/public/after")).status, 200);
  } finally {
    session.close();
  }
});

test("a server name outside serverNames fails the h2 handshake too, and nothing reaches the server", async () => {
  const before = seen.length;
  const session = http2.connect(`https://127.0.0.1:${H2_TLS}`, { ca: podCA.cert, servername: "other.example.com", checkServerIdentity: () => undefined });
  const [err] = (await once(session, "error")) as [Error];
  assert.match(err.message, /alert|socket hang up|ECONNRESET|disconnected before secure TLS/i);
  session.destroy();
  assert.equal(seen.length, before);
});

test("gRPC over TLS: GetName answers, SetAccessCode gets PERMISSION_DENIED on the same channel and never reaches the door manager (terminatingTLS only: sent on as h2c)", async () => {
  const creds = grpc.credentials.createSsl(Buffer.from(podCA.cert));
  const client = doormanClient(`127.0.0.1:${GRPC_TLS}`, { "grpc.ssl_target_name_override": "api.example.com", "grpc.default_authority": "api.example.com" }, creds);
  try {
    const calls = doorCalls.length;
    const results = [await client.call("GetName"), await client.call("SetAccessCode"), await client.call("GetName")];
    assert.deepEqual(results.map((r) => [r.method, r.code]), [["GetName", 0], ["SetAccessCode", 7], ["GetName", 0]]);
    assert.equal(results[1]!.details, "Access denied");
    assert.deepEqual(doorCalls.slice(calls), ["GetName", "GetName"]);
    const answered = flows.find((f) => f.path === `${DOOR_MANAGER}/GetName` && f.tls);
    assert.equal(answered?.responseHeaders?.find((h) => h.name === "content-type")?.value, "application/grpc+proto", "the flow records the response's headers (no pseudo-headers)");
    assert.ok(!answered?.responseHeaders?.some((h) => h.name.startsWith(":")));
    const denied = flows.find((f) => f.path === `${DOOR_MANAGER}/SetAccessCode`);
    assert.deepEqual([denied?.protocol, denied?.verdict, denied?.tls?.serverName], ["HTTP/2", "denied", "api.example.com"]);
  } finally {
    client.close();
  }
});

test("with originatingTLS, a destination whose ALPN chooses http/1.1 gets an h2 client's streams as HTTP/1.1 requests (verified TLS), concurrent streams and all", async () => {
  const session = await h2session(H1_ONLY);
  try {
    const answers = await Promise.all([get(session, "/a"), get(session, "/b"), get(session, "/c")]);
    assert.deepEqual(answers, [1, 2, 3].map(() => ({ status: 200, body: "outside h1" })));
    assert.deepEqual(seen.slice(-3).sort(), ["GET /a 1.1", "GET /b 1.1", "GET /c 1.1"]);
    assert.deepEqual([flows.at(-1)!.protocol, flows.at(-1)!.verdict, flows.at(-1)!.status], ["HTTP/2", "forwarded", 200]);
  } finally {
    session.close();
  }
  assert.deepEqual(await curl(H1_ONLY, "/anything", "--http1.1"), { status: 200, version: "1.1", body: "outside h1" }, "an HTTP/1.1 client is served as before");
});

test("terminatingTLS alone: curl --http2 to a plaintext HTTP/1.1 server works (the stream goes on as HTTP/1.1 with its Host), a denied path is 403 inside h2", async () => {
  assert.deepEqual(await curl(TERM_H1, "/public/x"), { status: 200, version: "2", body: "plain h1" });
  assert.equal(seen.at(-1), `plain GET /public/x 1.1 host=api.example.com:${TERM_H1}`);
  assert.equal(flows.at(-1)!.responseHeaders?.find((h) => h.name === "x-served-by")?.value, "plain", "the flow records the response's headers");
  const before = seen.length;
  assert.deepEqual(await curl(TERM_H1, "/private/x"), { status: 403, version: "2", body: "Access denied" });
  assert.equal(seen.length, before);
});

test("originatingTLS alone: an h2c client (prior knowledge) is served, its streams sent over TLS verified for the request's host and negotiated h2", async () => {
  const session = http2.connect(`http://api.example.com:${ORIG_ONLY}`, { createConnection: () => net.connect(ORIG_ONLY, "127.0.0.1") });
  try {
    assert.deepEqual(await get(session, "/public/plain"), { status: 200, body: "outside h2 says hello to /public/plain" });
    assert.equal(seen.at(-1), "GET /public/plain 2.0 sni=api.example.com");
    assert.deepEqual(await get(session, "/private/plain"), { status: 403, body: "Access denied" });
  } finally {
    session.close();
  }
});

/** An h2c connection to `port` written frame by frame (no client library to hold back a flood): what came back, as frames. */
async function rawH2c(port: number, frames: Buffer[], perWrite = frames.length): Promise<{ goaways: () => Promise<number[]>; served: (id: number) => Promise<boolean>; close: () => void }> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.on("error", () => {});
  let got = Buffer.alloc(0);
  socket.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
  socket.write(Buffer.concat([H2_PREFACE, frame(FrameType.SETTINGS, 0, 0)]));
  for (let i = 0; i < frames.length && !socket.destroyed; i += perWrite) {
    socket.write(Buffer.concat(frames.slice(i, i + perWrite)));
    if (i + perWrite < frames.length) await new Promise((r) => setTimeout(r, 5));
  }
  const find = async (want: (type: number, id: number, payload: Buffer) => number | undefined): Promise<number | undefined> => {
    for (const t0 = Date.now(); Date.now() - t0 < 5000; await new Promise((r) => setTimeout(r, 20))) {
      for (let p = 0; p + 9 <= got.length; p += 9 + got.readUIntBE(p, 3)) {
        const found = want(got[p + 3]!, got.readUInt32BE(p + 5) & 0x7fffffff, got.subarray(p + 9, p + 9 + got.readUIntBE(p, 3)));
        if (found !== undefined) return found;
      }
      if (socket.destroyed) return undefined;
    }
    return undefined;
  };
  return {
    // Every GOAWAY once the connection is closed.
    goaways: async () => {
      await find(() => undefined);
      const codes: number[] = [];
      for (let p = 0; p + 9 <= got.length; p += 9 + got.readUIntBE(p, 3)) if (got[p + 3] === FrameType.GOAWAY) codes.push(got.readUInt32BE(p + 13));
      return codes;
    },
    served: async (id) => (await find((type, at) => (type === FrameType.HEADERS && at === id ? 1 : undefined))) === 1,
    close: () => socket.destroy(),
  };
}

test("rapid reset (CVE-2023-44487) on node:http2's path: past the budget (below nghttp2's own) the connection is closed and the stream one too many has a flow saying why, once; a client cancelling 200 goes on", async () => {
  const request = (id: number, p: string): Buffer => headerFrames(id, encodeBlock([":method", "GET", ":scheme", "http", ":authority", "api.example.com", ":path", p]), true, 16384);
  const pairs = (n: number): Buffer[] => Array.from({ length: n }, (_, i) => [request(2 * i + 1, "/public/hang"), rstStream(2 * i + 1, ErrorCode.CANCEL)]).flat();
  const calm = await rawH2c(ORIG_ONLY, [...pairs(200), request(401, "/public/after")]);
  assert.ok(await calm.served(401), "a client cancelling 200 streams is served");
  calm.close();
  const rapid = (): string[] => flows.filter((f) => f.reason === REFUSAL_REASON.rapidReset).map((f) => `${f.path} ${f.verdict} ${f.status}`);

  // Sent a few reads at a time: the proxy's budget is spent first, its GOAWAY the connection's first. The stream one
  // too many had been forwarded: its flow an error.
  flows.length = 0;
  const paced = await rawH2c(ORIG_ONLY, pairs(1500), 200);
  assert.deepEqual((await paced.goaways())[0], ErrorCode.ENHANCE_YOUR_CALM);
  paced.close();
  assert.deepEqual(rapid(), ["/public/hang error 0"]);

  // All in one read: nghttp2 reads it whole before the streams reach the proxy, its own limit's GOAWAY (INTERNAL_ERROR)
  // leaves first; the streams, cancelled before they were seen, still count, and the warning and the flow (a refusal:
  // never forwarded) are the proxy's.
  flows.length = 0;
  const flood = await rawH2c(ORIG_ONLY, pairs(1500));
  assert.ok((await flood.goaways()).length > 0);
  flood.close();
  assert.deepEqual(rapid(), ["/public/hang denied 0"]);
});
