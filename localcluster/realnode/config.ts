// A real node's plan and configuration files (names, addresses, containerd, kubelet, CNI, kubeconfig): pure, no I/O.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { stringify } from "yaml";
import { formatIP, formatPrefix, parsePrefix } from "../../core/cidr.ts";
import { PLUGIN_TYPE, parseNetConf } from "../../node-agent/cni/spec.ts";
import { OVERLAY_DEVICE } from "../../node-agent/overlay-device.ts";

/** The v1 controllers a kubelet with the cgroupfs driver makes its pod cgroups in (this machine's hybrid layout), and the unified tree. */
export const CGROUP_HIERARCHIES = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "unified"] as const;

export interface RealNodePlan {
  /** Node object name, network namespace name and cgroup name part. */
  name: string;
  netns: string;
  /** The host end of the node's veth (in the host's network namespace). */
  hostInterface: string;
  /** The host end's address: the node reaches the API server's relay here. */
  hostAddress: string;
  /** The node's InternalIP (its eth0): the API server reaches the kubelet here. */
  nodeAddress: string;
  /**
   * The pods' CIDR on this node, a /24 of CLUSTER_POD_CIDR: the Node's spec.podCIDR (set by startRealNode, as
   * kube-controller-manager's --allocate-node-cidrs would), so the CNI plugin's range before the agent, the
   * CiliumNode's (operator --ipam kubernetes) and kube-proxy's cluster CIDR are one source of truth.
   */
  podCIDR: string;
  /**
   * A dual-stack node's IPv6 pod CIDR, a /64 of CLUSTER_POD_CIDR_V6 (fd00:10:244:<index in hex>::/64): the Node's
   * second spec.podCIDRs entry, so the CNI plugin's podCIDRv6 and the CiliumNode's second pod CIDR. Absent: IPv4 only.
   */
  podCIDRv6?: string;
  /**
   * A dual-stack node's IPv6 address (fd00:10:254::<index in hex>:2, on its eth0 beside nodeAddress): the kubelet's
   * second --node-ip, so the Node's second InternalIP and status.hostIPs, where the agent's proxies listen for IPv6
   * pods. Absent: IPv4 only.
   */
  nodeAddress6?: string;
  /**
   * A dual-stack node's link-local address on each of its underlay links (fe80::<index + 1 in hex>): its peers' IPv6
   * routes to its nodeAddress6 and podCIDRv6 go via it (this kernel refuses an IPv6 route via an IPv4 next hop).
   */
  linkLocal6?: string;
  /** `/<cgroupName>` in every hierarchy: the node's processes in `node`, its pods under `kubepods`. */
  cgroupName: string;
  dir: string;
}

export type PlanResult = { ok: true; plan: RealNodePlan } | { ok: false; errors: string[] };

export interface PlanOptions {
  name: string;
  /** Where the node keeps everything (configs, containerd root, kubelet root, logs); removed by stop(). */
  dir: string;
  /** 0-255: picks the node's /30 in 10.254.0.0/16 and pod CIDR 10.244.<index>.0/24; default from a hash of the name. */
  index?: number;
  /** The pods' IP families: `["IPv4"]` (the default) or dual-stack `["IPv4", "IPv6"]` (IPv4 first, as the node's address is IPv4). */
  ipFamilies?: readonly string[];
}

/** The IP families a real node's pods may have: IPv4 alone, or dual-stack with IPv4 first (the node's own address is IPv4). */
export type IPFamilies = readonly ["IPv4"] | readonly ["IPv4", "IPv6"];

/** Checks an ipFamilies option; the error names the field. */
export function parseIPFamilies(v: readonly string[] | undefined, field = "ipFamilies"): { ok: true; value: IPFamilies } | { ok: false; error: string } {
  if (v === undefined || (v.length === 1 && v[0] === "IPv4")) return { ok: true, value: ["IPv4"] };
  if (v.length === 2 && v[0] === "IPv4" && v[1] === "IPv6") return { ok: true, value: ["IPv4", "IPv6"] };
  return { ok: false, error: `${field}: ["IPv4"] or ["IPv4", "IPv6"] is required (the nodes' own addresses are IPv4), got ${JSON.stringify(v)}` };
}

