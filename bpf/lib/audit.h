/* Policy audit mode: a packet policy would drop passes and is reported as an audit (Hubble's verdict AUDIT). */
#ifndef MEMBRANE_AUDIT_H
#define MEMBRANE_AUDIT_H

#include "common.h"
#include "packet.h"
#include "config.h"
#include "events.h"

/* Audits by would-be drop reason (DROP_POLICY_*), per CPU like the drop counters: never loses a count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DROP_REASON_MAX);
} membrane_audits SEC(".maps");

/* Whether policy only audits for this endpoint: the node's mode (config) or the endpoint's own flag.
 * Only policy verdicts are audited; a malformed, spoofed or overflowing packet is dropped whatever this says. */
static __always_inline int policy_audit_mode(const struct endpoint_value *ep)
{
	struct config_value *cfg = config_get();

	return (ep->flags & EP_F_POLICY_AUDIT) || (cfg && (cfg->flags & CONFIG_F_POLICY_AUDIT));
}

/* Counts and reports a policy drop that audit mode lets pass (the caller creates the conntrack entry). */
static __always_inline void policy_audit(struct __sk_buff *skb, const struct flow *f, __u8 direction, __u8 reason,
					 __u32 src_id, __u32 dst_id, __u32 rule_id)
{
	__u32 idx = reason;
	__u64 *c = bpf_map_lookup_elem(&membrane_audits, &idx);

	if (c)
		*c += 1;
	event_emit(skb, f, EVENT_AUDIT, EVENT_CT_NEW, direction, reason, src_id, dst_id, rule_id);
}

#endif
