// The cluster the upstream NetworkPolicy e2e suite runs against: the local control plane with its controllers, one real node (containerd + kubelet + kube-proxy), CoreDNS, agnhost under the suite's reference, and Membrane installed by its chart as real pods.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startControlPlane, type ControlPlane } from "../cluster.ts";
import { installChartOnRealNode } from "../realnode/chart-install.ts";
import { installCoreDNS } from "../realnode/coredns.ts";
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
    // Cluster DNS first, on the node's CNI config before any agent: the agent adopts it, the webhook needs it.
    await installCoreDNS(cp.kubectl.bind(cp), node.images.coredns, 300_000);
    // Services translated at the pods' sockets: the suite reaches every server through its ClusterIP.
    await installChartOnRealNode(cp, node, { socketLB: true });
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
