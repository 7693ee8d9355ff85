// The proxy judges and forwards the normalized request path (core/l7/path-normalize.ts), as Cilium's Envoy does: on loopback over HTTP/1.1, h2c (the frame relay) and HTTP/2 inside TLS, `/public/../admin` (and `/public\..\admin`) is denied under a `/public/.*` rule, `/public/./ships` reaches the server as `/public/ships`, an escaped slash is redirected (gRPC: INTERNAL, as Envoy answers it), a fragment, a NUL or a dot segment with parameters (`..;`) gets 400, an absolute-form HTTP/1.1 target too; with httpNormalizePath false (--http-normalize-path=false) paths go as sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { issueCA, issueCert } from "../../kube/pki.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, type ProxyConfig, type ProxyPortConfig } from "./config.ts";
import { REFUSAL_REASON } from "./request-flow.ts";
import { h2c, request } from "./testing/h2c-client.ts";

const BASE = 24580 + (process.pid % 400) * 3;
const H1 = BASE; // plaintext HTTP/1.1 to an HTTP/1.1 server
const H2C = BASE + 1; // h2c to an h2c server: the frame relay
const TLS = BASE + 2; // terminatingTLS, HTTP/2 from the client, HTTP/1.1 to the plaintext server
const RULES: ProxyPortConfig["http"] = [
  { ruleId: 5, index: 0, rule: { method: "GET", path: "/public/.*" } },
  { ruleId: 5, index: 1, rule: { method: "POST", path: "/pkg.Ships/.*" } },
];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-pathnorm-"));
const flows: HttpFlow[] = [];
const seen: string[] = [];
const upstreamPorts = new Map<number, number>();
let h1server: http.Server;
let h2server: http2.Http2Server;
let ca = "";
let configs: ProxyConfig[] = [];

const proxyFor = (proxyPort: number): HttpProxy =>
  new HttpProxy({
    redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPorts.get(proxyPort) ?? 1, proxyPort, subject: 1000, ruleId: 5 }) },
    onFlow: (f) => flows.push(f),
    connectUpstream: (ip, port) => net.connect(port, ip),
  });
const proxies = [H1, H2C, TLS].map((p) => ({ port: p, proxy: proxyFor(p) }));

before(async () => {
  h1server = http.createServer((req, res) => {
    seen.push(req.url ?? "");
    res.end("ok");
  });
  h2server = http2.createServer();
  h2server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    seen.push(String(headers[":path"]));
    const grpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
    stream.resume();
    if (grpc) stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "0" }, { endStream: true });
    else {
      stream.respond({ ":status": 200 });
      stream.end("ok");
    }
  });
  for (const s of [h1server, h2server]) {
    s.listen(0, "127.0.0.1");
    await once(s, "listening");
  }
  upstreamPorts.set(H1, (h1server.address() as net.AddressInfo).port);
  upstreamPorts.set(TLS, (h1server.address() as net.AddressInfo).port);
  upstreamPorts.set(H2C, (h2server.address() as net.AddressInfo).port);
  const podCA = await issueCA({ commonName: "pathnorm test CA", days: 1 });
  const served = await issueCert(podCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  ca = podCA.cert;
  const file = (name: string, text: string): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text, { mode: 0o600 });
    return f;
  };
  const terminating = { secret: "default/api-tls", certificateFile: file("t.crt", served.cert), privateKeyFile: file("t.key", served.key) };
  configs = proxies.map(({ port }) => ({ address: "127.0.0.1", limits: DEFAULT_LIMITS, ports: [{ port, http: RULES, ...(port === TLS ? { tls: { terminating } } : {}) }] }));
  for (const [i, { proxy }] of proxies.entries()) await proxy.apply(configs[i]!);
});

