// `membrane agent`'s command line: the usage text and the parsing of every flag into AgentFlags, each error naming its flag.
import { DEFAULT_HTTP_REDACTION, httpRedaction, parseHeaderNames, type HttpRedaction, type RedactionResult } from "../core/l7/redaction.ts";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import type { ProxyAddresses } from "./l7proxy/supervisor.ts";
import { CONFIG_SOCKET_NAME, DEFAULT_L7_PROXY_SOCKET_DIR, EXTERNAL_FLOW_SOCKET_NAME } from "./l7proxy/external.ts";
import type { FqdnCacheOptions } from "../core/dns/fqdn-cache.ts";
import type { RejectCode } from "../core/dns/query-decision.ts";
import { parseDuration } from "../core/duration.ts";
import { DEFAULT_METRICS_ADDRESS } from "./metrics.ts";
import { parseHostPort } from "../core/cidr.ts";
import { parseDeviceList, type DeviceSelector } from "../core/devices.ts";
import { POLICY_ENFORCEMENT_MODES, type PolicyEnforcementMode, isPolicyEnforcementMode } from "./enforcement.ts";
import { DEFAULT_MONITOR_AGGREGATION, MONITOR_AGGREGATION_LEVELS, type MonitorAggregation, isMonitorAggregation } from "./monitor-aggregation.ts";
import { NETWORK_NAME } from "./cni-install.ts";
import { DEFAULT_STATE_ROOT } from "./cni/spec.ts";
import { DEFAULT_IDENTITY_WAIT_MS, MAX_IDENTITY_WAIT_MS } from "./cni/agent-socket.ts";
import { WIREGUARD_ROUTINGS, type WireguardRouting } from "./mtu.ts";
import { AGENT_LEASE_NAMESPACE } from "../kube/heartbeat.ts";
import { flagError } from "../kube/flags.ts";
import { parseFilterList, type HubbleExportOptions } from "./observer/hubble-export.ts";
import { DEFAULT_HUBBLE_METRICS, parseHubbleMetrics, type HubbleMetricConfig, type HubbleMetricFamily } from "./observer/hubble-context.ts";
import { ENCRYPTION_MODES, type AgentEncryptionMode } from "./encryption/publication.ts";
import { AUDIT_MODE_ANNOTATION } from "./audit-mode.ts";
import { CGROUP2_ROOT } from "./runtime/connect-enforcer.ts";
import { DEFAULT_RUNTIME_BPF_SCOPE, checkRuntimeBpfScope } from "./runtime/pin-scopes.ts";
import { DEFAULT_POLICY_MAP_ENTRIES } from "./bpf/layout.ts";

/**
 * The Node options the agent runs with: the chart sets them as its container's NODE_OPTIONS, bench/scale starts the
 * agent with them. V8's young generation is capped at 4 MiB a semi-space: by default it grows to 32 MiB while a
 * 50,000-entry snapshot is decoded and written, and a grown young generation stays resident (issue #21, bench/README).
 */
/**
 * --policy-map-max's bounds: below 1,024 a node holds almost no policy; the kernel allocates a hash map's buckets (16
 * bytes each, the size rounded up to a power of two) when it creates it, 256 MiB at the maximum.
 */
export const POLICY_MAP_MAX_RANGE = { min: 1024, max: 16_777_216 } as const;

export const AGENT_NODE_OPTIONS = "--max-semi-space-size=4";

