// `membrane observe`: flows from Hubble's Observer API (an agent's, the relay's, or every agent found in the cluster), filtered like hubble, as a table or JSON lines.
import { FILTER_USAGE, flowPredicate, parseFilterArgs, type FlowFilter } from "../flowapi/filter.ts";
import { FLOW_TABLE_HEADER, flowTableRow, type Flow } from "../flowapi/flow.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import { clientSource, HubbleClient, type HubbleClientTls } from "../flowapi/hubble/client.ts";
import { fromHubbleFlow } from "../flowapi/hubble/flow.ts";
import { observeRequest } from "../flowapi/hubble/request.ts";
import type { GetFlowsResponse } from "../flowapi/hubble/types.ts";
import { parseFlags } from "../kube/flags.ts";
import { KUBECONFIG_DEFAULT } from "./kubeconfig.ts";
import { devClusterTls, fromEvery, observerTargets, parseHubbleAddress, TARGET_FLAG_OPTIONS, tlsFromFlags } from "./observer-targets.ts";
import { observeProcesses, observeType, PROCESS_USAGE } from "./observe-process.ts";

const USAGE = `usage: membrane observe [--type flow] [--server ADDR ...] [--kubeconfig FILE] [TLS flags] [-f] [-o table|json] [filters]
       membrane observe --type process [--server ADDR ... | --runtime-address HOST:PORT] [-f] [--pod NAME] [--namespace NS] [--binary B] (see --type process --help)

Reads Hubble's Observer API, as the hubble CLI does, and prints Membrane's flows (the deciding rule of each).

  --server ADDR      an agent's Hubble socket (unix:/run/membrane/hubble.sock, or the path alone) or
                     HOST:PORT (the relay: \`membrane dev status\` names the local cluster's; an agent's
                     TCP server needs the TLS flags); without it, every node's agent is found in the
                     cluster (the CiliumNode annotation ${HUBBLE_ADDRESS_ANNOTATION}) and their flows are merged
  --kubeconfig FILE  the cluster to find agents in (default: ${KUBECONFIG_DEFAULT})
  --tls-ca-cert-files FILE, --tls-client-cert-file FILE, --tls-client-key-file FILE
                     mutual TLS for HOST:PORT servers (the chart's Secret membrane-hubble-client holds them)
  --tls-server-name NAME  the name the server's certificate carries (agents: hubble-grpc.membrane.io)
  -f, --follow       keep printing new flows until interrupted
  -o, --output       table (default) or json (one flow per line)

A node whose observer does not answer is reported on stderr and the others' flows are shown; the
exit code is 1 only when no observer answered.

${FILTER_USAGE}`;

export interface ObserveArgs {
  /** Explicit Hubble addresses (`unix:/path`, `host:port`); empty means "discover the agents in the cluster". */
  readonly servers: readonly string[];
  readonly kubeconfig?: string;
  readonly tls?: HubbleClientTls;
  readonly follow: boolean;
  readonly output: "table" | "json";
  readonly filter: FlowFilter;
}

export { parseHubbleAddress };

export function parseObserveArgs(args: readonly string[]): { ok: true; value: ObserveArgs } | { ok: false; error: string } {
  const parsed = parseFilterArgs(args);
  if (!parsed.ok) return parsed;
  const flags = parseFlags({
    args: parsed.rest,
    options: {
      ...TARGET_FLAG_OPTIONS,
      output: { type: "string", short: "o" },
      follow: { type: "boolean", short: "f" },
    },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  for (const f of ["server", "kubeconfig", "output", "tls-ca-cert-files", "tls-client-cert-file", "tls-client-key-file", "tls-server-name"] as const) {
    if ([v[f]].flat().includes("")) return { ok: false, error: `--${f}: needs a value` };
  }
  const servers: string[] = [];
  for (const s of v.server ?? []) {
    const a = parseHubbleAddress(s);
    if (a === undefined) return { ok: false, error: `--server: "${s}" is not unix:/PATH, /PATH or HOST:PORT` };
    servers.push(a);
  }
  const kubeconfig = v.kubeconfig;
  const follow = v.follow === true;
  const output = v.output ?? "table";
  if (output !== "table" && output !== "json") return { ok: false, error: `-o: "${output}" is not table or json` };
  if (servers.length > 0 && kubeconfig !== undefined) return { ok: false, error: "--kubeconfig: not together with --server (the servers are given, nothing is discovered)" };
  const tls = tlsFromFlags(v);
  if (!tls.ok) return tls;
  return { ok: true, value: { servers, ...(kubeconfig !== undefined ? { kubeconfig } : {}), ...(tls.tls ? { tls: tls.tls } : {}), follow, output, filter: parsed.filter } };
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

/** How long a server may take to answer a request that ends by itself (a replay) before it counts as not answering. */
export const OBSERVER_ANSWER_TIMEOUT_MS = 30_000;

/** Streams one server's GetFlows answer as our flows, filtered again when Hubble's filters select more than ours. */
async function readHubble(address: string, tls: HubbleClientTls | undefined, a: ObserveArgs, onFlow: (f: Flow) => void, warn: (s: string) => void, signal?: AbortSignal): Promise<void> {
  const { request, exact } = observeRequest(a.filter, a.follow);
  const again = exact ? undefined : flowPredicate(a.filter);
  const client = new HubbleClient(address, tls);
  try {
    await clientSource(client, a.follow ? undefined : OBSERVER_ANSWER_TIMEOUT_MS)(
      request,
      (r: GetFlowsResponse) => {
        if (r.lost_events !== undefined) warn(`${lostEventsText(r)}\n`);
        if (r.flow === undefined) return;
        const f = fromHubbleFlow(r.flow);
        if (again === undefined || again(f)) onFlow(f);
      },
      signal,
    );
  } finally {
    client.close();
  }
}

/** A LostEvent as a line for the user, as Hubble prints it: `EVENTS LOST: SOURCE N (node NODE)`. */
export function lostEventsText(r: GetFlowsResponse): string {
  const l = r.lost_events!;
  return `EVENTS LOST: ${l.source} ${Number(l.num_events_lost)}${r.node_name ? ` (node ${r.node_name})` : " (relay)"}`;
}

/** Runs observe with explicit output and an abort signal (tests); `run` wires it to the process. */
export async function observe(given: ObserveArgs, out: (s: string) => void, signal?: AbortSignal, warn: (s: string) => void = () => {}): Promise<void> {
  const targets = await observerTargets(given, warn);
  const devTls = given.servers.length === 0 && given.tls === undefined ? await devClusterTls(given.kubeconfig) : undefined;
  const a: ObserveArgs = devTls ? { ...given, tls: devTls } : given;
  if (a.follow) {
    // Replay, then stream, from every server at once; lines are printed as they arrive.
    await fromEvery(targets, warn, (s) => readHubble(s, a.tls, a, (f) => out(formatOne(f, a.output)), warn, signal));
    return;
  }
  const all: Flow[] = [];
  await fromEvery(targets, warn, (s) => readHubble(s, a.tls, a, (f) => all.push(f), warn, signal));
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
