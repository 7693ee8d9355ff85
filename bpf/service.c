// ClusterIP translation at the socket (socket-level load balancing, as Cilium's kube-proxy replacement does it):
// cgroup/connect4 and sendmsg4 point a pod's socket at one ready backend of the Service it dials, so the
// from-container program, conntrack and flows see the backend pod and its identity, never the ClusterIP;
// recvmsg4 and getpeername4 show the ClusterIP again to the application. A Service port with no ready backend
// refuses the connect with ECONNREFUSED instead of leaking to the ClusterIP. Attached first on the cgroup v2
// root, before the runtime enforcer's connect hooks. Its own object.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "service.h"
#include "netns.h"

#define ECONNREFUSED 111

struct task_struct {
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_FRONTENDS_MAX);
	__type(key, struct svc_frontend_key);
	__type(value, struct svc_frontend);
} membrane_svc_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_BACKENDS_MAX);
	__type(key, struct svc_backend_key);
	__type(value, struct svc_backend);
} membrane_svc_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SVC_REVNAT_MAX);
	__type(key, struct svc_revnat_key);
	__type(value, struct svc_revnat);
} membrane_svc_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_SCOPE_MAX);
	__type(key, __u32);
	__type(value, __u32);
} membrane_svc_scope SEC(".maps");

static __always_inline int in_scope(void)
{
	__u32 every = 0;
	if (bpf_map_lookup_elem(&membrane_svc_scope, &every))
		return 1;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 netns = TASK_NETNS(task);
	return bpf_map_lookup_elem(&membrane_svc_scope, &netns) != 0;
}

/* 1: the socket goes on (translated or not), 0: refused with ECONNREFUSED. */
static __always_inline int translate(struct bpf_sock_addr *ctx)
{
	__u8 protocol = ctx->protocol;
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 1;
	struct svc_frontend_key fk = { .addr = ctx->user_ip4, .port = (__u16)ctx->user_port, .protocol = protocol };
	struct svc_frontend *fe = bpf_map_lookup_elem(&membrane_svc_frontends, &fk);
	if (!fe)
		return 1;
	if (!in_scope())
		return 1;
	__u32 count = fe->count;
	if (count == 0)
		goto refuse;
	struct svc_backend_key bk = { .id = fe->id, .slot = bpf_get_prandom_u32() % count };
	struct svc_backend *be = bpf_map_lookup_elem(&membrane_svc_backends, &bk);
	if (!be) {
		/* a slot being rewritten: take the first, which every non-empty frontend has */
		bk.slot = 0;
		be = bpf_map_lookup_elem(&membrane_svc_backends, &bk);
		if (!be)
			goto refuse;
	}
	struct svc_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .addr = be->addr, .port = be->port };
	struct svc_revnat rv = { .addr = fk.addr, .port = fk.port };
	bpf_map_update_elem(&membrane_svc_revnat, &rk, &rv, BPF_ANY);
	ctx->user_ip4 = be->addr;
	ctx->user_port = be->port;
	return 1;
refuse:
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline void reverse(struct bpf_sock_addr *ctx)
{
	struct svc_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .addr = ctx->user_ip4, .port = (__u16)ctx->user_port };
	struct svc_revnat *rv = bpf_map_lookup_elem(&membrane_svc_revnat, &rk);
	if (!rv)
		return;
	ctx->user_ip4 = rv->addr;
	ctx->user_port = rv->port;
}

SEC("cgroup/connect4")
int membrane_svc_connect4(struct bpf_sock_addr *ctx)
{
	return translate(ctx);
}

SEC("cgroup/sendmsg4")
int membrane_svc_sendmsg4(struct bpf_sock_addr *ctx)
{
	return translate(ctx);
}

SEC("cgroup/recvmsg4")
int membrane_svc_recvmsg4(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int membrane_svc_getpeername4(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
