// N real nodes of one local cluster (`--nodes N` as kind's): each a real node as startRealNode makes it, with a /24 of CLUSTER_POD_CIDR, joined by the underlay of underlayMesh; join() adds one to the running cluster, leave() takes one away, stop() removes every node by its dir.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { parseIPFamilies, underlayMesh } from "./config.ts";
import { destroyRealNode, startRealNode, type NodeImage, type RealNode } from "./realnode.ts";

const log = pino({ name: "realnodes", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

export interface RealNodesOptions {
  /** Node names are `PREFIX-1` … `PREFIX-N` (DNS labels). */
  namePrefix: string;
  count: number;
  /** Each node's dir is `DIR/NAME`; removed by stop(). */
  dir: string;
  controlPlane: { dir: string; server: string };
  /** Node i (from 0) gets index firstIndex + i: its /30 and its pod CIDR 10.244.<index>.0/24 (planRealNode). */
  firstIndex: number;
  readyTimeoutMs?: number;
  /**
   * The pods' IP families: `["IPv4"]` (the default) or `["IPv4", "IPv6"]`: dual-stack pods, each node also with an
   * IPv6 pod CIDR (fd00:10:244:<index in hex>::/64) in its Node's spec.podCIDRs. The nodes' own addresses, the
   * underlay and the Services stay IPv4: IPv6 pods cross to other nodes only inside the agents' VXLAN overlay (before
   * the agents, the underlay routes IPv4 alone: this kernel refuses an IPv6 route via an IPv4 next hop without nexthop objects).
   */
  ipFamilies?: readonly string[];
  /** Outlive this process (`membrane dev up`): no reaper removes the nodes when it exits (startRealNode's `detached`). */
  detached?: boolean;
}

export interface RealNodes {
  /** The running nodes, in the order they joined (join() appends, leave() removes). */
  nodes: RealNode[];
  /**
   * One more node, as a machine joins a running cluster: the next name (`PREFIX-K`, K counting every node started) and
   * index, with `images` in its containerd before its kubelet registers, linked to every running node.
   * On failure it is removed and the others keep running.
   */
  join(opts?: { images?: readonly NodeImage[] }): Promise<RealNode>;
  /** Stops one node (its processes, its namespace with its links to the others, its Node object); the others keep running. */
  leave(node: RealNode): Promise<void>;
  /** Removes every node (also the ones a failed start left), the underlay with them. */
  stop(): Promise<void>;
}

/** Starts the nodes and links them; on any failure removes what it made and throws. */
export async function startRealNodes(opts: RealNodesOptions): Promise<RealNodes> {
  const errors: string[] = [];
  if (!Number.isInteger(opts.count) || opts.count < 1) errors.push(`count: an integer of at least 1 is required, got ${opts.count}`);
  if (!Number.isInteger(opts.firstIndex) || opts.firstIndex < 0 || opts.firstIndex + opts.count - 1 > 255) {
    errors.push(`firstIndex: the nodes' indexes firstIndex..firstIndex+count-1 must lie in 0-255, got ${opts.firstIndex} for ${opts.count} nodes`);
  }
  const families = parseIPFamilies(opts.ipFamilies);
  if (!families.ok) errors.push(families.error);
  if (errors.length > 0) throw new Error(`startRealNodes: ${errors.join("; ")}`);
  const nameOf = (i: number): string => `${opts.namePrefix}-${i + 1}`;
  const names = Array.from({ length: opts.count }, (_, i) => nameOf(i));
  const start = (i: number, images?: readonly NodeImage[]): Promise<RealNode> =>
    startRealNode({
      name: nameOf(i),
      dir: join(opts.dir, nameOf(i)),
      controlPlane: opts.controlPlane,
      index: opts.firstIndex + i,
      ...(opts.readyTimeoutMs !== undefined ? { readyTimeoutMs: opts.readyTimeoutMs } : {}),
      ...(opts.ipFamilies !== undefined ? { ipFamilies: opts.ipFamilies } : {}),
      ...(opts.detached ? { detached: true } : {}),
      ...(images ? { images } : {}),
    });
  const stop = (): Promise<void> => destroyRealNodes(opts.dir);
  const described = (n: RealNode) => ({ name: n.plan.name, nodeAddress: n.plan.nodeAddress, podCIDR: n.plan.podCIDR, podCIDRv6: n.plan.podCIDRv6 });
  try {
    // The first alone: it builds (or finds cached) the images every node imports; the others side by side.
    const first = await start(0);
    const rest = await Promise.allSettled(names.slice(1).map((_, i) => start(i + 1)));
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    const nodes = [first, ...rest.map((r) => (r as PromiseFulfilledResult<RealNode>).value)];
    await linkNodes(nodes);
    log.info({ nodes: nodes.map(described) }, "real nodes ready");
    // Indexes are never reused: a node that left may still be on its way out (its Node object, its pods).
    let started = opts.count;
    const joinNode = async (o: { images?: readonly NodeImage[] } = {}): Promise<RealNode> => {
      const i = started;
      if (opts.firstIndex + i > 255) throw new Error(`join: node ${nameOf(i)} would get index ${opts.firstIndex + i}, beyond 255`);
      started += 1;
      const joining = await start(i, o.images);
      try {
        await linkNodes([...nodes, joining], joining);
      } catch (err) {
        await joining.stop().catch((e: unknown) => log.error({ node: joining.plan.name, err: (e as Error).message }, "cleanup after a failed join failed"));
        throw err;
      }
      nodes.push(joining);
      log.info({ node: described(joining), nodes: nodes.map((n) => n.plan.name) }, "real node joined");
      return joining;
    };
    const leave = async (n: RealNode): Promise<void> => {
      const i = nodes.indexOf(n);
      if (i < 0) throw new Error(`leave: ${n.plan.name} is not a running node of this cluster`);
      await n.stop();
      nodes.splice(i, 1);
      log.info({ node: n.plan.name, nodes: nodes.map((x) => x.plan.name) }, "real node left");
    };
    return { nodes, join: joinNode, leave, stop };
  } catch (err) {
    log.error({ nodes: names, err: (err as Error).message }, "real nodes failed to start, removing them");
    await stop().catch((e: unknown) => log.error({ err: (e as Error).message }, "cleanup after failure failed"));
    throw err;
  }
}

/** Removes every real node whose dir lies in dir (each by its own record), then dir. Safe when nothing runs. */
export async function destroyRealNodes(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const nodeDirs = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => join(dir, e.name));
  const results = await Promise.allSettled(nodeDirs.map((d) => destroyRealNode(d)));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length > 0) throw new Error(`removing real nodes in ${dir}: ${failed.map((f) => (f.reason as Error).message).join("; ")}`);
  await rm(dir, { recursive: true, force: true });
}

