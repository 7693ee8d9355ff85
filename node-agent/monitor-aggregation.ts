// Monitor aggregation (Cilium's --monitor-aggregation): which packets of allowed connections the datapath reports.
// Drops are reported at every level; the level reaches the programs through the config map (no recompiling).

/**
 * `none`: every packet of an allowed connection, in every program it passes (debugging; the most events);
 * `low`: per connection, the packets that show something new in their direction: the new connection,
 *   the first reply (a SYN-ACK), each side's first FIN, an RST (Cilium's medium with
 *   `--monitor-aggregation-flags all`, without its periodic report);
 * `medium`: one event per new connection, when policy allows it (the default, as Cilium's);
 * `maximum`: no events for allowed connections; drops only.
 */
export type MonitorAggregation = "none" | "low" | "medium" | "maximum";

export const MONITOR_AGGREGATION_LEVELS: readonly MonitorAggregation[] = ["none", "low", "medium", "maximum"];

export const DEFAULT_MONITOR_AGGREGATION: MonitorAggregation = "medium";

export function isMonitorAggregation(v: string): v is MonitorAggregation {
  return (MONITOR_AGGREGATION_LEVELS as readonly string[]).includes(v);
}
