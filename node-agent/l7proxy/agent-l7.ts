// The agent's L7 proxy: each applied state's HTTP rules handed to the supervised `membrane l7proxy` (ports served before the entries naming them are written, unserved after they go), and whether it runs.
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import type { NodeState } from "../../core/wire.ts";
import { L7ProxySupervisor, type ServedPorts, type SupervisorOptions } from "./supervisor.ts";
import { FlowSocketServer } from "./flow-socket.ts";
import type { HttpFlow } from "./http-proxy.ts";

/** What the agent reports about its L7 proxy (AgentStatus.l7Proxy). */
export interface L7ProxyStatus {
  /** The proxy process runs and has applied its configuration. */
  readonly running: boolean;
  /** The proxy ports the datapath steers to (they stay served while the proxy is down: their connections fail). */
  readonly servedPorts: readonly number[];
  /** Why it is not running or not configured, when it is not. */
  readonly error?: string;
}

/** What the agent asks of its L7 proxy (node-agent/agent.ts); `AgentL7` is the real one. */
export interface AgentL7Proxy {
  /** Adopts the running proxy (an agent restart) or starts one, with the state the maps hold. */
  start(state: NodeState): Promise<void>;
  /** Before `state` is written: new proxy ports listened on by the proxy, then served. */
  prepare(state: NodeState): Promise<void>;
  /** After `state` is written (or kept, after a refusal): ports no entry names are unserved and closed. */
  settle(state: NodeState): void;
  status(): L7ProxyStatus;
  /** Calls `f` when status() changes (the proxy went down or came back). */
  onChange(f: () => void): void;
  /** Calls `listener` with every request the proxy reports from now on (its flow socket); returns the unsubscribe. */
  onFlow?(listener: (flow: HttpFlow) => void): () => void;
  /** Stops supervising; the proxy keeps running (its connections are not dropped) and the next agent adopts it. */
  stop(): void;
}

export interface AgentL7Options extends SupervisorOptions {
  readonly datapath: ServedPorts;
  readonly log: Logger;
  /** How often the proxy's liveness is looked at for status (default 1 s). */
  readonly healthIntervalMs?: number;
}

export class AgentL7 implements AgentL7Proxy {
  readonly supervisor: L7ProxySupervisor;
  private error: string | undefined;
  private wasRunning: boolean | undefined;
  private listeners: (() => void)[] = [];
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly flowListeners = new Set<(flow: HttpFlow) => void>();
  private readonly flows: FlowSocketServer;

  constructor(private readonly opts: AgentL7Options) {
    this.supervisor = new L7ProxySupervisor(opts.datapath, opts);
    this.flows = new FlowSocketServer(this.supervisor.flowSocket, (f) => {
      for (const l of this.flowListeners) l(f);
    }, opts.log);
  }

  onFlow(listener: (flow: HttpFlow) => void): () => void {
    this.flowListeners.add(listener);
    return () => this.flowListeners.delete(listener);
  }

  async start(state: NodeState): Promise<void> {
    // Visibility, not enforcement: without the socket the proxy's requests are decided all the same, not seen.
    fs.mkdirSync(path.dirname(this.supervisor.flowSocket), { recursive: true, mode: 0o700 });
    await this.flows.start().catch((err: Error) => this.opts.log.error({ socket: this.supervisor.flowSocket, error: err.message }, "L7 proxy flows not received: HTTP requests are enforced but not observed"));
    let startError: unknown;
    try {
      await this.supervisor.start();
    } catch (err) {
      startError = err;
    }
    // After the start: an adopted or reconnecting proxy is not reported down for the moment it takes to find it.
    this.healthTimer = setInterval(() => this.checkHealth(), this.opts.healthIntervalMs ?? 1000);
    this.healthTimer.unref();
    // Also when the proxy did not start: the state's ports are served all the same (fail closed).
    // No settle here: the maps may hold entries of a state this agent has not read back (no record of
    // what was applied), and the ports they name must stay served until the first state is written.
    await this.prepare(state);
    this.checkHealth();
    if (startError !== undefined) throw startError;
    if (this.supervisor.running()) this.opts.log.info({ address: this.opts.address, address6: this.opts.address6, pid: this.supervisor.pid(), ports: this.supervisor.servedPorts() }, "L7 proxy running");
  }

  async prepare(state: NodeState): Promise<void> {
    try {
      await this.supervisor.prepare(state.policies);
      this.error = undefined;
    } catch (err) {
      // The ports are served all the same: what the proxy should decide fails, never passes.
      this.error = (err as Error).message;
      this.opts.log.error({ error: this.error }, "L7 proxy not listening on its new ports: their connections fail until it does");
    }
    this.checkHealth();
  }

  settle(state: NodeState): void {
    try {
      this.supervisor.settle(state.policies);
    } catch (err) {
      this.error = (err as Error).message;
      this.opts.log.error({ error: this.error }, "L7 proxy configuration not written");
    }
  }

  status(): L7ProxyStatus {
    const running = this.supervisor.running();
    const error = running ? this.error : (this.error ?? this.supervisor.downReason());
    return { running, servedPorts: this.supervisor.servedPorts(), ...(error !== undefined ? { error } : {}) };
  }

  onChange(f: () => void): void {
    this.listeners.push(f);
  }

  stop(): void {
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.healthTimer = undefined;
    void this.flows.stop();
    this.supervisor.stop();
  }

  /** Stops supervising and ends a proxy the agent started (uninstall); an external one is left to its own pod. */
  async shutdown(): Promise<void> {
    this.stop();
    await this.supervisor.shutdown();
  }

  /** Logs and tells the listeners when the proxy goes down or comes back. */
  private checkHealth(): void {
    const running = this.supervisor.running();
    if (running === this.wasRunning) return;
    const first = this.wasRunning === undefined;
    this.wasRunning = running;
    if (!running) this.opts.log.error({ servedPorts: this.supervisor.servedPorts(), reason: this.supervisor.downReason(), ...(this.opts.external ? {} : { pidFile: this.supervisor.pidFile, log: this.supervisor.logFile }) }, "L7 proxy down: connections steered to it fail until it is back");
    else if (!first) this.opts.log.info({ pid: this.supervisor.pid() }, "L7 proxy back");
    for (const f of this.listeners) f();
  }
}
