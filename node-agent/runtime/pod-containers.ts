// The containers of this node's pods for the runtime enforcer (containerSelector, the container of events): a watch
// of the pods scheduled here (field selector spec.nodeName, the same RBAC as the audit-mode watch) handing each
// pod's container statuses (ID, name, image) to the agent, which writes them into the runtime's pods file.
import type { Logger } from "pino";
import { podContainersFromStatus, type PodContainer } from "../../core/container.ts";
import { Informer } from "../../kube/informer.ts";
import type { KubeClient, KubeObject } from "../../kube/kube.ts";
import { PODS } from "../../kube/resources.ts";

/** namespace → pod name → its containers (those with an ID in the status). */
export type PodContainers = ReadonlyMap<string, ReadonlyMap<string, readonly PodContainer[]>>;

export interface PodContainersWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  readonly apply: (containers: PodContainers) => void;
  readonly log: Logger;
}

export class PodContainersWatch {
  private readonly pods: Informer<KubeObject>;
  private last = "";

  constructor(private readonly o: PodContainersWatchOptions) {
    this.pods = new Informer<KubeObject>(o.client, PODS, o.log, { fieldSelector: `spec.nodeName=${o.nodeName}` });
    this.pods.on(() => this.changed());
  }

  start(): void {
    this.pods.start();
    void this.pods.waitForSync().then(() => this.changed());
  }

  async stop(): Promise<void> {
    await this.pods.stop();
  }

  private changed(): void {
    if (!this.pods.hasSynced) return;
    const out = new Map<string, Map<string, readonly PodContainer[]>>();
    let count = 0;
    for (const p of this.pods.list()) {
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
