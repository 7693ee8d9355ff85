// `membrane observe --type process`: Tetragon-shaped process events (process_exec, process_exit and the policies'
// hook events) from a node's runtime — its live stream (recent events, and with --follow every new one) or its export
// file — filtered by pod, namespace and binary, as one compact line each or as JSON lines.
import fs from "node:fs";
import http from "node:http";
import { RUNTIME_EVENT_TYPES, type ProcessFilter, type RuntimeEvent, type TetragonArg, matchesProcessFilter } from "../core/process-event.ts";
import { parseFlags } from "../kube/flags.ts";
import { HubbleClient, grpcMessage, type HubbleClientTls } from "../flowapi/hubble/client.ts";
import type * as grpc from "@grpc/grpc-js";
import { fromEvery, observerTargets, parseHubbleAddress, TARGET_FLAG_OPTIONS, tlsFromFlags } from "./observer-targets.ts";
import { KUBECONFIG_DEFAULT } from "./kubeconfig.ts";

export const PROCESS_USAGE = `usage: membrane observe --type process [[--server ADDR ...] [--kubeconfig FILE] [TLS flags] | --runtime-address HOST:PORT | --input-file FILE]
                                     [-f|--follow] [--last N] [--pod NAME] [--namespace NS] [--binary PATH|NAME] [-o compact|json]

  (default)               every node's runtime events through its agent, found in the cluster as flows are (the
                          CiliumNode annotation membrane.io/hubble-address) over the agent's Hubble server and its
                          mutual TLS; merged by time; a node that does not answer is named on stderr
  --server ADDR           an agent's Hubble address instead (unix:/PATH or HOST:PORT, repeatable)
  --kubeconfig FILE       the cluster to find agents in (default: ${KUBECONFIG_DEFAULT})
  --tls-ca-cert-files FILE, --tls-client-cert-file FILE, --tls-client-key-file FILE, --tls-server-name NAME
                          mutual TLS for HOST:PORT agents, as for flows (the chart's Secret membrane-hubble-client)
  --runtime-address ADDR  one runtime directly, on its node (membrane runtime --metrics-address, loopback; plain HTTP)
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

export type ProcessSource =
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "runtime"; readonly address: string; readonly follow: boolean; readonly last?: number }
  /** Every node's runtime through its agent: the servers named, or (none) discovered in the cluster. */
  | { readonly kind: "agents"; readonly servers: readonly string[]; readonly kubeconfig?: string; readonly tls?: HubbleClientTls; readonly follow: boolean; readonly last?: number };

interface ProcessArgs {
  readonly source: ProcessSource;
  readonly filter: ProcessFilter;
  readonly output: "compact" | "json";
}

export function parseProcessArgs(args: readonly string[]): { ok: true; value: ProcessArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: {
      ...TARGET_FLAG_OPTIONS,
      "input-file": { type: "string" }, "runtime-address": { type: "string" }, follow: { type: "boolean", short: "f" }, last: { type: "string" },
      pod: { type: "string" }, namespace: { type: "string" }, binary: { type: "string" }, output: { type: "string", short: "o" },
    },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  for (const f of ["input-file", "runtime-address", "last", "pod", "namespace", "binary", "output", "server", "kubeconfig", "tls-ca-cert-files", "tls-client-cert-file", "tls-client-key-file", "tls-server-name"] as const) {
    if ([v[f]].flat().includes("")) return { ok: false, error: `--${f}: needs a value` };
  }
  const agentFlags = (["server", "kubeconfig", "tls-ca-cert-files", "tls-client-cert-file", "tls-client-key-file", "tls-server-name"] as const).filter((f) => v[f] !== undefined);
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
    if (agentFlags.length > 0) return { ok: false, error: `--${agentFlags[0]}: reads the agents; --input-file reads a file: give one` };
    if (v.follow === true) return { ok: false, error: "--follow: follows the live stream, not a file" };
    if (v.last !== undefined) return { ok: false, error: "--last: applies to the live stream, not a file" };
    return { ok: true, value: { source: { kind: "file", path: v["input-file"] }, filter, output } };
  }
  const last = v.last === undefined ? undefined : Number(v.last);
  if (last !== undefined && (!Number.isInteger(last) || last < 0)) return { ok: false, error: `--last: "${v.last}" is not a count of events` };
  if (v["runtime-address"] !== undefined) {
    if (agentFlags.length > 0) return { ok: false, error: `--${agentFlags[0]}: reads the agents; --runtime-address reads one runtime: give one` };
    const address = v["runtime-address"];
    if (!/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(address)) return { ok: false, error: `--runtime-address: "${address}" is not HOST:PORT` };
    source = { kind: "runtime", address, follow: v.follow === true, ...(last !== undefined ? { last } : {}) };
  } else {
    const servers: string[] = [];
    for (const s of v.server ?? []) {
      const a = parseHubbleAddress(s);
      if (a === undefined) return { ok: false, error: `--server: "${s}" is not unix:/PATH, /PATH or HOST:PORT` };
      servers.push(a);
    }
    if (servers.length > 0 && v.kubeconfig !== undefined) return { ok: false, error: "--kubeconfig: not together with --server (the servers are given, nothing is discovered)" };
    const tls = tlsFromFlags(v);
    if (!tls.ok) return tls;
    source = {
      kind: "agents",
      servers,
      ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
      ...(tls.tls ? { tls: tls.tls } : {}),
      follow: v.follow === true,
      ...(last !== undefined ? { last } : {}),
    };
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
  const warn = (s: string): void => void process.stderr.write(`membrane observe: ${s}\n`);
  if (a.source.kind !== "file") {
    const abort = new AbortController();
    const stop = (): void => abort.abort();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    try {
      if (a.source.kind === "runtime") return (await readRuntimeStream(a.source, a.filter, print, warn, abort.signal)).ok ? 0 : 1;
      await readAgents(a.source, a.filter, print, warn, abort.signal);
      return 0;
    } catch (err) {
      warn(err instanceof Error ? err.message : String(err));
      return 1;
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

/** The stream's query as the runtime reads it (GET /v1/events; an agent passes it on as it is). */
function streamQuery(src: { readonly follow: boolean; readonly last?: number }, filter: ProcessFilter): string {
  return new URLSearchParams({ follow: String(src.follow), ...(src.last !== undefined ? { last: String(src.last) } : {}), ...filter }).toString();
}

/**
 * Splits a stream's text into its JSON lines (runs may end inside a line): each process event that matches `filter`
 * to `onEvent`; a lost-events note and a line that is not an event are said through `warn`, naming `from`.
 */
function eventLines(from: string, filter: ProcessFilter, onEvent: (e: RuntimeEvent) => void, warn: (s: string) => void): (chunk: string) => void {
  let partial = "";
  const onLine = (line: string): void => {
    if (line.trim() === "") return;
    let e: unknown;
    try {
      e = JSON.parse(line);
    } catch {
      return warn(`${from} sent a line that is not JSON: ${line.slice(0, 80)}`);
    }
    if (typeof e === "object" && e !== null && "lost_events" in e) return warn(`${from}: ${String((e as { lost_events: unknown }).lost_events)} events lost (this client read too slowly)`);
    if (typeof e !== "object" || e === null || !RUNTIME_EVENT_TYPES.some((t) => t in e)) return warn(`${from} sent a line that is not a process event: ${line.slice(0, 80)}`);
    if (matchesProcessFilter(e as RuntimeEvent, filter)) onEvent(e as RuntimeEvent);
  };
  return (chunk) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) onLine(line);
  };
}

/** How long an agent may take to answer a request that ends by itself before it counts as not answering. */
const AGENT_ANSWER_TIMEOUT_MS = 30_000;

/**
 * Every node's runtime events through its agent (flowapi/process-events.ts): asked at once; a node that fails is named
 * through `warn` and the others' events are still shown; rejects only when none answered. Without follow the events of
 * all nodes are merged by time (`--last` then counts over all of them); with follow each is printed as it arrives.
 */
export async function readAgents(
  src: Extract<ProcessSource, { kind: "agents" }>,
  filter: ProcessFilter,
  onEvent: (e: RuntimeEvent) => void,
  warn: (s: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  const targets = await observerTargets(src, (s) => warn(s.trimEnd()));
  const query = streamQuery(src, filter);
  const all: RuntimeEvent[] = [];
  const read = (address: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const client = new HubbleClient(address, src.tls);
      const stream = client.getProcessEvents(query, src.follow ? {} : { deadline: Date.now() + AGENT_ANSWER_TIMEOUT_MS });
      const lines = eventLines(`the agent at ${address}`, filter, src.follow ? onEvent : (e) => all.push(e), warn);
      const abort = (): void => stream.cancel();
      signal?.addEventListener("abort", abort, { once: true });
      if (signal?.aborted) abort();
      const finish = (err?: Error): void => {
        signal?.removeEventListener("abort", abort);
        client.close();
        if (err) reject(err);
        else resolve();
      };
      stream.on("data", (b: Buffer) => lines(b.toString("utf8")));
      stream.on("error", (e: grpc.ServiceError) => (signal?.aborted ? finish() : finish(new Error(grpcMessage(e), { cause: e }))));
      stream.on("end", () => finish(src.follow && signal?.aborted !== true ? new Error("the agent closed the stream") : undefined));
    });
  await fromEvery(targets, (s) => warn(s.trimEnd()), read, "events");
  if (src.follow) return;
  all.sort((x, y) => (timeOf(x) < timeOf(y) ? -1 : timeOf(x) > timeOf(y) ? 1 : 0));
  for (const e of src.last !== undefined ? all.slice(all.length - Math.min(src.last, all.length)) : all) onEvent(e);
}

const timeOf = (e: RuntimeEvent): string => (e as { time?: string }).time ?? "";

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
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean, why?: string): void => {
      if (done) return;
      done = true;
      if (why !== undefined) warn(why);
      resolve({ ok });
    };
    const req = http.get(`http://${src.address}/v1/events?${streamQuery(src, filter)}`, { signal }, (res) => {
      if (res.statusCode !== 200) {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => finish(false, `the runtime at ${src.address} refused the request: ${res.statusCode} ${body.trim()}`));
        return;
      }
      // An abort destroys the response with an AbortError: that is the end the caller asked for.
      res.on("error", (err) => finish(signal?.aborted === true, signal?.aborted ? undefined : `the stream from ${src.address} failed: ${err.message}`));
      const lines = eventLines("the runtime", filter, onEvent, warn);
      res.setEncoding("utf8");
      res.on("data", lines);
      res.on("end", () => finish(!src.follow || signal?.aborted === true, src.follow && signal?.aborted !== true ? `the runtime at ${src.address} closed the stream` : undefined));
    });
    req.on("error", (err) => {
      if (signal?.aborted) finish(true);
      else finish(false, `the runtime at ${src.address} cannot be reached: ${err.message}`);
    });
  });
}
