// The pod MTU: the underlay's, less what wraps a pod's packet on its way to another node — the VXLAN
// overlay, and WireGuard around the overlay when encryption is on (the accounting Cilium does), so that
// no outer packet is fragmented on the underlay.
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

/** The MTU a pod's interface gets. IPsec adds nothing here: no IPsec traffic is sent (see node-agent/encryption/ipsec.ts). */
export function podMtu(encryption: AgentEncryptionMode, underlayMtu = UNDERLAY_MTU): number {
  return (encryption === "wireguard" ? wireguardMtu(underlayMtu) : underlayMtu) - VXLAN_OVERHEAD;
}
