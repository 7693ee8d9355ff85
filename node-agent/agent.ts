// The node agent: follows the operator's distribution stream into the datapath maps and serves the CNI plugin's endpoint socket.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { PolicyEntry, SubjectPolicy } from "../core/model.ts";
import { entryKeyString } from "../core/mapstate.ts";
import { type Downstream, type NodeState, type Upstream, DISTRIBUTION_SERVICE } from "../core/wire.ts";
import { EMPTY_STATE, applyDelta, canonicalState } from "../core/nodestate.ts";
import { Backoff, type BackoffOptions } from "../controllers/runtime/backoff.ts";
import { RESERVED_IDENTITIES } from "../core/identity.ts";
import { LAYOUT, encodeIpcacheKey, encodeIpcacheValue, encodePolicyKey, encodePolicyValue, type EndpointEntry, type IpcacheEntry } from "./bpf/layout.ts";
import type { Datapath } from "./bpf/datapath.ts";
import { type AgentReply, type AgentRequest, type EndpointAddRequest, EndpointSocketServer } from "./cni/agent-socket.ts";
import { Observer, monotonicWallClock } from "./observer/observer.ts";
import type { EnrichLookups } from "./observer/flow.ts";
import type { FlowBufferOptions } from "./observer/buffer.ts";
import type { FlowExporterOptions } from "./observer/export.ts";
import type { ObserverListen } from "./observer/server.ts";
import type { RuleOrigin } from "../core/model.ts";

/** A pod whose identity is not known yet runs as `reserved:init`: enforced both ways, no allow entry (fail closed). */
export const INIT_IDENTITY = RESERVED_IDENTITIES.find((r) => r.name === "init")?.id ?? 5;

const StreamClient = grpc.makeGenericClientConstructor(DISTRIBUTION_SERVICE, "Distribution");
type Call = grpc.ClientDuplexStream<Upstream, Downstream>;

/** The datapath operations the agent uses (the real `Datapath`, or a wrapper in tests). */
export type AgentDatapath = Pick<Datapath, "setSubjectPolicy" | "setIpcache" | "deleteIpcache" | "setEndpoint" | "deleteEndpoint" | "attachEndpoint" | "detachEndpoint" | "object"> &
  /** Verdict events, needed only when the agent runs an observer. */
  Partial<Pick<Datapath, "onEvents">>;

/** The agent's observer: where its API listens, the ring's bounds, and the optional JSON-lines export. */
export interface AgentObserverOptions {
  readonly listen: ObserverListen;
  readonly buffer?: FlowBufferOptions;
  readonly export?: FlowExporterOptions;
}

/** Drops are never sampled; a connection's forwarded flows are kept at most once a second. */
export const DEFAULT_FLOW_BUFFER: FlowBufferOptions = { capacity: 4096, forwardedSampleMs: 1000 };

export interface AgentOptions {
  readonly nodeName: string;
  /** host:port of the operator's distribution server. */
  readonly operator: string;
  readonly tls: { readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer };
  readonly datapath: AgentDatapath;
  readonly cniSocket: string;
  /** The network namespace (name under /var/run/netns) holding the node's host-side veths; the agent's own when absent. */
  readonly netns?: string;
  readonly log: Logger;
  readonly backoff?: BackoffOptions;
  /** This node's underlay address: it is `reserved:host` in the ipcache and never a tunnel endpoint. */
  readonly nodeIP?: string;
  /** Where the registered endpoints are kept across agent restarts (JSON); in memory only when absent. */
  readonly endpointsFile?: string;
  /** Serve the datapath's verdicts, enriched from this agent's state (see observer/README.md). */
  readonly observer?: AgentObserverOptions;
}

interface Endpoint {
  readonly containerId: string;
  readonly namespace?: string;
  readonly pod?: string;
  readonly hostIfname: string;
  readonly hostIfindex: number;
  readonly ips: readonly string[];
}

/** What the agent reports about itself (for status and tests). */
export interface AgentStatus {
  readonly connected: boolean;
  readonly version: number | undefined;
  readonly lastError: string | undefined;
  readonly endpoints: number;
}

