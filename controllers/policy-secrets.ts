// The Secrets TLS inspection reads (terminatingTLS, originatingTLS): read by the operator from the policy secrets namespace only, checked, and handed to agents only inside the compiled policy of the subjects whose rules name them.
import { X509Certificate, createPrivateKey } from "node:crypto";
import type { RuleHttpRules, RuleTls, SubjectPolicy, TlsMaterial, TlsSecretUse } from "../core/model.ts";
import { outsideSecretsNamespace } from "../core/policy-secrets.ts";
import type { Informer } from "../kube/informer.ts";
import type { KubeObject } from "../kube/kube.ts";

export interface SecretObject extends KubeObject {
  data?: Record<string, string>;
}

export type TlsRole = "terminatingTLS" | "originatingTLS";

/** Cilium's item names when a TLS context names none. */
export const DEFAULT_ITEMS = { certificate: "tls.crt", privateKey: "tls.key", trustedCA: "ca.crt" } as const;

/** Why the operator has no Secrets to give when it does not read them. */
export const SECRETS_NOT_READ = "not read: the operator runs without --policy-secrets-namespace";

/**
 * One TLS context's material from its Secret, or why there is none: the items it needs (the
 * certificate chain and key for terminatingTLS, the trusted CAs for originatingTLS), each a PEM the
 * proxy can use (certificate and key matching). Reasons name the Secret's items, never their bytes.
 */
export function tlsMaterial(secret: SecretObject | undefined, use: TlsSecretUse, role: TlsRole): { readonly material: TlsMaterial } | { readonly unavailable: string } {
  if (!secret) return { unavailable: "not found" };
  const item = (name: string): string | undefined => {
    const b64 = secret.data?.[name];
    return b64 === undefined ? undefined : Buffer.from(b64, "base64").toString("utf8");
  };
  if (role === "originatingTLS") {
    const name = use.trustedCA ?? DEFAULT_ITEMS.trustedCA;
    const ca = item(name);
    if (ca === undefined) return { unavailable: `has no item ${JSON.stringify(name)} (the trusted CAs)` };
    if (!isCertificate(ca)) return { unavailable: `item ${JSON.stringify(name)} is not a PEM certificate` };
    return { material: { trustedCA: ca } };
  }
  const certName = use.certificate ?? DEFAULT_ITEMS.certificate;
  const keyName = use.privateKey ?? DEFAULT_ITEMS.privateKey;
  const cert = item(certName);
  const key = item(keyName);
  if (cert === undefined) return { unavailable: `has no item ${JSON.stringify(certName)} (the certificate chain)` };
  if (key === undefined) return { unavailable: `has no item ${JSON.stringify(keyName)} (the private key)` };
  if (!isCertificate(cert)) return { unavailable: `item ${JSON.stringify(certName)} is not a PEM certificate` };
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    return { unavailable: `item ${JSON.stringify(keyName)} is not a PEM private key` };
  }
  if (!matches) return { unavailable: `items ${JSON.stringify(certName)} and ${JSON.stringify(keyName)} do not match (the key is not the certificate's)` };
  return { material: { certificate: cert, privateKey: key } };
}

function isCertificate(pem: string): boolean {
  try {
    new X509Certificate(pem);
    return true;
  } catch {
    return false;
  }
}

/** Where the operator reads policy Secrets: the policy secrets namespace and an informer over its Secrets only. */
export interface PolicySecretsSource {
  readonly namespace: string;
  readonly informer: Informer<SecretObject>;
}

/**
 * The operator's view of the policy Secrets, from an informer over the Secrets of the policy secrets
 * namespace (absent: Secrets are not read, and every TLS rule fails closed with that reason; a Secret
 * named in another namespace fails closed saying it must live there). `resolve` gives a subject's
 * compiled policy with its TLS material filled in; the result is kept per compiled object while the
 * Secrets it read are the same objects, so an unchanged subject is the same object (the distribution
 * sends nothing for it).
 */
export class PolicySecrets {
  private readonly resolved = new WeakMap<SubjectPolicy, { readonly secrets: readonly (SecretObject | undefined)[]; readonly policy: SubjectPolicy }>();
  /** Every Secret a resolved policy named (namespace → names): which Secret events concern the distribution. */
  private readonly named = new Map<string, Set<string>>();

  constructor(private readonly source?: PolicySecretsSource) {}

  /** The informer whose events concern the distribution and policy status (none when Secrets are not read). */
  get informer(): Informer<SecretObject> | undefined {
    return this.source?.informer;
  }

  /** Whether a Secret is one some compiled policy named (its changes must reach the agents). */
  names(namespace: string | undefined, name: string): boolean {
    return namespace !== undefined && (this.named.get(namespace)?.has(name) ?? false);
  }

  /** Why a TLS context of a policy cannot be served, or undefined when its Secret is usable. */
  problem(use: TlsSecretUse, role: TlsRole): string | undefined {
    const r = this.material(use, role);
    return "unavailable" in r ? r.unavailable : undefined;
  }

  resolve(policy: SubjectPolicy): SubjectPolicy {
    if (!policy.http?.some((r) => r.tls)) return policy;
    const uses = policy.http.flatMap((r) => [r.tls?.terminating, r.tls?.originating]).filter((u): u is TlsSecretUse => u !== undefined);
    const secrets = uses.map((u) => this.secret(u));
    const held = this.resolved.get(policy);
    if (held && held.secrets.length === secrets.length && held.secrets.every((s, i) => s === secrets[i])) return held.policy;
    for (const u of uses) {
      let names = this.named.get(u.secret.namespace);
      if (!names) this.named.set(u.secret.namespace, (names = new Set()));
      names.add(u.secret.name);
    }
    const out: SubjectPolicy = { ...policy, http: policy.http.map((r) => this.resolveRule(r)) };
    this.resolved.set(policy, { secrets, policy: out });
    return out;
  }

  private resolveRule(r: RuleHttpRules): RuleHttpRules {
    if (!r.tls) return r;
    const tls: RuleTls = {
      ...r.tls,
      ...(r.tls.terminating ? { terminating: this.withMaterial(r.tls.terminating, "terminatingTLS") } : {}),
      ...(r.tls.originating ? { originating: this.withMaterial(r.tls.originating, "originatingTLS") } : {}),
    };
    return { ...r, tls };
  }

  private withMaterial(use: TlsSecretUse, role: TlsRole): TlsSecretUse {
    const r = this.material(use, role);
    return "material" in r ? { ...use, material: r.material } : { ...use, unavailable: r.unavailable };
  }

  /** The material of a TLS context, or why there is none: Secrets not read, named outside the secrets namespace, or tlsMaterial's reason. */
  private material(use: TlsSecretUse, role: TlsRole): ReturnType<typeof tlsMaterial> {
    if (!this.source) return { unavailable: SECRETS_NOT_READ };
    const outside = outsideSecretsNamespace(use, this.source.namespace);
    if (outside !== undefined) return { unavailable: outside };
    return tlsMaterial(this.secret(use), use, role);
  }

  private secret(use: TlsSecretUse): SecretObject | undefined {
    return this.source?.informer.get(`${use.secret.namespace}/${use.secret.name}`);
  }
}
