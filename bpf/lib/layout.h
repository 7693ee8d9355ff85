/* The map layouts shared by the datapath and node-agent/bpf/layout.ts (a test keeps them in step). */
#ifndef MEMBRANE_LAYOUT_H
#define MEMBRANE_LAYOUT_H

#include <linux/types.h>

/* Reserved identities (DESIGN decision 1). */
#define IDENTITY_WILDCARD 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
/* A pod whose identity the agent does not know yet (adopted before the operator's first state): closed but to its node. */
#define IDENTITY_INIT 5
#define IDENTITY_REMOTE_NODE 6
/* Cluster identities (pods): looked up in the ipBlock map, as node addresses (host, remote-node) are. */
#define IDENTITY_MIN_CLUSTER 256
#define IDENTITY_MAX_CLUSTER 65535
/* Node identities (core/host-endpoint.ts): a node address's answer in the ipBlock map, which node selectors
 * (toNodes/fromNodes) select; never a packet's identity. */
#define IDENTITY_MIN_NODE 65536
#define IDENTITY_MAX_NODE 16777215
/* The peer of a policy entry that holds for every identity of the `cluster` entity (core/identity.ts's
 * inClusterClass: the cluster identities and the reserved ones in the cluster), probed between a peer's own
 * entries and the wildcard's for subjects whose lens has POLICY_LENS_CLASS. Never a packet's identity. */
#define IDENTITY_CLASS_CLUSTER 255
/* The peer of a policy entry that holds for every pod (core/identity.ts's inEveryPodClass: the cluster identities),
 * probed after a pod peer's own entries instead of the cluster class's (its entries hold the cluster entity's rules
 * too) for subjects whose lens has POLICY_LENS_PODS. Never a packet's identity. */
#define IDENTITY_CLASS_PODS 254
/* The peer of a policy entry that holds for every identity of the `world` entity the datapath can test by number
 * (core/identity.ts's inWorldClass: world, world-ipv4, world-ipv6 and the local scope, the operator's CIDR identities
 * and the agents' FQDN ones), probed after such a peer's own entries for subjects whose lens has POLICY_LENS_WORLD.
 * Never a packet's identity. */
#define IDENTITY_CLASS_WORLD 253
/* The peers of the `world-ipv4` / `world-ipv6` classes (core/identity.ts WORLD_IPV4/6_CLASS_PEER): probed instead of
 * IDENTITY_CLASS_WORLD for a world peer other than IDENTITY_WORLD in a packet of that family, for subjects whose lens
 * has POLICY_LENS_WORLD_IPV4 / _IPV6 (their entries hold the world entity's rules too). Never a packet's identity. */
#define IDENTITY_CLASS_WORLD_IPV4 252
#define IDENTITY_CLASS_WORLD_IPV6 251
#define IDENTITY_WORLD_IPV4 9
#define IDENTITY_WORLD_IPV6 10
/* The operator's half of the local scope (CIDR and ipBlock identities); the agents' FQDN identities start at the end. */
#define IDENTITY_MIN_LOCAL (1u << 24)
#define IDENTITY_MIN_FQDN ((1u << 24) + (1u << 23))
#define IDENTITY_MAX_LOCAL ((1u << 25) - 1)

#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* policy map: exact-match hash. prefixlen = POLICY_FIXED_PREFIX_BITS + port prefix (0..16), and
 * dport holds only the prefix's bits (the rest zero), so a range is one key per prefix length. */
#define POLICY_FIXED_PREFIX_BITS 80
struct policy_key {
	__u32 prefixlen;
	__u32 subject;   /* the endpoint's identity (host order) */
	__u32 peer;      /* 0 = any identity */
	__u8 direction;  /* DIR_* */
	__u8 proto;      /* IANA number, 0 = any (then port prefix is 0) */
	__be16 dport;    /* network order so that the port prefix is its high bits */
};

/* policy lens: hash, (subject, direction) -> which keys its entries use, separately for entries of
 * one peer and of the wildcard peer: bit L (0..16) = some proto-specific entry has port prefix L,
 * bit POLICY_LENS_ANY_PROTO = some entry has proto ANY. The lookup probes only those, longest
 * first. A superset only costs probes; a missing bit would hide entries (the agent widens first). */
