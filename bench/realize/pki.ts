// Benchmark helper: a throwaway CA, the operator's serving certificate and one client certificate per node (CN = node name), built in-process with node:crypto and a minimal DER encoder so 1,000 certificates take milliseconds, not 3,000 openssl runs.
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
};
const seq = (...p: Buffer[]): Buffer => tlv(0x30, ...p);
function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split(".").map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const septets: number[] = [];
    for (let v = n; ; v = Math.floor(v / 128)) {
      septets.unshift(v & 0x7f);
      if (v < 128) break;
    }
    out.push(...septets.map((s, i) => (i < septets.length - 1 ? s | 0x80 : s)));
  }
  return tlv(0x06, Buffer.from(out));
}
function uint(b: Buffer): Buffer {
  let v = b;
  while (v.length > 1 && v[0] === 0 && ((v[1] ?? 0) & 0x80) === 0) v = v.subarray(1);
  return tlv(0x02, (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
const utcTime = (d: Date): Buffer => tlv(0x17, Buffer.from(d.toISOString().replace(/[-:T]/g, "").slice(2, 14) + "Z"));
const name = (cn: string): Buffer => seq(tlv(0x31, seq(oid("2.5.4.3"), tlv(0x0c, Buffer.from(cn, "utf8")))));
const ext = (id: string, critical: boolean, value: Buffer): Buffer => seq(oid(id), ...(critical ? [tlv(0x01, Buffer.from([0xff]))] : []), tlv(0x04, value));
const ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"));

function certificate(subject: string, subjectKey: KeyObject, issuer: string, issuerKey: KeyObject, extensions: Buffer[]): string {
  const now = Date.now();
  const tbs = seq(
    tlv(0xa0, uint(Buffer.from([2]))),
    uint(randomBytes(12)),
    ECDSA_SHA256,
    name(issuer),
    seq(utcTime(new Date(now - 3_600_000)), utcTime(new Date(now + 86_400_000))),
    name(subject),
    subjectKey.export({ type: "spki", format: "der" }),
    tlv(0xa3, seq(...extensions)),
  );
  const sig = sign("sha256", tbs, issuerKey);
  const der = seq(tbs, ECDSA_SHA256, tlv(0x03, Buffer.from([0]), sig));
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END CERTIFICATE-----\n`;
}

const EKU = (purpose: "1" | "2"): Buffer => ext("2.5.29.37", false, seq(oid(`1.3.6.1.5.5.7.3.${purpose}`)));

export interface BenchPki {
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  /** One private key shared by every client certificate (only the CN differs per node). */
  readonly clientKey: Buffer;
  clientCert(node: string): Buffer;
}

export function makeBenchPki(): BenchPki {
  const ec = (): { privateKey: KeyObject; publicKey: KeyObject } => generateKeyPairSync("ec", { namedCurve: "P-256" });
  const caPair = ec();
  const caName = "membrane-bench-ca";
  const ca = certificate(caName, caPair.publicKey, caName, caPair.privateKey, [ext("2.5.29.19", true, seq(tlv(0x01, Buffer.from([0xff])))), ext("2.5.29.15", true, tlv(0x03, Buffer.from([1, 0x06])))]);
  const server = ec();
  const serverCert = certificate("membrane-operator", server.publicKey, caName, caPair.privateKey, [
    ext("2.5.29.17", false, seq(tlv(0x87, Buffer.from([127, 0, 0, 1])))),
    EKU("1"),
  ]);
  const client = ec();
  const pem = (k: KeyObject): Buffer => Buffer.from(k.export({ type: "pkcs8", format: "pem" }) as string);
  return {
    ca: Buffer.from(ca),
    serverCert: Buffer.from(serverCert),
    serverKey: pem(server.privateKey),
    clientKey: pem(client.privateKey),
    clientCert: (node) => Buffer.from(certificate(node, client.publicKey, caName, caPair.privateKey, [EKU("2")])),
  };
}
