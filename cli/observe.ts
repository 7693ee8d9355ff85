// `membrane observe`: flows from the agents' observer APIs (given, or found in the cluster), filtered like hubble, as a table or JSON lines.
import { readFlows } from "../flowapi/client.ts";
import { FILTER_USAGE, parseFilterArgs, type FlowFilter } from "../flowapi/filter.ts";
import { FLOW_TABLE_HEADER, flowTableRow, type Flow } from "../flowapi/flow.ts";
import { discoverObserversFromKubeconfig, parseObserverAddress, OBSERVER_ADDRESS_ANNOTATION, type ObserverDiscovery } from "../flowapi/discover.ts";
import { parseFlags } from "../kube/flags.ts";
import { cliKubeconfig, KUBECONFIG_DEFAULT } from "./kubeconfig.ts";
import { observeProcesses, observeType, PROCESS_USAGE } from "./observe-process.ts";

const USAGE = `usage: membrane observe [--type flow] [--server ADDR ...] [--kubeconfig FILE] [-f] [-o table|json] [filters]
       membrane observe --type process --input-file FILE [--pod NAME] [--namespace NS] [--binary B] (see --type process --help)

  --server ADDR      an agent's observer API: unix:/path/to/socket, /path/to/socket or http://HOST:PORT;
                     without it, every node's agent is found in the cluster (the CiliumNode annotation
                     ${OBSERVER_ADDRESS_ANNOTATION}) and their flows are merged
  --kubeconfig FILE  the cluster to find agents in (default: ${KUBECONFIG_DEFAULT})
  -f, --follow       keep printing new flows until interrupted
  -o, --output       table (default) or json (one flow per line)

A node whose observer does not answer is reported on stderr and the others' flows are shown; the
exit code is 1 only when no observer answered.

${FILTER_USAGE}`;

export interface ObserveArgs {
  /** Explicit observer addresses; empty means "discover them in the cluster". */
  readonly servers: readonly string[];
  readonly kubeconfig?: string;
  readonly follow: boolean;
  readonly output: "table" | "json";
  readonly filter: FlowFilter;
}

