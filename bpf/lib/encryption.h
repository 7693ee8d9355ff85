/* Transparent encryption: cross-node traffic leaves only towards nodes with a working tunnel (strict), and
 * pod packets to a node whose pod CIDRs its WireGuard peer holds are routed into the device without VXLAN
 * (node-agent/encryption/). */
#ifndef MEMBRANE_ENCRYPTION_H
#define MEMBRANE_ENCRYPTION_H

#include "common.h"
#include "ipcache.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct encryption_value);
	__uint(max_entries, 1);
} membrane_encryption SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u8);
	__uint(max_entries, 16384);
} membrane_encrypted_nodes SEC(".maps");

/* Strict mode's pod CIDRs (LPM trie keyed by struct ipcache_key, the agent's: the other nodes' pod CIDRs). A pod
 * packet to one of them that does not take the tunnel (its pod not in the ipcache yet: a pod just started there,
 * or a new client's answer) would follow the node's own route over the underlay in clear. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_strict_cidrs SEC(".maps");

/* Whether strict mode drops (UNENCRYPTED) a pod packet to addr that leaves by the node's routes, not the tunnel. */
static __always_inline int encryption_strict_refuses(__u8 family, const __u8 *addr)
{
	__u32 zero = 0;
	struct encryption_value *e = bpf_map_lookup_elem(&membrane_encryption, &zero);
	struct ipcache_key k = {};

	if (!e || !e->strict)
		return 0;
	ipcache_address_key(&k, family, addr);
	return bpf_map_lookup_elem(&membrane_strict_cidrs, &k) != NULL;
}

/* Where a pod packet to the node at tunnel_endpoint goes: ENCRYPTION_REFUSED (strict, no working tunnel),
 * ENCRYPTION_OVERLAY (the VXLAN overlay, inside the tunnel when there is one) or the WireGuard device's
 * ifindex (routed: the packet as it is, its peer chosen by WireGuard from the destination pod's CIDR). */
#define ENCRYPTION_REFUSED -1
#define ENCRYPTION_OVERLAY 0
static __always_inline int encryption_route(__be32 tunnel_endpoint)
{
	__u32 zero = 0;
	struct encryption_value *e = bpf_map_lookup_elem(&membrane_encryption, &zero);
	__u8 *node;

	if (!e)
		return ENCRYPTION_OVERLAY;
	node = bpf_map_lookup_elem(&membrane_encrypted_nodes, &tunnel_endpoint);
	if (!node)
		return e->strict ? ENCRYPTION_REFUSED : ENCRYPTION_OVERLAY;
	if ((*node & ENCRYPTED_NODE_F_ROUTED) && e->wireguard_ifindex)
		return (int)e->wireguard_ifindex;
	return ENCRYPTION_OVERLAY;
}

/* Whether traffic for another node's own address must go through the tunnel rather than the underlay, where
 * it belongs to a pod's connection that came through the tunnel (a node proxy's upstream connection, its
 * identity in the VNI, and the answers to it): yes when that node's peer works, and in strict mode always
 * (to_tunnel then drops it as UNENCRYPTED without one). Without encryption it stays node traffic. */
static __always_inline int encryption_covers_node(__be32 node)
{
	__u32 zero = 0;
	struct encryption_value *e = bpf_map_lookup_elem(&membrane_encryption, &zero);

	if (!e)
		return 0;
	return e->strict || bpf_map_lookup_elem(&membrane_encrypted_nodes, &node) != NULL;
}

#endif
