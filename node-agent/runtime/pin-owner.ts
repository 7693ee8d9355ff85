// Which runtime owns a pin scope's programs while two runtimes overlap (the chart's surge rollout of membrane-runtime:
// the new pod's runtime adopts the pins before the old one is SIGTERMed): a one-entry array map pinned in the scope as
// `owner`, holding the newest adopter's token. An exiting runtime removes the scope only while it owns it (bpffs holds
// pins only, no plain files: hence a map).
import fs from "node:fs";
import path from "node:path";
import { closePinnedMap, openPinnedMap, pinNewMap } from "../bpf/loader.ts";

const BPF_MAP_TYPE_ARRAY = 2;
const OWNER_PIN = "owner";
/** pids fit in 22 bits (the kernel's PID_MAX_LIMIT, 4,194,304). */
const PID_BITS = 22n;

/**
 * A process as one 64-bit value: its start (clock ticks since boot, /proc/PID/stat field 22) above its pid, so a
 * later-started runtime has the larger token and a reused pid never matches a dead owner's. One word: one map write.
 */
export function processToken(pid: number): bigint | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields after it start at the last ") ".
  const start = stat.slice(stat.lastIndexOf(") ") + 2).split(" ")[19];
  return start === undefined ? undefined : (BigInt(start) << PID_BITS) | BigInt(pid);
}

/** This process's token. */
export function selfToken(): bigint {
  const t = processToken(process.pid);
  if (t === undefined) throw new Error(`/proc/${process.pid}/stat: unreadable`);
  return t;
}

const pidOf = (token: bigint): number => Number(token & ((1n << PID_BITS) - 1n));
const key0 = (): Buffer => Buffer.alloc(4);

/** The owner token recorded in a scope directory, or undefined when there is none. */
export function recordedOwner(pinDir: string): bigint | undefined {
  const pin = path.join(pinDir, OWNER_PIN);
  if (!fs.existsSync(pin)) return undefined;
  let m;
  try {
    m = openPinnedMap(pin, OWNER_PIN);
  } catch {
    return undefined; // removed meanwhile
  }
  try {
    const token = m.lookup(key0())?.readBigUInt64LE(0) ?? 0n;
    return token === 0n ? undefined : token;
  } finally {
    closePinnedMap(m);
  }
}

/**
 * Records `token` as the scope's owner unless a later-started runtime that is still alive holds it (the old runtime of
 * an overlap, re-loading its programs after a policy came back, must not take the scope from the new one). Returns
 * whether `token` owns it now.
 */
export function claimPins(pinDir: string, token: bigint = selfToken()): boolean {
  const pin = path.join(pinDir, OWNER_PIN);
  const value = Buffer.alloc(8);
  value.writeBigUInt64LE(token);
  if (!fs.existsSync(pin)) {
    try {
      pinNewMap({ type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: 8, maxEntries: 1, flags: 0 }, OWNER_PIN, pin, [{ key: key0(), value }]);
      return true;
    } catch {
      // pinned by the other runtime meanwhile: compared below
    }
  }
  const current = recordedOwner(pinDir);
  if (current !== undefined && current !== token && current > token && alive(current)) return false;
  const m = openPinnedMap(pin, OWNER_PIN);
  try {
    m.update(key0(), value);
  } finally {
    closePinnedMap(m);
  }
  return true;
}

/**
 * Whether the runtime of `token` may remove the scope at its exit: it is the recorded owner, or none is recorded (a
 * scope of an earlier version, or gone), or the recorded owner has ended (a newer runtime that died: nobody else would
 * remove what it left).
 */
export function ownsPins(pinDir: string, token: bigint = selfToken()): boolean {
  const current = recordedOwner(pinDir);
  return current === undefined || current === token || !alive(current);
}

/** Whether the process of a token still runs (the same pid started at the same tick). */
function alive(token: bigint): boolean {
  return processToken(pidOf(token)) === token;
}