export const USAGE = `usage: membrane agent --node-name NAME --operator HOST:PORT [--operator-server-name NAME] --tls-cert FILE --tls-key FILE --tls-ca FILE
                      [--bpf-scope SCOPE] [--cni-socket PATH] [--cni-identity-wait DURATION] [--state-dir DIR] [--cni-state-dir DIR] [--netns NAME] [--node-ip IP[,IP]] [--proxy-ipv6-address IP] [--log-level LEVEL]
                      [--hubble-socket PATH] [--hubble-listen-address HOST:PORT --hubble-tls-cert FILE --hubble-tls-key FILE --hubble-tls-client-ca FILE]
                      [--flow-export-path PATH [--flow-export-max-size-mib N] [--flow-export-max-backups K] [--flow-export-compress BOOL]]
                      [--metrics-address HOST:PORT | --health-port PORT] [--kubeconfig FILE] [--lease-namespace NS]
                      [--policy-enforcement-mode default|always|never] [--policy-audit-mode] [--monitor-aggregation none|low|medium|maximum] [--allow-localhost always|policy]
                      [--policy-map-max N]
                      [--cni-bin-dir DIR] [--cni-conf-dir DIR] [--token-file FILE] [--encryption disabled|ipsec|wireguard [--encryption-strict] [--wireguard-go PATH] [--wireguard-routing routed|vxlan]]
                      [--cni-bin-dir DIR] [--cni-conf-dir DIR] [--token-file FILE] [--encryption disabled|ipsec]
                      [--host-firewall-device NAME ... [--host-firewall-api-server-port PORT]] [--node-device NAME[,NAME|PREFIX+...]|none] [--tunnel-device NAME]
                      [--enable-dns-proxy[=true|false]] [--tofqdns-min-ttl SECONDS] [--tofqdns-max-ips-per-hostname N]
                      [--tofqdns-dns-reject-response-code refused|nameError] [--tofqdns-idle-connection-grace-period DURATION]
                      [--enable-l7-proxy[=true|false] [--external-l7-proxy[=true|false] [--l7-proxy-socket-dir DIR]] [--http-normalize-path[=true|false]]] [--enable-runtime[=true|false] [--external-runtime[=true|false]] [--runtime-bpf-scope SCOPE]]
                      [--bpf-lb-sock[=true|false] [--cgroup-root DIR]]
                      [--owner-daemonset NAMESPACE/NAME]

  --node-name   this node's name (the CN of its client certificate)
  --operator    the operator's distribution server, host:port
  --operator-server-name  the name its certificate is checked for, when --operator is an address: the chart dials the
                operator Service's ClusterIP (Kubernetes' service environment, no DNS: cluster DNS is a pod the agent
                itself keeps closed until the operator's first state reaches it) and checks the Service's DNS name
  --tls-cert, --tls-key, --tls-ca   the agent's client certificate, its key, and the CA of the operator
  --bpf-scope   maps are pinned under /sys/fs/bpf/membrane/SCOPE (default: the node name)
  --cni-socket  the endpoint socket the CNI plugin calls (default /run/membrane/agent.sock)
  --cni-identity-wait  how long a pod's CNI ADD waits for the pod's identity (its pod object's, checked against the
                operator's state) and that identity's policy on the endpoint, so its first packets are judged by them
                (default 5s, at most ${MAX_IDENTITY_WAIT_MS / 1000}s, 0s: no wait); past it the pod starts at reserved:init, closed, as
                without the wait, and the agent logs it with the pod's namespace/name
  --state-dir   where the agent keeps its endpoints and last acknowledged state across restarts (default /var/lib/membrane/agent)
  --cni-state-dir  the CNI plugin's IPAM state (its stateDir; default /var/lib/membrane/cni/membrane): at start a pod veth the
                agent has no record of is adopted when its pod is there, removed only when it is not, else left alone
  --node-ip     this node's underlay address (reserved:host in the ipcache, never a tunnel endpoint), or as the kubelet's
                flag a dual-stack pair IPv4,IPv6 (the chart passes status.hostIPs): the first is the node's address, and the
                DNS and L7 proxies listen on its IPv4 address for IPv4 pods and on its IPv6 address for IPv6 pods (an IPv6
                pod's flow to a proxy is dropped on a node without one; an IPv6-only node's IPv4 pods' likewise). A pair makes
                the node dual-stack as Cilium's: an address outside the ipcache is reserved:world-ipv4 / reserved:world-ipv6
                by its family (toEntities [world-ipv4] reaches it), else reserved:world in both
  --proxy-ipv6-address  the address the proxies listen on for IPv6 pods (default: the IPv6 address of --node-ip)
  --netns       the network namespace (name) holding the pods' host-side veths (default: the agent's own)
  --hubble-socket    the observer: Hubble's Observer gRPC API (membrane observe, hubble observe --server unix://PATH) on this unix socket
                     (default /run/membrane/hubble.sock)
  --hubble-listen-address  also serve it on TCP HOST:PORT, always with mutual TLS: --hubble-tls-cert/--hubble-tls-key
                     (the server certificate) and --hubble-tls-client-ca (the CA of its clients, e.g. the relay) are required
  --hubble-export-file-path  also write every flow in Hubble's exporter format (JSON lines of GetFlowsResponse) to this file
  --hubble-export-file-max-size-mb, --hubble-export-file-max-backups  its rotation (default 10 MiB, 5 files)
  --hubble-export-allowlist, --hubble-export-denylist  FlowFilter JSON objects (proto field names), as Hubble's
  --hubble-export-fieldmask  the fields to keep, comma- or space-separated paths (source.identity, l4, …)
  --hubble-export-fieldaggregate, --hubble-export-aggregation-interval  Hubble's aggregation: flows agreeing on these
                     fields (paths as for the field mask) written as one with their counts every interval ("30s"); both or neither
  --hubble-flowlogs-config-path  Hubble's dynamic exporter: a YAML file of named flow logs (Cilium's format: name, filePath,
                     fieldMask, includeFilters, excludeFilters, fileMaxSizeMb, fileMaxBackups, fileCompress, end), read again every 10 s
  --hubble-metrics   Hubble's metric families on /metrics and their options, as Cilium's flag: space-separated
                     NAME[:OPTION;OPTION=VALUE] of flow, drop, policy, dns (query, ignoreAAAA), http or httpV2, with
                     sourceContext/destinationContext=pod|ip|…, labelsContext=source_namespace,… (default "${DEFAULT_HUBBLE_METRICS}")
  --enable-hubble-open-metrics  serve /metrics in OpenMetrics (for a scraper that asks for it, as Cilium's flag): the
                     hubble_http_* samples carry the trace id of a traced request (W3C traceparent) as an exemplar
  --hubble-redact-enabled  redact L7 flows as the options below say (default true here; Cilium's is false)
  --hubble-redact-http-urlquery  drop the query of HTTP flows' URLs (default false)
  --hubble-redact-http-userinfo  replace a URL's user-info password with HUBBLE_REDACTED (default true)
  --hubble-redact-http-headers-allow NAMES, --hubble-redact-http-headers-deny NAMES  comma-separated header names: with
                     allow, every other header's value is HUBBLE_REDACTED; with deny, those named (not both). Authorization,
                     Proxy-Authorization, Cookie and Set-Cookie are redacted unless allow names them, redaction on or off
  --hubble-dynamic-metrics-config-path  Hubble's dynamic metrics: a YAML file (Cilium's format: metrics: name, contextOptions
                     [{name, values}], includeFilters, excludeFilters as FlowFilters) of the families to count and the flows each
                     counts, read again every 10 s (a change re-registers them); not together with --hubble-metrics
  --flow-export-path  also write every flow as JSON lines to this file (node-agent/observer/README.md; alias --flow-export)
  --flow-export-max-size-mib  rotate the export file before it grows past N MiB (default 10; or --flow-export-max-bytes)
  --flow-export-max-backups   rotated export files kept besides the live one (default 5; alias --flow-export-files)
  --flow-export-compress      gzip rotated export files (true|false, default false)
  --metrics-address  Prometheus /metrics, /healthz and /readyz (default ${DEFAULT_METRICS_ADDRESS})
  --health-port      the same on 127.0.0.1:PORT (what the chart's probes use); not with --metrics-address
  --kubeconfig       API access for publishing health on this node's CiliumNode (default: in-cluster when
                     KUBERNETES_SERVICE_HOST is set, else health is not published; enforcement never depends on it)
  --lease-namespace  where the agent renews its heartbeat Lease membrane-agent-NODE, as kubelets do theirs
                     (default ${AGENT_LEASE_NAMESPACE})
  --policy-enforcement-mode  default: a direction is enforced once a policy selects the endpoint in it;
                     always: every endpoint enforced both ways, selected or not; never: nothing enforced (default: default)
  --policy-audit-mode  policy audit mode for the whole node: packets policy would drop pass and are reported with
                     verdict AUDIT (flows, metrics); other drops (malformed, spoofed, ...) stay drops. Also per node or pod
                     by the annotation ${AUDIT_MODE_ANNOTATION}: "true" on the Node or a Pod (needs API access)
  --monitor-aggregation  which packets of allowed connections the datapath reports (drops always are):
                     none: every packet; low: the new connection, its first reply and each side's FIN/RST;
                     medium: one event per new connection; maximum: none (default: ${DEFAULT_MONITOR_AGGREGATION})
  --policy-map-max  entries the node's policy map holds, every local identity's compiled policy together (Cilium's
                     bpf-policy-map-max; ${POLICY_MAP_MAX_RANGE.min}..${POLICY_MAP_MAX_RANGE.max}, default: the datapath's ${DEFAULT_POLICY_MAP_ENTRIES}). An identity whose
                     policy does not fit fails closed (drop reason POLICY_OVERFLOW). Changed across a restart, the pinned
                     map is replaced by one of the new size with its entries copied; a size below the entries it holds
                     is refused. The kernel charges ~16 bytes a slot (rounded up to a power of two) at start, and
                     ~100 bytes an entry in use, to the agent's memory
  --allow-localhost  the node's own connections to its pods (the kubelet's probes, hostNetwork pods), as Cilium's flag:
                     always: they pass whatever the pods' ingress policy says, as Kubernetes demands; policy: that
                     policy judges them as reserved:host's (fromEntities: host); auto: always (default: auto)
  --cni-bin-dir      install the membrane-cni launcher into this directory at start
  --token-file       the pod's projected ServiceAccount token (audience membrane-operator), sent on each connect;
                     for an operator run with --agent-auth token (the chart)
  --host-firewall-device  enforce host policies (CCNP nodeSelector) on this node device (repeatable: external
                     interfaces, the overlay device), for traffic to and from --node-ip (required with it); what the
                     cluster needs is always allowed (the lock-out guard: the operator stream, the API server port,
                     VXLAN 8472 and WireGuard 51871 between nodes, ICMP echo between nodes)
  --host-firewall-api-server-port  the API server's port the guard keeps open (default 6443)
  --node-device      the node's underlay devices, where the agent attaches the node device's programs (the L7 proxy's
                     connections to and answers for pods on other nodes go into the tunnel there), as Cilium's --devices:
                     comma-separated names, a trailing + a prefix wildcard (eth+); links a wildcard matches later get them
                     when they appear (the agent watches links), never the pods' links, lo or the --tunnel-device; default:
                     the device holding --node-ip, else the one its route leaves by; none: attach nothing (and detach what
                     an earlier agent attached). A restart adopts the attached programs (never a second copy)
  --tunnel-device    the VXLAN overlay device pod packets to other nodes leave by, with their identity in the VNI (Cilium's
                     cilium_vxlan; the chart passes membrane_vxlan unless routingMode is native): made in the node's namespace
                     when missing (collect-metadata, UDP 8472, MTU of the underlay less 50, marked as made by the agent) or
                     adopted when a collect-metadata device of that name on 8472 is there, from-overlay attached on it; a
                     link of that name that is not such a device, or another VXLAN device holding 8472, is refused. An
                     uninstall removes it only if an agent made it. Absent: the agent makes none (a node without one, and
                     without WireGuard routing, drops pod packets to other nodes as no-tunnel-device)
  --cni-conf-dir     write ${"05-membrane.conflist"} here once the node's pod CIDR is known (from its CiliumNode)
  --enable-dns-proxy  the DNS proxy that enforces DNS rules and learns toFQDNs addresses (default true when --node-ip
                     is given: it listens on that address; without a proxy the node enforces neither, and policy status says so)
  --tofqdns-min-ttl  an answer's TTL is raised to at least this many seconds (default 0: the server's TTL)
  --tofqdns-max-ips-per-hostname  addresses kept per name, the first to expire go (default 1000; Cilium's
                     --tofqdns-endpoint-max-ip-per-hostname is the same flag)
  --tofqdns-dns-reject-response-code  the answer to a denied query: refused (default) or nameError (NXDOMAIN)
  --tofqdns-idle-connection-grace-period  how long an expired name's addresses stay allowed before they are
                     forgotten, unless a connection to them lives (default 5s)
  --enable-l7-proxy  the L7 proxy (membrane l7proxy, a process of its own that outlives agent restarts) that enforces
                     HTTP rules (default true when --node-ip is given: it listens on that address; without it the node
                     does not enforce HTTP rules, and policy status says so); its files are l7proxy.* in --state-dir
  --external-l7-proxy  the L7 proxy is a process of its own that the agent does not start or end (Cilium's
                     --external-envoy-proxy; the chart's membrane-l7proxy DaemonSet, \`membrane l7proxy --agent-socket\`): the
                     agent listens on ${CONFIG_SOCKET_NAME} in --l7-proxy-socket-dir, sends the proxy each configuration (again
                     whenever it connects: after an agent or a proxy restart) and receives its flows on ${EXTERNAL_FLOW_SOCKET_NAME}
                     there. The proxy outlives agent pods (delete, upgrade); while none is connected its ports fail closed and
                     the status says so (default false: the agent starts the proxy itself, which dies with the agent's container)
  --l7-proxy-socket-dir  where the agent and an external proxy meet (default ${DEFAULT_L7_PROXY_SOCKET_DIR}; a host directory
                     both pods mount)
  --http-normalize-path  the L7 proxy judges and forwards a request's path normalized as Cilium's Envoy does (RFC 3986
                     dot segments and unreserved escapes, \\ as /, merged slashes; an escaped slash %2F/%5C gets a 307 to the
                     unescaped path). Default true, as Cilium's. false: paths are judged and forwarded as sent, and a
                     path rule can be passed by a path the destination reads otherwise (/public/../admin): only with care
  --enable-runtime   run the runtime enforcer (membrane runtime, a process of its own that outlives agent restarts) on
                     the TracingPolicies the operator sends and this node's pods, and report each policy's status
                     (default false: TracingPolicy status then says EnforcerNotRunning for this node); its files are
                     runtime* in --state-dir. It watches every process of the host kernel: one per kernel
  --external-runtime  the runtime enforcer is a process of its own that the agent does not start, restart or end (the
                     chart's membrane-runtime DaemonSet, as Tetragon runs its own pods): it reads the policy and pods files
                     the agent writes in --state-dir (a host directory both pods mount) and writes its pid and status
                     files there, so deleting or upgrading the agent's pod leaves its enforcement alone (default false:
                     the agent starts it, and its container's end kills it)
  --runtime-bpf-scope  the runtime enforcer's pin scope (its --bpf-scope): the agent starts it with it and removes what it
                     left pinned there (default ${DEFAULT_RUNTIME_BPF_SCOPE}, the runtime's own; the process-based local cluster gives
                     its own, so a test's runtime never touches another's pins)
  --bpf-lb-sock      translate Services' ClusterIPs at this node's pods' sockets (Cilium's socket LB): connect and
                     sendmsg go straight to a ready backend (from the Services and EndpointSlices the agent watches), so
                     policy, conntrack and flows see the backend pod; replies and getpeername show the ClusterIP. A
                     Service port with no ready endpoint refuses the connect. NodePort, external traffic policy and
                     session affinity stay kube-proxy's (default false). Needs API access
  --cgroup-root      the host's cgroup v2 directory: the translation's programs attach there, and the runtime enforcer's
                     connect programs and containers' cgroups are found there (default ${CGROUP2_ROOT}; the chart mounts the host's)
  --owner-daemonset  the agent's own DaemonSet (the chart's): when it is gone or being deleted as the agent stops (helm
                     uninstall, kubectl delete), the agent removes what Membrane put on the node (programs, pinned maps, its
                     state, a runtime or L7 proxy it started, the overlay and WireGuard devices; the CNI plugin and conflist stay for
                     the pods' DEL); any other stop
                     (rolling upgrade, pod deleted, restart) keeps all of it, so enforcement goes on while no agent runs.
                     Needs API access and get/list/watch on that DaemonSet (default: none, the state always stays)
  --encryption       transparent encryption of cross-node pod traffic (default disabled). ipsec: the agent probes the
                     kernel for ESP in its namespace and reports EncryptionReady on its CiliumNode (KernelLacksESP here).
                     wireguard: a wireguard-go device in the node's namespace (its key pair in --state-dir, the public
                     key on the CiliumNode, a peer per other node). Needs API access
  --encryption-strict  cross-node traffic without a working tunnel is dropped, never sent in clear
  --wireguard-go     the userspace WireGuard binary (default: wireguard-go on PATH)
  --wireguard-routing  routed (default): pod packets to a node whose pod CIDRs are known go into the device as they are,
                     each peer's allowed IPs its pod CIDRs, and the receiving node takes the source identity from its
                     ipcache (pod MTU 1420); vxlan: the VXLAN overlay, identity in the VNI, inside the tunnel (pod MTU 1370)
`;

