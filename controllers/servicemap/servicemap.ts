// The operator's service map: follows flows through the Hubble relay (or given Hubble servers), watches Services, serves the page.
import type { Logger } from "pino";
import type { Flow } from "../../flowapi/flow.ts";
import { clientSource, HubbleClient, type FlowSource } from "../../flowapi/hubble/client.ts";
import { fromHubbleFlow } from "../../flowapi/hubble/flow.ts";
import { timestampOf, type GetFlowsRequest, type GetFlowsResponse } from "../../flowapi/hubble/types.ts";
import { Backoff, sleep } from "../../kube/backoff.ts";
import { Informer } from "../../kube/informer.ts";
import { KubeClient, type KubeObject } from "../../kube/kube.ts";
import { SERVICES } from "../../kube/resources.ts";
import { FlowGraph, serviceRefOf, type ServiceGraph, type ServiceObject } from "./graph.ts";
import { ServiceMapServer } from "./server.ts";

export interface ServiceMapConfig {
  /** 127.0.0.1:port for /servicemap (0 picks one). */
  readonly port: number;
  /** Hubble servers given on the command line (`unix:/path` or `host:port` without TLS): another relay, one agent. */
  readonly hubbleServers: readonly string[];
  readonly maxEdges?: number;
  /** Flows replayed when first connecting (default 2000). */
  readonly replay?: number;
}

/** A named source of flows the map follows: the relay in this process, or a Hubble server's address. */
export interface MapSource {
  readonly name: string;
  readonly source: FlowSource;
}

/** Follows one source's flows until stopped, reconnecting with backoff; resumes from the last flow seen. */
class HubbleFollower {
  private readonly abort = new AbortController();
  private readonly done: Promise<void>;
  private lastTime: string | undefined;
  private countAtLast = 0;

  constructor(
    readonly from: MapSource,
    private readonly onFlow: (f: Flow) => void,
    private readonly replay: number,
    private readonly log: Logger,
  ) {
    this.done = this.run();
  }

  private request(): GetFlowsRequest {
    return this.lastTime === undefined ? { number: this.replay, follow: true } : { since: timestampOf(Date.parse(this.lastTime)), follow: true };
  }

  private async run(): Promise<void> {
    const backoff = new Backoff({ baseMs: 250, maxMs: 15_000, jitter: 0.2 });
    while (!this.abort.signal.aborted) {
      const since = this.lastTime;
      // A reconnect replays from the last flow's time (inclusive): skip the flows of that millisecond already counted.
      let skipAtSince = this.countAtLast;
      try {
        this.log.info({ source: this.from.name, since }, "following flows");
        await this.from.source(
          this.request(),
          (r: GetFlowsResponse) => {
            if (r.flow === undefined) return;
            const f = fromHubbleFlow(r.flow);
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
        this.log.warn({ source: this.from.name }, "flow stream ended; reconnecting");
      } catch (e) {
        if (this.abort.signal.aborted) return;
        this.log.warn({ source: this.from.name, err: e instanceof Error ? e.message : String(e) }, "flows unreachable; retrying");
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
  private readonly followers: HubbleFollower[] = [];
  private readonly clients: HubbleClient[] = [];
  private services: Informer<ServiceItem> | undefined;
  private readonly server: ServiceMapServer;
  private servicesVersion = 0;
  private cached: ServiceGraph | undefined;
  private stopped = false;

  /**
   * `relay` is the Hubble relay's in-process source (the operator's); `config.hubbleServers` add others.
   * `client` is optional: without it the map shows flows only (no services).
   */
  constructor(
    private readonly config: ServiceMapConfig,
    private readonly client: KubeClient | undefined,
    private readonly log: Logger,
    private readonly relay?: FlowSource,
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
    }
    for (const from of this.sources()) this.followers.push(new HubbleFollower(from, (f) => this.flows.add(f), this.config.replay ?? 2000, this.log));
    const port = await this.server.listen(this.config.port);
    this.log.info({ port, path: "/servicemap", sources: this.followed }, "service map listening");
    return port;
  }

  private sources(): MapSource[] {
    const out: MapSource[] = [];
    if (this.relay) out.push({ name: "relay", source: this.relay });
    for (const address of this.config.hubbleServers) {
      const c = new HubbleClient(address);
      this.clients.push(c);
      out.push({ name: address, source: clientSource(c) });
    }
    return out;
  }

  /** What the map follows: "relay" and the given Hubble servers. */
  get followed(): string[] {
    return this.followers.map((f) => f.from.name);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.followers.map((f) => f.stop()));
    this.followers.length = 0;
    for (const c of this.clients) c.close();
    await this.services?.stop();
    await this.server.close();
  }
}

/** Starts the map with its own API client from the operator's kubeconfig, following `relay`; `stop()` closes both. */
export async function startServiceMap(config: ServiceMapConfig, kubeconfig: string | undefined, log: Logger, relay?: FlowSource): Promise<{ stop(): Promise<void> }> {
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  const map = new ServiceMap(config, client, log.child({ module: "servicemap" }), relay);
  await map.start();
  return {
    async stop() {
      await map.stop();
      client.close();
    },
  };
}
