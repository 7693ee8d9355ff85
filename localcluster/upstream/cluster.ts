// The cluster the upstream NetworkPolicy e2e suite runs against: the local control plane with its controllers, one real node (containerd + kubelet + kube-proxy), CoreDNS, agnhost under the suite's reference, and Membrane installed by its chart as real pods.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startControlPlane, type CommandResult, type ControlPlane } from "../cluster.ts";
import { CHART_DIR, NAMESPACE, setArgs } from "../chart.ts";
import { MEMBRANE_CHART_VALUES, realNodePaths } from "../realnode/config.ts";
import { installCoreDNS } from "../realnode/coredns.ts";
import { eventually } from "../realnode/eventually.ts";
import { buildMembraneImage, destroyRealNode, startRealNode, type RealNode } from "../realnode/realnode.ts";

const log = pino({ name: "upstream-cluster" });
const agnhostScript = fileURLToPath(new URL("./agnhost-image.sh", import.meta.url));

export interface UpstreamCluster {
  cp: ControlPlane;
  node: RealNode;
  /** The reference agnhost was imported under (the one the pinned suite asks for). */
  agnhost: string;
  /** Removes the node, then the control plane; safe to call twice. */
  stop(): Promise<void>;
}

export interface UpstreamClusterOptions {
  /** Holds the control plane (`cp/`) and the node (`node/`); the caller creates and removes it. */
  dir: string;
  /** The Node's name (a DNS label). */
  nodeName: string;
  /** Picks the node's addresses (0-255); callers running beside other clusters pass something like pid % 255. */
  index: number;
}

/** Runs a build script (progress on stderr); resolves with the last line of its stdout, the directory it built into. */
function runBuildScript(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("bash", [script], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${script} failed: ${stderr.trim().split("\n").slice(-10).join("\n")}`));
      else resolve(stdout.trim().split("\n").at(-1)!);
    });
  });
}

/** Builds (or finds in the cache) the agnhost image; resolves with its reference and OCI archive. */
export async function buildAgnhostImage(): Promise<{ ref: string; archive: string }> {
  const dir = await runBuildScript(agnhostScript);
  const ref = /^AGNHOST_IMAGE=(.+)$/m.exec(await readFile(join(dir, "agnhost-image.env"), "utf8"))?.[1];
  if (!ref) throw new Error(`${dir}/agnhost-image.env: AGNHOST_IMAGE is required`);
  return { ref, archive: join(dir, "agnhost.tar") };
}

async function must(what: string, r: Promise<CommandResult>): Promise<string> {
  const done = await r;
  if (done.code !== 0) throw new Error(`${what}: ${done.stderr.trim() || done.stdout.trim()}`);
  return done.stdout;
}

/**
 * Starts the cluster and resolves once Membrane's operator, webhook and agent pods are Ready, the agent is
 * connected and CoreDNS serves; on any failure removes what it started and throws.
 */
export async function startUpstreamCluster(opts: UpstreamClusterOptions): Promise<UpstreamCluster> {
  const [membraneImage, agnhostImage] = await Promise.all([buildMembraneImage(), buildAgnhostImage()]);
  let cp: ControlPlane | undefined;
  const nodeDir = join(opts.dir, "node");
  const stop = async (): Promise<void> => {
    // The node first: its Node object goes through the API server.
    await destroyRealNode(nodeDir).catch((err: unknown) => log.error({ node: opts.nodeName, err: (err as Error).message }, "real node not removed"));
    await cp?.stop();
    cp = undefined;
  };
  try {
    cp = await startControlPlane({ dir: join(opts.dir, "cp"), controllers: true });
    const node = await startRealNode({ name: opts.nodeName, dir: nodeDir, controlPlane: { dir: cp.dir, server: cp.server }, index: opts.index });
    await node.importImage(membraneImage.archive);
    await node.importImage(agnhostImage.archive);
    const kubectl = cp.kubectl.bind(cp);
    const paths = realNodePaths(node.plan.dir);
    // Cluster DNS first, on the node's CNI config before any agent: the agent adopts it, the webhook needs it.
    await installCoreDNS(kubectl, node.images.coredns, 300_000);
    // The chart's values as the real-node test installs it (localcluster/realnode/realnode.test.ts says why each).
    await must("helm install", cp.helm(["install", "membrane", CHART_DIR, "--namespace", NAMESPACE, "--create-namespace", ...setArgs({
      ...MEMBRANE_CHART_VALUES,
      "operator.replicas": 1,
      "webhook.replicas": 1,
      "operator.hostNetwork": true,
      "agent.cniBinDir": paths.cniBinDir,
      "agent.cniConfDir": paths.cniConfDir,
    })]));
    await must("operator rollout", kubectl(["rollout", "status", "-n", NAMESPACE, "deployment/membrane-operator", "--timeout=300s"]));
    await must("agent rollout", kubectl(["rollout", "status", "-n", NAMESPACE, "daemonset/membrane-agent", "--timeout=300s"]));
    await eventually("the agent connected to the operator", 120_000, async () => {
      const r = await kubectl(["logs", "-n", NAMESPACE, "deployment/membrane-operator"]);
      return new RegExp(`"node":"${opts.nodeName}".*"agent connected"`).test(r.stdout) ? true : undefined;
    });
    await must("webhook rollout", kubectl(["rollout", "status", "-n", NAMESPACE, "deployment/membrane-webhook", "--timeout=300s"]));
    // The API server (on the host) reaches the webhook's Service through the node.
    const webhookIP = await must("the webhook's ClusterIP", kubectl(["get", "service", "-n", NAMESPACE, "membrane-webhook", "-o", "jsonpath={.spec.clusterIP}"]));
    await node.routeFromHost(webhookIP);
    log.info({ node: opts.nodeName, server: cp.server, agnhost: agnhostImage.ref, membrane: membraneImage.ref }, "upstream cluster ready");
    return { cp, node, agnhost: agnhostImage.ref, stop };
  } catch (err) {
    // What the pods were doing, before they go with the cluster.
    const pods = await cp?.kubectl(["get", "pods", "-A", "-o", "wide"]).catch(() => undefined);
    const events = await cp?.kubectl(["get", "events", "-A", "--sort-by=.lastTimestamp"]).catch(() => undefined);
    log.error(
      { node: opts.nodeName, err: (err as Error).message, pods: pods?.stdout, events: events?.stdout.split("\n").slice(-25).join("\n") },
      "upstream cluster failed to start, removing what was made",
    );
    await stop();
    throw err;
  }
}
