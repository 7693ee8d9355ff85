// Real packets: TLS inspection, configured by the agent's desiredProxy from the rule's TLS and Secret material as the operator sends them. A pod's HTTPS (curl trusting the pods' test CA) to an "outside" HTTPS server is steered by the datapath to the node's L7 proxy, which terminates it with the terminatingTLS certificate, applies the HTTP rules to the decrypted request and re-encrypts towards the server, verified against the originatingTLS CA.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { PROTO_NUMBER, type RuleTls, type SubjectPolicy } from "../../core/model.ts";
import { issueCA, issueCert } from "../../kube/pki.ts";
import { waitForLine } from "../bpf/netns.ts";
import { DEFAULT_LIMITS } from "./config.ts";
import { desiredProxy } from "./supervisor.ts";
import { ADDR, L7Topology } from "./testing/topology.ts";

const run = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);

const tag = `m7t${process.pid % 100000}`;
const POD = 1000;
const OUTSIDE = 2000;
const RULE = 11;
const PROXY_PORT = 10443;
// serverNames without HTTP rules on 8443: the proxy judges the SNI without terminating (the configuration is the agent's desiredProxy from the rule as the compiler sends it).
const SNI_RULE = 12;
const SNI_PROXY_PORT = 10444;

const POLICIES: SubjectPolicy[] = [
  {
    subject: POD,
    ingressEnforced: false,
    egressEnforced: true,
    entries: [
      { subject: POD, direction: "egress", verdict: "allow", peer: OUTSIDE, proto: PROTO_NUMBER.TCP, port: 443, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: RULE },
      { subject: POD, direction: "egress", verdict: "allow", peer: OUTSIDE, proto: PROTO_NUMBER.TCP, port: 8443, portPrefixLen: 16, proxyPort: SNI_PROXY_PORT, ruleId: SNI_RULE },
    ],
  },
  { subject: OUTSIDE, ingressEnforced: false, egressEnforced: false, entries: [] },
];

const topo = new L7Topology(tag);
let podCA = "";
let outsideCAFile = "";
let outsideLog = "";

before(async () => {
  const file = (name: string, text: string): string => {
    const f = path.join(topo.dir, name);
    fs.writeFileSync(f, text, { mode: 0o600 });
    return f;
  };
  // The pods trust the CA that signed the proxy's certificate; the outside server has a CA of its own, which the originatingTLS Secret holds.
  const pods = await issueCA({ commonName: "pods' test CA", days: 1 });
  // Valid for both names, so a refused other.example.com is the proxy's serverNames at work, not curl's name check.
  const served = await issueCert(pods, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com", "other.example.com"], days: 1 });
  const outsideCA = await issueCA({ commonName: "outside CA", days: 1 });
  const outside = await issueCert(outsideCA, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com", "other.example.com"], days: 1 });
  podCA = file("pods-ca.crt", pods.cert);
  // As the operator sends it (the rule's TLS with its Secrets' material), turned into the proxy's configuration by the agent's own function.
  const tls: RuleTls = {
    terminating: { secret: { namespace: "kube-system", name: "api-tls" }, material: { certificate: served.cert, privateKey: served.key } },
    originating: { secret: { namespace: "kube-system", name: "outside-ca" }, material: { trustedCA: outsideCA.cert } },
    serverNames: ["api.example.com"],
  };
  // 8443's rule has serverNames alone, as the compiler sends it: no HTTP rules, the names to judge the SNI by.
  const sni: RuleTls = { serverNames: ["api.example.com"] };
  const pod: SubjectPolicy = {
    ...POLICIES[0]!,
    http: [
      { ruleId: RULE, direction: "egress", rules: [{ method: "GET", path: "/public/.*" }], proxyPorts: [PROXY_PORT], tls },
      { ruleId: SNI_RULE, portRule: 0, direction: "egress", rules: [], proxyPorts: [SNI_PROXY_PORT], tls: sni },
    ],
  };
  const config = desiredProxy([pod], { address: ADDR.node }, DEFAULT_LIMITS, path.join(topo.dir, "l7proxy-tls")).config;
  outsideCAFile = file("outside-ca.crt", outsideCA.cert);
  assert.deepEqual(config.ports.find((p) => p.port === SNI_PROXY_PORT), { port: SNI_PROXY_PORT, http: [], tls: { serverNames: ["api.example.com"] } }, "the agent's configuration of a serverNames-only port");
  await topo.setUp({ policies: POLICIES, config });
  const server = topo.fx.spawn(topo.ns.deathstar, process.execPath, ["--import", "tsx", path.join(here, "testing/https-server.ts"), file("outside.crt", outside.cert), file("outside.key", outside.key), "0.0.0.0", "443"]);
  server.stdout?.on("data", (d: Buffer) => (outsideLog += d.toString()));
  await waitForLine(server, /^listening/, 20000);
  const sniServer = topo.fx.spawn(topo.ns.deathstar, process.execPath, ["--import", "tsx", path.join(here, "testing/https-server.ts"), path.join(topo.dir, "outside.crt"), path.join(topo.dir, "outside.key"), "0.0.0.0", "8443"]);
  sniServer.stdout?.on("data", (d: Buffer) => (outsideLog += d.toString()));
  await waitForLine(sniServer, /^listening/, 20000);
  await topo.startProxy();
});

after(async () => {
  await topo.cleanup();
});

/** curl in the pod's netns to https://NAME/PATH with NAME resolved to the outside server; the status, or undefined when the connection failed. */
async function https(urlPath: string, name = "api.example.com", insecure = false, version = "--http1.1"): Promise<{ status: number; body: string; version?: string } | undefined> {
  try {
    const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "3", version, "--cacert", podCA, ...(insecure ? ["-k"] : []), "--resolve", `${name}:443:${ADDR.deathstar}`, "-w", "\n@@ %{http_code} %{http_version}", `https://${name}${urlPath}`]);
    const m = /([\s\S]*?)\n?@@ (\d+) (\S+)$/.exec(stdout);
    if (!m) return undefined;
    return version === "--http1.1" ? { status: Number(m[2]), body: m[1]! } : { status: Number(m[2]), body: m[1]!, version: m[3]! };
  } catch {
    return undefined;
  }
}

