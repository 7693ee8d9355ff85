// `membrane agent`: parses the flags, loads the datapath and runs the node agent until SIGTERM/SIGINT.
import fs from "node:fs";
import path from "node:path";
import { type Logger, pino } from "pino";
import { Datapath, PolicyMapTooSmall } from "./bpf/datapath.ts";
import { AgentDns } from "./dns/agent-dns.ts";
import { AgentL7 } from "./l7proxy/agent-l7.ts";
import { AgentRuntime } from "./runtime/agent-runtime.ts";
import { PodContainersWatch } from "./runtime/pod-containers.ts";
import { runtimeEventSource } from "./runtime/event-relay.ts";
import { DnsProxyMetrics } from "./dns/dns-metrics.ts";
import type { DnsFlow } from "./dns/proxy.ts";
import { FQDN_CACHE_PATH, fqdnCacheListing } from "../core/dns/cache-list.ts";
import type { EnrichLookups } from "./observer/enrich.ts";
import { NodeAgent } from "./agent.ts";
import { AgentMetrics } from "./metrics.ts";
import { parseHostPort } from "../core/cidr.ts";
import { CiliumNodeHealth, agentHeartbeat } from "./health.ts";
import { installCniPlugin, writeCniConflist } from "./cni-install.ts";
import { UNDERLAY_MTU, podMtu } from "./mtu.ts";
import { applyEndpointMtu } from "./endpoint-mtu.ts";
import { KubeClient } from "../kube/kube.ts";
import { onTermination, shutdownStep } from "../kube/shutdown.ts";
import { BPFFS_ROOT } from "./bpf/loader.ts";
import { type AgentEncryption, startEncryption } from "./encryption/mode.ts";
import { AuditModeWatch } from "./audit-mode.ts";
import { PodIdentityWatch } from "./pod-identity-watch.ts";
import { nodePodsInformer } from "./node-pods.ts";
import { NodeLabelsWatch } from "./node-labels.ts";
import { ServiceTranslator } from "./services/translator.ts";
import { ServiceWatch } from "./services/service-watch.ts";
import { HostFirewall, lockOutGuard } from "./hostfw.ts";
import { NodeDevice } from "./node-device.ts";
import { formatDeviceList } from "../core/devices.ts";
import { removeOverlayDevice, startOverlayDevice } from "./overlay-device.ts";
import { OwnDaemonSet, removeNodeState } from "./uninstall.ts";
import { OVERLAY_VXLAN_PORT } from "./encryption/mode.ts";
import { removeWireguard } from "./encryption/wireguard-removal.ts";
import { USAGE, hostPort, parseAgentFlags, type AgentFlags } from "./flags.ts";