export interface AgentFlags {
  readonly nodeName: string;
  readonly operator: string;
  /** The name the operator's certificate must carry when `operator` is dialled by address. */
  readonly operatorServerName?: string;
  readonly tlsCert: string;
  readonly tlsKey: string;
  readonly tlsCa: string;
  readonly bpfScope: string;
  readonly cniSocket: string;
  /** --cni-identity-wait in ms: how long a CNI ADD waits for the pod's identity and policy (agent.ts). */
  readonly cniIdentityWaitMs: number;
  readonly stateDir: string;
  /** The CNI plugin's IPAM state dir, read at start to adopt the pods it wired while the agent was away. */
  readonly cniStateDir: string;
  readonly netns?: string;
  readonly nodeIP?: string;
  /** --node-ip names an IPv4 and an IPv6 address (Cilium's dual-stack): the datapath gives an address outside the ipcache its family's world identity (9/10), else reserved:world (2). */
  readonly dualStack: boolean;
  /** Where the DNS and L7 proxies listen and the datapath steers to: the IPv4 and IPv6 addresses of --node-ip (or --proxy-ipv6-address); absent without either. */
  readonly proxyAddresses?: ProxyAddresses;
  /** The node devices (--node-device: names and prefix wildcards); null: none; absent: detected from --node-ip. */
  readonly nodeDevices?: readonly DeviceSelector[] | null;
  /** The VXLAN overlay device the agent makes (when missing) or adopts and attaches from-overlay on (--tunnel-device); absent: none. */
  readonly tunnelDevice?: string;
  readonly logLevel: string;
  readonly hubbleSocket: string;
  readonly hubbleExport?: HubbleExportOptions;
  /** Hubble's dynamic exporter config file (`--hubble-flowlogs-config-path`). */
  readonly hubbleFlowLogs?: string;
  /** Hubble's dynamic metrics file (`--hubble-dynamic-metrics-config-path`), which replaces --hubble-metrics. */
  readonly hubbleDynamicMetrics?: string;
  /** `--enable-hubble-open-metrics`: /metrics in OpenMetrics, the http family's samples with trace-id exemplars. */
  readonly hubbleOpenMetrics?: boolean;
  /** Hubble's metric families and their context options (`--hubble-metrics`). */
  readonly hubbleMetrics: ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>;
  /** What of an HTTP request its L7 flows carry off the node (`--hubble-redact-*`). */
  readonly httpRedaction: HttpRedaction;
  readonly hubbleTcp?: { readonly address: string; readonly cert: string; readonly key: string; readonly clientCa: string };
  readonly flowExport?: { readonly path: string; readonly maxBytes: number; readonly keep: number; readonly compress: boolean };
  readonly metricsAddress: string;
  readonly kubeconfig?: string;
  /** Where the heartbeat Lease lives (`membrane status` reads it there). */
  readonly leaseNamespace: string;
  readonly policyEnforcementMode: PolicyEnforcementMode;
  readonly policyAuditMode: boolean;
  readonly monitorAggregation: MonitorAggregation;
  /** --policy-map-max: the policy map's size (absent: the datapath object's). */
  readonly policyMapMax?: number;
  /** --allow-localhost policy: the node's own connections to its pods are judged by their ingress policy (default: they pass). */
  readonly localhostPolicy: boolean;
  readonly cniBinDir?: string;
  readonly cniConfDir?: string;
  readonly tokenFile?: string;
  /** Host firewall devices and the API server port its lock-out guard keeps open. */
  readonly hostFirewall?: { readonly devices: readonly string[]; readonly apiServerPort: number };
  readonly encryption: AgentEncryptionMode;
  readonly encryptionStrict: boolean;
  readonly wireguardGo: string;
  readonly wireguardRouting: WireguardRouting;
  /** The DNS proxy (on --node-ip), absent when off. */
  readonly dnsProxy?: { readonly cache: FqdnCacheOptions; readonly rejectCode: RejectCode };
  /** The L7 proxy runs (on --node-ip). */
  readonly l7Proxy: boolean;
  /** The L7 proxy is a process of its own (`--external-l7-proxy`), met over sockets in this directory; absent: the agent starts it. */
  readonly l7ProxyExternal?: { readonly socketDir: string };
  /** The L7 proxy normalizes request paths before judging and forwarding them (`--http-normalize-path`, default true). */
  readonly httpNormalizePath: boolean;
  /** The runtime enforcer runs (TracingPolicies). */
  readonly runtime: boolean;
  /** It runs as a process the agent does not start or end (`--external-runtime`: the chart's membrane-runtime pod). */
  readonly runtimeExternal: boolean;
  /** The runtime's pin scope (`--runtime-bpf-scope`); absent: the runtime's default. */
  readonly runtimeBpfScope?: string;
  /** --cgroup-root as given: the host's cgroup v2 directory (the runtime's connect programs and containers' cgroups too). */
  readonly cgroupRoot?: string;
  /** ClusterIP translation at the pods' sockets (`--bpf-lb-sock`), its programs on this cgroup v2 directory; absent when off. */
  readonly socketLB?: { readonly cgroupRoot: string };
  /** The agent's own DaemonSet (`--owner-daemonset`): its removal at the agent's stop means uninstall (uninstall.ts). */
  readonly ownerDaemonSet?: { readonly namespace: string; readonly name: string };
}

