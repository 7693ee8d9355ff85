// Layout of the process events bpf/process.c writes to its ring buffer; mirrored by
// node-agent/runtime/layout.ts (a test compares the sizes and offsets).
#ifndef MEMBRANE_PROCESS_H
#define MEMBRANE_PROCESS_H

#define PROCESS_EVENT_EXEC 1
#define PROCESS_EVENT_EXIT 2
#define PROCESS_FILENAME_MAX 256
#define PROCESS_ARGS_MAX 1024
#define PROCESS_CWD_DEPTH 32      /* directories (and mount crossings) the exec program walks up from the cwd */
#define PROCESS_CWD_MAX 1024      /* bytes of cwd components before the last one read */
#define PROCESS_CWD_NAME_MAX 256  /* bytes of one component (NUL included); a longer one ends the walk */
#define PROCESS_CWD_COMPLETE 1    /* cwd_flags: the walk reached the process's root (else user space reads /proc) */

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
	__u32 cwd_len;   /* bytes of cwd */
	__u32 cwd_flags; /* PROCESS_CWD_COMPLETE */
	/* The working directory at exec, read in the kernel so that a process gone before user space reads its record
	 * still has one: its components from the leaf up, each NUL-terminated ("tmp\0" + ... for /.../tmp). */
	char cwd[PROCESS_CWD_MAX + PROCESS_CWD_NAME_MAX];
};

#endif
