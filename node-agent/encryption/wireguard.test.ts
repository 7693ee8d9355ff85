// WireGuard pieces without a device: keys as wg(8) derives them, the private key file's mode, UAPI requests and answers, device names.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { loadOrCreatePrivateKey, newPrivateKey, publicKeyOf } from "./wireguard-keys.ts";
import { parseDeviceState, setRequest } from "./wireguard-uapi.ts";
import { wireguardIfname } from "./wireguard.ts";
import { peerNode } from "./mode.ts";

describe("WireGuard keys and configuration", () => {
  it("derives the public key as wg pubkey does", () => {
    const priv = newPrivateKey();
    assert.equal(priv.length, 32);
    const theirs = execFileSync("wg", ["pubkey"], { input: priv.toString("base64") + "\n" }).toString().trim();
    assert.equal(publicKeyOf(priv).toString("base64"), theirs);
  });

  it("keeps the private key in the state directory with mode 0600, and reuses it", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "wgkey-"));
    try {
      const file = path.join(dir, "state", "wireguard.key");
      const a = loadOrCreatePrivateKey(file);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(loadOrCreatePrivateKey(file), a, "a restart keeps the key");
      assert.equal(readFileSync(file, "utf8").trim(), a.toString("base64"));
      writeFileSync(file, "not a key\n");
      assert.notDeepEqual(loadOrCreatePrivateKey(file), a, "an unreadable key is replaced");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("writes UAPI set requests: peers updated in place with every allowed IP (the node and its pod CIDR), removals by key", () => {
    const k = Buffer.alloc(32, 1);
    assert.equal(
      setRequest({ privateKey: k, listenPort: 51871, peers: [{ publicKey: Buffer.alloc(32, 2), endpoint: "172.30.0.3:51871", allowedIPs: ["172.30.0.3/32", "10.244.2.0/24"] }], remove: ["ab".repeat(32)] }),
      `set=1\nprivate_key=${"01".repeat(32)}\nlisten_port=51871\npublic_key=${"ab".repeat(32)}\nremove=true\npublic_key=${"02".repeat(32)}\nendpoint=172.30.0.3:51871\nreplace_allowed_ips=true\nallowed_ip=172.30.0.3/32\nallowed_ip=10.244.2.0/24\n\n`,
    );
    assert.equal(setRequest({ keepalive: new Map([["02".repeat(32), 1]]) }), `set=1\npublic_key=${"02".repeat(32)}\npersistent_keepalive_interval=1\n\n`);
  });

  it("reads a get answer: peers, handshakes, bytes", () => {
    const s = parseDeviceState(`private_key=${"01".repeat(32)}\nlisten_port=51871\npublic_key=${"02".repeat(32)}\nendpoint=172.30.0.3:51871\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\nallowed_ip=172.30.0.3/32\nerrno=0\n\n`);
    assert.equal(s.listenPort, 51871);
    assert.deepEqual(s.peers, [{ publicKey: "02".repeat(32), endpoint: "172.30.0.3:51871", allowedIPs: ["172.30.0.3/32"], lastHandshake: 1700000000, rxBytes: 10, txBytes: 20 }]);
  });

  it("names each node's device uniquely within 15 bytes, the same on every start", () => {
    assert.equal(wireguardIfname("node-1"), wireguardIfname("node-1"));
    assert.notEqual(wireguardIfname("node-1"), wireguardIfname("node-2"));
    assert.ok(wireguardIfname("a-very-long-node-name.example.com").length <= 15);
  });

  it("a CiliumNode becomes a peer by its InternalIP and published key", () => {
    assert.deepEqual(peerNode({ metadata: { name: "n" }, spec: { addresses: [{ type: "ExternalIP", ip: "1.2.3.4" }, { type: "InternalIP", ip: "172.30.0.3" }], encryption: { publicKey: "k" } } }), { name: "n", publicKey: "k", internalIP: "172.30.0.3" });
    assert.deepEqual(peerNode({ metadata: { name: "n" } }), { name: "n" });
  });
});