/** Checks the options and computes names and addresses. */
export function planRealNode(opts: PlanOptions): PlanResult {
  const errors: string[] = [];
  if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(opts.name)) {
    errors.push(`name: a DNS label of at most 32 lowercase letters, digits and "-" is required, got "${opts.name}"`);
  }
  if (!opts.dir.startsWith("/")) errors.push(`dir: an absolute path is required, got "${opts.dir}"`);
  const index = opts.index ?? createHash("sha256").update(opts.name).digest()[0]!;
  if (!Number.isInteger(index) || index < 0 || index > 255) errors.push(`index: an integer from 0 to 255 is required, got ${opts.index}`);
  const families = parseIPFamilies(opts.ipFamilies);
  if (!families.ok) errors.push(families.error);
  if (errors.length > 0 || !families.ok) return { ok: false, errors };
  // Interface names are at most 15 bytes: a short hash keeps parallel nodes of different names apart.
  const tag = createHash("sha256").update(opts.name).digest("hex").slice(0, 8);
  const base = index * 4;
  return {
    ok: true,
    plan: {
      name: opts.name,
      netns: `rn-${opts.name}`,
      hostInterface: `rn${tag}`,
      hostAddress: `10.254.${base >> 8}.${(base & 255) + 1}`,
      nodeAddress: `10.254.${base >> 8}.${(base & 255) + 2}`,
      podCIDR: `${CLUSTER_POD_CIDR.split(".").slice(0, 2).join(".")}.${index}.0/24`,
      ...(families.value.length === 2 ? { podCIDRv6: podCIDRv6Of(index), nodeAddress6: nodeAddress6Of(index), linkLocal6: formatIP(6, (0xfe80n << 112n) | BigInt(index + 1)) } : {}),
      cgroupName: `membrane-realnode-${opts.name}`,
      dir: opts.dir,
    },
  };
}

/** The files and dirs of a node inside its dir. */
export function realNodePaths(dir: string) {
  return {
    dir,
    stateFile: join(dir, "realnode.json"),
    containerdConfig: join(dir, "containerd.toml"),
    containerdRoot: join(dir, "containerd"),
    containerdLog: join(dir, "containerd.log"),
    kubeletConfig: join(dir, "kubelet.yaml"),
    kubeletKubeconfig: join(dir, "kubelet.kubeconfig"),
    kubeletRoot: join(dir, "kubelet"),
    kubeletLog: join(dir, "kubelet.log"),
    kubeProxyConfig: join(dir, "kube-proxy.yaml"),
    kubeProxyKubeconfig: join(dir, "kube-proxy.kubeconfig"),
    kubeProxyLog: join(dir, "kube-proxy.log"),
    relayLog: join(dir, "relay.log"),
    holderLog: join(dir, "holder.log"),
    holderReady: join(dir, "holder.ready"),
    pki: join(dir, "pki"),
    cniConfDir: join(dir, "cni", "net.d"),
    /** containerd's CNI bin dir: the membrane-cni launcher and a link to Debian's loopback plugin. */
    cniBinDir: join(dir, "cni", "bin"),
    /** Bind-mounted over /var/log inside the node: pod logs and the kubelet's /var/log/containers links. */
    logDir: join(dir, "log"),
    volumePluginDir: join(dir, "volume-plugins"),
    /** Bind-mounted over /etc/hosts inside the node. */
    hosts: join(dir, "hosts"),
  };
}

/**
 * The CNI dirs as the node's runtime sees them: one path on every node (the chart's agent.cniBinDir/cniConfDir is
 * one value for all its agents), bind-mounted by the holder from the node dir's cni/bin and cni/net.d, inside the
 * node's private /var/lib (the host's /opt/cni/bin and /etc/cni/net.d are not touched).
 */
export const NODE_CNI_DIRS = { bin: "/var/lib/realnode/cni/bin", conf: "/var/lib/realnode/cni/net.d" } as const;

/** The containerd socket inside the node's mount namespace (its own /run). */
export const CONTAINERD_SOCKET = "/run/containerd/containerd.sock";

/** containerd 1.6's config: own root, state and socket, the node's CNI dirs, the pause image built here. */
export function containerdConfig(plan: RealNodePlan, pauseImage: string): string {
  const paths = realNodePaths(plan.dir);
  const q = (s: string): string => JSON.stringify(s);
  return `version = 2
root = ${q(paths.containerdRoot)}
# Inside the node's private /run: nothing is shared with a host containerd.
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = ${q(CONTAINERD_SOCKET)}

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(join(paths.containerdRoot, "opt"))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(pauseImage)}
  # Root here lacks CAP_SYS_RESOURCE: an oom_score_adj below containerd's own cannot be set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet's cgroupDriver is cgroupfs: the two must agree.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(NODE_CNI_DIRS.bin)}
    conf_dir = ${q(NODE_CNI_DIRS.conf)}
`;
}

