// A small Kubernetes REST client over node:https: JSON requests, merge patches (incl. /status) and
// streaming watches. Ours rather than @kubernetes/client-node's so that watch timeouts, errors and
// reconnects are explicit (DESIGN.md, known pitfalls), and because 2.0.1 does not load on Node 20.
import https from "node:https";
import http from "node:http";
import { createInterface } from "node:readline";
import { loadKubeconfig } from "./kubeconfig.ts";

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: unknown[];
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
}

export class KubeClient {
  private constructor(
    private readonly server: URL,
    private readonly agent: https.Agent | http.Agent,
    private readonly headers: Record<string, string>,
  ) {}

  /** Loads the kubeconfig at `path` (or the default: $KUBECONFIG, ~/.kube/config, in-cluster). */
  static async fromKubeconfig(path?: string): Promise<KubeClient> {
    const creds = loadKubeconfig(path);
    const server = new URL(creds.server);
    const headers: Record<string, string> = creds.token ? { authorization: `Bearer ${creds.token}` } : {};
    const agent =
      server.protocol === "https:"
        ? new https.Agent({ keepAlive: true, ca: creds.ca, cert: creds.cert, key: creds.key, rejectUnauthorized: !creds.insecureSkipTLSVerify })
        : new http.Agent({ keepAlive: true });
    return new KubeClient(server, agent, headers);
  }

  /** Sends a request and returns the parsed JSON body; non-2xx becomes a KubeError. */
  async request<T>(method: string, path: string, body?: unknown, contentType = "application/json", timeoutMs = 30_000): Promise<T> {
    const url = new URL(path, this.server);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = (url.protocol === "https:" ? https : http).request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            ...this.headers,
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
   * resourceVersion is too old), a dropped connection, or `inactivityMs` of silence.
   */
  watch<T>(path: string, opts: WatchOptions, onEvent: (ev: WatchEvent<T>) => void): Promise<void> {
    const url = new URL(path, this.server);
    url.searchParams.set("watch", "true");
    url.searchParams.set("resourceVersion", opts.resourceVersion);
    url.searchParams.set("allowWatchBookmarks", "true");
    url.searchParams.set("timeoutSeconds", String(opts.timeoutSeconds));
    if (opts.labelSelector) url.searchParams.set("labelSelector", opts.labelSelector);
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
      const req = (url.protocol === "https:" ? https : http).request(url, { method: "GET", agent: this.agent, headers: { ...this.headers, accept: "application/json" } }, (res) => {
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

  /** Closes idle keep-alive connections (call on shutdown). */
  close(): void {
    this.agent.destroy();
  }
}

function errorFromBody(status: number, text: string, what: string): KubeError {
  try {
    const st = JSON.parse(text) as { reason?: string; message?: string };
    return new KubeError(status, st.reason ?? String(status), `${what}: ${st.message ?? text}`);
  } catch {
    return new KubeError(status, String(status), `${what}: HTTP ${status} ${text.slice(0, 200)}`);
  }
}
