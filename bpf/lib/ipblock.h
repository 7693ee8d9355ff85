/* NetworkPolicy ipBlocks as pod addresses: prefix -> ipBlock identity, the second look for a pod peer (core/ipblock.ts). */
#ifndef MEMBRANE_IPBLOCK_H
#define MEMBRANE_IPBLOCK_H

#include "common.h"
#include "ipcache.h"

/* A trie of its own, not the ipcache: a pod's address is in the ipcache with its pod identity, and
 * Kubernetes' ipBlock gives the same address a second meaning. Only the prefixes NetworkPolicy
 * ipBlocks name (cidrs and excepts) are here; the longest one holding an address decides. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipblock_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_ipblocks SEC(".maps");

static __always_inline int identity_is_pod(__u32 id)
{
	return id >= IDENTITY_MIN_CLUSTER && id <= IDENTITY_MAX_CLUSTER;
}

/* The ipBlock identity of the longest NetworkPolicy ipBlock prefix holding addr, or 0. */
static __always_inline __u32 ipblock_lookup(__u8 family, const __u8 *addr)
{
	struct ipcache_key k = {};
	struct ipblock_value *v;

	ipcache_address_key(&k, family, addr);
	v = bpf_map_lookup_elem(&membrane_ipblocks, &k);
	return v ? v->identity : 0;
}

#endif
