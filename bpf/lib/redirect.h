/* Steering an endpoint's egress to a proxy on this node (DNS now, L7 later): the destination is
 * rewritten to the proxy's address and port, the original kept per flow (IPv4 and IPv6, each family to the proxy address of its own), and the proxy's answers get
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

#define IP6_SADDR_OFF 8
#define IP6_DADDR_OFF 24

/* rewrite4 for IPv6: the address is 16 bytes and only the L4 checksum covers it (its pseudo-header); the L4
 * header follows the fixed header (the parser walks no extension header but hop-by-hop, which TCP and UDP
 * packets do not carry here). */
static __always_inline int rewrite6(struct __sk_buff *skb, __u32 l3_off, __u8 proto, int dst, const __u8 *addr, __be16 port)
{
	__u8 old_addr[16];
	__be16 old_port;
	__u32 l4_off = l3_off + 40, addr_off = l3_off + (dst ? IP6_DADDR_OFF : IP6_SADDR_OFF);
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6), port_off = l4_off + (dst ? 2 : 0);
	__u64 flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u8 next;
	__s64 diff;

	if (bpf_skb_load_bytes(skb, l3_off + 6, &next, 1) < 0 || next != proto)
		return -1;
	if (bpf_skb_load_bytes(skb, addr_off, old_addr, 16) < 0 || bpf_skb_load_bytes(skb, port_off, &old_port, 2) < 0)
		return -1;
	diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)addr, 16, 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, flags | BPF_F_PSEUDO_HDR) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, port, flags | 2) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, addr, 16, 0) < 0 || bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0)
		return -1;
	return 0;
}

/* Whether two IPv6 addresses are equal (clang would call memcmp for 16 bytes, which BPF has not). */
static __always_inline int addr6_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* Whether an IPv6 address is set (not all zero). */
static __always_inline int addr6_set(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return (w[0] | w[1] | w[2] | w[3]) != 0;
}

#define REWRITE_DST 0x100 /* the destination (else the source) */
#define REWRITE_IPV6 0x200
#define REWRITE_L3 0x400  /* no link-layer header: the IP header starts the packet (the WireGuard device) */

/* Rewrites the packet's source or destination address and port (ctl: the L4 protocol in bits 0-7, then
 * REWRITE_*; the address in a0/a1: IPv4 in a0's first 4 bytes, IPv6 over both, as in memory; port in
 * network order). A global function: the rewrites are verified once, not on every path of every program
 * that steers to a proxy (inlined, from-container exceeded the verifier's limit). Returns 0 or -1. */
__attribute__((noinline)) int redirect_rewrite(struct __sk_buff *skb, __u32 ctl, __u32 port, __u64 a0, __u64 a1)
{
	__u8 addr[16];
	__u32 l3_off = ctl & REWRITE_L3 ? 0 : ETH_HLEN;
	__be32 addr4;

	if (!skb)
		return -1;
	__builtin_memcpy(addr, &a0, 8);
	__builtin_memcpy(addr + 8, &a1, 8);
	if (ctl & REWRITE_IPV6)
		return rewrite6(skb, l3_off, ctl & 0xff, ctl & REWRITE_DST, addr, (__be16)port);
	__builtin_memcpy(&addr4, addr, 4);
	return rewrite4(skb, l3_off, ctl & 0xff, ctl & REWRITE_DST, addr4, (__be16)port);
}

/* redirect_rewrite of f's packet to addr (16 bytes as the flow holds them) and port. */
static __always_inline int redirect_rewrite_flow(struct __sk_buff *skb, __u32 l3_off, const struct flow *f, int dst,
						 const __u8 *addr, __be16 port)
{
	__u64 a0, a1;

	__builtin_memcpy(&a0, addr, 8);
	__builtin_memcpy(&a1, addr + 8, 8);
	return redirect_rewrite(skb, f->proto | (dst ? REWRITE_DST : 0) | (f->family == FAMILY_IPV6 ? REWRITE_IPV6 : 0) |
					  (l3_off ? 0 : REWRITE_L3),
				port, a0, a1);
}

/* Sends an endpoint's packet to the proxy on proxy_port, recording where it was going (a new flow:
 * record is set) or finding the record of its flow; the packet's IP header starts at l3_off. in_proxy (a new flow whose destination's ingress
 * rules are the proxy's too): the ingress proxy port in bits 0-15 and its rule in bits 16-47, else 0.
 * Returns 0 when the packet now goes to the proxy, -1 when it cannot (no proxy address of its family, not
 * TCP/UDP, no record): the caller drops. */