const REDACT_BOOLEANS = ["--hubble-redact-enabled", "--hubble-redact-http-urlquery", "--hubble-redact-http-userinfo"];

/** Hubble's redaction flags (Cilium's names and meaning; Membrane's defaults: core/l7/redaction.ts). */
function redactionFlags(str: (f: string) => string | undefined): RedactionResult {
  const d = DEFAULT_HTTP_REDACTION;
  const bool = (f: string, fallback: boolean): boolean | string => {
    const v = str(f);
    if (v === undefined) return fallback;
    return v === "true" ? true : v === "false" ? false : `--${f}: must be true or false, got ${JSON.stringify(v)}`;
  };
  const enabled = bool("hubble-redact-enabled", d.enabled);
  const urlQuery = bool("hubble-redact-http-urlquery", d.urlQuery);
  const userInfo = bool("hubble-redact-http-userinfo", d.userInfo);
  for (const b of [enabled, urlQuery, userInfo]) if (typeof b === "string") return { ok: false, error: b };
  const names = (f: string) => parseHeaderNames(`--${f}`, str(f) ?? "");
  const allow = names("hubble-redact-http-headers-allow");
  if (!allow.ok) return allow;
  const deny = names("hubble-redact-http-headers-deny");
  if (!deny.ok) return deny;
  return httpRedaction({ enabled: enabled as boolean, urlQuery: urlQuery as boolean, userInfo: userInfo as boolean, headers: { allow: allow.value, deny: deny.value } });
}

