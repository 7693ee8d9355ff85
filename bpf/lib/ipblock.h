/* NetworkPolicy ipBlocks as pod addresses and node addresses as their node: prefix -> ipBlock or node identity, the
 * second look for a pod or node peer (core/ipblock.ts, core/node-peers.ts). */
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

/* Whether a peer's address is looked up in the ipBlock map after the first lookup found `first` (NULL: a miss;
 * core/node-peers.ts secondLookRuns): a pod's (NetworkPolicy ipBlocks, which only allow) only on a miss in an enforced
 * direction; a node's (host, remote-node: toNodes/fromNodes) unless it met a deny, since a node selector in a deny
 * section denies one node among those an allow of its remote-node/host identity (or of every peer) lets through. */
static __always_inline int second_look_runs(__u32 id, const struct policy_value *first, __u32 enforced)
{
	if (id == IDENTITY_HOST || id == IDENTITY_REMOTE_NODE)
		return !first || first->verdict == VERDICT_ALLOW;
	return identity_is_pod(id) && !first && enforced;
}

/* Whether the map's answer for a peer's address stands for it: a pod's address meets ipBlock identities only, a
 * node's its node identity only (a NetworkPolicy ipBlock holding a node's address never selects the node). */
static __always_inline int second_look_applies(__u32 peer, __u32 answer)
{
	int node_answer = answer >= IDENTITY_MIN_NODE && answer <= IDENTITY_MAX_NODE;

	return identity_is_pod(peer) ? !node_answer : node_answer;
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
