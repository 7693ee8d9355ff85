// The tc programs: from-container (pod egress), to-container (pod ingress), from-overlay (VXLAN ingress),
// from-wireguard (WireGuard device ingress),
// to-host/from-host (the host firewall on the node's external devices).
#include "lib/common.h"
#include "lib/packet.h"
#include "lib/policy.h"
#include "lib/ipcache.h"
#include "lib/ipblock.h"
#include "lib/endpoints.h"
#include "lib/conntrack.h"
#include "lib/events.h"
#include "lib/config.h"
#include "lib/monitor.h"
#include "lib/redirect.h"
#include "lib/audit.h"
#include "lib/encryption.h"
#include "lib/hostfw.h"
#include "lib/localhost.h"

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

/* Not a tc verdict: the prologue found the endpoint and the program goes on. */
#define PROLOGUE_CONTINUE -1

/* The endpoint check both endpoint programs make: the local endpoint the packet belongs to (its source on
 * egress, its destination on ingress) is behind this interface, and its policy could be installed. Returns
 * PROLOGUE_CONTINUE with *ep set, or the tc verdict (a drop already counted and reported). */
static __always_inline int endpoint_check(struct __sk_buff *skb, const struct flow *f, __u8 direction,
					  struct endpoint_value **ep)
{
	/* On egress the source identity is the endpoint's behind this interface, never what the
	 * packet says: a source address that is not this interface's pod is spoofed. */
	*ep = endpoint_lookup(f->family, direction == DIR_EGRESS ? f->saddr : f->daddr);
	if (!*ep || (*ep)->ifindex != skb->ifindex)
		return drop(skb, f, direction, direction == DIR_EGRESS ? DROP_SPOOFED_SOURCE : DROP_UNKNOWN_ENDPOINT,
			    0, 0, RULE_ID_NONE);
	/* Established flows too: what the endpoint's policy allowed is no longer known to be in force. */
	if ((*ep)->flags & EP_F_POLICY_FAILED)
		return drop(skb, f, direction, DROP_POLICY_OVERFLOW, direction == DIR_EGRESS ? (*ep)->identity : 0,
			    direction == DIR_EGRESS ? 0 : (*ep)->identity, RULE_ID_NONE);
	return PROLOGUE_CONTINUE;
}

/* Parses the frame once: PROLOGUE_CONTINUE, or the tc verdict (a pass, or a drop counted and reported). */
static __always_inline int endpoint_parse(struct __sk_buff *skb, struct flow *f, __u8 direction)
{
	__u8 reason = DROP_NONE;
	int rc = parse_flow(skb, f, &reason);

	if (rc == PARSE_PASS)
		return TC_ACT_OK;
	if (rc == PARSE_DROP)
		return drop(skb, f, direction, reason, 0, 0, RULE_ID_NONE);
	return PROLOGUE_CONTINUE;
}

/* The prologue of an endpoint program that checks the endpoint before anything else (pod_to_host). */
static __always_inline int endpoint_prologue(struct __sk_buff *skb, struct flow *f, __u8 direction,
					    struct endpoint_value **ep)
{
	int rc = endpoint_parse(skb, f, direction);

	return rc != PROLOGUE_CONTINUE ? rc : endpoint_check(skb, f, direction, ep);
}

/* The stamp an endpoint program gives the conntrack entries it creates and trusts (ct_stamp_of), from the config read
 * at its start, before any endpoint lookup. */
static __always_inline __u64 endpoint_stamp(struct __sk_buff *skb, const struct config_value *cfg)
{
	return ct_stamp_of(skb->ifindex, cfg ? cfg->ep_gen : 0);
}

/* Whether an endpoint program may pass a known flow's packet without the endpoint check (endpoint_check): its
 * conntrack entry carries the stamp of this interface and of the current endpoint generation, and the monitor
 * aggregation reports nothing for it. Why that is as strong as the check:
 * - the stamp is written only after the check passed a packet of the same entry (the same 5-tuple and direction)
 *   on this interface, with the generation read before that check's endpoint lookup;
 * - the agent adds one to the generation after every write or delete of an endpoint (its flags, incl.
 *   EP_F_POLICY_FAILED, its interface, its identity, the endpoint or one of its addresses removed): an entry stamped
 *   before any such change no longer matches and its next packet takes the check again, and a spoofed packet with
 *   the flow's 5-tuple sent on another pod's interface finds another ifindex than the stamp's;
 * - an interface number reused after a pod was deleted: the deletion moved the generation, so the old pod's
 *   entries are checked again (and dropped unless the address is again this interface's endpoint, as before).
 * A packet that matched an entry without this stamp did not refresh it (ct_found): ct_stamp does, once the check
 * passed. */
static __always_inline int endpoint_fast_path(enum ct_status ct, const struct ct_ctx *ctx, __u64 stamp, __u32 monitor)
{
	return ct != CT_NEW && ctx->entry && ct_stamped(ctx->entry, stamp) && !(monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS));
}

/* Decides the first packet of a flow by policy: a drop is counted and reported (in policy audit mode it
 * passes as an audit, bpf/lib/audit.h); an allow creates the
 * conntrack entry (ct_flags: CT_F_*) and, unless the monitor aggregation is maximum, reports the new
 * connection once. An egress allow whose entry names a served proxy port is copied to *proxy (and
 * the conntrack entry gets CT_F_PROXY): the caller steers the flow there. An ingress allow naming a
 * served proxy port passes only a connection the node's proxy opened after applying those rules
 * (l7_applied; from-container steers local clients there): any other is dropped, never a bypass. */
