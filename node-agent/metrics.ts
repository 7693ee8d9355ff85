// The agent's Prometheus metrics (its own registry) and health endpoints: /metrics, /healthz, /readyz on loopback.
import type { Logger } from "pino";
import { Counter, Gauge, Registry, type RegistryContentType } from "prom-client";
import { HealthServer, type JsonRoute } from "../kube/server.ts";
import type { Datapath } from "./bpf/datapath.ts";
import type { NodeAgent } from "./agent.ts";
import type { Flow } from "../flowapi/flow.ts";
import { parseHostPort } from "../core/cidr.ts";
import { HubbleMetrics } from "./observer/hubble-metrics.ts";
import type { WireguardStats } from "./encryption/wireguard.ts";
import type { HubbleMetricConfig, HubbleMetricFamily } from "./observer/hubble-context.ts";
import { watchMetricsConfig, type HubbleMetricsConfig } from "./observer/hubble-metrics-config.ts";
import type { WatchedConfigFile } from "./observer/config-file.ts";

export const DEFAULT_METRICS_ADDRESS = "127.0.0.1:9962";

export interface AgentMetricsOptions {
  readonly agent: NodeAgent;
  /** The kernel's per-CPU drop counters: the count of record, kept even when the event ring overflows. */
  readonly datapath: Pick<Datapath, "dropCounters"> & Partial<Pick<Datapath, "auditCounters">>;
  readonly log: Logger;
  /** The WireGuard device's counters, when the agent runs WireGuard encryption (read at scrape time). */
  readonly wireguard?: () => WireguardStats | undefined;
  /** Hubble's metric families and their context options (`--hubble-metrics`; default: every family, no context). */
  readonly hubbleMetrics?: ReadonlyMap<HubbleMetricFamily, HubbleMetricConfig>;
  /** Hubble's dynamic metrics file (`--hubble-dynamic-metrics-config-path`): its families replace `hubbleMetrics`, read again every 10 s. */
  readonly hubbleMetricsFile?: { readonly path: string; readonly reloadMs?: number };
  /** `--enable-hubble-open-metrics`: the registry speaks OpenMetrics and the http family carries trace-id exemplars. */
  readonly openMetrics?: boolean;
  /** Read-only JSON endpoints served beside /metrics (the FQDN cache listing), by path. */
  readonly routes?: ReadonlyMap<string, JsonRoute>;
}

/** The namespace of the endpoint whose policy judged the flow (destination on ingress, source on egress). */
function judgedNamespace(f: Flow): string {
  return (f.direction === "ingress" ? f.destination.namespace : f.source.namespace) ?? "";
}

