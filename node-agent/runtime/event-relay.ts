// The agent's side of process events across nodes: a ProcessEventSource that reads its node's runtime stream
// (GET /v1/events on the runtime's loopback address) for the agent's Hubble server to pass on under its mutual TLS.
import http from "node:http";
import { ProcessEventsError, type ProcessEventSource } from "../../flowapi/process-events.ts";

/**
 * Reads the runtime at `address()` (undefined while no runtime runs on this node). The runtime's own bound on a slow
 * reader stays in force: the agent stops reading while the client's stream is full, so the runtime drops (and tells
 * in-band) what that client cannot take, never waiting on it.
 */
export function runtimeEventSource(address: () => string | undefined): ProcessEventSource {
  return (query, sink, signal) =>
    new Promise<void>((resolve, reject) => {
      const at = address();
      if (at === undefined) return reject(new ProcessEventsError("unavailable", "no runtime enforcer runs on this node (the agent runs without --enable-runtime, or the runtime is starting)"));
      let settled = false;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve();
      };
      const req = http.get(`http://${at}/v1/events?${query}`, { signal }, (res) => {
        if (res.statusCode !== 200) {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => finish(new ProcessEventsError(res.statusCode === 400 ? "invalid" : "unavailable", `the runtime refused the request: ${res.statusCode} ${body.trim()}`)));
          return;
        }
        res.on("data", (chunk: Buffer) => {
          if (sink.write(chunk)) return;
          res.pause();
          sink.once("drain", () => res.resume());
        });
        res.on("end", () => finish());
        res.on("error", (err) => finish(signal.aborted ? undefined : new ProcessEventsError("unavailable", `the runtime's stream failed: ${err.message}`)));
      });
      req.on("error", (err) => finish(signal.aborted ? undefined : new ProcessEventsError("unavailable", `the runtime at ${at} cannot be reached: ${err.message}`)));
    });
}
