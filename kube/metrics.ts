// The operator's Prometheus metrics, in one registry per operator instance.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export type NodeStreamState = "acked" | "behind" | "nacked" | "disconnected";

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: "membrane_operator_reconcile_total",
    help: "Reconciles by controller and result (success, error, requeue).",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: "membrane_operator_reconcile_errors_total",
    help: "Reconciles that failed and were retried with backoff.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "membrane_operator_reconcile_duration_seconds",
    help: "Time spent in one reconcile.",
    labelNames: ["controller"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: "membrane_operator_workqueue_depth",
    help: "Keys waiting in a controller's work queue.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly identities = new Gauge({
    name: "membrane_operator_identities",
    help: "CiliumIdentity objects known to the operator.",
    registers: [this.registry],
  });
  readonly policies = new Gauge({
    name: "membrane_operator_policies",
    help: "Policies by kind and state (valid, invalid).",
    labelNames: ["kind", "state"] as const,
    registers: [this.registry],
  });
  readonly policyEnforcement = new Gauge({
    name: "membrane_operator_policies_enforcement",
    help: "Policies by kind and enforcement state (enforced, partial: some rules not enforced yet, pending, refused, invalid).",
    labelNames: ["kind", "state"] as const,
    registers: [this.registry],
  });
  /** Filled at scrape time from the distribution server's reports (see observeNodes). */
  readonly nodes = new Gauge({
    name: "membrane_operator_nodes",
    help: "Nodes by distribution stream state (acked: holds the desired state; behind: connected, not yet acknowledged it; nacked: refused it; disconnected).",
    labelNames: ["state"] as const,
    registers: [this.registry],
  });
  readonly nacks = new Counter({
    name: "membrane_operator_nacks_total",
    help: "States refused (NACKed) by a node's agent.",
    labelNames: ["node"] as const,
    registers: [this.registry],
  });
  readonly agentAuthFailures = new Counter({
    name: "membrane_operator_agent_auth_failures_total",
    help: "Agent streams refused by authentication (reason: certificate, token, mismatch).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "membrane_operator_is_leader",
    help: "1 while this replica holds the leader lease.",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "membrane_operator_" });
  }

  /** Makes `membrane_operator_nodes` read `states()` (the node → stream state of every known node) at each scrape. */
  observeNodes(states: () => Iterable<NodeStreamState>): void {
    const gauge = this.nodes;
    // prom-client calls collect() on every scrape; all four states are always present, zero included.
    (gauge as unknown as { collect: () => void }).collect = () => {
      const counts: Record<NodeStreamState, number> = { acked: 0, behind: 0, nacked: 0, disconnected: 0 };
      for (const s of states()) counts[s]++;
      for (const [state, n] of Object.entries(counts)) gauge.set({ state }, n);
    };
  }
}
