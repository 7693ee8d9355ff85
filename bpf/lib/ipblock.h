/* NetworkPolicy ipBlocks as pod addresses and node addresses as their node: prefix -> ipBlock or node identity, the
 * second look for a pod or node peer (core/ipblock.ts, core/node-peers.ts). */
#ifndef MEMBRANE_IPBLOCK_H
#define MEMBRANE_IPBLOCK_H

#include "common.h"
#include "ipcache.h"
#include "packet.h"
#include "policy.h"

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

/* What the first lookup found, for second_look (bits 8-15 of its second argument). */
#define SECOND_LOOK_MISS 0
#define SECOND_LOOK_ALLOW 1
#define SECOND_LOOK_DENY 2
/* In second_look's second argument: the direction is enforced. */
#define SECOND_LOOK_ENFORCED (1u << 16)

/* Whether a peer's address is looked up in the ipBlock map after the first lookup found `first` (SECOND_LOOK_*;
 * core/node-peers.ts secondLookRuns): a pod's (NetworkPolicy ipBlocks, which only allow) only on a miss in an enforced
 * direction; a node's (host, remote-node: toNodes/fromNodes) unless it met a deny, since a node selector in a deny
 * section denies one node among those an allow of its remote-node/host identity (or of every peer) lets through. */
static __always_inline int second_look_runs(__u32 id, __u32 first, __u32 enforced)
{
	if (id == IDENTITY_HOST || id == IDENTITY_REMOTE_NODE)
		return first != SECOND_LOOK_DENY;
	return identity_is_pod(id) && first == SECOND_LOOK_MISS && enforced;
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

/* The second look (second_look_runs, second_look_applies): the entry that replaces the first lookup's answer, packed
 * (policy_pack), or 0 when it stands: an allow found after an allow changes nothing, only a deny does. dir_first: the
 * direction in bits 0-7, the first lookup's SECOND_LOOK_* in 8-15, SECOND_LOOK_ENFORCED. A global function: the
 * verifier checks it once, not on every path of every program that inlines enforce_new (twice in pod_to_host). */
__attribute__((noinline)) __u64 second_look(const struct flow *f, __u32 subject, __u32 dir_first, __u32 peer)
{
	__u8 direction = (__u8)dir_first;
	__u32 first = (dir_first >> 8) & 0xff;
	__u32 block;
	__u64 again;

	if (!f || !second_look_runs(peer, first, dir_first & SECOND_LOOK_ENFORCED))
		return 0;
	block = ipblock_lookup(f->family, direction == DIR_EGRESS ? f->daddr : f->saddr);
	if (!block || !second_look_applies(peer, block))
		return 0;
	again = policy_probe_peer(subject, direction | ((__u32)f->proto << 8), block, f->dport);
	if (first == SECOND_LOOK_ALLOW && (__u8)(again >> 48) == VERDICT_ALLOW)
		return 0;
	return again;
}

#endif