#define POLICY_LENS_PORT_MASK 0x1ffff
#define POLICY_LENS_ANY_PROTO (1u << 17)
/* In peer_lens: the subject has entries for peer IDENTITY_CLASS_CLUSTER (their port lens are in peer_lens too). */
#define POLICY_LENS_CLASS (1u << 18)
/* In peer_lens: the subject has entries for peer IDENTITY_CLASS_PODS (their port lens are in peer_lens too). */
#define POLICY_LENS_PODS (1u << 19)
/* In peer_lens: the subject has entries for peer IDENTITY_CLASS_WORLD (their port lens are in peer_lens too). */
#define POLICY_LENS_WORLD (1u << 20)
/* In peer_lens: the subject has entries for peer IDENTITY_CLASS_WORLD_IPV4 / _IPV6. */
#define POLICY_LENS_WORLD_IPV4 (1u << 21)
#define POLICY_LENS_WORLD_IPV6 (1u << 22)
struct policy_lens_key {
	__u32 subject;
	__u8 direction;  /* DIR_* */
	__u8 pad[3];
};
struct policy_lens_value {
	__u32 peer_lens;     /* entries with a peer identity */
	__u32 wildcard_lens; /* entries with peer 0 (any identity) */
};

#define VERDICT_ALLOW 1
#define VERDICT_DENY 2
struct policy_value {
	__u8 verdict;      /* VERDICT_* */
	__u8 pad;
	__u16 proxy_port;  /* non-zero: L7 redirect (host order) */
	__u32 rule_id;     /* index into the compiled rule table */
};

/* ipcache: LPM trie, prefixlen = 32 (family + pad) + address prefix, for prefixes shorter than an
 * address; full-length prefixes (pods, nodes: /32, /128) live in the hosts hash, keyed by
 * ipcache_host_key, with the same value. */
#define IPCACHE_FIXED_PREFIX_BITS 32
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;       /* FAMILY_* */
	__u8 pad[3];
	__u8 addr[16];     /* IPv4 in the first 4 bytes */
};

struct ipcache_host_key {
	__u8 family;       /* FAMILY_* */
	__u8 pad[3];
	__u8 addr[16];     /* IPv4 in the first 4 bytes */
};

#define IPCACHE_F_NODE 1 /* the address is a cluster node: VNIs from it are trusted */
struct ipcache_value {
	__u32 identity;
	__be32 tunnel_endpoint; /* IPv4 of the node hosting the address; 0 = local / not tunnelled */
	__u8 flags;             /* IPCACHE_F_* */
	__u8 pad[3];
};

/* ipblocks: LPM trie keyed by struct ipcache_key (same prefixlen rule): the prefixes NetworkPolicy
 * ipBlocks name -> their ipBlock identity, the second answer for a pod address (core/ipblock.ts). */
struct ipblock_value {
	__u32 identity;
};

/* endpoints: hash, pod IP -> the local endpoint. */
struct endpoint_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

#define EP_F_INGRESS_ENFORCED 1
#define EP_F_EGRESS_ENFORCED 2
#define EP_F_POLICY_FAILED 4 /* the endpoint's policy could not be installed: drop all its traffic */
#define EP_F_POLICY_AUDIT 8  /* policy audit mode for this endpoint: policy drops pass, reported as audits (bpf/lib/audit.h) */
struct endpoint_value {
	__u32 ifindex;   /* the host side of the pod's veth */
	__u32 identity;
	__u32 flags;     /* EP_F_* */
};

/* host firewall (bpf/lib/hostfw.h). host addrs: hash, endpoint_key (the node's own addresses) ->
 * endpoint_value (identity IDENTITY_HOST, ifindex 0, the host's EP_F_* flags). The guard: hash of what
 * is always allowed whatever the host policy says (the lock-out guard, node-agent/hostfw.ts). */
struct host_guard_key {
	__u8 direction; /* DIR_* of the host's side: ingress = to this node */
	__u8 proto;     /* IANA number */
	__be16 port;    /* destination port (ICMP: the type as a port, as in struct flow) */
};
#define HOST_GUARD_ANY_PEER 0   /* any peer */
#define HOST_GUARD_NODE_PEER 1  /* only a cluster node (ipcache IPCACHE_F_NODE) */
struct host_guard_value {
	__u8 peers;     /* HOST_GUARD_*_PEER */
	__u8 pad[3];
};

/* conntrack: LRU hash keyed by the tuple as seen by the originator and the direction it was
 * checked in; a reply matches the swapped tuple with the opposite direction. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 direction; /* DIR_* of the policy check that created the entry */
	__u8 pad;
};