export class NodeAgent {
  /** The state the maps hold (last applied and acknowledged). */
  private applied: NodeState = EMPTY_STATE;
  private version: number | undefined;
  private lastError: string | undefined;
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly socket: EndpointSocketServer;
  private readonly backoff: Backoff;
  private client: grpc.Client | undefined;
  private call: Call | undefined;
  private connected = false;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private flowObserver: Observer | undefined;
  /** Lookup tables for enrichment, rebuilt when the applied state or the endpoints change. */
  private lookupIndex: { state: NodeState; identities: Map<number, readonly string[]>; rules: Map<number, RuleOrigin> } | undefined;
  private endpointsByIp: Map<string, { namespace: string; pod: string }> | undefined;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log.child({ node: opts.nodeName });
    this.socket = new EndpointSocketServer(opts.cniSocket, (r) => this.onEndpointRequest(r));
    this.backoff = new Backoff(opts.backoff ?? { baseMs: 200, maxMs: 10_000, jitter: 0.2 });
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.loadEndpoints();
    await this.socket.start();
    this.log.info({ socket: this.opts.cniSocket }, "endpoint socket serving");
    if (this.opts.observer) {
      // Visibility is not enforcement: without an observer the agent still enforces, and says so.
      await this.startObserver(this.opts.observer).catch((err: Error) => this.log.error({ error: err.message }, "observer not started; verdicts are counted but not served"));
    }
    this.client = new StreamClient(this.opts.operator, grpc.credentials.createSsl(this.opts.tls.ca, this.opts.tls.key, this.opts.tls.cert), {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
    });
    this.connect();
  }

  /** Stops talking to the operator and the CNI plugin; the maps and attached programs stay (enforcement continues). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.call = undefined;
    this.client?.close();
    this.client = undefined;
    await this.socket.stop();
    await this.flowObserver?.stop();
    this.flowObserver = undefined;
    this.log.info({ version: this.version }, "agent stopped; maps keep enforcing");
  }

  /** Drops the current stream and reconnects at once, resuming from the last acknowledged version. */
  reconnect(): void {
    this.call?.cancel();
  }

  status(): AgentStatus {
    return { connected: this.connected, version: this.version, lastError: this.lastError, endpoints: this.endpoints.size };
  }

  /** The state the maps hold, as the agent last applied it. */
  state(): NodeState {
    return this.applied;
  }

  /** The running observer (its ring and counters), when the agent was started with one. */
  get observer(): Observer | undefined {
    return this.flowObserver;
  }

  // ---------------------------------------------------------------- the observer

  private async startObserver(o: AgentObserverOptions): Promise<void> {
    const onEvents = this.opts.datapath.onEvents?.bind(this.opts.datapath);
    if (!onEvents) throw new Error("observer: the datapath delivers no verdict events");
    const observer = new Observer({ lookups: this.enrichLookups(), buffer: o.buffer ?? DEFAULT_FLOW_BUFFER, listen: o.listen, ...(o.export ? { export: o.export } : {}), log: this.log });
    try {
      await observer.start();
    } catch (err) {
      await observer.stop(); // closes the export file it may have opened
      throw err;
    }
    this.flowObserver = observer;
    onEvents(observer.handle);
  }

  /** Enrichment from what this agent knows: identity labels and rule origins from the applied state, pods from the CNI's registrations. */
  enrichLookups(): EnrichLookups {
    const index = () => {
      if (this.lookupIndex?.state !== this.applied) {
        const identities = new Map<number, readonly string[]>(RESERVED_IDENTITIES.map((r) => [r.id, [`reserved:${r.name}`]]));
        for (const i of this.applied.identities) identities.set(i.id, i.labels);
        this.lookupIndex = { state: this.applied, identities, rules: new Map(this.applied.rules.map((r) => [r.id, r.origin])) };
      }
      return this.lookupIndex;
    };
    return {
      node: this.opts.nodeName,
      identityLabels: (id) => index().identities.get(id),
      ruleOrigin: (id) => index().rules.get(id),
      endpointByIp: (ip) => {
        if (!this.endpointsByIp) {
          this.endpointsByIp = new Map();
          for (const ep of this.endpoints.values()) {
            if (ep.namespace === undefined || ep.pod === undefined) continue;
            for (const a of ep.ips) this.endpointsByIp.set(a, { namespace: ep.namespace, pod: ep.pod });
          }
        }
        return this.endpointsByIp.get(ip);
      },
      wallClock: monotonicWallClock(),
    };
  }

  // ---------------------------------------------------------------- the stream

  private connect(): void {
    if (this.stopped || !this.client) return;
    const call = (this.client as unknown as { Stream: () => Call }).Stream();
    this.call = call;
    let ended = false;
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      if (this.connected) this.log.warn({ why, version: this.version }, "operator stream lost; enforcing the last applied state");
      this.connected = false;
      if (this.stopped) return;
      const delay = this.backoff.next();
      this.log.info({ delayMs: delay, attempt: this.backoff.attempts }, "reconnecting to the operator");
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
    call.on("data", (m: unknown) => {
      if (!this.connected) this.log.info({ operator: this.opts.operator, resumeFrom: this.version }, "operator stream connected");
      this.connected = true;
      this.backoff.reset();
      this.onMessage(call, m);
    });
    call.on("status", (s: grpc.StatusObject) => onEnd(`${grpc.status[s.code] ?? s.code}: ${s.details}`));
    call.on("error", (e: Error) => onEnd(e.message));
    call.on("end", () => onEnd("stream ended"));
    call.write({ type: "hello", node: this.opts.nodeName, ...(this.version !== undefined ? { lastAppliedVersion: this.version } : {}) });
  }

  private onMessage(call: Call, raw: unknown): void {
    const m = raw as Partial<Downstream> | null;
    if (!m || typeof m !== "object" || typeof m.version !== "number" || typeof m.nonce !== "string" || (m.type !== "snapshot" && m.type !== "delta")) {
      this.log.warn({ message: JSON.stringify(raw)?.slice(0, 200) }, "malformed message from the operator; ignored");
      return;
    }
    const msg = m as Downstream;
    let target: NodeState;
    try {
      if (msg.type === "snapshot") target = canonicalState(msg.state);
      else {
        if (msg.baseVersion !== this.version) throw new Error(`delta ${msg.version} applies on version ${msg.baseVersion}, but this agent holds ${this.version ?? "nothing"}`);
        target = applyDelta(this.applied, msg);
      }
      this.apply(this.applied, target, msg.type === "snapshot");
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.lastError = error;
      this.log.error({ version: msg.version, kind: msg.type, error }, "state refused; keeping the last applied state");
      call.write({ type: "nack", version: msg.version, nonce: msg.nonce, error });
      return;
    }
    this.applied = target;
    this.version = msg.version;
    this.lastError = undefined;
    call.write({ type: "ack", version: msg.version, nonce: msg.nonce });
    this.log.info({ version: msg.version, kind: msg.type, subjects: target.policies.length, ipcache: target.ipcache.length }, "state applied");
  }

  /**
   * Moves the maps from `from` to `to` with no window: the target is validated before anything is
   * written; then each subject gets the union of its old and new entries, the ipcache and endpoint
   * flags switch, stale entries go, and last the ipcache prefixes that left. A failure while
   * writing restores `from` (best effort) and rethrows.
   */
  private apply(from: NodeState, to: NodeState, snapshot: boolean): void {
    validate(to, this.opts.nodeIP);
    try {
      this.write(from, to, snapshot);
    } catch (err) {
      try {
        this.write(to, from, false);
      } catch (rollback) {
        this.log.error({ error: (rollback as Error).message }, "restoring the last applied state failed");
      }
      throw err;
    }
  }

  private write(from: NodeState, to: NodeState, snapshot: boolean): void {
    const dp = this.opts.datapath;
    const oldPolicies = new Map(from.policies.map((p) => [p.subject, p]));
    // 1. adds: every subject holds old ∪ new (new values win), flags not yet changed.
    for (const p of to.policies) {
      const merged = new Map<string, PolicyEntry>((oldPolicies.get(p.subject)?.entries ?? []).map((e) => [entryKeyString(e), e]));
      for (const e of p.entries) merged.set(entryKeyString(e), e);
      dp.setSubjectPolicy({ ...p, entries: [...merged.values()] });
    }
    // 2. the ipcache switches to the new identities.
    const oldIpc = new Map(datapathIpcache(from, this.opts.nodeIP).map((e) => [e.cidr, e]));
    const newIpc = datapathIpcache(to, this.opts.nodeIP);
    for (const e of newIpc) {
      const old = oldIpc.get(e.cidr);
      if (snapshot || !old || JSON.stringify(old) !== JSON.stringify(e)) dp.setIpcache(e);
    }
    // 3. endpoints take their identity and enforcement from the new state.
    for (const ep of this.endpoints.values()) this.writeEndpoint(ep, to);
    // 4. removals: exact new entries, subjects that left lose theirs (including ones pinned before a restart).
    for (const p of to.policies) dp.setSubjectPolicy(p);
    const keep = new Set(to.policies.map((p) => p.subject));
    const gone = new Set(from.policies.map((p) => p.subject).filter((s) => !keep.has(s)));
    if (snapshot) for (const s of pinnedSubjects(dp)) if (!keep.has(s)) gone.add(s);
    for (const s of gone) dp.setSubjectPolicy({ subject: s, ingressEnforced: true, egressEnforced: true, entries: [] });
    // 5. prefixes that left the ipcache (on a snapshot also those pinned before a restart).
    const keepIpc = new Set(newIpc.map((e) => e.cidr));
    for (const cidr of oldIpc.keys()) if (!keepIpc.has(cidr)) tryDelete(() => dp.deleteIpcache(cidr));
    if (snapshot) {
      const keepKeys = new Set(newIpc.map((e) => encodeIpcacheKey(e.cidr).toString("hex")));
      const ipcacheMap = dp.object.map("membrane_ipcache");
      for (const k of ipcacheMap.keys()) if (!keepKeys.has(k.toString("hex"))) ipcacheMap.delete(k);
    }
  }

  // ---------------------------------------------------------------- endpoints

  private async onEndpointRequest(r: AgentRequest): Promise<AgentReply> {
    await Promise.resolve();
    return r.op === "endpoint-add" ? this.addEndpoint(r) : this.deleteEndpoint(r.containerId, r.hostIfname);
  }

  private addEndpoint(r: EndpointAddRequest): AgentReply {
    const ep: Endpoint = {
      containerId: r.containerId,
      ...(r.namespace !== undefined ? { namespace: r.namespace } : {}),
      ...(r.pod !== undefined ? { pod: r.pod } : {}),
      hostIfname: r.hostIfname,
      hostIfindex: r.hostIfindex,
      ips: r.ips,
    };
    const previous = this.endpoints.get(r.containerId);
    if (previous && previous.hostIfindex !== ep.hostIfindex) this.detach(previous);
    // The endpoint entry is written before the programs attach, so the first packet is already judged.
    let entry: EndpointEntry;
    try {
      entry = this.writeEndpoint(ep, this.applied);
      this.opts.datapath.attachEndpoint(ep.hostIfindex, this.opts.netns);
    } catch (err) {
      // Refused: the plugin undoes the link, so nothing of this endpoint may stay behind.
      for (const ip of ep.ips) tryDelete(() => this.opts.datapath.deleteEndpoint(ip));
      if (previous && this.endpoints.delete(r.containerId)) this.saveEndpoints();
      this.log.error({ namespace: r.namespace, name: r.pod, containerId: r.containerId, ifindex: r.hostIfindex, error: (err as Error).message }, "endpoint add failed");
      throw err;
    }
    this.endpoints.set(r.containerId, ep);
    this.saveEndpoints();
    this.log.info(
      { namespace: r.namespace, name: r.pod, containerId: r.containerId, ips: r.ips, ifindex: r.hostIfindex, identity: entry.identity, resolved: entry.identity !== INIT_IDENTITY, repeat: previous !== undefined },
      "endpoint added",
    );
    return { ok: true };
  }

  private deleteEndpoint(containerId: string, hostIfname: string): AgentReply {
    const ep = this.endpoints.get(containerId);
    if (!ep) {
      this.log.info({ containerId, hostIfname }, "endpoint delete for an unknown endpoint; nothing to do");
      return { ok: true };
    }
    this.detach(ep);
    this.endpoints.delete(containerId);
    this.saveEndpoints();
    this.log.info({ namespace: ep.namespace, name: ep.pod, containerId, ips: ep.ips }, "endpoint deleted");
    return { ok: true };
  }

  /** Endpoints registered before a restart: their programs and map entries are still in place; the next state rewrites their entries. */
  private loadEndpoints(): void {
    const file = this.opts.endpointsFile;
    if (!file || !fs.existsSync(file)) return;
    const saved = JSON.parse(fs.readFileSync(file, "utf8")) as Endpoint[];
    for (const ep of saved) this.endpoints.set(ep.containerId, ep);
    this.endpointsByIp = undefined;
    this.log.info({ endpoints: saved.length, file }, "endpoints restored");
  }

  private saveEndpoints(): void {
    this.endpointsByIp = undefined; // every change to `endpoints` ends here
    const file = this.opts.endpointsFile;
    if (!file) return;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify([...this.endpoints.values()]));
    fs.renameSync(tmp, file);
  }

  private detach(ep: Endpoint): void {
    this.opts.datapath.detachEndpoint(ep.hostIfindex, this.opts.netns);
    for (const ip of ep.ips) this.opts.datapath.deleteEndpoint(ip);
  }

  /** Writes the endpoint's map entries for `state`: its identity from the ipcache, its flags from that identity's policy; fail closed when either is missing. */
  private writeEndpoint(ep: Endpoint, state: NodeState): EndpointEntry {
    let entry: EndpointEntry | undefined;
    for (const ip of ep.ips) {
      entry = endpointEntry(ip, ep.hostIfindex, state);
      this.opts.datapath.setEndpoint(entry);
    }
    return entry as EndpointEntry;
  }
}

