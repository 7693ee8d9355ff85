// The CO-RE view of a task's network namespace (relocated by name against the running kernel's BTF), which the
// runtime's programs read to tell the local cluster's pods apart. Each program declares its own struct task_struct
// with at least `struct nsproxy *nsproxy;` and reads TASK_NETNS(task).
#ifndef MEMBRANE_NETNS_H
#define MEMBRANE_NETNS_H

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));
struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));

#define TASK_NETNS(task) BPF_CORE_READ(task, nsproxy, net_ns, ns.inum)

#endif
