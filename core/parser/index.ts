// The one policy parser: a NetworkPolicy/CNP/CCNP object (or YAML text) → typed Policy list or every field error.
import { type Document, parseAllDocuments } from "yaml";
import type { FieldError, Policy, PolicyKind, Result } from "../model.ts";
import { parseCiliumSpec } from "./cnp.ts";
import {
  Errors,
  checkKnown,
  dns1123LabelProblem,
  dns1123SubdomainProblem,
  field,
  has,
  isRecord,
  optObject,
  show,
  typeName,
} from "./fields.ts";
import { parseNetworkPolicySpec } from "./knp.ts";
import type { ParseOptions } from "./ports.ts";

export { EXTENDED_IP_PROTOCOLS_FLAG, type ParseOptions } from "./ports.ts";

// What the produced model means (for the compiler, the evaluator and the warnings):
// - Rule.peers: [] = the rule matches no peer (`ingress: [{}]`: default deny only); [{kind:"any"}] =
//   every peer (a Cilium rule with toPorts/icmps but no L3 field; a NetworkPolicy rule without from/to).
// - Port 0 (endPort 0) = every port; a named port has port 0 and `name` (lower-cased); protocol
//   defaults to ANY in Cilium and TCP in NetworkPolicy.
// - CIDRs are canonical (host bits cleared, bare IPs as /32 or /128); except lists lie inside.
// - Selectors come from core/selector.ts with Cilium's namespace defaulting (CNP subject and peers
//   in the policy's namespace, CCNP peers in any namespace, NetworkPolicy peers as Kubernetes says).
// - Documented Cilium features Membrane cannot enforce (mutual authentication, CIDR groups,
//   toGroups, listeners, Kafka rules) are refused with "not supported by Membrane".

/** The kinds this parser reads, with the apiVersion each must carry. */
export const POLICY_API_VERSIONS: Readonly<Record<PolicyKind, string>> = {
  NetworkPolicy: "networking.k8s.io/v1",
  CiliumNetworkPolicy: "cilium.io/v2",
  CiliumClusterwideNetworkPolicy: "cilium.io/v2",
};

/** A namespaced policy read without a namespace (a file for the CLI) lands where kubectl would put it. */
export const DEFAULT_NAMESPACE = "default";

interface Meta {
  namespace?: string;
  name: string;
  uid?: string;
  generation?: number;
}

function readMeta(
  errs: Errors,
  obj: Readonly<Record<string, unknown>>,
  namespaced: boolean,
): Meta | undefined {
  const before = errs.count;
  const metadata = optObject(errs, obj, "metadata", "");
  if (!metadata) {
    if (!has(obj, "metadata")) errs.add("metadata", "metadata with a name is required");
    return undefined;
  }
  const name = field(metadata, "name");
  if (name === undefined || name === null || name === "") errs.add("metadata.name", "a name is required");
  else if (typeof name !== "string") errs.add("metadata.name", `must be a string, not ${typeName(name)}`);
  else {
    const problem = dns1123SubdomainProblem(name);
    if (problem) errs.add("metadata.name", `${show(name)} is not a valid name: it ${problem}`);
  }
  let namespace: string | undefined;
  if (namespaced) {
    const ns = field(metadata, "namespace");
    if (ns === undefined || ns === null || ns === "") namespace = DEFAULT_NAMESPACE;
    else if (typeof ns !== "string") errs.add("metadata.namespace", `must be a string, not ${typeName(ns)}`);
    else {
      const problem = dns1123LabelProblem(ns);
      if (problem) errs.add("metadata.namespace", `${show(ns)} is not a valid namespace: it ${problem}`);
      else namespace = ns;
    }
  }
  const uid = field(metadata, "uid");
  const generation = field(metadata, "generation");
  if (errs.count !== before || typeof name !== "string") return undefined;
  return {
    name,
    ...(namespace !== undefined ? { namespace } : {}),
    ...(typeof uid === "string" ? { uid } : {}),
    ...(typeof generation === "number" && Number.isInteger(generation) ? { generation } : {}),
  };
}

function parseCilium(
  errs: Errors,
  obj: Readonly<Record<string, unknown>>,
  kind: PolicyKind,
  options: ParseOptions,
): Policy[] {
  const namespaced = kind === "CiliumNetworkPolicy";
  checkKnown(errs, "", obj, ["apiVersion", "kind", "metadata", "spec", "specs", "status"]);
  const meta = readMeta(errs, obj, namespaced);
  const spec = field(obj, "spec");
  const specs = field(obj, "specs");
  const hasSpec = spec !== undefined && spec !== null;
  const hasSpecs = specs !== undefined && specs !== null;
  if (hasSpecs && !Array.isArray(specs)) errs.add("specs", `must be a list of rules, not ${typeName(specs)}`);
  if (!hasSpec && !(Array.isArray(specs) && specs.length > 0)) {
    errs.add("spec", `a ${kind} needs a spec or a non-empty specs list`);
  }
  const m = meta ?? { name: "", namespace: namespaced ? DEFAULT_NAMESPACE : undefined };
  const base = {
    kind,
    name: m.name,
    ...(m.namespace !== undefined ? { namespace: m.namespace } : {}),
    ...(m.uid !== undefined ? { uid: m.uid } : {}),
    ...(m.generation !== undefined ? { generation: m.generation } : {}),
  };
  const out: Policy[] = [];
  if (hasSpec) {
    const p = parseCiliumSpec(errs, spec, "spec", base, options);
    if (p) out.push(p);
  }
  if (Array.isArray(specs)) {
    specs.forEach((s: unknown, i) => {
      const p = parseCiliumSpec(errs, s, `specs[${i}]`, base, options);
      if (p) out.push(p);
    });
  }
  return out;
}

