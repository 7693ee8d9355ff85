// IPsec key material in a Secret: every mistake named by its Secret field, rotation to the next SPI, and the node count of a key.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IPSEC_ALGORITHM, ipsecSecretData, nextSpi, nodeCount, parseIpsecSecret, rotated, summarizeNodes } from "./ipsec-key.ts";

const KEY = "0123456789abcdef0123456789abcdef01234567"; // 16-byte AES key + 4-byte salt
const errorsOf = (data: Record<string, string>): string[] => {
  const r = parseIpsecSecret(data);
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

describe("IPsec key material", () => {
  it("reads the current key, and the previous one while a rotation is under way", () => {
    const r = parseIpsecSecret({ algorithm: IPSEC_ALGORITHM, key: `0x${KEY.toUpperCase()}`, spi: "3" });
    assert.ok(r.ok);
    assert.deepEqual(r.value, { current: { algorithm: IPSEC_ALGORITHM, keyHex: KEY, spi: 3 } });
    const both = parseIpsecSecret({ ...ipsecSecretData(rotated(r.value, "ab".repeat(20))) });
    assert.ok(both.ok);
    assert.equal(both.value.current.spi, 4);
    assert.equal(both.value.previous?.spi, 3);
    assert.equal(both.value.previous?.keyHex, KEY);
  });

  it("names every bad field of the Secret at once, never echoing the key", () => {
    const errors = errorsOf({ algorithm: "cbc(aes)", key: "zz" + KEY, spi: "16" });
    assert.deepEqual(errors, [
      'data.algorithm: "cbc(aes)" is not supported: use rfc4106(gcm(aes))',
      "data.key: must be hex digits (an even number of them)",
      'data.spi: "16" is not an SPI: an integer 1..15',
    ]);
    assert.ok(!errors.join().includes(KEY));
    assert.deepEqual(errorsOf({}), ["data.algorithm: required: rfc4106(gcm(aes))", "data.key: required: the key and its 4-byte salt in hex", "data.spi: required: an integer 1..15"]);
    assert.deepEqual(errorsOf({ algorithm: IPSEC_ALGORITHM, key: "00".repeat(16), spi: "1" }), [
      "data.key: is 16 bytes: rfc4106(gcm(aes)) needs 20, 28, 36 (an AES-128/192/256 key and a 4-byte salt)",
    ]);
    assert.deepEqual(errorsOf({ algorithm: IPSEC_ALGORITHM, key: KEY, spi: "2", "previous-algorithm": IPSEC_ALGORITHM, "previous-key": KEY, "previous-spi": "2" }), [
      "data.previous-spi: 2 equals data.spi: a rotation needs a new SPI",
    ]);
    assert.deepEqual(errorsOf({ algorithm: IPSEC_ALGORITHM, key: KEY, spi: "2", "previous-spi": "1" }), [
      "data.previous-algorithm: required: rfc4106(gcm(aes))",
      "data.previous-key: required: the key and its 4-byte salt in hex",
    ]);
  });

  it("rotates to the next SPI, wrapping 15 to 1, with a key of the same length", () => {
    assert.equal(nextSpi(1), 2);
    assert.equal(nextSpi(15), 1);
    const r = rotated({ current: { algorithm: IPSEC_ALGORITHM, keyHex: KEY, spi: 15 } }, "cd".repeat(20));
    assert.deepEqual(r, { current: { algorithm: IPSEC_ALGORITHM, keyHex: "cd".repeat(20), spi: 1 }, previous: { algorithm: IPSEC_ALGORITHM, keyHex: KEY, spi: 15 } });
  });

  it("counts nodes on the current key and names those that cannot use it", () => {
    const s = summarizeNodes(4, [
      { name: "c", spi: 4 },
      { name: "a", ready: { status: "False", reason: "KernelLacksESP", message: "no ESP" } },
      { name: "b", spi: 3 },
    ]);
    assert.equal(nodeCount(s), "1/3");
    assert.deepEqual(s.onCurrent, ["c"]);
    assert.deepEqual(s.unable, [{ name: "a", reason: "KernelLacksESP", message: "no ESP" }]);
    assert.deepEqual(s.pending, ["b"]);
    assert.equal(s.allOnCurrent, false);
    assert.equal(summarizeNodes(4, [{ name: "c", spi: 4 }]).allOnCurrent, true);
    assert.equal(summarizeNodes(4, []).allOnCurrent, false, "no nodes: nothing to say every node moved");
  });
});
