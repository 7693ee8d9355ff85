// A benchmark's cleanup steps, undone in reverse order once: at the end of the run or on SIGINT/SIGTERM.
import type { Logger } from "pino";

export interface CleanupStack {
  /** Steps added as the run creates things; run last-first. */
  readonly cleanups: (() => Promise<void> | void)[];
  /** Runs every step (a failing step is logged, the rest still run) and empties the stack. */
  cleanup(): Promise<void>;
}

export function cleanupStack(log: Logger): CleanupStack {
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (e) {
        log.warn({ err: String(e) }, "cleanup step failed");
      }
    }
    cleanups.length = 0;
  };
  const onSignal = (sig: string): void => {
    log.warn({ sig }, "interrupted; cleaning up");
    void cleanup().then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return { cleanups, cleanup };
}
