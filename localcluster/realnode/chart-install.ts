// Installs Membrane's chart on real nodes the way the real-node tests and the upstream suite's cluster need it, and waits until its pods serve: operator, agent (connected to the operator), runtime (when on) and webhook Ready, the webhook reachable from the API server.
import { pino } from "pino";
import type { ControlPlane } from "../cluster.ts";
import { CHART_DIR, NAMESPACE, setArgs } from "../chart.ts";
import { MEMBRANE_CHART_VALUES, NODE_CNI_DIRS } from "./config.ts";
import { eventually } from "./eventually.ts";
import type { RealNode } from "./realnode.ts";

// On stderr: `membrane dev up` prints what it did for the user on stdout.
const log = pino({ name: "realnode-chart" }, pino.destination({ fd: 2, sync: true }));

export interface ChartInstallOptions {
  /** The release's namespace (created); default the chart's own, `membrane-system`. */
  namespace?: string;
  /** Each wait's limit (pods Ready, the agent's stream); default 300 s. */
  timeoutMs?: number;
  /** The operator's replicas (one leads, by the chart's Lease); default 1. */
  operatorReplicas?: number;
  /** Services translated at the pods' sockets (chart socketLB.enabled); default the chart's (on). */
  socketLB?: boolean;
  /** The runtime enforcer on every node (chart runtime.enabled: each node's membrane-runtime pod); default the chart's (off). */
  runtime?: boolean;
}

export interface InstalledChart {
  namespace: string;
  /** The Ready pods' names: the operator replica holding the Lease, the first node's agent, every node's agent. */
  operatorPod: string;
  agentPod: string;
  agentPods: Record<string, string>;
  webhookPod: string;
  /** The webhook Service's ClusterIP, routed from the host (where the API server runs) through the node. */
  webhookIP: string;
}

interface PodView {
  metadata: { name: string };
  spec: { nodeName?: string };
  status: { conditions?: { type: string; status: string }[] };
}

/**
 * `helm install membrane` on a real cluster of one or more nodes, then waits: the operator's pods and the webhook's
 * Ready, an agent Ready on every node, the leading operator's log naming every node's agent connected, the
 * webhook's ClusterIP routed from the host (through the first node). Throws naming the step that failed (helm's
 * stderr, or the wait and its last error); removes nothing (the caller's cluster does).
 */
export async function installChartOnRealNode(cp: ControlPlane, nodes: RealNode | readonly RealNode[], opts: ChartInstallOptions = {}): Promise<InstalledChart> {
  const all = Array.isArray(nodes) ? (nodes as readonly RealNode[]) : [nodes as RealNode];
  const node = all[0];
  if (!node) throw new Error("installChartOnRealNode: at least one node is required");
  const namespace = opts.namespace ?? NAMESPACE;
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const operatorReplicas = opts.operatorReplicas ?? 1;
  const install = await cp.helm(["install", "membrane", CHART_DIR, "--namespace", namespace, "--create-namespace", ...setArgs({
    // Each node's pod CIDR from its Node (as the CNI config before the agent had it), inside kube-proxy's cluster CIDR.
    ...MEMBRANE_CHART_VALUES,
    // One webhook keeps a cluster light on two cores; the operator's replicas are the caller's (its hand-over).
    "operator.replicas": operatorReplicas,
    ...(opts.socketLB !== undefined ? { "socketLB.enabled": opts.socketLB } : {}),
    ...(opts.runtime !== undefined ? { "runtime.enabled": opts.runtime } : {}),
    "webhook.replicas": 1,
    // As Cilium's: the agents keep pod-network pods closed until the operator's policy reaches them, so an operator
    // on the pod network would wait for itself.
    "operator.hostNetwork": true,
    // Every node's runtime reads its CNI dirs here (its node dir's, mounted in the node), not /opt/cni/bin and /etc/cni/net.d.
    "agent.cniBinDir": NODE_CNI_DIRS.bin,
    "agent.cniConfDir": NODE_CNI_DIRS.conf,
  })]);
  if (install.code !== 0) throw new Error(`helm install membrane on ${all.map((n) => n.plan.name).join(", ")}: ${install.stderr.trim() || install.stdout.trim()}`);

  const readyPods = (component: string, count: number): Promise<PodView[]> =>
    eventually(`${count} Ready ${component} pod(s)`, timeoutMs, async () => {
      const r = await cp.kubectl(["get", "pods", "-n", namespace, "-l", `app.kubernetes.io/component=${component}`, "-o", "json"]);
      if (r.code !== 0) throw new Error(r.stderr.trim());
      const ready = (JSON.parse(r.stdout) as { items: PodView[] }).items.filter((p) => p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
      return ready.length >= count ? ready : undefined;
    });
  await readyPods("operator", operatorReplicas);
  // The replica that serves the agents holds the Lease (its --id is its pod's name).
  const operatorPod = await eventually("the operator's Lease held", timeoutMs, async () => {
    const r = await cp.kubectl(["get", "lease", "-n", namespace, "membrane-operator", "-o", "jsonpath={.spec.holderIdentity}"]);
    return r.code === 0 && r.stdout.trim() !== "" ? r.stdout.trim() : undefined;
  });
  const agents = await readyPods("agent", all.length);
  const agentPods: Record<string, string> = {};
  for (const n of all) {
    const pod = agents.find((p) => p.spec.nodeName === n.plan.name);
    if (!pod) throw new Error(`no Ready agent pod on ${n.plan.name}: ${agents.map((p) => `${p.metadata.name} on ${p.spec.nodeName}`).join(", ")}`);
    agentPods[n.plan.name] = pod.metadata.name;
  }
  // Each pod-bound token proved its node to the operator, reached at the operator's Service.
  for (const n of all) {
    await eventually(`the agent of ${n.plan.name} connected to the operator`, timeoutMs, async () => {
      const r = await cp.kubectl(["logs", "-n", namespace, operatorPod]);
      if (r.code !== 0) throw new Error(r.stderr.trim());
      return new RegExp(`"node":"${n.plan.name}".*"agent connected"`).test(r.stdout) ? true : undefined;
    });
  }
  // The chart's runtime enforcer runs in a pod of its own on every node (runtime.mode external, its default).
  if (opts.runtime === true) await readyPods("runtime", all.length);
  const agentPod = agentPods[node.plan.name]!;
  const webhookPod = (await readyPods("webhook", 1))[0]!.metadata.name;
  // The API server (on the host) reaches the webhook's Service through the node, as kind's reaches a Service.
  const svc = await cp.kubectl(["get", "service", "-n", namespace, "membrane-webhook", "-o", "jsonpath={.spec.clusterIP}"]);
  if (svc.code !== 0 || svc.stdout.trim() === "") throw new Error(`the webhook Service's ClusterIP: ${svc.stderr.trim() || "empty"}`);
  const webhookIP = svc.stdout.trim();
  await node.routeFromHost(webhookIP);
  log.info({ nodes: all.map((n) => n.plan.name), namespace, operatorPod, agentPods, webhookPod, webhookIP }, "chart installed and serving");
  return { namespace, operatorPod, agentPod, agentPods, webhookPod, webhookIP };
}
