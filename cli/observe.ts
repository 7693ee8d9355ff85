// `membrane observe`: flows from one or more agents' observer APIs, filtered like hubble, as a table or JSON lines.
import http from "node:http";
import { FILTER_USAGE, filterToQuery, parseFilterArgs, type FlowFilter } from "../node-agent/observer/filter.ts";
import { FLOW_TABLE_HEADER, flowTableRow, type Flow } from "../node-agent/observer/flow.ts";

const USAGE = `usage: membrane observe --server ADDR [--server ADDR ...] [-f] [-o table|json] [filters]

  --server ADDR   an agent's observer API: unix:/path/to/socket, /path/to/socket or http://127.0.0.1:PORT
  -f, --follow    keep printing new flows until interrupted
  -o, --output    table (default) or json (one flow per line)

${FILTER_USAGE}`;

export interface ObserveArgs {
  readonly servers: readonly string[];
  readonly follow: boolean;
  readonly output: "table" | "json";
  readonly filter: FlowFilter;
}

export function parseObserveArgs(args: readonly string[]): { ok: true; value: ObserveArgs } | { ok: false; error: string } {
  const parsed = parseFilterArgs(args);
  if (!parsed.ok) return parsed;
  const servers: string[] = [];
  let follow = false;
  let output = "table";
  const rest = parsed.rest;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === "-f" || a === "--follow") follow = true;
    else if (a === "--server" || a === "-o" || a === "--output") {
      const v = rest[++i];
      if (v === undefined) return { ok: false, error: `${a}: needs a value` };
      if (a === "--server") servers.push(v);
      else output = v;
    } else if (a.startsWith("--server=")) servers.push(a.slice("--server=".length));
    else if (a.startsWith("--output=")) output = a.slice("--output=".length);
    else return { ok: false, error: `unknown argument "${a}"` };
  }
  if (output !== "table" && output !== "json") return { ok: false, error: `-o: "${output}" is not table or json` };
  if (servers.length === 0) return { ok: false, error: "--server: at least one observer address is required" };
  for (const s of servers) if (endpointOf(s) === undefined) return { ok: false, error: `--server: "${s}" is not unix:/PATH, /PATH or http://HOST:PORT` };
  return { ok: true, value: { servers, follow, output, filter: parsed.filter } };
}

type Endpoint = { socketPath: string } | { host: string; port: number };

function endpointOf(server: string): Endpoint | undefined {
  if (server.startsWith("unix:")) return server.length > 5 ? { socketPath: server.slice(5) } : undefined;
  if (server.startsWith("/")) return { socketPath: server };
  try {
    const u = new URL(server);
    if (u.protocol !== "http:" || u.hostname === "") return undefined;
    return { host: u.hostname, port: Number(u.port || 80) };
  } catch {
    return undefined;
  }
}

/**
 * Streams the flows one observer returns for `filter`, calling `onFlow` per line; resolves when the
 * server ends the response, rejects with an error naming the server on failure.
 */
export function readFlows(
  server: string,
  filter: FlowFilter,
  follow: boolean,
  onFlow: (f: Flow) => void,
  signal?: AbortSignal,
): Promise<void> {
  const ep = endpointOf(server);
  if (ep === undefined) return Promise.reject(new Error(`${server}: not an observer address`));
  const q = filterToQuery(filter);
  if (follow) q.set("follow", "1");
  const path = `/flows?${q.toString()}`;
  return new Promise((resolve, reject) => {
    const req = http.get({ ...ep, path, ...(signal ? { signal } : {}) }, (res) => {
      res.setEncoding("utf8");
      let body = "";
      if (res.statusCode !== 200) {
        res.on("data", (c: string) => (body += c));
        res.on("end", () => {
          let msg = body.trim();
          try {
            msg = (JSON.parse(body) as { error?: string }).error ?? msg;
          } catch {
            // not JSON: show the body as it is
          }
          reject(new Error(`${server}: ${res.statusCode}: ${msg}`));
        });
        return;
      }
      let partial = "";
      res.on("data", (chunk: string) => {
        partial += chunk;
        let nl: number;
        while ((nl = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          if (line.trim() !== "") onFlow(JSON.parse(line) as Flow);
        }
      });
      res.on("end", () => resolve());
      res.on("error", (e) => (signal?.aborted ? resolve() : reject(new Error(`${server}: ${e.message}`))));
      res.on("close", () => resolve()); // aborted mid-stream: whatever arrived was printed
    });
    req.on("error", (e) => (signal?.aborted ? resolve() : reject(new Error(`${server}: ${e.message}`))));
  });
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

/** Runs observe with explicit output and an abort signal (tests); `run` wires it to the process. */
export async function observe(a: ObserveArgs, out: (s: string) => void, signal?: AbortSignal): Promise<void> {
  if (a.follow) {
    // Replay, then stream, from every server at once; lines are printed as they arrive.
    await Promise.all(a.servers.map((s) => readFlows(s, a.filter, true, (f) => out(formatOne(f, a.output)), signal)));
    return;
  }
  const all: Flow[] = [];
  await Promise.all(a.servers.map((s) => readFlows(s, a.filter, false, (f) => all.push(f), signal)));
  all.sort((x, y) => (x.time < y.time ? -1 : x.time > y.time ? 1 : 0));
  const flows = a.filter.last !== undefined ? all.slice(-a.filter.last) : all;
  out(a.output === "json" ? flows.map((f) => JSON.stringify(f) + "\n").join("") : formatFlowTable(flows));
}

export async function run(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h") || args[0] === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
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
    await observe(parsed.value, (s) => process.stdout.write(s), abort.signal);
    return 0;
  } catch (err) {
    process.stderr.write(`membrane observe: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}
