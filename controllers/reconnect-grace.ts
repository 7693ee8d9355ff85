// The agent reconnect grace after the operator's start (--agent-reconnect-grace): right after a start no agent has
// reconnected yet, and a status counting the nodes not heard from as not enforcing would be lowered for every object and
// raised again as the agents come back. While the grace runs, each status controller counts a node not heard from as
// its stored status of the same generation did (policy.ts duringReconnectGrace, tracing.ts tracingDuringReconnectGrace);
// when it ends, each looks at every object once more.
import type { Logger } from "pino";

export class ReconnectGrace {
  private active: boolean;
  private timer: NodeJS.Timeout | undefined;
  private readonly ends: (() => void)[] = [];

  /** ms 0, or no distribution stream (no agent reports to wait for): never running. */
  constructor(
    private readonly ms: number,
    enabled: boolean,
    private readonly log: Logger,
  ) {
    this.active = enabled && ms > 0;
  }

  /** Whether the grace still runs. */
  running(): boolean {
    return this.active;
  }

  /** Starts the clock at the first status controller's start (which comes after the distribution's first states); later calls do nothing. */
  start(): void {
    if (!this.active || this.timer) return;
    this.timer = setTimeout(() => {
      this.active = false;
      this.log.info({ graceMs: this.ms }, "agent reconnect grace over");
      for (const f of this.ends) f();
    }, this.ms);
    this.timer.unref();
  }

  /** Called once when the grace ends (not when it never ran). */
  onEnd(f: () => void): void {
    this.ends.push(f);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