export function parseObserveArgs(args: readonly string[]): { ok: true; value: ObserveArgs } | { ok: false; error: string } {
  const parsed = parseFilterArgs(args);
  if (!parsed.ok) return parsed;
  const flags = parseFlags({
    args: parsed.rest,
    options: { server: { type: "string", multiple: true }, kubeconfig: { type: "string" }, output: { type: "string", short: "o" }, follow: { type: "boolean", short: "f" } },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  for (const f of ["server", "kubeconfig", "output"] as const) if ([v[f]].flat().includes("")) return { ok: false, error: `--${f}: needs a value` };
  const servers = v.server ?? [];
  const kubeconfig = v.kubeconfig;
  const follow = v.follow === true;
  const output = v.output ?? "table";
  if (output !== "table" && output !== "json") return { ok: false, error: `-o: "${output}" is not table or json` };
  for (const s of servers) if (parseObserverAddress(s) === undefined) return { ok: false, error: `--server: "${s}" is not unix:/PATH, /PATH or http://HOST:PORT` };
  if (servers.length > 0 && kubeconfig !== undefined) return { ok: false, error: "--kubeconfig: not together with --server (the servers are given, nothing is discovered)" };
  return { ok: true, value: { servers, ...(kubeconfig !== undefined ? { kubeconfig } : {}), follow, output, filter: parsed.filter } };
}

export function formatFlowTable(flows: readonly Flow[], header = true): string {
  const rows = flows.map(flowTableRow);
  if (header) rows.unshift(FLOW_TABLE_HEADER);
  const widths = FLOW_TABLE_HEADER.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + (rows.length ? "\n" : "");
}

function formatOne(f: Flow, output: "table" | "json"): string {
  return output === "json" ? JSON.stringify(f) + "\n" : flowTableRow(f).filter((c) => c !== "").join("  ") + "\n";
}

/** One observer to ask: `label` names it in warnings (the node, when discovered). */
interface ObserverTarget {
  readonly label: string;
  readonly address: string;
}

async function targetsOf(a: ObserveArgs, warn: (s: string) => void): Promise<ObserverTarget[]> {
  if (a.servers.length > 0) return a.servers.map((s) => ({ label: s, address: s }));
  let d: ObserverDiscovery;
  try {
    d = await discoverObserversFromKubeconfig(await cliKubeconfig(a.kubeconfig));
  } catch (err) {
    throw new Error(`finding the agents in the cluster (use --server ADDR to name one): ${(err as Error).message}`, { cause: err });
  }
  for (const u of d.unreachable) warn(`node ${u.node}: not asked: ${u.reason}\n`);
  if (d.observers.length === 0) throw new Error(`no node in the cluster has an observer address (${d.unreachable.length} CiliumNode(s) without one)`);
  return d.observers.map((o) => ({ label: `node ${o.node} (${o.address})`, address: o.address }));
}

/**
 * Asks every observer at once; one that fails is reported through `warn` and the others' flows are
 * still shown. Rejects only when no observer answered.
 */
async function fromEvery(targets: readonly ObserverTarget[], warn: (s: string) => void, read: (address: string) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(targets.map((t) => read(t.address)));
  const failures = results.flatMap((r, i) => (r.status === "rejected" ? [`${targets[i]!.label}: ${stripAddress(String((r.reason as Error).message ?? r.reason), targets[i]!.address)}`] : []));
  if (failures.length === targets.length) throw new Error(failures.length === 1 ? failures[0]! : `no observer answered:\n  ${failures.join("\n  ")}`);
  for (const f of failures) warn(`${f}: its flows are missing\n`);
}

/** readFlows' errors start with the address; the label already names it. */
function stripAddress(msg: string, address: string): string {
  return msg.startsWith(`${address}: `) ? msg.slice(address.length + 2) : msg;
}

/** Runs observe with explicit output and an abort signal (tests); `run` wires it to the process. */
export async function observe(a: ObserveArgs, out: (s: string) => void, signal?: AbortSignal, warn: (s: string) => void = () => {}): Promise<void> {
  const targets = await targetsOf(a, warn);
  if (a.follow) {
    // Replay, then stream, from every observer at once; lines are printed as they arrive.
    await fromEvery(targets, warn, (s) => readFlows(s, a.filter, true, (f) => out(formatOne(f, a.output)), signal));
    return;
  }
  const all: Flow[] = [];
  await fromEvery(targets, warn, (s) => readFlows(s, a.filter, false, (f) => all.push(f), signal));
  all.sort((x, y) => (x.time < y.time ? -1 : x.time > y.time ? 1 : 0));
  const flows = a.filter.last !== undefined ? all.slice(-a.filter.last) : all;
  out(a.output === "json" ? flows.map((f) => JSON.stringify(f) + "\n").join("") : formatFlowTable(flows));
}

export async function run(all: string[]): Promise<number> {
  const typed = observeType(all);
  if (!typed.ok) {
    process.stderr.write(`membrane observe: ${typed.error}\n`);
    return 2;
  }
  const args = typed.rest;
  if (args.includes("--help") || args.includes("-h") || args[0] === "help") {
    process.stdout.write(typed.type === "process" ? PROCESS_USAGE : USAGE);
    return 0;
  }
  if (typed.type === "process") return observeProcesses(args);
  const parsed = parseObserveArgs(args);
  if (!parsed.ok) {
    process.stderr.write(`membrane observe: ${parsed.error}\n`);
    return 2;
  }
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    await observe(parsed.value, (s) => process.stdout.write(s), abort.signal, (s) => process.stderr.write(`membrane observe: ${s}`));
    return 0;
  } catch (err) {
    process.stderr.write(`membrane observe: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}
