// Command-line flags for every membrane command: node:util's parseArgs, with its errors rewritten to start with the flag they are about.
import { parseArgs, type ParseArgsConfig } from "node:util";

/**
 * parseArgs' error as a message that names the flag: `unknown flag --nope`, `--kubeconfig: a value
 * is required`, `--help: takes no value`, `unexpected argument "x"`.
 */
export function flagError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  // The quoted part names the option as "--k <value>" or "-h, --help": its last dashed word is the flag.
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  const flag = quoted.split(/[\s,]+/).filter((w) => w.startsWith("-")).pop();
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown flag ${flag ?? message}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/does not take an argument/.test(message)) return `${flag}: takes no value`;
      if (/ambiguous/.test(message)) return `${flag}: a value is required (write ${flag}=VALUE for a value that starts with "-")`;
      return `${flag}: a value is required`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${quoted}"`;
    default:
      return message;
  }
}

/** parseArgs (strict: an unknown flag is an error), its result or the error naming the flag. */
export function parseFlags<T extends ParseArgsConfig>(config: T): { ok: true; parsed: ReturnType<typeof parseArgs<T>> } | { ok: false; error: string } {
  try {
    return { ok: true, parsed: parseArgs<T>({ strict: true, ...config }) };
  } catch (err) {
    return { ok: false, error: flagError(err) };
  }
}
