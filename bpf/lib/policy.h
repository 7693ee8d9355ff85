/* The policy map and its lookup: the order of core/model.ts (most specific first, first hit wins). */
#ifndef MEMBRANE_POLICY_H
#define MEMBRANE_POLICY_H

#include "common.h"

#ifndef POLICY_MAP_ENTRIES
#define POLICY_MAP_ENTRIES 262144
#endif
#ifndef POLICY_LENS_MAP_ENTRIES
#define POLICY_LENS_MAP_ENTRIES 65536
#endif

/* Exact-match hash, not an LPM trie: a trie's walk grows with the number of entries in it, a hash
 * probe does not. A port range is found by probing only the port-prefix lengths the subject uses
 * (membrane_policy_lens), longest first, so the cost is flat in N. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, POLICY_MAP_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_lens_key);
	__type(value, struct policy_lens_value);
	__uint(max_entries, POLICY_LENS_MAP_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} membrane_policy_lens SEC(".maps");

/* One element per CPU: the class entry policy_lookup found, as a map value like every other answer (the
 * class's entry comes back from a global function by value). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_value);
	__uint(max_entries, 1);
} membrane_policy_class_hit SEC(".maps");

static __always_inline struct policy_value *
policy_probe(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport, __u32 port_len)
{
	__u16 mask = port_len ? (__u16)(0xffff << (16 - port_len)) : 0;
	struct policy_key k = {
		.prefixlen = POLICY_FIXED_PREFIX_BITS + port_len,
		.subject = subject,
		.peer = peer,
		.direction = direction,
		.proto = proto,
		.dport = bpf_htons(bpf_ntohs(dport) & mask),
	};
	return bpf_map_lookup_elem(&membrane_policy, &k);
}

/* The entry for (peer, proto, port) with the longest port prefix among the lengths in lens. */
static __always_inline struct policy_value *
policy_probe_ports(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport, __u32 lens)
{
	struct policy_value *v;
	int len;

	for (len = 16; len >= 0; len--) {
		if (!(lens & (1u << len)))
			continue;
		v = policy_probe(subject, direction, peer, proto, dport, len);
		if (v)
			return v;
	}
	return NULL;
}

/* Levels 1 and 2 for one peer: (peer, proto, port), then (peer, ANY, *). lens: the lens for that
 * kind of peer. proto 0 is level 2's key: level 1 only for a real protocol. */
static __always_inline struct policy_value *
policy_probe_levels(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport, __u32 lens)
{
	struct policy_value *v;

	v = policy_probe_ports(subject, direction, peer, proto, dport, lens & (proto ? POLICY_LENS_PORT_MASK : 0));
	if (v)
		return v;
	if (lens & POLICY_LENS_ANY_PROTO)
		return policy_probe(subject, direction, peer, 0, 0, 0);
	return NULL;
}

/* Whether a peer identity is one of the `cluster` entity's (core/identity.ts inClusterClass): a cluster
 * identity, or a reserved one in the cluster (host, unmanaged, health, init, remote-node, kube-apiserver, ingress). */
static __always_inline int identity_in_cluster_class(__u32 id)
{
	return (id >= IDENTITY_MIN_CLUSTER && id <= IDENTITY_MAX_CLUSTER) || (id >= IDENTITY_HOST && id <= 8 && id != IDENTITY_WORLD);
}

/* Whether a peer identity is in the `world` class (core/identity.ts inWorldClass): a reserved world identity or a
 * local one: the operator's CIDR identities and the agent's FQDN identities (a learned address is a world peer too;
 * the agent writes its own keys where the class's do not answer for it). ipBlock identities share that range but are
 * never a packet's peer. */
static __always_inline int identity_in_world_class(__u32 id)
{
	return id == IDENTITY_WORLD || id == IDENTITY_WORLD_IPV4 || id == IDENTITY_WORLD_IPV6 || (id >= IDENTITY_MIN_LOCAL && id <= IDENTITY_MAX_LOCAL);
}

/* The class whose entries answer for a peer after its own keys (core/identity.ts answeringClass): for a peer in the
 * world class other than IDENTITY_WORLD, its family's world class (the packet's family: an address's identity only
 * meets packets of its family) when the subject has its entries, else the world class when the subject has its
 * entries; the every-pod class for a pod when the subject has its entries
 * (they hold the cluster entity's rules too), else the cluster class for a peer in it when the subject has its
 * entries; 0 for none. */
static __always_inline __u32 policy_answering_class(__u32 peer_lens, __u32 peer, __u8 family)
{
	if (identity_in_world_class(peer)) {
		if (peer != IDENTITY_WORLD) {
			if (family == FAMILY_IPV4 && (peer_lens & POLICY_LENS_WORLD_IPV4))
				return IDENTITY_CLASS_WORLD_IPV4;
			if (family == FAMILY_IPV6 && (peer_lens & POLICY_LENS_WORLD_IPV6))
				return IDENTITY_CLASS_WORLD_IPV6;
		}
		return (peer_lens & POLICY_LENS_WORLD) ? IDENTITY_CLASS_WORLD : 0;
	}
	if ((peer_lens & POLICY_LENS_PODS) && peer >= IDENTITY_MIN_CLUSTER && peer <= IDENTITY_MAX_CLUSTER)
		return IDENTITY_CLASS_PODS;
	if ((peer_lens & POLICY_LENS_CLASS) && identity_in_cluster_class(peer))
		return IDENTITY_CLASS_CLUSTER;
	return 0;
}

#define POLICY_PACKED_FOUND (1ull << 63)

