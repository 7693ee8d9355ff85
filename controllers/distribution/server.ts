// The distribution server: one gRPC bidi stream per node agent over mutual TLS. Each agent gets a
// snapshot, then deltas of its node's desired state; one message in flight per agent (the next one
// coalesces every change since), so a slow agent only delays itself. An agent that reconnects with
// the version it last acknowledged resumes with a delta; otherwise it gets a snapshot.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Downstream, type NodeState, type PolicyGeneration, type TracingPolicyNodeStatus, type Upstream, DISTRIBUTION_SERVICE, parseUpstream } from "../../core/wire.ts";
import { EMPTY_STATE, type SharedPartLinks, type SubjectDeltaLinks } from "../../core/nodestate.ts";
import { StateDiffer } from "./differ.ts";
import type { AgentAuthResult } from "./tokenauth.ts";
import type { NodeStreamState } from "../../kube/metrics.ts";

/**
 * How an agent proves which node it is. Without one, the client certificate's CN must name the node
 * (the local cluster); with one (e.g. a ServiceAccount token review), the answer names the node.
 */
export type AgentAuthenticator = (authorization: string | undefined) => Promise<AgentAuthResult>;

/** What the operator's metrics learn from the stream. */
export interface DistributionEvents {
  nack?(node: string): void;
  authFailure?(reason: "certificate" | "token" | "mismatch"): void;
}

export interface TLSMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** What the operator knows about each node's agent: what it acknowledged, and its last refusal. */
export interface NodeReport {
  readonly node: string;
  readonly connected: boolean;
  /** The agent acknowledged exactly what the operator wants it to hold now. */
  readonly upToDate?: boolean;
  readonly ackedVersion?: number;
  readonly acked?: NodeState;
  readonly nack?: { readonly version: number; readonly error: string; readonly state: NodeState };
  /** Its agent said in its last hello that it runs the DNS proxy. */
  readonly dnsProxy?: boolean;
  /** Its agent said in its last hello that it runs the L7 proxy. */
  readonly l7Proxy?: boolean;
  /** Its agent said in its last hello that it runs the runtime enforcer (TracingPolicies). */
  readonly runtime?: boolean;
  /** Each TracingPolicy's status on the node, as its agent last reported it. */
  readonly tracing?: readonly TracingPolicyNodeStatus[];
}

/**
 * Which policies' Enforced a node's answer may have moved: "all" (its first acknowledgement, a refusal, an acknowledgement
 * after one, a proxy that came or went), else the keys (core/compiler policyKey) whose generation the node holds now
 * differs from the one it held (none for a pod or ipcache change).
 */
export type MovedPolicies = "all" | ReadonlySet<string>;

/** A node's last acknowledged state and last refusal, and whether its agent runs the DNS and L7 proxies. */
export type NodeAnswer = Pick<NodeReport, "node" | "acked" | "nack" | "dnsProxy" | "l7Proxy" | "runtime" | "tracing">;

interface NodeRecord {
  counter: number;
  acked?: { version: number; state: NodeState };
  nack?: { version: number; error: string; state: NodeState };
  session?: Session;
  dnsProxy?: boolean;
  l7Proxy?: boolean;
  runtime?: boolean;
  tracing?: readonly TracingPolicyNodeStatus[];
  /** Its agent said in its last hello that its datapath looks up the `cluster` entity's class entries. */
  clusterClass?: boolean;
  /** Its agent said in its last hello that its datapath looks up the every-pod class's entries. */
  everyPodClass?: boolean;
  /** Its agent said in its last hello that its datapath looks up the world class's entries. */
  worldClass?: boolean;
  /** Its agent said in its last hello that its datapath looks up the world-ipv4/-ipv6 classes' entries. */
  worldFamilyClass?: boolean;
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
  private readonly listeners: ((node: string, moved: MovedPolicies) => void)[] = [];
  private readonly runtimeListeners: ((node: string) => void)[] = [];
  private readonly clusterClassListeners: (() => void)[] = [];
  /** Canonical forms and deltas memoised by part, so a change shared by every node is sorted and diffed once. */
  private readonly differ = new StateDiffer();

