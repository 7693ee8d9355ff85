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

/* The clock of the deadlines: the coarse clock (one tick, a few ms) is exact enough for timeouts of
 * seconds and costs a memory read instead of a clock-source read on every packet. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* The entry of the tuple as the originator sent it (forward) or of the swapped tuple checked in the
 * other direction (reply), when it is live. */
static __always_inline struct ct_value *ct_find(const struct flow *f, __u8 direction, int reply, __u64 now)
{
	struct ct_key k;
	struct ct_value *v;

	if (reply)
		ct_key_fill(&k, f, direction == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS, 1);
	else
		ct_key_fill(&k, f, direction, 0);
	v = bpf_map_lookup_elem(&membrane_conntrack, &k);
	return v && v->expires_ns > now ? v : NULL;
}

/* What a lookup hands to the creation of the same packet's entry, and to monitor aggregation. */
struct ct_ctx {
	__u64 now;                /* ct_now() at the start of the program */
	struct ct_value *closing; /* a new SYN's tuple still has a closing entry: reused in place */
	struct ct_value *entry;   /* the entry an established or reply packet matched */
};

/* An endpoint program's stamp (struct ct_value's ifindex and ep_gen, CT_STAMP_NONE for a host program's entries, never
 * stamped): its interface and the endpoint generation it read before any endpoint lookup. A scalar beside struct
 * ct_ctx, not in it: to_container's calls stay within the verifier's combined stack limit. */
#define CT_STAMP_NONE 0
static __always_inline __u64 ct_stamp_of(__u32 ifindex, __u32 ep_gen)
{
	return ((__u64)ep_gen << 32) | ifindex;
}

/* Whether an entry carries the program's stamp (or the program has none). */
static __always_inline int ct_stamped(const struct ct_value *v, __u64 stamp)
{
	return stamp == CT_STAMP_NONE || (v->ifindex == (__u32)stamp && v->ep_gen == (__u32)(stamp >> 32));
}

/* What a packet shows of its connection, in CT_REPORTED_* bits of its own direction. */
static __always_inline __u8 ct_report_bits(const struct flow *f)
{
	return CT_REPORTED_FIRST | (f->proto == IPPROTO_TCP ? f->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_SYN | TCP_FLAG_RST) : 0);
}

/* A found entry of the packet: refreshed at once when it carries the program's stamp (or the program has none), else
 * left for ct_stamp, after the endpoint check: a packet that fails it leaves the entry as it was. */
static __always_inline void ct_found(struct ct_value *v, const struct flow *f, int reply, struct ct_ctx *ctx, __u64 stamp)
{
	ctx->entry = v;
	if (ct_stamped(v, stamp))
		ct_refresh(v, f, reply, ctx->now);
}

/* The endpoint check passed a known packet whose entry did not carry the stamp: refresh it (as ct_lookup would
 * have) and stamp it, one write per endpoint generation and flow, not per packet. */
static __always_inline void ct_stamp(const struct flow *f, int reply, struct ct_ctx *ctx, __u64 stamp)
{
	struct ct_value *v = ctx->entry;

	if (!v || ct_stamped(v, stamp))
		return;
	ct_refresh(v, f, reply, ctx->now);
	v->ifindex = (__u32)stamp;
	v->ep_gen = (__u32)(stamp >> 32);
}

/* Looks the packet up in the direction being checked; updates the entry it finds (when it carries the program's
 * stamp, ct_found) and, when flags is not NULL, copies out its CT_F_* flags. */
static __always_inline enum ct_status ct_lookup(const struct flow *f, __u8 direction, __u8 *flags, struct ct_ctx *ctx,
						__u64 stamp)
{
	__u64 now = ctx->now;
	__u8 syn_ack = f->proto == IPPROTO_TCP ? f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) : 0;
	struct ct_value *v;

	/* A SYN-ACK answers a SYN: its reply entry is the one that exists, so look that up first
	 * (a simultaneous open's SYN-ACK still finds its forward entry next). */
	if (syn_ack == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
		v = ct_find(f, direction, 1, now);
		if (v) {
			ct_found(v, f, 1, ctx, stamp);
			if (flags)
				*flags = v->flags;
			return CT_REPLY;
		}
	}
	v = ct_find(f, direction, 0, now);
	if (v) {
		/* A new SYN on a closing tuple is a new connection: policy decides again, and an allow
		 * reuses the entry (a client reconnecting from the same port costs no map update). */
		if (v->state == CT_TCP_CLOSING && syn_ack == TCP_FLAG_SYN) {
			ctx->closing = v;
			return CT_NEW;
		}
		ct_found(v, f, 0, ctx, stamp);
		if (flags)
			*flags = v->flags;
		return CT_ESTABLISHED;
	}
	/* A connection's first packet (SYN without ACK) is never a reply, and a SYN-ACK's reply entry
	 * was looked up already: spare the lookup (a simultaneous open then meets policy, which fails
	 * closed, not open). */
	if (syn_ack == TCP_FLAG_SYN || syn_ack == (TCP_FLAG_SYN | TCP_FLAG_ACK))
		return CT_NEW;
	v = ct_find(f, direction, 1, now);
	if (v) {
		ct_found(v, f, 1, ctx, stamp);
		if (flags)
			*flags = v->flags;
		return CT_REPLY;
	}
	return CT_NEW;
}

/* Records a new flow allowed by policy (flags: CT_F_*) with the program's stamp, in the closing entry of its tuple if
 * the lookup found one. */
static __always_inline void ct_create(const struct flow *f, __u8 direction, __u32 rule_id, __u8 flags, struct ct_ctx *ctx,
				      __u64 stamp)
{
	struct ct_key k;
	/* The opening packet is what a new-connection event reports. */
	struct ct_value v = { .rule_id = rule_id, .flags = flags, .reported = ct_report_bits(f), .ifindex = (__u32)stamp,
			      .ep_gen = (__u32)(stamp >> 32) };
	struct ct_value *closing = ctx->closing;
	__u64 now = ctx->now;

	if (f->proto == IPPROTO_TCP)
		v.state = (f->tcp_flags & (TCP_FLAG_RST | TCP_FLAG_FIN)) ? CT_TCP_CLOSING :
			  (f->tcp_flags & TCP_FLAG_SYN) ? CT_TCP_SYN_SENT : CT_TCP_ESTABLISHED;
	else
		v.state = CT_OTHER;
	v.expires_ns = now + ct_timeout(v.state);
	if (closing) {
		closing->rule_id = v.rule_id;
		closing->flags = v.flags;
		closing->seen_reply = 0;
		closing->reported = v.reported;
		closing->state = v.state;
		closing->expires_ns = v.expires_ns;
		closing->ifindex = v.ifindex;
		closing->ep_gen = v.ep_gen;
		return;
	}
	ct_key_fill(&k, f, direction, 0);
	bpf_map_update_elem(&membrane_conntrack, &k, &v, BPF_ANY);
}

#endif
