// serverNames without HTTP rules on loopback: the proxy reads the ClientHello without terminating it, joins the connection to the real HTTPS server when its SNI is listed (the client sees the server's own certificate), and closes it otherwise with a DROPPED flow naming the SNI.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import { issueCA, issueCert, type Issued } from "../../kube/pki.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, parseProxyConfig } from "./config.ts";
import { httpFlows } from "./http-flows.ts";
import { DEFAULT_HTTP_REDACTION } from "../../core/l7/redaction.ts";

const PROXY_PORT = 24080 + (process.pid % 1000);
const flows: HttpFlow[] = [];
const seen: string[] = [];
let upstreamConnections = 0;
let ca: Issued;
let serverCert: Issued;
let upstream: https.Server;
let upstreamPort = 0;

const proxy = new HttpProxy({
  redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPort, proxyPort: PROXY_PORT, subject: 1000, ruleId: 4 }) },
  onFlow: (f) => flows.push(f),
  connectUpstream: (ip, port) => net.connect(port, ip),
});

before(async () => {
  ca = await issueCA({ commonName: "outside CA", days: 1 });
  serverCert = await issueCert(ca, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com", "img.cdn.example.com", "evil.example.com"], days: 1 });
  upstream = https.createServer({ cert: serverCert.cert, key: serverCert.key }, (req, res) => {
    seen.push(`${req.method} ${req.url} sni=${(req.socket as tls.TLSSocket).servername}`);
    res.end(`outside: ${req.url}`);
  });
  upstream.on("connection", () => upstreamConnections++);
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  // As the proxy reads its configuration: a port with serverNames and no HTTP rules, no terminating or originating TLS.
  const parsed = parseProxyConfig(JSON.stringify({ address: "127.0.0.1", limits: { ...DEFAULT_LIMITS, headersTimeoutMs: 800 }, ports: [{ port: PROXY_PORT, http: [], tls: { serverNames: ["api.example.com", "*.cdn.example.com"] } }] }));
  assert.ok(parsed.ok, JSON.stringify(parsed));
  await proxy.apply(parsed.value);
});

after(async () => {
  await proxy.stop();
  upstream.closeAllConnections();
  upstream.close();
});

/** An HTTPS GET through the proxy port naming `servername` ("" for none), trusting the outside CA: the client's TLS is with the server itself. */
function get(servername: string, urlPath = "/x"): Promise<{ status: number; body: string; peerSerial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port: PROXY_PORT, path: urlPath, servername, ca: ca.cert, checkServerIdentity: () => undefined, agent: false }, (res) => {
      const peerSerial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, peerSerial }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("a listed server name is joined to the destination untouched: the client sees the server's own certificate and its answer; a wildcard name too", async () => {
  const res = await get("api.example.com", "/ships");
  assert.deepEqual([res.status, res.body], [200, "outside: /ships"]);
  assert.equal(res.peerSerial.toLowerCase(), new X509Certificate(serverCert.cert).serialNumber.toLowerCase(), "the proxy did not terminate: the certificate is the server's");
  assert.equal(seen.at(-1), "GET /ships sni=api.example.com");
  assert.deepEqual([flows.at(-1)?.protocol, flows.at(-1)?.verdict, flows.at(-1)?.tls?.serverName], ["TLS", "forwarded", "api.example.com"]);
  assert.equal((await get("img.cdn.example.com")).status, 200);
});

test("a server name not listed is refused before anything reaches the server, with a DROPPED L7 flow naming the SNI", async () => {
  const before = upstreamConnections;
  await assert.rejects(get("evil.example.com"), /socket hang up|ECONNRESET|disconnected before secure TLS/);
  assert.equal(upstreamConnections, before, "no connection to the server");
  const f = flows.at(-1)!;
  assert.deepEqual([f.protocol, f.verdict, f.tls?.serverName, f.reason], ["TLS", "denied", "evil.example.com", 'server name "evil.example.com" is not in the rule\'s serverNames']);
  const lookups = { node: "n1", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: () => new Date() };
  const shown = httpFlows(f, lookups, DEFAULT_HTTP_REDACTION);
  assert.equal(shown.length, 1);
  assert.deepEqual([shown[0]!.verdict, shown[0]!.type, shown[0]!.l7?.type, shown[0]!.l7?.tls?.serverName, shown[0]!.l7?.http], ["DROPPED", "l7", "REQUEST", "evil.example.com", undefined]);
});

test("no SNI, plain HTTP, or a client that sends nothing: refused, never passed", async () => {
  const before = upstreamConnections;
  await assert.rejects(get(""), /socket hang up|ECONNRESET|disconnected before secure TLS/);
  assert.equal(flows.at(-1)?.reason, "the ClientHello names no server (SNI)");
  const plain = net.connect(PROXY_PORT, "127.0.0.1");
  plain.on("error", () => {});
  plain.write("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
  await once(plain, "close");
  assert.equal(flows.at(-1)?.reason, "not a TLS handshake");
  const silent = net.connect(PROXY_PORT, "127.0.0.1");
  silent.on("error", () => {});
  const started = Date.now();
  await once(silent, "close");
  assert.ok(Date.now() - started < 3000, "closed at the head timeout");
  assert.match(flows.at(-1)?.reason ?? "", /no ClientHello within 800 ms/);
  assert.equal(upstreamConnections, before);
});
