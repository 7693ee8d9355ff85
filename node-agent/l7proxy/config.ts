// The L7 proxy's configuration as the agent writes it (one JSON file): the ports it serves, each port's HTTP rules, its limits; parsed at the edge with errors naming the field.
import fs from "node:fs";
import net from "node:net";
import type { FieldError, HTTPRule, Result } from "../../core/model.ts";
import type { HttpRuleRef } from "../../core/l7/http-decision.ts";
import { wholeValue } from "../../core/l7/http-rule.ts";
import { parsePortTls, type PortTlsConfig } from "./tls.ts";

export interface ProxyLimits {
  /** Largest request head (request line and headers) accepted; larger gets 431 and the connection closes. */
  readonly maxHeaderBytes: number;
  /** Time allowed to send a request's head (slowloris); exceeded: 408 and the connection closes. */
  readonly headersTimeoutMs: number;
  /** A connection with no request (between keep-alive requests) or no bytes moving for this long is closed. */
  readonly idleTimeoutMs: number;
  /** Time allowed to open the upstream connection (a dropped SYN); exceeded: the client gets 504 at once instead of waiting for the kernel's SYN retries. */
  readonly connectTimeoutMs: number;
}

export const DEFAULT_LIMITS: ProxyLimits = { maxHeaderBytes: 16384, headersTimeoutMs: 10_000, idleTimeoutMs: 60_000, connectTimeoutMs: 5_000 };

export interface ProxyPortConfig {
  /** The proxy port the datapath steers to (the policy entry's proxyPort). */
  readonly port: number;
  /**
   * Whose rules these are: the client's egress rules (default) or the destination's ingress rules;
   * the upstream connection's mark says which, so the destination's datapath admits it only after
   * its own ingress rules were applied.
   */
  readonly direction?: "egress" | "ingress";
  /** The port's HTTP rules, ORed, each naming the compiled rule it came from. */
  readonly http: readonly HttpRuleRef[];
  /** TLS inspection on the port (terminatingTLS, originatingTLS, serverNames): tls.ts. */
  readonly tls?: PortTlsConfig;
}

export interface ProxyConfig {
  /** The node's IPv4 address the proxy listens on (the datapath's redirect target for IPv4 pods); absent on an IPv6-only node. */
  readonly address?: string;
  /** The node's IPv6 address, where the datapath steers IPv6 pods' flows: the proxy listens there too. At least one of the two. */
  readonly address6?: string;
  readonly ports: readonly ProxyPortConfig[];
  readonly limits: ProxyLimits;
  /**
   * false: request paths are judged and forwarded as sent (the agent's --http-normalize-path=false, Cilium's switch of
   * Envoy's normalize_path, merge_slashes and escaped-slash redirect). Written only when false, so a proxy that does not
   * know the field (an older membrane-l7proxy pod during an upgrade) still takes the default's configuration.
   */
  readonly httpNormalizePath?: false;
  /** The writer's count of this configuration, echoed in the proxy's status once applied (so the agent knows new rules are in force). */
  readonly generation?: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** The configuration from the file's JSON text, or every error with its field path. */
export function parseProxyConfig(text: string): Result<ProxyConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, errors: [{ path: "", message: `not JSON: ${err instanceof Error ? err.message : String(err)}` }] };
  }
  const errs: FieldError[] = [];
  const add = (path: string, message: string): void => void errs.push({ path, message });
  if (!isObj(raw)) return { ok: false, errors: [{ path: "", message: "must be an object" }] };
  known(raw, ["address", "address6", "ports", "limits", "httpNormalizePath", "generation"], "", add);
  if (raw.httpNormalizePath !== undefined && typeof raw.httpNormalizePath !== "boolean") add("httpNormalizePath", `${JSON.stringify(raw.httpNormalizePath)} is not true or false`);
  if (raw.generation !== undefined && (typeof raw.generation !== "number" || !Number.isSafeInteger(raw.generation) || raw.generation < 0))
    add("generation", `${JSON.stringify(raw.generation)} is not a non-negative integer`);

  const address = raw.address;
  const address6 = raw.address6;
  if (address === undefined && address6 === undefined) add("address", "required, or address6 (the node's address the proxy listens on)");
  if (address !== undefined && (typeof address !== "string" || !/^(\d{1,3})(\.\d{1,3}){3}$/.test(address) || address.split(".").some((o) => Number(o) > 255)))
    add("address", `${JSON.stringify(address)} is not an IPv4 address (the proxy listens on the node's IPv4 address)`);
  if (address6 !== undefined && (typeof address6 !== "string" || !net.isIPv6(address6)))
    add("address6", `${JSON.stringify(address6)} is not an IPv6 address (the node's, where IPv6 flows are steered)`);

  const limits = { ...DEFAULT_LIMITS };
  if (raw.limits !== undefined) {
    if (!isObj(raw.limits)) add("limits", "must be an object");
    else {
      known(raw.limits, Object.keys(DEFAULT_LIMITS), "limits", add);
      for (const k of Object.keys(DEFAULT_LIMITS) as (keyof ProxyLimits)[]) {
        const v = raw.limits[k];
        if (v === undefined) continue;
        if (typeof v !== "number" || !Number.isInteger(v) || v < 1) add(`limits.${k}`, `${JSON.stringify(v)} is not a positive integer`);
        else limits[k] = v;
      }
    }
  }

  const ports: ProxyPortConfig[] = [];
  const seen = new Set<number>();
  if (!Array.isArray(raw.ports)) add("ports", "must be a list");
  else {
    raw.ports.forEach((p: unknown, i) => {
      const pp = `ports[${i}]`;
      if (!isObj(p)) return add(pp, "must be an object");
      known(p, ["port", "direction", "http", "tls"], pp, add);
      const tls = p.tls !== undefined ? parsePortTls(p.tls, `${pp}.tls`, add) : undefined;
      if (p.direction !== undefined && p.direction !== "egress" && p.direction !== "ingress") add(`${pp}.direction`, `${JSON.stringify(p.direction)} is not egress or ingress`);
      const port = p.port;
      if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) add(`${pp}.port`, `${JSON.stringify(port)} is not a port number`);
      else if (seen.has(port)) add(`${pp}.port`, `${port} is listed twice`);
      else seen.add(port);
      if (!Array.isArray(p.http)) return add(`${pp}.http`, "must be a list");
      const http: HttpRuleRef[] = [];
      p.http.forEach((r: unknown, j) => {
        const before = errs.length;
        const rule = httpRuleRef(r, `${pp}.http[${j}]`, add);
        if (errs.length > before) return;
        if (rule) http.push(rule);
      });
      if (typeof port === "number") ports.push({ port, ...(p.direction === "ingress" ? { direction: "ingress" as const } : {}), http, ...(tls ? { tls } : {}) });
    });
  }
  if (errs.length) return { ok: false, errors: errs };
  return { ok: true, value: { ...(address !== undefined ? { address: address as string } : {}), ...(address6 !== undefined ? { address6: address6 as string } : {}), ports, limits, ...(raw.httpNormalizePath === false ? { httpNormalizePath: false as const } : {}), ...(raw.generation !== undefined ? { generation: raw.generation as number } : {}) } };
}