export async function run(args: string[]): Promise<number> {
  const parsed = parseAgentFlags(args);
  if (!parsed.ok) {
    process.stderr.write(parsed.error ? `membrane agent: ${parsed.error}\n\n${USAGE}` : USAGE);
    return parsed.error ? 2 : 0;
  }
  const f = parsed.flags;
  const log = pino({ level: f.logLevel, base: { component: "agent" } });
  let tls: { ca: Buffer; cert: Buffer; key: Buffer; serverName?: string };
  try {
    tls = { ca: fs.readFileSync(f.tlsCa), cert: fs.readFileSync(f.tlsCert), key: fs.readFileSync(f.tlsKey), ...(f.operatorServerName ? { serverName: f.operatorServerName } : {}) };
  } catch (err) {
    process.stderr.write(`membrane agent: reading the TLS files: ${(err as Error).message}\n`);
    return 1;
  }
  let hubbleTcp: { address: string; cert: Buffer; key: Buffer; clientCa: Buffer } | undefined;
  try {
    const t = f.hubbleTcp;
    if (t) hubbleTcp = { address: t.address, cert: fs.readFileSync(t.cert), key: fs.readFileSync(t.key), clientCa: fs.readFileSync(t.clientCa) };
  } catch (err) {
    process.stderr.write(`membrane agent: reading the Hubble TLS files: ${(err as Error).message}\n`);
    return 1;
  }
  // The runtime enforcer first, from the files the last agent wrote (its policies and pods), when none runs (the agent's
  // pod was deleted with it): its file and exec hooks lapse while no runtime runs, and need not wait for the datapath,
  // the endpoints and the proxies; the agent's start then writes its own state into those files and adopts it.
  const runtime = f.runtime ? new AgentRuntime({ stateDir: f.stateDir, nodeName: f.nodeName, log, ...(f.runtimeBpfScope !== undefined ? { bpfScope: f.runtimeBpfScope } : {}), ...(f.cgroupRoot !== undefined ? { cgroupRoot: f.cgroupRoot } : {}), ...(f.runtimeExternal ? { external: true } : {}) }) : undefined;
  runtime?.startFromLastState();
  let datapath: Datapath;
  try {
    datapath = Datapath.load(f.bpfScope, f.policyMapMax !== undefined ? { policyMapEntries: f.policyMapMax } : {});
    datapath.setMonitorAggregation(f.monitorAggregation);
    datapath.setLocalhostPolicy(f.localhostPolicy);
    datapath.setDualStack(f.dualStack);
  } catch (err) {
    const error = err instanceof PolicyMapTooSmall ? `--policy-map-max: ${err.message}` : (err as Error).message;
    log.error({ scope: f.bpfScope, error }, "loading the datapath failed");
    return 1;
  }
  // The proxy's own metrics exist once the agent's registry does.
  let onDnsFlow: (flow: DnsFlow) => void = () => undefined;
  const dns =
    f.dnsProxy && f.proxyAddresses
      ? new AgentDns({
          datapath,
          ...(f.proxyAddresses.address !== undefined ? { proxyAddress: f.proxyAddresses.address } : {}),
          ...(f.proxyAddresses.address6 !== undefined ? { proxyAddress6: f.proxyAddresses.address6 } : {}),
          stateFile: path.join(f.stateDir, "fqdn-cache.json"),
          cache: f.dnsProxy.cache,
          rejectCode: f.dnsProxy.rejectCode,
          ...(f.netns ? { netns: f.netns } : {}),
          onFlow: (flow) => onDnsFlow(flow),
          log,
        })
      : undefined;
  const l7 =
    f.l7Proxy && f.proxyAddresses
      ? new AgentL7({
          datapath: datapath.redirect,
          stateDir: f.stateDir,
          ...f.proxyAddresses,
          bpfScope: f.bpfScope,
          httpNormalizePath: f.httpNormalizePath,
          // The proxy's sockets and marks are the node's: started in its network namespace (nsenter execs in place, same pid).
          ...(f.netns ? { launcher: ["nsenter", `--net=/var/run/netns/${f.netns}`] } : {}),
          // Or a proxy of its own (the chart's membrane-l7proxy pod) that connects to the agent's socket there.
          ...(f.l7ProxyExternal ? { external: { socketDir: f.l7ProxyExternal.socketDir, log } } : {}),
          log,
        })
      : undefined;
  const agent = new NodeAgent({
    nodeName: f.nodeName,
    operator: f.operator,
    tls,
    datapath,
    cniSocket: f.cniSocket,
    // The pod's identity comes from its pod object: without the API nothing could arrive within the wait.
    identityWaitMs: f.kubeconfig || process.env.KUBERNETES_SERVICE_HOST ? f.cniIdentityWaitMs : 0,
    endpointsFile: path.join(f.stateDir, "endpoints.json"),
    cniStateDir: f.cniStateDir,
    appliedFile: path.join(f.stateDir, "applied.json"),
    podMtu: {
      mtu: podMtu(f.encryption, UNDERLAY_MTU, f.wireguardRouting),
      mismatched: (ep) => void applyEndpointMtu([ep], podMtu(f.encryption, UNDERLAY_MTU, f.wireguardRouting), { ...(f.netns ? { netns: f.netns } : {}), log }),
    },
    policyEnforcementMode: f.policyEnforcementMode,
    policyAuditMode: f.policyAuditMode,
    ...(f.hostFirewall && f.nodeIP
      ? {
          hostFirewall: new HostFirewall({
            datapath,
            devices: f.hostFirewall.devices,
            ...(f.netns ? { netns: f.netns } : {}),
            addresses: [f.nodeIP],
            guard: lockOutGuard({ operator: f.operator, apiServerPort: f.hostFirewall.apiServerPort }),
            log,
          }),
        }
      : {}),
    ...(f.tokenFile ? { tokenFile: f.tokenFile } : {}),
    ...(f.netns ? { netns: f.netns } : {}),
    ...(f.nodeIP ? { nodeIP: f.nodeIP } : {}),
    ...(dns ? { dns } : {}),
    ...(l7 ? { l7 } : {}),
    ...(runtime ? { runtime } : {}),
    observer: {
      // The runtime's process events beside the flows: the same addresses and TLS (flowapi/process-events.ts).
      hubble: { socketPath: f.hubbleSocket, ...(hubbleTcp ? { tcp: hubbleTcp } : {}), ...(runtime ? { processEvents: runtimeEventSource(() => runtime.address()) } : {}) },
      ...(f.hubbleExport ? { hubbleExport: f.hubbleExport } : {}),
      ...(f.hubbleFlowLogs ? { flowLogs: { path: f.hubbleFlowLogs } } : {}),
      ...(f.flowExport ? { export: f.flowExport } : {}),
    },
    httpRedaction: f.httpRedaction,
    log,
  });
  let health: Awaited<ReturnType<typeof startHealth>>;
  const lookups = agent.enrichLookups();
  const routes = new Map([[FQDN_CACHE_PATH, () => fqdnCacheRoute(f.nodeName, dns, lookups)]]);
  const metrics = new AgentMetrics({ agent, datapath, log, hubbleMetrics: f.hubbleMetrics, ...(f.hubbleDynamicMetrics ? { hubbleMetricsFile: { path: f.hubbleDynamicMetrics } } : {}), ...(f.hubbleOpenMetrics ? { openMetrics: true } : {}), wireguard: () => health?.encryption?.wireguard?.stats(), routes });
  const dnsMetrics = dns ? new DnsProxyMetrics(metrics.registry) : undefined;
  // Hubble's dns metrics count the proxy's L7 flows through the observer (the agent records them there).
  onDnsFlow = (flow) => dnsMetrics?.observe(flow);
  if (!f.runtime) {
    // The enforcer switched off: a runtime an earlier agent left running would keep enforcing policies nobody updates.
    const stale = new AgentRuntime({ stateDir: f.stateDir, nodeName: f.nodeName, log, ...(f.runtimeBpfScope !== undefined ? { bpfScope: f.runtimeBpfScope } : {}) });
    if (stale.pid() !== undefined) log.info({ pid: stale.pid() }, "runtime enforcer left by an earlier agent stopped (--enable-runtime is off)");
    // Also when it is gone: its connect programs outlive it, pinned.
    await stale.shutdown();
  }
  try {
    fs.mkdirSync(path.dirname(f.hubbleSocket), { recursive: true });
    await agent.start();
  } catch (err) {
    log.error({ socket: f.cniSocket, hubble: f.hubbleSocket, metrics: f.metricsAddress, error: (err as Error).message }, "starting the agent failed");
    await metrics.stop();
    await agent.stop();
    datapath.close();
    return 1;
  }
  // After the agent's start (the maps hold the last state): the programs judge from the first packet as the pods' do.
  const nodeDevice = new NodeDevice({
    datapath,
    devices: f.nodeDevices,
    ...(f.nodeIP ? { nodeIP: f.nodeIP } : {}),
    ...(f.netns ? { netns: f.netns } : {}),
    hostFirewallDevices: f.hostFirewall?.devices ?? [],
    podIfindexes: () => agent.endpointLinks().map((l) => l.hostIfindex),
    ...(f.tunnelDevice !== undefined ? { tunnelDevice: f.tunnelDevice } : {}),
    stateFile: path.join(f.stateDir, "node-device.json"),
    log,
  });
  try {
    nodeDevice.start();
  } catch (err) {
    log.error({ devices: f.nodeDevices === undefined ? undefined : f.nodeDevices && formatDeviceList(f.nodeDevices), nodeIP: f.nodeIP, netns: f.netns, error: (err as Error).message }, "attaching the node device's programs failed");
    await metrics.stop();
    await agent.stop();
    datapath.close();
    return 1;
  }
  if (f.tunnelDevice !== undefined) {
    try {
      startOverlayDevice({ datapath, device: f.tunnelDevice, ...(f.netns ? { netns: f.netns } : {}), log });
    } catch (err) {
      log.error({ device: f.tunnelDevice, netns: f.netns, error: (err as Error).message }, "the overlay device failed");
      await metrics.stop();
      await agent.stop();
      datapath.close();
      return 1;
    }
  }
  // Pods wired before the mode changed (encryption turned on or off) get the MTU new pods get; a failure is logged per pod.
  const mtu = await applyEndpointMtu(agent.endpointLinks(), podMtu(f.encryption, UNDERLAY_MTU, f.wireguardRouting), { ...(f.netns ? { netns: f.netns } : {}), log });
  if (mtu.changed > 0 || mtu.failed > 0) log.info({ mtu: podMtu(f.encryption, UNDERLAY_MTU, f.wireguardRouting), ...mtu }, "endpoint MTUs set to the pod MTU of the agent's mode");
  // Like the observer, metrics are not enforcement: a taken port is logged, and the agent keeps enforcing.
  const metricsPort = await metrics.start(f.metricsAddress).catch((err: Error) => log.error({ address: f.metricsAddress, error: err.message }, "metrics not served"));
  const apiAddress = typeof metricsPort === "number" ? reachableAddress(parseHostPort(f.metricsAddress)!.host, metricsPort, f.nodeIP) : undefined;
  try {
    health = await startHealth(f, agent, datapath, log, apiAddress);
  } catch (err) {
    // Encryption was asked for and cannot start: say so loudly rather than carry traffic in clear.
    log.error({ encryption: f.encryption, error: (err as Error).message }, "starting encryption failed");
    await metrics.stop();
    await agent.stop();
    datapath.close();
    return 1;
  }
  // Links a --node-device wildcard matches later get the programs too (the watch scans once at its start: none is missed since).
  nodeDevice.watch();
  // The node's pods, listed and watched once for the three watches below (node-pods.ts), started once they all listen.
  const nodePods = health && nodePodsInformer(health.client, f.nodeName, log);
  // A CNI ADD waits for the claims it hands over (pod-identity-watch.ts).
  const podIdentityWatch = health && new PodIdentityWatch({ client: health.client, nodeName: f.nodeName, apply: (c) => agent.setPodIdentityClaims(c), log, ...(nodePods ? { pods: nodePods } : {}) });
  podIdentityWatch?.start();
  const heartbeat = health && agentHeartbeat({ client: health.client, nodeName: f.nodeName, namespace: f.leaseNamespace, log });
  heartbeat?.start();
  // Audit annotations need the API; without it only the flag decides (and enforcement never waits on it).
  const auditWatch = health && new AuditModeWatch({ client: health.client, nodeName: f.nodeName, apply: (a) => agent.setAuditAnnotations(a), log, ...(nodePods ? { pods: nodePods } : {}) });
  auditWatch?.start();
  // The runtime enforcer tells containers apart by the pods' container statuses (containerSelector, events' container).
  const containersWatch = health && runtime && new PodContainersWatch({ client: health.client, nodeName: f.nodeName, apply: (c) => agent.setPodContainers(c), log, ...(nodePods ? { pods: nodePods } : {}) });
  containersWatch?.start();
  nodePods?.start();
  // The node's labels on every flow (Hubble's node_labels filter); without the API flows carry none.
  const nodeLabelsWatch = health && new NodeLabelsWatch({ client: health.client, nodeName: f.nodeName, apply: (l) => agent.setNodeLabels(l), log });
  nodeLabelsWatch?.start();
  const socketLB = f.socketLB ? startSocketLB(f.socketLB.cgroupRoot, agent, health?.client, log) : undefined;
  // Uninstall is told apart from every other stop by the agent's own DaemonSet, watched from now on.
  const owner = health && f.ownerDaemonSet ? new OwnDaemonSet({ client: health.client, ...f.ownerDaemonSet, log }) : undefined;
  owner?.start();
  if (f.ownerDaemonSet && !owner) log.warn({ daemonset: f.ownerDaemonSet }, "no API access: an uninstall will leave this node's state in place");
  log.info({ operator: f.operator, scope: f.bpfScope, socket: f.cniSocket, netns: f.netns, policyEnforcementMode: f.policyEnforcementMode, policyAuditMode: f.policyAuditMode, monitorAggregation: f.monitorAggregation, allowLocalhost: f.localhostPolicy ? "policy" : "always", dualStack: f.dualStack }, "agent started");
  // Longer than the other processes' backstop: an uninstall's removal runs after the agent's own stop.
  const termination = onTermination(log, 8_000);
  const signal = await termination.signal;
  log.info({ signal }, "agent stopping");
  // Asked first, while the API client is still open.
  const uninstall = (await owner?.removed()) === true;
  await shutdownStep(log, "daemonset watch", 300, () => owner?.stop());
  // Each step bounded (an API server that stopped answering must not hold the node's agent); together under the backstop.
  await shutdownStep(log, "api watches", 600, () => Promise.all([heartbeat?.stop(), podIdentityWatch?.stop(), auditWatch?.stop(), containersWatch?.stop(), nodePods?.stop(), nodeLabelsWatch?.stop(), socketLB?.stop(), health?.health.stop()]));
  await shutdownStep(log, "encryption", 400, () => health?.encryption?.stop());
  await shutdownStep(log, "metrics server", 200, () => metrics.stop());
  nodeDevice.stop(); // before the datapath closes: a link appearing now waits for the next agent
  // An agent still stopping may still use the maps: its fds are then left to the exit.
  if (await shutdownStep(log, "agent", 1_200, () => agent.stop())) datapath.close(); // closes our fds only: the maps stay pinned and the programs attached
  if (uninstall) await removeFromNode(f, log, { ...(runtime ? { runtime } : {}), ...(l7 ? { l7 } : {}) });
  termination.dispose();
  log.flush();
  return 0;
}

