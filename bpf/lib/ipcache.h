/* The ipcache: IP prefix -> identity, tunnel endpoint and node flag (IPv4 and IPv6 in one trie). */
#ifndef MEMBRANE_IPCACHE_H
#define MEMBRANE_IPCACHE_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_ipcache SEC(".maps");

static __always_inline struct ipcache_value *ipcache_lookup(__u8 family, const __u8 *addr)
{
	struct ipcache_key k = { .family = family };

	if (family == FAMILY_IPV4) {
		k.prefixlen = IPCACHE_FIXED_PREFIX_BITS + 32;
		__builtin_memcpy(k.addr, addr, 4);
	} else {
		k.prefixlen = IPCACHE_FIXED_PREFIX_BITS + 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	return bpf_map_lookup_elem(&membrane_ipcache, &k);
}

/* The identity of a remote address: world when the ipcache does not know it. */
static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr)
{
	struct ipcache_value *v = ipcache_lookup(family, addr);
	return v ? v->identity : IDENTITY_WORLD;
}

#endif
