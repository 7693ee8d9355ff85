// TLS inspection on the L7 proxy's ports (Cilium's terminatingTLS, originatingTLS, serverNames): the port's TLS configuration, its Secret material loaded from the agent's 0600 files, and the upstream TLS connection.
import { createHash } from "node:crypto";
import fs from "node:fs";
import type net from "node:net";
import path from "node:path";
import tls from "node:tls";
import type { RuleTls, TlsSecretUse } from "../../core/model.ts";
import { serverNameAllowed } from "../../core/l7/server-names.ts";
import type { ProxyConfig } from "./config.ts";

/**
 * A port's TLS as the agent writes it into the proxy's configuration: file paths, never the material
 * itself (the files are the agent's, mode 0600 in its state directory), and the Secret each came
 * from ("namespace/name"), which is what logs and errors name.
 */
export interface PortTlsConfig {
  /** The proxy terminates the client's TLS with this certificate chain and key (terminatingTLS). */
  readonly terminating?: { readonly secret: string; readonly certificateFile: string; readonly privateKeyFile: string };
  /** The proxy opens TLS to the original destination and verifies it against these CAs (originatingTLS). */
  readonly originating?: { readonly secret: string; readonly trustedCAFile: string };
  /** SNI values the client's handshake must name (empty: any). */
  readonly serverNames?: readonly string[];
  /**
   * Set when the material is not there (a Secret missing or malformed): every connection to the port
   * is closed before a byte is read: the rule fails closed, never plain.
   */
  readonly unavailable?: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** The `tls` field of a port in the proxy's configuration, or errors by path through `add`. */
export function parsePortTls(raw: unknown, path: string, add: (path: string, message: string) => void): PortTlsConfig | undefined {
  if (!isObj(raw)) return void add(path, "must be an object");
  const known = ["terminating", "originating", "serverNames", "unavailable"];
  for (const k of Object.keys(raw)) if (!known.includes(k)) add(`${path}.${k}`, `unknown field (known: ${known.join(", ")})`);
  const files = (v: unknown, p: string, fields: readonly string[]): Obj | undefined => {
    if (v === undefined) return undefined;
    if (!isObj(v)) return void add(p, "must be an object");
    for (const k of Object.keys(v)) if (!["secret", ...fields].includes(k)) add(`${p}.${k}`, `unknown field (known: secret, ${fields.join(", ")})`);
    for (const k of ["secret", ...fields]) if (typeof v[k] !== "string" || v[k] === "") add(`${p}.${k}`, "must be a non-empty string");
    return v;
  };
  const terminating = files(raw.terminating, `${path}.terminating`, ["certificateFile", "privateKeyFile"]);
  const originating = files(raw.originating, `${path}.originating`, ["trustedCAFile"]);
  if (raw.serverNames !== undefined && (!Array.isArray(raw.serverNames) || raw.serverNames.some((n) => typeof n !== "string" || n === "")))
    add(`${path}.serverNames`, "must be a list of non-empty strings");
  if (raw.unavailable !== undefined && (typeof raw.unavailable !== "string" || raw.unavailable === "")) add(`${path}.unavailable`, "must be a non-empty string (why)");
  const sniOnly = Array.isArray(raw.serverNames) && raw.serverNames.length > 0;
  if (!terminating && !originating && raw.unavailable === undefined && !sniOnly) add(path, "names neither terminating nor originating TLS nor serverNames (nor why it is unavailable)");
  return {
    ...(terminating ? { terminating: terminating as unknown as NonNullable<PortTlsConfig["terminating"]> } : {}),
    ...(originating ? { originating: originating as unknown as NonNullable<PortTlsConfig["originating"]> } : {}),
    ...(Array.isArray(raw.serverNames) ? { serverNames: raw.serverNames as string[] } : {}),
    ...(typeof raw.unavailable === "string" ? { unavailable: raw.unavailable } : {}),
  };
}

/** A port's TLS with its material read: what the proxy uses per connection. */
export interface LoadedPortTls {
  /** The server side presented to clients (terminatingTLS): the context per handshake, the PEM for the server's default. */
  readonly terminating?: { readonly context: tls.SecureContext; readonly cert: string; readonly key: string };
  /** PEM CAs the destination's certificate must chain to (originatingTLS). */
  readonly trustedCA?: string;
  readonly serverNames: readonly string[];
  /** Why the port refuses every connection (material missing or unusable). */
  readonly unavailable?: string;
}

/**
 * Reads the port's files. A missing or unusable file makes the port unavailable (its connections are
 * refused), with a reason that names the Secret and the file's role, never the file's bytes (Node's
 * PEM errors do not quote the input, and only their message is kept).
 */
export function loadPortTls(config: PortTlsConfig): LoadedPortTls {
  const serverNames = config.serverNames ?? [];
  if (config.unavailable !== undefined) return { serverNames, unavailable: config.unavailable };
  let terminating: LoadedPortTls["terminating"];
  let trustedCA: string | undefined;
  const t = config.terminating;
  if (t) {
    const cert = read(t.certificateFile);
    const key = read(t.privateKeyFile);
    if (!cert.ok) return { serverNames, unavailable: `terminatingTLS Secret ${t.secret}: certificate not readable (${cert.error})` };
    if (!key.ok) return { serverNames, unavailable: `terminatingTLS Secret ${t.secret}: private key not readable (${key.error})` };
    try {
      terminating = { context: tls.createSecureContext({ cert: cert.text, key: key.text, minVersion: "TLSv1.2" }), cert: cert.text, key: key.text };
    } catch (err) {
      return { serverNames, unavailable: `terminatingTLS Secret ${t.secret}: the certificate and private key are not a usable pair (${errorCode(err)})` };
    }
  }
  const o = config.originating;
  if (o) {
    const ca = read(o.trustedCAFile);
    if (!ca.ok) return { serverNames, unavailable: `originatingTLS Secret ${o.secret}: trusted CA not readable (${ca.error})` };
    try {
      tls.createSecureContext({ ca: ca.text });
    } catch (err) {
      return { serverNames, unavailable: `originatingTLS Secret ${o.secret}: the trusted CA is not a PEM certificate (${errorCode(err)})` };
    }
    trustedCA = ca.text;
  }
  return { serverNames, ...(terminating ? { terminating } : {}), ...(trustedCA !== undefined ? { trustedCA } : {}) };
}

function read(file: string): { ok: true; text: string } | { ok: false; error: string } {
  try {
    return { ok: true, text: fs.readFileSync(file, "utf8") };
  } catch (err) {
    return { ok: false, error: errorCode(err) };
  }
}

/** An error's code or a generic word: the message of a PEM parser could in principle echo input, so it is not kept. */
function errorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : "invalid";
}

