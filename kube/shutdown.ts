// Graceful shutdown of the long-running processes (operator, webhook, agent): the first SIGTERM/SIGINT starts an
// orderly stop made of steps that are each bounded in time, a second signal exits at once, and a backstop exits
// if the stop as a whole still hangs (a process that ignores SIGTERM hides bugs and slows every rolling upgrade).
import { constants } from "node:os";
import type { Logger } from "pino";
import { errMessage } from "./informer.ts";

/** Past this the process exits whatever is still running (Kubernetes would wait 30 s; the steps add up to less). */
export const SHUTDOWN_BACKSTOP_MS = 3_000;

export interface Termination {
  /** Resolves with the first SIGTERM or SIGINT. */
  readonly signal: Promise<NodeJS.Signals>;
  /** Removes the handlers (the process exits on its own from here on). */
  dispose(): void;
}

/**
 * Listens for SIGTERM/SIGINT. The first one resolves `signal` and arms the backstop; a second one logs
 * and exits at once with 128 + its number, as a shell reports a process killed by it.
 */
export function onTermination(log: Logger, backstopMs = SHUTDOWN_BACKSTOP_MS): Termination {
  let first: NodeJS.Signals | undefined;
  let resolveSignal: (s: NodeJS.Signals) => void = () => {};
  const signal = new Promise<NodeJS.Signals>((resolve) => (resolveSignal = resolve));
  let backstop: NodeJS.Timeout | undefined;
  const handler = (s: NodeJS.Signals): void => {
    if (first !== undefined) {
      log.warn({ signal: s, firstSignal: first }, "second signal: exiting at once");
      exitNow(log, 128 + (constants.signals[s] ?? 15));
      return;
    }
    first = s;
    log.info({ signal: s }, "shutting down");
    backstop = setTimeout(() => {
      log.error({ signal: s, backstopMs }, "shutdown did not finish within its bound: exiting");
      exitNow(log, 1);
    }, backstopMs);
    backstop.unref();
    resolveSignal(s);
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
  return {
    signal,
    dispose() {
      process.off("SIGTERM", handler);
      process.off("SIGINT", handler);
      clearTimeout(backstop);
    },
  };
}

/**
 * Runs one shutdown step for at most `ms`; a failure or a timeout is logged (one line naming the step)
 * and the shutdown goes on. Returns whether the step finished cleanly. A step left running is cut
 * off later, when its client's connections are closed.
 */
export async function shutdownStep(log: Logger, step: string, ms: number, fn: () => unknown): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  try {
    const outcome = await Promise.race([Promise.resolve().then(fn), timeout]);
    if (outcome === "timeout") {
      log.warn({ step, timeoutMs: ms }, "shutdown step did not finish in time; going on");
      return false;
    }
    return true;
  } catch (e) {
    log.warn({ step, err: errMessage(e) }, "shutdown step failed; going on");
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function exitNow(log: Logger, code: number): never {
  try {
    log.flush();
  } catch {
    // Nothing left to tell anyone: the exit code says it.
  }
  process.exit(code);
}