#define CT_TCP_SYN_SENT 1
#define CT_TCP_ESTABLISHED 2
#define CT_TCP_CLOSING 3
#define CT_OTHER 4
struct ct_value {
	__u64 expires_ns; /* bpf_ktime_get_ns() deadline */
	__u32 rule_id;
	__u8 state;       /* CT_* */
	__u8 seen_reply;
	__u8 flags;       /* CT_F_* */
	__u8 reported;    /* monitor aggregation: what was reported, forward in bits 0-3, reply in 4-7 (CT_REPORTED_*) */
	/* The stamp of the endpoint check its packets passed (bpf/datapath.c endpoint_fast_path): the interface of the
	 * endpoint program that judged it (0: a host program's entry, or one from before the stamp: never matches) and
	 * the endpoint generation (config_value.ep_gen) read before that check. */
	__u32 ifindex;
	__u32 ep_gen;
};
#define CT_F_NO_TUNNEL 1 /* the peer is known by its own address (a local pod, a node) not to be behind the tunnel: known packets need no ipcache lookup */
#define CT_F_PROXY 2     /* steered to a node proxy: every packet of the flow goes there (bpf/lib/redirect.h) */
/* Per direction of a connection: its TCP flags FIN, SYN, RST as in the header, and its first packet. */
#define CT_REPORTED_FIRST 0x08
#define CT_REPORTED_REPLY_SHIFT 4

/* Timeouts in seconds (Cilium's defaults). */
#define CT_TIMEOUT_TCP_SYN 60
#define CT_TIMEOUT_TCP_ESTABLISHED 21600
#define CT_TIMEOUT_TCP_CLOSE 10
#define CT_TIMEOUT_OTHER 60

/* Drop reasons: index of the per-CPU drop counter and the event's reason. */
#define DROP_NONE 0
#define DROP_POLICY_DENY 1
#define DROP_POLICY_DEFAULT_DENY 2
#define DROP_SPOOFED_SOURCE 3
#define DROP_UNKNOWN_ENDPOINT 4
#define DROP_UNKNOWN_NODE 5
#define DROP_INVALID_VNI 6
#define DROP_MALFORMED 7
#define DROP_UNSUPPORTED_L3 8
#define DROP_FRAGMENT 9
#define DROP_TUNNEL_KEY 10
#define DROP_NO_TUNNEL_DEVICE 11
#define DROP_POLICY_OVERFLOW 12 /* the endpoint's policy did not fit the policy map (fail closed) */
#define DROP_PROXY_REDIRECT 13  /* policy sends the flow to a node proxy that cannot be reached this way (fail closed) */
#define DROP_UNENCRYPTED 14     /* strict encryption: no working tunnel to the destination node */
#define DROP_MISSED_TAIL_CALL 15 /* the host firewall's program for pod-to-node traffic is not in the tail-call map (fail closed) */
#define DROP_REASON_MAX 16

#define EVENT_FORWARDED 1
#define EVENT_DROPPED 2
#define EVENT_AUDIT 3 /* policy would have dropped it (reason: the drop's), audit mode let it pass */
/* What a forwarded event reports: the packet that policy allowed (a new connection), or a later
 * packet of the connection in its own direction or as a reply (monitor aggregation low / none). */
#define EVENT_CT_NEW 0
#define EVENT_CT_ESTABLISHED 1
#define EVENT_CT_REPLY 2
struct event {
	__u64 timestamp_ns;
	__u8 verdict;      /* EVENT_* */
	__u8 direction;    /* DIR_* of the connection (a reply travels the other way) */
	__u8 reason;       /* DROP_* */
	__u8 proto;
	__u8 family;
	__u8 tcp_flags;    /* TCP: the packet's flags (FIN=1 SYN=2 RST=4 PSH=8 ACK=16); else 0 */
	__u8 ct_state;     /* EVENT_CT_* */
	__u8 icmp_code;    /* ICMP/ICMPv6: the message's code (its type is in the ports, see packet.h); else 0 */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_id;     /* the matching entry's ruleId; 0xffffffff = no entry (default) */
	__u32 ifindex;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 pad2;
};
#define RULE_ID_NONE 0xffffffff

/* config: array with one element. The CONFIG_F_EVENTS_* flags are the agent's monitor aggregation
 * level (node-agent/monitor-aggregation.ts); drops are reported whatever they say. */
