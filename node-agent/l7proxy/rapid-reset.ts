// The rapid-reset budget (CVE-2023-44487) of both HTTP/2 paths, the frame relay (h2-relay.ts) and node:http2's sessions (h2-proxy.ts): how many streams a client connection may cancel before their answer, and the warning when it goes past it.
import type pino from "pino";
import type { H2Client } from "./h2-proxy.ts";

/**
 * Streams a client may cancel before their answer at once, and per second after. Each cancelled request still costs
 * the destination a request and costs the client nothing. nghttp2, under h2-proxy.ts's sessions, has its own limit
 * (1,000 at once, 33 a second) and closes the connection past it with INTERNAL_ERROR and no word of why: this budget
 * is below it so that on that path too it is ours that closes the connection (GOAWAY ENHANCE_YOUR_CALM), with a
 * warning and a flow that name the cause.
 */
export const RESET_BURST = 900;
export const RESETS_PER_SECOND = 33;

/** One client connection's budget: a token bucket of RESET_BURST, refilled at RESETS_PER_SECOND. */
export class ResetBudget {
  private left = RESET_BURST;
  private at = performance.now();

  /** One more stream cancelled by the client before its answer: false when that is past the budget. */
  take(): boolean {
    const now = performance.now();
    this.left = Math.min(RESET_BURST, this.left + ((now - this.at) * RESETS_PER_SECOND) / 1000);
    this.at = now;
    if (this.left < 1) return false;
    this.left -= 1;
    return true;
  }
}

/** The proxy's warning for a connection past its budget (the agent's, rapid-reset-warnings.ts, names the pod, from the stream's flow: REFUSAL_REASON.rapidReset). */
export function warnRapidReset(log: pino.Logger, client: H2Client, stream: number): void {
  log.warn(
    {
      port: client.port,
      client: `${client.source.ip}:${client.source.port}`,
      identity: client.orig.subject,
      destination: `${client.orig.ip}:${client.orig.port}`,
      stream,
    },
    "HTTP/2 rapid reset: streams cancelled before their answer past the connection's budget",
  );
}
