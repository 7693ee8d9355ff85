/* Monitor aggregation: which packets of allowed connections are reported (drops always are, events.h). */
#ifndef MEMBRANE_MONITOR_H
#define MEMBRANE_MONITOR_H

#include "common.h"
#include "packet.h"
#include "conntrack.h"

/* The CONFIG_F_EVENTS_* flags the agent wrote (node-agent/monitor-aggregation.ts); none written = 0 =
 * no events for allowed connections, as before the agent had a level. */
static __always_inline __u32 monitor_flags(const struct config_value *cfg)
{
	return cfg ? cfg->flags : 0;
}

/* Whether a packet of a known connection (entry v, reply or not) is reported. At CONFIG_F_EVENTS_FLAGS
 * it is when it shows what its direction has not shown yet (its first packet, SYN, FIN, RST), and the
 * entry remembers it: once per connection and direction, whatever the number of packets. Two CPUs
 * may both report the same flag (the bits are not written atomically): a duplicate, never a loss. */
static __always_inline int monitor_known(__u32 flags, const struct flow *f, struct ct_value *v, int reply)
{
	__u8 bits, seen;

	if (flags & CONFIG_F_EVENTS_PACKETS)
		return 1;
	if (!(flags & CONFIG_F_EVENTS_FLAGS) || !v)
		return 0;
	bits = ct_report_bits(f) << (reply ? CT_REPORTED_REPLY_SHIFT : 0);
	seen = v->reported;
	if (!(bits & ~seen))
		return 0;
	v->reported = seen | bits;
	return 1;
}

#endif
