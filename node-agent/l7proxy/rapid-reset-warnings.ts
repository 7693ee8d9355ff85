// The agent's warning when its L7 proxy closed an HTTP/2 connection for rapid reset (CVE-2023-44487, rapid-reset.ts): the proxy knows a client by its address only, the agent names the pod from the flow's enrichment, at most one line per client per interval however many connections it floods.
import type { Logger } from "pino";
import type { Flow } from "../../flowapi/flow.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { REFUSAL_REASON } from "./request-flow.ts";

/** A client's closes after its first warning are counted for this long, then said in one line. */
export const RAPID_RESET_WARN_INTERVAL_MS = 60_000;

/** Clients counted at once; past it, further clients are counted together under one key (the log stays bounded, never the count). */
const MAX_CLIENTS = 1024;

const MESSAGE = "L7 proxy closed an HTTP/2 connection: rapid reset (streams cancelled before their answer past its budget, CVE-2023-44487)";

interface Client {
  readonly fields: Record<string, unknown>;
  /** Connections closed since the last line. */
  more: number;
  timer: NodeJS.Timeout;
}

/**
 * Each proxy record with REFUSAL_REASON.rapidReset (one per connection the proxy closed) is a warning naming the
 * client's pod (namespace, pod; its address and identity; the destination). A client's first close is logged at once;
 * the ones after it are counted and said in one line ("more") when RAPID_RESET_WARN_INTERVAL_MS has passed, and so on
 * each interval while they go on: a pod opening connection after connection to flood makes one line a minute, not one
 * per connection; an interval with none forgets the client (its next close is logged at once again).
 */
export class RapidResetWarnings {
  private readonly clients = new Map<string, Client>();

  constructor(private readonly log: Logger) {}

  /** A proxy record and the flows made of it (httpFlows): warned about when it was a rapid reset. */
  observe(record: HttpFlow, flows: readonly Flow[]): void {
    if (record.reason !== REFUSAL_REASON.rapidReset) return;
    const client = flows[0]?.source;
    const named = client?.pod !== undefined ? `${client.namespace ?? ""}/${client.pod}` : record.source.ip;
    const key = this.clients.size < MAX_CLIENTS || this.clients.has(named) ? named : "";
    const seen = this.clients.get(key);
    if (seen) {
      seen.more++;
      return;
    }
    const fields =
      key === ""
        ? { clients: `more than ${MAX_CLIENTS}` }
        : { namespace: client?.namespace, pod: client?.pod, ip: record.source.ip, identity: record.source.identity };
    this.log.warn({ ...fields, destination: `${record.destination.ip}:${record.destination.port}` }, MESSAGE);
    this.clients.set(key, { fields, more: 0, timer: this.interval(key) });
  }

  /** Drops what is counted (the agent stops). */
  stop(): void {
    for (const c of this.clients.values()) clearTimeout(c.timer);
    this.clients.clear();
  }

  private interval(key: string): NodeJS.Timeout {
    return setTimeout(() => this.intervalEnded(key), RAPID_RESET_WARN_INTERVAL_MS).unref();
  }

  private intervalEnded(key: string): void {
    const c = this.clients.get(key);
    if (!c) return;
    if (c.more === 0) return void this.clients.delete(key);
    this.log.warn({ ...c.fields, more: c.more, intervalMs: RAPID_RESET_WARN_INTERVAL_MS }, `${MESSAGE}: more connections closed in the last interval`);
    c.more = 0;
    c.timer = this.interval(key);
  }
}
