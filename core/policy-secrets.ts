// Where TLS inspection's Secrets may live: the one namespace the operator reads them from (Cilium's policy-secrets-namespace); the operator's status and admission's warnings say the same.
import type { TlsSecretUse } from "./model.ts";

/**
 * Why a TLS context's Secret is not read when the operator reads Secrets only from
 * `secretsNamespace`; undefined when the Secret lives there. Said after "Secret NS/NAME".
 */
export function outsideSecretsNamespace(use: TlsSecretUse, secretsNamespace: string): string | undefined {
  if (use.secret.namespace === secretsNamespace) return undefined;
  return `is not read: TLS rules' Secrets must live in the policy secrets namespace ${secretsNamespace} (name it with secret.namespace: ${secretsNamespace})`;
}