/** Parses the flags; errors name the flag. */
export function parseAgentFlags(args: readonly string[]): { ok: true; flags: AgentFlags } | { ok: false; error: string } {
  // A boolean flag, also as Cilium's --policy-audit-mode=true|false.
  const audit = /^--policy-audit-mode=(.*)$/;
  const badAudit = args.map((a) => audit.exec(a)?.[1]).find((v) => v !== undefined && v !== "true" && v !== "false");
  if (badAudit !== undefined) return { ok: false, error: `--policy-audit-mode: must be true or false, got ${JSON.stringify(badAudit)}` };
  const normalised = args.flatMap((a) =>
    a === "--policy-audit-mode=true" ? ["--policy-audit-mode"] : a === "--policy-audit-mode=false" ? [] : a === "--enable-dns-proxy" ? ["--enable-dns-proxy=true"] : a === "--enable-l7-proxy" ? ["--enable-l7-proxy=true"] : a === "--external-l7-proxy" ? ["--external-l7-proxy=true"] : a === "--http-normalize-path" ? ["--http-normalize-path=true"] : a === "--enable-runtime" ? ["--enable-runtime=true"] : a === "--external-runtime" ? ["--external-runtime=true"] : a === "--bpf-lb-sock" ? ["--bpf-lb-sock=true"] : a === "--enable-hubble-open-metrics" ? ["--enable-hubble-open-metrics=true"] : REDACT_BOOLEANS.includes(a) ? [`${a}=true`] : [a],
  );
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args: normalised,
      options: {
        "node-name": { type: "string" },
        operator: { type: "string" },
        "operator-server-name": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-ca": { type: "string" },
        "bpf-scope": { type: "string" },
        "cni-socket": { type: "string" },
        "cni-identity-wait": { type: "string" },
        "state-dir": { type: "string" },
        "cni-state-dir": { type: "string" },
        netns: { type: "string" },
        "node-ip": { type: "string" },
        "proxy-ipv6-address": { type: "string" },
        "node-device": { type: "string" },
        "tunnel-device": { type: "string" },
        "log-level": { type: "string" },
        "hubble-socket": { type: "string" },
        "hubble-export-file-path": { type: "string" },
        "hubble-flowlogs-config-path": { type: "string" },
        "hubble-dynamic-metrics-config-path": { type: "string" },
        "hubble-export-file-max-size-mb": { type: "string" },
        "hubble-export-file-max-backups": { type: "string" },
        "hubble-export-allowlist": { type: "string" },
        "hubble-export-denylist": { type: "string" },
        "hubble-export-fieldmask": { type: "string" },
        "hubble-export-fieldaggregate": { type: "string" },
        "hubble-export-aggregation-interval": { type: "string" },
        "hubble-metrics": { type: "string" },
        "hubble-listen-address": { type: "string" },
        "hubble-tls-cert": { type: "string" },
        "hubble-tls-key": { type: "string" },
        "hubble-tls-client-ca": { type: "string" },
        "flow-export": { type: "string" },
        "flow-export-max-bytes": { type: "string" },
        "flow-export-files": { type: "string" },
        "flow-export-path": { type: "string" },
        "flow-export-max-size-mib": { type: "string" },
        "flow-export-max-backups": { type: "string" },
        "flow-export-compress": { type: "string" },
        "metrics-address": { type: "string" },
        "health-port": { type: "string" },
        kubeconfig: { type: "string" },
        "lease-namespace": { type: "string" },
        "policy-enforcement-mode": { type: "string" },
        "policy-audit-mode": { type: "boolean" },
        "monitor-aggregation": { type: "string" },
        "policy-map-max": { type: "string" },
        "allow-localhost": { type: "string" },
        "cni-bin-dir": { type: "string" },
        "token-file": { type: "string" },
        "host-firewall-device": { type: "string", multiple: true },
        "host-firewall-api-server-port": { type: "string" },
        "cni-conf-dir": { type: "string" },
        encryption: { type: "string" },
        "encryption-strict": { type: "boolean" },
        "wireguard-go": { type: "string" },
        "wireguard-routing": { type: "string" },
        "enable-dns-proxy": { type: "string" },
        "enable-hubble-open-metrics": { type: "string" },
        "hubble-redact-enabled": { type: "string" },
        "hubble-redact-http-urlquery": { type: "string" },
        "hubble-redact-http-userinfo": { type: "string" },
        "hubble-redact-http-headers-allow": { type: "string" },
        "hubble-redact-http-headers-deny": { type: "string" },
        "enable-l7-proxy": { type: "string" },
        "external-l7-proxy": { type: "string" },
        "l7-proxy-socket-dir": { type: "string" },
        "http-normalize-path": { type: "string" },
        "enable-runtime": { type: "string" },
        "external-runtime": { type: "string" },
        "runtime-bpf-scope": { type: "string" },
        "bpf-lb-sock": { type: "string" },
        "cgroup-root": { type: "string" },
        "owner-daemonset": { type: "string" },
        "tofqdns-min-ttl": { type: "string" },
        "tofqdns-max-ips-per-hostname": { type: "string" },
        "tofqdns-endpoint-max-ip-per-hostname": { type: "string" },
        "tofqdns-dns-reject-response-code": { type: "string" },
        "tofqdns-idle-connection-grace-period": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    return { ok: false, error: flagError(err) };
  }
  if (values.help) return { ok: false, error: "" };
  for (const f of ["node-name", "operator", "tls-cert", "tls-key", "tls-ca"]) {
    if (typeof values[f] !== "string" || values[f] === "") return { ok: false, error: `--${f}: required` };
  }
  const str = (f: string): string | undefined => (typeof values[f] === "string" ? (values[f] as string) : undefined);
  const operator = str("operator")!;
  const unexpanded = /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/.exec(operator);
  if (unexpanded) {
    return {
      ok: false,
      error: `--operator: ${JSON.stringify(operator)} still holds $(${unexpanded[1]}): the kubelet sets that variable only for a Service that existed when the pod was created, in a pod with enableServiceLinks; create the operator Service first, then delete this pod`,
    };
  }
  if (parseHostPort(operator) === undefined) return { ok: false, error: `--operator: must be HOST:PORT, got ${JSON.stringify(operator)}` };
  const nodeName = str("node-name")!;
  const scope = str("bpf-scope") ?? nodeName;
  if (!/^[A-Za-z0-9._-]+$/.test(scope)) return { ok: false, error: `--bpf-scope: must be letters, digits, '.', '_' or '-', got ${JSON.stringify(scope)}` };
  const netns = str("netns");
  const nodeIPs = nodeIPFlags(str("node-ip"), str("proxy-ipv6-address"));
  if (typeof nodeIPs === "string") return { ok: false, error: nodeIPs };
  const { nodeIP, proxyAddresses, dualStack } = nodeIPs;
  const hubbleSocket = str("hubble-socket") ?? "/run/membrane/hubble.sock";
  if (hubbleSocket === "") return { ok: false, error: "--hubble-socket: must be a path" };
  const hubbleExport = hubbleExportFlags(str);
  if (typeof hubbleExport === "string") return { ok: false, error: hubbleExport };
  const hubbleMetrics = parseHubbleMetrics(str("hubble-metrics") ?? DEFAULT_HUBBLE_METRICS);
  if (!hubbleMetrics.ok) return { ok: false, error: `--hubble-metrics: ${hubbleMetrics.error}` };
  const openMetrics = str("enable-hubble-open-metrics");
  if (openMetrics !== undefined && openMetrics !== "true" && openMetrics !== "false") return { ok: false, error: `--enable-hubble-open-metrics: must be true or false, got ${JSON.stringify(openMetrics)}` };
  const redaction = redactionFlags(str);
  if (!redaction.ok) return { ok: false, error: redaction.error };
  const dynamicMetrics = str("hubble-dynamic-metrics-config-path");
  if (dynamicMetrics === "") return { ok: false, error: "--hubble-dynamic-metrics-config-path: must be a path" };
  // As Cilium's agent: one source of metric families, never two.
  if (dynamicMetrics !== undefined && str("hubble-metrics") !== undefined) return { ok: false, error: "--hubble-dynamic-metrics-config-path: not together with --hubble-metrics" };
  // In canonical form (`[v6]:port`, `v4:port`), so the chart can write `[$(HOST_IP)]:PORT` for a node of either family.
  const hubbleListenAt = str("hubble-listen-address");
  const hubbleListenParts = hubbleListenAt === undefined ? undefined : parseHostPort(hubbleListenAt);
  const hubbleListen = hubbleListenParts === undefined ? hubbleListenAt : hostPort(hubbleListenParts.host, hubbleListenParts.port);
  const hubbleTlsFlags = ["hubble-tls-cert", "hubble-tls-key", "hubble-tls-client-ca"] as const;
  if (hubbleListen === undefined) {
    for (const t of hubbleTlsFlags) if (str(t) !== undefined) return { ok: false, error: `--${t}: only with --hubble-listen-address` };
  } else {
    if (parseHostPort(hubbleListen) === undefined) return { ok: false, error: `--hubble-listen-address: must be HOST:PORT, got ${JSON.stringify(hubbleListen)}` };
    // TCP is never served without mutual TLS: fail closed rather than expose every flow of the node.
    for (const t of hubbleTlsFlags) if (!str(t)) return { ok: false, error: `--${t}: required with --hubble-listen-address (TCP is served with mutual TLS only)` };
  }
  // The chart's names and the older ones are both accepted; giving both for one setting is a mistake.
  const either = (a: string, b: string): { flag: string; value: string | undefined } | string => {
    if (str(a) !== undefined && str(b) !== undefined) return `--${b}: not together with --${a} (the same setting)`;
    return str(b) !== undefined ? { flag: b, value: str(b) } : { flag: a, value: str(a) };
  };
  const exportFlag = either("flow-export-path", "flow-export");
  if (typeof exportFlag === "string") return { ok: false, error: exportFlag };
  const exportPath = exportFlag.value;
  const integer = (f: string, min: number): number | undefined | string => {
    const v = str(f);
    if (v === undefined) return undefined;
    if (exportPath === undefined) return `--${f}: only with --flow-export-path`;
    return /^\d+$/.test(v) && Number(v) >= min && Number.isSafeInteger(Number(v)) ? Number(v) : `--${f}: must be an integer >= ${min}, got ${JSON.stringify(v)}`;
  };
  const sizeFlag = either("flow-export-max-size-mib", "flow-export-max-bytes");
  if (typeof sizeFlag === "string") return { ok: false, error: sizeFlag };
  const size = integer(sizeFlag.flag, 1);
  if (typeof size === "string") return { ok: false, error: size };
  const maxBytes = size === undefined ? 10 * 1024 * 1024 : sizeFlag.flag === "flow-export-max-size-mib" ? size * 1024 * 1024 : size;
  const keepFlag = either("flow-export-max-backups", "flow-export-files");
  if (typeof keepFlag === "string") return { ok: false, error: keepFlag };
  const keep = integer(keepFlag.flag, 0) ?? 5;
  if (typeof keep === "string") return { ok: false, error: keep };
  if (exportPath === "") return { ok: false, error: `--${exportFlag.flag}: must be a path` };
  const compressFlag = str("flow-export-compress");
  if (compressFlag !== undefined && exportPath === undefined) return { ok: false, error: "--flow-export-compress: only with --flow-export-path" };
  if (compressFlag !== undefined && compressFlag !== "true" && compressFlag !== "false") return { ok: false, error: `--flow-export-compress: must be true or false, got ${JSON.stringify(compressFlag)}` };
  const compress = compressFlag === "true";
  const healthPort = str("health-port");
  if (healthPort !== undefined && str("metrics-address") !== undefined) return { ok: false, error: "--health-port: not together with --metrics-address (the same server)" };
  if (healthPort !== undefined && !(/^\d{1,5}$/.test(healthPort) && Number(healthPort) <= 65535)) return { ok: false, error: `--health-port: must be a port number 0..65535, got ${JSON.stringify(healthPort)}` };
  const metricsAddress = healthPort !== undefined ? `127.0.0.1:${Number(healthPort)}` : (str("metrics-address") ?? DEFAULT_METRICS_ADDRESS);
  if (!parseHostPort(metricsAddress)) return { ok: false, error: `--metrics-address: must be HOST:PORT, got ${JSON.stringify(metricsAddress)}` };
  const mode = str("policy-enforcement-mode") ?? "default";
  if (!isPolicyEnforcementMode(mode)) return { ok: false, error: `--policy-enforcement-mode: must be one of ${POLICY_ENFORCEMENT_MODES.join(", ")}, got ${JSON.stringify(mode)}` };
  const monitorAggregation = str("monitor-aggregation") ?? DEFAULT_MONITOR_AGGREGATION;
  if (!isMonitorAggregation(monitorAggregation)) return { ok: false, error: `--monitor-aggregation: must be one of ${MONITOR_AGGREGATION_LEVELS.join(", ")}, got ${JSON.stringify(monitorAggregation)}` };
  const policyMapMax = str("policy-map-max");
  const { min: mapMin, max: mapMax } = POLICY_MAP_MAX_RANGE;
  if (policyMapMax !== undefined && !(/^\d+$/.test(policyMapMax) && Number(policyMapMax) >= mapMin && Number(policyMapMax) <= mapMax)) {
    return { ok: false, error: `--policy-map-max: must be an integer ${mapMin}..${mapMax}, got ${JSON.stringify(policyMapMax)}` };
  }
  const allowLocalhost = str("allow-localhost") ?? "auto";
  if (!["auto", "always", "policy"].includes(allowLocalhost)) return { ok: false, error: `--allow-localhost: must be one of auto, always, policy, got ${JSON.stringify(allowLocalhost)}` };
  for (const f of ["kubeconfig", "cni-bin-dir", "cni-conf-dir"]) if (str(f) === "") return { ok: false, error: `--${f}: must be a path` };
  const kubeconfig = str("kubeconfig");
  const leaseNamespace = str("lease-namespace") ?? AGENT_LEASE_NAMESPACE;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(leaseNamespace)) return { ok: false, error: `--lease-namespace: must be a namespace name (lowercase letters, digits, '-'), got ${JSON.stringify(leaseNamespace)}` };
  const cniBinDir = str("cni-bin-dir");
  const cniConfDir = str("cni-conf-dir");
  const devicesFlag = values["host-firewall-device"];
  const hostDevices = Array.isArray(devicesFlag) ? devicesFlag : [];
  const apiPortText = str("host-firewall-api-server-port");
  if (apiPortText !== undefined && hostDevices.length === 0) return { ok: false, error: "--host-firewall-api-server-port: only with --host-firewall-device" };
  if (hostDevices.some((d) => !/^[A-Za-z0-9._@-]{1,15}$/.test(d))) return { ok: false, error: `--host-firewall-device: must be an interface name, got ${JSON.stringify(hostDevices.find((d) => !/^[A-Za-z0-9._@-]{1,15}$/.test(d)))}` };
  if (hostDevices.length > 0 && nodeIP === undefined) return { ok: false, error: "--host-firewall-device: needs --node-ip (the address whose traffic is the host's)" };
  if (apiPortText !== undefined && !(/^\d{1,5}$/.test(apiPortText) && Number(apiPortText) >= 1 && Number(apiPortText) <= 65535)) return { ok: false, error: `--host-firewall-api-server-port: must be a port number 1..65535, got ${JSON.stringify(apiPortText)}` };
  const nodeDeviceText = str("node-device");
  const nodeDevices = nodeDeviceText === undefined || nodeDeviceText === "none" ? undefined : parseDeviceList(nodeDeviceText);
  if (nodeDevices && !nodeDevices.ok) return { ok: false, error: `--node-device: ${nodeDevices.error} (names and prefix+ wildcards, comma-separated, or none)` };
  const tunnelDevice = str("tunnel-device");
  if (tunnelDevice !== undefined && !/^[A-Za-z0-9._@-]{1,15}$/.test(tunnelDevice)) return { ok: false, error: `--tunnel-device: must be an interface name, got ${JSON.stringify(tunnelDevice)}` };
  const encryption = str("encryption") ?? "disabled";
  if (!(ENCRYPTION_MODES as readonly string[]).includes(encryption)) return { ok: false, error: `--encryption: must be one of ${ENCRYPTION_MODES.join(", ")}, got ${JSON.stringify(encryption)}` };
  const encryptionStrict = values["encryption-strict"] === true;
  if (encryptionStrict && encryption !== "wireguard") return { ok: false, error: "--encryption-strict: only with --encryption wireguard (the mode whose traffic can flow here)" };
  const wireguardGo = str("wireguard-go");
  if (wireguardGo !== undefined && encryption !== "wireguard") return { ok: false, error: "--wireguard-go: only with --encryption wireguard" };
  if (wireguardGo === "") return { ok: false, error: "--wireguard-go: must be a path" };
  const wireguardRouting = str("wireguard-routing");
  if (wireguardRouting !== undefined && encryption !== "wireguard") return { ok: false, error: "--wireguard-routing: only with --encryption wireguard" };
  if (wireguardRouting !== undefined && !(WIREGUARD_ROUTINGS as readonly string[]).includes(wireguardRouting)) return { ok: false, error: `--wireguard-routing: must be one of ${WIREGUARD_ROUTINGS.join(", ")}, got ${JSON.stringify(wireguardRouting)}` };
  const dnsProxy = dnsProxyFlags(str, proxyAddresses);
  if (typeof dnsProxy === "string") return { ok: false, error: dnsProxy };
  const l7Proxy = l7ProxyFlag(str("enable-l7-proxy"), proxyAddresses);
  if (typeof l7Proxy === "string") return { ok: false, error: l7Proxy };
  const l7ProxyExternal = externalL7ProxyFlags(str("external-l7-proxy"), str("l7-proxy-socket-dir"), l7Proxy);
  if (typeof l7ProxyExternal === "string") return { ok: false, error: l7ProxyExternal };
  const normalizePath = str("http-normalize-path");
  if (normalizePath !== undefined && normalizePath !== "true" && normalizePath !== "false") return { ok: false, error: `--http-normalize-path: must be true or false, got ${JSON.stringify(normalizePath)}` };
  const operatorServerName = str("operator-server-name");
  if (operatorServerName !== undefined && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(operatorServerName)) return { ok: false, error: `--operator-server-name: a DNS name is required, got ${JSON.stringify(operatorServerName)}` };
  const cniStateDir = str("cni-state-dir");
  if (cniStateDir !== undefined && !path.isAbsolute(cniStateDir)) return { ok: false, error: `--cni-state-dir: an absolute path is required, got ${JSON.stringify(cniStateDir)}` };
  const runtimeFlag = str("enable-runtime");
  if (runtimeFlag !== undefined && runtimeFlag !== "true" && runtimeFlag !== "false") return { ok: false, error: `--enable-runtime: must be true or false, got ${JSON.stringify(runtimeFlag)}` };
  const runtimeExternal = str("external-runtime");
  if (runtimeExternal !== undefined && runtimeExternal !== "true" && runtimeExternal !== "false") return { ok: false, error: `--external-runtime: must be true or false, got ${JSON.stringify(runtimeExternal)}` };
  if (runtimeExternal === "true" && runtimeFlag !== "true") return { ok: false, error: "--external-runtime: the runtime enforcer is off (--enable-runtime)" };
  const runtimeBpfScope = str("runtime-bpf-scope");
  const badRuntimeScope = runtimeBpfScope !== undefined ? checkRuntimeBpfScope("--runtime-bpf-scope", runtimeBpfScope) : undefined;
  if (badRuntimeScope !== undefined) return { ok: false, error: badRuntimeScope };
  const socketLB = str("bpf-lb-sock");
  if (socketLB !== undefined && socketLB !== "true" && socketLB !== "false") return { ok: false, error: `--bpf-lb-sock: must be true or false, got ${JSON.stringify(socketLB)}` };
  const cgroupRoot = str("cgroup-root");
  if (cgroupRoot !== undefined && !path.isAbsolute(cgroupRoot)) return { ok: false, error: `--cgroup-root: an absolute path is required, got ${JSON.stringify(cgroupRoot)}` };
  const identityWaitText = str("cni-identity-wait") ?? `${DEFAULT_IDENTITY_WAIT_MS / 1000}s`;
  const cniIdentityWaitMs = parseDuration(identityWaitText);
  if (cniIdentityWaitMs === undefined || cniIdentityWaitMs < 0 || cniIdentityWaitMs > MAX_IDENTITY_WAIT_MS)
    return { ok: false, error: `--cni-identity-wait: must be a duration from 0s to ${MAX_IDENTITY_WAIT_MS / 1000}s such as 5s, got ${JSON.stringify(identityWaitText)}` };
  const owner = str("owner-daemonset");
  const ownerMatch = owner === undefined ? undefined : /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(owner);
  if (owner !== undefined && !ownerMatch) return { ok: false, error: `--owner-daemonset: must be NAMESPACE/NAME, got ${JSON.stringify(owner)}` };
  return {
    ok: true,
    flags: {
      nodeName,
      operator,
      ...(operatorServerName !== undefined ? { operatorServerName } : {}),
      tlsCert: str("tls-cert")!,
      tlsKey: str("tls-key")!,
      tlsCa: str("tls-ca")!,
      bpfScope: scope,
      cniSocket: str("cni-socket") ?? "/run/membrane/agent.sock",
      cniIdentityWaitMs,
      stateDir: str("state-dir") ?? "/var/lib/membrane/agent",
      cniStateDir: cniStateDir ?? path.join(DEFAULT_STATE_ROOT, NETWORK_NAME),
      ...(netns ? { netns } : {}),
      ...(nodeIP ? { nodeIP } : {}),
      dualStack,
      ...(proxyAddresses ? { proxyAddresses } : {}),
      ...(nodeDeviceText === "none" ? { nodeDevices: null } : nodeDevices?.ok ? { nodeDevices: nodeDevices.value } : {}),
      ...(tunnelDevice !== undefined ? { tunnelDevice } : {}),
      logLevel: str("log-level") ?? "info",
      hubbleSocket,
      ...(hubbleExport ? { hubbleExport } : {}),
      ...(str("hubble-flowlogs-config-path") ? { hubbleFlowLogs: str("hubble-flowlogs-config-path")! } : {}),
      ...(dynamicMetrics !== undefined ? { hubbleDynamicMetrics: dynamicMetrics } : {}),
      ...(openMetrics === "true" ? { hubbleOpenMetrics: true } : {}),
      httpRedaction: redaction.value,
      hubbleMetrics: hubbleMetrics.value,
      ...(hubbleListen !== undefined
        ? { hubbleTcp: { address: hubbleListen, cert: str("hubble-tls-cert")!, key: str("hubble-tls-key")!, clientCa: str("hubble-tls-client-ca")! } }
        : {}),
      ...(exportPath !== undefined ? { flowExport: { path: exportPath, maxBytes, keep, compress } } : {}),
      metricsAddress,
      ...(kubeconfig ? { kubeconfig } : {}),
      leaseNamespace,
      policyEnforcementMode: mode,
      policyAuditMode: values["policy-audit-mode"] === true,
      monitorAggregation,
      ...(policyMapMax !== undefined ? { policyMapMax: Number(policyMapMax) } : {}),
      localhostPolicy: allowLocalhost === "policy",
      ...(cniBinDir ? { cniBinDir } : {}),
      ...(cniConfDir ? { cniConfDir } : {}),
      ...(str("token-file") ? { tokenFile: str("token-file")! } : {}),
      encryption: encryption as AgentEncryptionMode,
      encryptionStrict,
      wireguardGo: wireguardGo ?? "wireguard-go",
      wireguardRouting: (wireguardRouting ?? "routed") as WireguardRouting,
      ...(dnsProxy ? { dnsProxy } : {}),
      l7Proxy,
      ...(l7ProxyExternal ? { l7ProxyExternal } : {}),
      httpNormalizePath: normalizePath !== "false",
      runtime: runtimeFlag === "true",
      runtimeExternal: runtimeExternal === "true",
      ...(runtimeBpfScope !== undefined ? { runtimeBpfScope } : {}),
      ...(cgroupRoot !== undefined ? { cgroupRoot } : {}),
      ...(socketLB === "true" ? { socketLB: { cgroupRoot: cgroupRoot ?? CGROUP2_ROOT } } : {}),
      ...(ownerMatch ? { ownerDaemonSet: { namespace: ownerMatch[1]!, name: ownerMatch[3]! } } : {}),
      ...(hostDevices.length > 0 ? { hostFirewall: { devices: hostDevices, apiServerPort: apiPortText !== undefined ? Number(apiPortText) : 6443 } } : {}),
    },
  };
}

