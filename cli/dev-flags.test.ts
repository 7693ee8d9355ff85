// `membrane dev up`'s encryption flags: WireGuard, strict or not, routed or VXLAN inside; anything else is refused naming the flag.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseEncryptionFlag } from "./dev-pods.ts";

describe("dev up --encryption", () => {
  it("takes wireguard, with or without --encryption-strict, and leaves the other arguments", () => {
    assert.deepEqual(parseEncryptionFlag(["--encryption", "wireguard", "x"]), { ok: true, encryption: { mode: "wireguard", strict: false }, rest: ["x"] });
    assert.deepEqual(parseEncryptionFlag(["--encryption=wireguard", "--encryption-strict"]), { ok: true, encryption: { mode: "wireguard", strict: true }, rest: [] });
    assert.deepEqual(parseEncryptionFlag(["--other"]), { ok: true, rest: ["--other"] });
  });

  it("refuses ipsec, a missing value and strict without a mode, naming the flag", () => {
    assert.deepEqual(parseEncryptionFlag(["--encryption", "ipsec"]), { ok: false, error: '--encryption: must be "wireguard" (this kernel has no ESP, so ipsec carries no traffic here), got "ipsec"' });
    assert.match((parseEncryptionFlag(["--encryption"]) as { error: string }).error, /^--encryption: needs a value/);
    assert.match((parseEncryptionFlag(["--encryption-strict"]) as { error: string }).error, /^--encryption-strict: needs --encryption wireguard/);
  });

  it("--wireguard-routing routed|vxlan is passed to the agents with the encryption; absent, the agents' default (routed) applies", () => {
    assert.deepEqual(parseEncryptionFlag(["--encryption", "wireguard", "--wireguard-routing", "vxlan", "x"]), { ok: true, encryption: { mode: "wireguard", strict: false, routing: "vxlan" }, rest: ["x"] });
    assert.deepEqual(parseEncryptionFlag(["--wireguard-routing=routed", "--encryption=wireguard", "--encryption-strict"]), { ok: true, encryption: { mode: "wireguard", strict: true, routing: "routed" }, rest: [] });
    assert.equal((parseEncryptionFlag(["--encryption", "wireguard"]) as { encryption: { routing?: string } }).encryption.routing, undefined);
  });

  it("refuses an unknown routing, a missing value and routing without --encryption wireguard, naming the flag", () => {
    assert.deepEqual(parseEncryptionFlag(["--encryption", "wireguard", "--wireguard-routing", "native"]), { ok: false, error: '--wireguard-routing: must be one of routed, vxlan, got "native"' });
    assert.match((parseEncryptionFlag(["--encryption", "wireguard", "--wireguard-routing"]) as { error: string }).error, /^--wireguard-routing: needs a value: routed or vxlan/);
    assert.deepEqual(parseEncryptionFlag(["--wireguard-routing", "vxlan"]), { ok: false, error: "--wireguard-routing: needs --encryption wireguard" });
  });
});
