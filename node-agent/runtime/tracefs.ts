// The syscall tracepoints' ids and formats, read from tracefs in a private mount namespace: the host has no tracefs
// mounted and must not get one, so a child (`unshare --mount`) mounts it where only it sees it and prints the formats.
import { spawnSync } from "node:child_process";
import { parseTracepointFormats, type TracepointFormat } from "../../core/tracepoint-format.ts";

/** The subsystems whose tracepoints this node serves. */
export const TRACEPOINT_SUBSYSTEMS = ["syscalls", "raw_syscalls"] as const;

export type TracepointCatalogue =
  | { readonly ok: true; readonly formats: ReadonlyMap<string, TracepointFormat> }
  | { readonly ok: false; readonly error: string };

/**
 * Reads every format of TRACEPOINT_SUBSYSTEMS once (≈ 40 ms). Synchronous on purpose, and to be called before any
 * fanotify mark exists: the child's exec must not wait for a permission event this process would answer.
 */
export function readTracepointCatalogue(): TracepointCatalogue {
  const script = `mount -t tracefs nodev /sys/kernel/tracing && cd /sys/kernel/tracing/events && tail -n +1 ${TRACEPOINT_SUBSYSTEMS.map((s) => `${s}/*/format`).join(" ")}`;
  const r = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], { encoding: "utf8", maxBuffer: 64 << 20, timeout: 10_000 });
  if (r.error) return { ok: false, error: `tracefs could not be read: ${r.error.message}` };
  if (r.status !== 0) return { ok: false, error: `tracefs could not be read (unshare --mount; mount -t tracefs): ${r.stderr.trim() || `exit ${r.status}`}` };
  const formats = new Map<string, TracepointFormat>();
  for (const f of parseTracepointFormats(r.stdout)) formats.set(`${f.subsystem}/${f.event}`, f);
  if (formats.size === 0) return { ok: false, error: "tracefs lists no syscall tracepoints (CONFIG_FTRACE_SYSCALLS off?)" };
  return { ok: true, formats };
}