/** An integer flag of at least `min` (`dflt` when not given), or the error naming it. */
function integerFlag(str: (f: string) => string | undefined, f: string, min: number, dflt: number): number | string {
  const v = str(f);
  if (v === undefined) return dflt;
  return /^\d+$/.test(v) && Number(v) >= min && Number.isSafeInteger(Number(v)) ? Number(v) : `--${f}: must be an integer >= ${min}, got ${JSON.stringify(v)}`;
}

/**
 * --node-ip (one address, or an IPv4,IPv6 pair as the kubelet's flag) and --proxy-ipv6-address: the node's
 * address (the first), the proxies' addresses per family and whether the node is dual-stack (a pair); a string
 * naming the flag when one is wrong.
 */
export function nodeIPFlags(text: string | undefined, proxy6: string | undefined): { nodeIP?: string; proxyAddresses?: ProxyAddresses; dualStack: boolean } | string {
  if (proxy6 !== undefined && !net.isIPv6(proxy6)) return `--proxy-ipv6-address: must be an IPv6 address, got ${JSON.stringify(proxy6)}`;
  if (text === undefined) return proxy6 !== undefined ? { proxyAddresses: { address6: proxy6 }, dualStack: false } : { dualStack: false };
  const ips = text.split(",").map((a) => a.trim());
  if (ips.length > 2 || ips.some((a) => net.isIP(a) === 0)) return `--node-ip: must be an IP address or an IPv4,IPv6 pair, got ${JSON.stringify(text)}`;
  const v4 = ips.filter((a) => net.isIPv4(a));
  const v6 = ips.filter((a) => net.isIPv6(a));
  if (v4.length > 1 || v6.length > 1) return `--node-ip: a pair must be one IPv4 and one IPv6 address, got ${JSON.stringify(text)}`;
  const address6 = proxy6 ?? v6[0];
  return { nodeIP: ips[0]!, proxyAddresses: { ...(v4[0] !== undefined ? { address: v4[0] } : {}), ...(address6 !== undefined ? { address6 } : {}) }, dualStack: v4.length === 1 && v6.length === 1 };
}

