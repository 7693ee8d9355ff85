// Keeps the webhook's certificates in a Secret and its ValidatingWebhookConfiguration pointing at it, re-issuing before expiry.
// The REST client is the operator's (controllers/runtime): @kubernetes/client-node 2.0.1 does not load on Node 20.
import { KubeClient, KubeError, isConflict, isNotFound } from "../kube/kube.ts";
import type { Logger } from "pino";
import { VALIDATED_RESOURCES } from "../core/validate.ts";
import {
  bundleFromSecretData,
  bundleToSecretData,
  issueBundle,
  rotate,
  rotationDelayMs,
  usableFor,
  type CertBundle,
  type CertOptions,
} from "./certs.ts";
import { VALIDATE_PATH } from "./server.ts";

export interface RegistrationOptions {
  /** Name of the ValidatingWebhookConfiguration object. */
  readonly configName: string;
  /** Name of the webhook inside it, shown by the apiserver as `admission webhook "<name>" denied the request`. */
  readonly webhookName: string;
  /** Either a URL (local cluster) or a Service in `namespace`. */
  readonly target: { readonly url: string } | { readonly service: string; readonly port: number };
  readonly namespace: string;
  readonly secretName: string;
  readonly timeoutSeconds: number;
}

const NAMESPACES = "/api/v1/namespaces";
const WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

interface SecretObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  data?: Record<string, string>;
}

interface WebhookConfigurationObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; resourceVersion?: string };
  webhooks: unknown[];
}

/** The configuration the webhook registers: every admitted resource, CREATE and UPDATE, fail closed. */
export function webhookConfiguration(opts: RegistrationOptions, caBundle: string): WebhookConfigurationObject {
  const clientConfig =
    "url" in opts.target
      ? { url: opts.target.url, caBundle: Buffer.from(caBundle).toString("base64") }
      : {
          service: { namespace: opts.namespace, name: opts.target.service, path: VALIDATE_PATH, port: opts.target.port },
          caBundle: Buffer.from(caBundle).toString("base64"),
        };
  const byGroupVersion = new Map<string, { apiGroups: string[]; apiVersions: string[]; resources: string[] }>();
  for (const r of VALIDATED_RESOURCES) {
    const key = `${r.group}/${r.version}`;
    const entry = byGroupVersion.get(key) ?? { apiGroups: [r.group], apiVersions: [r.version], resources: [] };
    entry.resources.push(r.resource);
    byGroupVersion.set(key, entry);
  }
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name: opts.configName, labels: { "app.kubernetes.io/name": "membrane-webhook" } },
    webhooks: [
      {
        name: opts.webhookName,
        clientConfig,
        rules: [...byGroupVersion.values()].map((g) => ({ ...g, operations: ["CREATE", "UPDATE"], scope: "*" })),
        failurePolicy: "Fail",
        matchPolicy: "Equivalent",
        sideEffects: "None",
        timeoutSeconds: opts.timeoutSeconds,
        admissionReviewVersions: ["v1"],
      },
    ],
  };
}

const JSON_PATCH = "application/json-patch+json";
const isUnprocessable = (e: unknown): boolean => e instanceof KubeError && e.status === 422;
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

type JsonPatchOp = { op: "test" | "add" | "replace"; path: string; value: unknown };

/**
 * A JSON patch (RFC 6902) that sets the caBundle of every webhook of `current` (and, for `url`, the
 * URL of those addressed by URL), each guarded by a `test` of the webhook's name at its index so
 * that a concurrent edit of the list fails the patch instead of writing into the wrong webhook.
 * Undefined when `current` has no webhook at all.
 */
export function caBundlePatch(current: { webhooks?: unknown }, caBundle: string, url?: string): JsonPatchOp[] | undefined {
  const webhooks = Array.isArray(current.webhooks) ? current.webhooks : [];
  if (webhooks.length === 0) return undefined;
  const encoded = Buffer.from(caBundle).toString("base64");
  const ops: JsonPatchOp[] = [];
  webhooks.forEach((w, i) => {
    if (!isRecord(w)) return;
    const at = `/webhooks/${i}`;
    ops.push({ op: "test", path: `${at}/name`, value: w.name });
    // The API server requires a clientConfig on every webhook; without one there is nothing to point.
    const clientConfig = isRecord(w.clientConfig) ? w.clientConfig : {};
    ops.push({ op: "add", path: `${at}/clientConfig/caBundle`, value: encoded });
    if (url && typeof clientConfig.url === "string" && clientConfig.url !== url) {
      ops.push({ op: "replace", path: `${at}/clientConfig/url`, value: url });
    }
  });
  return ops;
}

export class WebhookRegistration {
  constructor(
    private readonly kube: KubeClient,
    private opts: RegistrationOptions,
    private readonly log: Logger,
  ) {}

  private secretPath(): string {
    return `${NAMESPACES}/${encodeURIComponent(this.opts.namespace)}/secrets`;
  }

  /** The URL target is only known once the server has bound its port. */
  setUrl(url: string): void {
    if ("url" in this.opts.target) this.opts = { ...this.opts, target: { url } };
  }

