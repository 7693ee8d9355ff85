// TracingPolicy tracepoint hooks (syscalls/sys_enter_*, raw_syscalls/*): one program attached to every tracepoint a
// policy names; the attach cookie (the tracepoint's id, set per perf event link) says which one fired (the record's
// common fields are not there for BPF: its first 8 bytes hold the caller's registers). The program reads the hooks' listed arguments,
// evaluates the rules the agent writes (the caller's network namespace, cgroup v2 id — a selected container's, for a
// containerSelector — and pid, integer and string argument filters;
// the first rule of a hook that matches acts): only the caller's own list, found by a hash index on the tracepoint and
// the caller's cgroup or network namespace, so an event costs the same on a node of a thousand selected containers and acts in the kernel: Sigkill and Signal with bpf_send_signal, Post
// through a ring buffer. matchBinaries is judged here too: programs on the scheduler's exec, fork and exit keep each
// process's set of matching binary values (membrane_tp_procs, by pid, as Tetragon keys its binary filter by exec), so
// the calls of a binary no rule names never leave the kernel.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tracepoint.h"
#include "netns.h"

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));
struct task_struct {
	int pid;
	int tgid;
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TP_SETS * TP_HOOKS_MAX);
	__type(key, __u32);
	__type(value, struct tp_hook);
} membrane_tp_hooks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TP_SETS * TP_RULES_MAX);
	__type(key, __u32);
	__type(value, struct tp_rule);
} membrane_tp_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TP_INDEX_MAX);
	__type(key, struct tp_index_key);
	__type(value, struct tp_index);
} membrane_tp_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} membrane_tp_in_force SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} membrane_tp_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TP_BINARIES_MAX);
	__type(key, __u32);
	__type(value, struct tp_binary);
} membrane_tp_binaries SEC(".maps");

/* pid -> the bits of membrane_tp_binaries its binary matches; a process matching none has no entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TP_PROCS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} membrane_tp_procs SEC(".maps");

/* Processes whose matching set could not be stored (membrane_tp_procs full): such a process matches no value, so
 * the runtime reports the count (a metric and a warning in its status) rather than let it pass unseen. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} membrane_tp_procs_full SEC(".maps");

static __always_inline void set_procs(__u32 pid, __u64 *bits)
{
	if (bpf_map_update_elem(&membrane_tp_procs, &pid, bits, BPF_ANY) == 0)
		return;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&membrane_tp_procs_full, &zero);
	if (n)
		*n += 1;
}

/* The path of the binary being exec'd (judged against every matchBinaries value). */
struct tp_exec_scratch {
	char path[TP_STR_MAX];
	__s32 len;
	__u32 pad;
	__u64 bits;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tp_exec_scratch);
} membrane_tp_exec_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} membrane_tp_events SEC(".maps");

/* Events the ring could not take (the agent reports them; a Sigkill was still sent). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} membrane_tp_lost SEC(".maps");

/* The arguments of the hook being judged, read once per hook and record (too large for the stack). */
struct tp_scratch {
	struct tp_event e;
	__s32 slen[TP_ARGS_MAX]; /* string arguments: bytes without the NUL; -1: unreadable or truncated */
	__u32 loaded_hook;       /* the hook whose arguments e holds, + 1 */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tp_scratch);
} membrane_tp_scratch SEC(".maps");

struct judge_ctx {
	void *record;
	struct tp_scratch *s;
	__u32 event_id;
	__u32 first;      /* the caller's list: membrane_tp_rules[first .. first + count) */
	__u32 count;
	__u32 netns;
	__u32 pid;
	__u32 acted_hook; /* + 1 */
	__u64 binaries;   /* the caller's binary set, once read */
	__u32 binaries_read;
	__u32 cgroup_read;
	__u64 cgroup;     /* the caller's cgroup v2 id, once read (only rules of a containerSelector need it) */
};

