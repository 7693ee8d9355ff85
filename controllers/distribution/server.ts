// The distribution server: one gRPC bidi stream per node agent over mutual TLS. Each agent gets a
// snapshot, then deltas of its node's desired state; one message in flight per agent (the next one
// coalesces every change since), so a slow agent only delays itself. An agent that reconnects with
// the version it last acknowledged resumes with a delta; otherwise it gets a snapshot.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Downstream, type NodeState, type Upstream, DISTRIBUTION_SERVICE, parseUpstream } from "../../core/wire.ts";
import { EMPTY_STATE, canonicalState, diffState, sameState } from "../../core/nodestate.ts";

export interface TLSMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** What the operator knows about each node's agent: what it acknowledged, and its last refusal. */
export interface NodeReport {
  readonly node: string;
  readonly connected: boolean;
  readonly ackedVersion?: number;
  readonly acked?: NodeState;
  readonly nack?: { readonly version: number; readonly error: string; readonly state: NodeState };
}

interface NodeRecord {
  counter: number;
  acked?: { version: number; state: NodeState };
  nack?: { version: number; error: string; state: NodeState };
  session?: Session;
}

type Stream = grpc.ServerDuplexStream<Upstream, Downstream>;

const SERVICE: grpc.ServiceDefinition = DISTRIBUTION_SERVICE;

class Session {
  inFlight: { version: number; nonce: string; state: NodeState } | undefined;
  /** The state the agent holds for certain (acknowledged on this stream or resumed); undefined = send a snapshot. */
  base: { version: number; state: NodeState } | undefined;
  closed = false;

  constructor(
    readonly node: string,
    readonly stream: Stream,
  ) {}
}

export class DistributionServer {
  private readonly server = new grpc.Server();
  private readonly desired = new Map<string, NodeState>();
  private readonly records = new Map<string, NodeRecord>();
  private readonly listeners: ((node: string) => void)[] = [];

  constructor(
    private readonly tls: TLSMaterial,
    private readonly log: Logger,
    private readonly helloTimeoutMs = 10_000,
  ) {
    this.server.addService(SERVICE, { Stream: (stream: Stream) => this.accept(stream) });
  }

