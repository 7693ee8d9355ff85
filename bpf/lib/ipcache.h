/* The ipcache: IP prefix -> identity, tunnel endpoint and node flag (IPv4 and IPv6; addresses in a hash, CIDRs in a trie). */
#ifndef MEMBRANE_IPCACHE_H
#define MEMBRANE_IPCACHE_H

#include "common.h"

/* Most lookups are of a pod or node address: an exact-match hash answers those in one probe,
 * whatever the size of the cluster; only an address it does not hold walks the trie of CIDRs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ipcache_host_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_ipcache_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_ipcache SEC(".maps");

/* A trie key (struct ipcache_key) for the single address addr: the ipcache's, ipblocks' and strict CIDRs' lookups. */
static __always_inline void ipcache_address_key(struct ipcache_key *k, __u8 family, const __u8 *addr)
{
	k->family = family;
	if (family == FAMILY_IPV4) {
		__builtin_memcpy(k->addr, addr, 4);
		k->prefixlen = IPCACHE_FIXED_PREFIX_BITS + 32;
	} else {
		__builtin_memcpy(k->addr, addr, 16);
		k->prefixlen = IPCACHE_FIXED_PREFIX_BITS + 128;
	}
}

/* The longest prefix that holds addr: its full-length entry if there is one (*exact set), else the trie's. */
static __always_inline struct ipcache_value *ipcache_lookup_exact(__u8 family, const __u8 *addr, int *exact)
{
	struct ipcache_host_key h = { .family = family };
	struct ipcache_key k = { .family = family };
	struct ipcache_value *v;

	if (family == FAMILY_IPV4) {
		__builtin_memcpy(h.addr, addr, 4);
		__builtin_memcpy(k.addr, addr, 4);
		k.prefixlen = IPCACHE_FIXED_PREFIX_BITS + 32;
	} else {
		__builtin_memcpy(h.addr, addr, 16);
		__builtin_memcpy(k.addr, addr, 16);
		k.prefixlen = IPCACHE_FIXED_PREFIX_BITS + 128;
	}
	v = bpf_map_lookup_elem(&membrane_ipcache_hosts, &h);
	*exact = v != 0;
	return v ? v : bpf_map_lookup_elem(&membrane_ipcache, &k);
}

/* The longest prefix that holds addr: its full-length entry if there is one, else the trie's. */
static __always_inline struct ipcache_value *ipcache_lookup(__u8 family, const __u8 *addr)
{
	int exact;

	return ipcache_lookup_exact(family, addr, &exact);
}

/* The identity of an address outside the ipcache, as Cilium gives it: on a dual-stack node (CONFIG_F_DUAL_STACK in
 * config_flags, the config's flags as read once by the program, 0 without a config) its family's world identity,
 * reserved:world-ipv4 (9) or reserved:world-ipv6 (10), which `world` selects and only its own family's entity does; on a
 * single-stack node, or without a config, reserved:world (2) in either family, which no family entity selects (fail
 * closed). family is a parsed flow's (FAMILY_IPV4 or FAMILY_IPV6). Arithmetic, not branches: three constant answers
 * would each be a path of their own through the policy lookup that follows (from_container needed 65 % of the
 * verifier's limit with them, 49 % before). */
_Static_assert(((FAMILY_IPV4 >> 1) & 1) == 0 && ((FAMILY_IPV6 >> 1) & 1) == 1, "bit 1 of the family tells IPv6");
_Static_assert(IDENTITY_WORLD_IPV4 == IDENTITY_WORLD + 7 && IDENTITY_WORLD_IPV6 == IDENTITY_WORLD + 8, "the world identities' numbers");
static __always_inline __u32 ipcache_unknown_identity(__u32 config_flags, __u8 family)
{
	__u32 dual = (config_flags / CONFIG_F_DUAL_STACK) & 1;

	return IDENTITY_WORLD + dual * (7 + ((family >> 1) & 1));
}

#endif
