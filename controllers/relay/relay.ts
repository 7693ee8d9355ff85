// The Hubble relay: one Observer API for the whole cluster, merging every agent's (found through its CiliumNode).
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { discoverHubblePeers, type HubblePeer } from "../../flowapi/discover.ts";
import { HubbleClient, type FlowSource, type HubbleClientTls } from "../../flowapi/hubble/client.ts";
import { CILIUM_VERSION } from "../../flowapi/hubble/proto.ts";
import { decodeBatch, decodeFlowsResponse, observerServiceWithEncoded } from "../../flowapi/hubble/batch.ts";
import { healthHandlers, healthService } from "../../flowapi/hubble/health.ts";
import { parseFlowsRequest } from "../../flowapi/hubble/getflows.ts";
import { LostEvents, lostEventOf } from "../../flowapi/hubble/lost.ts";
import { msOf, timestampOf, type GetFlowsRequest, type GetFlowsResponse, type HubbleNamespace, type HubbleNode, type ServerStatusResponse } from "../../flowapi/hubble/types.ts";
import type { KubeClient } from "../../kube/kube.ts";

export interface RelayOptions {
  /** `host:port` to listen on; without `tls` it must be a loopback address (the local cluster, as `cilium hubble port-forward`). */
  readonly address: string;
  /** The relay's certificate (serverAuth for its clients, clientAuth for the agents' TCP servers), its key, and the CA of both. */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer };
  /** The name agents' certificates carry (one shared certificate for every agent), checked instead of each agent's address. */
  readonly peerServerName?: string;
  /** Where the agents are: CiliumNodes' `membrane.io/hubble-address` (a function, so tests can name peers). */
  readonly peers: () => Promise<HubblePeer[]>;
  /** How often a following request looks for new or returning agents (default PEER_RESCAN_MS). */
  readonly rescanMs?: number;
  readonly log: Logger;
}

/** How long a peer may take to answer a unary call before it counts as unavailable. */
const PEER_DEADLINE_MS = 5000;

/** How often a following request looks for agents that appeared or whose stream ended. */
export const PEER_RESCAN_MS = 5000;

/** Messages a following client may fall behind; what does not fit is lost to it and told (Hubble's LostEvent): the relay's memory stays bounded. */
export const RELAY_MAX_BACKLOG = 50_000;

