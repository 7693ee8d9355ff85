// TLS inspection on loopback: the proxy terminates the client's TLS with the Secret's certificate, checks serverNames, applies the HTTP rules to the decrypted request and re-encrypts to an HTTPS upstream verified against the Secret's CA. The datapath's redirect is the kernel test's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import https from "node:https";
import net from "node:net";
import type tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { issueCA, issueCert, type Issued } from "../../kube/pki.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, parseProxyConfig, type ProxyConfig, type ProxyPortConfig } from "./config.ts";

const BASE = 19080 + (process.pid % 500) * 2;
const INSPECT = BASE; // terminatingTLS + originatingTLS + serverNames
const WRONG_CA = BASE + 1; // originatingTLS whose CA did not sign the upstream's certificate
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-tls-proxy-"));
const flows: HttpFlow[] = [];
const seen: string[] = [];
let clientCA: Issued; // the CA the pods trust: it signed the certificate the proxy presents
let upstreamPort = 0;
let upstream: https.Server;

/** A proxy whose every client "was going to" the HTTPS server through `proxyPort`: what the datapath's record would say. */
const proxyFor = (proxyPort: number): HttpProxy =>
  new HttpProxy({
    redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPort, proxyPort, subject: 1000, ruleId: 7 }) },
    onFlow: (f) => flows.push(f),
    connectUpstream: (ip, port) => net.connect(port, ip),
  });
const proxy = proxyFor(INSPECT);
const wrongCaProxy = proxyFor(WRONG_CA);

function file(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text, { mode: 0o600 });
  return f;
}

const http = [{ ruleId: 7, index: 0, rule: { method: "GET", path: "/public/.*" } }];
let config: ProxyConfig;

