/* Host firewall: the node's own addresses as the host endpoint (reserved:host), and the lock-out guard. */
#ifndef MEMBRANE_HOSTFW_H
#define MEMBRANE_HOSTFW_H

#include "common.h"

/* The node's own addresses: what makes a packet on an external device the node's own traffic
 * (anything else there is forwarded, judged by its pod's programs). A map of its own, not the
 * endpoints map: the agent reconciles that one against the pods' veths. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
	__uint(max_entries, 256);
} membrane_host_addrs SEC(".maps");

/* What the cluster needs to keep running is never cut by a host policy (node-agent/hostfw.ts). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct host_guard_key);
	__type(value, struct host_guard_value);
	__uint(max_entries, 256);
} membrane_host_guard SEC(".maps");

static __always_inline struct endpoint_value *host_endpoint_lookup(__u8 family, const __u8 *addr)
{
	struct endpoint_key k = { .family = family };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&membrane_host_addrs, &k);
}

/* Whether the guard lets a new connection of the host through before policy: (direction, proto,
 * destination port) listed, for any peer or only for a cluster node. */
static __always_inline int host_guard_allows(__u8 direction, __u8 proto, __be16 dport, int peer_is_node)
{
	struct host_guard_key k = { .direction = direction, .proto = proto, .port = dport };
	struct host_guard_value *v = bpf_map_lookup_elem(&membrane_host_guard, &k);

	return v && (v->peers == HOST_GUARD_ANY_PEER || (v->peers == HOST_GUARD_NODE_PEER && peer_is_node));
}

/* A pod's connection to its own node's address never crosses a node device: from-container hands its
 * first packet to pod_to_host (datapath.c), which judges it by the host's ingress policy as well. A
 * program of its own, reached by a tail call: inlined into from-container, the two policy decisions
 * made that program too large for the verifier (E2BIG). The agent writes the slot after loading. */
#define TAIL_CALL_POD_TO_HOST 0

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} membrane_tail_calls SEC(".maps");

/* Whether a pod's new connection to this address must also pass the host's ingress policy. */
static __always_inline int host_ingress_judged(__u8 family, const __u8 *addr)
{
	struct endpoint_value *host = host_endpoint_lookup(family, addr);

	return host && (host->flags & EP_F_INGRESS_ENFORCED);
}

#endif
