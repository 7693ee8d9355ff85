// Node reconciler: one CiliumNode per Kubernetes Node, carrying the node's addresses and its pod CIDRs:
// in cluster-pool mode a block of the cluster pool (no overlaps; released when the node goes), in
// kubernetes mode the Node's own spec.podCIDRs (what the controller-manager, or the local cluster, gave it,
// and so what the pods on it really get). Keys are node names.
import type { Logger } from "pino";
import type { PodCIDRPool } from "./cidrpool.ts";
import type { Reconciler } from "../kube/controller.ts";
import type { Informer } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, isConflict, isNotFound, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";
import { sameStrings } from "../core/nodestate.ts";

export interface NodeObject extends KubeObject {
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  status?: { addresses?: { type: string; address: string }[] };
}

export interface CiliumNodeAddress {
  type: string;
  ip: string;
}

export interface CiliumNodeObject extends KubeObject {
  spec?: { addresses?: CiliumNodeAddress[]; ipam?: { podCIDRs?: string[] } };
}

/** Cilium's ipam.mode values Membrane's operator implements. */
export const IPAM_MODES = ["cluster-pool", "kubernetes"] as const;
export type IpamMode = (typeof IPAM_MODES)[number];
export function isIpamMode(s: string): s is IpamMode {
  return (IPAM_MODES as readonly string[]).includes(s);
}

/** The pod CIDRs the Node object itself carries (spec.podCIDRs, else the older single spec.podCIDR). */
export function nodePodCIDRs(node: NodeObject): string[] {
  const list = node.spec?.podCIDRs ?? [];
  if (list.length > 0) return [...list];
  return node.spec?.podCIDR ? [node.spec.podCIDR] : [];
}

/** Same addresses in the same order. */
export function sameNodeAddresses(a: readonly CiliumNodeAddress[], b: readonly CiliumNodeAddress[]): boolean {
  return a.length === b.length && a.every((x, i) => x.type === b[i]!.type && x.ip === b[i]!.ip);
}

/** A node's IP addresses as CiliumNode lists them (host names are not addresses). */
export function nodeAddresses(node: NodeObject): CiliumNodeAddress[] {
  return (node.status?.addresses ?? []).filter((a) => a.type === "InternalIP" || a.type === "ExternalIP").map((a) => ({ type: a.type, ip: a.address }));
}

export interface NodeDeps {
  readonly client: KubeClient;
  readonly nodes: Informer<NodeObject>;
  readonly ciliumNodes: Informer<CiliumNodeObject>;
  readonly pool: PodCIDRPool;
  /** Default cluster-pool. */
  readonly ipamMode?: IpamMode;
  readonly log: Logger;
}

export class NodeReconciler implements Reconciler {
  readonly name = "node";

  constructor(private readonly d: NodeDeps) {}

  /** Before the workers start: the CIDRs recorded in CiliumNodes are taken first, so a restart moves none. */
  init(): void {
    if (this.d.ipamMode === "kubernetes") return;
    for (const cn of this.d.ciliumNodes.list()) {
      for (const cidr of cn.spec?.ipam?.podCIDRs ?? []) {
        if (!this.d.pool.mark(cidr, cn.metadata.name)) this.d.log.warn({ name: cn.metadata.name, cidr }, "pod CIDR outside the pool or taken twice; reallocating");
      }
    }
  }

  async reconcile(name: string): Promise<void> {
    const node = this.d.nodes.get(name);
    const cn = this.d.ciliumNodes.get(name);
    const path = resourcePath(CILIUM_NODES, undefined, name);
    if (!node) {
      if (cn) {
        try {
          await this.d.client.delete(path, { uid: cn.metadata.uid });
          this.d.log.info({ name }, "CiliumNode deleted with its node");
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
      }
      this.d.pool.release(name);
      return;
    }
    const podCIDRs = this.podCIDRsFor(node, cn);
        const spec = { addresses: nodeAddresses(node), ipam: { podCIDRs } };
    const ownerReferences = [{ apiVersion: "v1", kind: "Node", name, uid: node.metadata.uid, controller: true }];
    if (!cn) {
      try {
        await this.d.client.create(resourcePath(CILIUM_NODES), { apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name, ownerReferences }, spec });
        this.d.log.info({ name, podCIDRs }, "CiliumNode created");
      } catch (e) {
        if (isConflict(e)) throw new Error(`CiliumNode ${name} exists but is not in the cache yet; retrying`, { cause: e });
        throw e;
      }
      return;
    }
    // By value: the API server hands a custom resource back with its fields in its own order ({ip, type}), so text comparison
    // found every CiliumNode changed and patched each again on every operator start (1,000 writes at bench/scale's full size).
    if (sameNodeAddresses(cn.spec?.addresses ?? [], spec.addresses) && sameStrings(cn.spec?.ipam?.podCIDRs ?? [], spec.ipam.podCIDRs)) return;
    await this.d.client.mergePatch(path, { spec });
    this.d.log.info({ name, podCIDRs }, "CiliumNode updated");
  }

  /** The node's pod CIDRs: its Node's own in kubernetes mode (none yet: an empty list, warned), else its block of the pool. */
  private podCIDRsFor(node: NodeObject, cn: CiliumNodeObject | undefined): string[] {
    const name = node.metadata.name;
    if (this.d.ipamMode === "kubernetes") {
      const cidrs = nodePodCIDRs(node);
      const had = cn?.spec?.ipam?.podCIDRs;
      if (cidrs.length === 0 && (had === undefined || had.length > 0)) this.d.log.warn({ name }, "ipam kubernetes: the Node has no spec.podCIDRs yet; its CiliumNode gets none");
      return cidrs;
    }
    const have = (cn?.spec?.ipam?.podCIDRs ?? []).find((c) => this.d.pool.ownerOf(c) === name);
    const cidr = have ?? this.d.pool.allocate(name);
    if (cidr === undefined) throw new Error(`pod CIDR pool ${this.d.pool.maskSize} blocks exhausted: node ${name} gets no pod CIDR`);
    return [cidr];
  }
}
