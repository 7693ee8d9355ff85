// The pods scheduled to this node, listed and watched once for every consumer in the agent (the CNI ADD's identity
// claims, audit-mode annotations, the runtime's containers): one LIST and one WATCH per node on the API server, not one each.
import type { Logger } from "pino";
import { Informer } from "../kube/informer.ts";
import type { KubeClient } from "../kube/kube.ts";
import type { PodObject } from "../kube/objects.ts";
import { PODS } from "../kube/resources.ts";

/** An informer on the pods of one node (field selector spec.nodeName: nothing of other nodes crosses the wire). */
export function nodePodsInformer(client: KubeClient, nodeName: string, log: Logger): Informer<PodObject> {
  return new Informer<PodObject>(client, PODS, log, { fieldSelector: `spec.nodeName=${nodeName}` });
}

/**
 * The node's pods for one consumer: the informer handed in (shared, started and stopped by its owner), or one of its
 * own when none is (tests that run a consumer alone).
 */
export class NodePods {
  readonly informer: Informer<PodObject>;
  private readonly owned: boolean;

  constructor(o: { client: KubeClient; nodeName: string; log: Logger; shared?: Informer<PodObject> }) {
    this.owned = o.shared === undefined;
    this.informer = o.shared ?? nodePodsInformer(o.client, o.nodeName, o.log);
  }

  start(): void {
    if (this.owned) this.informer.start();
  }

  async stop(): Promise<void> {
    if (this.owned) await this.informer.stop();
  }
}
