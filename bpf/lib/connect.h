// Layout of the runtime connect rules bpf/connect.c evaluates and the events it writes; mirrored by
// node-agent/runtime/connect-layout.ts (a test compares the sizes and offsets).
#ifndef MEMBRANE_CONNECT_H
#define MEMBRANE_CONNECT_H

#define CONNECT_RULES_MAX 256

#define CONNECT_ACTION_POST 1
#define CONNECT_ACTION_OVERRIDE 2
#define CONNECT_ACTION_SIGKILL 3
#define CONNECT_ACTION_SIGNAL 4

#define CONNECT_F_PORT_NOT 1 /* the port range must not hold the destination port */
#define CONNECT_F_ADDR_NOT 2 /* the address prefix must not hold the destination */
#define CONNECT_F_NOPOST 4   /* act without an event */

/* One selector of one connect hook, with one value of each of its filters (the agent expands the rest). */
struct connect_rule {
	__u32 netns;     /* network namespace inode the caller must be in; 0: any */
	__u32 hook;      /* rules of one hook share it: the first that matches acts, the others of the hook are skipped */
	__u16 port_lo;   /* destination port range (host order); 0..65535 when the selector names no port */
	__u16 port_hi;
	__u8 family;     /* 2 (AF_INET), 10 (AF_INET6) or 0: both */
	__u8 action;     /* CONNECT_ACTION_* */
	__u8 signal;     /* CONNECT_ACTION_SIGNAL */
	__u8 flags;      /* CONNECT_F_* */
	__u8 addr[16];   /* destination prefix (IPv4 in the first 4 bytes); prefix length 0: any address */
	__u32 prefix_len;
	__u32 policy;    /* the agent's index of the policy, carried by events */
	__u64 cgroup;    /* cgroup v2 id the caller must be in (a container's, for containerSelector); 0: any */
};

/*
 * The rules in force are membrane_connect_rules[first .. first + count), described by slot 0 of membrane_connect_count:
 * count in the low 16 bits, first in the high 16 (one word, so the agent switches to a new set in one write; a word
 * written before first existed is a count from slot 0). The agent writes a new set beside the one in force, never over
 * it, and then switches: a connect is judged by one whole set, and no rule is rewritten while a program reads it.
 */
#define CONNECT_RANGE_COUNT(v) ((v) & 0xffff)
#define CONNECT_RANGE_FIRST(v) ((v) >> 16)

struct connect_event {
	__u32 pid;
	__u32 tid;
	__u32 netns;
	__u32 rule;      /* slot of the rule that matched (it may hold another rule by the time the event is read) */
	__u8 family;
	__u8 action;
	__u8 protocol;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
	__u16 port;      /* destination port, host order */
	__u16 pad2;
	__u8 addr[16];
	__u64 ktime_ns;
	__u32 hook;      /* the matched rule's hook id: names its policy whichever rule set is in force when the event is read */
	__u32 policy;    /* the matched rule's policy index */
};

#endif
