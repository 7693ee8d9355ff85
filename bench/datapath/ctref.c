// bench/datapath's conntrack reference: parse the frame and track the connection with Membrane's own
// headers (lookup, and the insert of a new flow), nothing else: no endpoint, ipcache, policy or event.
// What any connection-tracking tc datapath pays; Membrane's programs are measured against it.
#include "common.h"
#include "packet.h"
#include "conntrack.h"

static __always_inline int track(struct __sk_buff *skb, __u8 direction)
{
	struct flow f;
	__u8 reason = DROP_NONE;
	struct ct_ctx ctx = { .now = ct_now() };

	if (parse_flow(skb, &f, &reason) != PARSE_OK)
		return TC_ACT_OK;
	/* No endpoint check to stamp for: every found entry is refreshed, as Membrane's host programs do. */
	if (ct_lookup(&f, direction, NULL, &ctx, CT_STAMP_NONE) == CT_NEW)
		ct_create(&f, direction, RULE_ID_NONE, CT_F_NO_TUNNEL, &ctx, CT_STAMP_NONE);
	return TC_ACT_OK;
}

SEC("tc")
int ct_egress(struct __sk_buff *skb)
{
	return track(skb, DIR_EGRESS);
}

SEC("tc")
int ct_ingress(struct __sk_buff *skb)
{
	return track(skb, DIR_INGRESS);
}

char _license[] SEC("license") = "GPL";
