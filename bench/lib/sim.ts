// What the cluster benchmarks share: an admin client of the real API server over keep-alive HTTPS, light simulated agents on the operator's stream, waiting for all of them, and process figures (CPU, RSS, live heap).
import { createWriteStream, readFileSync } from "node:fs";
import { Agent as HttpsAgent, request } from "node:https";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Downstream, PolicyGeneration, Upstream } from "../../core/wire.ts";
import { DistributionClient } from "../../controllers/testing/agent.ts";
import type { OperatorProcess } from "../../controllers/testing/operator-process.ts";
import { sslChannelOptions } from "../../kube/grpc-tls.ts";
import { processTimes } from "./machine-cpu.ts";

/** The admin client of the API server over keep-alive HTTPS (no kubectl process per change, so its start-up is not timed). */
export class Api {
  private readonly agent: HttpsAgent;
  constructor(
    private readonly server: string,
    tls: { ca: Buffer; cert: Buffer; key: Buffer },
    maxSockets = 16,
  ) {
    this.agent = new HttpsAgent({ keepAlive: true, maxSockets, ...tls });
  }
  /** One request; the parsed JSON answer, or the raw text when `raw`. Non-2xx answers reject with the status and the start of the body. */
  call(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<Record<string, unknown>> {
    return this.text(method, path, body, contentType).then((t) => JSON.parse(t) as Record<string, unknown>);
  }
  text(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<string> {
    const data = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, this.server), { method, agent: this.agent, headers: data ? { "content-type": contentType, "content-length": Buffer.byteLength(data) } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`));
          resolve(text);
        });
      });
      req.on("error", reject);
      req.end(data);
    });
  }
  close(): void {
    this.agent.destroy();
  }
}

/**
 * Prefixes as small numbers shared by every simulated agent, so a thousand agents can each say
 * which prefixes their ipcache holds in a byte per prefix instead of a set of strings.
 */
export class PrefixIndex {
  private readonly ids = new Map<string, number>();
  private trackedIds = new Uint8Array(1024);
  idOf(prefix: string): number {
    let n = this.ids.get(prefix);
    if (n === undefined) this.ids.set(prefix, (n = this.ids.size));
    return n;
  }
  /** Marks `prefix` as one the benchmark counts (LiteAgent.tracked): before any agent can hold it. */
  track(prefix: string): void {
    const n = this.idOf(prefix);
    if (n >= this.trackedIds.length) {
      const grown = new Uint8Array(Math.max(n + 1, this.trackedIds.length * 2));
      grown.set(this.trackedIds);
      this.trackedIds = grown;
    }
    this.trackedIds[n] = 1;
  }
  isTracked(n: number): boolean {
    return this.trackedIds[n] === 1;
  }
  get size(): number {
    return this.ids.size;
  }
}

/**
 * A light simulated agent: ACKs every message at once and keeps only what the benchmarks look at:
 * the policy generations it holds and which ipcache prefixes (by PrefixIndex number) it has.
 */
export class LiteAgent {
  reconnects = 0;
  messages = 0;
  snapshots = 0;
  bytes = 0;
  /** How many prefixes the ipcache holds, and how many of them the benchmark tracks (PrefixIndex.track). */
  ipcacheSize = 0;
  tracked = 0;
  private generations: readonly PolicyGeneration[] = [];
  private byKey: Map<string, number> | undefined;
  private present = new Uint8Array(1024);
  private closed = false;
  private readonly client: grpc.Client;
  private call: grpc.ClientDuplexStream<Upstream, Downstream> | undefined;
  constructor(
    address: string,
    creds: grpc.ChannelCredentials,
    readonly node: string,
    private readonly prefixes: PrefixIndex,
    private readonly onUpdate: (a: LiteAgent, at: number) => void,
    private readonly log: Logger,
  ) {
    // As the real agent's: a snapshot of a 50,000-pod ipcache is larger than gRPC's default 4 MiB.
    this.client = new DistributionClient(address, creds, { ...sslChannelOptions(address), "grpc.max_receive_message_length": -1 });
    this.connect();
  }
  /** How many policy generations this agent holds. */
  get generationCount(): number {
    return this.generations.length;
  }
  /** The generation of policy `key` this agent holds (0 when none). */
  generationOf(key: string): number {
    this.byKey ??= new Map(this.generations.map((g) => [g.key, g.generation]));
    return this.byKey.get(key) ?? 0;
  }
  has(prefix: string): boolean {
    const n = this.prefixes.idOf(prefix);
    return n < this.present.length && this.present[n] === 1;
  }
  private set(prefix: string, on: boolean): void {
    const n = this.prefixes.idOf(prefix);
    if (n >= this.present.length) {
      const grown = new Uint8Array(Math.max(n + 1, this.present.length * 2));
      grown.set(this.present);
      this.present = grown;
    }
    if (this.present[n] === (on ? 1 : 0)) return;
    this.present[n] = on ? 1 : 0;
    this.ipcacheSize += on ? 1 : -1;
    if (this.prefixes.isTracked(n)) this.tracked += on ? 1 : -1;
  }
  /** Opens the stream; a failed or broken one is opened again after a second (a fresh hello gets a snapshot). */
  private connect(): void {
    const call = (this.call = (this.client as unknown as { Stream: () => grpc.ClientDuplexStream<Upstream, Downstream> }).Stream());
    call.on("data", (m: Downstream) => {
      this.messages++;
      if (m.type === "snapshot") {
        this.snapshots++;
        this.present.fill(0);
        this.ipcacheSize = 0;
        this.tracked = 0;
        for (const e of m.state.ipcache) this.set(e.prefix, true);
        this.generations = m.state.policyGenerations;
        this.byKey = undefined;
      } else {
        for (const e of m.ipcacheUpserts) this.set(e.prefix, true);
        for (const p of m.ipcacheRemovals) this.set(p, false);
        this.applyGenerations(m);
      }
      call.write({ type: "ack", version: m.version, nonce: m.nonce });
      this.onUpdate(this, performance.now());
    });
    call.on("error", (e: Error) => {
      if (this.closed) return;
      if (this.reconnects++ === 0) this.log.warn({ node: this.node, err: e.message }, "agent stream error; reconnecting (logged once per agent)");
      setTimeout(() => this.closed || this.connect(), 1000);
    });
    call.write({ type: "hello", node: this.node, clusterClass: true, everyPodClass: true, worldClass: true, worldFamilyClass: true });
  }
  /** A delta's policy generations: what moved (or, from an operator before they travelled as deltas, the whole list). */
  private applyGenerations(m: Extract<Downstream, { type: "delta" }>): void {
    const whole = (m as { policyGenerations?: readonly PolicyGeneration[] }).policyGenerations;
    if (whole) {
      this.generations = whole;
      this.byKey = undefined;
      return;
    }
    if (m.policyGenerationUpserts.length + m.policyGenerationRemovals.length === 0) return;
    const byKey = new Map(this.generations.map((g) => [g.key, g]));
    for (const g of m.policyGenerationUpserts) byKey.set(g.key, g);
    for (const k of m.policyGenerationRemovals) byKey.delete(k);
    this.generations = [...byKey.values()];
    this.byKey = undefined;
  }
  close(): void {
    this.closed = true;
    this.call?.end();
    this.client.close();
  }
}

/** Resolves when every agent satisfies `pred`, with the time the last one did. */
export class Hub {
  readonly agents: LiteAgent[] = [];
  private waiting: { pred: (a: LiteAgent) => boolean; left: Set<LiteAgent>; done: (t: number) => void } | undefined;
  readonly onUpdate = (a: LiteAgent, at: number): void => {
    const w = this.waiting;
    if (!w || !w.left.has(a) || !w.pred(a)) return;
    w.left.delete(a);
    if (w.left.size === 0) {
      this.waiting = undefined;
      w.done(at);
    }
  };
  waitAll(what: string, pred: (a: LiteAgent) => boolean, timeoutMs = 60_000): Promise<number> {
    const left = new Set(this.agents.filter((a) => !pred(a)));
    if (left.size === 0) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`${what}: ${left.size}/${this.agents.length} agents not there after ${Math.round(timeoutMs)} ms (e.g. ${[...left].slice(0, 3).map((a) => a.node).join(", ")})`));
      }, timeoutMs);
      this.waiting = {
        pred,
        left,
        done: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
    });
  }
}

/** Runs `fn` over `items` with `n` at a time; throws once `deadline` (performance.now()) has passed. */
export async function limited<T>(items: readonly T[], n: number, deadline: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) {
        if (performance.now() > deadline) throw new Error(`only ${i}/${items.length} objects created in time`);
        await fn(items[i++] as T);
      }
    }),
  );
}

export function percentile(xs: readonly number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round((s[Math.max(0, Math.ceil(q * s.length) - 1)] ?? 0) * 10) / 10;
}

/** CPU seconds (user + system), resident and peak resident memory of a process, from /proc. */
export function procStats(pid: number): { cpuS: number; rssMib: number; hwmMib: number } {
  const t = processTimes(pid);
  const cpuS = (t.user + t.system) / 1e6;
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
  return { cpuS, rssMib: kb("VmRSS") / 1024, hwmMib: kb("VmHWM") / 1024 };
}

/** A session on the operator's inspector (started with `--inspect=…`): `call` answers a method's result; `on` hears its events. */
async function inspectorSession(op: OperatorProcess): Promise<{ call: (method: string, params?: Record<string, unknown>) => Promise<Record<string, unknown>>; on: (method: string, f: (params: Record<string, unknown>) => void) => void; close: () => void } | undefined> {
  const url = await op.inspectorUrl().catch(() => undefined);
  if (!url) return undefined;
  const ws = new WebSocket(url);
  const answers = new Map<number, (r: Record<string, unknown>) => void>();
  const listeners = new Map<string, (params: Record<string, unknown>) => void>();
  ws.addEventListener("message", (ev) => {
    const m = JSON.parse(String(ev.data)) as { id?: number; method?: string; params?: Record<string, unknown>; result?: Record<string, unknown> };
    if (m.id !== undefined) answers.get(m.id)?.(m.result ?? {});
    else if (m.method !== undefined) listeners.get(m.method)?.(m.params ?? {});
  });
  try {
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error("inspector connection failed")), { once: true });
    });
  } catch (e) {
    ws.close();
    throw e;
  }
  let id = 0;
  return {
    call: (method, params) =>
      new Promise((resolve) => {
        answers.set(++id, resolve);
        ws.send(JSON.stringify({ id, method, params }));
      }),
    on: (method, f) => void listeners.set(method, f),
    close: () => ws.close(),
  };
}

/**
 * The operator's live V8 heap: a full garbage collection through its inspector (HeapProfiler.collectGarbage),
 * then the used size (Runtime.getHeapUsage). What /metrics prints at a given moment also holds garbage
 * not yet collected; this is what the operator's data keeps alive. Null when the inspector does not answer in `ms`.
 */
export async function liveHeapMib(op: OperatorProcess, log: Logger, ms = 10_000): Promise<number | null> {
  let session: Awaited<ReturnType<typeof inspectorSession>>;
  try {
    session = await inspectorSession(op);
    if (!session) return null;
    const { call } = session;
    const timeout = new Promise<null>((resolve) => setTimeout(() => resolve(null), ms).unref());
    const used = await Promise.race([
      (async () => {
        await call("HeapProfiler.enable");
        await call("HeapProfiler.collectGarbage");
        return Number((await call("Runtime.getHeapUsage")).usedSize);
      })(),
      timeout,
    ]);
    return used === null || !Number.isFinite(used) ? null : Math.round((used / 2 ** 20) * 10) / 10;
  } catch (e) {
    log.warn({ err: String(e) }, "live heap not measured");
    return null;
  } finally {
    session?.close();
  }
}

/**
 * Writes a V8 heap snapshot of the operator (after a full GC, as DevTools takes one) to `file`, for
 * Chrome DevTools' Memory tab (Load profile). Logs and returns false when it fails.
 */
export async function writeHeapSnapshot(op: OperatorProcess, file: string, log: Logger): Promise<boolean> {
  let session: Awaited<ReturnType<typeof inspectorSession>>;
  try {
    session = await inspectorSession(op);
    if (!session) return false;
    const out = createWriteStream(file);
    session.on("HeapProfiler.addHeapSnapshotChunk", (p) => void out.write(String(p.chunk)));
    await session.call("HeapProfiler.enable");
    await session.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
    log.info({ file }, "operator heap snapshot written");
    return true;
  } catch (e) {
    log.warn({ err: String(e), file }, "operator heap snapshot not written");
    return false;
  } finally {
    session?.close();
  }
}

/** The operator's used V8 heap from its /metrics; null when it does not answer within 5 s (e.g. a saturated event loop). */
export async function heapMib(op: OperatorProcess): Promise<number | null> {
  const port = await op.healthPort();
  const body = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text(), () => "");
  const m = /^membrane_operator_nodejs_heap_size_used_bytes (\S+)/m.exec(body);
  return m ? Math.round((Number(m[1]) / 2 ** 20) * 10) / 10 : null;
}
