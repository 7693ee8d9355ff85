// A detached process the agent recorded by pid file (it outlives agents by design): found again only while that pid still runs the same program, stopped TERM then KILL.
import { readFileSync } from "node:fs";

/** The pid the file records, if that process is alive and its argv contains `argvMark` (a pid may be reused). */
export function recordedPid(pidFile: string, argvMark: string): number | undefined {
  const pid = Number.parseInt(readOr(pidFile, ""), 10);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
  // It may exit between two looks: an unreadable cmdline is not ours.
  return readOr(`/proc/${pid}/cmdline`, "").split("\0").includes(argvMark) ? pid : undefined;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, up to `graceMs` for it to exit, then SIGKILL; a process gone meanwhile is not an error. */
export async function stopProcess(pid: number, graceMs: number): Promise<void> {
  signal(pid, "SIGTERM");
  const until = Date.now() + graceMs;
  while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) signal(pid, "SIGKILL");
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone meanwhile
  }
}

function readOr(file: string, fallback: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}
