// `membrane observe --type process`: Tetragon-shaped process events (process_exec, process_exit and the policies'
// hook events) from a node's runtime — its live stream (recent events, and with --follow every new one) or its export
// file — filtered by pod, namespace and binary, as one compact line each or as JSON lines.
import fs from "node:fs";
import http from "node:http";
import { RUNTIME_EVENT_TYPES, type ProcessFilter, type RuntimeEvent, type TetragonArg, matchesProcessFilter } from "../core/process-event.ts";
import { parseFlags } from "../kube/flags.ts";

/** Where `membrane runtime` serves its stream unless told otherwise (its --metrics-address default). */
export const RUNTIME_ADDRESS_DEFAULT = "127.0.0.1:9964";

export const PROCESS_USAGE = `usage: membrane observe --type process [--runtime-address HOST:PORT [-f|--follow] [--last N] | --input-file FILE]
                                     [--pod NAME] [--namespace NS] [--binary PATH|NAME] [-o compact|json]

  --runtime-address ADDR  the node's runtime (membrane runtime --metrics-address; default ${RUNTIME_ADDRESS_DEFAULT}):
                          its recent events, filtered there
  -f, --follow            then every new event as it happens, until interrupted
  --last N                at most the N most recent events (default: all the runtime keeps, 4096)
  --input-file FILE       a node's process event export instead (node-agent/runtime/main.ts --export-file)
  --pod NAME              only events of processes in this pod
  --namespace NS          only events of processes in pods of this namespace
  --binary B              only this executable: an absolute path, or a name matching its last component
  -o, --output            compact (default: one line per event) or json (Tetragon's JSON, one event per line)
`;

/** Splits off `--type process` (and `flow`, the default); any other `--type` is a flow type, kept in `rest` for the flow filters. */
export function observeType(args: readonly string[]): { ok: true; type: "flow" | "process"; rest: string[] } | { ok: false; error: string } {
  const rest: string[] = [];
  let isProcess = false;
  let isDns = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = a === "--type" ? args[i + 1] : a.startsWith("--type=") ? a.slice("--type=".length) : undefined;
    if (value === undefined) {
      rest.push(a);
      continue;
    }
    if (a === "--type") i++;
    if (value === "process") isProcess = true;
    else if (value === "dns") isDns = true;
    // Any other type is a flow filter (policy-verdict, drop, trace, l7), checked by the flow filter's parser.
    else if (value !== "flow") rest.push("--type", value);
  }
  if (isProcess && (isDns || rest.includes("--type"))) return { ok: false, error: "--type: process cannot be combined with a flow type" };
  // dns is the DNS proxy's L7 flows: another type beside it would be read as "and DNS" by the protocol filter, so it stands alone.
  if (isDns && rest.includes("--type")) return { ok: false, error: "--type: dns (the DNS proxy's L7 flows) cannot be combined with another flow type" };
  if (isDns) rest.push("--type", "l7", "--protocol", "DNS");
  return { ok: true, type: isProcess ? "process" : "flow", rest };
}

export type ProcessSource = { readonly kind: "file"; readonly path: string } | { readonly kind: "runtime"; readonly address: string; readonly follow: boolean; readonly last?: number };

interface ProcessArgs {
  readonly source: ProcessSource;
  readonly filter: ProcessFilter;
  readonly output: "compact" | "json";
}

