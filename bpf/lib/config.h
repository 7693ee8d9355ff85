/* Node-wide datapath settings written by the agent (one array element). */
#ifndef MEMBRANE_CONFIG_H
#define MEMBRANE_CONFIG_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config_value);
	__uint(max_entries, 1);
} membrane_config SEC(".maps");

static __always_inline struct config_value *config_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&membrane_config, &zero);
}

#endif