static __always_inline void load_args(struct judge_ctx *j, __u32 hook_index, const struct tp_hook *h)
{
	struct tp_scratch *s = j->s;
	for (int k = 0; k < TP_ARGS_MAX; k++) {
		s->e.ints[k] = 0;
		s->slen[k] = -1;
		if (k >= h->nargs)
			continue;
		const struct tp_arg *a = &h->args[k];
		const void *at = j->record + a->offset;
		if (a->kind == TP_ARG_STRING) {
			__u64 ptr = 0;
			bpf_probe_read_kernel(&ptr, sizeof(ptr), at);
			s->e.strs[k][0] = 0;
			long n = bpf_probe_read_user_str(s->e.strs[k], TP_STR_MAX, (const void *)ptr);
			/* n counts the NUL; a string that filled the buffer may be longer: it is not judged by value */
			if (n > 0 && n < TP_STR_MAX)
				s->slen[k] = n - 1;
		} else if (a->kind == TP_ARG_INT) {
			__u64 v = 0;
			__u32 size = a->size;
			if (size == 1) {
				__u8 x = 0;
				bpf_probe_read_kernel(&x, 1, at);
				v = a->is_signed ? (__u64)(__s64)(__s8)x : x;
			} else if (size == 2) {
				__u16 x = 0;
				bpf_probe_read_kernel(&x, 2, at);
				v = a->is_signed ? (__u64)(__s64)(__s16)x : x;
			} else if (size == 4) {
				__u32 x = 0;
				bpf_probe_read_kernel(&x, 4, at);
				v = a->is_signed ? (__u64)(__s64)(__s32)x : x;
			} else {
				bpf_probe_read_kernel(&v, 8, at);
			}
			s->e.ints[k] = (__s64)v;
		}
	}
	s->loaded_hook = hook_index + 1;
}

/* One comparison of str_matches, on the stack for bpf_loop. */
struct str_cmp {
	const char *s;
	const char *value;
	__u32 start;
	__u32 len;
	__u32 differs;
	__u32 pad;
};

static long str_step(__u32 i, void *data)
{
	struct str_cmp *c = data;
	if (i >= c->len)
		return 1;
	if (c->s[(c->start + i) & (TP_STR_MAX - 1)] != c->value[i & (TP_STR_MAX - 1)]) {
		c->differs = 1;
		return 1;
	}
	return 0;
}

/* Equal, Prefix or Postfix of value (len bytes) on s (slen bytes, -1: not judged by value), both TP_STR_MAX buffers.
 * The bytes are compared by bpf_loop, verified once: unrolled, a rule's four filters of up to 256 bytes each
 * took the tracepoint program past the verifier's million instructions (E2BIG on kernel 6.18.44). */
static __always_inline int str_matches(const char *s, __s32 slen, __u8 op, const char *value, __u32 len)
{
	if (slen < 0 || len >= TP_STR_MAX)
		return 0;
	if (op == TP_OP_EQUAL && (__u32)slen != len)
		return 0;
	if ((__u32)slen < len)
		return 0;
	struct str_cmp c = { .s = s, .value = value, .start = op == TP_OP_POSTFIX ? (__u32)slen - len : 0, .len = len };
	bpf_loop(TP_STR_MAX, str_step, &c, 0);
	return !c.differs;
}

static __always_inline int string_holds(const struct tp_scratch *s, __u32 arg, const struct tp_filter *f)
{
	if (arg >= TP_ARGS_MAX)
		return 0;
	return str_matches(s->e.strs[arg], s->slen[arg], f->op, f->str, f->len);
}

static __always_inline int filter_holds(const struct tp_scratch *s, const struct tp_hook *h, const struct tp_filter *f)
{
	__u32 arg = f->arg;
	if (arg >= TP_ARGS_MAX)
		return 0;
	int hit;
	if (h->args[arg].kind == TP_ARG_STRING) {
		hit = string_holds(s, arg, f);
	} else {
		__s64 v = s->e.ints[arg];
		int is_signed = h->args[arg].is_signed;
		switch (f->op) {
		case TP_OP_EQUAL:
			hit = v == f->value;
			break;
		case TP_OP_GT:
			hit = is_signed ? v > f->value : (__u64)v > (__u64)f->value;
			break;
		case TP_OP_LT:
			hit = is_signed ? v < f->value : (__u64)v < (__u64)f->value;
			break;
		case TP_OP_MASK:
			hit = (v & f->value) != 0;
			break;
		default:
			hit = 0;
		}
	}
	return f->negate ? !hit : hit;
}

