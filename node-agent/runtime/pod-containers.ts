// The containers of this node's pods for the runtime enforcer (containerSelector, the container of events): a watch
// of the pods scheduled here (field selector spec.nodeName, the same RBAC as the audit-mode watch) handing each
// pod's container statuses (ID, name, image) to the agent, which writes them into the runtime's pods file.
import type { Logger } from "pino";
import { podContainersFromStatus, type PodContainer } from "../../core/container.ts";
import type { Informer } from "../../kube/informer.ts";
import type { KubeClient } from "../../kube/kube.ts";
import type { PodObject } from "../../kube/objects.ts";
import { NodePods } from "../node-pods.ts";

/** namespace → pod name → its containers (those with an ID in the status). */
export type PodContainers = ReadonlyMap<string, ReadonlyMap<string, readonly PodContainer[]>>;

export interface PodContainersWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  readonly apply: (containers: PodContainers) => void;
  readonly log: Logger;
  /** The node's pods informer shared with the agent's other watches (node-pods.ts); without it, one of its own. */
  readonly pods?: Informer<PodObject>;
}

export class PodContainersWatch {
  private readonly pods: NodePods;
  private last = "";

  constructor(private readonly o: PodContainersWatchOptions) {
    this.pods = new NodePods({ client: o.client, nodeName: o.nodeName, log: o.log, ...(o.pods ? { shared: o.pods } : {}) });
    this.pods.informer.on(() => this.changed());
  }

  start(): void {
    this.pods.start();
    void this.pods.informer.waitForSync().then(() => this.changed());
  }

  async stop(): Promise<void> {
    await this.pods.stop();
  }

  private changed(): void {
    if (!this.pods.informer.hasSynced) return;
    const out = new Map<string, Map<string, readonly PodContainer[]>>();
    let count = 0;
    for (const p of this.pods.informer.list()) {
      const containers = podContainersFromStatus((p as { status?: unknown }).status);
      if (containers.length === 0 || p.metadata.namespace === undefined) continue;
      const byName = out.get(p.metadata.namespace) ?? new Map<string, readonly PodContainer[]>();
      out.set(p.metadata.namespace, byName);
      byName.set(p.metadata.name, containers);
      count += containers.length;
    }
    // Status updates that move no container (conditions, probes) are not handed over.
    const now = JSON.stringify([...out].map(([ns, m]) => [ns, [...m]]));
    if (now === this.last) return;
    this.last = now;
    this.o.log.debug({ containers: count }, "pod containers changed");
    this.o.apply(out);
  }
}
