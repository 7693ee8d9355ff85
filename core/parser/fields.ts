// Safe readers over untyped objects that collect every field error with its Kubernetes field path.
import type { FieldError } from "../model.ts";

export type Obj = Readonly<Record<string, unknown>>;

/** A model type under construction, its optional fields set one by one (cheaper than conditional spreads). */
export type Writable<T> = { -readonly [K in keyof T]: T[K] };

/** Collects errors while a parser walks an object; parsers never throw on user input. */
export class Errors {
  readonly list: FieldError[] = [];
  /** Legal but pointless input (it selects nothing), admitted with a warning as Cilium admits it. */
  readonly warnings: FieldError[] = [];
  add(path: string, message: string): void {
    this.list.push({ path: path === "" ? "<root>" : path, message });
  }
  warn(path: string, message: string): void {
    this.warnings.push({ path: path === "" ? "<root>" : path, message });
  }
  get count(): number {
    return this.list.length;
  }
}

export function isRecord(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** An own property only: keys such as "constructor" must never reach Object.prototype. */
export function field(obj: Obj, key: string): unknown {
  // Most probes are for absent keys: one lookup, and the ownership test only for a value found.
  const v = obj[key];
  return v !== undefined && Object.prototype.hasOwnProperty.call(obj, key) ? v : undefined;
}

export function has(obj: Obj, key: string): boolean {
  const v = obj[key];
  return v !== undefined && v !== null && Object.prototype.hasOwnProperty.call(obj, key);
}

/** A short, safe rendering of any value for a message (never calls toString on objects). */
export function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 64 ? `${v.slice(0, 61)}...` : v);
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return "a number";
  if (typeof v === "boolean") return "a boolean";
  return `a ${typeof v}`;
}

export const join = (base: string, key: string): string => (base === "" ? key : `${base}.${key}`);

/** Reports every key not in `allowed`, as the API server's strict field validation does. */
export function checkKnown(errs: Errors, path: string, obj: Obj, allowed: readonly string[]): void {
  // for-in over own keys visits them in Object.keys order without building the array.
  for (const k in obj) {
    if (!allowed.includes(k) && Object.prototype.hasOwnProperty.call(obj, k)) errs.add(join(path, k), `unknown field ${show(k)}`);
  }
}

/** checkKnown for an object whose own keys (Object.keys) the caller has already read. */
export function checkKnownKeys(errs: Errors, path: string, keys: readonly string[], allowed: readonly string[]): void {
  for (const k of keys) if (!allowed.includes(k)) errs.add(join(path, k), `unknown field ${show(k)}`);
}

/** An optional object field: undefined when absent or null, an error when of another type. */
export function optObject(errs: Errors, obj: Obj, key: string, path: string): Obj | undefined {
  const v = field(obj, key);
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) {
    errs.add(join(path, key), `must be an object, not ${typeName(v)}`);
    return undefined;
  }
  return v;
}

/** An optional list field: [] when absent or null, an error (and []) when of another type. */
export function optList(errs: Errors, obj: Obj, key: string, path: string): readonly unknown[] {
  const v = field(obj, key);
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    errs.add(join(path, key), `must be a list, not ${typeName(v)}`);
    return [];
  }
  return v;
}

export function optString(errs: Errors, obj: Obj, key: string, path: string): string | undefined {
  const v = field(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") {
    errs.add(join(path, key), `must be a string, not ${typeName(v)}`);
    return undefined;
  }
  return v;
}

export function optBool(errs: Errors, obj: Obj, key: string, path: string): boolean | undefined {
  const v = field(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") {
    errs.add(join(path, key), `must be true or false, not ${show(v)}`);
    return undefined;
  }
  return v;
}

/** Whether a field is given as an explicitly empty list, which Cilium reads the same as an absent field. */
export function isEmptyList(obj: Obj, key: string): boolean {
  const v = field(obj, key);
  return Array.isArray(v) && v.length === 0;
}

/** A list of strings; each non-string element is reported at its index. */
export function stringList(errs: Errors, obj: Obj, key: string, path: string): string[] {
  const out: string[] = [];
  const list = optList(errs, obj, key, path);
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (typeof v === "string") out.push(v);
    else errs.add(`${join(path, key)}[${i}]`, `must be a string, not ${typeName(v)}`);
  }
  return out;
}

/** Whether a field holds a non-empty list (no error for other types: the field's own reader reports those). */
export function hasItems(obj: Obj, key: string): boolean {
  const v = field(obj, key);
  return Array.isArray(v) && v.length > 0;
}

