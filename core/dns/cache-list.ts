// `membrane fqdn cache list`: one node's learned names as its agent serves them, read back at the CLI's edge, filtered and printed (Cilium's `cilium fqdn cache list`).
import type { FqdnCacheEntry } from "./fqdn-cache.ts";
import { normalizeDnsName, patternMatches } from "./name-pattern.ts";

/** The agent's answer to GET FQDN_CACHE_PATH. */
export interface FqdnCacheListing {
  readonly node: string;
  /** The agent's clock when it answered (RFC 3339): TTLs left are counted from it, not from the reader's. */
  readonly now: string;
  readonly entries: readonly FqdnCacheListingEntry[];
}

export interface FqdnCacheListingEntry {
  /** Lower case with the trailing dot, as the cache keeps it. */
  readonly name: string;
  readonly ip: string;
  /** When the answer's (raised) TTL runs out (RFC 3339); the address is kept the grace period longer, or while a connection to it lives. */
  readonly expiresAt: string;
  /** The pod whose lookup taught it (`namespace/name`), or its address when the agent does not know the pod. */
  readonly source?: string;
}

/** Where the agent serves its listing (on its metrics/health server). */
export const FQDN_CACHE_PATH = "/v1/fqdn/cache";

/** The listing of a node's cache, sorted by name then address; `sourceOf` names a source address's pod. */
export function fqdnCacheListing(node: string, entries: readonly FqdnCacheEntry[], now: number, sourceOf: (ip: string) => string | undefined): FqdnCacheListing {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  return {
    node,
    now: new Date(now).toISOString(),
    entries: sorted.map((e) => ({ name: e.name, ip: e.ip, expiresAt: new Date(e.expiresAt).toISOString(), ...(e.source !== undefined ? { source: sourceOf(e.source) ?? e.source } : {}) })),
  };
}

const isTime = (v: unknown): v is string => typeof v === "string" && !Number.isNaN(Date.parse(v));

/** An agent's answer, checked field by field; an error names the first bad field. */
export function decodeFqdnCacheListing(v: unknown): { ok: true; value: FqdnCacheListing } | { ok: false; error: string } {
  if (typeof v !== "object" || v === null) return { ok: false, error: "not a JSON object" };
  const o = v as Record<string, unknown>;
  if (typeof o.node !== "string" || o.node === "") return { ok: false, error: "node: must be a node name" };
  if (!isTime(o.now)) return { ok: false, error: "now: must be an RFC 3339 time" };
  if (!Array.isArray(o.entries)) return { ok: false, error: "entries: must be a list" };
  const entries: FqdnCacheListingEntry[] = [];
  for (const [i, x] of (o.entries as unknown[]).entries()) {
    const e = (typeof x === "object" && x !== null ? x : {}) as Record<string, unknown>;
    if (typeof e.name !== "string" || e.name === "") return { ok: false, error: `entries[${i}].name: must be a DNS name` };
    if (typeof e.ip !== "string" || e.ip === "") return { ok: false, error: `entries[${i}].ip: must be an address` };
    if (!isTime(e.expiresAt)) return { ok: false, error: `entries[${i}].expiresAt: must be an RFC 3339 time` };
    if (e.source !== undefined && typeof e.source !== "string") return { ok: false, error: `entries[${i}].source: must be a string` };
    entries.push({ name: e.name, ip: e.ip, expiresAt: e.expiresAt, ...(e.source !== undefined ? { source: e.source } : {}) });
  }
  return { ok: true, value: { node: o.node, now: o.now, entries } };
}

/** One printed row: a node's (name, address) with the seconds its TTL has left by the agent's clock (0: expired, in the grace period). */
export interface FqdnCacheRow {
  readonly node: string;
  readonly name: string;
  readonly ip: string;
  readonly ttlSeconds: number;
  readonly expiresAt: string;
  readonly source: string;
}

/** The rows of every listing whose name matches `namePattern` (a DNS rule's matchPattern: `*` within a label, `**.` for subdomains; a plain name matches itself). */
export function fqdnCacheRows(listings: readonly FqdnCacheListing[], namePattern?: string): FqdnCacheRow[] {
  const rows: FqdnCacheRow[] = [];
  for (const l of listings) {
    const now = Date.parse(l.now);
    for (const e of l.entries) {
      if (namePattern !== undefined && !patternMatches(normalizeDnsName(e.name), namePattern)) continue;
      rows.push({ node: l.node, name: e.name, ip: e.ip, ttlSeconds: Math.max(0, Math.ceil((Date.parse(e.expiresAt) - now) / 1000)), expiresAt: e.expiresAt, source: e.source ?? "" });
    }
  }
  return rows;
}
