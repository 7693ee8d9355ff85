// Agent authentication by ServiceAccount token: a TokenReview tells whether a pod-bound token of the agent's ServiceAccount, for our audience, is valid, and which node its pod runs on.
import { createHash } from "node:crypto";
import type { KubeClient } from "../../kube/kube.ts";

/** The key under which the API server puts the bound pod's node name in a token's user info (Kubernetes ≥ 1.32). */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";
export const DEFAULT_AGENT_AUDIENCE = "membrane-operator";

export type AgentAuthResult = { readonly ok: true; readonly node: string } | { readonly ok: false; readonly reason: string };

export interface TokenAuthConfig {
  /** The agents' ServiceAccount, "NAMESPACE/NAME". */
  readonly serviceAccount: string;
  readonly audience: string;
  /** How long a review's answer is reused for the same token (default 10 s; a deleted pod is noticed within this). */
  readonly cacheTtlMs?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** Parses "NAMESPACE/NAME" into the ServiceAccount's username, or says what is wrong with it. */
export function serviceAccountUser(ref: string): { ok: true; username: string } | { ok: false; error: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(ref);
  if (!m) return { ok: false, error: `"${ref}" is not NAMESPACE/NAME of a ServiceAccount` };
  return { ok: true, username: `system:serviceaccount:${m[1]}:${m[3]}` };
}

/** Validates agents' bearer tokens with the TokenReview API and caches each answer briefly. */
export class TokenAuthenticator {
  private readonly username: string;
  private readonly cache = new Map<string, { at: number; result: Promise<AgentAuthResult> }>();

  constructor(
    private readonly client: KubeClient,
    private readonly config: TokenAuthConfig,
  ) {
    const u = serviceAccountUser(config.serviceAccount);
    if (!u.ok) throw new Error(`agent service account: ${u.error}`);
    this.username = u.username;
  }

  /** The node whose agent holds `authorization` ("Bearer TOKEN"), or why it is refused. Fails closed on any API error. */
  authenticate(authorization: string | undefined): Promise<AgentAuthResult> {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!m?.[1]) return Promise.resolve({ ok: false, reason: "no bearer token in the authorization metadata" });
    const token = m[1];
    const key = createHash("sha256").update(token).digest("hex");
    const now = Date.now();
    const ttl = this.config.cacheTtlMs ?? 10_000;
    for (const [k, v] of this.cache) if (now - v.at > ttl) this.cache.delete(k);
    const hit = this.cache.get(key);
    if (hit) return hit.result;
    const result = this.review(token);
    this.cache.set(key, { at: now, result });
    // An API error is not an answer about the token: do not keep it.
    result.then((r) => !r.ok && r.reason.startsWith("token review failed") && this.cache.delete(key), () => this.cache.delete(key));
    return result;
  }

  private async review(token: string): Promise<AgentAuthResult> {
    let status: TokenReviewStatus;
    try {
      const res = await this.client.create<{ status?: TokenReviewStatus }>("/apis/authentication.k8s.io/v1/tokenreviews", {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token, audiences: [this.config.audience] },
      });
      status = res.status ?? {};
    } catch (e) {
      return { ok: false, reason: `token review failed: ${e instanceof Error ? e.message : String(e)}` };
    }
    if (status.authenticated !== true) return { ok: false, reason: `token not authenticated${status.error ? `: ${status.error}` : ""}` };
    if (!(status.audiences ?? []).includes(this.config.audience)) return { ok: false, reason: `token is not for audience ${this.config.audience}` };
    const user = status.user?.username ?? "";
    if (user !== this.username) return { ok: false, reason: `token belongs to ${user || "an unknown user"}, not ${this.username}` };
    const nodes = status.user?.extra?.[NODE_NAME_EXTRA] ?? [];
    const node = nodes[0];
    if (nodes.length !== 1 || !node) return { ok: false, reason: `token carries no ${NODE_NAME_EXTRA} (it must be bound to a pod scheduled on a node)` };
    return { ok: true, node };
  }
}
