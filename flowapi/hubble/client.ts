// A client of Hubble's Observer API (an agent's or the relay's): unix socket, or TCP with mutual TLS.
import * as grpc from "@grpc/grpc-js";
import { sslChannelOptions, sslCredentials } from "../../kube/grpc-tls.ts";
import { hubbleApi } from "./proto.ts";
import { flowBatchesService } from "./batch.ts";
import { processEventsService } from "../process-events.ts";
import type { GetFlowsRequest, GetFlowsResponse, HubbleNamespace, HubbleNode, ServerStatusResponse } from "./types.ts";

/** The client's certificate and key, and the CA that signs the server's certificate. */
export interface HubbleClientTls {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The name the server's certificate must carry, when it is not the target's host (agents share one certificate, as Cilium's `*.hubble-grpc` name). */
  readonly serverName?: string;
}

/** `unix:/path` (or `unix:///path`) or `host:port`; TCP needs `tls` (servers speak only mutual TLS on TCP) unless `insecure`. */
export function hubbleTarget(address: string): string {
  if (address.startsWith("unix:")) return `unix://${address.slice("unix:".length).replace(/^\/+/, "/")}`;
  return address;
}

export class HubbleClient {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private readonly batches: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private readonly events: grpc.Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(
    readonly address: string,
    tls?: HubbleClientTls,
  ) {
    const target = hubbleTarget(address);
    const useTls = tls !== undefined && !address.startsWith("unix:");
    const creds = !useTls ? grpc.credentials.createInsecure() : sslCredentials(target, tls.ca, tls.key, tls.cert, tls.serverName);
    const options = !useTls ? {} : sslChannelOptions(target, tls.serverName);
    // A window of 8 MiB instead of HTTP/2's 64 KiB: a follower at tens of thousands of flows per second would
    // otherwise wait for a window update every couple of hundred flows (bench/README.md, flows).
    const channel = { ...options, "grpc.max_receive_message_length": 16 * 1024 * 1024, "grpc-node.flow_control_window": 8 * 1024 * 1024 };
    this.client = new (hubbleApi().Client)(target, creds, channel) as never;
    this.batches = new (grpc.makeGenericClientConstructor(flowBatchesService(), "FlowBatches"))(target, creds, { ...channel, channelOverride: this.client.getChannel() }) as never;
    this.events = new (grpc.makeGenericClientConstructor(processEventsService(), "ProcessEvents"))(target, creds, { ...channel, channelOverride: this.client.getChannel() }) as never;
  }

  private unary<T>(method: string, deadlineMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method]!({}, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: T) => (err ? reject(new Error(`${this.address}: ${err.details || err.message}`, { cause: err })) : resolve(res)));
    });
  }

  serverStatus(deadlineMs = 5000): Promise<ServerStatusResponse> {
    return this.unary("ServerStatus", deadlineMs);
  }

  async getNodes(deadlineMs = 5000): Promise<HubbleNode[]> {
    return (await this.unary<{ nodes?: HubbleNode[] }>("GetNodes", deadlineMs)).nodes ?? [];
  }

  async getNamespaces(deadlineMs = 5000): Promise<HubbleNamespace[]> {
    return (await this.unary<{ namespaces?: HubbleNamespace[] }>("GetNamespaces", deadlineMs)).namespaces ?? [];
  }

  /** The GetFlows stream; the caller reads `data`/`error`/`end` and may `cancel()` it. */
  getFlows(req: GetFlowsRequest, options: grpc.CallOptions = {}): grpc.ClientReadableStream<GetFlowsResponse> {
    return this.client.GetFlows!(req, options) as grpc.ClientReadableStream<GetFlowsResponse>;
  }

  /** The same answer as `getFlows` from a Membrane agent, in batches of encoded responses (flowapi/hubble/batch.ts): the relay's hop. */
  getFlowBatches(req: GetFlowsRequest, options: grpc.CallOptions = {}): grpc.ClientReadableStream<Buffer> {
    return this.batches.GetFlowBatches!(req, options) as grpc.ClientReadableStream<Buffer>;
  }

  /** The node's runtime process events (flowapi/process-events.ts): the runtime's query, the stream's bytes in runs. */
  getProcessEvents(query: string, options: grpc.CallOptions = {}): grpc.ClientReadableStream<Buffer> {
    return this.events.GetEvents!(query, options) as grpc.ClientReadableStream<Buffer>;
  }

  /** All responses of a GetFlows request that ends by itself (not following). */
  collectFlows(req: GetFlowsRequest): Promise<GetFlowsResponse[]> {
    return new Promise((resolve, reject) => {
      const out: GetFlowsResponse[] = [];
      const s = this.getFlows(req);
      s.on("data", (r: GetFlowsResponse) => out.push(r));
      s.on("error", (e: grpc.ServiceError) => reject(Object.assign(new Error(`${this.address}: ${e.details || e.message}`), { code: e.code })));
      s.on("end", () => resolve(out));
    });
  }

  close(): void {
    this.client.close();
  }
}

/** Something that answers GetFlows requests: a client of a server, or the relay in the same process. */
export type FlowSource = (req: GetFlowsRequest, onResponse: (r: GetFlowsResponse) => void, signal?: AbortSignal) => Promise<void>;

/** grpc-js' details, without its empty trailing "Resolution note:". */
export function grpcMessage(e: grpc.ServiceError): string {
  return (e.details || e.message).replace(/\s*Resolution note:\s*$/, "");
}

/**
 * A FlowSource over a client: resolves when the stream ends (or `signal` aborts it), rejects with the server's
 * error (an unsupported filter, an unreachable socket). `deadlineMs` bounds a request that ends by itself.
 */
export function clientSource(client: HubbleClient, deadlineMs?: number): FlowSource {
  return (req, onResponse, signal) =>
    new Promise<void>((resolve, reject) => {
      const stream = client.getFlows(req, deadlineMs !== undefined ? { deadline: Date.now() + deadlineMs } : {});
      const abort = (): void => stream.cancel();
      signal?.addEventListener("abort", abort, { once: true });
      if (signal?.aborted) abort();
      const finish = (err?: Error): void => {
        signal?.removeEventListener("abort", abort);
        if (err) reject(err);
        else resolve();
      };
      stream.on("data", onResponse);
      stream.on("error", (e: grpc.ServiceError) => (e.code === grpc.status.CANCELLED && signal?.aborted ? finish() : finish(Object.assign(new Error(grpcMessage(e), { cause: e }), { code: e.code }))));
      stream.on("end", () => finish());
    });
}
