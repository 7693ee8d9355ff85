// ClusterIP translation at the socket (socket-level load balancing, as Cilium's kube-proxy replacement does it):
// cgroup/connect4 and sendmsg4 (connect6 and sendmsg6 for IPv6 ClusterIPs, and for IPv4 ones an IPv6 socket dials
// as v4-mapped addresses) point a pod's socket at one ready backend of the Service it dials, so the
// from-container program, conntrack and flows see the backend pod and its identity, never the ClusterIP;
// recvmsg4 and getpeername4 show the ClusterIP again to the application. A connect to any node's address at a Service's
// NodePort is translated the same way (as Cilium's socket LB does), so policy judges the backend, not the node. A Service port with no ready backend
// refuses the connect with ECONNREFUSED instead of leaking to the ClusterIP. Attached first on the cgroup v2
// root, before the runtime enforcer's connect hooks. Its own object.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_FRONTENDS_MAX);
	__type(key, struct svc6_frontend_key);
	__type(value, struct svc_frontend);
} membrane_svc6_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_BACKENDS_MAX);
	__type(key, struct svc_backend_key);
	__type(value, struct svc6_backend);
} membrane_svc6_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SVC_REVNAT_MAX);
	__type(key, struct svc6_revnat_key);
	__type(value, struct svc6_revnat);
} membrane_svc6_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_NODES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} membrane_svc_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SVC_NODES_MAX);
	__type(key, __u32[4]);
	__type(value, __u32);
} membrane_svc6_nodes SEC(".maps");

static __always_inline int in_scope(void)
{
	__u32 every = 0;
	if (bpf_map_lookup_elem(&membrane_svc_scope, &every))
		return 1;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 netns = TASK_NETNS(task);
	return bpf_map_lookup_elem(&membrane_svc_scope, &netns) != 0;
}

/* The frontend's backend for this connect (a random ready one), or 0 with *refuse set when it has none. One body for
 * both families: backends is the family's map (inlined, so each call site names its maps). */
static __always_inline void *pick(struct svc_frontend *fe, void *backends, int *refuse)
{
	if (!fe || !in_scope())
		return 0;
	__u32 count = fe->count;
	if (count == 0)
		goto refuse;
	struct svc_backend_key bk = { .id = fe->id, .slot = bpf_get_prandom_u32() % count };
	void *be = bpf_map_lookup_elem(backends, &bk);
	if (!be) {
		/* a slot being rewritten: take the first, which every non-empty frontend has */
		bk.slot = 0;
		be = bpf_map_lookup_elem(backends, &bk);
		if (!be)
			goto refuse;
	}
	return be;
refuse:
	*refuse = 1;
	return 0;
}

static __always_inline int refused(void)
{
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline int tcp_or_udp(struct bpf_sock_addr *ctx)
{
	__u8 protocol = ctx->protocol;
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

/* An IPv4 destination *addr:*port (network order) becomes one of its frontend's backends, recorded for the way back;
 * left as it is when it is no frontend. 1: the socket goes on, 0: refused with ECONNREFUSED. */
static __always_inline int translate4(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port)
{
	struct svc_frontend_key fk = { .addr = *addr, .port = *port, .protocol = (__u8)ctx->protocol };
	struct svc_frontend *fe = bpf_map_lookup_elem(&membrane_svc_frontends, &fk);
	if (!fe && bpf_map_lookup_elem(&membrane_svc_nodes, addr)) {
		struct svc_frontend_key nk = { .addr = 0, .port = *port, .protocol = (__u8)ctx->protocol };
		fe = bpf_map_lookup_elem(&membrane_svc_frontends, &nk);
	}
	int refuse = 0;
	struct svc_backend *be = pick(fe, &membrane_svc_backends, &refuse);
	if (!be)
		return refuse ? refused() : 1;
	struct svc_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .addr = be->addr, .port = be->port };
	struct svc_revnat rv = { .addr = fk.addr, .port = fk.port };
	bpf_map_update_elem(&membrane_svc_revnat, &rk, &rv, BPF_ANY);
	*addr = be->addr;
	*port = be->port;
	return 1;
}

/* A translated IPv4 backend *addr:*port back to the ClusterIP and port the socket asked for (unchanged otherwise). */
static __always_inline void reverse4(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port)
{
	struct svc_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .addr = *addr, .port = *port };
	struct svc_revnat *rv = bpf_map_lookup_elem(&membrane_svc_revnat, &rk);
	if (!rv)
		return;
	*addr = rv->addr;
	*port = rv->port;
}

