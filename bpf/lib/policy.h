/* The policy map and its lookup: the order of core/model.ts (most specific first, first hit wins). */
#ifndef MEMBRANE_POLICY_H
#define MEMBRANE_POLICY_H

#include "common.h"

#ifndef POLICY_MAP_ENTRIES
#define POLICY_MAP_ENTRIES 262144
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, POLICY_MAP_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_policy SEC(".maps");

static __always_inline struct policy_value *
policy_probe(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport)
{
	struct policy_key k = {
		.prefixlen = POLICY_FIXED_PREFIX_BITS + (proto ? 16 : 0),
		.subject = subject,
		.peer = peer,
		.direction = direction,
		.proto = proto,
		.dport = proto ? dport : 0,
	};
	return bpf_map_lookup_elem(&membrane_policy, &k);
}

/* Returns the first matching entry of:
 *   1. (peer, proto, port)  2. (peer, ANY, *)  3. (0, proto, port)  4. (0, ANY, *)
 * or NULL (then the endpoint's enforcement flag decides). */
static __always_inline struct policy_value *
policy_lookup(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport)
{
	struct policy_value *v;

	v = policy_probe(subject, direction, peer, proto, dport);
	if (v)
		return v;
	v = policy_probe(subject, direction, peer, 0, 0);
	if (v)
		return v;
	v = policy_probe(subject, direction, IDENTITY_WILDCARD, proto, dport);
	if (v)
		return v;
	return policy_probe(subject, direction, IDENTITY_WILDCARD, 0, 0);
}

#endif