static __always_inline int enforce_new(struct __sk_buff *skb, const struct flow *f, __u8 direction,
				       const struct endpoint_value *ep, __u32 peer, __u8 ct_flags, struct ct_ctx *ctx,
				       __u32 monitor, struct policy_value *proxy, int l7_applied, __u64 stamp)
{
	__u32 src_id = direction == DIR_EGRESS ? ep->identity : peer;
	__u32 dst_id = direction == DIR_EGRESS ? peer : ep->identity;
	__u32 enforced_flag = direction == DIR_EGRESS ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED;
	__u32 rule_id = RULE_ID_NONE;
	__u8 reason = DROP_NONE;
	struct policy_value *pv;

	pv = policy_lookup(ep->identity, direction, peer, f->proto, f->dport, f->family);
	/* Kubernetes' ipBlock matches pods by address, and a node selector nodes by address: a pod peer that would
	 * meet default deny, or a node peer that did not meet a deny, is tried once more as the ipBlock (or node)
	 * identity of its address. NetworkPolicy ipBlocks only allow, so an explicit deny of a pod's identity has
	 * already won; a toNodes/fromNodes deny of the node wins over an allow of remote-node/host or of every peer.
	 * The cost is paid on would-be drops and on new flows allowed to or from a node. */
	{
		__u32 first = !pv ? SECOND_LOOK_MISS : pv->verdict == VERDICT_ALLOW ? SECOND_LOOK_ALLOW : SECOND_LOOK_DENY;
		__u64 again = second_look(f, ep->identity, direction | (first << 8) | ((ep->flags & enforced_flag) ? SECOND_LOOK_ENFORCED : 0), peer);

		if (again)
			pv = policy_unpack(again);
	}
	if (pv) {
		rule_id = pv->rule_id;
		/* Anything but an explicit allow is a deny: a corrupt verdict fails closed. */
		if (pv->verdict != VERDICT_ALLOW)
			reason = DROP_POLICY_DENY;
	} else if (ep->flags & enforced_flag) {
		reason = DROP_POLICY_DEFAULT_DENY;
	}
	if (reason != DROP_NONE) {
		if (!policy_audit_mode(ep))
			return drop(skb, f, direction, reason, src_id, dst_id, rule_id);
		/* Audit mode: the connection goes on as if allowed (its later packets are known), reported once. */
		policy_audit(skb, f, direction, reason, src_id, dst_id, rule_id);
		ct_create(f, direction, rule_id, ct_flags, ctx, stamp);
		return TC_ACT_OK;
	}
	if (pv && redirect_port_served(pv->proxy_port)) {
		if (direction == DIR_INGRESS && !l7_applied)
			return drop(skb, f, direction, DROP_PROXY_REDIRECT, src_id, dst_id, rule_id);
		if (direction == DIR_EGRESS) {
			ct_flags |= CT_F_PROXY;
			*proxy = *pv;
		}
	}
	ct_create(f, direction, rule_id, ct_flags, ctx, stamp);
	if (monitor & (CONFIG_F_EVENTS_FORWARDED | CONFIG_F_EVENTS_PACKETS))
		event_emit(skb, f, EVENT_FORWARDED, EVENT_CT_NEW, direction, DROP_NONE, src_id, dst_id, rule_id);
	return TC_ACT_OK;
}

/* Whether a local destination's ingress policy sends a client's new flow to the node's proxy: an allow
 * naming a served proxy port. Returns 0 when not, else the proxy port in bits 0-15, the rule id in bits
 * 16-47 and CT_F_PROXY at bit 48 (taken without a branch, so the verifier follows one path through
 * enforce_new, not two). A global function: the verifier checks it once, not on every path of
 * from-container (inlined, from-container was too large). */
__attribute__((noinline)) __u64 ingress_proxy_lookup(__u32 dst_identity, __u32 dst_flags, __u32 client, __u32 family_proto, __u32 dport)
{
	struct policy_value *pv;

	if (dst_flags & EP_F_POLICY_FAILED)
		return 0;
	/* A BPF function takes at most five arguments: the protocol in bits 0-7, the family in 8-15. */
	pv = policy_lookup(dst_identity, DIR_INGRESS, client, (__u8)family_proto, dport, (__u8)(family_proto >> 8));
	if (!pv || pv->verdict != VERDICT_ALLOW || !redirect_port_served(pv->proxy_port))
		return 0;
	return ((__u64)CT_F_PROXY << 48) | ((__u64)pv->rule_id << 16) | pv->proxy_port;
}

/* Reports a packet of a known connection when the monitor aggregation level asks for it. The
 * program's direction is the connection's unless the packet is a reply; identities are the packet's
 * source and destination (peer: the other side's, looked up only when reporting). */
static __always_inline void monitor_known_packet(struct __sk_buff *skb, const struct flow *f, __u8 direction,
						 const struct endpoint_value *ep, enum ct_status ct, struct ct_ctx *ctx,
						 __u32 monitor, __u32 peer)
{
	int reply = ct == CT_REPLY;
	__u8 conn_direction = reply ? (direction == DIR_EGRESS ? DIR_INGRESS : DIR_EGRESS) : direction;
	struct ct_value *v = ctx->entry;

	if (!monitor_known(monitor, f, v, reply))
		return;
	event_emit(skb, f, EVENT_FORWARDED, reply ? EVENT_CT_REPLY : EVENT_CT_ESTABLISHED, conn_direction, DROP_NONE,
		   direction == DIR_EGRESS ? ep->identity : peer, direction == DIR_EGRESS ? peer : ep->identity,
		   v ? v->rule_id : RULE_ID_NONE);
}

/* monitor_known_packet for a caller whose peer costs a lookup: the peer is found only when the packet
 * is reported (the host firewall's peers are often in the CIDR trie, and most packets are not reported). */