/**
 * The pod network: Membrane's own CNI plugin (`node-agent/cni`), with no agent yet — it wires each pod's
 * veth, address (host-local IPAM on the node's pod CIDR) and routes, and enforces nothing. Its IPAM state is
 * the plugin's default stateDir (in the node's private /var/lib), the one the agent's own conflist uses later
 * and the agent reads at start to adopt these pods. Checked by the plugin's own parser, so the node never
 * installs a config the plugin refuses.
 */
export function cniConflist(plan: RealNodePlan): string {
  // Before the agent, pods cross to other nodes unencapsulated over the underlay's 1500-byte veths; the agent
  // sets its pod MTU (VXLAN's 1450) on the pods it adopts at start.
  const plugin = { type: PLUGIN_TYPE, podCIDR: plan.podCIDR, ...(plan.podCIDRv6 ? { podCIDRv6: plan.podCIDRv6 } : {}), mtu: 1500 };
  parseNetConf({ cniVersion: "1.0.0", name: CNI_NETWORK, ...plugin });
  return JSON.stringify({ cniVersion: "1.0.0", name: CNI_NETWORK, plugins: [plugin] }, null, 2);
}

/** The node's /etc/hosts: itself and localhost; RealNode.addHost appends. */
export function hostsFile(plan: RealNodePlan): string {
  return `127.0.0.1 localhost\n::1 localhost\n${plan.nodeAddress} ${plan.name}\n`;
}

/** The `kubernetes` Service's address (the API server's certificate names it): in-cluster clients dial it. */
export const KUBERNETES_SERVICE = { address: "10.96.0.1", port: 443 } as const;

/** The Services' range (the API server's --service-cluster-ip-range): kube-proxy routes ClusterIPs in it. */
export const SERVICE_CIDR = "10.96.0.0/16";
/**
 * A dual-stack cluster's IPv6 Service range (kind's default for dual-stack clusters), second after SERVICE_CIDR: the
 * API server's primary family stays IPv4, so the kubernetes Service and the cluster DNS keep 10.96.0.1 and 10.96.0.10,
 * and a Service gets an IPv6 ClusterIP only when its ipFamilyPolicy asks for one. Apart from the pods'
 * (CLUSTER_POD_CIDR_V6) and the nodes' (NODE_ADDRESSES_V6) IPv6 ranges.
 */
export const SERVICE_CIDR_V6 = "fd00:10:96::/112";

/**
 * The kube-apiserver flags a real-node cluster of these pod families needs (startControlPlane's apiserverArgs): its
 * Service ranges, both for dual-stack pods. Passed after the control-plane binary's own IPv4-only range, which they
 * replace (the last value of a flag wins). kube-controller-manager needs no matching flags: it allocates no pod CIDRs
 * here (startRealNode sets each Node's), so its Service and cluster ranges are unused.
 */
export function realNodeApiserverArgs(families: IPFamilies): string[] {
  return [`--service-cluster-ip-range=${families.length === 2 ? `${SERVICE_CIDR},${SERVICE_CIDR_V6}` : SERVICE_CIDR}`];
}
/** The kube-dns Service's ClusterIP (kubeadm's: the tenth address of the Service range): the kubelets' clusterDNS (coredns.ts). */
export const CLUSTER_DNS_ADDRESS = "10.96.0.10";
export const CLUSTER_DOMAIN = "cluster.local";
/**
 * Every real node's pod CIDR (10.244.<index>.0/24) lies in it: kube-proxy's cluster CIDR (traffic from outside it
 * is masqueraded) and the chart's clusterPodCIDR (MEMBRANE_CHART_VALUES); the chart's own default too.
 */
export const CLUSTER_POD_CIDR = "10.244.0.0/16";
/**
 * A dual-stack node's IPv6 pod CIDR (fd00:10:244:<index in hex>::/64) lies in it: the nodes' Node objects, CNI plugins
 * and CiliumNodes carry it, and a dual-stack node's kube-proxy counts it as the cluster's (its second cluster CIDR).
 */
export const CLUSTER_POD_CIDR_V6 = "fd00:10:244::/56";

