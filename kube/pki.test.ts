// The certificate builder: chains that node:crypto verifies, the usages and names asked for, a PKI directory that keeps what it has, and a clear error for a key it cannot sign with.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { issueCA, issueCert, writeAgentPki } from "./pki.ts";

test("a CA signs a client certificate whose subject carries the organisation Kubernetes reads as the group", async () => {
  const ca = await issueCA({ commonName: "unit-ca", days: 2 });
  const caCert = new X509Certificate(ca.cert);
  assert.ok(caCert.ca);
  assert.ok(caCert.checkPrivateKey(createPrivateKey(ca.key)));
  const admin = await issueCert(ca, { commonName: "membrane-admin", organization: "system:masters", usage: "client", days: 1 });
  const cert = new X509Certificate(admin.cert);
  assert.ok(cert.verify(caCert.publicKey));
  assert.ok(!cert.ca);
  assert.deepEqual(cert.subject.split("\n").sort(), ["CN=membrane-admin", "O=system:masters"]);
  assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"], "clientAuth only");
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  assert.ok(days > 0.9 && days <= 1, `valid ${days} days`);
});

test("a serving certificate names its DNS names and addresses, and may certify a key it is given", async () => {
  const ca = await issueCA({ commonName: "unit-ca", days: 1 });
  const first = await issueCert(ca, { commonName: "web", usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"], days: 1 });
  const san = new X509Certificate(first.cert).subjectAltName ?? "";
  for (const want of ["DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"]) assert.ok(san.includes(want), `${want} in ${san}`);
  const second = await issueCert(ca, { commonName: "web-2", usage: "server+client", days: 1, key: first.key });
  assert.equal(second.key, first.key);
  assert.ok(new X509Certificate(second.cert).checkPrivateKey(createPrivateKey(first.key)));
});

test("a CA key that is not EC P-256 is refused with a message saying what it is", async () => {
  const ca = await issueCA({ commonName: "unit-ca", days: 1 });
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  await assert.rejects(issueCert({ cert: ca.cert, key: rsa }, { commonName: "x", usage: "client", days: 1 }), /expected an EC P-256 key, not rsa/);
});

test("the agent PKI directory keeps its CA and certificates and adds only new nodes", async () => {
  const dir = mkdtempSync(join(tmpdir(), "membrane-pki-unit-"));
  try {
    await writeAgentPki(dir, ["node-a"], { caName: "unit-ca", days: 1 });
    const ca = readFileSync(join(dir, "ca.crt"), "utf8");
    const nodeA = readFileSync(join(dir, "node-a.crt"), "utf8");
    await writeAgentPki(dir, ["node-a", "node-b"], { caName: "unit-ca", days: 1 });
    assert.equal(readFileSync(join(dir, "ca.crt"), "utf8"), ca);
    assert.equal(readFileSync(join(dir, "node-a.crt"), "utf8"), nodeA);
    const caCert = new X509Certificate(ca);
    for (const name of ["operator", "node-a", "node-b"]) assert.ok(new X509Certificate(readFileSync(join(dir, `${name}.crt`))).verify(caCert.publicKey), name);
    assert.match(new X509Certificate(readFileSync(join(dir, "operator.crt"))).subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    assert.equal(new X509Certificate(readFileSync(join(dir, "node-b.crt"))).subject, "CN=node-b");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