export function parseProcessArgs(args: readonly string[]): { ok: true; value: ProcessArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: {
      "input-file": { type: "string" }, "runtime-address": { type: "string" }, follow: { type: "boolean", short: "f" }, last: { type: "string" },
      pod: { type: "string" }, namespace: { type: "string" }, binary: { type: "string" }, output: { type: "string", short: "o" },
    },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  for (const f of ["input-file", "runtime-address", "last", "pod", "namespace", "binary", "output"] as const) if (v[f] === "") return { ok: false, error: `--${f}: needs a value` };
  const output = v.output ?? "compact";
  if (output !== "compact" && output !== "json") return { ok: false, error: `-o: "${output}" is not compact or json` };
  const filter: ProcessFilter = {
    ...(v.pod !== undefined ? { pod: v.pod } : {}),
    ...(v.namespace !== undefined ? { namespace: v.namespace } : {}),
    ...(v.binary !== undefined ? { binary: v.binary } : {}),
  };
  let source: ProcessSource;
  if (v["input-file"] !== undefined) {
    if (v["runtime-address"] !== undefined) return { ok: false, error: "--input-file: reads a file; --runtime-address reads the runtime: give one" };
    if (v.follow === true) return { ok: false, error: "--follow: follows the runtime's live stream (--runtime-address), not a file" };
    if (v.last !== undefined) return { ok: false, error: "--last: applies to the runtime's stream (--runtime-address), not a file" };
    source = { kind: "file", path: v["input-file"] };
  } else {
    const address = v["runtime-address"] ?? RUNTIME_ADDRESS_DEFAULT;
    if (!/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(address)) return { ok: false, error: `--runtime-address: "${address}" is not HOST:PORT` };
    const last = v.last === undefined ? undefined : Number(v.last);
    if (last !== undefined && (!Number.isInteger(last) || last < 0)) return { ok: false, error: `--last: "${v.last}" is not a count of events` };
    source = { kind: "runtime", address, follow: v.follow === true, ...(last !== undefined ? { last } : {}) };
  }
  return { ok: true, value: { source, filter, output } };
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
  const print = (e: RuntimeEvent): void => void process.stdout.write(a.output === "json" ? `${JSON.stringify(e)}\n` : `${compactLine(e)}\n`);
  if (a.source.kind === "runtime") {
    const abort = new AbortController();
    const stop = (): void => abort.abort();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    try {
      const r = await readRuntimeStream(a.source, a.filter, print, (s) => process.stderr.write(`membrane observe: ${s}\n`), abort.signal);
      return r.ok ? 0 : 1;
    } finally {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    }
  }
  let text: string;
  try {
    text = await fs.promises.readFile(a.source.path, "utf8");
  } catch (err) {
    process.stderr.write(`membrane observe: --input-file: ${(err as Error).message}\n`);
    return 1;
  }
  const { events, errors } = selectProcessEvents(text, a.filter);
  for (const e of errors) process.stderr.write(`membrane observe: ${a.source.path}: ${e}\n`);
  for (const e of events) print(e);
  return errors.length > 0 && events.length === 0 ? 1 : 0;
}

/**
 * Reads the runtime's stream (GET /v1/events with the filters, which the runtime applies; they are applied here too):
 * each event to `onEvent` until the stream ends (without follow) or `signal` aborts (then ok). A refused request, a
 * runtime that cannot be reached or that goes away while followed is not ok, said through `warn`.
 */
export function readRuntimeStream(
  src: Extract<ProcessSource, { kind: "runtime" }>,
  filter: ProcessFilter,
  onEvent: (e: RuntimeEvent) => void,
  warn: (s: string) => void,
  signal?: AbortSignal,
): Promise<{ ok: boolean }> {
  const q = new URLSearchParams({ follow: String(src.follow), ...(src.last !== undefined ? { last: String(src.last) } : {}), ...filter });
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean, why?: string): void => {
      if (done) return;
      done = true;
      if (why !== undefined) warn(why);
      resolve({ ok });
    };
    const req = http.get(`http://${src.address}/v1/events?${q.toString()}`, { signal }, (res) => {
      if (res.statusCode !== 200) {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => finish(false, `the runtime at ${src.address} refused the request: ${res.statusCode} ${body.trim()}`));
        return;
      }
      // An abort destroys the response with an AbortError: that is the end the caller asked for.
      res.on("error", (err) => finish(signal?.aborted === true, signal?.aborted ? undefined : `the stream from ${src.address} failed: ${err.message}`));
      const onLine = (line: string): void => {
        if (line.trim() === "") return;
        let e: unknown;
        try {
          e = JSON.parse(line);
        } catch {
          return warn(`the runtime sent a line that is not JSON: ${line.slice(0, 80)}`);
        }
        if (typeof e === "object" && e !== null && "lost_events" in e) return warn(`${String((e as { lost_events: unknown }).lost_events)} events lost (this client read too slowly)`);
        if (typeof e !== "object" || e === null || !RUNTIME_EVENT_TYPES.some((t) => t in e)) return warn(`the runtime sent a line that is not a process event: ${line.slice(0, 80)}`);
        if (matchesProcessFilter(e as RuntimeEvent, filter)) onEvent(e as RuntimeEvent);
      };
      let partial = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop() ?? "";
        for (const line of parts) onLine(line);
      });
      res.on("end", () => finish(!src.follow || signal?.aborted === true, src.follow && signal?.aborted !== true ? `the runtime at ${src.address} closed the stream` : undefined));
    });
    req.on("error", (err) => {
      if (signal?.aborted) finish(true);
      else finish(false, `the runtime at ${src.address} cannot be reached: ${err.message}`);
    });
  });
}
