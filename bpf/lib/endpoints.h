/* The local endpoints: pod IP -> host-side ifindex, identity and enforcement flags. */
#ifndef MEMBRANE_ENDPOINTS_H
#define MEMBRANE_ENDPOINTS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
	__uint(max_entries, 65536);
} membrane_endpoints SEC(".maps");

static __always_inline struct endpoint_value *endpoint_lookup(__u8 family, const __u8 *addr)
{
	struct endpoint_key k = { .family = family };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&membrane_endpoints, &k);
}

#endif
