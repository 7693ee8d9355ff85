// Process visibility: every exec and every process exit on the node, from the scheduler's BTF tracepoints
// (tp_btf, CO-RE against /sys/kernel/btf/vmlinux), into a ring buffer read by node-agent/runtime/.
// A separate object from datapath.c: it shares no map with the network datapath.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "process.h"
#include "netns.h"

// Only the fields read here; CO-RE relocates them by name against the running kernel's BTF.
struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} __attribute__((preserve_access_index));
struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));
struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));
struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
} __attribute__((preserve_access_index));
struct vfsmount {
	struct dentry *mnt_root;
} __attribute__((preserve_access_index));
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __attribute__((preserve_access_index));
struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));
struct fs_struct {
	struct path root;
	struct path pwd;
} __attribute__((preserve_access_index));
struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
	struct fs_struct *fs;
	char comm[16];
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} membrane_process_events SEC(".maps");

// Records that found the ring full: the agent reports them as lost (never silently).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} membrane_process_lost SEC(".maps");

/* Records are not announced one by one: waking the reader for each exec and exit costs the node a context switch per
 * event. The reader drains on its timer (100 ms), and is woken at once only when a quarter of the ring is waiting. */
#define PROCESS_WAKEUP_BYTES (1 << 20)

static __always_inline void submit(void *record)
{
	__u64 waiting = bpf_ringbuf_query(&membrane_process_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(record, waiting >= PROCESS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&membrane_process_lost, &zero);
	if (n)
		*n += 1;
}

static __always_inline void fill_header(struct process_event_header *h, struct task_struct *task, __u32 type)
{
	h->type = type;
	h->pid = BPF_CORE_READ(task, tgid);
	h->tid = BPF_CORE_READ(task, pid);
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->exit_code = 0;
	h->ktime_ns = bpf_ktime_get_ns();
	h->netns = TASK_NETNS(task);
	h->args_len = 0;
	h->cgroup_id = bpf_get_current_cgroup_id();
	BPF_CORE_READ_STR_INTO(&h->comm, task, comm);
}

/* Where the cwd walk writes its components (a bpf_loop callback cannot write to the ring's record). */
struct cwd_scratch {
	char buf[PROCESS_CWD_MAX + PROCESS_CWD_NAME_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cwd_scratch);
} membrane_process_cwd SEC(".maps");

/* The walk's state: kernel pointers read so far, kept as plain numbers. */
struct cwd_walk {
	struct dentry *d;
	struct vfsmount *vm;
	struct dentry *root;
	struct vfsmount *root_mnt;
	__u64 mnt_off;
	__u32 off;
	__u32 flags;
};

/* One step up from the walk's dentry: the task's root ends it, a mount's root crosses to its mount point, any other
 * dentry adds its name. Verified once by bpf_loop, whatever the depth. */
static long cwd_step(__u32 index, void *data)
{
	struct cwd_walk *w = data;
	/* Locals, not w->...: CO-RE relocates the whole expression a BPF_CORE_READ names, and cwd_walk is ours. */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	if (d == w->root && vm == w->root_mnt) {
		w->flags = PROCESS_CWD_COMPLETE;
		return 1;
	}
	struct mount *m = (void *)vm - w->mnt_off;
	if (d == BPF_CORE_READ(vm, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) { /* the namespace's root mount: above the task's root (a cwd outside a chroot) */
			w->flags = PROCESS_CWD_COMPLETE;
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->vm = (void *)parent + w->mnt_off;
		return 0;
	}
	__u32 zero = 0;
	struct cwd_scratch *s = bpf_map_lookup_elem(&membrane_process_cwd, &zero);
	__u32 off = w->off;
	if (!s || off >= PROCESS_CWD_MAX)
		return 1;
	long n = bpf_probe_read_kernel_str(&s->buf[off], PROCESS_CWD_NAME_MAX, BPF_CORE_READ(d, d_name.name));
	if (n <= 0 || n >= PROCESS_CWD_NAME_MAX)
		return 1;
	w->off = off + n;
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		w->flags = PROCESS_CWD_COMPLETE;
		return 1;
	}
	w->d = up;
	return 0;
}

/* The exec'ing task's working directory as d_path would print it from the task's root: dentry names from the cwd up,
 * crossing mounts at their mount points; complete only when the walk reached the root within its bounds. */
static __always_inline void read_cwd(struct process_exec_event *e, struct task_struct *task)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct cwd_walk w = {
		.d = BPF_CORE_READ(fs, pwd.dentry),
		.vm = BPF_CORE_READ(fs, pwd.mnt),
		.root = BPF_CORE_READ(fs, root.dentry),
		.root_mnt = BPF_CORE_READ(fs, root.mnt),
		.mnt_off = bpf_core_field_offset(struct mount, mnt),
	};
	bpf_loop(PROCESS_CWD_DEPTH, cwd_step, &w, 0);
	e->cwd_len = 0;
	e->cwd_flags = 0;
	__u32 zero = 0;
	struct cwd_scratch *s = bpf_map_lookup_elem(&membrane_process_cwd, &zero);
	__u32 len = w.off;
	if (!s || len > sizeof(e->cwd))
		return;
	if (bpf_probe_read_kernel(e->cwd, sizeof(e->cwd), s->buf) == 0) {
		e->cwd_len = len;
		e->cwd_flags = w.flags;
	}
}

SEC("tp_btf/sched_process_exec")
int membrane_process_exec(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	struct process_exec_event *e = bpf_ringbuf_reserve(&membrane_process_events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return 0;
	}
	fill_header(&e->h, task, PROCESS_EVENT_EXEC);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	if (len > PROCESS_ARGS_MAX - 1)
		len = PROCESS_ARGS_MAX - 1;
	if (bpf_probe_read_user(e->args, len, (const void *)start) == 0)
		e->h.args_len = len;
	read_cwd(e, task);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int membrane_process_exit(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	// A process exits when its thread group leader does; other threads' exits are not process events.
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	struct process_event_header *h = bpf_ringbuf_reserve(&membrane_process_events, sizeof(*h), 0);
	if (!h) {
		count_lost();
		return 0;
	}
	fill_header(h, task, PROCESS_EVENT_EXIT);
	h->exit_code = BPF_CORE_READ(task, exit_code);
	submit(h);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
