// The FQDN cache's files in the agent's state directory: a snapshot and a journal of what was learned since, read before the proxy answers again.
import { parseIP } from "../cidr.ts";
import type { FieldError, Result } from "../model.ts";
import type { FqdnCacheEntry } from "./fqdn-cache.ts";

export const FQDN_STATE_VERSION = 1;

/** The identity the node gave a learned address (kept so that a restart gives it the same one). */
export interface AddressIdentity {
  readonly ip: string;
  readonly identity: number;
}

/**
 * What the snapshot file holds (JSON), and each line of its journal: `seq` numbers the snapshot, and
 * a journal line counts only when it carries the snapshot's `seq` (lines written before the last
 * snapshot, left by a crash between writing it and emptying the journal, are ignored).
 */
export interface FqdnCacheState {
  readonly version: typeof FQDN_STATE_VERSION;
  readonly seq: number;
  readonly entries: readonly FqdnCacheEntry[];
  readonly identities: readonly AddressIdentity[];
}

export function encodeFqdnState(entries: readonly FqdnCacheEntry[], identities: readonly AddressIdentity[] = [], seq = 0): string {
  const state: FqdnCacheState = { version: FQDN_STATE_VERSION, seq, entries, identities };
  return `${JSON.stringify(state)}\n`;
}

/**
 * The snapshot with its journal applied: the journal's lines of the snapshot's `seq`, in order. An
 * unterminated last line is a write a crash cut short and is left out; any other bad line is an error.
 */
export function decodeFqdnStateWithJournal(snapshot: string, journal: string): Result<FqdnCacheState> {
  const base = decodeFqdnState(snapshot);
  if (!base.ok) return base;
  const entries = [...base.value.entries];
  const identities = [...base.value.identities];
  // Every line ends with a newline: the last piece is "" or a write cut short.
  const complete = journal.split("\n").slice(0, -1);
  const errors: FieldError[] = [];
  complete.forEach((line, i) => {
    const r = decodeFqdnState(line);
    if (!r.ok) return void errors.push(...r.errors.map((e) => ({ path: `journal[${i}]${e.path ? `.${e.path}` : ""}`, message: e.message })));
    if (r.value.seq !== base.value.seq) return;
    entries.push(...r.value.entries);
    identities.push(...r.value.identities);
  });
  if (errors.length) return { ok: false, errors };
  return { ok: true, value: { ...base.value, entries, identities } };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Parses the file's text; every problem is reported with its field path, and nothing is half-taken. */
export function decodeFqdnState(text: string): Result<FqdnCacheState> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, errors: [{ path: "", message: `not JSON: ${(e as Error).message}` }] };
  }
  const errors: FieldError[] = [];
  if (!isRecord(v)) return { ok: false, errors: [{ path: "", message: "must be an object" }] };
  if (v.version !== FQDN_STATE_VERSION) errors.push({ path: "version", message: `must be ${FQDN_STATE_VERSION}` });
  if (v.seq !== undefined && (typeof v.seq !== "number" || !Number.isInteger(v.seq) || v.seq < 0)) errors.push({ path: "seq", message: "must be a non-negative integer" });
  if (!Array.isArray(v.entries)) errors.push({ path: "entries", message: "must be a list" });
  const entries: FqdnCacheEntry[] = [];
  if (Array.isArray(v.entries)) {
    v.entries.forEach((e: unknown, i) => {
      const at = `entries[${i}]`;
      if (!isRecord(e)) return void errors.push({ path: at, message: "must be an object" });
      const before = errors.length;
      if (typeof e.name !== "string" || e.name === "") errors.push({ path: `${at}.name`, message: "must be a non-empty string" });
      if (typeof e.ip !== "string" || parseIP(e.ip) === undefined) errors.push({ path: `${at}.ip`, message: "must be an IPv4 or IPv6 address" });
      if (typeof e.expiresAt !== "number" || !Number.isFinite(e.expiresAt)) errors.push({ path: `${at}.expiresAt`, message: "must be a number (epoch milliseconds)" });
      if (e.source !== undefined && typeof e.source !== "string") errors.push({ path: `${at}.source`, message: "must be a string" });
      if (errors.length !== before) return;
      entries.push({
        name: e.name as string,
        ip: e.ip as string,
        expiresAt: e.expiresAt as number,
        ...(typeof e.source === "string" ? { source: e.source } : {}),
      });
    });
  }
  const identities: AddressIdentity[] = [];
  if (v.identities !== undefined && !Array.isArray(v.identities)) errors.push({ path: "identities", message: "must be a list" });
  if (Array.isArray(v.identities)) {
    v.identities.forEach((e: unknown, i) => {
      const at = `identities[${i}]`;
      if (!isRecord(e)) return void errors.push({ path: at, message: "must be an object" });
      if (typeof e.ip !== "string" || parseIP(e.ip) === undefined) return void errors.push({ path: `${at}.ip`, message: "must be an IPv4 or IPv6 address" });
      if (typeof e.identity !== "number" || !Number.isInteger(e.identity) || e.identity < 0) return void errors.push({ path: `${at}.identity`, message: "must be a non-negative integer" });
      identities.push({ ip: e.ip, identity: e.identity });
    });
  }
  if (errors.length) return { ok: false, errors };
  return { ok: true, value: { version: FQDN_STATE_VERSION, seq: typeof v.seq === "number" ? v.seq : 0, entries, identities } };
}
