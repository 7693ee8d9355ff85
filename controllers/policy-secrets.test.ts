// A TLS context's material from its Secret: the items Cilium names by default or the ones the rule names, checked as PEM, a key matching its certificate; reasons name items, never bytes.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { issueCA, issueCert, type Issued } from "../kube/pki.ts";
import type { Informer } from "../kube/informer.ts";
import { PolicySecrets, SECRETS_NOT_READ, tlsMaterial, type SecretObject } from "./policy-secrets.ts";

let a: Issued;
let b: Issued;
before(async () => {
  const ca = await issueCA({ commonName: "test CA", days: 1 });
  a = await issueCert(ca, { commonName: "a.example", usage: "server", days: 1 });
  b = await issueCert(ca, { commonName: "b.example", usage: "server", days: 1 });
});

const secret = (data: Record<string, string>): SecretObject => ({ metadata: { name: "s", namespace: "ns" }, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])) });
const use = { secret: { namespace: "ns", name: "s" } };

test("terminatingTLS takes tls.crt and tls.key (or the items the rule names), a key that is the certificate's", () => {
  assert.deepEqual(tlsMaterial(secret({ "tls.crt": a.cert, "tls.key": a.key }), use, "terminatingTLS"), { material: { certificate: a.cert, privateKey: a.key } });
  assert.deepEqual(tlsMaterial(secret({ crt: a.cert, key: a.key }), { ...use, certificate: "crt", privateKey: "key" }, "terminatingTLS"), { material: { certificate: a.cert, privateKey: a.key } });
  assert.deepEqual(tlsMaterial(secret({ "tls.crt": a.cert, "tls.key": b.key }), use, "terminatingTLS"), { unavailable: 'items "tls.crt" and "tls.key" do not match (the key is not the certificate\'s)' });
  assert.deepEqual(tlsMaterial(secret({ "tls.crt": a.cert }), use, "terminatingTLS"), { unavailable: 'has no item "tls.key" (the private key)' });
  assert.deepEqual(tlsMaterial(secret({ "tls.crt": "garbage", "tls.key": a.key }), use, "terminatingTLS"), { unavailable: 'item "tls.crt" is not a PEM certificate' });
  assert.deepEqual(tlsMaterial(undefined, use, "terminatingTLS"), { unavailable: "not found" });
});

test("originatingTLS takes ca.crt (or the rule's trustedCA item), a PEM certificate", () => {
  assert.deepEqual(tlsMaterial(secret({ "ca.crt": a.cert }), use, "originatingTLS"), { material: { trustedCA: a.cert } });
  assert.deepEqual(tlsMaterial(secret({ "ca.crt": a.cert }), { ...use, trustedCA: "bundle.pem" }, "originatingTLS"), { unavailable: 'has no item "bundle.pem" (the trusted CAs)' });
  assert.deepEqual(tlsMaterial(secret({ "ca.crt": "not pem SECRET" }), use, "originatingTLS"), { unavailable: 'item "ca.crt" is not a PEM certificate' });
});

test("with a policy secrets namespace, a Secret named in another namespace is not read even when it exists: its reason says where it must live", () => {
  const held = new Map([["ns/s", secret({ "tls.crt": a.cert, "tls.key": a.key })], ["membrane-secrets/s", secret({ "tls.crt": a.cert, "tls.key": a.key })]]);
  // The informer's cache, as the operator's would hold it (only get is read).
  const informer = { get: (key: string) => held.get(key) } as unknown as Informer<SecretObject>;
  const secrets = new PolicySecrets({ namespace: "membrane-secrets", informer });
  assert.match(secrets.problem(use, "terminatingTLS") ?? "", /^is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets/);
  assert.equal(secrets.problem({ secret: { namespace: "membrane-secrets", name: "s" } }, "terminatingTLS"), undefined);
  assert.equal(new PolicySecrets().problem(use, "terminatingTLS"), SECRETS_NOT_READ);
});