before(async () => {
  clientCA = await issueCA({ commonName: "pods' test CA", days: 1 });
  const served = await issueCert(clientCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  const upstreamCA = await issueCA({ commonName: "outside CA", days: 1 });
  const upstreamCert = await issueCert(upstreamCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  upstream = https.createServer({ cert: upstreamCert.cert, key: upstreamCert.key }, (req, res) => {
    seen.push(`${req.method} ${req.url} sni=${(req.socket as tls.TLSSocket).servername}`);
    res.end(`outside says hello to ${req.url}`);
  });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  const terminating = { secret: "kube-system/api-tls", certificateFile: file("term.crt", served.cert), privateKeyFile: file("term.key", served.key) };
  const port = (p: number, trustedCA: string): ProxyPortConfig => ({ port: p, http, tls: { terminating, originating: { secret: "kube-system/outside-ca", trustedCAFile: trustedCA }, serverNames: ["api.example.com"] } });
  config = { address: "127.0.0.1", limits: DEFAULT_LIMITS, ports: [port(INSPECT, file("orig-ca.crt", upstreamCA.cert))] };
  // What the agent writes parses as the proxy reads it.
  const parsed = parseProxyConfig(JSON.stringify(config));
  assert.ok(parsed.ok, JSON.stringify(parsed));
  await proxy.apply(parsed.value);
  await wrongCaProxy.apply({ ...config, ports: [port(WRONG_CA, file("wrong-ca.crt", clientCA.cert))] });
});

after(async () => {
  await proxy.stop();
  await wrongCaProxy.stop();
  upstream.closeAllConnections();
  upstream.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** An HTTPS GET through the proxy port as a pod trusting the test CA makes it; `servername` is the SNI ("" for none). */
function get(port: number, urlPath: string, servername = "api.example.com"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: urlPath, servername, ca: clientCA.cert, headers: { host: "api.example.com" }, agent: false }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("an allowed path over TLS reaches the HTTPS server (verified, with the client's SNI) and its body comes back; the flow shows the decrypted request", async () => {
  const res = await get(INSPECT, "/public/ships");
  assert.deepEqual(res, { status: 200, body: "outside says hello to /public/ships" });
  assert.equal(seen.at(-1), "GET /public/ships sni=api.example.com", "re-encrypted towards the server with the original SNI");
  const f = flows.at(-1)!;
  assert.deepEqual([f.method, f.path, f.host, f.verdict, f.status, f.tls?.serverName], ["GET", "/public/ships", "api.example.com", "forwarded", 200, "api.example.com"]);
});

test("a denied path over TLS gets 403 'Access denied' from the proxy and never reaches the server", async () => {
  const before = seen.length;
  const res = await get(INSPECT, "/private/plans");
  assert.deepEqual(res, { status: 403, body: "Access denied" });
  assert.equal(seen.length, before);
  const f = flows.at(-1)!;
  assert.deepEqual([f.method, f.path, f.verdict], ["GET", "/private/plans", "denied"]);
});

test("a server name outside serverNames fails the handshake, and so does a handshake without SNI", async () => {
  const before = seen.length;
  await assert.rejects(get(INSPECT, "/public/ships", "other.example.com"), /alert|before secure TLS connection|ECONNRESET/i);
  // Without SNI the handshake completes with the default certificate and the proxy closes the connection before any request.
  await assert.rejects(
    new Promise((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port: INSPECT, path: "/public/ships", ca: clientCA.cert, checkServerIdentity: () => undefined, servername: "", agent: false }, resolve);
      req.on("error", reject);
      req.end();
    }),
    /socket hang up|ECONNRESET/,
  );
  assert.equal(seen.length, before, "nothing reached the server");
});

test("an upstream whose certificate the Secret's CA did not sign is refused (503), never sent the request in the clear", async () => {
  const before = seen.length;
  const res = await get(WRONG_CA, "/public/ships");
  assert.equal(res.status, 503);
  assert.equal(seen.length, before);
  assert.equal(flows.at(-1)?.verdict, "error");
});

test("a port whose Secret is unavailable refuses every connection before a byte of TLS or HTTP is read", async () => {
  await proxy.apply({ ...config, ports: [{ port: INSPECT, http, tls: { unavailable: "terminatingTLS Secret kube-system/api-tls not found" } }] });
  try {
    await assert.rejects(get(INSPECT, "/public/ships"), /before secure TLS connection|ECONNRESET/);
    const plain = net.connect(INSPECT, "127.0.0.1");
    plain.write("GET /public/ships HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    let got = "";
    plain.on("data", (d: Buffer) => (got += d.toString()));
    plain.on("error", () => {});
    await once(plain, "close");
    assert.equal(got, "", "no plain answer");
  } finally {
    await proxy.apply(config);
  }
  assert.equal((await get(INSPECT, "/public/ships")).status, 200, "back once the material is");
});

test("a rotated Secret (new files in a new configuration) is presented to the next connection without a restart", async () => {
  const peerSerial = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port: INSPECT, path: "/public/x", servername: "api.example.com", ca: clientCA.cert, agent: false }, (res) => {
        resolve((res.socket as tls.TLSSocket).getPeerCertificate().serialNumber);
        res.resume();
      });
      req.on("error", reject);
      req.end();
    });
  const before = await peerSerial();
  const rotated = await issueCert(clientCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
  const port = config.ports[0]!;
  const terminating = { secret: "kube-system/api-tls", certificateFile: file("term2.crt", rotated.cert), privateKeyFile: file("term2.key", rotated.key) };
  await proxy.apply({ ...config, ports: [{ ...port, tls: { ...port.tls!, terminating } }] });
  try {
    const after = await peerSerial();
    assert.notEqual(after, before);
    assert.equal(after.toLowerCase(), new X509Certificate(rotated.cert).serialNumber.toLowerCase());
  } finally {
    await proxy.apply(config);
  }
});

test("the proxy's configuration refuses a malformed tls field, naming it", () => {
  const r = parseProxyConfig(JSON.stringify({ address: "127.0.0.1", ports: [{ port: 1, http: [], tls: { terminating: { secret: "a/b", certificateFile: "" }, serverNames: [""], extra: 1 } }] }));
  assert.ok(!r.ok);
  assert.deepEqual(r.errors.map((e) => e.path).sort(), ["ports[0].tls.extra", "ports[0].tls.serverNames", "ports[0].tls.terminating.certificateFile", "ports[0].tls.terminating.privateKeyFile"]);
});
