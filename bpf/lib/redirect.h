/* Steering an endpoint's egress to a proxy on this node (DNS now, L7 later): the destination is
 * rewritten to the proxy's address and port, the original kept per flow, and the proxy's answers get
 * the original back as their source, so the endpoint sees the server it asked answer. */
#ifndef MEMBRANE_REDIRECT_H
#define MEMBRANE_REDIRECT_H

#include "common.h"
#include "packet.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct redirect_key);
	__type(value, struct redirect_value);
	__uint(max_entries, 65536);
} membrane_redirects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct redirect_port_value);
	__uint(max_entries, 16384);
} membrane_proxy_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct redirect_config);
	__uint(max_entries, 1);
} membrane_redirect_config SEC(".maps");

/* Offsets in the IPv4 header; the header itself starts at l3_off: ETH_HLEN on an Ethernet device, 0 on
 * the WireGuard (TUN) device, whose packets have no link-layer header. */
#define IP_DADDR_OFF 16
#define IP_SADDR_OFF 12
#define IP_CSUM_OFF 10

/* Whether a policy entry's proxy port is served by a node proxy (else the entry is a plain allow). */
static __always_inline int redirect_port_served(__u16 proxy_port)
{
	struct redirect_port_value *v;

	if (!proxy_port)
		return 0;
	v = bpf_map_lookup_elem(&membrane_proxy_ports, &proxy_port);
	return v && (v->flags & REDIRECT_PORT_F_SERVED);
}

static __always_inline void redirect_key_fill(struct redirect_key *k, __u8 family, const __u8 *addr, __be16 port, __u8 proto)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->addr, addr, 16);
	k->port = port;
	k->proto = proto;
	k->family = family;
}

/* Rewrites one IPv4 address and the L4 port after it in the headers (dst: daddr/dport, else saddr/sport),
 * fixing the IP and L4 checksums; the IP header starts at l3_off. Returns 0, or -1 when the packet cannot
 * be rewritten. */
static __always_inline int rewrite4(struct __sk_buff *skb, __u32 l3_off, __u8 proto, int dst, __be32 addr, __be16 port)
{
	__u8 vihl;
	__be32 old_addr;
	__be16 old_port;
	__u32 l4_off, csum_off, port_off, addr_off = l3_off + (dst ? IP_DADDR_OFF : IP_SADDR_OFF);
	__u64 flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_skb_load_bytes(skb, l3_off, &vihl, 1) < 0)
		return -1;
	l4_off = l3_off + (vihl & 0xf) * 4;
	csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	port_off = l4_off + (dst ? 2 : 0);
	if (bpf_skb_load_bytes(skb, addr_off, &old_addr, 4) < 0 || bpf_skb_load_bytes(skb, port_off, &old_port, 2) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr, flags | BPF_F_PSEUDO_HDR | 4) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, port, flags | 2) < 0 ||
	    bpf_l3_csum_replace(skb, l3_off + IP_CSUM_OFF, old_addr, addr, 4) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, &addr, 4, 0) < 0 || bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0)
		return -1;
	return 0;
}

/* Sends an endpoint's packet to the proxy on proxy_port, recording where it was going (a new flow:
 * record is set) or finding the record of its flow; the packet's IP header starts at l3_off. in_proxy (a new flow whose destination's ingress
 * rules are the proxy's too): the ingress proxy port in bits 0-15 and its rule in bits 16-47, else 0.
 * Returns 0 when the packet now goes to the proxy, -1 when it cannot (no proxy address, IPv6, not
 * TCP/UDP, no record): the caller drops. */
static __always_inline int redirect_to_proxy(struct __sk_buff *skb, __u32 l3_off, const struct flow *f, __u16 proxy_port,
					     __u32 subject, __u32 rule_id, int record, __u64 in_proxy)
{
	__u32 zero = 0;
	struct redirect_config *cfg = bpf_map_lookup_elem(&membrane_redirect_config, &zero);
	struct redirect_key k;
	struct redirect_value v = {}, *have;

	if (!cfg || !cfg->addr4 || f->family != FAMILY_IPV4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return -1;
	redirect_key_fill(&k, f->family, f->saddr, f->sport, f->proto);
	if (record) {
		__builtin_memcpy(v.orig_daddr, f->daddr, 16);
		v.orig_dport = f->dport;
		v.proxy_port = proxy_port;
		v.subject = subject;
		v.rule_id = rule_id;
		v.ingress_proxy_port = in_proxy & 0xffff;
		v.ingress_rule_id = (__u32)(in_proxy >> 16);
		if (bpf_map_update_elem(&membrane_redirects, &k, &v, BPF_ANY) < 0)
			return -1;
	} else {
		have = bpf_map_lookup_elem(&membrane_redirects, &k);
		if (!have)
			return -1;
		proxy_port = have->proxy_port;
	}
	return rewrite4(skb, l3_off, f->proto, 1, cfg->addr4, bpf_htons(proxy_port));
}

/* A proxy's answer to an endpoint: its source becomes the address and port the endpoint sent to, in
 * the packet and in f (so conntrack sees the reply of the endpoint's own flow). Returns 0 (also
 * for packets that are no proxy answer) or -1 when an answer cannot be rewritten. */
static __always_inline int redirect_from_proxy(struct __sk_buff *skb, struct flow *f)
{
	__u32 zero = 0;
	struct redirect_config *cfg;
	struct redirect_key k;
	struct redirect_value *v;
	__be32 orig, src;

	if (f->family != FAMILY_IPV4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return 0;
	redirect_key_fill(&k, f->family, f->daddr, f->dport, f->proto);
	v = bpf_map_lookup_elem(&membrane_redirects, &k);
	if (!v || bpf_ntohs(f->sport) != v->proxy_port)
		return 0;
	cfg = bpf_map_lookup_elem(&membrane_redirect_config, &zero);
	__builtin_memcpy(&src, f->saddr, 4);
	if (!cfg || src != cfg->addr4)
		return 0;
	__builtin_memcpy(&orig, v->orig_daddr, 4);
	if (rewrite4(skb, ETH_HLEN, f->proto, 0, orig, v->orig_dport) < 0)
		return -1;
	__builtin_memcpy(f->saddr, v->orig_daddr, 16);
	f->sport = v->orig_dport;
	return 0;
}

#endif
