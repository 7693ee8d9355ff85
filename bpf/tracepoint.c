// TracingPolicy tracepoint hooks (syscalls/sys_enter_*, raw_syscalls/*): one program attached to every tracepoint a
// policy names; the attach cookie (the tracepoint's id, set per perf event link) says which one fired (the record's
// common fields are not there for BPF: its first 8 bytes hold the caller's registers). The program reads the hooks' listed arguments,
// evaluates the rules the agent writes (the caller's network namespace and pid, integer and string argument filters;
// the first rule of a hook that matches acts) and acts in the kernel: Sigkill and Signal with bpf_send_signal, Post
// through a ring buffer. A rule whose selector has matchBinaries is reported for user space to judge and act on.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tracepoint.h"
#include "netns.h"

struct task_struct {
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TP_HOOKS_MAX);
	__type(key, __u32);
	__type(value, struct tp_hook);
} membrane_tp_hooks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TP_RULES_MAX);
	__type(key, __u32);
	__type(value, struct tp_rule);
} membrane_tp_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} membrane_tp_count SEC(".maps");

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
	__u32 count;
	__u32 netns;
	__u32 pid;
	__u32 acted_hook; /* + 1 */
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

static __always_inline int string_holds(const struct tp_scratch *s, __u32 arg, const struct tp_filter *f)
{
	__s32 slen = s->slen[arg];
	__u32 len = f->len;
	if (slen < 0 || len >= TP_STR_MAX)
		return 0;
	if (f->op == TP_OP_EQUAL && (__u32)slen != len)
		return 0;
	if ((__u32)slen < len)
		return 0;
	__u32 start = f->op == TP_OP_POSTFIX ? (__u32)slen - len : 0;
	for (__u32 i = 0; i < TP_STR_MAX; i++) {
		if (i >= len)
			break;
		if (s->e.strs[arg][(start + i) & (TP_STR_MAX - 1)] != f->str[i & (TP_STR_MAX - 1)])
			return 0;
	}
	return 1;
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
	__u32 key = index;
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
	if (j->s->loaded_hook != hook_index + 1)
		load_args(j, hook_index, h);
	for (int i = 0; i < TP_FILTERS_MAX; i++) {
		if (i >= r->nfilters)
			break;
		if (!filter_holds(j->s, h, &r->filters[i]))
			return 0;
	}
	j->acted_hook = r->hook + 1;
	if (!(r->flags & TP_F_DEFER)) {
		if (r->action == TP_ACTION_SIGKILL)
			bpf_send_signal(9);
		else if (r->action == TP_ACTION_SIGNAL && r->signal != 0)
			bpf_send_signal(r->signal);
	}
	if (!(r->flags & TP_F_NOPOST) || (r->flags & TP_F_DEFER))
		report(j, index, r);
	return 0;
}

SEC("tracepoint")
int membrane_tracepoint(void *record)
{
	__u32 zero = 0;
	__u32 *count = bpf_map_lookup_elem(&membrane_tp_count, &zero);
	if (!count || *count == 0)
		return 0;
	struct tp_scratch *s = bpf_map_lookup_elem(&membrane_tp_scratch, &zero);
	if (!s)
		return 0;
	struct judge_ctx j = {};
	j.record = record;
	j.s = s;
	j.event_id = (__u32)bpf_get_attach_cookie(record);
	j.count = *count;
	j.pid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	j.netns = TASK_NETNS(task);
	s->loaded_hook = 0;
	bpf_loop(TP_RULES_MAX, judge_rule, &j, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