static __always_inline void monitor_known_host_packet(struct __sk_buff *skb, const struct flow *f, __u8 direction,
						      const struct endpoint_value *host, enum ct_status ct, struct ct_ctx *ctx,
						      __u32 monitor)
{
	struct ipcache_value *remote;

	if (!monitor_known(monitor, f, ctx->entry, ct == CT_REPLY))
		return;
	remote = ipcache_lookup(f->family, direction == DIR_INGRESS ? f->saddr : f->daddr);
	/* monitor_known said yes and set the entry's bits: report without asking again. */
	monitor_known_packet(skb, f, direction, host, ct, ctx, monitor | CONFIG_F_EVENTS_PACKETS,
			     remote ? remote->identity : ipcache_unknown_identity(monitor, f->family));
}

/* The identity of an address seen by this node: a local endpoint's, the ipcache's, or its family's world (ipcache_unknown_identity). */
static __always_inline __u32 peer_identity(__u32 config_flags, __u8 family, const __u8 *addr)
{
	struct endpoint_value *local = endpoint_lookup(family, addr);
	struct ipcache_value *remote;

	if (local)
		return local->identity;
	remote = ipcache_lookup(family, addr);
	return remote ? remote->identity : ipcache_unknown_identity(config_flags, family);
}

/* A pod packet that leaves by the node's routes, not the tunnel: passed, or in strict mode dropped as UNENCRYPTED when
 * its destination is in another node's pod CIDR (encryption_strict_refuses). A global function: from_container's
 * every path ends here, and the verifier checks the lookup and the drop once, not on each of them (inlined they took
 * from_container from 48.6 % to 71.8 % of the verifier's limit). */
__attribute__((noinline)) int egress_by_route(struct __sk_buff *skb, const struct flow *f, __u32 identity, __u32 peer)
{
	if (!skb || !f)
		return TC_ACT_SHOT;
	if (!encryption_strict_refuses(f->family, f->daddr))
		return TC_ACT_OK;
	return drop(skb, f, DIR_EGRESS, DROP_UNENCRYPTED, identity, peer, RULE_ID_NONE);
}

/* Sends a packet to a pod on another node. With may_route (the packet's source address is a pod of the
 * sender's identity, so the receiver's ipcache names it) it is routed into the WireGuard device as it is
 * when the node's peer holds its pods' addresses; otherwise, and without WireGuard, the sender's identity
 * rides in the VNI (inside the tunnel where there is one: the node proxy's upstream connections, whose
 * source is the node's address but whose identity is the client's). */