static __always_inline int translate(struct bpf_sock_addr *ctx)
{
	if (!tcp_or_udp(ctx))
		return 1;
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	if (!translate4(ctx, &addr, &port))
		return 0;
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	return 1;
}

static __always_inline void reverse(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	reverse4(ctx, &addr, &port);
	ctx->user_ip4 = addr;
	ctx->user_port = port;
}

/* ::ffff:a.b.c.d: an IPv4 destination dialled from an IPv6 socket (words in network order). */
static __always_inline int v4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void read_ip6(struct bpf_sock_addr *ctx, __u32 a[4])
{
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
}

static __always_inline void write_ip6(struct bpf_sock_addr *ctx, const __u32 a[4])
{
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
}

static __always_inline int translate6(struct bpf_sock_addr *ctx)
{
	if (!tcp_or_udp(ctx))
		return 1;
	__u32 addr[4];
	read_ip6(ctx, addr);
	__u16 port = (__u16)ctx->user_port;
	if (v4_mapped(addr)) {
		__u32 v4 = addr[3];
		if (!translate4(ctx, &v4, &port))
			return 0;
		ctx->user_ip6[3] = v4;
		ctx->user_port = port;
		return 1;
	}
	struct svc6_frontend_key fk = { .port = port, .protocol = (__u8)ctx->protocol };
	__builtin_memcpy(fk.addr, addr, sizeof(fk.addr));
	struct svc_frontend *fe = bpf_map_lookup_elem(&membrane_svc6_frontends, &fk);
	if (!fe && bpf_map_lookup_elem(&membrane_svc6_nodes, addr)) {
		struct svc6_frontend_key nk = { .port = port, .protocol = (__u8)ctx->protocol };
		fe = bpf_map_lookup_elem(&membrane_svc6_frontends, &nk);
	}
	int refuse = 0;
	struct svc6_backend *be = pick(fe, &membrane_svc6_backends, &refuse);
	if (!be)
		return refuse ? refused() : 1;
	struct svc6_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .port = be->port };
	__builtin_memcpy(rk.addr, be->addr, sizeof(rk.addr));
	struct svc6_revnat rv = { .port = port };
	__builtin_memcpy(rv.addr, addr, sizeof(rv.addr));
	bpf_map_update_elem(&membrane_svc6_revnat, &rk, &rv, BPF_ANY);
	__u32 to[4];
	__builtin_memcpy(to, be->addr, sizeof(to));
	write_ip6(ctx, to);
	ctx->user_port = be->port;
	return 1;
}

static __always_inline void reverse6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	read_ip6(ctx, addr);
	__u16 port = (__u16)ctx->user_port;
	if (v4_mapped(addr)) {
		__u32 v4 = addr[3];
		reverse4(ctx, &v4, &port);
		ctx->user_ip6[3] = v4;
		ctx->user_port = port;
		return;
	}
	struct svc6_revnat_key rk = { .cookie = bpf_get_socket_cookie(ctx), .port = port };
	__builtin_memcpy(rk.addr, addr, sizeof(rk.addr));
	struct svc6_revnat *rv = bpf_map_lookup_elem(&membrane_svc6_revnat, &rk);
	if (!rv)
		return;
	__u32 to[4];
	__builtin_memcpy(to, rv->addr, sizeof(to));
	write_ip6(ctx, to);
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

SEC("cgroup/connect6")
int membrane_svc_connect6(struct bpf_sock_addr *ctx)
{
	return translate6(ctx);
}

SEC("cgroup/sendmsg6")
int membrane_svc_sendmsg6(struct bpf_sock_addr *ctx)
{
	return translate6(ctx);
}

SEC("cgroup/recvmsg6")
int membrane_svc_recvmsg6(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int membrane_svc_getpeername6(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