after(async () => {
  for (const { proxy } of proxies) await proxy.stop();
  h1server.close();
  h2server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One HTTP/1.1 request line sent byte for byte (no client library tidies the target), the raw answer read until close. */
async function http1(target: string): Promise<{ status: number; location?: string }> {
  const s = net.connect(H1, "127.0.0.1");
  await once(s, "connect");
  s.write(`GET ${target} HTTP/1.1\r\nhost: deathstar\r\nconnection: close\r\n\r\n`);
  let text = "";
  s.on("data", (d: Buffer) => (text += d.toString("latin1")));
  await once(s, "close");
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
  const location = /\r\nlocation: ([^\r]*)\r\n/i.exec(text)?.[1];
  return { status, ...(location !== undefined ? { location } : {}) };
}

test("HTTP/1.1: dot segments, merged slashes and escaped dots are judged as the server reads them", async () => {
  seen.length = 0;
  flows.length = 0;
  assert.equal((await http1("/public/../admin")).status, 403);
  assert.equal((await http1("/public/%2e%2e/admin")).status, 403);
  assert.equal((await http1("/public/./ships?x=/../y")).status, 200);
  assert.equal((await http1("//public//ships")).status, 200);
  // A backslash is a separator (Envoy's normalize_path); unreserved escapes are decoded; a stray % cannot make a new escape.
  assert.equal((await http1("/public\\..\\admin")).status, 403);
  assert.equal((await http1("/public/%73hips")).status, 200);
  assert.equal((await http1("/public/%%32e%%32e/admin")).status, 200);
  assert.deepEqual(seen, ["/public/ships?x=/../y", "/public/ships", "/public/ships", "/public/%252e%252e/admin"]);
  assert.deepEqual(flows.map((f) => `${f.path} ${f.verdict}`), ["/admin denied", "/admin denied", "/public/ships?x=/../y forwarded", "/public/ships forwarded", "/admin denied", "/public/ships forwarded", "/public/%252e%252e/admin forwarded"]);
});

test("HTTP/1.1: a fragment or a NUL in the path gets 400, never forwarded; its flow a refusal with the reason", async () => {
  seen.length = 0;
  flows.length = 0;
  assert.deepEqual(await http1("/public/x#/../../admin"), { status: 400 });
  assert.deepEqual(await http1("/public/%00/../../admin"), { status: 400 });
  assert.deepEqual(seen, []);
  assert.deepEqual(flows.map((f) => `${f.path} ${f.verdict} ${f.status} ${f.reason ?? ""}`), [
    `/public/x#/../../admin denied 400 ${REFUSAL_REASON.invalidPath}`,
    `/public/%00/../../admin denied 400 ${REFUSAL_REASON.invalidPath}`,
  ]);
});

test("a dot segment with parameters (`/public/..;/admin`: /admin to Tomcat) gets 400 on HTTP/1.1 and both HTTP/2 sides; an absolute-form HTTP/1.1 target gets 400: never forwarded", async () => {
  seen.length = 0;
  flows.length = 0;
  assert.deepEqual(await http1("/public/..;/admin"), { status: 400 });
  assert.deepEqual(await http1("/public/.;x/../admin"), { status: 400 });
  // Its authority is what the destination reads (RFC 9112 §3.2.2), not the Host field the rules judge.
  assert.deepEqual(await http1("http://admin.internal/public/x"), { status: 400 });
  const session = h2c(H2C);
  try {
    assert.equal((await request(session, { ":path": "/public/..;/admin" })).status, 400);
  } finally {
    session.close();
  }
  const tlsSession = http2.connect(`https://127.0.0.1:${TLS}`, { ca, servername: "api.example.com" });
  tlsSession.on("error", () => {});
  try {
    assert.equal((await request(tlsSession, { ":path": "/public/%2e%2e;/admin" })).status, 400);
  } finally {
    tlsSession.close();
  }
  assert.deepEqual(seen, []);
  assert.deepEqual(flows.map((f) => `${f.path} ${f.verdict} ${f.status} ${f.reason ?? ""}`), [
    `/public/..;/admin denied 400 ${REFUSAL_REASON.invalidPath}`,
    `/public/.;x/../admin denied 400 ${REFUSAL_REASON.invalidPath}`,
    ` denied 400 ${REFUSAL_REASON.malformedHttp1}`,
    `/public/..;/admin denied 400 ${REFUSAL_REASON.invalidPath}`,
    `/public/%2e%2e;/admin denied 400 ${REFUSAL_REASON.invalidPath}`,
  ]);
});

test("HTTP/1.1: an escaped slash is redirected (307) to the unescaped path, never forwarded", async () => {
  seen.length = 0;
  assert.deepEqual(await http1("/public/%2Fx?q=1"), { status: 307, location: "/public/x?q=1" });
  assert.deepEqual(await http1("/public/..%2fadmin"), { status: 307, location: "/admin" });
  assert.deepEqual(await http1("/public/%5C..%5Cadmin"), { status: 307, location: "/public/admin" });
  assert.deepEqual(seen, []);
});

test("h2c through the frame relay: normalized, judged, forwarded; escaped slashes redirected; gRPC method paths unaffected", async () => {
  seen.length = 0;
  flows.length = 0;
  const session = h2c(H2C);
  try {
    assert.equal((await request(session, { ":path": "/public/../admin" })).status, 403);
    assert.equal((await request(session, { ":path": "/public\\..\\admin" })).status, 403);
    assert.equal((await request(session, { ":path": "/public/%00" })).status, 400);
    const ok = await request(session, { ":path": "/public/./ships" });
    assert.equal(ok.status, 200);
    const redirect = await request(session, { ":path": "/public/%2Fx" });
    assert.equal(redirect.status, 307);
    assert.equal(redirect.headers.location, "/public/x");
    const grpc = await request(session, { ":method": "POST", ":path": "/pkg.Ships/List", "content-type": "application/grpc", te: "trailers" }, Buffer.alloc(5));
    assert.equal(grpc.headers["grpc-status"], "0");
    const grpcEscaped = await request(session, { ":method": "POST", ":path": "/pkg.Ships%2FList", "content-type": "application/grpc" }, Buffer.alloc(5));
    assert.equal(grpcEscaped.headers["grpc-status"], "13");
    // The session is still in step (HPACK tables) after the proxy's own answers.
    assert.equal((await request(session, { ":path": "/public/a/b/.." })).status, 200);
  } finally {
    session.close();
  }
  assert.deepEqual(seen, ["/public/ships", "/pkg.Ships/List", "/public/a/"]);
  // A redirect's or a 400's flow is a refusal (the request as sent, never forwarded: h2-relay.ts reportRefusal).
  assert.deepEqual(flows.map((f) => `${f.path} ${f.verdict} ${f.status}`), ["/admin denied 403", "/admin denied 403", "/public/%00 denied 400", "/public/ships forwarded 200", "/public/%2Fx denied 307", "/pkg.Ships/List forwarded 200", "/pkg.Ships%2FList denied 200", "/public/a/ forwarded 200"]);
});

test("HTTP/2 inside TLS (terminatingTLS): the same normalized path is judged and forwarded", async () => {
  seen.length = 0;
  const session = http2.connect(`https://127.0.0.1:${TLS}`, { ca, servername: "api.example.com" });
  session.on("error", () => {});
  try {
    assert.equal((await request(session, { ":path": "/public/%2E%2E/admin" })).status, 403);
    assert.equal((await request(session, { ":path": "/public/./ships" })).status, 200);
    assert.equal((await request(session, { ":path": "/public/..\\admin" })).status, 403);
    const redirect = await request(session, { ":path": "/public/%5cx" });
    assert.equal(redirect.status, 307);
    assert.equal(redirect.headers.location, "/public/x");
  } finally {
    session.close();
  }
  assert.deepEqual(seen, ["/public/ships"]);
});

test("httpNormalizePath false (--http-normalize-path=false): every protocol judges and forwards the path as sent", async () => {
  for (const [i, { proxy }] of proxies.entries()) await proxy.apply({ ...configs[i]!, httpNormalizePath: false });
  seen.length = 0;
  try {
    assert.equal((await http1("/public/../admin")).status, 200);
    assert.equal((await http1("/public/%2Fx")).status, 200);
    const session = h2c(H2C);
    try {
      assert.equal((await request(session, { ":path": "/public/./ships" })).status, 200);
    } finally {
      session.close();
    }
    const tlsSession = http2.connect(`https://127.0.0.1:${TLS}`, { ca, servername: "api.example.com" });
    tlsSession.on("error", () => {});
    try {
      assert.equal((await request(tlsSession, { ":path": "/public/%2e%2e/admin" })).status, 200);
    } finally {
      tlsSession.close();
    }
    // A fragment is refused whatever the switch says (Envoy's http_reject_path_with_fragment).
    assert.equal((await http1("/public/x#y")).status, 400);
  } finally {
    for (const [i, { proxy }] of proxies.entries()) await proxy.apply(configs[i]!);
  }
  assert.deepEqual(seen, ["/public/../admin", "/public/%2Fx", "/public/./ships", "/public/%2e%2e/admin"]);
  // Normalizing again from the next request on.
  assert.equal((await http1("/public/../admin")).status, 403);
});

/** One unary call to `method` (its :path as sent) the way a gRPC client makes it, @grpc/grpc-js on a connection of its own: the status it reads. */
async function grpcCall(port: number, method: string): Promise<[number, string]> {
  const creds = port === TLS ? grpc.credentials.createSsl(Buffer.from(ca)) : grpc.credentials.createInsecure();
  const client = new grpc.Client(`127.0.0.1:${port}`, creds, port === TLS ? { "grpc.ssl_target_name_override": "api.example.com", "grpc.default_authority": "api.example.com" } : {});
  try {
    return await new Promise((resolve) =>
      client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (err) => resolve(err ? [err.code, err.details] : [grpc.status.OK, ""])),
    );
  } finally {
    client.close();
  }
}

test("a gRPC client (@grpc/grpc-js) reads each of the proxy's refusals as Envoy's local reply maps it: an escaped slash, a NUL or a dot segment with parameters INTERNAL (400), a policy denial PERMISSION_DENIED (403), on the h2c relay and on HTTP/2 inside TLS", async () => {
  seen.length = 0;
  for (const port of [H2C, TLS]) {
    const got = [];
    for (const method of ["/pkg.Ships%2FList", "/pkg.Ships/List%00", "/pkg.Ships/..;/List", "/pkg.Other/List"]) got.push([method, ...(await grpcCall(port, method))]);
    assert.deepEqual(got, [
      ["/pkg.Ships%2FList", grpc.status.INTERNAL, "request path with an escaped slash"],
      ["/pkg.Ships/List%00", grpc.status.INTERNAL, "a NUL (%00) in the request path"],
      ["/pkg.Ships/..;/List", grpc.status.INTERNAL, "a dot segment with parameters (..;) in the request path"],
      ["/pkg.Other/List", grpc.status.PERMISSION_DENIED, "Access denied"],
    ], port === TLS ? "HTTP/2 inside TLS" : "h2c relay");
  }
  assert.deepEqual(seen, []);
});