/* A rule's filters, ANDed: one bpf_loop step each (verified once, not once per filter). */
struct filters_ctx {
	const struct tp_scratch *s;
	const struct tp_hook *h;
	const struct tp_rule *r;
	__u32 failed;
	__u32 pad;
};

static long filter_step(__u32 i, void *data)
{
	struct filters_ctx *c = data;
	if (i >= c->r->nfilters)
		return 1;
	if (!filter_holds(c->s, c->h, &c->r->filters[i & (TP_FILTERS_MAX - 1)])) {
		c->failed = 1;
		return 1;
	}
	return 0;
}

static __always_inline void report(struct judge_ctx *j, __u32 index, const struct tp_rule *r)
{
	struct tp_event *e = bpf_ringbuf_reserve(&membrane_tp_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&membrane_tp_lost, &zero);
		if (n)
			*n += 1;
		return;
	}
	bpf_probe_read_kernel(e, sizeof(*e), &j->s->e);
	__u64 id = bpf_get_current_pid_tgid();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->netns = j->netns;
	e->rule = index;
	e->hook = r->hook;
	e->action = r->action;
	e->flags = r->flags;
	e->pad = 0;
	e->ktime_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, 0);
}

static long judge_rule(__u32 index, void *data)
{
	struct judge_ctx *j = data;
	if (index >= j->count)
		return 1;
	__u32 key = j->first + index;
	const struct tp_rule *r = bpf_map_lookup_elem(&membrane_tp_rules, &key);
	if (!r)
		return 1;
	if (j->acted_hook == r->hook + 1)
		return 0; /* this hook has acted already */
	__u32 hook_index = r->hook;
	const struct tp_hook *h = bpf_map_lookup_elem(&membrane_tp_hooks, &hook_index);
	if (!h || h->event_id != j->event_id)
		return 0;
	if (r->netns != 0 && r->netns != j->netns)
		return 0;
	if (r->pid != 0 && (r->pid == j->pid) == !!(r->flags & TP_F_PID_NOT))
		return 0;
	if (r->cgroup != 0) {
		if (!j->cgroup_read) {
			j->cgroup = bpf_get_current_cgroup_id();
			j->cgroup_read = 1;
		}
		if (r->cgroup != j->cgroup)
			return 0;
	}
	if ((r->binaries | r->binaries_all | r->binaries_none) != 0) {
		if (!j->binaries_read) {
			__u32 pid = j->pid;
			__u64 *bits = bpf_map_lookup_elem(&membrane_tp_procs, &pid);
			j->binaries = bits ? *bits : 0;
			j->binaries_read = 1;
		}
		if (r->binaries != 0 && (j->binaries & r->binaries) == 0)
			return 0;
		if ((j->binaries & r->binaries_all) != r->binaries_all)
			return 0;
		if ((j->binaries & r->binaries_none) != 0)
			return 0;
	}
	if (j->s->loaded_hook != hook_index + 1)
		load_args(j, hook_index, h);
	struct filters_ctx fc = { .s = j->s, .h = h, .r = r };
	bpf_loop(TP_FILTERS_MAX, filter_step, &fc, 0);
	if (fc.failed)
		return 0;
	j->acted_hook = r->hook + 1;
	if (r->action == TP_ACTION_SIGKILL)
		bpf_send_signal(9);
	else if (r->action == TP_ACTION_SIGNAL && r->signal != 0)
		bpf_send_signal(r->signal);
	if (!(r->flags & TP_F_NOPOST))
		report(j, key, r);
	return 0;
}

