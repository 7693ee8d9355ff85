// Layout of the process events bpf/process.c writes to its ring buffer; mirrored by
// node-agent/runtime/layout.ts (a test compares the sizes and offsets).
#ifndef MEMBRANE_PROCESS_H
#define MEMBRANE_PROCESS_H

#define PROCESS_EVENT_EXEC 1
#define PROCESS_EVENT_EXIT 2
#define PROCESS_FILENAME_MAX 256
#define PROCESS_ARGS_MAX 1024

struct process_event_header {
	__u32 type;      /* PROCESS_EVENT_EXEC or PROCESS_EVENT_EXIT */
	__u32 pid;       /* thread group id: the process */
	__u32 tid;
	__u32 ppid;      /* the real parent's process id */
	__u32 uid;
	__u32 exit_code; /* exit: wait status (signal in the low 7 bits, code in the next 8) */
	__u64 ktime_ns;  /* CLOCK_MONOTONIC */
	__u32 netns;     /* network namespace inode: how pods of the local cluster are told apart */
	__u32 args_len;  /* exec: bytes of args (NUL-separated argv, truncated) */
	__u64 cgroup_id; /* cgroup v2 id */
	char comm[16];
};

struct process_exec_event {
	struct process_event_header h;
	char filename[PROCESS_FILENAME_MAX];
	char args[PROCESS_ARGS_MAX];
};

#endif