/** The endpoint entry of one pod address under `state`. */
export function endpointEntry(ip: string, ifindex: number, state: NodeState): EndpointEntry {
  const identity = state.ipcache.find((e) => e.prefix === hostPrefix(ip) || e.prefix === ip)?.identity;
  const policy: SubjectPolicy | undefined = identity === undefined ? undefined : state.policies.find((p) => p.subject === identity);
  if (identity === undefined) return { ip, ifindex, identity: INIT_IDENTITY, ingressEnforced: true, egressEnforced: true };
  if (!policy) return { ip, ifindex, identity, ingressEnforced: true, egressEnforced: true };
  return { ip, ifindex, identity, ingressEnforced: policy.ingressEnforced, egressEnforced: policy.egressEnforced };
}

const HOST_IDENTITY = RESERVED_IDENTITIES.find((r) => r.name === "host")?.id ?? 1;
const REMOTE_NODE_IDENTITY = RESERVED_IDENTITIES.find((r) => r.name === "remote-node")?.id ?? 6;

/**
 * The ipcache as the datapath needs it: the operator's prefixes (tunnelled to their node unless it
 * is this one), plus every other node that hosts a pod as `reserved:remote-node` with the node flag
 * (VNIs from it are trusted), plus this node as `reserved:host`. The operator's own entries win.
 */
