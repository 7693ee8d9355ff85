/* Verdict events (ring buffer) and the per-CPU drop-by-reason counters that never lose a count. */
#ifndef MEMBRANE_EVENTS_H
#define MEMBRANE_EVENTS_H

#include "common.h"
#include "packet.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} membrane_events SEC(".maps");

#define EVENTS_WAKEUP_BYTES (64 * 1024)
#define EVENT_RECORD_BYTES (sizeof(struct event) + 8) /* + the ring's record header */

/* Index DROP_* counts drops by reason; index 0 counts events lost to a full ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DROP_REASON_MAX);
} membrane_drops SEC(".maps");

static __always_inline void counter_inc(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&membrane_drops, &idx);
	if (c)
		*c += 1; /* per-CPU slot: no other writer */
}

static __always_inline void event_emit(struct __sk_buff *skb, const struct flow *f, __u8 verdict, __u8 ct_state,
				       __u8 direction, __u8 reason, __u32 src_id, __u32 dst_id, __u32 rule_id)
{
	struct event *e = bpf_ringbuf_reserve(&membrane_events, sizeof(*e), 0);
	__u64 avail;

	if (!e) {
		counter_inc(DROP_NONE);
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->verdict = verdict;
	e->direction = direction;
	e->reason = reason;
	e->proto = f->proto;
	e->family = f->family;
	e->tcp_flags = f->proto == IPPROTO_TCP ? f->tcp_flags : 0;
	e->ct_state = ct_state;
	e->icmp_code = f->icmp_code; /* 0 unless ICMP (parse_flow zeroes the flow) */
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->rule_id = rule_id;
	e->ifindex = skb->ifindex;
	__builtin_memcpy(e->saddr, f->saddr, 16);
	__builtin_memcpy(e->daddr, f->daddr, 16);
	e->sport = f->sport;
	e->dport = f->dport;
	e->pad2 = 0;
	/* Waking the reader per event costs more than the event (a context switch per new flow):
	 * wake it once, when the unread data crosses a batch size; the reader also drains on a timer. */
	avail = bpf_ringbuf_query(&membrane_events, BPF_RB_AVAIL_DATA); /* includes this record */
	bpf_ringbuf_submit(e, avail >= EVENTS_WAKEUP_BYTES && avail < EVENTS_WAKEUP_BYTES + EVENT_RECORD_BYTES ?
				      BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Counts the drop (always) and reports it (when the ring has room); returns TC_ACT_SHOT. */
static __always_inline int drop(struct __sk_buff *skb, const struct flow *f, __u8 direction, __u8 reason,
				__u32 src_id, __u32 dst_id, __u32 rule_id)
{
	counter_inc(reason);
	event_emit(skb, f, EVENT_DROPPED, EVENT_CT_NEW, direction, reason, src_id, dst_id, rule_id);
	return TC_ACT_SHOT;
}

#endif