  /** Listens on 127.0.0.1:port (0 picks one); client certificates are required and checked against the CA. */
  listen(port: number, host = "127.0.0.1"): Promise<number> {
    const creds = grpc.ServerCredentials.createSsl(this.tls.ca, [{ cert_chain: this.tls.cert, private_key: this.tls.key }], true);
    return new Promise((resolve, reject) => this.server.bindAsync(`${host}:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))));
  }

  async close(): Promise<void> {
    for (const r of this.records.values()) r.session?.stream.end();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }

  /** Called whenever an agent acknowledges or refuses (e.g. to refresh policy status). */
  onReport(listener: (node: string) => void): void {
    this.listeners.push(listener);
  }

  /** Sets what `node` should hold; its agent (if connected) gets the change as soon as it has acknowledged the previous one. */
  publish(node: string, state: NodeState): void {
    this.desired.set(node, canonicalState(state));
    const s = this.records.get(node)?.session;
    if (s) this.push(s);
  }

  forget(node: string): void {
    this.desired.delete(node);
    this.records.get(node)?.session?.stream.end();
    this.records.delete(node);
  }

  reports(): NodeReport[] {
    return [...this.records.entries()].map(([node, r]) => ({
      node,
      connected: r.session !== undefined,
      ...(r.acked ? { ackedVersion: r.acked.version, acked: r.acked.state } : {}),
      ...(r.nack ? { nack: r.nack } : {}),
    }));
  }

  private record(node: string): NodeRecord {
    let r = this.records.get(node);
    if (!r) this.records.set(node, (r = { counter: 0 }));
    return r;
  }

  private accept(stream: Stream): void {
    let session: Session | undefined;
    const helloTimer = setTimeout(() => fail(stream, grpc.status.DEADLINE_EXCEEDED, "no hello"), this.helloTimeoutMs);
    const peerName = certificateName(stream);
    stream.on("data", (raw: unknown) => {
      const parsed = parseUpstream(raw);
      if (!parsed.ok) {
        this.log.warn({ errors: parsed.errors, node: session?.node }, "malformed agent message; closing the stream");
        return fail(stream, grpc.status.INVALID_ARGUMENT, `malformed message: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`);
      }
      const msg = parsed.value;
      if (!session) {
        if (msg.type !== "hello") return fail(stream, grpc.status.INVALID_ARGUMENT, "the first message must be hello");
        // The node name in the hello must be the one its client certificate was issued to.
        if (peerName !== undefined && peerName !== msg.node) {
          this.log.warn({ node: msg.node, certificate: peerName }, "agent hello does not match its certificate");
          return fail(stream, grpc.status.PERMISSION_DENIED, `certificate is for ${peerName}, not ${msg.node}`);
        }
        clearTimeout(helloTimer);
        session = this.open(msg.node, msg.lastAppliedVersion, stream);
        return;
      }
      if (msg.type === "hello") return;
      this.onAnswer(session, msg);
    });
    const close = (): void => {
      clearTimeout(helloTimer);
      if (!session || session.closed) return;
      session.closed = true;
      const r = this.records.get(session.node);
      if (r?.session === session) r.session = undefined;
      this.log.info({ node: session.node }, "agent disconnected");
    };
    stream.on("end", () => {
      close();
      stream.end();
    });
    stream.on("error", close);
    stream.on("close", close);
    stream.on("cancelled", close);
  }

  private open(node: string, lastApplied: number | undefined, stream: Stream): Session {
    const r = this.record(node);
    r.session?.stream.end(); // a newer connection of the same agent replaces the old one
    const s = new Session(node, stream);
    r.session = s;
    // Versions only grow, also across an operator restart (the agent tells us where it was).
    r.counter = Math.max(r.counter, lastApplied ?? 0);
    if (lastApplied !== undefined && r.acked?.version === lastApplied) s.base = r.acked;
    this.log.info({ node, lastApplied, resume: s.base !== undefined }, "agent connected");
    this.push(s);
    return s;
  }

  private push(s: Session): void {
    if (s.closed || s.inFlight) return; // one message in flight; the ACK triggers the next
    const r = this.record(s.node);
    const target = this.desired.get(s.node) ?? EMPTY_STATE;
    if (s.base && sameState(s.base.state, target)) return;
    if (r.nack && sameState(r.nack.state, target)) return; // refused already: wait for a change
    const version = ++r.counter;
    const nonce = randomUUID();
    const msg: Downstream = s.base
      ? { type: "delta", version, baseVersion: s.base.version, nonce, ...diffState(s.base.state, target) }
      : { type: "snapshot", version, nonce, state: target };
    s.inFlight = { version, nonce, state: target };
    s.stream.write(msg);
  }

  private onAnswer(s: Session, msg: Extract<Upstream, { type: "ack" | "nack" }>): void {
    const sent = s.inFlight;
    if (!sent || sent.version !== msg.version || sent.nonce !== msg.nonce) {
      this.log.debug({ node: s.node, version: msg.version }, "stale answer ignored");
      return;
    }
    s.inFlight = undefined;
    const r = this.record(s.node);
    if (msg.type === "ack") {
      s.base = { version: sent.version, state: sent.state };
      r.acked = s.base;
      r.nack = undefined;
    } else {
      // The agent keeps its last good state; the next attempt is a full snapshot of a newer state.
      r.nack = { version: sent.version, error: msg.error, state: sent.state };
      s.base = undefined;
      this.log.warn({ node: s.node, version: sent.version, error: msg.error }, "agent refused state");
    }
    for (const l of this.listeners) l(s.node);
    this.push(s);
  }
}

/** The CN of the client certificate on this stream, if the transport exposes it. */
function certificateName(stream: Stream): string | undefined {
  const cert = (stream as unknown as { getAuthContext?: () => { sslPeerCertificate?: { subject?: { CN?: string } } } }).getAuthContext?.().sslPeerCertificate;
  const cn = cert?.subject?.CN;
  return typeof cn === "string" ? cn : undefined;
}

/** Ends the stream with a gRPC status the agent sees. */
function fail(stream: Stream, code: grpc.status, details: string): void {
  const err: Partial<grpc.StatusObject> = { code, details };
  stream.emit("error", err);
}