export function datapathIpcache(s: NodeState, nodeIP?: string): IpcacheEntry[] {
  const out = new Map<string, IpcacheEntry>();
  // Another (IPv4) node: a trusted source of VNI identities and the tunnel endpoint of its pods.
  const otherNode = (node?: string): node is string => node !== undefined && node !== nodeIP && !node.includes(":");
  for (const e of s.ipcache) {
    if (otherNode(e.node)) out.set(hostPrefix(e.node), { cidr: hostPrefix(e.node), identity: REMOTE_NODE_IDENTITY, node: true });
  }
  if (nodeIP) out.set(hostPrefix(nodeIP), { cidr: hostPrefix(nodeIP), identity: HOST_IDENTITY });
  for (const e of s.ipcache) {
    // A node's own address (the operator sends each one as remote-node): this node stays reserved:host, another keeps the node flag and is no tunnel endpoint.
    if (e.node !== undefined && e.prefix === hostPrefix(e.node)) {
      if (otherNode(e.node)) out.set(e.prefix, { cidr: e.prefix, identity: e.identity, node: true });
      continue;
    }
    out.set(e.prefix, { cidr: e.prefix, identity: e.identity, ...(otherNode(e.node) ? { tunnelEndpoint: e.node } : {}) });
  }
  return [...out.values()];
}

