// `membrane policy`: `validate FILE…` checks policy files offline with the webhook's own messages; `trace` is cli/trace.ts.
import { readFile } from "node:fs/promises";
import { parseAllDocuments } from "yaml";
import { EXTENDED_IP_PROTOCOLS_FLAG } from "../core/parser/index.ts";
import { dns1123LabelProblem } from "../core/parser/fields.ts";
import { formatErrors, validateObject, type ValidateOptions } from "../core/validate.ts";

const USAGE = `usage: membrane policy <command>

commands:
  validate [--enable-extended-ip-protocols] [--policy-secrets-namespace NS] FILE…
                   check policy files (YAML, several documents each; "-" reads stdin) without a cluster:
                   the same errors and warnings the admission webhook gives. Exit 1 when any is invalid.
                   --enable-extended-ip-protocols: as the webhook with that flag (port-less VRRP, IGMP, GRE, ...).
                   --policy-secrets-namespace NS: as the webhook with that flag (the chart's: membrane-secrets):
                   a TLS rule's Secret named outside NS is warned about (the operator never reads it).
  trace ...        the verdict the cluster's policies give a connection, and the rule that decides it
                   (see \`membrane policy trace --help\`).
`;

export interface Output {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

export async function run(args: string[], io: Output = stdio): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "validate": {
      const parsed = validateArgs(rest);
      if ("error" in parsed) {
        io.err(`membrane policy validate: ${parsed.error}`);
        return 2;
      }
      return validateFiles(parsed.files, io, parsed.options);
    }
    case "trace":
      // Loaded on demand: validating files must not depend on the cluster-reading trace code.
      return (await import("./trace.ts")).runTrace(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      io.out(USAGE.trimEnd());
      return command === undefined ? 2 : 0;
    default:
      io.err(`membrane policy: unknown command ${JSON.stringify(command)}\n\n${USAGE.trimEnd()}`);
      return 2;
  }
}

/** The webhook's flags, so a file checked here gets the answer the cluster will give; the rest are files. */
function validateArgs(args: readonly string[]): { files: string[]; options: ValidateOptions } | { error: string } {
  const files: string[] = [];
  let enableExtendedIPProtocols = false;
  let policySecretsNamespace: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === EXTENDED_IP_PROTOCOLS_FLAG) enableExtendedIPProtocols = true;
    else if (a === "--policy-secrets-namespace" || a.startsWith("--policy-secrets-namespace=")) {
      const ns = a.includes("=") ? a.slice(a.indexOf("=") + 1) : args[++i];
      if (ns === undefined) return { error: "--policy-secrets-namespace: a value is required" };
      const problem = dns1123LabelProblem(ns);
      if (problem !== undefined) return { error: `--policy-secrets-namespace: ${JSON.stringify(ns)} is not a namespace name: it ${problem}` };
      policySecretsNamespace = ns;
    } else files.push(a);
  }
  return { files, options: { enableExtendedIPProtocols, ...(policySecretsNamespace !== undefined ? { policySecretsNamespace } : {}) } };
}

async function readInput(file: string): Promise<string> {
  if (file !== "-") return readFile(file, "utf8");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function describe(obj: unknown): string {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return "document";
  const o = obj as Record<string, unknown>;
  const meta = (typeof o.metadata === "object" && o.metadata !== null ? o.metadata : {}) as Record<string, unknown>;
  const kind = typeof o.kind === "string" ? o.kind : "object";
  const name = typeof meta.name === "string" ? meta.name : "";
  const ns = typeof meta.namespace === "string" ? `${meta.namespace}/` : "";
  return name === "" ? kind : `${kind} ${ns}${name}`;
}

/** Validates every document of every file; prints one line per object and one per warning. */
export async function validateFiles(files: readonly string[], io: Output, options: ValidateOptions = {}): Promise<number> {
  if (files.length === 0) {
    io.err("membrane policy validate: name at least one file (or - for stdin)");
    return 2;
  }
  let invalid = 0;
  let checked = 0;
  for (const file of files) {
    let text: string;
    try {
      text = await readInput(file);
    } catch (err) {
      io.err(`${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      invalid++;
      continue;
    }
    const docs = parseAllDocuments(text, { prettyErrors: true });
    const many = docs.length > 1;
    for (const [i, doc] of docs.entries()) {
      const where = many ? `${file}#${i}` : file;
      if (doc.errors.length > 0) {
        io.err(`${where}: not valid YAML: ${doc.errors.map((e) => e.message.split("\n")[0]).join("; ")}`);
        invalid++;
        continue;
      }
      const obj: unknown = doc.toJS({ maxAliasCount: 100 });
      if (obj === null || obj === undefined) continue; // an empty document, as kubectl skips it
      checked++;
      const result = validateObject(obj, options);
      const what = describe(obj);
      for (const w of result.warnings) io.err(`Warning: ${where}: ${what}: ${w}`);
      if (result.errors.length > 0) {
        invalid++;
        io.err(`${where}: ${what} is invalid: ${formatErrors(result.errors)}`);
      } else {
        io.out(`${where}: ${what} is valid`);
      }
    }
  }
  if (checked === 0 && invalid === 0) io.err("membrane policy validate: no objects found");
  return invalid > 0 ? 1 : 0;
}
