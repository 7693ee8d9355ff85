// The host sysctls a kubelet changes at start, recorded before the first real node on this machine starts and restored after the last one stops.
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { isProcessAlive } from "../cluster.ts";

/** Not namespaced: every kubelet on the machine sets them (container_manager_linux's kernel tunables). */
export const KUBELET_SYSCTLS = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"] as const;

/** Shared by every real node on the machine (any worktree, any test): the values before the first one, and who still runs. */
export const SYSCTL_RECORD = "/run/membrane-realnode-sysctls.json";
const RECORD = SYSCTL_RECORD;
const LOCK = "/run/membrane-realnode-sysctls.lock.d";

interface SysctlRecord {
  original: Record<string, string>;
  /** node name → the pid that holds it (its mount-namespace holder); a dead pid no longer counts. */
  users: Record<string, number>;
}

function read(key: string): string {
  return readFileSync(`/proc/sys/${key}`, "utf8").trim();
}

/**
 * Runs fn holding the machine-wide lock: a directory made with mkdir (atomic), so parallel test processes take
 * turns. fn is a few synchronous file operations; a lock older than 10 s was left by a process that died in it.
 */
function locked<T>(fn: () => T): T {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(LOCK).mtimeMs > 10_000) rmSync(LOCK, { recursive: true, force: true });
      } catch {
        // released meanwhile
      }
      if (Date.now() > deadline) throw new Error(`sysctl record: ${LOCK} held for 30 s`, { cause: err });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

function load(): SysctlRecord | undefined {
  try {
    return JSON.parse(readFileSync(RECORD, "utf8")) as SysctlRecord;
  } catch {
    return undefined;
  }
}

function save(record: SysctlRecord): void {
  writeFileSync(`${RECORD}.tmp`, JSON.stringify(record, null, 2) + "\n");
  renameSync(`${RECORD}.tmp`, RECORD);
}

/** Records the host's values (unless a running node recorded them first) and counts `node` (held by `pid`) as a user. */
export function claimSysctls(node: string, pid: number): void {
  locked(() => {
    const record = load() ?? { original: Object.fromEntries(KUBELET_SYSCTLS.map((k) => [k, read(k)])), users: {} };
    record.users[node] = pid;
    save(record);
  });
}

/**
 * Drops `node` (and users whose holder died) and, when no real node is left on the machine, writes the
 * recorded values back. Returns the sysctls it restored.
 */
export function releaseSysctls(node: string): Record<string, string> {
  return locked(() => {
    const record = load();
    if (!record) return {};
    delete record.users[node];
    for (const [name, pid] of Object.entries(record.users)) if (!isProcessAlive(pid)) delete record.users[name];
    if (Object.keys(record.users).length > 0) {
      save(record);
      return {};
    }
    for (const [key, value] of Object.entries(record.original)) {
      if (read(key) !== value) writeFileSync(`/proc/sys/${key}`, value);
    }
    rmSync(RECORD, { force: true });
    return record.original;
  });
}
