// Hubble's Observer gRPC API (observer.Observer) over the agent's flow ring: for `hubble observe` and the relay,
// on a unix socket and optionally on TCP with mutual TLS.
import fs from "node:fs";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { FlowBuffer } from "./buffer.ts";
import type { Flow } from "../../flowapi/flow.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import { CILIUM_VERSION } from "../../flowapi/hubble/proto.ts";
import { encodeBatch, encodeFlowsResponse, flowBatchesService, observerServiceWithEncoded, type EncodedFlow } from "../../flowapi/hubble/batch.ts";
import { healthHandlers, healthService } from "../../flowapi/hubble/health.ts";
import { inWindow, parseFlowsRequest, replay } from "../../flowapi/hubble/getflows.ts";
import { LostEvents, type LostAt } from "../../flowapi/hubble/lost.ts";
import { msOf, type LostEventSource, type GetFlowsRequest, type GetFlowsResponse, type HubbleFlow, type HubbleNamespace, type HubbleNode, type ServerStatusResponse } from "../../flowapi/hubble/types.ts";
import { membraneVersion } from "../health.ts";
import { processEventsService, processEventsStatus, type ProcessEventSource } from "../../flowapi/process-events.ts";

export interface HubbleListen {
  /** A unix socket (local clients, the relay on the same host). */
  readonly socketPath?: string;
  /** TCP `host:port` with mutual TLS: the server certificate and the CA that signs the clients (the relay's). */
  readonly tcp?: { readonly address: string; readonly cert: Buffer; readonly key: Buffer; readonly clientCa: Buffer };
  /** The node's runtime process events, served on the same addresses (flowapi/process-events.ts); absent, the method says there is none. */
  readonly processEvents?: ProcessEventSource;
}

/** Flows a following client may fall behind; what does not fit is lost to it, and it is told (Hubble's LostEvent). */
export const MAX_FOLLOW_BACKLOG = 50_000;

/** At most this many flows in one message of the batched service (a batch is then ≈ 0.5 MiB). */
export const MAX_BATCH_FLOWS = 1024;

/** A kept flow in Hubble's shape, converted and encoded at most once however many clients read it. */
interface FlowView {
  readonly hubble: HubbleFlow;
  readonly timeMs: number;
  /** The unmasked GetFlowsResponse, encoded on first use. */
  bytes?: Buffer;
}

type LostListener = (source: LostEventSource, count: number, firstMs: number, lastMs: number, at: LostAt) => void;

/** The version string Hubble clients print: who answers, and which Hubble API it speaks. */
export const HUBBLE_SERVER_VERSION = `membrane ${membraneVersion()} (Hubble API of cilium ${CILIUM_VERSION})`;

