// Validates objects against the CRD schemas offline with Ajv, the way the API server's OpenAPI check
// would (unknown fields rejected as with strict field validation); errors carry Kubernetes field paths.
import { isIPv4, isIPv6 } from "node:net";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import type { FieldError } from "../core/model.ts";
import { crdFor, type CustomResourceDefinition, type JSONSchemaProps } from "./schema/index.ts";

// ajv-formats is CommonJS: under NodeNext the default import is module.exports, the plugin is its `default`.
const addFormats = addFormatsModule.default;

/** Kubernetes' "cidr" format: an IPv4 or IPv6 address, a slash, and a prefix length that fits it. */
export function isCIDR(value: string): boolean {
  const slash = value.indexOf("/");
  if (slash < 0) return false;
  const ip = value.slice(0, slash);
  const bits = value.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits)) return false;
  const len = Number(bits);
  if (isIPv4(ip)) return len <= 32;
  if (isIPv6(ip)) return len <= 128;
  return false;
}

function newAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
  addFormats(ajv, ["date-time", "int32", "int64"]);
  ajv.addFormat("cidr", { type: "string", validate: isCIDR });
  ajv.addKeyword({
    keyword: "x-kubernetes-int-or-string",
    schemaType: "boolean",
    errors: false,
    validate: (on: boolean, data: unknown) => !on || typeof data === "string" || Number.isInteger(data),
  });
  // Annotations for the API server's merge and pruning logic, and CEL rules Ajv cannot run.
  for (const keyword of [
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
  ]) {
    ajv.addKeyword({ keyword });
  }
  return ajv;
}

/** Closes every object node that lists its properties, as strict server-side field validation does. */
export function closeObjects(schema: JSONSchemaProps): JSONSchemaProps {
  const out: JSONSchemaProps & { additionalProperties?: JSONSchemaProps | false } = { ...schema };
  if (schema.properties) {
    out.properties = Object.fromEntries(
      Object.entries(schema.properties).map(([k, v]) => [k, closeObjects(v)]),
    );
    if (
      schema.type === "object" &&
      !schema.additionalProperties &&
      !schema["x-kubernetes-preserve-unknown-fields"]
    ) {
      out.additionalProperties = false;
    }
  }
  if (schema.additionalProperties) out.additionalProperties = closeObjects(schema.additionalProperties);
  if (schema.items) out.items = closeObjects(schema.items);
  return out;
}

/** `/spec/egress/0/toPorts` → `spec.egress[0].toPorts` */
export function fieldPath(instancePath: string, extra?: string): string {
  const parts = instancePath.split("/").slice(1);
  if (extra !== undefined) parts.push(extra);
  let path = "";
  for (const raw of parts) {
    const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (/^[0-9]+$/.test(part)) path += `[${part}]`;
    else path += path === "" ? part : `.${part}`;
  }
  return path === "" ? "<root>" : path;
}

function toFieldError(e: ErrorObject): FieldError {
  const params = e.params as Record<string, unknown>;
  if (e.keyword === "additionalProperties") {
    return { path: fieldPath(e.instancePath, String(params.additionalProperty)), message: "unknown field" };
  }
  if (e.keyword === "required") {
    return {
      path: fieldPath(e.instancePath, String(params.missingProperty)),
      message: "required field missing",
    };
  }
  if (e.keyword === "enum") {
    const allowed = (params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ");
    return { path: fieldPath(e.instancePath), message: `unsupported value; supported values: ${allowed}` };
  }
  return { path: fieldPath(e.instancePath), message: e.message ?? e.keyword };
}

const compiled = new Map<CustomResourceDefinition, ValidateFunction>();
let sharedAjv: Ajv | undefined;

function validatorOf(crd: CustomResourceDefinition): ValidateFunction {
  let v = compiled.get(crd);
  if (!v) {
    sharedAjv ??= newAjv();
    const schema = crd.spec.versions[0]?.schema.openAPIV3Schema;
    if (!schema) throw new Error(`CRD ${crd.metadata.name} has no schema`);
    v = sharedAjv.compile(closeObjects(schema));
    compiled.set(crd, v);
  }
  return v;
}

/**
 * Checks one object (apiVersion and kind select the CRD) against its schema. Objects of kinds Membrane
 * does not define are an error, not a pass.
 */
export function validateObject(object: unknown): FieldError[] {
  if (typeof object !== "object" || object === null || Array.isArray(object)) {
    return [{ path: "<root>", message: "must be an object" }];
  }
  const { apiVersion, kind } = object as { apiVersion?: unknown; kind?: unknown };
  const crd = crdFor(String(apiVersion), String(kind));
  if (!crd)
    return [{ path: "kind", message: `no Membrane CRD serves ${String(apiVersion)} ${String(kind)}` }];
  const validate = validatorOf(crd);
  if (validate(object)) return [];
  return (validate.errors ?? []).map(toFieldError);
}
