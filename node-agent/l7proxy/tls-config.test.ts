// The agent's side of TLS inspection: from the rules' TLS as the operator sends it to the proxy's port configuration, the Secrets' material as 0600 files, failing closed when anything is missing.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROTO_NUMBER, type RuleTls, type SubjectPolicy } from "../../core/model.ts";
import { DEFAULT_LIMITS, parseProxyConfig } from "./config.ts";
import { desiredProxy } from "./supervisor.ts";
import { pruneMaterial } from "./tls.ts";

const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "membrane-tls-config-")), "l7proxy-tls");
after(() => fs.rmSync(path.dirname(dir), { recursive: true, force: true }));

const secret = (name: string) => ({ namespace: "kube-system", name });
const policy = (tls: RuleTls | undefined, other?: RuleTls): SubjectPolicy => ({
  subject: 1000,
  ingressEnforced: false,
  egressEnforced: true,
  entries: [{ subject: 1000, direction: "egress", verdict: "allow", peer: 2000, proto: PROTO_NUMBER.TCP, port: 443, portPrefixLen: 16, proxyPort: 10443, ruleId: 1 }],
  http: [
    { ruleId: 1, direction: "egress", rules: [{ method: "GET" }], proxyPorts: [10443], ...(tls ? { tls } : {}) },
    ...(other ? [{ ruleId: 2, direction: "egress" as const, rules: [{ method: "POST" }], proxyPorts: [10443], tls: other }] : []),
  ],
});
const full: RuleTls = {
  terminating: { secret: secret("api-tls"), material: { certificate: "CERT-PEM", privateKey: "KEY-PEM" } },
  originating: { secret: secret("outside-ca"), material: { trustedCA: "CA-PEM" } },
  serverNames: ["api.example.com"],
};
const portTls = (p: SubjectPolicy) => desiredProxy([p], { address: "10.0.0.1" }, DEFAULT_LIMITS, dir).config.ports[0]!.tls;

test("the material is written as 0600 files (directory 0700) named by content, and the configuration names the files and Secrets, never the bytes", () => {
  const tls = portTls(policy(full))!;
  assert.equal(tls.terminating?.secret, "kube-system/api-tls");
  assert.equal(tls.originating?.secret, "kube-system/outside-ca");
  assert.deepEqual(tls.serverNames, ["api.example.com"]);
  assert.equal(fs.readFileSync(tls.terminating!.privateKeyFile, "utf8"), "KEY-PEM");
  assert.equal(fs.readFileSync(tls.originating!.trustedCAFile, "utf8"), "CA-PEM");
  for (const f of [tls.terminating!.certificateFile, tls.terminating!.privateKeyFile, tls.originating!.trustedCAFile]) assert.equal(fs.statSync(f).mode & 0o777, 0o600, f);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  const config = desiredProxy([policy(full)], { address: "10.0.0.1" }, DEFAULT_LIMITS, dir).config;
  assert.doesNotMatch(JSON.stringify(config), /KEY-PEM|CERT-PEM|CA-PEM/);
  // A rotated Secret is a new file (the configuration changes, so the proxy reloads), and the old key goes at settle.
  const rotated = portTls(policy({ ...full, terminating: { secret: secret("api-tls"), material: { certificate: "CERT-PEM", privateKey: "NEW-KEY" } } }))!;
  assert.notEqual(rotated.terminating!.privateKeyFile, tls.terminating!.privateKeyFile);
  pruneMaterial(dir, desiredProxy([policy({ ...full, terminating: { secret: secret("api-tls"), material: { certificate: "CERT-PEM", privateKey: "NEW-KEY" } } })], { address: "10.0.0.1" }, DEFAULT_LIMITS, dir).config);
  assert.equal(fs.existsSync(tls.terminating!.privateKeyFile), false, "the old key is removed");
  assert.equal(fs.existsSync(rotated.terminating!.privateKeyFile), true);
  pruneMaterial(dir, desiredProxy([policy(undefined)], { address: "10.0.0.1" }, DEFAULT_LIMITS, dir).config);
  assert.deepEqual(fs.readdirSync(dir), [], "no TLS port: no key left on disk");
});

test("a Secret the operator could not read, material not sent, or rules disagreeing on one port: the port refuses its connections, naming the Secret", () => {
  assert.deepEqual(portTls(policy({ terminating: { secret: secret("api-tls"), unavailable: "not found" } })), { unavailable: "terminatingTLS Secret kube-system/api-tls: not found" });
  assert.deepEqual(portTls(policy({ ...full, originating: { secret: secret("outside-ca") } })), {
    serverNames: ["api.example.com"],
    unavailable: "originatingTLS Secret kube-system/outside-ca: trusted CA not sent by the operator",
  });
  assert.deepEqual(portTls(policy(full, undefined)), portTls(policy(full)), "one rule: its TLS");
  assert.deepEqual(portTls(policy(full, { serverNames: ["x.example.com"], terminating: full.terminating! })), { unavailable: "the rules sharing this proxy port ask for different TLS settings" });
  assert.equal(portTls(policy(undefined)), undefined, "no TLS: plain HTTP");
});

test("the agent gives a port whose rules carry serverNames alone (no HTTP rules) to the proxy as an SNI-only port, with no material", () => {
  const policy: SubjectPolicy = {
    subject: 1000,
    ingressEnforced: false,
    egressEnforced: true,
    entries: [{ subject: 1000, direction: "egress", verdict: "allow", peer: 2000, proto: PROTO_NUMBER.TCP, port: 443, portPrefixLen: 16, proxyPort: 10444, ruleId: 3 }],
    http: [{ ruleId: 3, portRule: 0, direction: "egress", rules: [], tls: { serverNames: ["api.example.com"] }, proxyPorts: [10444] }],
  };
  const { config } = desiredProxy([policy], { address: "10.0.0.1" }, DEFAULT_LIMITS, "/nonexistent");
  assert.deepEqual(config.ports, [{ port: 10444, http: [], tls: { serverNames: ["api.example.com"] } }]);
  const parsed = parseProxyConfig(JSON.stringify(config));
  assert.ok(parsed.ok, JSON.stringify(parsed));
});