/** An error for a grpc-js callback or stream with a status code. */
export function grpcError(code: grpc.status, message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

export class HubbleServer {
  private server: grpc.Server | null = null;
  private readonly startedAt = process.hrtime.bigint();
  private readonly streams = new Set<grpc.ServerWritableStream<GetFlowsRequest, unknown>>();
  /** The process event streams being passed on, ended at stop. */
  private readonly eventStreams = new Map<grpc.ServerWritableStream<string, Buffer>, AbortController>();
  private readonly views = new WeakMap<Flow, FlowView>();
  /** The following streams, told of events lost before the ring (reportLost). */
  private readonly followers = new Set<LostListener>();
  /** The addresses it listens on: `unix:/path`, `host:port`. */
  readonly addresses: string[] = [];

  constructor(
    private readonly buffer: FlowBuffer,
    private readonly node: string,
    private readonly log: Logger,
  ) {}

  async start(listen: HubbleListen): Promise<string[]> {
    const server = new grpc.Server();
    server.addService(observerServiceWithEncoded(), {
      GetFlows: (call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse | Buffer>) => this.getFlows(call, false),
      ServerStatus: (_call: grpc.ServerUnaryCall<unknown, ServerStatusResponse>, cb: grpc.sendUnaryData<ServerStatusResponse>) => cb(null, this.status()),
      GetNodes: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<{ nodes: HubbleNode[] }>) => cb(null, { nodes: [this.nodeInfo()] }),
      GetNamespaces: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<{ namespaces: HubbleNamespace[] }>) => cb(null, { namespaces: this.namespaces() }),
      GetAgentEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit("error", grpcError(grpc.status.UNIMPLEMENTED, "GetAgentEvents: Membrane emits no agent events")),
      GetDebugEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit("error", grpcError(grpc.status.UNIMPLEMENTED, "GetDebugEvents: Membrane emits no debug events")),
    });
    // The relay's hop: the same answer in batches of encoded flows (flowapi/hubble/batch.ts).
    server.addService(flowBatchesService(), { GetFlowBatches: (call: grpc.ServerWritableStream<GetFlowsRequest, Buffer>) => this.getFlows(call, true) });
    server.addService(healthService, healthHandlers);
    const source = listen.processEvents;
    server.addService(processEventsService(), {
      GetEvents: (call: grpc.ServerWritableStream<string, Buffer>) =>
        source === undefined
          ? call.emit("error", grpcError(grpc.status.UNAVAILABLE, `node ${this.node}: the agent serves no process events (it runs without --enable-runtime)`))
          : this.processEvents(source, call),
    });
    this.server = server;
    if (listen.socketPath !== undefined) {
      // A socket left by a previous run is replaced; one that answers belongs to a running agent.
      if (await socketAnswers(listen.socketPath)) throw new Error(`${listen.socketPath}: in use by a running Hubble server`);
      fs.rmSync(listen.socketPath, { force: true });
      await bind(server, `unix://${listen.socketPath}`, grpc.ServerCredentials.createInsecure());
      this.addresses.push(`unix:${listen.socketPath}`);
    }
    if (listen.tcp !== undefined) {
      const creds = grpc.ServerCredentials.createSsl(listen.tcp.clientCa, [{ cert_chain: listen.tcp.cert, private_key: listen.tcp.key }], true);
      const port = await bind(server, listen.tcp.address, creds);
      this.addresses.push(listen.tcp.address.replace(/:\d+$/, `:${port}`));
    }
    this.log.info({ addresses: this.addresses, capacity: this.buffer.capacity }, "hubble observer listening");
    return this.addresses;
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.end();
    this.streams.clear();
    for (const [s, abort] of this.eventStreams) {
      abort.abort();
      s.end();
    }
    this.eventStreams.clear();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }

  /** Passes the node's runtime stream on to one client until either ends; a failure is the client's gRPC error, naming the node. */
  private processEvents(source: ProcessEventSource, call: grpc.ServerWritableStream<string, Buffer>): void {
    const abort = new AbortController();
    const done = (): void => {
      abort.abort();
      this.eventStreams.delete(call);
    };
    this.eventStreams.set(call, abort);
    call.on("cancelled", done);
    call.on("close", done);
    call.on("finish", done);
    source(call.request, call, abort.signal).then(
      () => {
        if (!abort.signal.aborted) call.end();
      },
      (err: unknown) => {
        if (abort.signal.aborted) return;
        const { code, message } = processEventsStatus(err);
        call.emit("error", grpcError(code, `node ${this.node}: ${message}`));
      },
    );
  }

  private status(): ServerStatusResponse {
    const c = this.buffer.counters();
    const uptimeNs = Number(process.hrtime.bigint() - this.startedAt);
    const seen = c.forwarded + c.dropped;
    return {
      num_flows: this.buffer.length,
      max_flows: this.buffer.capacity,
      seen_flows: seen,
      uptime_ns: uptimeNs,
      version: HUBBLE_SERVER_VERSION,
      flows_rate: uptimeNs > 0 ? seen / (uptimeNs / 1e9) : 0,
    };
  }

  private nodeInfo(): HubbleNode {
    const s = this.status();
    return {
      name: this.node,
      version: s.version,
      address: this.addresses[0] ?? "",
      state: "NODE_CONNECTED",
      uptime_ns: s.uptime_ns,
      num_flows: s.num_flows,
      max_flows: s.max_flows,
      seen_flows: s.seen_flows,
    };
  }

  private namespaces(): HubbleNamespace[] {
    const seen = new Set<string>();
    for (const f of this.buffer.query()) {
      if (f.source.namespace !== undefined) seen.add(f.source.namespace);
      if (f.destination.namespace !== undefined) seen.add(f.destination.namespace);
    }
    return [...seen].sort().map((namespace) => ({ cluster: "", namespace }));
  }

  private view(flow: Flow): FlowView {
    let v = this.views.get(flow);
    if (v === undefined) {
      const hubble = toHubbleFlow(flow);
      v = { hubble, timeMs: msOf(hubble.time)! };
      this.views.set(flow, v);
    }
    return v;
  }

  /**
   * Tells every following client that `count` events were lost at `source` before they reached the ring (the
   * datapath's ring buffer was full): each gets Hubble's LostEvent in its stream, in order with its flows.
   */
  reportLost(source: LostEventSource, count: number, firstMs: number, lastMs: number = firstMs, at: LostAt = {}): void {
    for (const follower of this.followers) follower(source, count, firstMs, lastMs, at);
  }

  /**
   * GetFlows (one message per flow, Hubble's) or GetFlowBatches (`batched`: the relay's): the replay, then with
   * `follow` the flows kept from then on, written once per turn of the event loop rather than once per flow.
   * A follower more than MAX_FOLLOW_BACKLOG flows behind loses the flows that do not fit and is told how many
   * (Hubble's LostEvent, source HUBBLE_RING_BUFFER) once it has room again, as Hubble tells a reader its ring overtook.
   */
  private getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse | Buffer>, batched: boolean): void {
    const parsed = parseFlowsRequest(call.request);
    if (!parsed.ok) {
      call.emit("error", grpcError(grpc.status.INVALID_ARGUMENT, parsed.error));
      return;
    }
    const q = parsed.query;
    const node = this.node;
    const encoded = (v: FlowView): EncodedFlow => ({
      bytes: q.mask ? encodeFlowsResponse({ flow: q.mask(v.hubble), node_name: this.node, time: v.hubble.time }) : (v.bytes ??= encodeFlowsResponse({ flow: v.hubble, node_name: this.node, time: v.hubble.time })),
      timeMs: v.timeMs,
    });
    // Messages handed to the stream and not yet written to the connection: past the bound, flows are lost to this client.
    let unwritten = 0;
    const lost = new LostEvents();
    let pending: FlowView[] = [];
    let scheduled = false;
    let ended = false;
    const schedule = (): void => {
      if (scheduled || ended) return;
      scheduled = true;
      setImmediate(flush);
    };
    const written = (n: number) => (): void => {
      unwritten -= n;
      if (lost.pending) schedule(); // room again: tell the loss even when no new flow comes
    };
    const write = (entries: readonly EncodedFlow[]): void => {
      if (batched) {
        for (let i = 0; i < entries.length; i += MAX_BATCH_FLOWS) {
          const chunk = entries.slice(i, i + MAX_BATCH_FLOWS);
          unwritten += chunk.length;
          call.write(encodeBatch(chunk), written(chunk.length));
        }
        return;
      }
      for (const e of entries) {
        unwritten++;
        call.write(e.bytes, written(1));
      }
    };
    // Replay and subscribe in one synchronous step, so no flow falls between them.
    write(replay(q, this.buffer.query().map((f) => this.view(f)), (v) => v.hubble).map(encoded));
    if (!q.follow) {
      call.end();
      return;
    }
    function flush(): void {
      scheduled = false;
      if (ended) return;
      const vs = pending;
      pending = [];
      let room = MAX_FOLLOW_BACKLOG - unwritten;
      const out: EncodedFlow[] = [];
      if (lost.pending && room > 0) {
        for (const r of lost.take(node)) out.push({ bytes: encodeFlowsResponse(r), timeMs: msOf(r.time)! });
        room -= out.length;
      }
      const fit = Math.max(0, Math.min(vs.length, room));
      for (let i = 0; i < fit; i++) out.push(encoded(vs[i]!));
      if (fit < vs.length) lost.add("HUBBLE_RING_BUFFER", vs.length - fit, vs[fit]!.timeMs, vs.at(-1)!.timeMs);
      if (out.length > 0) write(out);
    }
    const unsubscribe = this.buffer.subscribe((flow) => {
      if (ended) return;
      const v = this.view(flow);
      if (q.untilMs !== undefined && v.timeMs > q.untilMs) {
        flush();
        ended = true;
        call.end();
        done();
        return;
      }
      if (!q.match(v.hubble) || !inWindow(q, v.hubble)) return;
      pending.push(v);
      schedule();
    });
    const follower: LostListener = (source, count, firstMs, lastMs, at) => {
      if (ended) return;
      lost.add(source, count, firstMs, lastMs, at);
      schedule();
    };
    this.followers.add(follower);
    this.streams.add(call);
    const done = (): void => {
      ended = true;
      unsubscribe();
      this.followers.delete(follower);
      this.streams.delete(call);
    };
    call.on("cancelled", done);
    call.on("close", done);
    call.on("error", done);
  }
}

function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, creds, (err, port) => (err ? reject(new Error(`${address}: ${err.message}`)) : resolve(port))));
}


/** Whether something accepts connections on a unix socket (a running server, not a file left behind). */
export function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}