static __always_inline int to_tunnel(struct __sk_buff *skb, const struct flow *f, __u32 identity, __u32 peer,
				     __be32 tunnel_endpoint, int may_route)
{
	struct config_value *cfg = config_get();
	struct bpf_tunnel_key key = {};
	int route = encryption_route(tunnel_endpoint);

	if (route == ENCRYPTION_REFUSED)
		return drop(skb, f, DIR_EGRESS, DROP_UNENCRYPTED, identity, peer, RULE_ID_NONE);
	/* The peers' allowed IPs hold their pods' IPv4 addresses: IPv6 pods keep the overlay. */
	if (route > 0 && may_route && f->family == FAMILY_IPV4)
		return bpf_redirect(route, 0);
	if (!cfg || !cfg->vxlan_ifindex)
		return drop(skb, f, DIR_EGRESS, DROP_NO_TUNNEL_DEVICE, identity, peer, RULE_ID_NONE);
	key.tunnel_id = identity;
	key.remote_ipv4 = bpf_ntohl(tunnel_endpoint);
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop(skb, f, DIR_EGRESS, DROP_TUNNEL_KEY, identity, peer, RULE_ID_NONE);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct flow f;
	struct endpoint_value *ep;
	struct endpoint_value *local_dst;
	struct ipcache_value *dst;
	enum ct_status ct;
	__u8 ct_flags = 0;
	struct ct_ctx ctx = { .now = ct_now() };
	struct config_value *cfg = config_get();
	__u32 monitor = monitor_flags(cfg);
	__u64 stamp;
	__u32 peer;
	struct policy_value proxy = {};
	__be32 tunnel_endpoint, node;
	int dst_exact = 0;
	int rc;

	rc = endpoint_parse(skb, &f, DIR_EGRESS);
	if (rc != PROLOGUE_CONTINUE)
		return rc;
	stamp = endpoint_stamp(skb, cfg);
	ct = ct_lookup(&f, DIR_EGRESS, &ct_flags, &ctx, stamp);
	/* The hot path: a known flow's packet that the endpoint check passed on this interface since the last
	 * endpoint change (endpoint_fast_path), whose peer is not behind the tunnel, with nothing to report, needs no
	 * other lookup (an entry without the flag, e.g. written by an older program, takes the full path). Not even
	 * whether its destination is the host's: pod_to_host judges new flows only and passes a known one, and the
	 * entry exists because its first packet passed (there, or before the host's ingress was enforced). A known
	 * flow that is reported still goes there, for the host's peer identity; a proxied one goes to its proxy. */
	if (endpoint_fast_path(ct, &ctx, stamp, monitor) && (ct_flags & CT_F_NO_TUNNEL) && !(ct == CT_ESTABLISHED && (ct_flags & CT_F_PROXY)))
		return TC_ACT_OK;
	rc = endpoint_check(skb, &f, DIR_EGRESS, &ep);
	if (rc != PROLOGUE_CONTINUE)
		return rc;
	ct_stamp(&f, ct == CT_REPLY, &ctx, stamp);
	/* A flow policy sent to a proxy goes there packet after packet (fails closed without its record), as
	 * pod_to_host sends it for a flow to the host. */
	if (ct == CT_ESTABLISHED && (ct_flags & CT_F_PROXY)) {
		if (redirect_to_proxy_global(skb, &f, 0, ep->identity, 0) < 0)
			return drop(skb, &f, DIR_EGRESS, DROP_PROXY_REDIRECT, ep->identity, 0, RULE_ID_NONE);
		return TC_ACT_OK;
	}
	/* A known flow's packet whose entry was stamped just now: as the hot path above. */
	if (ct != CT_NEW && (ct_flags & CT_F_NO_TUNNEL) && !(monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS)))
		return TC_ACT_OK;
	/* The rest of the flow goes to pod_to_host (a new connection: the host's ingress policy judges it too). */
	if (host_ingress_judged(f.family, f.daddr)) {
		bpf_tail_call(skb, &membrane_tail_calls, TAIL_CALL_POD_TO_HOST);
		/* Only reached when the slot is empty: the host's policy cannot be applied, fail closed. */
		return drop(skb, &f, DIR_EGRESS, DROP_MISSED_TAIL_CALL, ep->identity, IDENTITY_HOST, RULE_ID_NONE);
	}
	if (ct != CT_NEW && (ct_flags & CT_F_NO_TUNNEL)) {
		monitor_known_packet(skb, &f, DIR_EGRESS, ep, ct, &ctx, monitor, peer_identity(monitor, f.family, f.daddr));
		return TC_ACT_OK;
	}

	local_dst = endpoint_lookup(f.family, f.daddr);
	dst = local_dst ? NULL : ipcache_lookup_exact(f.family, f.daddr, &dst_exact);
	peer = local_dst ? local_dst->identity : dst ? dst->identity : ipcache_unknown_identity(monitor, f.family);

	if (ct == CT_NEW) {
		/* A local destination whose ingress rules are the proxy's: the flow goes there (after this
		 * endpoint's own egress policy), and the proxy connects onward as this endpoint. */
		__u64 in_proxy = local_dst ? ingress_proxy_lookup(local_dst->identity, local_dst->flags, ep->identity, f.proto | ((__u32)f.family << 8), f.dport) : 0;
		/* The hot path only for a peer known by its own address not to be behind the tunnel (a local pod, a
		 * node): an address the ipcache does not name yet, or names only through a CIDR, may be a remote pod
		 * whose entry is on its way (a pod that connects as it starts), and its later packets (a retransmitted
		 * SYN) must find that entry and take the tunnel, not the underlay route the first one took. */
		__u8 flags = (local_dst || (dst && dst_exact && !dst->tunnel_endpoint) ? CT_F_NO_TUNNEL : 0) | (__u8)(in_proxy >> 48);

		rc = enforce_new(skb, &f, DIR_EGRESS, ep, peer, flags, &ctx, monitor, &proxy, 0, stamp);
		if (rc != TC_ACT_OK)
			return rc;
		/* Only the destination's ingress rules: the flow goes to their proxy port. Both ends: to the
		 * egress proxy port, the record naming the ingress one too, and the proxy applies both rule sets
		 * (as Cilium's one proxy does on one node), then connects as "ingress rules applied". */
		if (!proxy.proxy_port && in_proxy) {
			proxy.proxy_port = in_proxy & 0xffff;
			proxy.rule_id = (__u32)(in_proxy >> 16);
			in_proxy = 0;
		}
		if (proxy.proxy_port) {
			if (redirect_to_proxy_global(skb, &f, proxy.proxy_port | REDIRECT_RECORD,
						     ((__u64)proxy.rule_id << 32) | ep->identity, in_proxy) < 0)
				return drop(skb, &f, DIR_EGRESS, DROP_PROXY_REDIRECT, ep->identity, peer, RULE_ID_NONE);
			return TC_ACT_OK;
		}
	} else if (monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS)) {
		monitor_known_packet(skb, &f, DIR_EGRESS, ep, ct, &ctx, monitor, peer);
	}
	/* No tunnel endpoint: the node's routes. In strict mode not for another node's pod CIDR (fails closed). */
	tunnel_endpoint = dst ? dst->tunnel_endpoint : 0;
	/* A reply to another node's own address on a connection that came through the tunnel (its entry has no
	 * CT_F_NO_TUNNEL: that node's proxy connected as its client): back through the tunnel under encryption. */
	if (!tunnel_endpoint && dst && ct == CT_REPLY && (dst->flags & IPCACHE_F_NODE) && f.family == FAMILY_IPV4) {
		__builtin_memcpy(&node, f.daddr, 4);
		if (encryption_covers_node(node))
			tunnel_endpoint = node;
	}
	if (!tunnel_endpoint)
		return egress_by_route(skb, &f, ep->identity, peer);
	return to_tunnel(skb, &f, ep->identity, peer, tunnel_endpoint, 1);
}

/* A pod's packet to its own node's address while the host's ingress is enforced (from-container's tail
 * call, see bpf/lib/hostfw.h). A new connection: the host's ingress policy decides first, with the pod's
 * identity as the peer, so a drop there leaves no conntrack entry of the pod's that would let a
 * retransmission through; then the pod's own egress policy, as from-container would. Later packets are
 * the pod's known connection. */
