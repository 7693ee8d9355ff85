// Watches the node's pods for the identity claims a CNI ADD resolves the pod's identity from (pod-identity.ts).
import type { Logger } from "pino";
import type { Informer } from "../kube/informer.ts";
import type { KubeClient } from "../kube/kube.ts";
import type { PodObject } from "../kube/objects.ts";
import { NodePods } from "./node-pods.ts";
import { type PodIdentityClaims, podIdentityClaims } from "./pod-identity.ts";

export interface PodIdentityWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Called with the claims each time a pod of the node changes (and once after the first list). */
  readonly apply: (claims: PodIdentityClaims) => void;
  readonly log: Logger;
  /** The node's pods informer shared with the agent's other watches (node-pods.ts); without it, one of its own. */
  readonly pods?: Informer<PodObject>;
}

/**
 * Watches the pods scheduled to this node (field selector: nothing of other nodes crosses the wire)
 * and hands their identity claims to the agent, so that a CNI ADD can resolve the pod's identity
 * before the operator learns the pod's address (which the kubelet reports only after the ADD).
 */
export class PodIdentityWatch {
  private readonly pods: NodePods;

  constructor(private readonly o: PodIdentityWatchOptions) {
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
    this.o.apply(podIdentityClaims(this.pods.informer.list()));
  }
}
