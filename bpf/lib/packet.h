/* Parses an Ethernet frame into the flow tuple the policy and conntrack work on. */
#ifndef MEMBRANE_PACKET_H
#define MEMBRANE_PACKET_H

#include "common.h"

struct flow {
	__u8 family;
	__u8 proto;
	__u8 tcp_flags; /* TCP only: FIN=1 SYN=2 RST=4 ACK=16 */
	__u8 icmp_code; /* ICMP/ICMPv6 only: the message's code (flows report it; policy and conntrack do not use it) */
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport; /* for ICMP/ICMPv6: the type, as a port (high byte 0); see parse_l4 for echo */
};

enum parse_result { PARSE_OK, PARSE_PASS /* ARP, ND: not subject to policy */, PARSE_DROP };

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static __always_inline int parse_l4(void *data, void *data_end, void *l4, struct flow *f, __u8 *reason)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			goto malformed;
		f->sport = th->source;
		f->dport = th->dest;
		f->tcp_flags = ((__u8 *)th)[13];
	} else if (f->proto == IPPROTO_UDP || f->proto == IPPROTO_SCTP_) {
		/* SCTP's common header starts with the same two ports as UDP. */
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end)
			goto malformed;
		f->sport = uh->source;
		f->dport = uh->dest;
	} else if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6) {
		__u8 *t = l4;
		__u8 request = f->proto == IPPROTO_ICMP ? 8 : 128;
		__u8 reply = f->proto == IPPROTO_ICMP ? 0 : 129;
		if ((void *)(t + 8) > data_end)
			goto malformed;
		f->icmp_code = t[1];
		/* Echo request: (id -> type), as policy sees it; echo reply: (request type -> id), so
		 * that the reply is the swapped tuple of its request and conntrack lets it back. */
		if (t[0] == request) {
			f->sport = *(__be16 *)(t + 4);
			f->dport = bpf_htons((__u16)request);
		} else if (t[0] == reply) {
			f->sport = bpf_htons((__u16)request);
			f->dport = *(__be16 *)(t + 4);
		} else {
			f->dport = bpf_htons((__u16)t[0]);
		}
	}
	/* Any other protocol (VRRP, IGMP, GRE, ESP, ...) has no ports: sport and dport stay 0, so
	 * policy looks it up by its protocol number with port 0 (entries of port-less rules, or of
	 * L3-only rules with protocol 0), and conntrack keys it on addresses and protocol, as it does
	 * UDP: the peer's packets back are a reply. Without an entry the endpoint's default deny drops it. */
	return PARSE_OK;
malformed:
	*reason = DROP_MALFORMED;
	return PARSE_DROP;
}

/* Fills f from the IP packet at l3 whose EtherType is h_proto; on PARSE_DROP, *reason says why. */
static __always_inline int parse_ip(void *data, void *data_end, void *l3, __be16 h_proto, struct flow *f, __u8 *reason)
{
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->ihl < 5) {
			*reason = DROP_MALFORMED;
			return PARSE_DROP;
		}
		f->family = FAMILY_IPV4;
		f->proto = ip->protocol;
		__builtin_memcpy(f->saddr, &ip->saddr, 4);
		__builtin_memcpy(f->daddr, &ip->daddr, 4);
		/* Non-first fragments carry no ports: the policy cannot be decided, so fail closed. */
		if (ip->frag_off & bpf_htons(0x1fff)) {
			*reason = DROP_FRAGMENT;
			return PARSE_DROP;
		}
		return parse_l4(data, data_end, (void *)ip + ip->ihl * 4, f, reason);
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end) {
			*reason = DROP_MALFORMED;
			return PARSE_DROP;
		}
		f->family = FAMILY_IPV6;
		f->proto = ip6->nexthdr;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		void *l4 = (void *)(ip6 + 1);
		/* One hop-by-hop header (multicast listener reports carry one) is skipped; other
		 * extension headers are not walked: they meet the policy under their own number. */
		if (f->proto == IPPROTO_HOPOPTS) {
			__u8 *hbh = l4;
			if ((void *)(hbh + 2) > data_end) {
				*reason = DROP_MALFORMED;
				return PARSE_DROP;
			}
			f->proto = hbh[0];
			l4 += (hbh[1] + 1) * 8;
		}
		if (parse_l4(data, data_end, l4, f, reason) == PARSE_DROP)
			return PARSE_DROP;
		/* Link-local control that keeps links up: multicast listener queries/reports (130-132,
		 * 143) and neighbour discovery (133-137). */
		if (f->proto == IPPROTO_ICMPV6) {
			__u16 type = bpf_ntohs(f->dport);
			if ((type >= 130 && type <= 137) || type == 143)
				return PARSE_PASS;
		}
		return PARSE_OK;
	}
	*reason = DROP_UNSUPPORTED_L3;
	return PARSE_DROP;
}

/* Fills f from the frame; on PARSE_DROP, *reason says why. */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *f, __u8 *reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	__builtin_memset(f, 0, sizeof(*f));
	if ((void *)(eth + 1) > data_end) {
		*reason = DROP_MALFORMED;
		return PARSE_DROP;
	}
	if (eth->h_proto == bpf_htons(ETH_P_ARP_))
		return PARSE_PASS;
	return parse_ip(data, data_end, (void *)(eth + 1), eth->h_proto, f, reason);
}

/* parse_flow for a device without a link-layer header (the WireGuard TUN device): the packet starts at
 * its IP header, its EtherType in skb->protocol. */
static __always_inline int parse_flow_l3(struct __sk_buff *skb, struct flow *f, __u8 *reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	__builtin_memset(f, 0, sizeof(*f));
	return parse_ip(data, data_end, data, (__be16)skb->protocol, f, reason);
}

#endif
