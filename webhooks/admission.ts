// AdmissionReview in, AdmissionReview out: turns any request body into a well-formed answer carrying the request's uid.
import { formatErrors, validateObject, type ValidateOptions } from "../core/validate.ts";

/** "validate" runs the real checks; "noop" allows everything (the benchmark's baseline, same plumbing). */
export type AdmissionMode = "validate" | "noop";

export interface AdmissionOutcome {
  /** The JSON text of the AdmissionReview response. */
  readonly body: string;
  readonly uid: string;
  readonly allowed: boolean;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly operation: string;
  readonly dryRun: boolean;
  readonly errorCount: number;
  readonly warningCount: number;
}

interface Request {
  uid: string;
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  operation: string;
  dryRun: boolean;
  object: unknown;
  hasObject: boolean;
}

const MAX_WARNINGS = 20;
const MAX_WARNING_CHARS = 400;
const MAX_UID_CHARS = 128;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const own = (o: Obj, k: string): unknown => (Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined);
const str = (v: unknown, max = 253): string => (typeof v === "string" ? v.slice(0, max) : "");

/** Best effort for bodies that are not JSON: the apiserver still needs its uid back to make sense of the answer. */
export function salvageUid(raw: string): string {
  const m = /"uid"\s*:\s*"([^"\\]{1,128})"/.exec(raw.slice(0, 65_536));
  return m?.[1] ?? "";
}

function readRequest(review: unknown): Request | string {
  if (!isObj(review)) return "the body is not an AdmissionReview object";
  const request = own(review, "request");
  if (!isObj(request)) return "request: required (an AdmissionReview with a request)";
  const uid = own(request, "uid");
  const kindRef = own(request, "kind");
  const object = own(request, "object");
  const meta = isObj(object) ? own(object, "metadata") : undefined;
  return {
    uid: str(uid, MAX_UID_CHARS),
    apiVersion: str(own(review, "apiVersion"), 64),
    kind: str(isObj(kindRef) ? own(kindRef, "kind") : undefined, 64) || str(isObj(object) ? own(object, "kind") : undefined, 64),
    namespace: str(own(request, "namespace")) || str(isObj(meta) ? own(meta, "namespace") : undefined),
    name: str(own(request, "name")) || str(isObj(meta) ? own(meta, "name") : undefined),
    operation: str(own(request, "operation"), 16),
    dryRun: own(request, "dryRun") === true,
    object,
    hasObject: object !== undefined && object !== null,
  };
}

function respond(
  apiVersion: string,
  uid: string,
  allowed: boolean,
  message: string | undefined,
  warnings: readonly string[],
): string {
  const response: Obj = { uid, allowed };
  if (!allowed) response.status = { code: 403, reason: "Forbidden", message: message ?? "denied" };
  if (warnings.length > 0) response.warnings = warnings;
  return JSON.stringify({
    apiVersion: apiVersion === "admission.k8s.io/v1beta1" ? apiVersion : "admission.k8s.io/v1",
    kind: "AdmissionReview",
    response,
  });
}

function boundedWarnings(warnings: readonly string[]): string[] {
  const out = warnings.slice(0, MAX_WARNINGS).map((w) => (w.length > MAX_WARNING_CHARS ? `${w.slice(0, MAX_WARNING_CHARS - 3)}...` : w));
  if (warnings.length > MAX_WARNINGS) out.push(`and ${warnings.length - MAX_WARNINGS} more warnings`);
  return out;
}

/** A denial for a body that could not be read at all (too large, timed out, not JSON). */
export function rejectBody(raw: string, message: string): AdmissionOutcome {
  const uid = salvageUid(raw);
  return {
    body: respond("admission.k8s.io/v1", uid, false, message, []),
    uid,
    allowed: false,
    kind: "",
    namespace: "",
    name: "",
    operation: "",
    dryRun: false,
    errorCount: 1,
    warningCount: 0,
  };
}

/** Answers one AdmissionReview body. Never throws: whatever goes wrong becomes a denial (fail closed). */
export function admit(raw: string, mode: AdmissionMode, options: ValidateOptions = {}): AdmissionOutcome {
  let review: unknown;
  try {
    review = JSON.parse(raw);
  } catch (err) {
    return rejectBody(raw, `the request body is not JSON: ${err instanceof Error ? err.message.slice(0, 200) : "parse error"}`);
  }
  const req = readRequest(review);
  if (typeof req === "string") return rejectBody(raw, req);
  if (mode === "noop") return allow(req, []);
  // Deletes and connects carry no new policy; there is nothing to validate.
  if (req.operation === "DELETE" || req.operation === "CONNECT") return allow(req, []);
  if (!req.hasObject) return deny(req, "request.object: required for CREATE and UPDATE", 1);
  try {
    const result = validateObject(req.object, options);
    if (result.errors.length > 0) return deny(req, formatErrors(result.errors), result.errors.length);
    return allow(req, boundedWarnings(result.warnings));
  } catch (err) {
    // A bug in validation must not let a policy through unchecked.
    return deny(req, `internal error while validating: ${err instanceof Error ? err.message.slice(0, 200) : "unknown"}`, 1);
  }
}

function outcome(req: Request, body: string, allowed: boolean, errorCount: number, warningCount: number): AdmissionOutcome {
  return {
    body,
    uid: req.uid,
    allowed,
    kind: req.kind,
    namespace: req.namespace,
    name: req.name,
    operation: req.operation,
    dryRun: req.dryRun,
    errorCount,
    warningCount,
  };
}

function allow(req: Request, warnings: readonly string[]): AdmissionOutcome {
  return outcome(req, respond(req.apiVersion, req.uid, true, undefined, warnings), true, 0, warnings.length);
}

function deny(req: Request, message: string, errorCount: number): AdmissionOutcome {
  return outcome(req, respond(req.apiVersion, req.uid, false, message, []), false, errorCount, 0);
}

/** An AdmissionReview request for `object`, as the API server sends it (for tests, the benchmark and tools). */
export function reviewFor(
  object: unknown,
  opts: { uid: string; operation?: "CREATE" | "UPDATE" | "DELETE"; dryRun?: boolean; oldObject?: unknown },
): string {
  const o = isObj(object) ? object : {};
  const meta = isObj(o.metadata) ? o.metadata : {};
  const [group, version] = typeof o.apiVersion === "string" && o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  return JSON.stringify({
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid: opts.uid,
      kind: { group, version, kind: o.kind },
      operation: opts.operation ?? "CREATE",
      ...(typeof meta.namespace === "string" ? { namespace: meta.namespace } : {}),
      ...(typeof meta.name === "string" ? { name: meta.name } : {}),
      userInfo: { username: "test" },
      object,
      oldObject: opts.oldObject ?? null,
      dryRun: opts.dryRun ?? false,
    },
  });
}
