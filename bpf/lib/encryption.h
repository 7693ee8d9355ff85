/* Strict transparent encryption: cross-node traffic leaves only towards nodes with a working tunnel (node-agent/encryption/). */
#ifndef MEMBRANE_ENCRYPTION_H
#define MEMBRANE_ENCRYPTION_H

#include "common.h"

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

/* Whether a packet to the node at tunnel_endpoint would leave unencrypted under strict mode. */
static __always_inline int encryption_refuses(__be32 tunnel_endpoint)
{
	__u32 zero = 0;
	struct encryption_value *e = bpf_map_lookup_elem(&membrane_encryption, &zero);

	if (!e || !e->strict)
		return 0;
	return bpf_map_lookup_elem(&membrane_encrypted_nodes, &tunnel_endpoint) == NULL;
}

#endif