/** Where dual-stack nodes' own IPv6 addresses are (nodeAddress6). */
const NODE_ADDRESSES_V6 = "fd00:10:254::/64";

/** The index's IPv6 node address in NODE_ADDRESSES_V6 (as 10.254.<index * 4 + 2> of the IPv4 one). */
function nodeAddress6Of(index: number): string {
  return formatIP(6, parsePrefix(NODE_ADDRESSES_V6)!.addr | (BigInt(index) << 16n) | 2n);
}

/** The index's /64 of CLUSTER_POD_CIDR_V6: its 8 bits are the prefix's last 8 (as 10.244.<index>.0/24 of the IPv4 one). */
function podCIDRv6Of(index: number): string {
  const cluster = parsePrefix(CLUSTER_POD_CIDR_V6)!;
  return formatPrefix({ family: 6, addr: cluster.addr | (BigInt(index) << 64n), bits: 64 });
}

/** Every underlay link between real nodes is named this and the peer's tag (underlayMesh): the chart's agent.nodeDevice wildcard. */
export const UNDERLAY_DEVICE_PREFIX = "rnm";

/** The VXLAN overlay device the chart's agents make by default (routingMode tunnel); nothing else on a real node makes one. */
export const TUNNEL_DEVICE = OVERLAY_DEVICE;

/**
 * The chart values a real-node cluster needs so that Membrane assigns the addresses the cluster routes: each
 * node's pod CIDR from its Node (the operator's --ipam kubernetes), inside kube-proxy's cluster CIDR; and the host's
 * cgroup v2 mount (this machine's cgroups are hybrid) for the ClusterIP translation's programs. The overlay between
 * the nodes is the chart's default (routingMode tunnel), as a user's `helm install` gets it.
 */
export const MEMBRANE_CHART_VALUES = {
  "ipam.mode": "kubernetes",
  clusterPodCIDR: CLUSTER_POD_CIDR,
  "socketLB.hostCgroupRoot": "/sys/fs/cgroup/unified",
  // The node devices are the per-peer underlay links (underlayMesh): the L7 proxy's answers and upstream connections
  // to other nodes leave by them, so each gets from-host (also a later node's link, which the agent sees appear).
  "agent.nodeDevice": `${UNDERLAY_DEVICE_PREFIX}+`,
} as const;

/**
 * nftables rules for the node's network namespace: the `kubernetes` Service reaches the API server's relay on
 * the host end of the node's veth, from the node (output: hostNetwork pods, an agent's in-cluster client) and
 * from pods (prerouting: the operator's and the webhook's pods). The API server runs on the host's loopback, so
 * the Service has no endpoints kube-proxy could route to (--endpoint-reconciler-type=none); kube-proxy rejects
 * a Service without endpoints in its filter chains at priority dstnat-10, so this DNAT runs before them (-111)
 * and the connection never meets kube-proxy's rules (a connection's first NAT rule decides). A pod's connection
 * leaves masqueraded as the node, the only address the host routes back.
 */