/** An error for a grpc-js callback or stream with a status code. */
function grpcError(code: grpc.status, message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

export class HubbleRelay {
  private server: grpc.Server | null = null;
  private readonly clients = new Map<string, HubbleClient>();
  private readonly startedAt = process.hrtime.bigint();
  private readonly calls = new Set<grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse | Buffer>>();
  /** Agents that do not serve the batched hop (flowapi/hubble/batch.ts): followed through plain GetFlows. */
  private readonly plainPeers = new Set<string>();
  /** Streams read in this process (`source`): stop ends them. */
  private readonly local = new Set<() => void>();
  address = "";

  constructor(private readonly opts: RelayOptions) {}

  static fromCluster(client: KubeClient, o: Omit<RelayOptions, "peers">): HubbleRelay {
    return new HubbleRelay({ ...o, peers: () => discoverHubblePeers(client) });
  }

  async start(): Promise<string> {
    const server = new grpc.Server();
    server.addService(observerServiceWithEncoded(), {
      GetFlows: (call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse | Buffer>) => void this.getFlows(call),
      ServerStatus: (_c: unknown, cb: grpc.sendUnaryData<ServerStatusResponse>) => void this.status().then((s) => cb(null, s), (e: Error) => cb(grpcError(grpc.status.UNAVAILABLE, e.message))),
      GetNodes: (_c: unknown, cb: grpc.sendUnaryData<{ nodes: HubbleNode[] }>) => void this.nodes().then((nodes) => cb(null, { nodes }), (e: Error) => cb(grpcError(grpc.status.UNAVAILABLE, e.message))),
      GetNamespaces: (_c: unknown, cb: grpc.sendUnaryData<{ namespaces: HubbleNamespace[] }>) => void this.namespaces().then((namespaces) => cb(null, { namespaces }), (e: Error) => cb(grpcError(grpc.status.UNAVAILABLE, e.message))),
      GetAgentEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit("error", grpcError(grpc.status.UNIMPLEMENTED, "GetAgentEvents: Membrane emits no agent events")),
      GetDebugEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit("error", grpcError(grpc.status.UNIMPLEMENTED, "GetDebugEvents: Membrane emits no debug events")),
    });
    server.addService(healthService, healthHandlers);
    const creds = this.opts.tls ? grpc.ServerCredentials.createSsl(this.opts.tls.ca, [{ cert_chain: this.opts.tls.cert, private_key: this.opts.tls.key }], true) : grpc.ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) => server.bindAsync(this.opts.address, creds, (err, p) => (err ? reject(new Error(`${this.opts.address}: ${err.message}`)) : resolve(p))));
    this.server = server;
    this.address = this.opts.address.replace(/:\d+$/, `:${port}`);
    this.opts.log.info({ address: this.address, tls: this.opts.tls !== undefined }, "hubble relay listening");
    return this.address;
  }

  async stop(): Promise<void> {
    for (const c of this.calls) c.end();
    this.calls.clear();
    for (const end of this.local) end();
    this.local.clear();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private client(address: string): HubbleClient {
    let c = this.clients.get(address);
    if (c === undefined) {
      const tls: HubbleClientTls | undefined = this.opts.tls
        ? { ca: this.opts.tls.ca, cert: this.opts.tls.cert, key: this.opts.tls.key, ...(this.opts.peerServerName ? { serverName: this.opts.peerServerName } : {}) }
        : undefined;
      c = new HubbleClient(address, tls);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Every peer's ServerStatus, or why it is unavailable. */
  private async peerStatuses(): Promise<{ peer: HubblePeer; status?: ServerStatusResponse; error?: string }[]> {
    const peers = await this.opts.peers();
    return Promise.all(
      peers.map(async (peer) => {
        if (peer.address === undefined) return { peer, error: peer.reason };
        try {
          return { peer, status: await this.client(peer.address).serverStatus(PEER_DEADLINE_MS) };
        } catch (err) {
          return { peer, error: (err as Error).message };
        }
      }),
    );
  }

  private async status(): Promise<ServerStatusResponse> {
    const all = await this.peerStatuses();
    const up = all.filter((p) => p.status !== undefined);
    const sum = (k: "num_flows" | "max_flows" | "seen_flows"): number => up.reduce((n, p) => n + Number(p.status![k]), 0);
    const uptimeNs = Number(process.hrtime.bigint() - this.startedAt);
    return {
      num_flows: sum("num_flows"),
      max_flows: sum("max_flows"),
      seen_flows: sum("seen_flows"),
      uptime_ns: uptimeNs,
      num_connected_nodes: { value: up.length },
      num_unavailable_nodes: { value: all.length - up.length },
      unavailable_nodes: all.filter((p) => p.status === undefined).map((p) => p.peer.node),
      version: `membrane relay (Hubble API of cilium ${CILIUM_VERSION})`,
      flows_rate: up.reduce((n, p) => n + Number(p.status!.flows_rate ?? 0), 0),
    };
  }

  private async nodes(): Promise<HubbleNode[]> {
    return (await this.peerStatuses()).map(({ peer, status }) => ({
      name: peer.node,
      version: status?.version ?? "",
      address: peer.address ?? "",
      state: status !== undefined ? "NODE_CONNECTED" : "NODE_UNAVAILABLE",
      ...(peer.address !== undefined && !peer.address.startsWith("unix:") ? { tls: { enabled: this.opts.tls !== undefined, server_name: "" } } : {}),
      uptime_ns: Number(status?.uptime_ns ?? 0),
      num_flows: Number(status?.num_flows ?? 0),
      max_flows: Number(status?.max_flows ?? 0),
      seen_flows: Number(status?.seen_flows ?? 0),
    }));
  }

  private async namespaces(): Promise<HubbleNamespace[]> {
    const peers = (await this.opts.peers()).filter((p) => p.address !== undefined);
    const seen = new Set<string>();
    await Promise.all(
      peers.map(async (p) => {
        try {
          for (const n of await this.client(p.address!).getNamespaces(PEER_DEADLINE_MS)) seen.add(n.namespace);
        } catch (err) {
          this.opts.log.warn({ node: p.node, error: (err as Error).message }, "hubble relay: namespaces of a node not read");
        }
      }),
    );
    return [...seen].sort().map((namespace) => ({ cluster: "", namespace }));
  }

  /**
   * The gRPC handler: the merged stream written to the call, cancelled when the client goes. A follower more than
   * RELAY_MAX_BACKLOG messages behind loses what does not fit and is told how many once it has room again
   * (Hubble's LostEvent, source HUBBLE_RING_BUFFER, one per node whose flows it lost, named by it; a node's own LostEvent
   * that did not fit keeps its node, source and CPU), so the relay's memory stays bounded; an answer that ends by itself is bounded already (the nodes' rings, read first).
   */
  private async getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse | Buffer>): Promise<void> {
    const follow = call.request.follow === true;
    let unwritten = 0;
    let failed = false;
    const lost = new LostEvents();
    let telling = false;
    const fail = (code: grpc.status, message: string): void => {
      if (failed) return;
      failed = true;
      call.emit("error", grpcError(code, message));
    };
    const tell = (): void => {
      telling = false;
      if (failed || !lost.pending || unwritten >= RELAY_MAX_BACKLOG) return;
      for (const r of lost.take("")) put(r);
    };
    const put = (r: GetFlowsResponse | Buffer): void => {
      unwritten++;
      call.write(r, () => {
        unwritten--;
        if (lost.pending && !telling) {
          telling = true; // room again: tell the loss even when no new flow comes
          setImmediate(tell);
        }
      });
    };
    const send = (r: GetFlowsResponse | Buffer, timeMs: number, node: string): void => {
      if (failed) return;
      if (follow && unwritten >= RELAY_MAX_BACKLOG) {
        // A node's own LostEvent that does not fit keeps its count (and source, CPU) in the relay's, under its node.
        const told = lostEventOf(r);
        if (told !== undefined) lost.addEvent(told, timeMs, node);
        else lost.add("HUBBLE_RING_BUFFER", 1, timeMs, timeMs, { node });
        return;
      }
      if (lost.pending) tell();
      put(r);
    };
    let cancel = (): void => {};
    cancel = await this.merge(call.request, { write: (r) => send(r, msOf(r.time) ?? Date.now(), r.node_name ?? ""), writeEncoded: send, end: () => call.end(), fail });
    if (failed) cancel();
    this.calls.add(call);
    const done = (): void => {
      failed = true;
      cancel();
      this.calls.delete(call);
    };
    call.on("cancelled", done);
    call.on("close", done);
    call.on("error", done);
  }

  /**
   * GetFlows for a client in the same process (the service map): the same merged stream as over gRPC.
   * Resolves when it ends (or `signal` aborts it), rejects with the error a gRPC client would get.
   */
  readonly source: FlowSource = (req, onResponse, signal) =>
    new Promise<void>((resolve, reject) => {
      let cancel = (): void => {};
      const abort = (): void => {
        cancel();
        settle(resolve);
      };
      signal?.addEventListener("abort", abort, { once: true });
      this.local.add(abort);
      const settle = (f: () => void): void => {
        signal?.removeEventListener("abort", abort);
        this.local.delete(abort);
        f();
      };
      void this.merge(req, {
        write: (r) => {
          if (!signal?.aborted) onResponse(r);
        },
        writeEncoded: (b) => {
          if (!signal?.aborted) onResponse(decodeFlowsResponse(b));
        },
        end: () => settle(resolve),
        fail: (code, message) => settle(() => reject(Object.assign(new Error(message), { code }))),
      }).then((c) => {
        cancel = c;
        if (signal?.aborted) c();
      });
    });

  /**
   * Asks every agent with the same request. Without follow, the answers are merged by time and `number`
   * applies to the merged list (the first or last N of the cluster); with follow, flows are passed on as
   * they arrive. An agent that cannot be asked is logged and left out, as Hubble's relay does. Resolves to
   * the function that cancels the agents' streams.
   */
  private async merge(req: GetFlowsRequest, out: FlowSink): Promise<() => void> {
    const none = (): void => {};
    const parsed = parseFlowsRequest(req);
    if (!parsed.ok) {
      out.fail(grpc.status.INVALID_ARGUMENT, parsed.error);
      return none;
    }
    const q = parsed.query;
    let peers: HubblePeer[];
    try {
      peers = (await this.opts.peers()).filter((p) => p.address !== undefined);
    } catch (err) {
      out.fail(grpc.status.UNAVAILABLE, `finding the agents: ${(err as Error).message}`);
      return none;
    }
    if (!q.follow) {
      const answers = await Promise.all(peers.map((p) => this.client(p.address!).collectFlows(req).catch((err: Error & { code?: number }) => ({ err }))));
      const bad = answers.find((a): a is { err: Error & { code?: number } } => "err" in a && a.err.code === grpc.status.INVALID_ARGUMENT);
      if (bad) {
        out.fail(grpc.status.INVALID_ARGUMENT, bad.err.message.replace(/^[^:]*: /, ""));
        return none;
      }
      const merged: GetFlowsResponse[] = [];
      answers.forEach((a, i) => {
        if ("err" in a) this.opts.log.warn({ node: peers[i]!.node, error: a.err.message }, "hubble relay: a node's flows not read");
        else merged.push(...a);
      });
      merged.sort((a, b) => msOf(a.time)! - msOf(b.time)!);
      const picked = q.number === 0 ? merged : q.first ? merged.slice(0, q.number) : merged.slice(Math.max(0, merged.length - q.number));
      for (const r of picked) out.write(r);
      out.end();
      return none;
    }
    if (q.untilMs !== undefined) {
      // With `until`, every agent ends its stream once past it: the merged stream ends with the last.
      let open = peers.length;
      const ended = (): void => {
        if (--open === 0) out.end();
      };
      const streams = peers.map((p) => {
        const s = this.client(p.address!).getFlows(req);
        s.on("end", ended);
        s.on("data", (r: GetFlowsResponse) => out.write(r));
        s.on("error", (e: grpc.ServiceError) => {
          ended();
          if (e.code === grpc.status.CANCELLED) return;
          if (e.code === grpc.status.INVALID_ARGUMENT) out.fail(grpc.status.INVALID_ARGUMENT, e.details);
          else this.opts.log.warn({ node: p.node, error: e.details || e.message }, "hubble relay: a node's flow stream ended");
        });
        return s;
      });
      return () => {
        for (const s of streams) s.cancel();
      };
    }
    return this.followAll(req, peers, out);
  }

  /**
   * A following request without an end: one stream per agent, passed on as flows arrive. Agents that appear
   * later are asked too (the peers are read again every `rescanMs`), and an agent whose stream ends (a restart)
   * is asked again from the time of the last flow it sent, without repeating the flows of that millisecond.
   */
  private followAll(req: GetFlowsRequest, initial: readonly HubblePeer[], out: FlowSink): () => void {
    interface PeerStream {
      stream?: grpc.ClientReadableStream<GetFlowsResponse | Buffer>;
      node: string;
      lastMs?: number;
      atLast: number;
      openedMs: number;
    }
    const followed = new Map<string, PeerStream>();
    let stopped = false;
    const open = (address: string, node: string): void => {
      const prev = followed.get(address);
      const st: PeerStream = prev ?? { node, atLast: 0, openedMs: Date.now() };
      followed.set(address, st);
      // A first stream asks what the client asked; a reconnect resumes where the last one stopped.
      const since = st.lastMs ?? (prev !== undefined ? st.openedMs : undefined);
      const r: GetFlowsRequest = since === undefined ? req : { ...req, number: 0, since: timestampOf(since) };
      let skip = st.lastMs !== undefined ? st.atLast : 0;
      st.openedMs = Date.now();
      /** Whether a flow of time `t` is passed on (not one already sent before a reconnect); tracks where to resume. */
      const admit = (t: number): boolean => {
        if (since !== undefined && st.lastMs !== undefined && t === since && skip > 0) {
          skip--;
          return false;
        }
        if (st.lastMs === undefined || t > st.lastMs) {
          st.lastMs = t;
          st.atLast = 0;
        }
        if (t === st.lastMs) st.atLast++;
        return true;
      };
      // Membrane's agents answer in batches of encoded flows, passed on without decoding; another server in plain GetFlows.
      const plain = this.plainPeers.has(address);
      const s: grpc.ClientReadableStream<GetFlowsResponse | Buffer> = plain ? this.client(address).getFlows(r) : this.client(address).getFlowBatches(r);
      st.stream = s;
      if (plain) {
        s.on("data", (resp: GetFlowsResponse) => {
          if (admit(msOf(resp.time)!)) out.write(resp);
        });
      } else {
        s.on("data", (batch: Buffer) => {
          for (const e of decodeBatch(batch)) if (admit(e.timeMs)) out.writeEncoded(e.bytes, e.timeMs, node);
        });
      }
      const gone = (why: string): void => {
        if (st.stream !== s) return;
        st.stream = undefined;
        if (!stopped) this.opts.log.warn({ node, error: why }, "hubble relay: a node's flow stream ended; asking again");
      };
      s.on("end", () => gone("ended"));
      s.on("error", (e: grpc.ServiceError) => {
        if (e.code === grpc.status.CANCELLED) return gone("cancelled");
        if (e.code === grpc.status.UNIMPLEMENTED && !plain) {
          // Not a Membrane agent of this version: ask it again, at once, through Hubble's GetFlows.
          this.plainPeers.add(address);
          if (st.stream === s) st.stream = undefined;
          if (st.lastMs === undefined) followed.delete(address); // nothing read yet: the client's own request
          if (!stopped) open(address, node);
          return;
        }
        if (e.code === grpc.status.INVALID_ARGUMENT) {
          out.fail(grpc.status.INVALID_ARGUMENT, e.details);
          cancel();
          return;
        }
        gone(e.details || e.message);
      });
    };
    const rescan = async (): Promise<void> => {
      let peers: HubblePeer[];
      try {
        peers = (await this.opts.peers()).filter((p) => p.address !== undefined);
      } catch (err) {
        this.opts.log.warn({ error: (err as Error).message }, "hubble relay: peers not read");
        return;
      }
      if (stopped) return;
      for (const p of peers) if (followed.get(p.address!)?.stream === undefined) open(p.address!, p.node);
    };
    for (const p of initial) open(p.address!, p.node);
    const timer = setInterval(() => void rescan(), this.opts.rescanMs ?? PEER_RESCAN_MS);
    timer.unref();
    const cancel = (): void => {
      stopped = true;
      clearInterval(timer);
      for (const st of followed.values()) st.stream?.cancel();
    };
    return cancel;
  }
}

/** Where the merged stream goes: a gRPC call, or a client in the same process. */
interface FlowSink {
  write(r: GetFlowsResponse): void;
  /** A GetFlowsResponse as an agent encoded it, its time, and the node that sent it. */
  writeEncoded(bytes: Buffer, timeMs: number, node: string): void;
  end(): void;
  fail(code: grpc.status, message: string): void;
}
