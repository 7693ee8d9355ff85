// `membrane observe --type process`: Tetragon-shaped process events (process_exec, process_exit) from a node's
// export file, filtered by pod, namespace and binary, as one compact line each or as JSON lines.
import fs from "node:fs";
import { RUNTIME_EVENT_TYPES, type ProcessFilter, type RuntimeEvent, type TetragonArg, matchesProcessFilter } from "../core/process-event.ts";
import { parseFlags } from "../kube/flags.ts";

export const PROCESS_USAGE = `usage: membrane observe --type process --input-file FILE [--pod NAME] [--namespace NS] [--binary PATH|NAME] [-o compact|json]

  --input-file FILE  a node's process event export (node-agent/runtime/main.ts --export-file)
  --pod NAME         only events of processes in this pod
  --namespace NS     only events of processes in pods of this namespace
  --binary B         only this executable: an absolute path, or a name matching its last component
  -o, --output       compact (default: one line per event) or json (Tetragon's JSON, one event per line)
`;

/** Splits off `--type process` (and `flow`, the default); any other `--type` is a flow type, kept in `rest` for the flow filters. */
export function observeType(args: readonly string[]): { ok: true; type: "flow" | "process"; rest: string[] } | { ok: false; error: string } {
  const rest: string[] = [];
  let isProcess = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = a === "--type" ? args[i + 1] : a.startsWith("--type=") ? a.slice("--type=".length) : undefined;
    if (value === undefined) {
      rest.push(a);
      continue;
    }
    if (a === "--type") i++;
    if (value === "process") isProcess = true;
    // Any other type is a flow filter (policy-verdict, drop, trace, l7), checked by the flow filter's parser.
    else if (value !== "flow") rest.push("--type", value);
  }
  if (isProcess && rest.includes("--type")) return { ok: false, error: "--type: process cannot be combined with a flow type" };
  return { ok: true, type: isProcess ? "process" : "flow", rest };
}

interface ProcessArgs {
  readonly inputFile: string;
  readonly filter: ProcessFilter;
  readonly output: "compact" | "json";
}

export function parseProcessArgs(args: readonly string[]): { ok: true; value: ProcessArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: { "input-file": { type: "string" }, pod: { type: "string" }, namespace: { type: "string" }, binary: { type: "string" }, output: { type: "string", short: "o" } },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  for (const f of ["input-file", "pod", "namespace", "binary", "output"] as const) if (v[f] === "") return { ok: false, error: `--${f}: needs a value` };
  if (v["input-file"] === undefined) return { ok: false, error: "--input-file: required (the agents serve no process events yet; read a node's export file)" };
  const output = v.output ?? "compact";
  if (output !== "compact" && output !== "json") return { ok: false, error: `-o: "${output}" is not compact or json` };
  const filter: ProcessFilter = {
    ...(v.pod !== undefined ? { pod: v.pod } : {}),
    ...(v.namespace !== undefined ? { namespace: v.namespace } : {}),
    ...(v.binary !== undefined ? { binary: v.binary } : {}),
  };
  return { ok: true, value: { inputFile: v["input-file"], filter, output } };
}

/** One line like `tetra getevents -o compact`: 🚀 for exec, 💥 for exit, 🔧 for a policy's hook (with its action), with the pod. */
export function compactLine(e: RuntimeEvent): string {
  if ("process_exec" in e) {
    const p = e.process_exec.process;
    return `🚀 process ${where(p.pod)} ${p.binary}${p.arguments ? ` ${p.arguments}` : ""}`;
  }
  if ("process_tracepoint" in e) {
    const t = e.process_tracepoint;
    return `🔧 ${t.subsys}/${t.event} ${where(t.process.pod)} ${t.process.binary} ${t.args.map(argText).join(" ")} ${t.action.replace(/^KPROBE_ACTION_/, "")} (${t.policy_name})`;
  }
  if ("process_kprobe" in e || "process_lsm" in e) {
    const k = "process_kprobe" in e ? e.process_kprobe : e.process_lsm;
    const action = k.action.replace(/^KPROBE_ACTION_/, "");
    return `🔧 ${k.function_name} ${where(k.process.pod)} ${k.process.binary} ${k.args.map(argText).join(" ")} ${action} (${k.policy_name})`;
  }
  const x = e.process_exit;
  const p = x.process;
  return `💥 exit    ${where(p.pod)} ${p.binary}${p.arguments ? ` ${p.arguments}` : ""} ${x.signal ?? x.status}`;
}

function argText(a: TetragonArg): string {
  if ("file_arg" in a) return a.file_arg.path;
  if ("path_arg" in a) return a.path_arg.path;
  if ("linux_binprm_arg" in a) return a.linux_binprm_arg.path;
  if ("string_arg" in a) return a.string_arg;
  if ("sock_arg" in a) return `${a.sock_arg.daddr}:${a.sock_arg.dport}`;
  if ("sockaddr_arg" in a) return `${a.sockaddr_arg.addr}:${a.sockaddr_arg.port}`;
  return String(Object.values(a)[0]);
}

const where = (pod: { namespace: string; name: string } | undefined): string => (pod ? `${pod.namespace}/${pod.name}` : "host");

/** The matching events of an export file's text; a line that is not a process event is an error naming it. */
export function selectProcessEvents(text: string, filter: ProcessFilter): { events: RuntimeEvent[]; errors: string[] } {
  const events: RuntimeEvent[] = [];
  const errors: string[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let e: unknown;
    try {
      e = JSON.parse(line);
    } catch {
      errors.push(`line ${i + 1}: not JSON`);
      return;
    }
    if (typeof e !== "object" || e === null || !RUNTIME_EVENT_TYPES.some((t) => t in e)) {
      errors.push(`line ${i + 1}: not a ${RUNTIME_EVENT_TYPES.join(", ")} event`);
      return;
    }
    if (matchesProcessFilter(e as RuntimeEvent, filter)) events.push(e as RuntimeEvent);
  });
  return { events, errors };
}

export async function observeProcesses(args: readonly string[]): Promise<number> {
  const parsed = parseProcessArgs(args);
  if (!parsed.ok) {
    process.stderr.write(`membrane observe: ${parsed.error}\n${PROCESS_USAGE}`);
    return 2;
  }
  const a = parsed.value;
  let text: string;
  try {
    text = await fs.promises.readFile(a.inputFile, "utf8");
  } catch (err) {
    process.stderr.write(`membrane observe: --input-file: ${(err as Error).message}\n`);
    return 1;
  }
  const { events, errors } = selectProcessEvents(text, a.filter);
  for (const e of errors) process.stderr.write(`membrane observe: ${a.inputFile}: ${e}\n`);
  for (const e of events) process.stdout.write(a.output === "json" ? `${JSON.stringify(e)}\n` : `${compactLine(e)}\n`);
  return errors.length > 0 && events.length === 0 ? 1 : 0;
}
