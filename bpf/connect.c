// Runtime enforcement of TracingPolicy connect hooks (tcp_connect, security_socket_connect): cgroup/connect4 and
// connect6 on the cgroup v2 root judge every connect() against the rules the agent writes (first matching rule of a
// hook acts; only the caller's own list of them, found by a hash index on its cgroup or network namespace): Override refuses (connect fails with EPERM), Post reports through a ring buffer. Sigkill refuses and
// Signal reports; as these programs cannot send signals, they leave the signal for the calling thread in
// membrane_connect_signal, and membrane_connect_exit (tp_btf/sys_exit) sends it as that thread's connect() returns,
// before the process runs another instruction (the agent's kill from the event is the fallback for a connect that
// does not return through those syscalls, e.g. io_uring). Its own object.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#define AF_INET 2
#define AF_INET6 10
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "connect.h"
#include "netns.h"

struct task_struct {
	struct nsproxy *nsproxy;
	__u64 start_time;
} __attribute__((preserve_access_index));

/* x86-64: the syscall number a syscall's exit reports. */
struct pt_regs {
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

#define NR_CONNECT 42 /* x86-64 */
#define NR_SENDTO 44   /* TCP Fast Open connects from sendto()/sendmsg() */
#define NR_SENDMSG 46
#define NR_SENDMMSG 307

/* A signal a connect hook owes the thread that called connect(); the task's start time tells a reused thread id apart. */
struct pending_signal {
	__u64 start_time;
	__u32 signal;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct pending_signal);
} membrane_connect_signal SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CONNECT_SLOTS);
	__type(key, __u32);
	__type(value, struct connect_rule);
} membrane_connect_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CONNECT_INDEX_MAX);
	__type(key, struct connect_index_key);
	__type(value, struct connect_index);
} membrane_connect_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} membrane_connect_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} membrane_connect_events SEC(".maps");

/* Events the ring could not take (the agent reports them; an Override still refused the connect). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} membrane_connect_lost SEC(".maps");

struct judge_ctx {
	__u64 cgroup;
	__u32 netns;
	__u32 first;
	__u32 count;
	__u16 port;
	__u8 family;
	__u8 protocol;
	__u8 addr[16];
	__u32 last_hook;
	__u32 last_policy;
	int matched_any;
	int refuse;
	__u32 pid_tgid_hi;
};

static __always_inline int prefix_holds(const __u8 *prefix, const __u8 *addr, __u32 len)
{
	for (int i = 0; i < 16; i++) {
		if (len == 0)
			return 1;
		__u8 bits = len >= 8 ? 8 : len;
		__u8 mask = (__u8)(0xff << (8 - bits));
		if ((prefix[i] & mask) != (addr[i] & mask))
			return 0;
		len -= bits;
	}
	return 1;
}

static __always_inline void report(struct judge_ctx *j, __u32 index, const struct connect_rule *r)
{
	struct connect_event *e = bpf_ringbuf_reserve(&membrane_connect_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&membrane_connect_lost, &zero);
		if (n)
			*n += 1;
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->netns = j->netns;
	e->rule = index;
	e->family = j->family;
	e->action = r->action;
	e->protocol = j->protocol;
	e->pad = 0;
	e->port = j->port;
	e->pad2 = 0;
	__builtin_memcpy(e->addr, j->addr, 16);
	e->ktime_ns = bpf_ktime_get_ns();
	e->hook = j->last_hook; /* as judged: the rule's slot may be rewritten meanwhile */
	e->policy = j->last_policy;
	bpf_ringbuf_submit(e, 0);
}