/**
 * The uninstall (the agent's DaemonSet is gone): the processes that outlive agents by design are ended (the runtime
 * enforcer removes its programs at its SIGTERM), the WireGuard device goes, then the datapath's attachments, pins
 * and the agent's files (uninstall.ts; the CNI plugin and conflist stay, for the pods' DEL).
 */
async function removeFromNode(f: AgentFlags, log: Logger, started: { runtime?: AgentRuntime; l7?: AgentL7 }): Promise<void> {
  await shutdownStep(log, "runtime enforcer", 2_500, () => (started.runtime ?? new AgentRuntime({ stateDir: f.stateDir, nodeName: f.nodeName, log, ...(f.runtimeBpfScope !== undefined ? { bpfScope: f.runtimeBpfScope } : {}) })).shutdown());
  await shutdownStep(log, "L7 proxy", 1_000, () => started.l7?.shutdown());
  if (f.encryption === "wireguard") await shutdownStep(log, "WireGuard", 1_500, () => removeWireguard({ nodeName: f.nodeName, ...(f.netns ? { netns: f.netns } : {}), stateDir: f.stateDir, vxlanPort: OVERLAY_VXLAN_PORT, log }));
  // The overlay device (--tunnel-device) goes with the cluster's use of it, if an agent made it; one the node brought stays.
  if (f.tunnelDevice) {
    try {
      removeOverlayDevice({ device: f.tunnelDevice, ...(f.netns ? { netns: f.netns } : {}), log });
    } catch (err) {
      log.error({ device: f.tunnelDevice, netns: f.netns, error: (err as Error).message }, "removing the overlay device failed");
    }
  }
  try {
    removeNodeState({
      // The socket translation's scope is node-agent/services/translator.ts's default.
      pinDirs: [path.join(BPFFS_ROOT, f.bpfScope), ...(f.socketLB ? [path.join(BPFFS_ROOT, "services")] : [])],
      dirs: [f.stateDir, ...(f.l7ProxyExternal ? [f.l7ProxyExternal.socketDir] : [])],
      files: [f.cniSocket, f.hubbleSocket],
      log,
    });
  } catch (err) {
    log.error({ scope: f.bpfScope, error: (err as Error).message }, "removing the node's state failed");
  }
}

