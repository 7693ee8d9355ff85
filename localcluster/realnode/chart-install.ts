// Installs Membrane's chart on a real node the way the real-node tests and the upstream suite's cluster need it, and waits until its pods serve: operator, agent (connected to the operator) and webhook Ready, the webhook reachable from the API server.
import { pino } from "pino";
import type { ControlPlane } from "../cluster.ts";
import { CHART_DIR, NAMESPACE, setArgs } from "../chart.ts";
import { MEMBRANE_CHART_VALUES, realNodePaths } from "./config.ts";
import { eventually } from "./eventually.ts";
import type { RealNode } from "./realnode.ts";

const log = pino({ name: "realnode-chart" });

export interface ChartInstallOptions {
  /** The release's namespace (created); default the chart's own, `membrane-system`. */
  namespace?: string;
  /** Each wait's limit (pods Ready, the agent's stream); default 300 s. */
  timeoutMs?: number;
}

export interface InstalledChart {
  namespace: string;
  /** The Ready pods' names. */
  operatorPod: string;
  agentPod: string;
  webhookPod: string;
  /** The webhook Service's ClusterIP, routed from the host (where the API server runs) through the node. */
  webhookIP: string;
}

interface PodView {
  metadata: { name: string };
  status: { conditions?: { type: string; status: string }[] };
}

/**
 * `helm install membrane` on a one-node real cluster, then waits: the operator's, agent's and webhook's pods Ready,
 * the operator's log naming the node's agent connected, the webhook's ClusterIP routed from the host. Throws naming
 * the step that failed (helm's stderr, or the wait and its last error); removes nothing (the caller's cluster does).
 */
export async function installChartOnRealNode(cp: ControlPlane, node: RealNode, opts: ChartInstallOptions = {}): Promise<InstalledChart> {
  const namespace = opts.namespace ?? NAMESPACE;
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const paths = realNodePaths(node.plan.dir);
  const install = await cp.helm(["install", "membrane", CHART_DIR, "--namespace", namespace, "--create-namespace", ...setArgs({
    // Each node's pod CIDR from its Node (as the CNI config before the agent had it), inside kube-proxy's cluster CIDR.
    ...MEMBRANE_CHART_VALUES,
    // One of each keeps a cluster light on two cores; the chart's 2 replicas are the same pods twice.
    "operator.replicas": 1,
    "webhook.replicas": 1,
    // As Cilium's: the agents keep pod-network pods closed until the operator's policy reaches them, so an operator
    // on the pod network would wait for itself.
    "operator.hostNetwork": true,
    // The node's runtime reads its CNI dirs here (inside the node dir), not /opt/cni/bin and /etc/cni/net.d.
    "agent.cniBinDir": paths.cniBinDir,
    "agent.cniConfDir": paths.cniConfDir,
  })]);
  if (install.code !== 0) throw new Error(`helm install membrane on ${node.plan.name}: ${install.stderr.trim() || install.stdout.trim()}`);

  const readyPod = (component: string): Promise<string> =>
    eventually(`a Ready ${component} pod`, timeoutMs, async () => {
      const r = await cp.kubectl(["get", "pods", "-n", namespace, "-l", `app.kubernetes.io/component=${component}`, "-o", "json"]);
      if (r.code !== 0) throw new Error(r.stderr.trim());
      const pods = (JSON.parse(r.stdout) as { items: PodView[] }).items;
      return pods.find((p) => p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True"))?.metadata.name;
    });
  const operatorPod = await readyPod("operator");
  const agentPod = await readyPod("agent");
  // Its pod-bound token proved its node to the operator, reached at the operator's Service.
  await eventually(`the agent of ${node.plan.name} connected to the operator`, timeoutMs, async () => {
    const r = await cp.kubectl(["logs", "-n", namespace, operatorPod]);
    if (r.code !== 0) throw new Error(r.stderr.trim());
    return new RegExp(`"node":"${node.plan.name}".*"agent connected"`).test(r.stdout) ? true : undefined;
  });
  const webhookPod = await readyPod("webhook");
  // The API server (on the host) reaches the webhook's Service through the node, as kind's reaches a Service.
  const svc = await cp.kubectl(["get", "service", "-n", namespace, "membrane-webhook", "-o", "jsonpath={.spec.clusterIP}"]);
  if (svc.code !== 0 || svc.stdout.trim() === "") throw new Error(`the webhook Service's ClusterIP: ${svc.stderr.trim() || "empty"}`);
  const webhookIP = svc.stdout.trim();
  await node.routeFromHost(webhookIP);
  log.info({ node: node.plan.name, namespace, operatorPod, agentPod, webhookPod, webhookIP }, "chart installed and serving");
  return { namespace, operatorPod, agentPod, webhookPod, webhookIP };
}
