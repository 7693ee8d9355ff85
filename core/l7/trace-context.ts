// W3C Trace Context (https://www.w3.org/TR/trace-context/): the trace id a request's `traceparent` header carries, as Hubble's trace_context.parent.trace_id.
import type { HttpHeader } from "./http-request.ts";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The trace id of a request's `traceparent` (32 lowercase hex digits), or undefined when there is none or it is not valid:
 * more than one traceparent, version ff, version 00 with more fields, an all-zero trace or parent id. A later version's
 * extra fields are ignored, as the specification asks.
 */
export function traceIdOf(headers: readonly HttpHeader[]): string | undefined {
  // Every proxied request's flow asks: one pass, nothing built when there is none.
  let value: string | undefined;
  for (const h of headers) {
    if (h.name.length !== 11 || h.name.toLowerCase() !== "traceparent") continue;
    if (value !== undefined) return undefined;
    value = h.value;
  }
  if (value === undefined) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (m === null) return undefined;
  const [, version, traceId, parentId, , rest] = m;
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId!) || /^0+$/.test(parentId!)) return undefined;
  return traceId;
}
