// The pod MTU accounts for what wraps a pod's packet between nodes, so nothing is fragmented on the underlay.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { UNDERLAY_MTU, VXLAN_OVERHEAD, podMtu, wireguardMtu } from "./mtu.ts";

describe("pod MTU", () => {
  it("is the underlay's less VXLAN without encryption (and with IPsec, which sends nothing yet)", () => {
    assert.equal(podMtu("disabled"), 1450);
    assert.equal(podMtu("ipsec"), 1450);
  });

  it("with WireGuard, a full-size pod packet's VXLAN packet fits the device and its WireGuard packet the underlay, even over IPv6", () => {
    assert.equal(podMtu("wireguard"), 1370);
    assert.equal(wireguardMtu(), 1420);
    assert.ok(podMtu("wireguard") + VXLAN_OVERHEAD <= wireguardMtu());
    // Outer IPv6 40 + UDP 8 + WireGuard's header and tag 32.
    assert.ok(wireguardMtu() + 40 + 8 + 32 <= UNDERLAY_MTU);
  });

  it("follows a larger underlay (jumbo frames)", () => {
    assert.equal(podMtu("wireguard", 9000), 8870);
    assert.equal(podMtu("disabled", 9000), 8950);
  });
});
