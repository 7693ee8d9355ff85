/* Connection tracking: replies and established flows pass; only new flows are checked by policy. */
#ifndef MEMBRANE_CONNTRACK_H
#define MEMBRANE_CONNTRACK_H

#include "common.h"
#include "packet.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 262144);
} membrane_conntrack SEC(".maps");

enum ct_status { CT_NEW, CT_ESTABLISHED, CT_REPLY };

static __always_inline void ct_key_fill(struct ct_key *k, const struct flow *f, __u8 direction, int swap)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (swap) {
		__builtin_memcpy(k->saddr, f->daddr, 16);
		__builtin_memcpy(k->daddr, f->saddr, 16);
		k->sport = f->dport;
		k->dport = f->sport;
	} else {
		__builtin_memcpy(k->saddr, f->saddr, 16);
		__builtin_memcpy(k->daddr, f->daddr, 16);
		k->sport = f->sport;
		k->dport = f->dport;
	}
	k->proto = f->proto;
	k->family = f->family;
	k->direction = direction;
}

static __always_inline __u64 ct_timeout(__u8 state)
{
	switch (state) {
	case CT_TCP_SYN_SENT:
		return CT_TIMEOUT_TCP_SYN * NS_PER_SEC;
	case CT_TCP_ESTABLISHED:
		return CT_TIMEOUT_TCP_ESTABLISHED * NS_PER_SEC;
	case CT_TCP_CLOSING:
		return CT_TIMEOUT_TCP_CLOSE * NS_PER_SEC;
	default:
		return CT_TIMEOUT_OTHER * NS_PER_SEC;
	}
}

/* Advances an entry's TCP state with the packet's flags and refreshes its deadline. */
static __always_inline void ct_refresh(struct ct_value *v, const struct flow *f, int reply, __u64 now)
{
	__u8 state = v->state;
	__u64 expires;

	if (f->proto == IPPROTO_TCP) {
		if (f->tcp_flags & (TCP_FLAG_RST | TCP_FLAG_FIN))
			state = CT_TCP_CLOSING;
		else if (reply && state == CT_TCP_SYN_SENT && (f->tcp_flags & TCP_FLAG_ACK))
			state = CT_TCP_ESTABLISHED;
	}
	if (reply && !v->seen_reply)
		v->seen_reply = 1;
	if (state != v->state)
		v->state = state;
	/* Writing the deadline on every packet bounces the entry's cache line between the CPUs of
	 * the two directions: move it only when it gains a second (a shorter one, e.g. closing, wraps
	 * the difference and is always written). */
	expires = now + ct_timeout(state);
	if (expires - v->expires_ns > NS_PER_SEC)
		v->expires_ns = expires;
}

/* Looks the packet up in the direction being checked; updates the entry it finds and, when flags is
 * not NULL, copies out its CT_F_* flags. */
static __always_inline enum ct_status ct_lookup(const struct flow *f, __u8 direction, __u8 *flags)
{
	struct ct_key k;
	struct ct_value *v;
	__u64 now = bpf_ktime_get_ns();

	ct_key_fill(&k, f, direction, 0);
	v = bpf_map_lookup_elem(&membrane_conntrack, &k);
	if (v && v->expires_ns > now) {
		/* A new SYN on a closing tuple is a new connection: policy decides again. */
		if (f->proto == IPPROTO_TCP && v->state == CT_TCP_CLOSING &&
		    (f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			return CT_NEW;
		ct_refresh(v, f, 0, now);
		if (flags)
			*flags = v->flags;
		return CT_ESTABLISHED;
	}
	/* A connection's first packet (SYN without ACK) is never a reply: spare the second lookup
	 * (a simultaneous open then meets policy, which fails closed, not open). */
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return CT_NEW;
	ct_key_fill(&k, f, direction == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS, 1);
	v = bpf_map_lookup_elem(&membrane_conntrack, &k);
	if (v && v->expires_ns > now) {
		ct_refresh(v, f, 1, now);
		if (flags)
			*flags = v->flags;
		return CT_REPLY;
	}
	return CT_NEW;
}

/* Records a new flow allowed by policy (flags: CT_F_*). */
static __always_inline void ct_create(const struct flow *f, __u8 direction, __u32 rule_id, __u8 flags)
{
	struct ct_key k;
	struct ct_value v = { .rule_id = rule_id, .flags = flags };
	__u64 now = bpf_ktime_get_ns();

	ct_key_fill(&k, f, direction, 0);
	if (f->proto == IPPROTO_TCP)
		v.state = (f->tcp_flags & (TCP_FLAG_RST | TCP_FLAG_FIN)) ? CT_TCP_CLOSING :
			  (f->tcp_flags & TCP_FLAG_SYN) ? CT_TCP_SYN_SENT : CT_TCP_ESTABLISHED;
	else
		v.state = CT_OTHER;
	v.expires_ns = now + ct_timeout(v.state);
	bpf_map_update_elem(&membrane_conntrack, &k, &v, BPF_ANY);
}

#endif
