// What the pods add to the node states besides their addresses, kept per pod event (no pass over every
// pod): the identities each node hosts, and each identity's named container ports.
import type { Protocol } from "../../core/model.ts";

/** A named container port as a pod spec lists it. */
export interface NamedContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: string;
}

/** What of one pod this index holds. */
export interface PodPlacement {
  readonly identity: number;
  /** The node's name ("" when not scheduled). */
  readonly node: string;
  readonly ports: readonly NamedContainerPort[];
}

const PROTOCOLS = ["TCP", "UDP", "SCTP"] as const;

export class PodIndex {
  private readonly pods = new Map<string, PodPlacement>();
  /** node → identity → how many of its pods have it. */
  private readonly hostedCount = new Map<string, Map<number, number>>();
  private readonly hostedSorted = new Map<string, readonly number[]>();
  /** identity → "name/protocol" → port → how many pods with that identity declare it. */
  private readonly portCount = new Map<number, Map<string, Map<number, number>>>();
  private readonly portsSorted = new Map<number, Map<string, readonly number[]>>();

  /**
   * Sets (or removes) what the pod `key` contributes. Returns whether the set of named ports of some
   * identity changed (a port appeared or went: policies resolve named ports at compile time).
   */
  set(key: string, pod: PodPlacement | undefined): boolean {
    const old = this.pods.get(key);
    let portsMoved = false;
    if (old) {
      if (old.node) this.count(old.node, old.identity, -1);
      portsMoved = this.countPorts(old, -1);
    }
    if (pod) {
      this.pods.set(key, pod);
      if (pod.node) this.count(pod.node, pod.identity, +1);
      portsMoved = this.countPorts(pod, +1) || portsMoved;
    } else this.pods.delete(key);
    return portsMoved;
  }

  /** The identities `node` hosts, sorted (the same array until one comes or goes). */
  hosted(node: string): readonly number[] {
    let ids = this.hostedSorted.get(node);
    if (!ids) {
      ids = [...(this.hostedCount.get(node)?.keys() ?? [])].sort((a, b) => a - b);
      this.hostedSorted.set(node, ids);
    }
    return ids;
  }

  /** The container ports named `name` of the pods with identity `id`, sorted ("ANY": every protocol). */
  namedPorts(id: number, name: string, protocol: Protocol): readonly number[] {
    if (protocol !== "ANY") return this.portsOf(id, `${name}/${protocol}`);
    return [...new Set(PROTOCOLS.flatMap((p) => this.portsOf(id, `${name}/${p}`)))];
  }

  private portsOf(id: number, nameProtocol: string): readonly number[] {
    let byName = this.portsSorted.get(id);
    if (!byName) this.portsSorted.set(id, (byName = new Map()));
    let ports = byName.get(nameProtocol);
    if (!ports) {
      ports = [...(this.portCount.get(id)?.get(nameProtocol)?.keys() ?? [])].sort((a, b) => a - b);
      byName.set(nameProtocol, ports);
    }
    return ports;
  }

  private count(node: string, id: number, by: number): void {
    let ids = this.hostedCount.get(node);
    if (!ids) this.hostedCount.set(node, (ids = new Map()));
    const n = (ids.get(id) ?? 0) + by;
    if (n > 0) ids.set(id, n);
    else ids.delete(id);
    if (n === 0 || n === by) this.hostedSorted.delete(node); // it came or went
    if (ids.size === 0) this.hostedCount.delete(node);
  }

  /** Counts the pod's named ports in or out; true when a port came or went for its identity. */
  private countPorts(pod: PodPlacement, by: number): boolean {
    let moved = false;
    for (const p of pod.ports) {
      if (!p.name || !Number.isInteger(p.containerPort)) continue;
      const key = `${p.name}/${p.protocol ?? "TCP"}`;
      let byName = this.portCount.get(pod.identity);
      if (!byName) this.portCount.set(pod.identity, (byName = new Map()));
      let ports = byName.get(key);
      if (!ports) byName.set(key, (ports = new Map()));
      const n = (ports.get(p.containerPort) ?? 0) + by;
      if (n > 0) ports.set(p.containerPort, n);
      else ports.delete(p.containerPort);
      if (n === 0 || n === by) {
        moved = true;
        this.portsSorted.get(pod.identity)?.delete(key);
      }
      if (ports.size === 0) byName.delete(key);
      if (byName.size === 0) this.portCount.delete(pod.identity);
    }
    return moved;
  }
}