SEC("tracepoint")
int membrane_tracepoint(void *record)
{
	__u32 zero = 0;
	__u32 *in_force = bpf_map_lookup_elem(&membrane_tp_in_force, &zero);
	if (!in_force)
		return 0;
	__u32 set = *(volatile __u32 *)in_force; /* once: every key and slot below is of this set */
	if (set == 0 || set > TP_SETS)
		return 0;
	struct tp_index_key key = { .event_id = (__u32)bpf_get_attach_cookie(record), .set = set - 1, .subject = TP_SUBJECT_ANY };
	const struct tp_index *list = bpf_map_lookup_elem(&membrane_tp_index, &key);
	if (!list)
		return 0; /* no rule of this set is for this tracepoint */
	__u32 flags = list->flags;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 netns = TASK_NETNS(task);
	struct judge_ctx j = {};
	int chosen = 0;
	if (flags & TP_INDEX_F_CGROUP) {
		/* not kept in j: judge_rule's context then enters in one state, verified once (kept, the load took twice as long) */
		key.subject = TP_SUBJECT_CGROUP;
		key.id = bpf_get_current_cgroup_id();
		const struct tp_index *own = bpf_map_lookup_elem(&membrane_tp_index, &key);
		if (own && own->netns == netns) {
			list = own;
			chosen = 1;
		}
	}
	if (!chosen && (flags & TP_INDEX_F_NETNS)) {
		key.subject = TP_SUBJECT_NETNS;
		key.id = netns;
		const struct tp_index *own = bpf_map_lookup_elem(&membrane_tp_index, &key);
		if (own)
			list = own;
	}
	j.first = list->first;
	j.count = list->count;
	if (j.count == 0)
		return 0;
	struct tp_scratch *s = bpf_map_lookup_elem(&membrane_tp_scratch, &zero);
	if (!s)
		return 0;
	j.record = record;
	j.s = s;
	j.event_id = key.event_id;
	j.pid = bpf_get_current_pid_tgid() >> 32;
	j.netns = netns;
	s->loaded_hook = 0;
	bpf_loop(j.count < TP_RULES_MAX ? j.count : TP_RULES_MAX, judge_rule, &j, 0);
	return 0;
}

static __always_inline __u32 binary_count(void)
{
	__u32 one = 1;
	__u32 *n = bpf_map_lookup_elem(&membrane_tp_count, &one);
	return n ? *n : 0;
}

/* bpf_loop's context is on the stack; the path is too large for it. */
struct binary_ctx {
	struct tp_exec_scratch *x;
};

static long judge_binary(__u32 index, void *data)
{
	struct tp_exec_scratch *x = ((struct binary_ctx *)data)->x;
	__u32 key = index;
	const struct tp_binary *b = bpf_map_lookup_elem(&membrane_tp_binaries, &key);
	if (!b)
		return 1;
	if (str_matches(x->path, x->len, b->op, b->str, b->len))
		x->bits |= 1ULL << (index & (TP_BINARIES_MAX - 1));
	return 0;
}

/* An exec replaces the process's binary: its set is judged again against every value. */
SEC("tp_btf/sched_process_exec")
int membrane_tp_exec(__u64 *ctx)
{
	__u32 count = binary_count();
	if (count == 0)
		return 0;
	struct task_struct *task = (struct task_struct *)ctx[0];
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	__u32 zero = 0;
	struct tp_exec_scratch *x = bpf_map_lookup_elem(&membrane_tp_exec_scratch, &zero);
	if (!x)
		return 0;
	long n = bpf_probe_read_kernel_str(x->path, TP_STR_MAX, BPF_CORE_READ(bprm, filename));
	x->len = n > 0 && n < TP_STR_MAX ? n - 1 : -1;
	x->bits = 0;
	struct binary_ctx b = { .x = x };
	bpf_loop(count < TP_BINARIES_MAX ? count : TP_BINARIES_MAX, judge_binary, &b, 0);
	__u32 pid = BPF_CORE_READ(task, tgid);
	if (x->bits != 0)
		set_procs(pid, &x->bits);
	else
		bpf_map_delete_elem(&membrane_tp_procs, &pid);
	return 0;
}

/* A new process runs its parent's binary until it execs. */
SEC("tp_btf/sched_process_fork")
int membrane_tp_fork(__u64 *ctx)
{
	if (binary_count() == 0)
		return 0;
	struct task_struct *parent = (struct task_struct *)ctx[0];
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 ppid = BPF_CORE_READ(parent, tgid);
	__u32 pid = BPF_CORE_READ(child, tgid);
	if (pid == ppid)
		return 0; /* a thread */
	__u64 *bits = bpf_map_lookup_elem(&membrane_tp_procs, &ppid);
	if (bits) {
		__u64 copy = *bits;
		set_procs(pid, &copy);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int membrane_tp_exit(__u64 *ctx)
{
	if (binary_count() == 0)
		return 0;
	struct task_struct *task = (struct task_struct *)ctx[0];
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	__u32 pid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&membrane_tp_procs, &pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
