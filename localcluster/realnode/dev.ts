// `membrane dev up` on real nodes: the control plane's nodes started detached (containerd + kubelet), CoreDNS, and Membrane installed by its chart as real pods; recorded in the dev dir so `dev down` (or a failed `dev up`) removes exactly that.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { NAMESPACE, RELEASE } from "../chart.ts";
import { isProcessAlive, type ControlPlane, type CommandResult } from "../cluster.ts";
import { buildAgnhostImage } from "../upstream/cluster.ts";
import { installChartOnRealNode } from "./chart-install.ts";
import { realNodePaths } from "./config.ts";
import { installCoreDNS } from "./coredns.ts";
import { devRealNodePaths } from "./dev-paths.ts";
import { startRealNodes } from "./nodes.ts";
import { buildMembraneImage, destroyRealNode, type RealNodeState } from "./realnode.ts";

const log = pino({ name: "dev-realnodes", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

/** The images a dev cluster's real nodes get besides their own (pause, busybox, CoreDNS). */
export interface DevImages {
  membrane: { ref: string; archive: string };
  agnhost: { ref: string; archive: string };
}

/** Builds (or finds in the cache) the Membrane image from this checkout and agnhost: before anything starts, so a build failure leaves nothing behind. */
export async function buildDevImages(): Promise<DevImages> {
  const [membrane, agnhost] = await Promise.all([buildMembraneImage(), buildAgnhostImage()]);
  return { membrane, agnhost };
}

export interface DevRealNodesOptions {
  /** The Nodes are `<prefix>node-1` … `<prefix>node-<count>` (MEMBRANE_DEV_PREFIX). */
  prefix: string;
  count: number;
  images: DevImages;
  /** Progress lines for the user (stdout). */
  say: (line: string) => void;
}

/** The summary `dev status` prints: each node and whether its kubelet runs. */
export interface DevRealNode {
  name: string;
  dir: string;
  nodeAddress: string;
  podCIDR: string;
  kubeletRunning: boolean;
}

/** The real nodes recorded under the dev dir (a node dir holds its own state file: realnode.ts). */
export async function devRealNodes(devDir: string): Promise<DevRealNode[]> {
  const { nodesDir } = devRealNodePaths(devDir);
  let names: string[];
  try {
    names = (await readdir(nodesDir)).sort();
  } catch {
    return [];
  }
  const nodes: DevRealNode[] = [];
  for (const name of names) {
    const dir = join(nodesDir, name);
    let state: RealNodeState;
    try {
      state = JSON.parse(await readFile(realNodePaths(dir).stateFile, "utf8")) as RealNodeState;
    } catch {
      continue;
    }
    nodes.push({ name: state.plan.name, dir, nodeAddress: state.plan.nodeAddress, podCIDR: state.plan.podCIDR, kubeletRunning: runsFor(state.pids.kubelet, dir) });
  }
  return nodes;
}

/** True when pid runs and names dir on its command line: the process the node started, not a recycled pid. */
function runsFor(pid: number | undefined, dir: string): boolean {
  if (pid === undefined || !isProcessAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir);
  } catch {
    return false;
  }
}

async function must(what: string, r: Promise<CommandResult>): Promise<string> {
  const done = await r;
  if (done.code !== 0) throw new Error(`${what}: ${(done.stderr.trim() || done.stdout.trim()).split("\n").slice(-8).join("\n")}`);
  return done.stdout;
}

/**
 * Starts the real nodes (detached: they outlive the CLI), imports the Membrane and agnhost images, installs CoreDNS
 * and the chart (`helm install`), and resolves once the operator, webhook and agent pods are Ready, every agent is
 * connected and the API server reaches the webhook's Service. Each node is recorded in the dev dir as soon as it
 * is made, so a failure here leaves everything for devRealNodesDown to remove.
 */
export async function devRealNodesUp(cp: ControlPlane, opts: DevRealNodesOptions): Promise<void> {
  const paths = devRealNodePaths(cp.dir);
  const kubectl = cp.kubectl.bind(cp);
  const { membrane, agnhost } = opts.images;
  await mkdir(paths.nodesDir, { recursive: true });
  // `<prefix>node-1` … : startRealNodes names them `<namePrefix>-<i>`; their /30s and pod CIDRs from the prefix's hash,
  // so a test's cluster (its own prefix) and a developer's rarely meet (a clash is refused, naming the address).
  const namePrefix = `${opts.prefix}node`;
  const firstIndex = createHash("sha256").update(namePrefix).digest()[0]! % (256 - opts.count);
  const { nodes } = await startRealNodes({ namePrefix, count: opts.count, dir: paths.nodesDir, controlPlane: { dir: cp.dir, server: cp.server }, firstIndex, detached: true });
  for (const node of nodes) opts.say(`real node ${node.plan.name} Ready (${node.plan.nodeAddress}, pods ${node.plan.podCIDR}): containerd, kubelet, kube-proxy`);
  // Each node has its own containerd: the nodes import side by side.
  await Promise.all(nodes.map(async (node) => {
    await node.importImage(membrane.archive);
    await node.importImage(agnhost.archive);
  }));
  // Before the chart: the agent adopts the CoreDNS pod its node's CNI config wired, the webhook needs its answers.
  await installCoreDNS(kubectl, nodes[0]!.images.coredns, 300_000);
  opts.say("cluster DNS: CoreDNS as kube-system/kube-dns at 10.96.0.10");
  opts.say(`$ helm install ${RELEASE} charts/membrane -n ${NAMESPACE} --create-namespace (the real-node values: localcluster/realnode/chart-install.ts)`);
  const chart = await installChartOnRealNode(cp, nodes);
  opts.say(`membrane: operator ${chart.operatorPod}, ${nodes.length === 1 ? `agent ${chart.agentPod}` : `an agent on each of the ${nodes.length} nodes`} (connected) and webhook ${chart.webhookPod} Ready in ${chart.namespace}; the webhook's ClusterIP ${chart.webhookIP} routed from the host`);
  await saveHubbleClientTls(kubectl, paths.hubbleTlsDir);
  log.info({ nodes: nodes.map((n) => n.plan.name), membrane: membrane.ref, agnhost: agnhost.ref }, "dev cluster on real nodes ready");
}

/** The chart's Hubble client certificate, written where `membrane observe` looks for the dev cluster's (cli/observer-targets.ts). */
export async function saveHubbleClientTls(kubectl: ControlPlane["kubectl"], dir: string): Promise<void> {
  const out = await must("the Hubble client Secret", kubectl(["get", "secret", "-n", NAMESPACE, "membrane-hubble-client", "-o", "jsonpath={.data}"]));
  const data = JSON.parse(out) as Record<string, string>;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const f of ["ca.crt", "tls.crt", "tls.key"]) {
    const v = data[f];
    if (v === undefined) throw new Error(`Secret ${NAMESPACE}/membrane-hubble-client: data["${f}"] is missing`);
    await writeFile(join(dir, f), Buffer.from(v, "base64"), { mode: 0o600 });
  }
}

