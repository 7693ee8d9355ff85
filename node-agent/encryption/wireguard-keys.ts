// The node's WireGuard key pair: the private key is generated on the node, kept in the state directory (mode 0600) and never leaves it; the public key is derived from it.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

/** PKCS#8 DER header of an X25519 private key: followed by the 32 raw bytes. */
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");

export function newPrivateKey(): Buffer {
  const { privateKey } = generateKeyPairSync("x25519");
  return privateKey.export({ format: "der", type: "pkcs8" }).subarray(PKCS8_X25519.length);
}

export function publicKeyOf(privateKey: Buffer): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: "der", type: "pkcs8" });
  return createPublicKey(key).export({ format: "der", type: "spki" }).subarray(-32);
}

/** The key in `file` (base64, as `wg genkey` writes it), made with mode 0600 when missing or unreadable as a key. */
export function loadOrCreatePrivateKey(file: string): Buffer {
  if (existsSync(file)) {
    const key = Buffer.from(readFileSync(file, "utf8").trim(), "base64");
    if (key.length === 32) {
      chmodSync(file, 0o600);
      return key;
    }
  }
  const key = newPrivateKey();
  savePrivateKey(file, key);
  return key;
}

/** Written beside and renamed over: a crash never leaves half a key. */
export function savePrivateKey(file: string, key: Buffer): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${key.toString("base64")}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}
