// X.509 certificates for every component (webhook serving CA and rotation, the local cluster, agents' mutual TLS, tests, benchmarks): the one builder, on @peculiar/x509 and node:crypto.
import { createPrivateKey, createPublicKey, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect metadata polyfill loaded first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

// Node's web crypto (the global one): the library signs through it, so no key material leaves node:crypto.
const webcrypto = globalThis.crypto;
x509.cryptoProvider.set(webcrypto);

/** ECDSA P-256 with SHA-256 for every key and signature: small keys, fast handshakes, accepted by Go and OpenSSL. */
const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;
/** Backdated so that a peer whose clock is a little behind still accepts a certificate issued a moment ago. */
const BACKDATE_MS = 3_600_000;

/** A certificate and its private key, PEM (the key PKCS#8). */
export interface Issued {
  readonly cert: string;
  readonly key: string;
}

export interface CertificateRequest {
  readonly commonName: string;
  /** Subject organisation: Kubernetes reads it as the client's group (e.g. "system:masters"). */
  readonly organization?: string;
  /** serverAuth, clientAuth, or both in one certificate. */
  readonly usage: "server" | "client" | "server+client";
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly days: number;
  /** The private key (PEM) to certify instead of a new one: many certificates for one key, e.g. a benchmark's thousand agents. */
  readonly key?: string;
}

/** A fresh P-256 key pair, the private key as PKCS#8 PEM. */
async function newKeyPair(): Promise<{ keys: CryptoKeyPair; pem: string }> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  return { keys, pem: pemOf("PRIVATE KEY", der) };
}

function pemOf(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

/** A PEM private key (PKCS#8 or SEC1) as a web crypto key pair; only P-256 keys, the kind this module issues. */
async function importKeyPair(pem: string): Promise<CryptoKeyPair> {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new Error(`private key: expected an EC P-256 key, not ${key.asymmetricKeyType ?? "an unknown type"} ${key.asymmetricKeyDetails?.namedCurve ?? ""}`.trim());
  }
  const privateKey = await webcrypto.subtle.importKey("pkcs8", key.export({ type: "pkcs8", format: "der" }), ALGORITHM, true, ["sign"]);
  const publicKey = await webcrypto.subtle.importKey("spki", createPublicKey(key).export({ type: "spki", format: "der" }), ALGORITHM, true, ["verify"]);
  return { privateKey, publicKey };
}

/** A positive 16-byte serial (the high bit cleared so DER does not read it as negative). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString("hex");
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + days * DAY_MS) };
}

/** A new self-signed CA that may sign certificates (basicConstraints CA, keyCertSign). */
export async function issueCA(opts: { readonly commonName: string; readonly days: number }): Promise<Issued> {
  const { keys, pem } = await newKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ CN: [opts.commonName] }],
    ...validity(opts.days),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: pem };
}

/** A certificate for `req`, signed by `ca` (a CA from issueCA, or any P-256 CA in PEM). */
export async function issueCert(ca: Issued, req: CertificateRequest): Promise<Issued> {
  const caCert = new x509.X509Certificate(ca.cert);
  const caKeys = await importKeyPair(ca.key);
  const own = req.key === undefined ? await newKeyPair() : { keys: await importKeyPair(req.key), pem: req.key };
  const usages = {
    server: [x509.ExtendedKeyUsage.serverAuth],
    client: [x509.ExtendedKeyUsage.clientAuth],
    "server+client": [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
  }[req.usage];
  const san = [
    ...(req.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(req.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const subject: x509.JsonName = [...(req.organization !== undefined ? [{ O: [req.organization] }] : []), { CN: [req.commonName] }];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: caCert.subjectName,
    ...validity(req.days),
    signingAlgorithm: ALGORITHM,
    publicKey: own.keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension(usages),
      ...(san.length > 0 ? [new x509.SubjectAlternativeNameExtension(san)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: own.pem };
}

/**
 * The agent-distribution PKI in `dir`: `ca.crt`/`ca.key`, the operator's serving certificate
 * `operator.crt`/`.key` (IP 127.0.0.1) and a client certificate `<node>.crt`/`.key` per node
 * (CN = node name, which the operator takes as the node). Files already there are kept, so a
 * restarted local cluster adds only the nodes that are new.
 */
export async function writeAgentPki(dir: string, nodes: readonly string[], opts: { readonly caName: string; readonly days: number }): Promise<void> {
  const write = (name: string, issued: Issued): void => {
    writeFileSync(join(dir, `${name}.key`), issued.key, { mode: 0o600 });
    writeFileSync(join(dir, `${name}.crt`), issued.cert);
  };
  let ca: Issued;
  if (existsSync(join(dir, "ca.crt"))) ca = { cert: readFileSync(join(dir, "ca.crt"), "utf8"), key: readFileSync(join(dir, "ca.key"), "utf8") };
  else write("ca", (ca = await issueCA({ commonName: opts.caName, days: opts.days })));
  const issue = async (name: string, req: Omit<CertificateRequest, "commonName" | "days">): Promise<void> => {
    if (!existsSync(join(dir, `${name}.crt`))) write(name, await issueCert(ca, { commonName: name, days: opts.days, ...req }));
  };
  await issue("operator", { usage: "server", ipAddresses: ["127.0.0.1"] });
  for (const n of nodes) await issue(n, { usage: "client" });
}