SEC("tc")
int pod_to_host(struct __sk_buff *skb)
{
	struct flow f;
	struct endpoint_value *ep;
	struct endpoint_value *host;
	struct ipcache_value *dst;
	enum ct_status ct;
	__u8 ct_flags = 0;
	struct ct_ctx ctx = { .now = ct_now() };
	/* The host's entry is written afresh (never looked up): only the pod's side is consulted later. */
	struct ct_ctx host_ctx = { .now = ctx.now };
	__u32 monitor = monitor_flags(config_get());
	struct policy_value proxy = {};
	struct policy_value unused = {};
	__u32 peer;
	int rc;

	rc = endpoint_prologue(skb, &f, DIR_EGRESS, &ep);
	if (rc != PROLOGUE_CONTINUE)
		return rc;
	host = host_endpoint_lookup(f.family, f.daddr);
	if (!host)
		return drop(skb, &f, DIR_EGRESS, DROP_UNKNOWN_ENDPOINT, ep->identity, IDENTITY_HOST, RULE_ID_NONE);
	/* Its entries are left unstamped (the prologue has just checked the endpoint): from-container stamps the pod's
	 * entry at its next packet. */
	ct = ct_lookup(&f, DIR_EGRESS, &ct_flags, &ctx, CT_STAMP_NONE);
	if (ct == CT_ESTABLISHED && (ct_flags & CT_F_PROXY)) {
		if (redirect_to_proxy(skb, ETH_HLEN, &f, 0, ep->identity, 0, 0, 0) < 0)
			return drop(skb, &f, DIR_EGRESS, DROP_PROXY_REDIRECT, ep->identity, 0, RULE_ID_NONE);
		return TC_ACT_OK;
	}
	dst = ipcache_lookup(f.family, f.daddr);
	peer = dst ? dst->identity : IDENTITY_HOST;
	if (ct != CT_NEW) {
		if (monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS))
			monitor_known_packet(skb, &f, DIR_EGRESS, ep, ct, &ctx, monitor, peer);
		return TC_ACT_OK;
	}
	rc = enforce_new(skb, &f, DIR_INGRESS, host, ep->identity, CT_F_NO_TUNNEL, &host_ctx, monitor, &unused, 0, CT_STAMP_NONE);
	if (rc != TC_ACT_OK)
		return rc;
	rc = enforce_new(skb, &f, DIR_EGRESS, ep, peer, CT_F_NO_TUNNEL, &ctx, monitor, &proxy, 0, CT_STAMP_NONE);
	if (rc != TC_ACT_OK)
		return rc;
	if (proxy.proxy_port && redirect_to_proxy(skb, ETH_HLEN, &f, proxy.proxy_port, ep->identity, proxy.rule_id, 1, 0) < 0)
		return drop(skb, &f, DIR_EGRESS, DROP_PROXY_REDIRECT, ep->identity, peer, RULE_ID_NONE);
	return TC_ACT_OK;
}

/* Whether to_container's mark is one of the two that vouch for the source's identity: the overlay's (from-overlay
 * checked the sending node) or the node proxy's after applying ingress rules. One comparison for both. */
static __always_inline int mark_vouched(__u32 magic)
{
	return magic - MARK_MAGIC_PROXY_INGRESS <= MARK_MAGIC_IDENTITY - MARK_MAGIC_PROXY_INGRESS;
}

/* What to_container hands its new-connection half (beyond the packet, its flow, its endpoint and the
 * closing conntrack entry a new SYN reuses): scalars only, so that the global function below can read them. */
struct to_container_new_args {
	__u64 now;       /* the program's ct_now() */
	__u32 monitor;   /* monitor_flags() */
	__u32 peer;      /* the identity from-overlay (or the proxy) vouched for, when from_overlay */
	__u32 magic;     /* skb->mark & MARK_MAGIC_MASK as the packet arrived (mark_vouched) */
	__u32 ep_gen;    /* the endpoint generation to_container read first (endpoint_stamp) */
};

/* to_container for the first packet of a connection: the source's identity, the node's own connection,
 * then the endpoint's ingress policy (enforce_new). A global function: the verifier checks it once, not
 * on every path to_container's prologue, proxy answer and conntrack lookup open (inlined, to_container
 * needed 80 % of the verifier's limit). Established packets never call it. */
__attribute__((noinline)) int to_container_new(struct __sk_buff *skb, struct flow *f, const struct endpoint_value *ep,
					       struct ct_value *closing, const struct to_container_new_args *a)
{
	struct endpoint_value *local_src;
	struct ipcache_value *src = NULL;
	struct policy_value proxy = {}; /* enforce_new fills it on egress only */
	struct ct_ctx ctx = {};
	__u32 peer;

	/* Never NULL from to_container; the verifier does not know that. Fails closed. */
	if (!skb || !f || !ep || !a)
		return TC_ACT_SHOT;
	ctx.now = a->now;
	ctx.closing = closing;
	peer = a->peer;
	if (!mark_vouched(a->magic)) {
		local_src = endpoint_lookup(f->family, f->saddr);
		src = local_src ? NULL : ipcache_lookup(f->family, f->saddr);
		/* A pod of another node reaches this one only through the overlay or the WireGuard device, both of
		 * which mark its identity: the same source address without the mark came some other way (the
		 * underlay) and is spoofed, so it is the world's. */
		peer = local_src ? local_src->identity : src && !src->tunnel_endpoint ? src->identity : ipcache_unknown_identity(a->monitor, f->family);
		/* The node's own connection (bpf/lib/localhost.h): reserved:host's, and it passes unless
		 * --allow-localhost=policy has the pod's ingress policy judge it. */
		if (from_local_host(skb, a->magic, peer, local_src != NULL)) {
			struct config_value *cfg = config_get();
			peer = IDENTITY_HOST;
			if (local_host_passes(ep, cfg ? cfg->flags : 0)) {
				ct_create(f, DIR_INGRESS, RULE_ID_NONE, CT_F_NO_TUNNEL, &ctx, ct_stamp_of(skb->ifindex, a->ep_gen));
				if (a->monitor & (CONFIG_F_EVENTS_FORWARDED | CONFIG_F_EVENTS_PACKETS))
					event_emit(skb, f, EVENT_FORWARDED, EVENT_CT_NEW, DIR_INGRESS, DROP_NONE, IDENTITY_HOST,
						   ep->identity, RULE_ID_NONE);
				return TC_ACT_OK;
			}
		}
	}
	/* The pod's replies go back through the tunnel when its peer lives on another node. */
	return enforce_new(skb, f, DIR_INGRESS, ep, peer, mark_vouched(a->magic) || (src && src->tunnel_endpoint) ? 0 : CT_F_NO_TUNNEL,
			   &ctx, a->monitor, &proxy, a->magic == MARK_MAGIC_PROXY_INGRESS, ct_stamp_of(skb->ifindex, a->ep_gen));
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct flow f;
	struct endpoint_value *ep;
	__u32 peer = 0;
	struct ct_ctx ctx = { .now = ct_now() };
	struct config_value *cfg = config_get();
	__u32 monitor = monitor_flags(cfg);
	__u64 stamp;
	enum ct_status ct;
	int from_overlay;
	__u32 magic = skb->mark & MARK_MAGIC_MASK;
	int rc;

