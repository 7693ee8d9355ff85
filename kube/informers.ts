// One shared informer per resource (and namespace, for one scoped to a namespace), so that controllers watching the same kind share a cache and a watch.
import type { Logger } from "pino";
import { Informer, type InformerOptions } from "./informer.ts";
import type { KubeClient, KubeObject, Resource } from "./kube.ts";

export class InformerSet {
  private readonly informers = new Map<string, Informer<KubeObject>>();

  constructor(
    private readonly client: KubeClient,
    private readonly log: Logger,
    private readonly opts: InformerOptions = {},
  ) {}

  /** The informer of `resource`, of every namespace or only of `scope.namespace`. */
  for<T extends KubeObject>(resource: Resource, scope: { readonly namespace?: string } = {}): Informer<T> {
    const id = `${resource.group}/${resource.plural}${scope.namespace !== undefined ? ` in ${scope.namespace}` : ""}`;
    let inf = this.informers.get(id);
    if (!inf) {
      inf = new Informer<KubeObject>(this.client, resource, this.log, { ...this.opts, ...(scope.namespace !== undefined ? { namespace: scope.namespace } : {}) });
      this.informers.set(id, inf);
    }
    return inf as unknown as Informer<T>;
  }

  start(): void {
    for (const i of this.informers.values()) i.start();
  }

  get synced(): boolean {
    return [...this.informers.values()].every((i) => i.hasSynced);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
  }
}
