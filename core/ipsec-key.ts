// IPsec key material as it lives in a Secret (algorithm, key, SPI, and the previous key during a rotation), and the key's status from what nodes report: pure, no I/O.
import type { FieldError, Result } from "./model.ts";

/** The one AEAD Membrane programs (as Cilium's default): AES-GCM per RFC 4106, 128-bit ICV. */
export const IPSEC_ALGORITHM = "rfc4106(gcm(aes))";
/** AES-128/192/256 key plus the 4-byte salt RFC 4106 appends, in bytes. */
const KEY_BYTES = [20, 28, 36] as const;
/** SPIs travel in 4 bits of the packet mark (Cilium's layout, and CiliumNode spec.encryption.key's range). */
export const MIN_SPI = 1;
export const MAX_SPI = 15;

export interface IpsecKey {
  readonly algorithm: string;
  /** Lower-case hex, no 0x. */
  readonly keyHex: string;
  readonly spi: number;
}

export interface IpsecKeyMaterial {
  readonly current: IpsecKey;
  /** The key before the last rotation, kept until every node uses the current one. */
  readonly previous?: IpsecKey;
}

/** Secret data keys: the current key, and the previous one under the same names with a `previous-` prefix. */
export const SECRET_FIELDS = { algorithm: "algorithm", key: "key", spi: "spi" } as const;
const PREVIOUS = "previous-";

/**
 * Parses a Secret's decoded `data` (field → UTF-8 text). Every error names the Secret's field
 * (`data.key`); the key bytes themselves never appear in a message.
 */
export function parseIpsecSecret(data: Readonly<Record<string, string>>): Result<IpsecKeyMaterial> {
  const errors: FieldError[] = [];
  const current = parseKey(data, "", errors);
  const hasPrevious = Object.values(SECRET_FIELDS).some((f) => data[PREVIOUS + f] !== undefined);
  const previous = hasPrevious ? parseKey(data, PREVIOUS, errors) : undefined;
  if (current && previous && previous.spi === current.spi) {
    errors.push({ path: `data.${PREVIOUS}spi`, message: `${previous.spi} equals data.spi: a rotation needs a new SPI` });
  }
  if (errors.length > 0 || !current) return { ok: false, errors };
  return { ok: true, value: previous ? { current, previous } : { current } };
}

function parseKey(data: Readonly<Record<string, string>>, prefix: string, errors: FieldError[]): IpsecKey | undefined {
  const at = (f: string): string => `data.${prefix}${f}`;
  const before = errors.length;
  const algorithm = data[prefix + SECRET_FIELDS.algorithm]?.trim();
  if (algorithm === undefined || algorithm === "") errors.push({ path: at("algorithm"), message: `required: ${IPSEC_ALGORITHM}` });
  else if (algorithm !== IPSEC_ALGORITHM) errors.push({ path: at("algorithm"), message: `${JSON.stringify(algorithm)} is not supported: use ${IPSEC_ALGORITHM}` });
  const rawKey = data[prefix + SECRET_FIELDS.key]?.trim();
  const keyHex = rawKey?.replace(/^0x/i, "").toLowerCase();
  if (keyHex === undefined || keyHex === "") errors.push({ path: at("key"), message: "required: the key and its 4-byte salt in hex" });
  else if (!/^[0-9a-f]+$/.test(keyHex) || keyHex.length % 2 !== 0) errors.push({ path: at("key"), message: "must be hex digits (an even number of them)" });
  else if (!(KEY_BYTES as readonly number[]).includes(keyHex.length / 2)) {
    errors.push({ path: at("key"), message: `is ${keyHex.length / 2} bytes: ${IPSEC_ALGORITHM} needs ${KEY_BYTES.join(", ")} (an AES-128/192/256 key and a 4-byte salt)` });
  }
  const rawSpi = data[prefix + SECRET_FIELDS.spi]?.trim();
  const spi = rawSpi !== undefined && /^\d+$/.test(rawSpi) ? Number(rawSpi) : NaN;
  if (rawSpi === undefined || rawSpi === "") errors.push({ path: at("spi"), message: `required: an integer ${MIN_SPI}..${MAX_SPI}` });
  else if (!(spi >= MIN_SPI && spi <= MAX_SPI)) errors.push({ path: at("spi"), message: `${JSON.stringify(rawSpi)} is not an SPI: an integer ${MIN_SPI}..${MAX_SPI}` });
  if (errors.length > before || algorithm === undefined || keyHex === undefined) return undefined;
  return { algorithm, keyHex, spi };
}

/** The Secret's data (text) for some material: the inverse of parseIpsecSecret. */
export function ipsecSecretData(m: IpsecKeyMaterial): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (prefix: string, k: IpsecKey): void => {
    out[prefix + SECRET_FIELDS.algorithm] = k.algorithm;
    out[prefix + SECRET_FIELDS.key] = k.keyHex;
    out[prefix + SECRET_FIELDS.spi] = String(k.spi);
  };
  put("", m.current);
  if (m.previous) put(PREVIOUS, m.previous);
  return out;
}

/** The SPI after `spi`, wrapping within MIN_SPI..MAX_SPI. */
export function nextSpi(spi: number): number {
  return spi >= MAX_SPI ? MIN_SPI : spi + 1;
}

/** Rotation: a fresh key of the same length under the next SPI; the current one becomes the previous. */
export function rotated(m: IpsecKeyMaterial, freshKeyHex: string): IpsecKeyMaterial {
  return { current: { algorithm: m.current.algorithm, keyHex: freshKeyHex, spi: nextSpi(m.current.spi) }, previous: m.current };
}

/** What one node says about encryption: the SPI it has programmed (CiliumNode spec.encryption.key), and its EncryptionReady condition. */
export interface NodeKeyReport {
  readonly name: string;
  readonly spi?: number;
  readonly ready?: { readonly status: string; readonly reason: string; readonly message: string };
}

export interface NodeKeySummary {
  /** Nodes whose programmed SPI is the current one. */
  readonly onCurrent: readonly string[];
  readonly total: number;
  /** Nodes that report they cannot use the key (EncryptionReady=False), with why. */
  readonly unable: readonly { readonly name: string; readonly reason: string; readonly message: string }[];
  /** Nodes still on the previous SPI or on none, and not reporting a failure: they may catch up. */
  readonly pending: readonly string[];
  /** Every node uses the current key: the previous one can go. */
  readonly allOnCurrent: boolean;
}

export function summarizeNodes(currentSpi: number, nodes: readonly NodeKeyReport[]): NodeKeySummary {
  const sorted = [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const onCurrent = sorted.filter((n) => n.spi === currentSpi).map((n) => n.name);
  const unable = sorted
    .filter((n) => n.spi !== currentSpi && n.ready?.status === "False")
    .map((n) => ({ name: n.name, reason: n.ready!.reason, message: n.ready!.message }));
  const pending = sorted.filter((n) => n.spi !== currentSpi && n.ready?.status !== "False").map((n) => n.name);
  return { onCurrent, total: sorted.length, unable, pending, allOnCurrent: sorted.length > 0 && onCurrent.length === sorted.length };
}

/** "n/m", as policies count nodes. */
export function nodeCount(s: NodeKeySummary): string {
  return `${s.onCurrent.length}/${s.total}`;
}