/**
 * Parses one API object. `Result.ok` is true only when the object has no error; otherwise
 * `errors` lists every problem found, each with its field path. Never throws.
 */
export function parsePolicyObject(obj: unknown, options: ParseOptions = {}): Result<Policy[]> {
  const errs = new Errors();
  let policies: Policy[] = [];
  if (!isRecord(obj)) {
    errs.add("<root>", `must be an object with apiVersion and kind, not ${typeName(obj)}`);
  } else {
    const kind = field(obj, "kind");
    const apiVersion = field(obj, "apiVersion");
    const known = Object.keys(POLICY_API_VERSIONS) as PolicyKind[];
    if (typeof kind !== "string" || !(known as string[]).includes(kind)) {
      errs.add(
        "kind",
        kind === undefined || kind === null
          ? `required: one of ${known.join(", ")}`
          : `${show(kind)} is not a policy kind (${known.join(", ")})`,
      );
    } else {
      const k = kind as PolicyKind;
      if (apiVersion !== POLICY_API_VERSIONS[k]) {
        errs.add(
          "apiVersion",
          apiVersion === undefined || apiVersion === null
            ? `required: ${POLICY_API_VERSIONS[k]}`
            : `${show(apiVersion)} is not the apiVersion of ${k} (${POLICY_API_VERSIONS[k]})`,
        );
      }
      if (k === "NetworkPolicy") {
        checkKnown(errs, "", obj, ["apiVersion", "kind", "metadata", "spec", "status"]);
        const meta = readMeta(errs, obj, true);
        const p = parseNetworkPolicySpec(errs, field(obj, "spec"), {
          name: "",
          namespace: DEFAULT_NAMESPACE,
          ...meta,
        });
        if (p) policies = [p];
      } else {
        policies = parseCilium(errs, obj, k, options);
      }
    }
  }
  return errs.count > 0 ? { ok: false, errors: errs.list } : { ok: true, value: policies };
}

/** One YAML document of a multi-document text: its index, first line, and its parse result. */
export interface DocumentResult {
  readonly index: number;
  readonly line: number; // 1-based line where the document starts
  readonly result: Result<Policy[]>;
}

/** The yaml library's message without its source excerpt; the column is kept, the line goes in the path. */
function firstLine(s: string): string {
  const first = (s.split("\n")[0] ?? s).replace(
    /Maximum call stack size exceeded/,
    "the YAML is nested too deeply",
  );
  const at = / at line \d+, column (\d+):?$/.exec(first);
  return at ? `${first.slice(0, at.index)} (column ${at[1]})` : first;
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Parses every document of a YAML text on its own; empty documents are skipped. Never throws. */
export function parseYamlDocuments(text: string, options: ParseOptions = {}): DocumentResult[] {
  const out: DocumentResult[] = [];
  let docs: Document.Parsed[];
  try {
    const parsed = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
    if ("empty" in parsed) {
      const errors: FieldError[] = parsed.errors.map((e) => ({
        path: `line ${e.linePos?.[0]?.line ?? 1}`,
        message: `YAML syntax error: ${firstLine(e.message)}`,
      }));
      if (errors.length) out.push({ index: 0, line: 1, result: { ok: false, errors } });
      return out;
    }
    docs = parsed;
  } catch (e) {
    return [
      {
        index: 0,
        line: 1,
        result: {
          ok: false,
          errors: [
            {
              path: "line 1",
              message: `YAML could not be read: ${e instanceof Error ? firstLine(e.message) : "unknown error"}`,
            },
          ],
        },
      },
    ];
  }
  docs.forEach((doc, index) => {
    const line = lineOf(text, doc.range?.[0] ?? 0);
    if (doc.errors.length > 0) {
      const errors = doc.errors.map((e) => {
        const l = e.linePos?.[0]?.line ?? lineOf(text, e.pos[0]);
        return { path: `line ${l}`, message: `YAML syntax error: ${firstLine(e.message)}` };
      });
      out.push({ index, line, result: { ok: false, errors } });
      return;
    }
    if (doc.contents === null) return; // an empty document, e.g. after a trailing ---
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      out.push({
        index,
        line,
        result: {
          ok: false,
          errors: [
            {
              path: `line ${line}`,
              message: `YAML could not be read: ${e instanceof Error ? firstLine(e.message) : "unknown error"}`,
            },
          ],
        },
      });
      return;
    }
    out.push({ index, line, result: parsePolicyObject(value, options) });
  });
  return out;
}

/**
 * Parses a (multi-document) YAML text into all its policies, or every error. With more than one
 * document, each error path is prefixed with the document, e.g. `documents[1].spec.ingress[0]`.
 */
export function parsePolicyYaml(text: string, options: ParseOptions = {}): Result<Policy[]> {
  const docs = parseYamlDocuments(text, options);
  const policies: Policy[] = [];
  const errors: FieldError[] = [];
  for (const d of docs) {
    if (d.result.ok) policies.push(...d.result.value);
    else {
      for (const e of d.result.errors) {
        errors.push(
          docs.length > 1 && !e.path.startsWith("line ")
            ? { path: `documents[${d.index}].${e.path}`, message: e.message }
            : e,
        );
      }
    }
  }
  if (errors.length === 0 && docs.length === 0)
    errors.push({ path: "line 1", message: "no policy found: the text has no YAML document" });
  return errors.length ? { ok: false, errors } : { ok: true, value: policies };
}