/**
 * The underlay (underlayMesh) made inside the nodes' namespaces, so deleting a node's namespace removes its links; with
 * `joining` (one of nodes, added to a running mesh) only its part.
 */
async function linkNodes(nodes: RealNode[], joining?: RealNode): Promise<void> {
  const mesh = underlayMesh(nodes.map((n) => n.plan), joining?.plan);
  for (const n of joining ? [joining] : nodes) {
    // Pod packets cross the node (pre-agent routes, decapsulated VXLAN): forwarding on, and no reverse-path check
    // against the mesh's asymmetric /32 routes. Per namespace: the host's own settings are not touched.
    const ipv6 = n.plan.podCIDRv6 ? ["net.ipv6.conf.all.forwarding=1"] : [];
    await runChecked(["ip", "netns", "exec", n.plan.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", ...ipv6]);
  }
  for (const l of mesh.links) {
    await runChecked(["ip", "-n", l.netns, "link", "add", l.device, "type", "veth", "peer", "name", l.peerDevice, "netns", l.peerNetns]);
    await runChecked(["ip", "-n", l.netns, "link", "set", l.device, "up"]);
    await runChecked(["ip", "-n", l.peerNetns, "link", "set", l.peerDevice, "up"]);
    // Dual-stack: each end's link-local address, the next hop of the peer's IPv6 routes (no DAD: known unique per link).
    if (l.linkLocal6 && l.peerLinkLocal6) {
      await runChecked(["ip", "-n", l.netns, "-6", "addr", "add", `${l.linkLocal6}/64`, "dev", l.device, "nodad"]);
      await runChecked(["ip", "-n", l.peerNetns, "-6", "addr", "add", `${l.peerLinkLocal6}/64`, "dev", l.peerDevice, "nodad"]);
    }
  }
  for (const r of mesh.routes) {
    await runChecked(["ip", "-n", r.netns, "route", "add", r.dest, ...(r.via ? ["via", r.via] : []), "dev", r.device]);
  }
}

function runChecked(args: string[]): Promise<void> {
  return new Promise((done, reject) => {
    execFile(args[0]!, args.slice(1), (err, _stdout, stderr) => (err ? reject(new Error(`${args.join(" ")}: ${stderr.trim() || err.message}`)) : done()));
  });
}