/** Sets a counter to an absolute value read from elsewhere (the kernel, the observer) at scrape time. */
function setCounter<L extends string>(c: Counter<L>, values: Iterable<[Partial<Record<L, string>>, number]>): void {
  c.reset();
  for (const [labels, v] of values) c.inc(labels, v);
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly server: HealthServer;
  private unsubscribe: (() => void) | undefined;
  private unsubscribeHubble: (() => void) | undefined;
  private readonly hubbleConfigFile: WatchedConfigFile<HubbleMetricsConfig> | undefined;
  /**
   * Hubble's metrics (hubble_flows_processed_total, hubble_drop_total, hubble_policy_verdicts_total from every flow;
   * hubble_dns_*, hubble_http_* from the proxies' L7 flows, which the agent records in the observer as it does the datapath's).
   */
  readonly hubble: HubbleMetrics;
  /** Drops by the judged namespace, counted from the observer's flows (every drop is kept there). */
  private readonly droppedFlows: Counter<"reason" | "namespace">;

  constructor(private readonly opts: AgentMetricsOptions) {
    const { agent, datapath } = opts;
    const registers = [this.registry];
    // With the dynamic file no family counts until it is read (start()); a missing file means none, as Cilium's.
    // prom-client types a registry by its format; the same registry (and every user of its Prometheus type) serves either.
    if (opts.openMetrics === true) (this.registry as unknown as Registry<RegistryContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    this.hubble = new HubbleMetrics(this.registry, opts.hubbleMetricsFile ? new Map() : opts.hubbleMetrics, { openMetrics: opts.openMetrics === true });
    this.hubbleConfigFile = opts.hubbleMetricsFile && watchMetricsConfig({ ...opts.hubbleMetricsFile, apply: (c) => this.hubble.reconfigure(c), log: opts.log });
    new Counter({
      name: "membrane_agent_flows_total",
      help: "Verdict events seen by the observer, by verdict (FORWARDED, DROPPED, AUDIT); sampled-out forwarded flows included.",
      labelNames: ["verdict"] as const,
      registers,
      collect() {
        const c = agent.observer?.buffer.counters();
        setCounter(this, c ? [[{ verdict: "FORWARDED" }, c.forwarded], [{ verdict: "DROPPED" }, c.dropped], [{ verdict: "AUDIT" }, c.audited]] : []);
      },
    });
    new Counter({
      name: "membrane_agent_drops_total",
      help: "Packets dropped by the datapath, by reason, summed over the kernel's per-CPU counters.",
      labelNames: ["reason"] as const,
      registers,
      collect() {
        setCounter(this, Object.entries(datapath.dropCounters().byReason).map(([reason, n]) => [{ reason }, Number(n)]));
      },
    });
    const wg = opts.wireguard;
    new Gauge({
      name: "membrane_wireguard_peers",
      help: "Peers configured on the node's WireGuard device (other nodes with a published public key).",
      registers,
      collect() {
        const st = wg?.();
        this.reset();
        if (st) this.set(st.peers);
      },
    });
    new Gauge({
      name: "membrane_wireguard_device_up",
      help: "1 when the node's WireGuard device exists and is up.",
      registers,
      collect() {
        const st = wg?.();
        this.reset();
        if (st) this.set(st.up ? 1 : 0);
      },
    });
    new Gauge({
      name: "membrane_wireguard_last_handshake_seconds",
      help: "Unix time of the most recent handshake with any peer (absent before the first).",
      registers,
      collect() {
        const st = wg?.();
        this.reset();
        if (st?.lastHandshake) this.set(Date.parse(st.lastHandshake) / 1000);
      },
    });
    new Counter({
      name: "membrane_wireguard_bytes_total",
      help: "Bytes through the node's WireGuard device, summed over its peers, by direction (rx, tx).",
      labelNames: ["direction"] as const,
      registers,
      collect() {
        const st = wg?.();
        setCounter(this, st ? [[{ direction: "rx" }, st.rxBytes], [{ direction: "tx" }, st.txBytes]] : []);
      },
    });
    new Counter({
      name: "membrane_agent_policy_audits_total",
      help: "Packets policy would have dropped that policy audit mode let pass, by the drop's reason, summed over the kernel's per-CPU counters.",
      labelNames: ["reason"] as const,
      registers,
      collect() {
        setCounter(this, Object.entries(datapath.auditCounters?.() ?? {}).map(([reason, n]) => [{ reason }, Number(n)]));
      },
    });
    new Counter({
      name: "membrane_agent_lost_events_total",
      help: "Verdict events the datapath could not put in a full ring buffer (their drops are still counted in membrane_agent_drops_total).",
      registers,
      collect() {
        setCounter(this, [[{}, Number(datapath.dropCounters().lostEvents)]]);
      },
    });
    new Counter({
      name: "membrane_agent_observer_flows_not_kept_total",
      help: "Flows counted but no longer (evicted: pushed out of the ring by newer ones) or never (sampled_out: a forwarded flow of a connection kept less than the sample interval ago) in the observer's ring. Drops are never sampled out.",
      labelNames: ["why"] as const,
      registers,
      collect() {
        const c = agent.observer?.buffer.counters();
        setCounter(this, c ? [[{ why: "evicted" }, c.evicted], [{ why: "sampled_out" }, c.sampledOut]] : []);
      },
    });
    new Gauge({
      name: "membrane_agent_observer_flows_kept",
      help: "Flows in the observer's ring now (at most its capacity, the bound of its memory).",
      registers,
      collect() {
        this.set(agent.observer?.buffer.length ?? 0);
      },
    });
    this.droppedFlows = new Counter({
      name: "membrane_agent_dropped_flows_total",
      help: "Dropped flows seen by the observer, by reason and the namespace of the endpoint whose policy judged them (empty when not a pod).",
      labelNames: ["reason", "namespace"] as const,
      registers,
    });
    new Gauge({
      name: "membrane_agent_policy_map_entries",
      help: "Policy map entries of the applied state, over all subjects hosted on this node.",
      registers,
      collect() {
        this.set(agent.state().policies.reduce((n, p) => n + p.entries.length, 0));
      },
    });
    new Gauge({
      name: "membrane_agent_ipcache_entries",
      help: "ipcache entries of the applied state.",
      registers,
      collect() {
        this.set(agent.state().ipcache.length);
      },
    });
    new Gauge({
      name: "membrane_agent_endpoints",
      help: "Pod endpoints registered by the CNI plugin on this node.",
      registers,
      collect() {
        this.set(agent.status().endpoints);
      },
    });
    new Gauge({
      name: "membrane_agent_applied_version",
      help: "Version of the last state applied and ACKed (-1 before the first).",
      registers,
      collect() {
        this.set(agent.status().version ?? -1);
      },
    });
    new Gauge({
      name: "membrane_agent_stream_connected",
      help: "1 while the distribution stream to the operator is up.",
      registers,
      collect() {
        this.set(agent.status().connected ? 1 : 0);
      },
    });
    new Counter({
      name: "membrane_endpoint_policy_failures_total",
      help: "Times a pod endpoint started failing closed (all its traffic dropped, reason POLICY_OVERFLOW) because its identity's policy did not fit the policy map.",
      registers,
      collect() {
        setCounter(this, [[{}, agent.policyFailures().total]]);
      },
    });
    new Gauge({
      name: "membrane_endpoint_policy_failed_endpoints",
      help: "Pod endpoints failing closed now because their identity's policy does not fit the policy map.",
      registers,
      collect() {
        this.set(agent.policyFailures().failedEndpoints);
      },
    });
    this.server = new HealthServer(this.registry, () => this.ready(), opts.routes);
  }

  /** Ready once connected to the operator with a state applied. */
  ready(): boolean {
    const s = this.opts.agent.status();
    return s.connected && s.version !== undefined;
  }

  /** Subscribes to the agent's observer (start the agent first) and listens on `address` (HOST:PORT, port 0 picks one); returns the bound port. */
  async start(address: string = DEFAULT_METRICS_ADDRESS): Promise<number> {
    const a = parseHostPort(address);
    if (!a) throw new Error(`metrics address: must be HOST:PORT, got ${JSON.stringify(address)}`);
    this.unsubscribe = this.opts.agent.observer?.buffer.subscribe((f) => {
      if (f.verdict === "DROPPED") this.droppedFlows.inc({ reason: f.dropReason ?? "unknown", namespace: judgedNamespace(f) });
    });
    this.hubbleConfigFile?.start();
    this.unsubscribeHubble = this.opts.agent.observer?.onEveryFlow(this.hubble.observe);
    const port = await this.server.listen(a.port, a.host);
    this.opts.log.info({ address: `${a.host}:${port}` }, "metrics serving");
    return port;
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.unsubscribeHubble?.();
    this.unsubscribeHubble = undefined;
    this.hubbleConfigFile?.stop();
    await this.server.close();
  }
}