/* An entry as a global function returns it (found bit 63, verdict in bits 48-55, proxy port 32-47, rule id 0-31), or 0
 * for none. */
static __always_inline __u64 policy_pack(const struct policy_value *v)
{
	return v ? POLICY_PACKED_FOUND | ((__u64)v->verdict << 48) | ((__u64)v->proxy_port << 32) | v->rule_id : 0;
}

/* A packed entry (policy_pack, found) as a map value: this CPU's membrane_policy_class_hit, read before the program
 * ends. NULL only if the array had no element, which cannot happen (the caller's default then decides). */
static __always_inline struct policy_value *policy_unpack(__u64 c)
{
	__u32 zero = 0;
	struct policy_value *v = bpf_map_lookup_elem(&membrane_policy_class_hit, &zero);

	if (!v)
		return NULL;
	v->verdict = (__u8)(c >> 48);
	v->pad = 0;
	v->proxy_port = (__u16)(c >> 32);
	v->rule_id = (__u32)c;
	return v;
}
/* In peer_lens: any class's entries (policy_lookup calls policy_probe_class only then). */
#define POLICY_LENS_CLASSES (POLICY_LENS_CLASS | POLICY_LENS_PODS | POLICY_LENS_WORLD | POLICY_LENS_WORLD_IPV4 | POLICY_LENS_WORLD_IPV6)

/* Level C of policy_lookup, the levels 1 and 2 of the class that answers for the peer (policy_answering_class), as a
 * global function: the verifier checks it once, not on every path of every program that inlines policy_lookup
 * (inlined, to-container was too complex to verify). Returns the entry packed (found bit 63, verdict in bits 48-55,
 * proxy port 32-47, rule id 0-31), or 0 when no class answers or it has no entry. */
__attribute__((noinline)) __u64 policy_probe_class(__u32 subject, __u32 dir_proto_family, __u32 peer, __u32 dport, __u32 lens)
{
	/* A BPF function takes at most five arguments: the direction in bits 0-7, the protocol in 8-15, the packet's
	 * family in 16-23. */
	__u32 class_peer = policy_answering_class(lens, peer, (__u8)(dir_proto_family >> 16));
	struct policy_value *v;

	if (!class_peer)
		return 0;
	v = policy_probe_levels(subject, (__u8)dir_proto_family, class_peer, (__u8)(dir_proto_family >> 8), dport, lens);
	return policy_pack(v);
}

/* Returns the first matching entry of:
 *   1. (peer, proto, port)  2. (peer, ANY, *)
 *   C. levels 1 and 2 for the class that answers for the peer (policy_answering_class), if any
 *   3. (0, proto, port)  4. (0, ANY, *)
 * or NULL (then the endpoint's enforcement flag decides). Probes only the keys the subject's
 * entries use (membrane_policy_lens): a subject without entries in this direction costs one lookup,
 * and only a subject with class entries (POLICY_LENS_CLASS, POLICY_LENS_PODS, POLICY_LENS_WORLD, _WORLD_IPV4/6) probes a class's
 * keys. family: the packet's (FAMILY_IPV4/6), which picks a world peer's family class. A class
 * entry is returned as a copy in this CPU's membrane_policy_class_hit (read before the program ends). */
static __always_inline struct policy_value *
policy_lookup(__u32 subject, __u8 direction, __u32 peer, __u8 proto, __be16 dport, __u8 family)
{
	struct policy_lens_key lk = { .subject = subject, .direction = direction };
	struct policy_lens_value *lv;
	struct policy_value *v;
	__u32 port_mask = proto ? POLICY_LENS_PORT_MASK : 0;
	__u32 wildcard_lens;

	lv = bpf_map_lookup_elem(&membrane_policy_lens, &lk);
	if (!lv)
		return NULL;
	wildcard_lens = lv->wildcard_lens;

	if (peer != IDENTITY_WILDCARD) {
		v = policy_probe_levels(subject, direction, peer, proto, dport, lv->peer_lens);
		if (v)
			return v;
		if (lv->peer_lens & POLICY_LENS_CLASSES) {
			__u64 c = policy_probe_class(subject, direction | ((__u32)proto << 8) | ((__u32)family << 16), peer, dport, lv->peer_lens);

			if (c)
				return policy_unpack(c);
		}
	}
	v = policy_probe_ports(subject, direction, IDENTITY_WILDCARD, proto, dport, wildcard_lens & port_mask);
	if (v)
		return v;
	if (wildcard_lens & POLICY_LENS_ANY_PROTO)
		return policy_probe(subject, direction, IDENTITY_WILDCARD, 0, 0, 0);
	return NULL;
}

/* Only levels 1 and 2 for peer (the wildcard's levels are the caller's first lookup): the second look with a pod's
 * ipBlock identity or a node peer's node identity, packed (policy_pack); inlined in bpf/lib/ipblock.h second_look, a
 * global function. dir_proto: the direction in bits 0-7, the protocol in 8-15. */
static __always_inline __u64 policy_probe_peer(__u32 subject, __u32 dir_proto, __u32 peer, __u32 dport)
{
	struct policy_lens_key lk = { .subject = subject, .direction = (__u8)dir_proto };
	struct policy_lens_value *lv;

	lv = bpf_map_lookup_elem(&membrane_policy_lens, &lk);
	if (!lv)
		return 0;
	return policy_pack(policy_probe_levels(subject, (__u8)dir_proto, peer, (__u8)(dir_proto >> 8), dport, lv->peer_lens));
}

#endif
