// Layout of the ClusterIP translation maps bpf/service.c reads (socket-level load balancing); mirrored by
// node-agent/services/layout.ts (a test compares the sizes and offsets).
#ifndef MEMBRANE_SERVICE_H
#define MEMBRANE_SERVICE_H

#define SVC_FRONTENDS_MAX 16384
#define SVC_BACKENDS_MAX 262144
#define SVC_REVNAT_MAX 262144
#define SVC_SCOPE_MAX 4096
#define SVC_NODES_MAX 16384

/* A Service port as a pod dials it: ClusterIP, port and protocol. A NodePort's key has address 0 (:: for IPv6): it is
 * looked up for a destination that is a node's address (membrane_svc_nodes, membrane_svc6_nodes). */
struct svc_frontend_key {
	__u32 addr;      /* the ClusterIP, network order */
	__u16 port;      /* network order */
	__u8 protocol;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct svc_frontend {
	__u32 id;        /* the agent's number of this frontend: its backends are (id, 0..count) */
	__u32 count;     /* ready backends; 0: the connect is refused (ECONNREFUSED), as kube-proxy rejects it */
};

struct svc_backend_key {
	__u32 id;
	__u32 slot;
};

struct svc_backend {
	__u32 addr;      /* network order */
	__u16 port;      /* network order */
	__u16 pad;
};

/* What a translated socket was asked for, so replies (recvmsg) and getpeername show the ClusterIP again. */
struct svc_revnat_key {
	__u64 cookie;    /* the socket's cookie */
	__u32 addr;      /* the backend it was sent to */
	__u16 port;
	__u16 pad;
};

struct svc_revnat {
	__u32 addr;      /* the ClusterIP and port the socket asked for */
	__u16 port;
	__u16 pad;
};

/* IPv6 twins (membrane_svc6_*): the same tables for IPv6 ClusterIPs; values and backend keys as above. */
struct svc6_frontend_key {
	__u32 addr[4];   /* the ClusterIP, network order */
	__u16 port;      /* network order */
	__u8 protocol;
	__u8 pad;
};

struct svc6_backend {
	__u32 addr[4];
	__u16 port;      /* network order */
	__u16 pad;
};

struct svc6_revnat_key {
	__u64 cookie;
	__u32 addr[4];   /* the backend it was sent to */
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

struct svc6_revnat {
	__u32 addr[4];   /* the ClusterIP and port the socket asked for */
	__u16 port;
	__u16 pad;
};

/* membrane_svc_nodes (key: an IPv4 address, network order) and membrane_svc6_nodes (key: __u32[4]): the cluster's node
 * addresses a NodePort is dialled at; value unused (1). */

/* membrane_svc_scope: network namespace inodes whose sockets are translated (this node's pods); key 0: every one. */

#endif