/** Each element of a list that must hold objects, with its path; others are reported. */
export function objectItems(
  errs: Errors,
  obj: Obj,
  key: string,
  path: string,
): { item: Obj; path: string; index: number }[] {
  const out: { item: Obj; path: string; index: number }[] = [];
  const list = optList(errs, obj, key, path);
  if (list.length === 0) return out;
  const base = `${join(path, key)}[`;
  for (let index = 0; index < list.length; index++) {
    const v = list[index];
    const p = `${base}${index}]`;
    if (isRecord(v)) out.push({ item: v, path: p, index });
    else errs.add(p, `must be an object, not ${typeName(v)}`);
  }
  return out;
}

// Kubernetes name syntax (apimachinery validation), checked by length first so that a huge string
// never reaches a regular expression.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_SOURCE_SYNTAX = /^[a-z][-a-z0-9_.]*$/;

export function dns1123LabelProblem(s: string): string | undefined {
  if (s.length === 0) return "must not be empty";
  if (s.length > 63) return "must be at most 63 characters";
  if (!DNS1123_LABEL.test(s))
    return "must consist of lower case letters, digits and '-', and start and end with a letter or digit";
  return undefined;
}

export function dns1123SubdomainProblem(s: string): string | undefined {
  if (s.length === 0) return "must not be empty";
  if (s.length > 253) return "must be at most 253 characters";
  if (!DNS1123_SUBDOMAIN.test(s))
    return "must consist of lower case letters, digits, '-' and '.', and start and end with a letter or digit";
  return undefined;
}

/**
 * A selector label key: an optional Cilium source (`k8s:`, `reserved:`, `any:`, ...) then a
 * Kubernetes qualified name (`[prefix/]name`).
 */
export function labelKeyProblem(key: string): string | undefined {
  if (key.length === 0) return "a label key must not be empty";
  if (key.length > 317) return "a label key must be at most 317 characters";
  // "$host" is Cilium's shorthand for reserved:host.
  let rest = key.startsWith("$") ? key.slice(1) : key;
  const colon = key.indexOf(":");
  const slash = key.indexOf("/");
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    const source = key.slice(0, colon);
    if (!LABEL_SOURCE_SYNTAX.test(source))
      return `${show(source)} is not a label source (such as k8s, reserved or any)`;
    rest = key.slice(colon + 1);
    if (key.startsWith("$")) return `${show(key)} is not a label key: "$" already means the reserved source`;
  }
  const cut = rest.indexOf("/");
  if (cut >= 0 && rest.indexOf("/", cut + 1) >= 0) return `${show(key)} is not a label key: at most one '/'`;
  const name = cut < 0 ? rest : rest.slice(cut + 1);
  if (cut >= 0) {
    const prefixProblem = dns1123SubdomainProblem(rest.slice(0, cut));
    if (prefixProblem) return `the prefix of label key ${show(key)} ${prefixProblem}`;
  }
  if (name.length === 0) return `${show(key)} is not a label key: the name part is empty`;
  if (name.length > 63) return `${show(key)} is not a label key: the name part must be at most 63 characters`;
  if (!QUALIFIED_NAME.test(name)) {
    return `${show(key)} is not a label key: the name must consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit`;
  }
  return undefined;
}

export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63) return `label value ${show(value)} must be at most 63 characters`;
  if (!LABEL_VALUE.test(value)) {
    return `${show(value)} is not a label value: use letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  }
  return undefined;
}

// IANA service names (RFC 6335) as Kubernetes validates named ports: at most 15 characters, letters,
// digits and '-', at least one letter, no '-' at either end or twice in a row.
export function ianaServiceNameProblem(name: string, lowercaseOnly: boolean): string | undefined {
  if (name.length === 0 || name.length > 15) return "a port name must be 1-15 characters";
  const chars = lowercaseOnly ? /^[-a-z0-9]+$/ : /^[-a-zA-Z0-9]+$/;
  if (!chars.test(name))
    return lowercaseOnly
      ? "a port name may only contain lower case letters, digits and '-'"
      : "a port name may only contain letters, digits and '-'";
  if (!/[a-zA-Z]/.test(name)) return "a port name must contain at least one letter";
  if (name.startsWith("-") || name.endsWith("-") || name.includes("--"))
    return "a port name must not start or end with '-' or contain '--'";
  return undefined;
}