/**
 * The parts that need the node's filesystem or the API server, none of which enforcement waits on:
 * the CNI launcher, health on the CiliumNode, and the conflist (its pod CIDR is read from there).
 */
/** The FQDN cache listing (`membrane fqdn cache list`), sources named by their pods; 404 without a DNS proxy. */
function fqdnCacheRoute(node: string, dns: AgentDns | undefined, lookups: EnrichLookups): { status: number; body: unknown } {
  if (!dns) return { status: 404, body: { error: "the DNS proxy does not run on this node (--enable-dns-proxy needs --node-ip)" } };
  const podOf = (ip: string): string | undefined => {
    const ep = lookups.endpointByIp(ip);
    return ep ? `${ep.namespace}/${ep.pod}` : undefined;
  };
  return { status: 200, body: fqdnCacheListing(node, dns.service.fqdn.cache.entries(), Date.now(), podOf) };
}

/** HOST:PORT another host can use: a wildcard listen address becomes the node's own. */
function reachableAddress(host: string, port: number, nodeIP: string | undefined): string {
  return hostPort((host === "0.0.0.0" || host === "::") && nodeIP ? nodeIP : host, port);
}

/**
 * Service translation: the programs attached (or switched in place: the pinned table keeps translating meanwhile), its
 * scope following this node's endpoints, its table following the Services and EndpointSlices. A failure is logged
 * and leaves ClusterIPs to kube-proxy, judged as before (never an opening).
 */
