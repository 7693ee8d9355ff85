// The observer API's client: streams the flows one agent's observer returns for a filter (used by `membrane observe` and the operator's service map).
import http from "node:http";
import { parseObserverAddress } from "./discover.ts";
import { filterToQuery, type FlowFilter } from "./filter.ts";
import type { Flow } from "./flow.ts";

/** How long an observer may take to answer (headers, or between chunks of a replay) before it counts as not answering. */
export const OBSERVER_ANSWER_TIMEOUT_MS = 5000;

/**
 * Streams the flows one observer returns for `filter`, calling `onFlow` per line; resolves when the
 * server ends the response (or `signal` aborts), rejects with an error naming the server when it
 * cannot be reached, answers with an error, or goes silent for `OBSERVER_ANSWER_TIMEOUT_MS` before
 * its answer is complete (a following stream may be idle once its headers arrived).
 */
export function readFlows(
  server: string,
  filter: FlowFilter,
  follow: boolean,
  onFlow: (f: Flow) => void,
  signal?: AbortSignal,
  timeoutMs = OBSERVER_ANSWER_TIMEOUT_MS,
): Promise<void> {
  const ep = parseObserverAddress(server);
  if (ep === undefined) return Promise.reject(new Error(`${server}: not an observer address`));
  const q = filterToQuery(filter);
  if (follow) q.set("follow", "1");
  const path = `/flows?${q.toString()}`;
  return new Promise((resolve, reject) => {
    const req = http.get({ ...ep, path, ...(signal ? { signal } : {}) }, (res) => {
      if (follow) req.setTimeout(0); // the stream is open: silence now only means no matching traffic
      res.setEncoding("utf8");
      let body = "";
      if (res.statusCode !== 200) {
        res.on("data", (c: string) => (body += c));
        res.on("end", () => {
          let msg = body.trim();
          try {
            msg = (JSON.parse(body) as { error?: string }).error ?? msg;
          } catch {
            // not JSON: show the body as it is
          }
          reject(new Error(`${server}: ${res.statusCode}: ${msg}`));
        });
        return;
      }
      let partial = "";
      res.on("data", (chunk: string) => {
        partial += chunk;
        let nl: number;
        while ((nl = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          if (line.trim() !== "") onFlow(JSON.parse(line) as Flow);
        }
      });
      res.on("end", () => resolve());
      res.on("error", (e) => (signal?.aborted ? resolve() : reject(new Error(`${server}: ${e.message}`))));
      res.on("close", () => (res.complete || signal?.aborted ? resolve() : reject(new Error(`${server}: the answer ended early`))));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (e) => (signal?.aborted ? resolve() : reject(new Error(`${server}: ${e.message}`))));
  });
}