/** Whether the L7 proxy runs (Cilium's --enable-l7-proxy): by default when there is a node address to listen on; a string naming the flag when it cannot. */
function l7ProxyFlag(enable: string | undefined, addresses: ProxyAddresses | undefined): boolean | string {
  if (enable !== undefined && enable !== "true" && enable !== "false") return `--enable-l7-proxy: must be true or false, got ${JSON.stringify(enable)}`;
  if (enable === "false") return false;
  if (addresses === undefined) return enable === "true" ? "--enable-l7-proxy: needs --node-ip (the address the proxy listens on)" : false;
  return true;
}

/**
 * Whether the L7 proxy is a process of its own the agent does not start (Cilium's --external-envoy-proxy, the chart's
 * membrane-l7proxy DaemonSet) and where the two meet; undefined when the agent starts it; a string naming the flag when wrong.
 */
function externalL7ProxyFlags(external: string | undefined, socketDir: string | undefined, l7Proxy: boolean): AgentFlags["l7ProxyExternal"] | string {
  if (external !== undefined && external !== "true" && external !== "false") return `--external-l7-proxy: must be true or false, got ${JSON.stringify(external)}`;
  if (external !== "true") return socketDir !== undefined ? "--l7-proxy-socket-dir: only with --external-l7-proxy (the agent's own proxy uses --state-dir)" : undefined;
  if (!l7Proxy) return "--external-l7-proxy: the L7 proxy is off (--enable-l7-proxy=false, or no --node-ip to steer to)";
  if (socketDir === "") return "--l7-proxy-socket-dir: must be a directory";
  if (socketDir !== undefined && !path.isAbsolute(socketDir)) return `--l7-proxy-socket-dir: must be an absolute path (the proxy's pod mounts the same host directory), got ${JSON.stringify(socketDir)}`;
  return { socketDir: socketDir ?? DEFAULT_L7_PROXY_SOCKET_DIR };
}

