// The agent's watch of Services, EndpointSlices and Nodes (as kube-proxy's and Cilium's agents watch them): every change
// recomputes the node's ClusterIP and NodePort table and the node addresses (core/service-translation.ts), and the
// translator writes them into the kernel.
import type { Logger } from "pino";
import { frontends, parseEndpointSlice, parseNodeAddresses, parseService, type ServiceSlice, type TranslatedService } from "../../core/service-translation.ts";
import { Informer } from "../../kube/informer.ts";
import type { KubeClient, KubeObject } from "../../kube/kube.ts";
import { ENDPOINT_SLICES, NODES, SERVICES } from "../../kube/resources.ts";
import type { TranslationCounts } from "./translator.ts";

export interface ServiceTable {
  set(table: ReturnType<typeof frontends>): TranslationCounts;
  setNodeAddresses(addresses: readonly string[]): void;
}

export interface ServiceWatchOptions {
  readonly client: KubeClient;
  readonly translator: ServiceTable;
  readonly log: Logger;
  /** Changes within this window are written together (default 50 ms). */
  readonly batchMs?: number;
}

export class ServiceWatch {
  private readonly services: Informer<KubeObject>;
  private readonly slices: Informer<KubeObject>;
  private readonly nodes: Informer<KubeObject>;
  private timer: NodeJS.Timeout | undefined;
  private last: TranslationCounts | undefined;

  constructor(private readonly o: ServiceWatchOptions) {
    this.services = new Informer<KubeObject>(o.client, SERVICES, o.log);
    this.slices = new Informer<KubeObject>(o.client, ENDPOINT_SLICES, o.log);
    this.nodes = new Informer<KubeObject>(o.client, NODES, o.log);
    for (const i of [this.services, this.slices, this.nodes]) i.on(() => this.schedule());
  }

  start(): void {
    for (const i of [this.services, this.slices, this.nodes]) i.start();
    void Promise.all([this.services.waitForSync(), this.slices.waitForSync(), this.nodes.waitForSync()]).then(() => this.schedule());
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.all([this.services.stop(), this.slices.stop(), this.nodes.stop()]);
  }

  /** The table's size as last written (tests, status). */
  get counts(): TranslationCounts | undefined {
    return this.last;
  }

  private schedule(): void {
    // Until both lists are in, a Service without its slices would be refused: nothing is written before.
    if (!this.services.hasSynced || !this.slices.hasSynced || !this.nodes.hasSynced || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.write();
    }, this.o.batchMs ?? 50);
  }

  private write(): void {
    const services: TranslatedService[] = [];
    for (const obj of this.services.list()) {
      const r = parseService(obj);
      if (r.ok) {
        if (r.value) services.push(r.value);
      } else this.o.log.warn({ namespace: obj.metadata.namespace, name: obj.metadata.name, errors: r.errors }, "Service not translated");
    }
    const slices: ServiceSlice[] = [];
    for (const obj of this.slices.list()) {
      const r = parseEndpointSlice(obj);
      if (r.ok) {
        if (r.value) slices.push(r.value);
      } else this.o.log.warn({ namespace: obj.metadata.namespace, name: obj.metadata.name, errors: r.errors }, "EndpointSlice not used for translation");
    }
    const nodeAddresses: string[] = [];
    for (const obj of this.nodes.list()) {
      const r = parseNodeAddresses(obj);
      if (r.ok) nodeAddresses.push(...(r.value ?? []));
      else this.o.log.warn({ name: obj.metadata.name, errors: r.errors }, "Node's addresses not used for NodePorts");
    }
    try {
      this.o.translator.setNodeAddresses(nodeAddresses);
      const counts = this.o.translator.set(frontends(services, slices));
      if (this.last?.frontends !== counts.frontends || this.last.backends !== counts.backends || this.last.refusing !== counts.refusing)
        this.o.log.info({ ...counts }, "service translation table written");
      this.last = counts;
    } catch (err) {
      this.o.log.error({ error: (err as Error).message }, "service translation table not written; the last one stays");
    }
  }
}
