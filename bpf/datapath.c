// The tc programs: from-container (pod egress), to-container (pod ingress), from-overlay (VXLAN ingress).
#include "lib/common.h"
#include "lib/packet.h"
#include "lib/policy.h"
#include "lib/ipcache.h"
#include "lib/endpoints.h"
#include "lib/conntrack.h"
#include "lib/events.h"
#include "lib/config.h"

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

/* Decides a packet of a flow for one endpoint in one direction: conntrack first, then policy for new
 * flows. Returns TC_ACT_OK or TC_ACT_SHOT (the drop already counted and reported). */
static __always_inline int enforce(struct __sk_buff *skb, const struct flow *f, __u8 direction,
				   const struct endpoint_value *ep, __u32 peer)
{
	__u32 src_id = direction == DIR_EGRESS ? ep->identity : peer;
	__u32 dst_id = direction == DIR_EGRESS ? peer : ep->identity;
	__u32 enforced_flag = direction == DIR_EGRESS ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED;
	__u32 rule_id = RULE_ID_NONE;
	struct policy_value *pv;
	struct config_value *cfg;

	if (ct_lookup(f, direction) != CT_NEW)
		return TC_ACT_OK;

	pv = policy_lookup(ep->identity, direction, peer, f->proto, f->dport);
	if (pv) {
		rule_id = pv->rule_id;
		/* Anything but an explicit allow is a deny: a corrupt verdict fails closed. */
		if (pv->verdict != VERDICT_ALLOW)
			return drop(skb, f, direction, DROP_POLICY_DENY, src_id, dst_id, rule_id);
	} else if (ep->flags & enforced_flag) {
		return drop(skb, f, direction, DROP_POLICY_DEFAULT_DENY, src_id, dst_id, rule_id);
	}
	ct_create(f, direction, rule_id);
	cfg = config_get();
	if (cfg && (cfg->flags & CONFIG_F_EVENTS_FORWARDED))
		event_emit(skb, f, EVENT_FORWARDED, direction, DROP_NONE, src_id, dst_id, rule_id);
	return TC_ACT_OK;
}

/* The identity of an address: a local endpoint's, else the ipcache's, else world. */
static __always_inline __u32 identity_of(__u8 family, const __u8 *addr)
{
	struct endpoint_value *ep = endpoint_lookup(family, addr);
	return ep ? ep->identity : ipcache_identity(family, addr);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct flow f;
	__u8 reason = DROP_NONE;
	struct endpoint_value *ep;
	struct ipcache_value *dst;
	struct endpoint_value *local_dst;
	struct config_value *cfg;
	__u32 peer;
	int rc;

	rc = parse_flow(skb, &f, &reason);
	if (rc == PARSE_PASS)
		return TC_ACT_OK;
	if (rc == PARSE_DROP)
		return drop(skb, &f, DIR_EGRESS, reason, 0, 0, RULE_ID_NONE);

	/* The source identity is the endpoint's behind this interface, never what the packet says. */
	ep = endpoint_lookup(f.family, f.saddr);
	if (!ep || ep->ifindex != skb->ifindex)
		return drop(skb, &f, DIR_EGRESS, DROP_SPOOFED_SOURCE, 0, 0, RULE_ID_NONE);

	local_dst = endpoint_lookup(f.family, f.daddr);
	dst = local_dst ? NULL : ipcache_lookup(f.family, f.daddr);
	peer = local_dst ? local_dst->identity : dst ? dst->identity : IDENTITY_WORLD;

	rc = enforce(skb, &f, DIR_EGRESS, ep, peer);
	if (rc != TC_ACT_OK || !dst || !dst->tunnel_endpoint)
		return rc;

	/* A pod on another node: carry our identity in the VNI to that node. */
	cfg = config_get();
	if (!cfg || !cfg->vxlan_ifindex)
		return drop(skb, &f, DIR_EGRESS, DROP_NO_TUNNEL_DEVICE, ep->identity, peer, RULE_ID_NONE);
	struct bpf_tunnel_key key = {};
	key.tunnel_id = ep->identity;
	key.remote_ipv4 = bpf_ntohl(dst->tunnel_endpoint);
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop(skb, &f, DIR_EGRESS, DROP_TUNNEL_KEY, ep->identity, peer, RULE_ID_NONE);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct flow f;
	__u8 reason = DROP_NONE;
	struct endpoint_value *ep;
	__u32 peer;
	int rc;

	rc = parse_flow(skb, &f, &reason);
	if (rc == PARSE_PASS)
		return TC_ACT_OK;
	if (rc == PARSE_DROP)
		return drop(skb, &f, DIR_INGRESS, reason, 0, 0, RULE_ID_NONE);

	ep = endpoint_lookup(f.family, f.daddr);
	if (!ep || ep->ifindex != skb->ifindex)
		return drop(skb, &f, DIR_INGRESS, DROP_UNKNOWN_ENDPOINT, 0, 0, RULE_ID_NONE);

	/* from-overlay vouched for this identity (it checked the sending node). */
	if ((skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_IDENTITY) {
		peer = skb->mark & MARK_IDENTITY_MASK;
		skb->mark = 0;
	} else {
		peer = identity_of(f.family, f.saddr);
	}
	return enforce(skb, &f, DIR_INGRESS, ep, peer);
}

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	struct flow f;
	__u8 reason = DROP_NONE;
	struct bpf_tunnel_key key = {};
	struct ipcache_value *node;
	__be32 outer_src;
	int rc;

	rc = parse_flow(skb, &f, &reason);
	if (rc == PARSE_DROP)
		return drop(skb, &f, DIR_INGRESS, reason, 0, 0, RULE_ID_NONE);
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return drop(skb, &f, DIR_INGRESS, DROP_TUNNEL_KEY, 0, 0, RULE_ID_NONE);

	/* The VNI is an identity claim: only a known node may make it. */
	outer_src = bpf_htonl(key.remote_ipv4);
	node = ipcache_lookup(FAMILY_IPV4, (const __u8 *)&outer_src);
	if (!node || !(node->flags & IPCACHE_F_NODE))
		return drop(skb, &f, DIR_INGRESS, DROP_UNKNOWN_NODE, key.tunnel_id, 0, RULE_ID_NONE);
	if (key.tunnel_id == IDENTITY_WILDCARD || key.tunnel_id > MARK_IDENTITY_MASK)
		return drop(skb, &f, DIR_INGRESS, DROP_INVALID_VNI, key.tunnel_id, 0, RULE_ID_NONE);
	if (rc == PARSE_PASS)
		return TC_ACT_OK;

	skb->mark = MARK_MAGIC_IDENTITY | key.tunnel_id;
	/* The inner frame is addressed to the sending node's interface; deliver it to this host. */
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