const hostPrefix = (ip: string): string => (ip.includes(":") ? `${ip}/128` : `${ip}/32`);

/** Encodes everything the state would write, so a bad value is refused before any map changes; the error names the field. */
export function validate(s: NodeState, nodeIP?: string): void {
  s.ipcache.forEach((e, i) => {
    try {
      encodeIpcacheKey(e.prefix);
      if (e.node !== undefined) encodeIpcacheKey(e.node);
    } catch (err) {
      throw new Error(`ipcache[${i}] (${e.prefix}): ${(err as Error).message}`, { cause: err });
    }
  });
  for (const e of datapathIpcache(s, nodeIP)) encodeIpcacheValue(e);
  s.policies.forEach((p, i) => {
    p.entries.forEach((e, j) => {
      try {
        if (e.subject !== p.subject) throw new Error(`entry subject ${e.subject} is not the policy's subject ${p.subject}`);
        encodePolicyKey(e);
        encodePolicyValue(e);
      } catch (err) {
        throw new Error(`policies[${i}].entries[${j}] (subject ${p.subject}): ${(err as Error).message}`, { cause: err });
      }
    });
  });
}

/** Subjects that have entries in the pinned policy map (e.g. written before this process started). */
function pinnedSubjects(dp: AgentDatapath): Set<number> {
  const offset = LAYOUT.policy_key.fields.subject.offset;
  return new Set(dp.object.map("membrane_policy").keys().map((k) => k.readUInt32LE(offset)));
}

function tryDelete(f: () => void): void {
  try {
    f();
  } catch {
    // a prefix that never made it into the map
  }
}