test("an allowed path reaches the outside HTTPS server through the proxy and its body comes back; the flow shows the decrypted request", async () => {
  const res = await https("/public/ships");
  assert.deepEqual(res, { status: 200, body: "outside: GET /public/ships\n" });
  assert.match(outsideLog, /request GET \/public\/ships sni=api\.example\.com http=1\.1/, "re-encrypted with the client's SNI, as HTTP/1.1 for an HTTP/1.1 client");
  // The proxy logs the flow once the response has ended: it may reach its log a moment after curl has the answer.
  let flow = topo.flows().find((f) => f.path === "/public/ships");
  for (const end = Date.now() + 3000; !flow && Date.now() < end; await new Promise((r) => setTimeout(r, 50))) flow = topo.flows().find((f) => f.path === "/public/ships");
  assert.deepEqual([flow?.method, flow?.verdict, flow?.status, flow?.source.identity], ["GET", "forwarded", 200, POD]);
});

test("a denied path gets 403 Access denied inside TLS and never reaches the server", async () => {
  const res = await https("/private/plans");
  assert.deepEqual(res, { status: 403, body: "Access denied" });
  assert.doesNotMatch(outsideLog, /private/);
  const flow = (await topo.flowsWhen("the denied request's flow", (fs) => fs.some((f) => f.path === "/private/plans"))).find((f) => f.path === "/private/plans");
  assert.deepEqual([flow?.method, flow?.verdict, flow?.status], ["GET", "denied", 403]);
});

test("HTTP/2 inside TLS (curl --http2): the proxy negotiates h2, judges each request by the same rules and speaks h2 to the server over verified TLS", async () => {
  assert.deepEqual(await https("/public/h2", "api.example.com", false, "--http2"), { status: 200, body: "outside: GET /public/h2\n", version: "2" });
  assert.match(outsideLog, /request GET \/public\/h2 sni=api\.example\.com http=2\.0/, "re-encrypted as HTTP/2 with the client's SNI");
  assert.deepEqual(await https("/private/h2", "api.example.com", false, "--http2"), { status: 403, body: "Access denied", version: "2" });
  assert.doesNotMatch(outsideLog, /private/);
  const flows = (await topo.flowsWhen("both /h2 flows", (fs) => fs.filter((f) => f.path.endsWith("/h2")).length >= 2)).filter((f) => f.path.endsWith("/h2"));
  assert.deepEqual(flows.map((f) => [f.protocol, f.path, f.verdict, f.status, f.tls?.serverName, f.source.identity]), [
    ["HTTP/2", "/public/h2", "forwarded", 200, "api.example.com", POD],
    ["HTTP/2", "/private/h2", "denied", 403, "api.example.com", POD],
  ]);
});

test("a server name outside serverNames fails (even for a client that checks nothing), and nothing reaches the server", async () => {
  const before = outsideLog.length;
  assert.equal(await https("/public/ships", "other.example.com", true), undefined);
  assert.equal(outsideLog.length, before);
});

test("the pod cannot reach the server around the proxy: plain HTTP to port 443 is refused by the proxy, not forwarded", async () => {
  const before = outsideLog.length;
  let failed = false;
  try {
    await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "3", `http://${ADDR.deathstar}:443/public/ships`]);
  } catch {
    failed = true;
  }
  assert.ok(failed, "a plain request on the TLS port fails");
  assert.equal(outsideLog.length, before);
});

test("serverNames without HTTP rules (8443): a listed SNI is joined to the server untouched (curl trusts the server's own CA), another is refused with a DROPPED flow naming it", async () => {
  const curl = async (name: string): Promise<string | undefined> => {
    try {
      const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "3", "--cacert", outsideCAFile, "--resolve", `${name}:8443:${ADDR.deathstar}`, `https://${name}:8443/sni/${name}`]);
      return stdout;
    } catch {
      return undefined;
    }
  };
  assert.equal(await curl("api.example.com"), "outside: GET /sni/api.example.com\n");
  assert.equal(await curl("other.example.com"), undefined);
  assert.doesNotMatch(outsideLog, /sni\/other/);
  let flows = topo.flows().filter((f) => f.protocol === "TLS");
  for (const end = Date.now() + 3000; flows.length < 2 && Date.now() < end; await new Promise((r) => setTimeout(r, 50))) flows = topo.flows().filter((f) => f.protocol === "TLS");
  assert.deepEqual(flows.map((f) => [f.verdict, f.tls?.serverName, f.source.identity]), [
    ["forwarded", "api.example.com", POD],
    ["denied", "other.example.com", POD],
  ]);
});
