// The API client every adapter uses: path-based REST requests, merge patches (incl. /status) and
// streaming watches over node:https, with credentials and TLS from @kubernetes/client-node's KubeConfig
// (kubeconfig, in-cluster token, exec plugins, tokens, client certificates) applied to every request.
// Ours on top is what the library lacks: requests by path (its KubernetesObjectApi resolves each object
// through discovery and cannot patch /status), a watch stream reader that turns ERROR events, malformed
// lines, dropped connections and silence into errors for the informer (its Watch skips malformed lines and
// hands ERROR events on as data), keep-alive connections, and re-reading credentials after a 401.
import https from "node:https";
import http from "node:http";
import { createInterface } from "node:readline";
import { KubeConfig } from "@kubernetes/client-node";
import { loadKubeConfig } from "./kubeconfig.ts";

export interface ObjectMeta {
  name: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: unknown[];
  /** Who manages which field (server-side apply); informer caches drop them. */
  managedFields?: unknown[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface ObjectList<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/** A resource type: `group` is "" for the core API. */
export interface Resource {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly namespaced: boolean;
  readonly kind: string;
}

export function apiVersionOf(r: Resource): string {
  return r.group === "" ? r.version : `${r.group}/${r.version}`;
}

/** The collection path, e.g. /apis/cilium.io/v2/namespaces/default/ciliumnetworkpolicies. */
export function resourcePath(r: Resource, namespace?: string, name?: string, sub?: string): string {
  const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  let p = r.namespaced && namespace !== undefined ? `${base}/namespaces/${encodeURIComponent(namespace)}/${r.plural}` : `${base}/${r.plural}`;
  if (name !== undefined) p += `/${encodeURIComponent(name)}`;
  if (sub !== undefined) p += `/${sub}`;
  return p;
}

/** An HTTP error from the API server, with the `Status` object's reason when there was one. */
export class KubeError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "KubeError";
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof KubeError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeError && e.status === 409;
export const isGone = (e: unknown): boolean => e instanceof KubeError && e.status === 410;

export const MERGE_PATCH = "application/merge-patch+json";

export interface WatchOptions {
  resourceVersion: string;
  /** Server-side end of the watch; the client reconnects from the last resourceVersion. */
  timeoutSeconds: number;
  /** Abort the watch when nothing (not even a bookmark) arrived for this long. */
  inactivityMs: number;
  signal: AbortSignal;
  labelSelector?: string;
  fieldSelector?: string;
}

/** What one request carries: the headers and connection pool of one credential generation. */
interface Credentials {
  /** The KubeConfig these came from; replaced by a fresh one when the API server answers 401. */
  readonly kc: KubeConfig;
  readonly headers: Record<string, string>;
  /** user:password for basic auth, when the kubeconfig has one. */
  readonly auth?: string;
  readonly agent: http.Agent;
}

/** The TLS material an https.Agent is built from; a change (a rotated client certificate) means a new agent. */
interface TlsMaterial {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly rejectUnauthorized?: boolean;
  readonly servername?: string;
}

const pem = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : Array.isArray(v) ? v.map(String).join("\n") : String(v));

function sameTls(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.ca === b.ca && a.cert === b.cert && a.key === b.key && a.rejectUnauthorized === b.rejectUnauthorized && a.servername === b.servername;
}

/** A KubeConfig with the same clusters, users and contexts but fresh authenticators: nothing cached (exec credentials, file tokens). */
function reloaded(kc: KubeConfig): KubeConfig {
  const fresh = new KubeConfig();
  fresh.loadFromOptions({ clusters: kc.getClusters(), users: kc.getUsers(), contexts: kc.getContexts(), currentContext: kc.getCurrentContext() });
  return fresh;
}

export class KubeClient {
  private readonly server: URL;
  private kc: KubeConfig;
  /** Concurrent requests share one credential lookup (one exec-plugin run, not one per request). */
  private pending: { readonly kc: KubeConfig; readonly credentials: Promise<Credentials> } | undefined;
  private pool: { readonly tls: TlsMaterial; readonly agent: http.Agent } | undefined;
  /** Every agent handed out, closed by close(): a replaced pool may still carry a running watch. */
  private readonly agents = new Set<http.Agent>();

  /** A client for the current context of `kc` (loadKubeConfig loads one). */
  constructor(kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error(`kubeconfig: current-context "${kc.getCurrentContext()}" has no cluster`);
    this.server = new URL(cluster.server);
    this.kc = kc;
  }

