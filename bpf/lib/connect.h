// Layout of the runtime connect rules bpf/connect.c evaluates and the events it writes; mirrored by
// node-agent/runtime/connect-layout.ts (a test compares the sizes and offsets).
#ifndef MEMBRANE_CONNECT_H
#define MEMBRANE_CONNECT_H

/* rules of one set */
#define CONNECT_RULES_MAX 4096
#define CONNECT_SLOTS (2 * CONNECT_RULES_MAX) /* membrane_connect_rules: the set in force and the next one beside it */
#define CONNECT_INDEX_MAX (2 * CONNECT_RULES_MAX + 2) /* membrane_connect_index: a list holds a rule at least, one ANY key per set */

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

/*
 * Which rules of the set in force a caller can match, so that a connect looks at its own rules only, however many pods
 * the node holds: a list of the rules for every process (subject CONNECT_SUBJECT_ANY, id 0), one per network namespace
 * with rules of its own (CONNECT_SUBJECT_NETNS, the inode: those and the every-process ones) and one per cgroup with
 * rules of its own (CONNECT_SUBJECT_CGROUP, the cgroup v2 id: those, its pod's and the every-process ones), each a
 * range of membrane_connect_rules in the set's order (the first rule of a hook that matches acts), keyed by the set's
 * first slot. A caller is judged by its cgroup's list when its network namespace is the one that list is for, else by
 * its network namespace's, else by the every-process one. A set with no ANY key (written by an earlier runtime, before
 * lists) is judged whole.
 */
#define CONNECT_SUBJECT_ANY 0
#define CONNECT_SUBJECT_NETNS 1
#define CONNECT_SUBJECT_CGROUP 2
#define CONNECT_INDEX_F_NETNS 1
#define CONNECT_INDEX_F_CGROUP 2

struct connect_index_key {
	__u32 set_first; /* the first slot of the set the list belongs to */
	__u8 subject;    /* CONNECT_SUBJECT_* */
	__u8 pad[3];
	__u64 id;        /* network namespace inode or cgroup v2 id; 0 for ANY */
};

struct connect_index {
	__u32 first;     /* slot in membrane_connect_rules */
	__u32 count;
	__u32 flags;     /* ANY keys: CONNECT_INDEX_F_* */
	__u32 netns;     /* CGROUP keys: the network namespace of the cgroup's pod (its rules hold only there) */
};

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
