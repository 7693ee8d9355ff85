// The pod MTU accounts for what wraps a pod's packet between nodes, so nothing is fragmented on the underlay.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { UNDERLAY_MTU, VXLAN_OVERHEAD, podMtu, wireguardMtu } from "./mtu.ts";

describe("pod MTU", () => {
  it("is the underlay's less VXLAN without encryption (and with IPsec, which sends nothing yet)", () => {
    assert.equal(podMtu("disabled"), 1450);
    assert.equal(podMtu("ipsec"), 1450);
  });

  it("with WireGuard routed (no VXLAN inside), a full-size pod packet fits the device and its WireGuard packet the underlay, even over IPv6; plain VXLAN fits too", () => {
    assert.equal(podMtu("wireguard"), 1420);
    assert.equal(wireguardMtu(), 1420);
    assert.ok(podMtu("wireguard") <= wireguardMtu());
    assert.ok(podMtu("wireguard") + VXLAN_OVERHEAD <= UNDERLAY_MTU, "to a node without encryption (not strict), the VXLAN packet fits the underlay");
    // Outer IPv6 40 + UDP 8 + WireGuard's header and tag 32.
    assert.ok(wireguardMtu() + 40 + 8 + 32 <= UNDERLAY_MTU);
  });

  it("with VXLAN inside WireGuard, a full-size pod packet's VXLAN packet fits the device", () => {
    assert.equal(podMtu("wireguard", UNDERLAY_MTU, "vxlan"), 1370);
    assert.ok(podMtu("wireguard", UNDERLAY_MTU, "vxlan") + VXLAN_OVERHEAD <= wireguardMtu());
  });

  it("follows a larger underlay (jumbo frames)", () => {
    assert.equal(podMtu("wireguard", 9000), 8920);
    assert.equal(podMtu("wireguard", 9000, "vxlan"), 8870);
    assert.equal(podMtu("disabled", 9000), 8950);
  });
});