export function kubernetesServiceRules(plan: RealNodePlan, relayPort: number): string {
  const dnat = `ip daddr ${KUBERNETES_SERVICE.address} tcp dport ${KUBERNETES_SERVICE.port} dnat to ${plan.hostAddress}:${relayPort}`;
  return [
    "table ip membrane-realnode {",
    "  chain output {",
    "    type nat hook output priority -111; policy accept;",
    `    ${dnat}`,
    "  }",
    "  chain prerouting {",
    "    type nat hook prerouting priority -111; policy accept;",
    `    ${dnat}`,
    "  }",
    // The host has no route to the pods: a pod's connection to the relay leaves with the node's address.
    "  chain postrouting {",
    "    type nat hook postrouting priority 100; policy accept;",
    `    ip saddr != ${plan.nodeAddress} ip daddr ${plan.hostAddress} tcp dport ${relayPort} masquerade`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/**
 * kube-proxy's configuration for this node: nftables mode (its own `ip kube-proxy` table in the node's network
 * namespace, gone with it), the API server through the node's relay, and nothing it would change on the host:
 * conntrack limits and timeouts left as they are (net.netfilter sysctls are shared with the host), its
 * oom_score_adj unchanged (root here lacks CAP_SYS_RESOURCE), its servers on the node's loopback.
 */
export function kubeProxyConfig(plan: RealNodePlan): string {
  const paths = realNodePaths(plan.dir);
  return stringify({
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    mode: "nftables",
    clientConnection: { kubeconfig: paths.kubeProxyKubeconfig },
    hostnameOverride: plan.name,
    bindAddress: plan.nodeAddress,
    healthzBindAddress: "127.0.0.1:10256",
    metricsBindAddress: "127.0.0.1:10249",
    // A dual-stack node's kube-proxy also routes IPv6 ClusterIPs (SERVICE_CIDR_V6): one cluster CIDR per family.
    clusterCIDR: plan.podCIDRv6 ? `${CLUSTER_POD_CIDR},${CLUSTER_POD_CIDR_V6}` : CLUSTER_POD_CIDR,
    detectLocalMode: "ClusterCIDR",
    nodePortAddresses: [`${plan.nodeAddress}/32`, ...(plan.nodeAddress6 ? [`${plan.nodeAddress6}/128`] : [])],
    oomScoreAdj: 0,
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s", udpTimeout: "0s", udpStreamTimeout: "0s" },
  });
}

/** A kubeconfig through the node's relay for a client certificate in the node's pki (the kubelet's, kube-proxy's). */
export function relayKubeconfig(plan: RealNodePlan, relayPort: number, caFile: string, user: string, certBase: string): string {
  const paths = realNodePaths(plan.dir);
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "local",
        // The relay's address is not in the API server's certificate; "kubernetes" is.
        cluster: { server: `https://${plan.hostAddress}:${relayPort}`, "certificate-authority": caFile, "tls-server-name": "kubernetes" },
      },
    ],
    users: [{ name: user, user: { "client-certificate": join(paths.pki, `${certBase}.crt`), "client-key": join(paths.pki, `${certBase}.key`) } }],
    contexts: [{ name: user, context: { cluster: "local", user } }],
    "current-context": user,
  });
}

/** The CNI network's name (containerd's pod network; the plugin keeps its IPAM state per network). */
export const CNI_NETWORK = "membrane";

/** The kubelet's KubeletConfiguration for this machine and this node. */
export function kubeletConfig(plan: RealNodePlan, caFile: string): string {
  const paths = realNodePaths(plan.dir);
  return stringify({
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    // This machine's cgroups are hybrid v1 (cgroup2 only at /sys/fs/cgroup/unified).
    failCgroupV1: false,
    cgroupDriver: "cgroupfs",
    // Pods' cgroups under the node's own root: two nodes (or two developers) never share "kubepods".
    cgroupRoot: `/${plan.cgroupName}`,
    containerRuntimeEndpoint: `unix://${CONTAINERD_SOCKET}`,
    address: plan.nodeAddress,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: caFile } },
    authorization: { mode: "Webhook" },
    clusterDomain: CLUSTER_DOMAIN,
    // CoreDNS's Service (coredns.ts): ClusterFirst pods resolve through it, once it is installed.
    clusterDNS: [CLUSTER_DNS_ADDRESS],
    failSwapOn: false,
    // The images are imported, never pulled: image GC must not remove them, and the host's disk must not evict.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { "memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
    // Its default, /usr/libexec/kubernetes/kubelet-plugins/volume/exec, is created on the host when missing.
    volumePluginDir: paths.volumePluginDir,
    serializeImagePulls: false,
    registerNode: true,
  });
}

/** The kubelet's kubeconfig: its `system:node:NAME` certificate, the API server through the node's relay. */
export function kubeletKubeconfig(plan: RealNodePlan, relayPort: number, caFile: string): string {
  return relayKubeconfig(plan, relayPort, caFile, "kubelet", "kubelet");
}

/** kube-proxy's kubeconfig: its `system:kube-proxy` certificate (the bootstrap policy's system:node-proxier binding names that user). */
export function kubeProxyKubeconfig(plan: RealNodePlan, relayPort: number, caFile: string): string {
  return relayKubeconfig(plan, relayPort, caFile, "kube-proxy", "kube-proxy");
}

/**
 * The script the node's namespace holder runs (inside `unshare --mount --uts --propagation private`): its own
 * /run, /var/lib (the kubelet's hard-coded device-plugins dir lands there), /var/log and bpffs; none of it is
 * seen by the host, and all of it goes when the last process of the namespace exits.
 */
