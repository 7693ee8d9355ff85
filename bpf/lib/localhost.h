/* The node's own traffic to its pods (Cilium's --allow-localhost): the kubelet's probes, hostNetwork pods, the node's
 * processes. Kubernetes demands that a node can always reach its pods, so by default (always) it passes whatever their
 * ingress policy says; with CONFIG_F_LOCALHOST_POLICY it is judged by that policy as reserved:host's. A pod still at
 * reserved:init (adopted before the operator's first state) is reachable by its node in both modes, as Cilium's init
 * identity is. */
#ifndef MEMBRANE_LOCALHOST_H
#define MEMBRANE_LOCALHOST_H

#include "common.h"
#include "ipblock.h"

/* Whether a new connection arriving at a pod was sent by the node's own stack. Known by how the packet came, not by
 * its source address (the kubelet's probes leave from the pods' gateway address, which no map names): no receiving
 * device (ingress_ifindex 0; anything forwarded, from a pod, the overlay, WireGuard or a node device, has one), no
 * proxy marked it as a client's, and its source is no pod. */
static __always_inline int from_local_host(const struct __sk_buff *skb, __u32 magic, __u32 peer, int src_is_local_endpoint)
{
	return skb->ingress_ifindex == 0 && magic == 0 && !src_is_local_endpoint && !identity_is_pod(peer);
}

/* Whether the node's own new connection to this pod passes without its ingress policy. */
static __always_inline int local_host_passes(const struct endpoint_value *ep, __u32 config_flags)
{
	return ep->identity == IDENTITY_INIT || !(config_flags & CONFIG_F_LOCALHOST_POLICY);
}

#endif