  constructor(
    private readonly tls: TLSMaterial,
    private readonly log: Logger,
    private readonly helloTimeoutMs = 10_000,
    private readonly authenticate?: AgentAuthenticator,
    private readonly events: DistributionEvents = {},
  ) {
    this.server.addService(SERVICE, { Stream: (stream: Stream) => this.accept(stream) });
  }

  /** Listens on host:port (default 127.0.0.1; port 0 picks one); client certificates are required and checked against the CA. */
  listen(port: number, host = "127.0.0.1"): Promise<number> {
    const creds = grpc.ServerCredentials.createSsl(this.tls.ca, [{ cert_chain: this.tls.cert, private_key: this.tls.key }], true);
    return new Promise((resolve, reject) => this.server.bindAsync(`${host.includes(":") ? `[${host}]` : host}:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))));
  }

  async close(): Promise<void> {
    for (const r of this.records.values()) r.session?.stream.end();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }

  /**
   * Sends no agent anything until releaseStates(). An operator listens before its caches have synced: an agent whose stream
   * the old operator ended (a helm upgrade) and that says hello then would get the state of a node not published
   * yet, an empty one, and fail all its pods closed and prune its ipcache until the real state (issue #22).
   */
  holdStates(): void {
    this.held = true;
  }

  /** Ends holdStates: every connected agent gets what was published meanwhile. */
  releaseStates(): void {
    if (!this.held) return;
    this.held = false;
    for (const r of this.records.values()) if (r.session) this.push(r.session);
  }
  private held = false;

  /** Sends the compiler's per-subject deltas as they are wherever they link what a node holds to what it should hold. */
  followSubjectDeltas(links: SubjectDeltaLinks): void {
    this.differ.subjectDeltas = links;
  }

  /** Sends the source's recorded deltas of the shared parts (ipcache, identities, rules) instead of diffing them. */
  followSharedDeltas(links: SharedPartLinks): void {
    this.differ.sharedDeltas = links;
  }

  /**
   * Called whenever an agent acknowledges or refuses (e.g. to refresh policy status), with the policies whose status may
   * read that node otherwise now. After one policy's change a thousand nodes acknowledge it: that policy's status is
   * read again, not every policy's (each a pass over every node).
   */
  onReport(listener: (node: string, moved: MovedPolicies) => void): void {
    this.listeners.push(listener);
  }

  /** Called whenever what a node says of its TracingPolicies may have moved: its report, or its hello (the enforcer runs or not). */
  onRuntimeReport(listener: (node: string) => void): void {
    this.runtimeListeners.push(listener);
  }

  /** Called whenever clusterClassEverywhere(), everyPodClassEverywhere(), worldClassEverywhere() or worldFamilyClassEverywhere() may have moved: an agent's hello said otherwise than the last, or a node was forgotten. */
  onClusterClass(listener: () => void): void {
    this.clusterClassListeners.push(listener);
  }

  /**
   * Whether every agent known (each node's last hello, also of an agent disconnected since: a node mid-upgrade keeps
   * its old agent's word until the new one says hello) looks up the `cluster` entity's class entries. An agent from
   * before them would find none and drop what they allow: while one is known, the entity is compiled per peer.
   */
  clusterClassEverywhere(): boolean {
    for (const r of this.records.values()) if (r.clusterClass !== true) return false;
    return true;
  }

  /** The same for the every-pod class's entries (hello everyPodClass): while an agent without it is known, selectors of every pod are compiled per pod. */
  everyPodClassEverywhere(): boolean {
    for (const r of this.records.values()) if (r.everyPodClass !== true) return false;
    return true;
  }

  /** The same for the world class's entries (hello worldClass): while an agent without it is known, the `world` entity is compiled per CIDR identity. */
  worldClassEverywhere(): boolean {
    for (const r of this.records.values()) if (r.worldClass !== true) return false;
    return true;
  }

  /** The same for the world-ipv4/-ipv6 classes' entries (hello worldFamilyClass): while an agent without it is known, those entities are compiled per peer. */
  worldFamilyClassEverywhere(): boolean {
    for (const r of this.records.values()) if (r.worldFamilyClass !== true) return false;
    return true;
  }

  /** Sets what `node` should hold; its agent (if connected) gets the change as soon as it has acknowledged the previous one. */
  publish(node: string, state: NodeState): void {
    this.desired.set(node, this.differ.canonical(state));
    const s = this.records.get(node)?.session;
    if (s) this.push(s);
  }

  forget(node: string): void {
    this.desired.delete(node);
    const r = this.records.get(node);
    r?.session?.stream.end();
    this.records.delete(node);
    this.answerList = undefined;
    if (r && (r.clusterClass !== true || r.everyPodClass !== true || r.worldClass !== true || r.worldFamilyClass !== true)) for (const l of this.clusterClassListeners) l();
  }

  reports(): NodeReport[] {
    return [...this.records.entries()].map(([node, r]) => ({
      node,
      connected: r.session !== undefined,
      upToDate: r.acked !== undefined && this.holds(r.acked.state, node),
      ...(r.acked ? { ackedVersion: r.acked.version, acked: r.acked.state } : {}),
      ...(r.nack ? { nack: r.nack } : {}),
      ...(r.dnsProxy ? { dnsProxy: true } : {}),
      ...(r.l7Proxy ? { l7Proxy: true } : {}),
    }));
  }

  /** `state` is what `node` should hold: by reference first (an agent that ACKed the latest push holds the very object), compared only otherwise. */
  private holds(state: NodeState, node: string): boolean {
    const desired = this.desired.get(node) ?? EMPTY_STATE;
    return state === desired || this.differ.same(state, desired);
  }

  /**
   * What each node's agent last acknowledged or refused, without comparing it to what it should hold
   * (what policy status needs, per ACK burst). One list until an answer or a node changes: after a
   * change every policy's status asks, and a thousand policies must not copy a thousand nodes each.
   */
  answers(): readonly NodeAnswer[] {
    if (this.answerList) return this.answerList;
    const out: NodeAnswer[] = [];
    for (const [node, r] of this.records) out.push({ node, acked: r.acked?.state, nack: r.nack, ...(r.dnsProxy ? { dnsProxy: true } : {}), ...(r.l7Proxy ? { l7Proxy: true } : {}), ...(r.runtime ? { runtime: true } : {}), ...(r.tracing ? { tracing: r.tracing } : {}) });
    return (this.answerList = out);
  }
  private answerList: readonly NodeAnswer[] | undefined;

  private record(node: string): NodeRecord {
    let r = this.records.get(node);
    if (!r) {
      this.records.set(node, (r = { counter: 0 }));
      this.answerList = undefined;
    }
    return r;
  }

  private accept(stream: Stream): void {
    let session: Session | undefined;
    const helloTimer = setTimeout(() => fail(stream, grpc.status.DEADLINE_EXCEEDED, "no hello"), this.helloTimeoutMs);
    const peerName = certificateName(stream);
    // With an authenticator, the review starts at once and the hello waits for its answer.
    const header = stream.metadata.get("authorization")[0];
    const identity = this.authenticate?.(typeof header === "string" ? header : undefined);
    let queue = Promise.resolve();
    let ended = false;
    stream.on("data", (raw: unknown) => {
      queue = queue.then(() => handle(raw)).catch((e: unknown) => {
        this.log.error({ err: e instanceof Error ? e.message : String(e) }, "agent message handling failed");
        fail(stream, grpc.status.INTERNAL, "internal error");
      });
    });
    const handle = async (raw: unknown): Promise<void> => {
      if (ended || session?.closed) return;
      const parsed = parseUpstream(raw);
      if (!parsed.ok) {
        this.log.warn({ errors: parsed.errors, node: session?.node }, "malformed agent message; closing the stream");
        return fail(stream, grpc.status.INVALID_ARGUMENT, `malformed message: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`);
      }
      const msg = parsed.value;
      if (!session) {
        if (msg.type !== "hello") return fail(stream, grpc.status.INVALID_ARGUMENT, "the first message must be hello");
        if (identity) {
          const who = await identity;
          if (!who.ok) {
            this.events.authFailure?.("token");
            this.log.warn({ node: msg.node, reason: who.reason }, "agent token refused");
            return fail(stream, grpc.status.UNAUTHENTICATED, `agent token refused: ${who.reason}`);
          }
          if (who.node !== msg.node) {
            this.events.authFailure?.("mismatch");
            this.log.warn({ node: msg.node, tokenNode: who.node }, "agent hello does not match its token's node");
            return fail(stream, grpc.status.PERMISSION_DENIED, `token is for a pod on ${who.node}, not ${msg.node}`);
          }
        } else if (peerName !== undefined && peerName !== msg.node) {
          // The node name in the hello must be the one its client certificate was issued to.
          this.events.authFailure?.("certificate");
          this.log.warn({ node: msg.node, certificate: peerName }, "agent hello does not match its certificate");
          return fail(stream, grpc.status.PERMISSION_DENIED, `certificate is for ${peerName}, not ${msg.node}`);
        }
        clearTimeout(helloTimer);
        if (ended) return; // the agent left while its token was being reviewed
        session = this.open(msg.node, msg.lastAppliedVersion, stream, { dns: msg.dnsProxy === true, l7: msg.l7Proxy === true, runtime: msg.runtime === true, clusterClass: msg.clusterClass === true, everyPodClass: msg.everyPodClass === true, worldClass: msg.worldClass === true, worldFamilyClass: msg.worldFamilyClass === true });
        return;
      }
      if (msg.type === "hello") return;
      if (msg.type === "runtime") {
        const r = this.record(session.node);
        r.tracing = msg.policies;
        this.answerList = undefined;
        for (const l of this.runtimeListeners) l(session.node);
        return;
      }
      this.onAnswer(session, msg);
    };
    const close = (): void => {
      ended = true;
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

  private open(node: string, lastApplied: number | undefined, stream: Stream, proxies: { readonly dns: boolean; readonly l7: boolean; readonly runtime: boolean; readonly clusterClass: boolean; readonly everyPodClass: boolean; readonly worldClass: boolean; readonly worldFamilyClass: boolean }): Session {
    const r = this.record(node);
    const classMoved = r.clusterClass !== proxies.clusterClass;
    r.clusterClass = proxies.clusterClass;
    const podClassMoved = r.everyPodClass !== proxies.everyPodClass;
    r.everyPodClass = proxies.everyPodClass;
    const worldClassMoved = r.worldClass !== proxies.worldClass;
    r.worldClass = proxies.worldClass;
    const worldFamilyClassMoved = r.worldFamilyClass !== proxies.worldFamilyClass;
    r.worldFamilyClass = proxies.worldFamilyClass;
    const dnsProxy = proxies.dns;
    const proxyMoved = (r.dnsProxy ?? false) !== proxies.dns || (r.l7Proxy ?? false) !== proxies.l7;
    r.dnsProxy = proxies.dns;
    r.l7Proxy = proxies.l7;
    const runtimeMoved = (r.runtime ?? false) !== proxies.runtime;
    r.runtime = proxies.runtime;
    if (!proxies.runtime) r.tracing = undefined; // an agent without the enforcer enforces none
    r.session?.stream.end(); // a newer connection of the same agent replaces the old one
    const s = new Session(node, stream);
    r.session = s;
    // Versions only grow, also across an operator restart (the agent tells us where it was).
    r.counter = Math.max(r.counter, lastApplied ?? 0);
    if (lastApplied !== undefined && r.acked?.version === lastApplied) s.base = r.acked;
    this.log.info({ node, lastApplied, resume: s.base !== undefined, dnsProxy, l7Proxy: proxies.l7 }, "agent connected");
    if (proxyMoved) {
      // What the node enforces of DNS rules, toFQDNs and HTTP rules changed with no new state: the policies' status reads it again.
      this.answerList = undefined;
      for (const l of this.listeners) l(node, "all");
    }
    if (runtimeMoved) {
      this.answerList = undefined;
      for (const l of this.runtimeListeners) l(node);
    }
    if (classMoved) {
      this.log.info({ node, clusterClass: proxies.clusterClass }, proxies.clusterClass ? "agent looks up the cluster entity's class entries" : "agent does not look up the cluster entity's class entries: the entity is compiled per peer while it is known");
    }
    if (podClassMoved) {
      this.log.info({ node, everyPodClass: proxies.everyPodClass }, proxies.everyPodClass ? "agent looks up the every-pod class's entries" : "agent does not look up the every-pod class's entries: selectors of every pod are compiled per pod while it is known");
    }
    if (worldClassMoved) {
      this.log.info({ node, worldClass: proxies.worldClass }, proxies.worldClass ? "agent looks up the world class's entries" : "agent does not look up the world class's entries: the world entity is compiled per CIDR identity while it is known");
    }
    if (worldFamilyClassMoved) {
      this.log.info({ node, worldFamilyClass: proxies.worldFamilyClass }, proxies.worldFamilyClass ? "agent looks up the world-ipv4/-ipv6 classes' entries" : "agent does not look up the world-ipv4/-ipv6 classes' entries: those entities are compiled per peer while it is known");
    }
    if (classMoved || podClassMoved || worldClassMoved || worldFamilyClassMoved) for (const l of this.clusterClassListeners) l();
    this.push(s);
    return s;
  }

  private push(s: Session): void {
    if (this.held || s.closed || s.inFlight) return; // one message in flight; the ACK triggers the next
    const r = this.record(s.node);
    const target = this.desired.get(s.node) ?? EMPTY_STATE;
    const delta = s.base ? this.differ.diff(s.base.state, target) : undefined;
    if (delta === null) return; // the agent holds it already
    if (r.nack && this.differ.same(r.nack.state, target)) return; // refused already: wait for a change
    const version = ++r.counter;
    const nonce = randomUUID();
    const msg: Downstream = s.base && delta
      ? { type: "delta", version, baseVersion: s.base.version, nonce, ...delta }
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
    this.answerList = undefined;
    const moved: MovedPolicies = msg.type === "nack" || r.nack !== undefined || !r.acked ? "all" : movedPolicies(r.acked.state.policyGenerations, sent.state.policyGenerations);
    if (msg.type === "ack") {
      s.base = { version: sent.version, state: sent.state };
      r.acked = s.base;
      r.nack = undefined;
    } else {
      // The agent keeps its last good state; the next attempt is a full snapshot of a newer state.
      r.nack = { version: sent.version, error: msg.error, state: sent.state };
      s.base = undefined;
      this.events.nack?.(s.node);
      this.log.warn({ node: s.node, version: sent.version, error: msg.error }, "agent refused state");
    }
    for (const l of this.listeners) l(s.node, moved);
    this.push(s);
  }
}

const NO_POLICIES: ReadonlySet<string> = new Set();
/** The last answer of movedPolicies per `from` list: every node moves from the same list to the same list, so one change is compared once, not once per node. */
const movedMemo = new WeakMap<readonly PolicyGeneration[], { readonly to: readonly PolicyGeneration[]; readonly keys: ReadonlySet<string> }>();

/** The keys whose entry (uid, generation) differs between two policy generation lists, or that only one of them has. */
export function movedPolicies(from: readonly PolicyGeneration[], to: readonly PolicyGeneration[]): ReadonlySet<string> {
  if (from === to) return NO_POLICIES;
  const memo = movedMemo.get(from);
  if (memo?.to === to) return memo.keys;
  const before = new Map(from.map((g) => [g.key, g]));
  const keys = new Set<string>();
  for (const g of to) {
    const was = before.get(g.key);
    before.delete(g.key);
    if (was?.uid !== g.uid || was.generation !== g.generation) keys.add(g.key);
  }
  for (const key of before.keys()) keys.add(key);
  movedMemo.set(from, { to, keys });
  return keys;
}

/** A node's stream state for the metrics: disconnected, refused the latest state, holds it, or not there yet. */
export function nodeStreamState(r: NodeReport): NodeStreamState {
  if (!r.connected) return "disconnected";
  if (r.nack) return "nacked";
  return r.upToDate ? "acked" : "behind";
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
