// The operator's service map: follows every agent's observer (flags and CiliumNode discovery), watches Services, serves the page.
import type { Logger } from "pino";
import { parseFilterArgs, type FlowFilter } from "../../flowapi/filter.ts";
import { observersOf } from "../../flowapi/discover.ts";
import type { Flow } from "../../flowapi/flow.ts";
import { readFlows } from "../../flowapi/client.ts";
import { Backoff, sleep } from "../../kube/backoff.ts";
import { Informer } from "../../kube/informer.ts";
import { KubeClient, type KubeObject } from "../../kube/kube.ts";
import { CILIUM_NODES, SERVICES } from "../../kube/resources.ts";
import { FlowGraph, serviceRefOf, type ServiceGraph, type ServiceObject } from "./graph.ts";
import { ServiceMapServer } from "./server.ts";

export interface ServiceMapConfig {
  /** 127.0.0.1:port for /servicemap (0 picks one). */
  readonly port: number;
  /** Observer addresses given on the command line (`unix:/path` or `http://host:port`). */
  readonly observers: readonly string[];
  /** Also follow every observer named by a CiliumNode's `membrane.io/observer-address`. */
  readonly discover: boolean;
  readonly maxEdges?: number;
  /** Flows replayed from each observer when first connecting (default 2000). */
  readonly replay?: number;
}

export const SERVICEMAP_USAGE = `  --servicemap-port N          serve the service map page on 127.0.0.1:N/servicemap (0 picks one; off when absent)
  --observer ADDR              an agent's observer API for the map (repeatable; unix:/PATH or http://HOST:PORT)
  --servicemap-discover BOOL   also follow observers named on CiliumNodes (default true)
`;

/** Follows one observer's flows until stopped, reconnecting with backoff; resumes from the last flow seen. */
class ObserverFollower {
  private readonly abort = new AbortController();
  private readonly done: Promise<void>;
  private lastTime: string | undefined;
  private countAtLast = 0;

  constructor(
    readonly address: string,
    private readonly onFlow: (f: Flow) => void,
    private readonly replay: number,
    private readonly log: Logger,
  ) {
    this.done = this.run();
  }

  private filter(): FlowFilter {
    const args = this.lastTime === undefined ? ["--last", String(this.replay)] : ["--since", this.lastTime];
    const parsed = parseFilterArgs(args);
    if (!parsed.ok) throw new Error(`observer filter ${args.join(" ")}: ${parsed.error}`);
    return parsed.filter;
  }

  private async run(): Promise<void> {
    const backoff = new Backoff({ baseMs: 250, maxMs: 15_000, jitter: 0.2 });
    while (!this.abort.signal.aborted) {
      const since = this.lastTime;
      // A reconnect replays from the last flow's time (inclusive): skip the flows of that millisecond already counted.
      let skipAtSince = this.countAtLast;
      try {
        this.log.info({ observer: this.address, since }, "following observer");
        await readFlows(
          this.address,
          this.filter(),
          true,
          (f) => {
            if (since !== undefined && f.time < since) return;
            if (f.time === since && skipAtSince > 0) {
              skipAtSince--;
              return;
            }
            if (this.lastTime === undefined || f.time > this.lastTime) {
              this.lastTime = f.time;
              this.countAtLast = 0;
            }
            if (f.time === this.lastTime) this.countAtLast++;
            backoff.reset();
            this.onFlow(f);
          },
          this.abort.signal,
        );
        if (this.abort.signal.aborted) return;
        this.log.warn({ observer: this.address }, "observer stream ended; reconnecting");
      } catch (e) {
        if (this.abort.signal.aborted) return;
        this.log.warn({ observer: this.address, err: e instanceof Error ? e.message : String(e) }, "observer unreachable; retrying");
      }
      await sleep(backoff.next(), this.abort.signal);
    }
  }

  stop(): Promise<void> {
    this.abort.abort();
    return this.done;
  }
}

type ServiceItem = KubeObject & ServiceObject;

export class ServiceMap {
  private readonly flows: FlowGraph;
  private readonly followers = new Map<string, ObserverFollower>();
  private services: Informer<ServiceItem> | undefined;
  private ciliumNodes: Informer<KubeObject> | undefined;
  private readonly server: ServiceMapServer;
  private servicesVersion = 0;
  private cached: ServiceGraph | undefined;
  private stopped = false;

  /** `client` is optional: without it the map shows flows from `config.observers` only (no services, no discovery). */
  constructor(
    private readonly config: ServiceMapConfig,
    private readonly client: KubeClient | undefined,
    private readonly log: Logger,
  ) {
    this.flows = new FlowGraph({ maxEdges: config.maxEdges ?? 5000 });
    this.server = new ServiceMapServer(() => this.graph());
  }

  /** The map as it is now (recomputed only when flows or services changed). */
  graph(): ServiceGraph {
    const version = `${this.flows.generation}.${this.servicesVersion}`;
    if (this.cached?.version !== version) {
      const services = (this.services?.list() ?? []).map(serviceRefOf);
      this.cached = this.flows.graph(services, this.servicesVersion);
    }
    return this.cached;
  }

  /** For tests and embedding: a flow as if an observer had sent it. */
  addFlow(f: Flow): void {
    this.flows.add(f);
  }

  /** Starts watching and following; resolves to the bound port once the page is served. */
  async start(): Promise<number> {
    if (this.client) {
      this.services = new Informer<ServiceItem>(this.client, SERVICES, this.log);
      this.services.on(() => this.servicesVersion++);
      this.services.start();
      if (this.config.discover) {
        this.ciliumNodes = new Informer<KubeObject>(this.client, CILIUM_NODES, this.log);
        this.ciliumNodes.on(() => this.reconcileFollowers());
        this.ciliumNodes.start();
      }
    }
    this.reconcileFollowers();
    const port = await this.server.listen(this.config.port);
    this.log.info({ port, path: "/servicemap" }, "service map listening");
    return port;
  }

  /** The observers followed now: the configured ones plus those CiliumNodes name. */
  get observers(): string[] {
    return [...this.followers.keys()].sort();
  }

  private reconcileFollowers(): void {
    if (this.stopped) return;
    const wanted = new Set(this.config.observers);
    if (this.ciliumNodes) {
      const found = observersOf(this.ciliumNodes.list());
      for (const o of found.observers) wanted.add(o.address);
      for (const u of found.unreachable) this.log.debug({ node: u.node, reason: u.reason }, "node's observer not followed");
    }
    for (const [address, f] of this.followers) {
      if (wanted.has(address)) continue;
      this.followers.delete(address);
      void f.stop();
      this.log.info({ observer: address }, "observer no longer named; stopped following");
    }
    for (const address of wanted) {
      if (!this.followers.has(address)) this.followers.set(address, new ObserverFollower(address, (f) => this.flows.add(f), this.config.replay ?? 2000, this.log));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.followers.values()].map((f) => f.stop()));
    this.followers.clear();
    await this.services?.stop();
    await this.ciliumNodes?.stop();
    await this.server.close();
  }
}

/** Starts the map with its own API client from the operator's kubeconfig; `stop()` closes both. */
export async function startServiceMap(config: ServiceMapConfig, kubeconfig: string | undefined, log: Logger): Promise<{ stop(): Promise<void> }> {
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  const map = new ServiceMap(config, client, log.child({ module: "servicemap" }));
  await map.start();
  return {
    async stop() {
      await map.stop();
      client.close();
    },
  };
}