static __always_inline int redirect_to_proxy(struct __sk_buff *skb, __u32 l3_off, const struct flow *f, __u16 proxy_port,
					     __u32 subject, __u32 rule_id, int record, __u64 in_proxy)
{
	__u32 zero = 0;
	struct redirect_config *cfg = bpf_map_lookup_elem(&membrane_redirect_config, &zero);
	struct redirect_key k;
	struct redirect_value v = {}, *have;

	if (!cfg || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return -1;
	if (f->family == FAMILY_IPV4 ? !cfg->addr4 : !addr6_set(cfg->addr6))
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
	if (f->family == FAMILY_IPV6)
		return rewrite6(skb, l3_off, f->proto, 1, cfg->addr6, bpf_htons(proxy_port));
	return rewrite4(skb, l3_off, f->proto, 1, cfg->addr4, bpf_htons(proxy_port));
}

#define REDIRECT_RECORD 0x10000 /* redirect_to_proxy's record */
#define REDIRECT_L3 0x20000     /* the packet starts at its IP header (the WireGuard device) */

/* redirect_to_proxy as a global function, for a program that cannot afford it inlined on its every path
 * (from-container exceeded the verifier's limit). ctl: the proxy port in bits 0-15, then REDIRECT_*;
 * subject_rule: the subject in bits 0-31, the rule in bits 32-63. */
__attribute__((noinline)) int redirect_to_proxy_global(struct __sk_buff *skb, const struct flow *f, __u32 ctl, __u64 subject_rule,
						       __u64 in_proxy)
{
	if (!skb || !f)
		return -1;
	return redirect_to_proxy(skb, ctl & REDIRECT_L3 ? 0 : ETH_HLEN, f, ctl & 0xffff, (__u32)subject_rule,
				 (__u32)(subject_rule >> 32), ctl & REDIRECT_RECORD, in_proxy);
}

#define REDIRECT_FROM_PROXY_V6 1        /* IPv6 answers too, rewritten through redirect_rewrite */
#define REDIRECT_FROM_PROXY_V6_INLINE 2 /* IPv6 answers too, rewritten inline */

/* A proxy's answer to an endpoint: its source becomes the address and port the endpoint sent to, in
 * the packet and in f (so conntrack sees the reply of the endpoint's own flow). ipv6 (a constant): 0 for
 * IPv4 answers only, else REDIRECT_FROM_PROXY_V6 (through the global redirect_rewrite, which keeps a large
 * program's paths few) or REDIRECT_FROM_PROXY_V6_INLINE (for a caller that is itself a global function and
 * cannot afford redirect_rewrite's frame on top of its own: the combined stack limit). Returns 1 when it
 * rewrote an answer, 0 for a packet that is no proxy answer, -1 when an answer cannot be rewritten. */
static __always_inline int redirect_from_proxy(struct __sk_buff *skb, struct flow *f, int ipv6)
{
	__u32 zero = 0;
	struct redirect_config *cfg;
	struct redirect_key k;
	struct redirect_value *v;
	__be32 orig, src;

	if ((f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP) || (f->family == FAMILY_IPV6 && !ipv6))
		return 0;
	/* The source first (an array element, no hash): most packets are not from the proxy's address, and the
	 * record's lookup cost every packet of every flow before. */
	cfg = bpf_map_lookup_elem(&membrane_redirect_config, &zero);
	if (!cfg)
		return 0;
	if (f->family == FAMILY_IPV6) {
		if (!addr6_equal(f->saddr, cfg->addr6) || !addr6_set(cfg->addr6))
			return 0;
	} else {
		__builtin_memcpy(&src, f->saddr, 4);
		if (src != cfg->addr4)
			return 0;
	}
	redirect_key_fill(&k, f->family, f->daddr, f->dport, f->proto);
	v = bpf_map_lookup_elem(&membrane_redirects, &k);
	if (!v || bpf_ntohs(f->sport) != v->proxy_port)
		return 0;
	if (f->family == FAMILY_IPV6) {
		if ((ipv6 == REDIRECT_FROM_PROXY_V6_INLINE ? rewrite6(skb, ETH_HLEN, f->proto, 0, v->orig_daddr, v->orig_dport)
							    : redirect_rewrite_flow(skb, ETH_HLEN, f, 0, v->orig_daddr, v->orig_dport)) < 0)
			return -1;
	} else {
		__builtin_memcpy(&orig, v->orig_daddr, 4);
		if (rewrite4(skb, ETH_HLEN, f->proto, 0, orig, v->orig_dport) < 0)
			return -1;
	}
	__builtin_memcpy(f->saddr, v->orig_daddr, 16);
	f->sport = v->orig_dport;
	return 1;
}

#endif