/** Whether the port is judged by the client's SNI alone (serverNames without terminating or originating TLS): sni-filter.ts. */
export function sniOnly(t: LoadedPortTls | undefined): t is LoadedPortTls {
  return t !== undefined && t.terminating === undefined && t.trustedCA === undefined && t.unavailable === undefined && t.serverNames.length > 0;
}

/** Whether connections to the port are TLS the proxy terminates (or refuses for want of material). */
export function terminatesTls(config: PortTlsConfig | undefined): boolean {
  return config !== undefined && (config.terminating !== undefined || (config.unavailable !== undefined && config.originating === undefined));
}

/**
 * The server options of a terminating port: the handshake's SNI is checked against serverNames
 * before the certificate is presented (a wrong name fails the handshake), and the port's current
 * context is looked up per handshake, so a rotated Secret takes effect without a restart.
 */
export function sniCallback(current: () => LoadedPortTls | undefined): (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void {
  return (servername, cb) => {
    const t = current();
    if (!t?.terminating) return cb(new Error(t?.unavailable ?? "no TLS material for this port"));
    if (!serverNameAllowed(servername, t.serverNames)) return cb(new Error(`server name ${JSON.stringify(servername)} is not in the rule's serverNames`));
    cb(null, t.terminating.context);
  };
}

/**
 * The upstream side of originatingTLS over an already opened (marked) socket: the destination must
 * present a certificate chaining to the Secret's CAs and valid for `servername` (the client's SNI, else
 * the request's host), as the client would have checked it.
 */
export function connectOriginating(socket: net.Socket, trustedCA: string, servername: string | undefined, protocols: readonly ("http/1.1" | "h2")[] = ["http/1.1"]): tls.TLSSocket {
  const upstream = tls.connect({ socket, ca: trustedCA, ...(servername ? { servername } : {}), ALPNProtocols: [...protocols], minVersion: "TLSv1.2" });
  // A connection that must be HTTP/2 (an HTTP/2 upstream reconnecting) fails when the destination does not agree to h2, never spoken to in a protocol it did not choose.
  if (protocols.length === 1 && protocols[0] === "h2")
    upstream.once("secureConnect", () => {
      if (upstream.alpnProtocol !== "h2") upstream.destroy(new Error(`the destination did not negotiate h2 (ALPN: ${upstream.alpnProtocol || "none"})`));
    });
  return upstream;
}

/**
 * The agent's side: a port's TLS for the proxy from the rules' TLS as the operator sent it, the
 * Secrets' material written under `dir` (mode 0700) as 0600 files named by their content's hash (a
 * rotated Secret is a new file, so the configuration changes and the proxy reloads). Anything
 * missing makes the port unavailable with a reason naming the Secret: it fails closed.
 */
export function portTlsFromRules(rules: RuleTls | "conflict", dir: string): PortTlsConfig {
  if (rules === "conflict") return { unavailable: "the rules sharing this proxy port ask for different TLS settings" };
  const serverNames = rules.serverNames?.length ? { serverNames: rules.serverNames } : {};
  const ref = (u: TlsSecretUse): string => `${u.secret.namespace}/${u.secret.name}`;
  const missing = (role: string, u: TlsSecretUse, what: string): PortTlsConfig => ({
    ...serverNames,
    unavailable: `${role} Secret ${ref(u)}: ${u.unavailable ?? `${what} not sent by the operator`}`,
  });
  let terminating: PortTlsConfig["terminating"];
  let originating: PortTlsConfig["originating"];
  const t = rules.terminating;
  if (t) {
    if (t.unavailable !== undefined || !t.material?.certificate || !t.material.privateKey) return missing("terminatingTLS", t, "certificate and private key");
    terminating = { secret: ref(t), certificateFile: materialFile(dir, t.material.certificate), privateKeyFile: materialFile(dir, t.material.privateKey) };
  }
  const o = rules.originating;
  if (o) {
    if (o.unavailable !== undefined || !o.material?.trustedCA) return missing("originatingTLS", o, "trusted CA");
    originating = { secret: ref(o), trustedCAFile: materialFile(dir, o.material.trustedCA) };
  }
  // serverNames alone (no terminatingTLS) cannot be checked by a proxy that does not terminate: refused, never passed.
  if (!terminating && !originating) return { ...serverNames, unavailable: "serverNames without terminatingTLS are not inspected by this proxy" };
  return { ...(terminating ? { terminating } : {}), ...(originating ? { originating } : {}), ...serverNames };
}

const MATERIAL = /^[0-9a-f]{32}\.pem$/;

/** Writes `text` (once) as a 0600 file named by its hash under `dir`; its path. */
function materialFile(dir: string, text: string): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${createHash("sha256").update(text).digest("hex").slice(0, 32)}.pem`);
  if (!fs.existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text, { mode: 0o600 });
    fs.renameSync(tmp, file);
  }
  return file;
}

/** Removes the material files under `dir` that no port of `config` names (a Secret no longer used leaves no key on disk). */
export function pruneMaterial(dir: string, config: ProxyConfig): void {
  const used = new Set<string>();
  for (const p of config.ports) {
    const t = p.tls;
    for (const f of [t?.terminating?.certificateFile, t?.terminating?.privateKeyFile, t?.originating?.trustedCAFile]) if (f) used.add(path.basename(f));
  }
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) if (MATERIAL.test(n) && !used.has(n)) fs.rmSync(path.join(dir, n), { force: true });
}