  /** Loads the kubeconfig at `path` (or the default: $KUBECONFIG, ~/.kube/config, in-cluster). */
  static async fromKubeconfig(path?: string): Promise<KubeClient> {
    return new KubeClient(loadKubeConfig(path));
  }

  /** The headers and agent for the next request; the library re-reads token files and re-runs expired exec plugins. */
  private credentials(): Promise<Credentials> {
    if (this.pending?.kc !== this.kc) {
      const pending = { kc: this.kc, credentials: this.apply(this.kc) };
      this.pending = pending;
      const done = (): void => {
        if (this.pending === pending) this.pending = undefined;
      };
      pending.credentials.then(done, done);
    }
    return this.pending.credentials;
  }

  private async apply(kc: KubeConfig): Promise<Credentials> {
    const opts: https.RequestOptions = {};
    await kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    // A token file written with a trailing newline would otherwise make an invalid header value.
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (v !== undefined) headers[k.toLowerCase()] = String(v).trim();
    return { kc, headers, ...(opts.auth ? { auth: opts.auth } : {}), agent: this.agentFor(kc, opts) };
  }

  /**
   * The library's agent when the cluster has a proxy-url; otherwise our keep-alive agent (the
   * library's https.Agent opens a connection per request), rebuilt when the TLS material changes.
   */
  private agentFor(kc: KubeConfig, opts: https.RequestOptions): http.Agent {
    if (kc.getCurrentCluster()?.proxyUrl && opts.agent instanceof http.Agent) {
      this.agents.add(opts.agent);
      return opts.agent;
    }
    const tls: TlsMaterial = {
      ...(opts.ca !== undefined ? { ca: pem(opts.ca) } : {}),
      ...(opts.cert !== undefined ? { cert: pem(opts.cert) } : {}),
      ...(opts.key !== undefined ? { key: pem(opts.key) } : {}),
      ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
    };
    if (this.pool && sameTls(this.pool.tls, tls)) return this.pool.agent;
    // The old agent's running requests and watches finish on it; none of its connections is kept idle.
    if (this.pool) {
      this.pool.agent.maxFreeSockets = 0;
      for (const sockets of Object.values(this.pool.agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
    }
    const agent = this.server.protocol === "https:" ? new https.Agent({ keepAlive: true, ...tls }) : new http.Agent({ keepAlive: true });
    this.agents.add(agent);
    this.pool = { tls, agent };
    return agent;
  }

  /** The API server rejected these credentials: the next request loads them afresh (a replaced token file, a new exec credential). */
  private rejected(creds: Credentials): void {
    if (this.kc === creds.kc) this.kc = reloaded(creds.kc);
  }

  /**
   * Sends a request and returns the parsed JSON body; non-2xx becomes a KubeError. A 401 is retried
   * once with credentials loaded afresh (the token file was replaced, the exec credential was revoked);
   * safe for every verb, as the API server authenticates before it does anything.
   */
  async request<T>(method: string, path: string, body?: unknown, contentType = "application/json", timeoutMs = 30_000): Promise<T> {
    const creds = await this.credentials();
    try {
      return await this.send<T>(creds, method, path, body, contentType, timeoutMs);
    } catch (e) {
      if (!(e instanceof KubeError && e.status === 401)) throw e;
      this.rejected(creds);
      return this.send<T>(await this.credentials(), method, path, body, contentType, timeoutMs);
    }
  }

  private send<T>(creds: Credentials, method: string, path: string, body: unknown, contentType: string, timeoutMs: number): Promise<T> {
    const url = new URL(path, this.server);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = (url.protocol === "https:" ? https : http).request(
        url,
        {
          method,
          agent: creds.agent,
          ...(creds.auth !== undefined ? { auth: creds.auth } : {}),
          headers: {
            ...creds.headers,
            accept: "application/json",
            ...(payload !== undefined ? { "content-type": contentType, "content-length": Buffer.byteLength(payload) } : {}),
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              try {
                resolve((text === "" ? {} : JSON.parse(text)) as T);
              } catch (e) {
                reject(e);
              }
              return;
            }
            reject(errorFromBody(status, text, `${method} ${path}`));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out after ${timeoutMs} ms`)));
      req.on("error", reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }
  create<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }
  replace<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", path, body);
  }
  /** JSON merge patch (RFC 7386); use `${objectPath}/status` to write status. */
  mergePatch<T>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, MERGE_PATCH);
  }
  delete(path: string, preconditions?: { uid?: string; resourceVersion?: string }): Promise<unknown> {
    return this.request("DELETE", path, preconditions ? { kind: "DeleteOptions", apiVersion: "v1", preconditions } : undefined);
  }

  /**
   * Streams a watch, calling `onEvent` per event. Resolves when the server ends the watch normally or
   * `signal` aborts; rejects on a non-200 answer, an ERROR event (KubeError; 410 when the
   * resourceVersion is too old), a dropped connection, or `inactivityMs` of silence. A 401 makes
   * the next request load credentials afresh.
   */
  async watch<T>(path: string, opts: WatchOptions, onEvent: (ev: WatchEvent<T>) => void): Promise<void> {
    const creds = await this.credentials();
    try {
      await this.stream(creds, path, opts, onEvent);
    } catch (e) {
      if (e instanceof KubeError && e.status === 401) this.rejected(creds);
      throw e;
    }
  }

  private stream<T>(creds: Credentials, path: string, opts: WatchOptions, onEvent: (ev: WatchEvent<T>) => void): Promise<void> {
    const url = new URL(path, this.server);
    url.searchParams.set("watch", "true");
    url.searchParams.set("resourceVersion", opts.resourceVersion);
    url.searchParams.set("allowWatchBookmarks", "true");
    url.searchParams.set("timeoutSeconds", String(opts.timeoutSeconds));
    if (opts.labelSelector) url.searchParams.set("labelSelector", opts.labelSelector);
    if (opts.fieldSelector) url.searchParams.set("fieldSelector", opts.fieldSelector);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        opts.signal.removeEventListener("abort", onAbort);
        req.destroy();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = (): void => finish();
      const arm = (): void => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => finish(new Error(`watch ${path}: no data for ${opts.inactivityMs} ms`)), opts.inactivityMs);
      };
      const req = (url.protocol === "https:" ? https : http).request(url, { method: "GET", agent: creds.agent, ...(creds.auth !== undefined ? { auth: creds.auth } : {}), headers: { ...creds.headers, accept: "application/json" } }, (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => finish(errorFromBody(status, Buffer.concat(chunks).toString("utf8"), `watch ${path}`)));
          res.on("error", (e) => finish(e));
          return;
        }
        arm();
        res.on("data", arm);
        // "aborted"/"error" mean the connection dropped mid-stream; "end" is the server's normal close.
        res.on("aborted", () => finish(new Error(`watch ${path}: connection aborted`)));
        res.on("error", (e) => finish(e));
        const lines = createInterface({ input: res });
        lines.on("error", (e) => finish(e)); // readline re-emits the stream's errors
        lines.on("line", (line) => {
          if (settled || line.trim() === "") return;
          let ev: WatchEvent<T>;
          try {
            ev = JSON.parse(line) as WatchEvent<T>;
          } catch {
            return finish(new Error(`watch ${path}: malformed event line`));
          }
          if (ev.type === "ERROR") {
            const st = ev.object as unknown as { code?: number; reason?: string; message?: string };
            return finish(new KubeError(st.code ?? 500, st.reason ?? "Unknown", `watch ${path}: ${st.message ?? "error event"}`));
          }
          try {
            onEvent(ev);
          } catch (e) {
            finish(e as Error);
          }
        });
        lines.on("close", () => {
          if (!res.complete) finish(new Error(`watch ${path}: connection closed before the end of the stream`));
          else finish();
        });
      });
      req.on("error", (e) => finish(e));
      if (opts.signal.aborted) return finish();
      opts.signal.addEventListener("abort", onAbort, { once: true });
      arm();
      req.end();
    });
  }

  /** Closes the keep-alive connections (call on shutdown). */
  close(): void {
    for (const agent of this.agents) agent.destroy();
    this.agents.clear();
    this.pool = undefined;
  }
}

/** Every item of a collection (all namespaces for a namespaced resource), page by page. */
export async function listAll<T>(client: KubeClient, r: Resource, pageSize = 500): Promise<T[]> {
  const items: T[] = [];
  let cont: string | undefined;
  do {
    const q = new URLSearchParams({ limit: String(pageSize) });
    if (cont) q.set("continue", cont);
    const page = await client.get<ObjectList<T>>(`${resourcePath(r)}?${q.toString()}`);
    items.push(...page.items);
    cont = page.metadata.continue || undefined;
  } while (cont);
  return items;
}

function errorFromBody(status: number, text: string, what: string): KubeError {
  try {
    const st = JSON.parse(text) as { reason?: string; message?: string };
    return new KubeError(status, st.reason ?? String(status), `${what}: ${st.message ?? text}`);
  } catch {
    return new KubeError(status, String(status), `${what}: HTTP ${status} ${text.slice(0, 200)}`);
  }
}