function startSocketLB(cgroupRoot: string, agent: NodeAgent, client: KubeClient | undefined, log: Logger): { stop(): Promise<void> } | undefined {
  if (!client) {
    log.error({ flag: "--bpf-lb-sock" }, "service translation needs API access (--kubeconfig or in-cluster): ClusterIPs are left to kube-proxy");
    return undefined;
  }
  const translator = new ServiceTranslator({ log, cgroupPath: cgroupRoot });
  try {
    translator.start();
  } catch (err) {
    log.error({ cgroupRoot, error: (err as Error).message }, "service translation not attached: ClusterIPs are left to kube-proxy");
    return undefined;
  }
  let scope = "";
  const rescope = (): void => {
    const netns = agent.endpointLinks().flatMap((l) => (l.netns ? [l.netns] : [])).sort();
    if (netns.join("\n") === scope) return;
    scope = netns.join("\n");
    translator.setScope(netns);
  };
  rescope();
  const unsubscribe = agent.onStatus(rescope);
  const watch = new ServiceWatch({ client, translator, log });
  watch.start();
  return {
    stop: async () => {
      unsubscribe();
      await watch.stop();
      translator.close(); // the programs stay attached and the table pinned: an agent restart keeps translating
    },
  };
}

async function startHealth(f: AgentFlags, agent: NodeAgent, datapath: Datapath, log: Logger, apiAddress?: string): Promise<{ health: CiliumNodeHealth; client: KubeClient; encryption?: AgentEncryption } | undefined> {
  if (f.cniBinDir) {
    try {
      log.info({ file: installCniPlugin(f.cniBinDir) }, "CNI plugin installed");
    } catch (err) {
      log.error({ dir: f.cniBinDir, error: (err as Error).message }, "installing the CNI plugin failed; new pods cannot be wired on this node");
    }
  }
  let client: KubeClient;
  try {
    if (!f.kubeconfig && !process.env.KUBERNETES_SERVICE_HOST) throw new Error("no --kubeconfig and not in a cluster");
    client = await KubeClient.fromKubeconfig(f.kubeconfig);
  } catch (err) {
    log.warn({ kubeconfig: f.kubeconfig, error: (err as Error).message }, "no API access: health is not published on the CiliumNode");
    if (f.cniConfDir) log.error({ dir: f.cniConfDir }, "CNI conflist not written: the pod CIDR comes from the CiliumNode");
    if (f.encryption === "wireguard") throw new Error("--encryption wireguard needs API access (--kubeconfig or in-cluster): the peers are the other nodes' CiliumNodes", { cause: err });
    datapath.setEncryptionStrict(false);
    return undefined;
  }
  const encryption = await startEncryption(
    { mode: f.encryption, strict: f.encryptionStrict, nodeName: f.nodeName, ...(f.netns ? { netns: f.netns } : {}), stateDir: f.stateDir, wireguardGo: f.wireguardGo, wireguardRouting: f.wireguardRouting },
    client,
    datapath,
    log,
  );
  // Routed WireGuard: the other nodes' pods in the applied ipcache are their peers' allowed IPs, re-read whenever a state is applied.
  const wireguard = encryption?.wireguard;
  if (wireguard) {
    const syncRemotePods = (): void => void wireguard.setRemotePods(agent.remotePodPrefixes());
    agent.onStatus(syncRemotePods);
    syncRemotePods();
  }
  let writtenFor: { podCIDR: string; podCIDRv6: string | undefined } | undefined;
  const health = new CiliumNodeHealth({
    client,
    nodeName: f.nodeName,
    status: () => agent.status(),
    onStatus: (fn) => {
      const offAgent = agent.onStatus(fn);
      const offEncryption = encryption?.onChange(fn);
      return () => {
        offAgent();
        offEncryption?.();
      };
    },
    ...(encryption ? { encryption: () => encryption.publication() } : {}),
    datapath: `programs loaded, maps pinned under ${path.join(BPFFS_ROOT, f.bpfScope)}`,
    // The relay connects to the TCP address when there is one (another host), else to the socket.
    ...(apiAddress ? { agentApiAddress: () => apiAddress } : {}),
    hubbleAddress: () => {
      const a = agent.observer?.hubbleAddresses ?? [];
      const tcp = a.find((x) => !x.startsWith("unix:"));
      if (tcp === undefined) return a[0];
      // Listening on every address: the relay reaches it at the node's own.
      const hp = parseHostPort(tcp);
      return hp && (hp.host === "0.0.0.0" || hp.host === "::") && f.nodeIP ? `${f.nodeIP.includes(":") ? `[${f.nodeIP}]` : f.nodeIP}:${hp.port}` : tcp;
    },
    ...(f.cniConfDir
      ? {
          onPodCIDRs: (cidrs: readonly string[]) => {
            // A dual-stack node's CiliumNode has one CIDR of each family: its pods get an address of each.
            const podCIDR = cidrs.find((c) => !c.includes(":"));
            const podCIDRv6 = cidrs.find((c) => c.includes(":"));
            if (!podCIDR || (podCIDR === writtenFor?.podCIDR && podCIDRv6 === writtenFor.podCIDRv6)) return;
            try {
              const r = writeCniConflist(f.cniConfDir!, { podCIDR, ...(podCIDRv6 ? { podCIDRv6 } : {}), agentSocket: f.cniSocket, mtu: podMtu(f.encryption, UNDERLAY_MTU, f.wireguardRouting) });
              writtenFor = { podCIDR, podCIDRv6 };
              log.info({ file: r.file, podCIDR, podCIDRv6, changed: r.changed }, "CNI conflist written");
            } catch (err) {
              log.error({ dir: f.cniConfDir, podCIDR, error: (err as Error).message }, "writing the CNI conflist failed");
            }
          },
        }
      : {}),
    log,
  });
  health.start();
  return { health, client, ...(encryption ? { encryption } : {}) };
}