function httpRuleRef(r: unknown, path: string, add: (path: string, message: string) => void): HttpRuleRef | undefined {
  if (!isObj(r)) return void add(path, "must be an object");
  known(r, ["ruleId", "index", "rule"], path, add);
  for (const k of ["ruleId", "index"] as const) {
    const v = r[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) add(`${path}.${k}`, `${JSON.stringify(v)} is not a non-negative integer`);
  }
  const rule = r.rule;
  if (!isObj(rule)) {
    add(`${path}.rule`, "must be an object (an HTTP rule: method, path, host, headers, headerMatches)");
    return undefined;
  }
  const rp = `${path}.rule`;
  known(rule, ["method", "path", "host", "headers", "headerMatches"], rp, add);
  for (const k of ["method", "path", "host"] as const) {
    const v = rule[k];
    if (v === undefined) continue;
    if (typeof v !== "string") add(`${rp}.${k}`, "must be a string");
    else {
      try {
        wholeValue(v);
      } catch (err) {
        add(`${rp}.${k}`, `${JSON.stringify(v)} is not a valid regular expression: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  if (rule.headers !== undefined && (!Array.isArray(rule.headers) || rule.headers.some((h) => typeof h !== "string" || h === "")))
    add(`${rp}.headers`, "must be a list of non-empty strings");
  if (rule.headerMatches !== undefined) {
    if (!Array.isArray(rule.headerMatches)) add(`${rp}.headerMatches`, "must be a list");
    else
      rule.headerMatches.forEach((hm: unknown, k) => {
        const hp = `${rp}.headerMatches[${k}]`;
        if (!isObj(hm)) return add(hp, "must be an object");
        known(hm, ["name", "value", "mismatch", "secret"], hp, add);
        if (typeof hm.name !== "string" || hm.name === "") add(`${hp}.name`, "a header name is required");
        if (hm.value !== undefined && typeof hm.value !== "string") add(`${hp}.value`, "must be a string");
        if (hm.mismatch !== undefined && !["LOG", "ADD", "DELETE", "REPLACE"].includes(hm.mismatch as string))
          add(`${hp}.mismatch`, `${JSON.stringify(hm.mismatch)} is not a mismatch action (LOG, ADD, DELETE or REPLACE)`);
        if (hm.secret !== undefined && (!isObj(hm.secret) || typeof hm.secret.name !== "string" || hm.secret.name === ""))
          add(`${hp}.secret`, "must name a Secret ({name, namespace})");
      });
  }
  return { ruleId: r.ruleId as number, index: r.index as number, rule: rule as HTTPRule };
}

function known(o: Obj, fields: readonly string[], path: string, add: (path: string, message: string) => void): void {
  for (const k of Object.keys(o)) if (!fields.includes(k)) add(path ? `${path}.${k}` : k, `unknown field (known: ${fields.join(", ")})`);
}

/**
 * Writes the configuration the way the proxy expects to see it change: to a temporary file renamed
 * over the old one (the proxy never reads a half-written file).
 */
export function writeProxyConfig(file: string, config: ProxyConfig): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, configText(config), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The file's text for `config`. */
export function configText(config: ProxyConfig): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