	rc = endpoint_parse(skb, &f, DIR_INGRESS);
	if (rc != PROLOGUE_CONTINUE)
		return rc;
	stamp = endpoint_stamp(skb, cfg);

	/* from-overlay vouched for this identity (it checked the sending node); the mark never
	 * leaves this hop. */
	from_overlay = mark_vouched(magic);
	if (from_overlay) {
		peer = skb->mark & MARK_IDENTITY_MASK;
		skb->mark = 0;
	} else if (redirect_from_proxy(skb, &f, REDIRECT_FROM_PROXY_V6) < 0) {
		rc = endpoint_check(skb, &f, DIR_INGRESS, &ep);
		if (rc != PROLOGUE_CONTINUE)
			return rc;
		return drop(skb, &f, DIR_INGRESS, DROP_PROXY_REDIRECT, 0, ep->identity, RULE_ID_NONE);
	}
	/* The proxy's answer has its source rewritten (redirect_from_proxy) before the lookup: its entry is the
	 * client's. A known flow's packet with its stamp passes without the endpoint check (endpoint_fast_path). */
	ct = ct_lookup(&f, DIR_INGRESS, NULL, &ctx, stamp);
	if (endpoint_fast_path(ct, &ctx, stamp, monitor))
		return TC_ACT_OK;
	rc = endpoint_check(skb, &f, DIR_INGRESS, &ep);
	if (rc != PROLOGUE_CONTINUE)
		return rc;
	if (ct != CT_NEW) {
		ct_stamp(&f, ct == CT_REPLY, &ctx, stamp);
		if (monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS))
			monitor_known_packet(skb, &f, DIR_INGRESS, ep, ct, &ctx, monitor,
					     from_overlay ? peer : peer_identity(monitor, f.family, f.saddr));
		return TC_ACT_OK;
	}
	{
		/* Filled here, not above: a known flow's packet stores nothing more than it did inlined. */
		struct to_container_new_args a = { .now = ctx.now, .monitor = monitor, .peer = peer, .magic = magic,
						   .ep_gen = (__u32)(stamp >> 32) };

		return to_container_new(skb, &f, ep, ctx.closing, &a);
	}
}

/* The host's ingress for a frame that came inside the tunnel (from_overlay, after the VNI was vouched
 * for): conntrack, the lock-out guard, then the host policy with the VNI's identity as the peer. */
static __always_inline int host_from_overlay(struct __sk_buff *skb, const struct flow *f, __u32 peer)
{
	struct endpoint_value *host = host_endpoint_lookup(f->family, f->daddr);
	struct policy_value unused = {};
	struct ct_ctx ctx = { .now = ct_now() };
	__u32 monitor = monitor_flags(config_get());
	enum ct_status ct;

	if (!host)
		return TC_ACT_OK;
	ct = ct_lookup(f, DIR_INGRESS, NULL, &ctx, CT_STAMP_NONE);
	if (ct != CT_NEW)
		return TC_ACT_OK;
	if (host_guard_allows(DIR_INGRESS, f->proto, f->dport, peer == IDENTITY_REMOTE_NODE)) {
		ct_create(f, DIR_INGRESS, RULE_ID_NONE, CT_F_NO_TUNNEL, &ctx, CT_STAMP_NONE);
		return TC_ACT_OK;
	}
	return enforce_new(skb, f, DIR_INGRESS, host, peer, CT_F_NO_TUNNEL, &ctx, monitor, &unused, 0, CT_STAMP_NONE);
}

/* A connection from a pod on another node to a local destination whose ingress rules are the proxy's: its
 * first packet (a SYN) is recorded with the client's identity (the VNI's, or the ipcache's for a packet
 * routed through WireGuard) and sent to the node's proxy, as from-container sends a local client, and its
 * later packets follow the record (to-container would drop the connection: those rules were not applied).
 * l3_off: where the IP header starts (ETH_HLEN behind the overlay, 0 on the WireGuard device). IPv4 and IPv6
 * alike, each to the proxy's address of its family (through the global redirect_to_proxy_global: the IPv6
 * rewrite inlined here exceeded from-overlay's combined stack limit). Returns 1 when the packet now goes to the proxy, 0 when it
 * is no such flow (to-container judges it), -1 when it cannot be steered, e.g. an IPv6 flow while the proxy
 * has no IPv6 address (the caller drops: fail closed). */
