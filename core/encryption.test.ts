// MembraneEncryptionKey validation: modes, rotation intervals, the Secret reference, and no key material in the object.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateEncryptionKey } from "./encryption.ts";

const key = (spec: unknown) => ({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "k" }, spec });
const errorsOf = (spec: unknown): string[] => {
  const r = validateEncryptionKey(key(spec));
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

describe("encryption key validation", () => {
  it("accepts a complete spec and returns its meaning", () => {
    const r = validateEncryptionKey(key({ mode: "wireguard", rotationInterval: "168h", secretRef: { name: "wg", namespace: "kube-system" } }));
    assert.ok(r.ok);
    assert.deepEqual(r.value, { name: "k", mode: "wireguard", secretRef: { name: "wg", namespace: "kube-system" }, rotationIntervalMs: 168 * 3_600_000 });
  });

  it("names every mistake at once", () => {
    assert.deepEqual(errorsOf({ mode: "aes", rotationInterval: "9000h", secretRef: { namespace: "Kube System" }, psk: "x" }), [
      'spec.mode: "aes" is not an encryption mode (wireguard, ipsec)',
      'spec.rotationInterval: "9000h" is too long: rotate at least once a year',
      "spec.secretRef.name: required",
      "spec.secretRef.namespace: \"Kube System\" is not a valid namespace: it must consist of lower case letters, digits and '-', and start and end with a letter or digit",
      "spec.psk: key material must not be stored in this resource: it lives only in Secrets",
    ]);
    assert.deepEqual(errorsOf(undefined), ["spec: required"]);
    assert.deepEqual(errorsOf({ mode: "ipsec" }), ["spec.secretRef: required: the Secret that holds the key material"]);
  });
});