/**
 * Removes every real node recorded under the dev dir (processes, mounts, netns, cgroups, host routes, Node objects
 * while the API server still answers, host sysctls once no real node is left) and the Hubble credentials; says
 * which. Works from the files alone (after a crash); call before the control plane is destroyed.
 */
export async function devRealNodesDown(devDir: string): Promise<string[]> {
  const paths = devRealNodePaths(devDir);
  const removed: string[] = [];
  let names: string[] = [];
  try {
    names = await readdir(paths.nodesDir);
  } catch {
    // none recorded
  }
  // Side by side (each node by its own record; the host sysctls' record is locked): every node is tried before a failure is thrown.
  const results = await Promise.allSettled(names.sort().map((name) => destroyRealNode(paths.nodeDir(name))));
  const failed = results.flatMap((r, i) => (r.status === "rejected" ? [`${names[i]}: ${(r.reason as Error).message}`] : []));
  if (failed.length > 0) throw new Error(`removing real nodes: ${failed.join("; ")}`);
  removed.push(...names.map((name) => `real node ${name}`));
  await rm(paths.nodesDir, { recursive: true, force: true });
  await rm(paths.hubbleTlsDir, { recursive: true, force: true });
  return removed;
}

/** True when the dev dir records real nodes (its `dev up` was not --process-nodes). */
export function hasDevRealNodes(devDir: string): boolean {
  return existsSync(devRealNodePaths(devDir).nodesDir);
}