/** The DNS proxy's flags, with Cilium's names; undefined when the proxy is off, a string naming the flag when one is wrong. */
function dnsProxyFlags(str: (f: string) => string | undefined, addresses: ProxyAddresses | undefined): AgentFlags["dnsProxy"] | string {
  const enable = str("enable-dns-proxy");
  if (enable !== undefined && enable !== "true" && enable !== "false") return `--enable-dns-proxy: must be true or false, got ${JSON.stringify(enable)}`;
  const tuning = ["tofqdns-min-ttl", "tofqdns-max-ips-per-hostname", "tofqdns-endpoint-max-ip-per-hostname", "tofqdns-dns-reject-response-code", "tofqdns-idle-connection-grace-period"];
  if (enable === "false") {
    const given = tuning.find((f) => str(f) !== undefined);
    return given ? `--${given}: not with --enable-dns-proxy=false` : undefined;
  }
  if (addresses === undefined) {
    if (enable === "true") return "--enable-dns-proxy: needs --node-ip (the address the proxy listens on)";
    return undefined; // the default follows --node-ip
  }
  const int = (f: string, min: number, dflt: number): number | string => integerFlag(str, f, min, dflt);
  const minTtl = int("tofqdns-min-ttl", 0, 0);
  if (typeof minTtl === "string") return minTtl;
  if (str("tofqdns-max-ips-per-hostname") !== undefined && str("tofqdns-endpoint-max-ip-per-hostname") !== undefined) {
    return "--tofqdns-endpoint-max-ip-per-hostname: not together with --tofqdns-max-ips-per-hostname (the same setting)";
  }
  const maxFlag = str("tofqdns-endpoint-max-ip-per-hostname") !== undefined ? "tofqdns-endpoint-max-ip-per-hostname" : "tofqdns-max-ips-per-hostname";
  const maxIps = int(maxFlag, 1, 1000);
  if (typeof maxIps === "string") return maxIps;
  const reject = str("tofqdns-dns-reject-response-code") ?? "refused";
  if (reject !== "refused" && reject !== "nameError") return `--tofqdns-dns-reject-response-code: must be refused or nameError, got ${JSON.stringify(reject)}`;
  const graceText = str("tofqdns-idle-connection-grace-period") ?? "5s";
  const graceMs = parseDuration(graceText);
  if (graceMs === undefined) return `--tofqdns-idle-connection-grace-period: must be a duration such as 5s or 1m, got ${JSON.stringify(graceText)}`;
  return { cache: { minTtlSeconds: minTtl, maxAddressesPerName: maxIps, graceSeconds: graceMs / 1000 }, rejectCode: reject };
}

/** Hubble's exporter flags, with Cilium's names. */
function hubbleExportFlags(str: (f: string) => string | undefined): HubbleExportOptions | undefined | string {
  const path = str("hubble-export-file-path");
  const others = [
    "hubble-export-file-max-size-mb",
    "hubble-export-file-max-backups",
    "hubble-export-allowlist",
    "hubble-export-denylist",
    "hubble-export-fieldmask",
    "hubble-export-fieldaggregate",
    "hubble-export-aggregation-interval",
  ];
  if (path === undefined) {
    const given = others.find((f) => str(f) !== undefined);
    return given ? `--${given}: only with --hubble-export-file-path` : undefined;
  }
  if (path === "") return "--hubble-export-file-path: must be a path";
  const int = (f: string, min: number, dflt: number): number | string => integerFlag(str, f, min, dflt);
  const size = int("hubble-export-file-max-size-mb", 1, 10);
  if (typeof size === "string") return size;
  const keep = int("hubble-export-file-max-backups", 0, 5);
  if (typeof keep === "string") return keep;
  const lists: { allowList?: HubbleExportOptions["allowList"]; denyList?: HubbleExportOptions["denyList"] } = {};
  for (const [flag, key] of [["hubble-export-allowlist", "allowList"], ["hubble-export-denylist", "denyList"]] as const) {
    const v = str(flag);
    if (v === undefined || v.trim() === "") continue;
    const p = parseFilterList(flag, v);
    if (!p.ok) return p.error;
    lists[key] = p.filters;
  }
  const paths = (flag: string): string[] | string => {
    const ps = (str(flag) ?? "").split(/[\s,]+/).filter((x) => x !== "");
    const bad = ps.find((p) => !/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(p));
    return bad === undefined ? ps : `--${flag}: ${JSON.stringify(bad)} is not a field path`;
  };
  const mask = paths("hubble-export-fieldmask");
  if (typeof mask === "string") return mask;
  // Aggregation, Cilium's flags: both or neither (one alone would do nothing).
  const aggregate = paths("hubble-export-fieldaggregate");
  if (typeof aggregate === "string") return aggregate;
  const intervalText = str("hubble-export-aggregation-interval");
  const intervalMs = intervalText === undefined ? 0 : parseDuration(intervalText);
  if (intervalMs === undefined) return `--hubble-export-aggregation-interval: not a duration ("30s", "1m"), got ${JSON.stringify(intervalText)}`;
  if (aggregate.length > 0 && intervalMs <= 0) return "--hubble-export-aggregation-interval: required (more than 0s) with --hubble-export-fieldaggregate";
  if (aggregate.length === 0 && intervalMs > 0) return "--hubble-export-fieldaggregate: required with --hubble-export-aggregation-interval";
  return {
    file: { path, maxBytes: size * 1024 * 1024, keep },
    ...lists,
    ...(mask.length > 0 ? { fieldMask: mask } : {}),
    ...(aggregate.length > 0 ? { aggregate: { fields: aggregate, intervalMs } } : {}),
  };
}

/** HOST:PORT with an IPv6 host in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