static __always_inline int tunnel_to_ingress_proxy(struct __sk_buff *skb, __u32 l3_off, const struct flow *f, __u32 client)
{
	struct endpoint_value *dst;
	struct redirect_key k;
	struct redirect_value *have;
	__u64 in_proxy;

	if (f->proto != IPPROTO_TCP)
		return 0;
	dst = endpoint_lookup(f->family, f->daddr);
	if (!dst)
		return 0;
	redirect_key_fill(&k, f->family, f->saddr, f->sport, f->proto);
	have = bpf_map_lookup_elem(&membrane_redirects, &k);
	/* The flow's 16 address bytes: an IPv4 address's last 12 are zero in the flow and in the record alike. */
	if (have && have->subject == client && have->orig_dport == f->dport && addr6_equal(have->orig_daddr, f->daddr))
		return redirect_to_proxy_global(skb, f, l3_off ? 0 : REDIRECT_L3, client, 0) < 0 ? -1 : 1;
	if ((f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return 0;
	in_proxy = ingress_proxy_lookup(dst->identity, dst->flags, client, f->proto | ((__u32)f->family << 8), f->dport);
	if (!in_proxy)
		return 0;
	return redirect_to_proxy_global(skb, f, (in_proxy & 0xffff) | REDIRECT_RECORD | (l3_off ? 0 : REDIRECT_L3),
					((__u64)(__u32)(in_proxy >> 16) << 32) | client, 0) < 0 ? -1 : 1;
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
	/* A frame for the node's own address inside the tunnel: Membrane never sends one (node addresses carry
	 * no tunnel endpoint), but a known node can; the host's ingress policy judges it, the VNI's identity as
	 * the peer, as to_host does on a device. */
	if (host_ingress_judged(f.family, f.daddr)) {
		rc = host_from_overlay(skb, &f, key.tunnel_id);
		if (rc != TC_ACT_OK)
			return rc;
	}

	if (tunnel_to_ingress_proxy(skb, ETH_HLEN, &f, key.tunnel_id) < 0)
		return drop(skb, &f, DIR_INGRESS, DROP_PROXY_REDIRECT, key.tunnel_id, 0, RULE_ID_NONE);

	skb->mark = MARK_MAGIC_IDENTITY | key.tunnel_id;
	/* The inner frame is addressed to the sending node's interface; deliver it to this host. */
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

/* Ingress on the WireGuard device: what a peer sent decrypted, its source bound to that peer by WireGuard's
 * allowed IPs (the peer node's pod CIDRs and its address). A pod packet routed without VXLAN gets its
 * source identity from the ipcache by source address, carried to to-container in the mark as the overlay
 * does; a source the ipcache does not know as another node's pod is the world's, never a trusted identity.
 * A connection to a local pod whose ingress rules are the proxy's goes to the node's proxy, as from-overlay
 * steers it. A node's own address (the VXLAN overlay inside the tunnel, whose VNI from-overlay vouches for, or the
 * node's host traffic) passes unmarked: trusted by address as on the underlay. */
SEC("tc")
int from_wireguard(struct __sk_buff *skb)
{
	struct flow f;
	__u8 reason = DROP_NONE;
	struct ipcache_value *src;
	__u32 identity;
	int rc;

	rc = parse_flow_l3(skb, &f, &reason);
	if (rc == PARSE_DROP)
		return drop(skb, &f, DIR_INGRESS, reason, 0, 0, RULE_ID_NONE);
	if (rc == PARSE_PASS)
		return TC_ACT_OK;
	src = ipcache_lookup(f.family, f.saddr);
	if (src && (src->flags & IPCACHE_F_NODE))
		return TC_ACT_OK;
	if (src && src->tunnel_endpoint && src->identity != IDENTITY_WILDCARD && src->identity <= MARK_IDENTITY_MASK)
		identity = src->identity;
	else
		identity = ipcache_unknown_identity(monitor_flags(config_get()), f.family);
	/* For the node's own address: the host's ingress policy judges it with that identity, as from-overlay does. */
	if (host_ingress_judged(f.family, f.daddr)) {
		rc = host_from_overlay(skb, &f, identity);
		if (rc != TC_ACT_OK)
			return rc;
	}
	/* A local destination whose ingress rules are the proxy's: to the proxy, as from-overlay steers (the
	 * packet starts at its IP header here). */
	if (tunnel_to_ingress_proxy(skb, 0, &f, identity) < 0)
		return drop(skb, &f, DIR_INGRESS, DROP_PROXY_REDIRECT, identity, 0, RULE_ID_NONE);
	skb->mark = MARK_MAGIC_IDENTITY | identity;
	return TC_ACT_OK;
}

/* The host firewall on a node device (bpf/lib/hostfw.h): a packet to (ingress) or from (egress) one of
 * the node's own addresses is the host endpoint's, judged by its policy like a pod's (reserved:host as
 * subject, conntrack, audit mode); the guard's entries pass first. Anything else is forwarded: passed. */
static __always_inline int host_firewall(struct __sk_buff *skb, __u8 direction)
{
	struct flow f = {};
	__u8 reason = DROP_NONE;
	struct endpoint_value *host;
	struct ipcache_value *remote;
	struct policy_value unused = {}; /* host policies have no L7 (admission refuses it): nothing to steer */
	struct ct_ctx ctx = { .now = ct_now() };
	__u32 monitor = monitor_flags(config_get());
	__u32 enforced = direction == DIR_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED;
	enum ct_status ct;
	__u32 peer;
	int rc;

	rc = parse_flow(skb, &f, &reason);
	if (rc == PARSE_PASS)
		return TC_ACT_OK;
	host = host_endpoint_lookup(f.family, direction == DIR_INGRESS ? f.daddr : f.saddr);
	if (!host)
		return TC_ACT_OK;
	/* A fragment or malformed packet of the host's fails closed only where its policy is enforced. */
	if (rc == PARSE_DROP)
		return host->flags & enforced ? drop(skb, &f, direction, reason, 0, 0, RULE_ID_NONE) : TC_ACT_OK;
	ct = ct_lookup(&f, direction, NULL, &ctx, CT_STAMP_NONE);
	if (ct != CT_NEW) {
		if (monitor & (CONFIG_F_EVENTS_FLAGS | CONFIG_F_EVENTS_PACKETS))
			monitor_known_host_packet(skb, &f, direction, host, ct, &ctx, monitor);
		return TC_ACT_OK;
	}
	remote = ipcache_lookup(f.family, direction == DIR_INGRESS ? f.saddr : f.daddr);
	peer = remote ? remote->identity : ipcache_unknown_identity(monitor, f.family);
	if (host_guard_allows(direction, f.proto, f.dport, remote && (remote->flags & IPCACHE_F_NODE))) {
		ct_create(&f, direction, RULE_ID_NONE, CT_F_NO_TUNNEL, &ctx, CT_STAMP_NONE);
		return TC_ACT_OK;
	}
	return enforce_new(skb, &f, direction, host, peer, CT_F_NO_TUNNEL, &ctx, monitor, &unused, 0, CT_STAMP_NONE);
}

SEC("tc")
int to_host(struct __sk_buff *skb)
{
	return host_firewall(skb, DIR_INGRESS);
}

/* The node proxy's upstream connection to a pod on another node (its socket marked with the client's
 * identity, marked-socket.ts) goes through the tunnel with that identity in the VNI, so the receiving
 * node judges the client, not this node. Only the proxy's own address of the packet's family sends it (a
 * forwarded packet keeps no mark here). Returns the destination's ipcache entry (with its tunnel endpoint) and sets *identity,
 * or NULL when the packet is no such connection. */
static __always_inline struct ipcache_value *proxy_upstream_tunnel(struct __sk_buff *skb, const struct flow *f, __u32 *identity)
{
	__u32 zero = 0;
	struct redirect_config *rcfg;
	struct ipcache_value *dst;
	__be32 src;

	*identity = skb->mark & MARK_IDENTITY_MASK;
	if ((skb->mark & MARK_MAGIC_MASK) != MARK_MAGIC_IDENTITY || !*identity)
		return NULL;
	rcfg = bpf_map_lookup_elem(&membrane_redirect_config, &zero);
	if (!rcfg)
		return NULL;
	if (f->family == FAMILY_IPV6) {
		if (!addr6_set(rcfg->addr6) || !addr6_equal(f->saddr, rcfg->addr6))
			return NULL;
	} else {
		__builtin_memcpy(&src, f->saddr, 4);
		if (!rcfg->addr4 || src != rcfg->addr4)
			return NULL;
	}
	dst = ipcache_lookup(f->family, f->daddr);
	return dst && dst->tunnel_endpoint ? dst : NULL;
}

/* The node proxy's answer to a client on another node (from-overlay steered the client's connection to the
 * proxy), IPv4 or IPv6: its source becomes the destination pod's again and it goes into the tunnel as that pod, the way
 * the client's packets came (encrypted where the overlay is), never out as the node. Returns the tc verdict
 * for such an answer, else -1 (the packet untouched). A global function: verified once, apart from
 * from-host's host-firewall paths (inlined together they exceed the verifier's limit, E2BIG). */
__attribute__((noinline)) int proxy_answer_to_tunnel(struct __sk_buff *skb)
{
	struct flow f = {};
	__u8 reason = DROP_NONE;
	struct endpoint_value *answering;
	struct ipcache_value *client;
	__be32 node, tunnel_endpoint;
	int rc;

	if (!skb || parse_flow(skb, &f, &reason) != PARSE_OK)
		return -1;
	rc = redirect_from_proxy(skb, &f, REDIRECT_FROM_PROXY_V6_INLINE);
	if (rc < 0)
		return drop(skb, &f, DIR_EGRESS, DROP_PROXY_REDIRECT, 0, 0, RULE_ID_NONE);
	if (!rc)
		return -1;
	answering = endpoint_lookup(f.family, f.saddr);
	client = ipcache_lookup(f.family, f.daddr);
	if (!answering || !client)
		return TC_ACT_OK;
	tunnel_endpoint = client->tunnel_endpoint;
	/* An answer to another node's address (that node's proxy was the client): through the tunnel under
	 * encryption, else on the underlay as node traffic. Encryption covers nodes by their IPv4 address. */
	if (!tunnel_endpoint && (client->flags & IPCACHE_F_NODE) && f.family == FAMILY_IPV4) {
		__builtin_memcpy(&node, f.daddr, 4);
		if (encryption_covers_node(node))
			tunnel_endpoint = node;
	}
	if (!tunnel_endpoint)
		return TC_ACT_OK;
	return to_tunnel(skb, &f, answering->identity, client->identity, tunnel_endpoint, 1);
}

/* A node device's egress: the node proxy's answers to clients on other nodes (proxy_answer_to_tunnel), then
 * the host firewall, then the proxy's upstream connections to pods on other nodes into the tunnel as their
 * client. */
SEC("tc")
int from_host(struct __sk_buff *skb)
{
	struct flow f = {};
	__u8 reason = DROP_NONE;
	struct ipcache_value *dst;
	__u32 identity = 0;
	int rc;

	rc = proxy_answer_to_tunnel(skb);
	if (rc >= 0)
		return rc;
	rc = host_firewall(skb, DIR_EGRESS);
	if (rc != TC_ACT_OK || parse_flow(skb, &f, &reason) != PARSE_OK)
		return rc;
	dst = proxy_upstream_tunnel(skb, &f, &identity);
	if (!dst)
		return TC_ACT_OK;
	/* The identity rides in the VNI from here; the mark means nothing on the wire. */
	skb->mark = 0;
	return to_tunnel(skb, &f, identity, dst->identity, dst->tunnel_endpoint, 0);
}

char _license[] SEC("license") = "GPL";
