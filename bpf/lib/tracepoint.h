// Layout of the TracingPolicy tracepoint hooks bpf/tracepoint.c evaluates (how each hook's listed arguments are
// read, the rules its selectors expand to) and the events it writes; mirrored by node-agent/runtime/tracepoint-layout.ts
// (a test compares the sizes and offsets).
#ifndef MEMBRANE_TRACEPOINT_H
#define MEMBRANE_TRACEPOINT_H

#define TP_HOOKS_MAX 64        /* hooks of one rule set */
#define TP_RULES_MAX 4096      /* rules of one rule set */
#define TP_SETS 2              /* the set in force and the one the agent writes beside it */
#define TP_INDEX_MAX (TP_SETS * (TP_RULES_MAX + TP_HOOKS_MAX)) /* membrane_tp_index: a list holds a rule at least, and one empty ANY list per hook */
#define TP_ARGS_MAX 5          /* listed arguments a hook reads */
#define TP_FILTERS_MAX 4       /* argument filters one rule ANDs */
#define TP_STR_MAX 256         /* bytes of a string argument read (NUL included) and of a string value */
#define TP_BINARIES_MAX 64     /* matchBinaries values: one bit each in a process's binary set */
#define TP_PROCS_MAX 65536     /* processes whose binary matches a value (membrane_tp_procs) */

#define TP_ARG_INT 1
#define TP_ARG_STRING 2

#define TP_OP_EQUAL 1
#define TP_OP_PREFIX 2
#define TP_OP_POSTFIX 3
#define TP_OP_GT 4
#define TP_OP_LT 5
#define TP_OP_MASK 6

#define TP_ACTION_POST 1
#define TP_ACTION_SIGKILL 2
#define TP_ACTION_SIGNAL 3

#define TP_F_NOPOST 1          /* act without an event */
#define TP_F_PID_NOT 4         /* the caller's pid must not be pid */

/* How one listed argument is read from the tracepoint's record. */
struct tp_arg {
	__u16 offset;    /* in the record (the format's offset) */
	__u8 kind;       /* TP_ARG_*; 0: not read */
	__u8 size;       /* integers: 1, 2, 4 or 8 bytes */
	__u8 is_signed;  /* integers: sign-extended and compared signed */
	__u8 pad[3];
};

/* One hook: the tracepoint (by its tracefs id: the cookie of the program's link to it) and its listed arguments. */
struct tp_hook {
	__u32 event_id;
	__u32 nargs;
	struct tp_arg args[TP_ARGS_MAX];
};

/* One argument filter; a negated one must not hold. */
struct tp_filter {
	__u8 arg;        /* listed argument */
	__u8 op;         /* TP_OP_*; 0: no filter */
	__u8 negate;
	__u8 pad;
	__u32 len;       /* string value: bytes without the NUL */
	__s64 value;     /* integer value (the mask for TP_OP_MASK) */
	char str[TP_STR_MAX];
};

/* One selector of one hook, with one value of each positive filter (the agent expands the rest). */
struct tp_rule {
	__u32 hook;      /* slot in membrane_tp_hooks (of the rule's set); the first rule of a hook that matches acts */
	__u32 netns;     /* network namespace inode of the caller; 0: any */
	__u32 pid;       /* the caller's process id; 0: any */
	__u8 action;     /* TP_ACTION_* */
	__u8 signal;     /* TP_ACTION_SIGNAL */
	__u8 flags;      /* TP_F_* */
	__u8 nfilters;
	/* matchBinaries, over the bits of membrane_tp_binaries in the caller's set (its entries ANDed, as Tetragon's): */
	__u64 binaries;      /* one of these (the first In/Prefix/Postfix entry's values); 0: any */
	__u64 binaries_all;  /* all of these (one value of each further positive entry; the agent expands the rest) */
	__u64 binaries_none; /* none of these (every NotIn/NotPrefix/NotPostfix entry's values) */
	__u64 cgroup;        /* cgroup v2 id the caller must be in (a selected container's, for containerSelector); 0: any */
	struct tp_filter filters[TP_FILTERS_MAX];
};

/*
 * Which rules a caller can match, so that an event looks at its own rules only, however many pods the node holds: for
 * one set and tracepoint, a list of the rules for every process (subject TP_SUBJECT_ANY, id 0), one per network
 * namespace with rules of its own (TP_SUBJECT_NETNS, the inode: those rules and the every-process ones) and one per
 * cgroup with rules of its own (TP_SUBJECT_CGROUP, the cgroup v2 id: those, its pod's and the every-process ones),
 * each a range of membrane_tp_rules in the set's order (the first rule of a hook that matches acts). A caller is judged
 * by its cgroup's list when its network namespace is the one that list is for, else by its network namespace's, else
 * by the every-process list. Every tracepoint with rules has its ANY key (count 0 when no rule is for every process),
 * whose flags say whether keys of the other subjects exist for it.
 */
#define TP_SUBJECT_ANY 0
#define TP_SUBJECT_NETNS 1
#define TP_SUBJECT_CGROUP 2
#define TP_INDEX_F_NETNS 1
#define TP_INDEX_F_CGROUP 2

struct tp_index_key {
	__u32 event_id;  /* the tracepoint's tracefs id */
	__u8 set;        /* 0 or 1 */
	__u8 subject;    /* TP_SUBJECT_* */
	__u16 pad;
	__u64 id;        /* network namespace inode or cgroup v2 id; 0 for ANY */
};

struct tp_index {
	__u32 first;     /* slot in membrane_tp_rules */
	__u32 count;
	__u32 flags;     /* ANY keys: TP_INDEX_F_* */
	__u32 netns;     /* CGROUP keys: the network namespace of the cgroup's pod (its rules hold only there) */
};

/* One matchBinaries value, judged once per exec against the new binary's path (bprm->filename, as the process
 * cache names it); the process's set of matching values is kept in membrane_tp_procs by its pid. */
struct tp_binary {
	__u8 op;         /* TP_OP_EQUAL (In), TP_OP_PREFIX, TP_OP_POSTFIX */
	__u8 pad[3];
	__u32 len;       /* bytes without the NUL */
	char str[TP_STR_MAX];
};

/*
 * membrane_tp_in_force (one word): the rule set in force + 1; 0: none. Set s holds the hooks
 * membrane_tp_hooks[s * TP_HOOKS_MAX ..], the rules membrane_tp_rules[s * TP_RULES_MAX ..] and the index keys of set s.
 * The agent writes a new set into the other half, then switches this word: an event is judged by one whole set.
 * membrane_tp_count: slot 1 the binary count (slot 0 is unused: the rule count before rule sets).
 */

struct tp_event {
	__u32 pid;
	__u32 tid;
	__u32 netns;
	__u32 rule;      /* slot of the rule that matched (its set's half of membrane_tp_rules) */
	__u32 hook;
	__u8 action;
	__u8 flags;
	__u16 pad;
	__u64 ktime_ns;
	__s64 ints[TP_ARGS_MAX];
	char strs[TP_ARGS_MAX][TP_STR_MAX];
};

#endif