  async ensureNamespace(): Promise<void> {
    try {
      await this.kube.get(`${NAMESPACES}/${encodeURIComponent(this.opts.namespace)}`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await this.kube.create(NAMESPACES, { apiVersion: "v1", kind: "Namespace", metadata: { name: this.opts.namespace } });
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
    }
  }

  /** The bundle kept in the Secret if it is still good for `horizonMs`, else a fresh (or rotated) one, saved. */
  async loadOrCreate(certOpts: CertOptions, horizonMs: number): Promise<CertBundle> {
    let existing: CertBundle | undefined;
    try {
      const secret = await this.kube.get<SecretObject>(`${this.secretPath()}/${encodeURIComponent(this.opts.secretName)}`);
      existing = bundleFromSecretData(secret.data);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (existing !== undefined && usableFor(existing, certOpts, horizonMs)) {
      this.log.info({ secret: `${this.opts.namespace}/${this.opts.secretName}` }, "reusing webhook certificates from Secret");
      return existing;
    }
    const bundle = await issueBundle(certOpts);
    await this.saveSecret(bundle);
    this.log.info({ secret: `${this.opts.namespace}/${this.opts.secretName}` }, "issued new webhook certificates");
    return bundle;
  }

  async saveSecret(bundle: CertBundle): Promise<void> {
    const body = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: this.opts.secretName, namespace: this.opts.namespace, labels: { "app.kubernetes.io/name": "membrane-webhook" } },
      type: "Opaque",
      data: bundleToSecretData(bundle),
    };
    try {
      await this.kube.replace(`${this.secretPath()}/${encodeURIComponent(this.opts.secretName)}`, body);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.kube.create(this.secretPath(), body);
    }
  }

  /**
   * Creates the ValidatingWebhookConfiguration with this CA bundle or, when it already exists (the
   * Helm chart installs it), patches only each webhook's `clientConfig.caBundle`, so that the
   * installer's rules, timeouts and selectors stay as they were. A webhook addressed by URL (the
   * local cluster, where the port is chosen at start) also gets that URL; a Service is never touched.
   */
  async register(caBundle: string): Promise<void> {
    const path = `${WEBHOOK_CONFIGS}/${encodeURIComponent(this.opts.configName)}`;
    for (let attempt = 0; ; attempt++) {
      try {
        let current: WebhookConfigurationObject;
        try {
          current = await this.kube.get<WebhookConfigurationObject>(path);
        } catch (err) {
          if (!isNotFound(err)) throw err;
          await this.kube.create(WEBHOOK_CONFIGS, webhookConfiguration(this.opts, caBundle));
          return;
        }
        const patch = caBundlePatch(current, caBundle, "url" in this.opts.target ? this.opts.target.url : undefined);
        if (patch === undefined) {
          // Nothing an installer wrote is left to keep: write the whole configuration.
          const desired = webhookConfiguration(this.opts, caBundle);
          desired.metadata = { ...desired.metadata, resourceVersion: current.metadata.resourceVersion };
          await this.kube.replace(path, desired);
          return;
        }
        if (!current.webhooks.some((w) => isRecord(w) && w.name === this.opts.webhookName)) {
          this.log.warn({ config: this.opts.configName, webhook: this.opts.webhookName }, "the existing webhook configuration has no webhook of this name; patching the CA bundle of the ones it has");
        }
        await this.kube.request("PATCH", path, patch, JSON_PATCH);
        return;
      } catch (err) {
        // 409: created or replaced under us; 422: a `test` of the patch failed (the list changed since the read).
        if (!(isConflict(err) || isUnprocessable(err)) || attempt >= 3) throw err;
      }
    }
  }

  async unregister(): Promise<void> {
    try {
      await this.kube.delete(`${WEBHOOK_CONFIGS}/${encodeURIComponent(this.opts.configName)}`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}

export interface RotatorHooks {
  /** Start trusting the new bundle's CAs (patch the caBundle); called before the serving certificate changes. */
  readonly trust?: (bundle: CertBundle) => Promise<void>;
  /** Serve the new certificate (swap the TLS context). */
  readonly serve: (bundle: CertBundle) => void;
  /** Persist the new bundle (the Secret). */
  readonly persist?: (bundle: CertBundle) => Promise<void>;
}

/** Re-issues the serving certificate (and the CA when it is due) `renewBeforeMs` before expiry, without a restart. */
export class CertRotator {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  rotations = 0;

  constructor(
    private bundle: CertBundle,
    private readonly certOpts: CertOptions,
    private readonly renewBeforeMs: number,
    private readonly hooks: RotatorHooks,
    private readonly log: Logger,
    /** Never rotate more often than this, whatever the arithmetic says (a clock jump must not spin). */
    private readonly minIntervalMs = 1_000,
    /**
     * After a new CA is trusted, wait this long before serving a certificate it signed: the API server
     * picks up a changed caBundle through its own watch, a moment after our write returns.
     */
    private readonly trustGraceMs = 10_000,
  ) {}

  current(): CertBundle {
    return this.bundle;
  }

  start(): void {
    this.schedule(rotationDelayMs(this.bundle, this.renewBeforeMs));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    // setTimeout overflows past ~24.8 days; wake up earlier and re-check.
    const wait = Math.min(Math.max(delayMs, this.minIntervalMs), 2 ** 31 - 1);
    this.timer = setTimeout(() => void this.tick(), wait);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    if (rotationDelayMs(this.bundle, this.renewBeforeMs) > 0) return this.schedule(rotationDelayMs(this.bundle, this.renewBeforeMs));
    try {
      const next = await rotate(this.bundle, this.certOpts, this.renewBeforeMs);
      if (this.stopped) return;
      await this.hooks.trust?.(next);
      if (next.caCert !== this.bundle.caCert) await new Promise((r) => setTimeout(r, this.trustGraceMs));
      if (this.stopped) return;
      this.hooks.serve(next);
      await this.hooks.persist?.(next);
      const caRotated = next.caCert !== this.bundle.caCert;
      this.bundle = next;
      this.rotations++;
      this.log.info({ caRotated, rotations: this.rotations }, "webhook certificate rotated");
      this.schedule(rotationDelayMs(next, this.renewBeforeMs));
    } catch (err) {
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, "webhook certificate rotation failed; retrying");
      this.schedule(30_000);
    }
  }
}