#define CONFIG_F_EVENTS_FORWARDED 1 /* an event for every new allowed connection */
#define CONFIG_F_EVENTS_FLAGS 2     /* and for each packet of a connection with TCP flags (or the first reply) not yet reported in its direction */
#define CONFIG_F_EVENTS_PACKETS 4   /* and for every packet of an allowed connection, in every program it passes */
#define CONFIG_F_POLICY_AUDIT 8     /* policy audit mode for the whole node (bpf/lib/audit.h) */
#define CONFIG_F_LOCALHOST_POLICY 16 /* --allow-localhost=policy: the node's own connections to its pods are judged by their ingress policy (bpf/lib/localhost.h) */
#define CONFIG_F_DUAL_STACK 32 /* the node runs both families (Cilium's dual-stack): an address outside the ipcache is world-ipv4/-ipv6, not world (bpf/lib/ipcache.h) */
struct config_value {
	__u32 vxlan_ifindex; /* 0 = no tunnel device */
	__u32 flags;         /* CONFIG_F_* */
	/* The endpoint generation: the agent adds one after every write or delete in the endpoints map (the entry
	 * first, then this), so a conntrack entry stamped with an older one is judged by the endpoint check again. */
	__u32 ep_gen;
	__u32 pad;
};

/* redirects: LRU hash, the endpoint's end of a flow that policy steered to a node proxy -> where the
 * endpoint sent it. from-container writes it and sends the flow to the proxy; to-container gives the
 * proxy's answers the source the endpoint asked; the proxy reads the original destination here. */
struct redirect_key {
	__u8 addr[16];    /* the endpoint's address (IPv4 in the first 4 bytes) */
	__be16 port;      /* the endpoint's source port */
	__u8 proto;       /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;      /* FAMILY_* */
};
struct redirect_value {
	__u8 orig_daddr[16];
	__be16 orig_dport;
	__u16 proxy_port; /* host order */
	__u32 subject;    /* the endpoint's identity */
	__u32 rule_id;    /* the policy entry that asked for the proxy */
	/* Both ends with HTTP rules on this node: the destination's ingress proxy port (host order) and its
	 * entry's rule, applied by the same proxy after the client's egress rules; 0 otherwise. */
	__u16 ingress_proxy_port;
	__u16 pad;
	__u32 ingress_rule_id;
};

/* proxy ports: hash, port (host order) -> REDIRECT_PORT_F_*: the proxy ports a node proxy serves.
 * A policy entry's proxy_port redirects only when listed; others are plain allows (their proxy has
 * not been built). The listing survives the proxy: a proxy that is down fails its traffic. */
#define REDIRECT_PORT_F_SERVED 1
struct redirect_port_value {
	__u32 flags;
};

/* redirect config: array with one element, the node addresses the proxies listen on. */
struct redirect_config {
	__be32 addr4;     /* 0 = none: redirected IPv4 flows are dropped */
	__u8 addr6[16];   /* all zero = none: redirected IPv6 flows are dropped */
};

/* encryption: array with one element; encrypted_nodes: the node addresses (IPv4, network order) the
 * agent has a working WireGuard peer for -> ENCRYPTED_NODE_F_*. With strict set, the overlay sends only
 * to those. A node whose peer's allowed IPs hold its pod CIDRs is reached without VXLAN: from-container
 * sends pod packets to wireguard_ifindex as they are, and the receiving node takes the source identity
 * from its ipcache (from-wireguard). */
#define ENCRYPTED_NODE_F_TUNNEL 1 /* a working peer: the VXLAN overlay goes inside the tunnel */
#define ENCRYPTED_NODE_F_ROUTED 2 /* and its pod CIDRs are the peer's allowed IPs: pod packets are routed into the device */
struct encryption_value {
	__u32 strict;            /* 1 = drop cross-node traffic to a node not in encrypted_nodes */
	__u32 wireguard_ifindex; /* the WireGuard device while it is up; 0 = none (no routed path) */
};

/* skb->mark carrying the source identity from the overlay program (or the node's proxy) to to-container. */
#define MARK_MAGIC_IDENTITY 0x0e000000
/* The same from the node's L7 proxy after it applied the destination's ingress HTTP rules: to-container
 * lets such a connection meet an ingress entry that names a served proxy port (any other is dropped). */
#define MARK_MAGIC_PROXY_INGRESS 0x0d000000
#define MARK_MAGIC_MASK 0xff000000
#define MARK_IDENTITY_MASK 0x00ffffff

#endif