static long judge_rule(__u32 index, void *data)
{
	struct judge_ctx *j = data;
	if (index >= j->count)
		return 1;
	__u32 key = j->first + index;
	const struct connect_rule *r = bpf_map_lookup_elem(&membrane_connect_rules, &key);
	if (!r)
		return 1;
	if (j->matched_any && r->hook == j->last_hook)
		return 0; /* this hook has acted already */
	if (r->netns != 0 && r->netns != j->netns)
		return 0;
	if (r->cgroup != 0 && r->cgroup != j->cgroup)
		return 0;
	if (r->family != 0 && r->family != j->family)
		return 0;
	int in_range = j->port >= r->port_lo && j->port <= r->port_hi;
	if (in_range == !!(r->flags & CONNECT_F_PORT_NOT))
		return 0;
	__u32 len = r->prefix_len;
	if (len > 128)
		len = 128;
	int in_prefix = prefix_holds(r->addr, j->addr, len);
	if (in_prefix == !!(r->flags & CONNECT_F_ADDR_NOT))
		return 0;
	j->matched_any = 1;
	j->last_hook = r->hook;
	j->last_policy = r->policy;
	if (r->action == CONNECT_ACTION_OVERRIDE || r->action == CONNECT_ACTION_SIGKILL)
		j->refuse = 1;
	if (r->action == CONNECT_ACTION_SIGKILL || (r->action == CONNECT_ACTION_SIGNAL && r->signal != 0)) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct pending_signal p = {
			.start_time = BPF_CORE_READ(task, start_time),
			.signal = r->action == CONNECT_ACTION_SIGKILL ? 9 : r->signal,
		};
		__u64 id = bpf_get_current_pid_tgid();
		bpf_map_update_elem(&membrane_connect_signal, &id, &p, BPF_ANY);
	}
	if (!(r->flags & CONNECT_F_NOPOST) || r->action == CONNECT_ACTION_SIGKILL || r->action == CONNECT_ACTION_SIGNAL)
		report(j, key, r);
	return 0;
}

static __always_inline int judge(struct bpf_sock_addr *ctx, __u8 family)
{
	__u32 zero = 0;
	__u32 *range = bpf_map_lookup_elem(&membrane_connect_count, &zero);
	if (!range)
		return 1;
	__u32 v = *(volatile __u32 *)range; /* once: count and first of the same set */
	if (CONNECT_RANGE_COUNT(v) == 0)
		return 1;
	struct judge_ctx j = {};
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	j.netns = TASK_NETNS(task);
	j.cgroup = bpf_get_current_cgroup_id();
	j.count = CONNECT_RANGE_COUNT(v);
	j.first = CONNECT_RANGE_FIRST(v);
	/* The caller's list of the set (a set without lists, an earlier runtime's, is judged whole). */
	struct connect_index_key key = { .set_first = j.first, .subject = CONNECT_SUBJECT_ANY };
	const struct connect_index *list = bpf_map_lookup_elem(&membrane_connect_index, &key);
	if (list) {
		__u32 flags = list->flags;
		int chosen = 0;
		if (flags & CONNECT_INDEX_F_CGROUP) {
			key.subject = CONNECT_SUBJECT_CGROUP;
			key.id = j.cgroup;
			const struct connect_index *own = bpf_map_lookup_elem(&membrane_connect_index, &key);
			if (own && own->netns == j.netns) {
				list = own;
				chosen = 1;
			}
		}
		if (!chosen && (flags & CONNECT_INDEX_F_NETNS)) {
			key.subject = CONNECT_SUBJECT_NETNS;
			key.id = j.netns;
			const struct connect_index *own = bpf_map_lookup_elem(&membrane_connect_index, &key);
			if (own)
				list = own;
		}
		j.first = list->first;
		j.count = list->count;
		if (j.count == 0)
			return 1;
	}
	j.family = family;
	j.protocol = ctx->protocol;
	j.port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(j.addr, &a, 4);
	} else {
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(j.addr, &a0, 4);
		__builtin_memcpy(j.addr + 4, &a1, 4);
		__builtin_memcpy(j.addr + 8, &a2, 4);
		__builtin_memcpy(j.addr + 12, &a3, 4);
	}
	bpf_loop(CONNECT_RULES_MAX, judge_rule, &j, 0); /* judge_rule stops at j.count */
	return j.refuse ? 0 : 1;
}

SEC("cgroup/connect4")
int membrane_connect4(struct bpf_sock_addr *ctx)
{
	return judge(ctx, AF_INET);
}

SEC("cgroup/connect6")
int membrane_connect6(struct bpf_sock_addr *ctx)
{
	return judge(ctx, AF_INET6);
}

/* The end of every syscall on the node, while connect hooks are loaded: two loads and a compare for all but the four above. */
SEC("tp_btf/sys_exit")
int BPF_PROG(membrane_connect_exit, struct pt_regs *regs, long ret)
{
	unsigned long nr = regs->orig_ax;
	if (nr != NR_CONNECT && nr != NR_SENDTO && nr != NR_SENDMSG && nr != NR_SENDMMSG)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_signal *p = bpf_map_lookup_elem(&membrane_connect_signal, &id);
	if (!p)
		return 0;
	__u64 start_time = p->start_time;
	__u32 sig = p->signal;
	bpf_map_delete_elem(&membrane_connect_signal, &id);
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->start_time == start_time)
		bpf_send_signal(sig);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