export function holderScript(plan: RealNodePlan): string {
  const paths = realNodePaths(plan.dir);
  return [
    "set -eu",
    // Its own UTS namespace: hostNetwork pods see the node's name as their hostname, as on any node.
    `hostname ${plan.name}`,
    "mount -t tmpfs -o mode=0755 realnode-run /run",
    "mkdir -p /run/containerd",
    "mount -t tmpfs -o mode=0755 realnode-varlib /var/lib",
    `mkdir -p ${NODE_CNI_DIRS.bin} ${NODE_CNI_DIRS.conf}`,
    `mount --bind ${JSON.stringify(paths.cniBinDir)} ${NODE_CNI_DIRS.bin}`,
    `mount --bind ${JSON.stringify(paths.cniConfDir)} ${NODE_CNI_DIRS.conf}`,
    `mount --bind ${JSON.stringify(paths.logDir)} /var/log`,
    "mount -t bpf realnode-bpffs /sys/fs/bpf",
    // Its own /etc/hosts (the kubelet copies it into hostNetwork pods): names the local cluster gives addresses.
    `mount --bind ${JSON.stringify(paths.hosts)} /etc/hosts`,
    // Shared inside the node only (every mount here is a private copy of the host's, so nothing reaches the
    // host), as on a real node: a pod's Bidirectional hostPath (the agent's bpffs) and HostToContainer one
    // (its /var/run/netns) need a shared source mount, else containerd refuses the container.
    "mount --make-rshared /",
    `touch ${JSON.stringify(paths.holderReady)}`,
    "exec sleep infinity",
  ].join("\n");
}

/** One point-to-point veth of the underlay between two real nodes: `device` in `netns`, its peer in the other node. */
export interface UnderlayLink {
  netns: string;
  device: string;
  peerNetns: string;
  peerDevice: string;
  /** Dual-stack nodes: each end's link-local address (its node's linkLocal6). */
  linkLocal6?: string;
  peerLinkLocal6?: string;
}

/** A route a node's network namespace gets to reach a peer node (its address, on link) or that node's pods (via it). */
export interface UnderlayRoute {
  netns: string;
  dest: string;
  device: string;
  via?: string;
}

/**
 * The underlay between real nodes: a veth per pair of nodes (a full mesh, made inside the nodes' namespaces, so it goes
 * with them and the host routes nothing), a /32 route to each peer's address over its link and a route to each peer's
 * pod CIDR via that address; between dual-stack nodes also a /128 route to the peer's IPv6 address and a route to its
 * IPv6 pod CIDR, both via the peer's link-local address on the link. The nodes' addresses stay their eth0's (the API server on the host reaches each kubelet
 * there); VXLAN between the agents runs node address to node address over these links, and pods before any agent is
 * installed reach each other by these routes, as the process-based local cluster's nodes do over their bridge. With
 * `joining`, the part a node added later needs: the mesh of all plans less the mesh of the others.
 */
export function underlayMesh(plans: readonly RealNodePlan[], joining?: RealNodePlan): { links: UnderlayLink[]; routes: UnderlayRoute[] } {
  const device = (peer: RealNodePlan): string => `${UNDERLAY_DEVICE_PREFIX}${peer.hostInterface.slice(2, 10)}`;
  // With `joining` (one of plans, a node added to a running mesh): only its links and the routes over them.
  const part = (a: RealNodePlan, b: RealNodePlan): boolean => joining === undefined || a === joining || b === joining;
  const links: UnderlayLink[] = [];
  const routes: UnderlayRoute[] = [];
  for (const [i, a] of plans.entries()) {
    for (const b of plans.slice(i + 1)) {
      if (!part(a, b)) continue;
      const six = a.linkLocal6 && b.linkLocal6 ? { linkLocal6: a.linkLocal6, peerLinkLocal6: b.linkLocal6 } : {};
      links.push({ netns: a.netns, device: device(b), peerNetns: b.netns, peerDevice: device(a), ...six });
    }
    for (const b of plans) {
      if (b === a || !part(a, b)) continue;
      routes.push({ netns: a.netns, dest: `${b.nodeAddress}/32`, device: device(b) });
      routes.push({ netns: a.netns, dest: b.podCIDR, device: device(b), via: b.nodeAddress });
      if (a.linkLocal6 && b.linkLocal6 && b.nodeAddress6 && b.podCIDRv6) {
        routes.push({ netns: a.netns, dest: `${b.nodeAddress6}/128`, device: device(b), via: b.linkLocal6 });
        routes.push({ netns: a.netns, dest: b.podCIDRv6, device: device(b), via: b.linkLocal6 });
      }
    }
  }
  return { links, routes };
}
