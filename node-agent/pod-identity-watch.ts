// Watches the node's pods for the identity claims a CNI ADD resolves the pod's identity from (pod-identity.ts).
import type { Logger } from "pino";
import { Informer } from "../kube/informer.ts";
import type { KubeClient } from "../kube/kube.ts";
import type { PodObject } from "../kube/objects.ts";
import { PODS } from "../kube/resources.ts";
import { type PodIdentityClaims, podIdentityClaims } from "./pod-identity.ts";

export interface PodIdentityWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Called with the claims each time a pod of the node changes (and once after the first list). */
  readonly apply: (claims: PodIdentityClaims) => void;
  readonly log: Logger;
}

/**
 * Watches the pods scheduled to this node (field selector: nothing of other nodes crosses the wire)
 * and hands their identity claims to the agent, so that a CNI ADD can resolve the pod's identity
 * before the operator learns the pod's address (which the kubelet reports only after the ADD).
 */
export class PodIdentityWatch {
  private readonly pods: Informer<PodObject>;

  constructor(private readonly o: PodIdentityWatchOptions) {
    this.pods = new Informer<PodObject>(o.client, PODS, o.log, { fieldSelector: `spec.nodeName=${o.nodeName}` });
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
    this.o.apply(podIdentityClaims(this.pods.list()));
  }
}
