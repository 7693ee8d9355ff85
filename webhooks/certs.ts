// The webhook's TLS material: a CA and a serving certificate (issued by kube/pki.ts), kept in a Secret, rotated before expiry.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { issueCA as newCA, issueCert } from "../kube/pki.ts";

/** PEM text of a CA and the serving certificate it signed; `caBundle` is what the API server trusts. */
export interface CertBundle {
  readonly caCert: string;
  readonly caKey: string;
  readonly cert: string;
  readonly key: string;
  /** One or more CA certificates (PEM): the current CA, plus the previous one while a CA rotation settles. */
  readonly caBundle: string;
}

export interface CertOptions {
  /** Subject alternative names of the serving certificate: DNS names and IP addresses. */
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly caDays: number;
  readonly certDays: number;
}

export const DEFAULT_CERT_OPTIONS: CertOptions = {
  dnsNames: ["localhost"],
  ipAddresses: ["127.0.0.1"],
  caDays: 365,
  certDays: 30,
};

/** A new self-signed CA (EC P-256). */
export async function issueCA(days: number, commonName = "membrane-webhook-ca"): Promise<{ caCert: string; caKey: string }> {
  const ca = await newCA({ commonName, days });
  return { caCert: ca.cert, caKey: ca.key };
}

/** A serving certificate for the given names, signed by the CA. */
export async function issueServingCert(
  ca: { caCert: string; caKey: string },
  opts: Pick<CertOptions, "dnsNames" | "ipAddresses" | "certDays">,
): Promise<{ cert: string; key: string }> {
  const cn = opts.dnsNames[0] ?? opts.ipAddresses[0] ?? "membrane-webhook";
  return issueCert({ cert: ca.caCert, key: ca.caKey }, { commonName: cn, usage: "server", dnsNames: opts.dnsNames, ipAddresses: opts.ipAddresses, days: opts.certDays });
}

export async function issueBundle(opts: CertOptions): Promise<CertBundle> {
  const ca = await issueCA(opts.caDays);
  const serving = await issueServingCert(ca, opts);
  return { ...ca, ...serving, caBundle: ca.caCert };
}

export function notAfter(pem: string): Date {
  return new Date(new X509Certificate(pem).validTo);
}

/** Whether `bundle` can serve `opts`' names until at least `horizonMs` from now. */
export function usableFor(bundle: CertBundle, opts: CertOptions, horizonMs: number, now = Date.now()): boolean {
  try {
    const cert = new X509Certificate(bundle.cert);
    const ca = new X509Certificate(bundle.caCert);
    if (!cert.verify(ca.publicKey) || !cert.checkPrivateKey(createPrivateKey(bundle.key))) return false;
    if (notAfter(bundle.cert).getTime() - now < horizonMs || notAfter(bundle.caCert).getTime() - now < horizonMs) return false;
    const san = cert.subjectAltName ?? "";
    return opts.dnsNames.every((d) => san.includes(`DNS:${d}`)) && opts.ipAddresses.every((ip) => san.includes(`IP Address:${ip}`));
  } catch {
    return false;
  }
}

/**
 * The next bundle when the current one nears expiry. The serving certificate is re-issued by the same
 * CA when the CA still has time left, so the API server's caBundle stays valid throughout; when the CA
 * itself is due, the new bundle trusts both the old and the new CA, so a caller patches the caBundle
 * before switching the serving certificate and no request sees an untrusted certificate.
 */
export async function rotate(current: CertBundle, opts: CertOptions, horizonMs: number, now = Date.now()): Promise<CertBundle> {
  const caLeft = notAfter(current.caCert).getTime() - now;
  const certLifeMs = opts.certDays * 86_400_000;
  if (caLeft > certLifeMs + horizonMs) {
    const serving = await issueServingCert(current, opts);
    // Any previous CA kept in the bundle since the last CA rotation signs nothing in use any more.
    return { ...current, ...serving, caBundle: current.caCert };
  }
  const ca = await issueCA(opts.caDays);
  const serving = await issueServingCert(ca, opts);
  return { ...ca, ...serving, caBundle: `${ca.caCert.trim()}\n${current.caCert.trim()}\n` };
}

/** When to rotate: `renewBeforeMs` ahead of the earliest expiry (serving certificate or CA), never in the past. */
export function rotationDelayMs(bundle: CertBundle, renewBeforeMs: number, now = Date.now()): number {
  const expiry = Math.min(notAfter(bundle.cert).getTime(), notAfter(bundle.caCert).getTime());
  return Math.max(0, expiry - renewBeforeMs - now);
}

/** Secret data keys (base64 in the Secret, PEM here), as cert-manager names them. */
export const SECRET_KEYS = { caCert: "ca.crt", caKey: "ca.key", cert: "tls.crt", key: "tls.key", caBundle: "ca-bundle.crt" } as const;

export function bundleToSecretData(b: CertBundle): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS)) out[key] = Buffer.from(b[field as keyof CertBundle]).toString("base64");
  return out;
}

export function bundleFromSecretData(data: Record<string, string> | undefined): CertBundle | undefined {
  if (data === undefined) return undefined;
  const get = (k: string): string | undefined => (data[k] === undefined ? undefined : Buffer.from(data[k], "base64").toString("utf8"));
  const caCert = get(SECRET_KEYS.caCert);
  const caKey = get(SECRET_KEYS.caKey);
  const cert = get(SECRET_KEYS.cert);
  const key = get(SECRET_KEYS.key);
  if (caCert === undefined || caKey === undefined || cert === undefined || key === undefined) return undefined;
  return { caCert, caKey, cert, key, caBundle: get(SECRET_KEYS.caBundle) ?? caCert };
}
