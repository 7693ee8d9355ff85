// The labels of this agent's own Node, which every flow it reports carries (Hubble's `node_labels`): read from a watch of that one Node.
import type { Logger } from "pino";
import { Informer } from "../kube/informer.ts";
import type { KubeClient, KubeObject } from "../kube/kube.ts";
import { NODES } from "../kube/resources.ts";

/** A Node's labels as Hubble's flows carry them: `key=value`, sorted by key; none for no Node. Frozen: every flow shares the list. Pure. */
export function nodeLabelList(node: KubeObject | undefined): readonly string[] {
  const labels = node?.metadata.labels ?? {};
  return Object.freeze(
    Object.keys(labels)
      .sort()
      .map((k) => `${k}=${labels[k]}`),
  );
}

export interface NodeLabelsWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Called with the labels whenever they change (and once the Node was listed). */
  readonly apply: (labels: readonly string[]) => void;
  readonly log: Logger;
}

/** Watches this node's Node (a field selector: no other node crosses the wire) and hands its labels over on every change. */
export class NodeLabelsWatch {
  private readonly node: Informer<KubeObject>;
  private last: readonly string[] | undefined;

  constructor(private readonly o: NodeLabelsWatchOptions) {
    this.node = new Informer<KubeObject>(o.client, NODES, o.log, { fieldSelector: `metadata.name=${o.nodeName}` });
    this.node.on(() => this.changed());
  }

  start(): void {
    this.node.start();
    void this.node.waitForSync().then(() => this.changed());
  }

  async stop(): Promise<void> {
    await this.node.stop();
  }

  private changed(): void {
    if (!this.node.hasSynced) return;
    const next = nodeLabelList(this.node.get(this.o.nodeName));
    if (this.last !== undefined && this.last.length === next.length && this.last.every((l, i) => l === next[i])) return;
    this.last = next;
    this.o.log.info({ name: this.o.nodeName, labels: next.length }, "node labels for flows updated");
    this.o.apply(next);
  }
}
