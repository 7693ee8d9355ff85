// The pod MTU: the underlay's, less what wraps a pod's packet on its way to another node — the VXLAN
// overlay, or WireGuard when encryption is on (around the overlay in the vxlan routing), the accounting
// Cilium does, so that no outer packet is fragmented on the underlay.
import type { AgentEncryptionMode } from "./encryption/publication.ts";

/** The underlay MTU assumed when none is given (Ethernet). */
export const UNDERLAY_MTU = 1500;
/** VXLAN over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;
/** WireGuard: outer IP + UDP 8 + its header and tag 32; counted with IPv6's 40-byte header (as Cilium and wg-quick do), so it fits either underlay. */
export const WIREGUARD_OVERHEAD = 80;

/** The WireGuard device's MTU: what fits in one underlay packet once WireGuard has wrapped it. */
export function wireguardMtu(underlayMtu = UNDERLAY_MTU): number {
  return underlayMtu - WIREGUARD_OVERHEAD;
}

/**
 * How pod packets reach an encrypted node: routed into the WireGuard device as they are (the default, as
 * Cilium's WireGuard does; the receiver takes the source identity from its ipcache), or VXLAN inside
 * WireGuard (the identity in the VNI).
 */
export const WIREGUARD_ROUTINGS = ["routed", "vxlan"] as const;
export type WireguardRouting = (typeof WIREGUARD_ROUTINGS)[number];

/**
 * The MTU a pod's interface gets. IPsec adds nothing here: no IPsec traffic is sent (see
 * node-agent/encryption/ipsec.ts). WireGuard routed carries no VXLAN header inside, so only WireGuard's
 * overhead is taken from the underlay's; plain VXLAN to a node without encryption fits it too.
 */
export function podMtu(encryption: AgentEncryptionMode, underlayMtu = UNDERLAY_MTU, routing: WireguardRouting = "routed"): number {
  if (encryption === "wireguard") return wireguardMtu(underlayMtu) - (routing === "vxlan" ? VXLAN_OVERHEAD : 0);
  return underlayMtu - VXLAN_OVERHEAD;
}
