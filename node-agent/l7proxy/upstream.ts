// The proxy's connection onward to the original destination, shared by its HTTP/1.1 and HTTP/2 sides: a connect that does not complete in time fails with CONNECT_TIMEOUT.
import type net from "node:net";

/** The error code of an upstream connect that did not complete within the limit (the client gets 504, not 503). */
const CONNECT_TIMEOUT = "ETIMEDOUT_CONNECT";

/** The upstream socket, destroyed with an error (code CONNECT_TIMEOUT) if it is not connected within `ms`. */
export function withConnectTimeout(socket: net.Socket, ms: number): net.Socket {
  const timer = setTimeout(() => {
    const err: NodeJS.ErrnoException = new Error(`upstream connect did not complete within ${ms} ms`);
    err.code = CONNECT_TIMEOUT;
    socket.destroy(err);
  }, ms);
  timer.unref();
  socket.once("connect", () => clearTimeout(timer));
  socket.once("close", () => clearTimeout(timer));
  return socket;
}

/** Whether an upstream failure was the connect timeout (HTTP/2 wraps the socket's error as the stream's `cause`). */
export function isConnectTimeout(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++)
    if (e.code === CONNECT_TIMEOUT) return true;
  return false;
}

/** What a client gets when the destination failed before answering (Envoy's wording): 504 for the connect timeout, else 503. */
export function upstreamFailure(err: unknown): { readonly status: 503 | 504; readonly body: string } {
  return isConnectTimeout(err) ? { status: 504, body: "upstream connect timeout" } : { status: 503, body: "upstream connect error or disconnect/reset before headers" };
}
