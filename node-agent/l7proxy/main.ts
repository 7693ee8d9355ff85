// `membrane l7proxy`: the node's L7 proxy as a process of its own (agent restarts do not drop proxied connections), configured by the file the agent writes.
import fs from "node:fs";
import { pino } from "pino";
import { parseFlags } from "../../kube/flags.ts";
import { PinnedRedirects } from "../bpf/redirect.ts";
import { parseProxyConfig, type ProxyConfig } from "./config.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { withoutHeaders } from "./request-flow.ts";
import { FlowSocketWriter } from "./flow-socket.ts";
import { AgentConfigClient, CONFIG_SOCKET_NAME, DEFAULT_L7_PROXY_SOCKET_DIR } from "./external.ts";

const USAGE = `usage: membrane l7proxy (--config FILE [--status-file FILE] | --agent-socket PATH) [--flow-socket PATH] [--bpf-scope SCOPE] [--pin-root DIR] [--log-flows]

  --config FILE     the proxy's configuration (JSON, written by the agent): address, ports and their
                    HTTP rules, limits; re-read when it changes and on SIGHUP (an invalid one is
                    refused and the last good one stays)
  --agent-socket P  instead of --config: a proxy of its own (the chart's membrane-l7proxy DaemonSet, the agent's
                    --external-l7-proxy): connect to the agent's config socket (${DEFAULT_L7_PROXY_SOCKET_DIR}/${CONFIG_SOCKET_NAME}),
                    apply each configuration it sends and report back; while no agent listens (restarting,
                    upgraded) keep serving the last configuration and connect again. Starts listening on
                    nothing until an agent configures it (redirected connections fail meanwhile, never bypass)
  --status-file F   after each configuration is applied, write the ports listened on and the
                    configuration's generation there (JSON, {"pid", "ports": [...], "generation"}): the agent
                    serves a port in the datapath only once it is listed, and writes entries once the
                    generation it wrote is in force
  --flow-socket P   send every request's flow (JSON lines) to the agent listening on this unix socket; reconnects
                    when the agent restarts, drops (and counts) flows while no agent listens
  --bpf-scope NAME  the datapath's pin scope under the pin root, where the redirect records are (default: node)
  --pin-root DIR    bpffs directory of the pins (default /sys/fs/bpf/membrane)
  --log-flows       log every request (method, path, verdict, deciding rule, status, latency) at info`;

const log = pino({ name: "l7proxy" });

function readConfig(file: string): { ok: true; value: ProxyConfig } | { ok: false; error: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    return { ok: false, error: `${file}: ${(err as Error).message}` };
  }
  const r = parseProxyConfig(text);
  return r.ok ? r : { ok: false, error: r.errors.map((e) => `${file}: ${e.path ? `${e.path}: ` : ""}${e.message}`).join("; ") };
}

/** What identifies a version of the file (the agent replaces it by rename: a new inode). */
function fileStamp(file: string): { ino: number; mtimeMs: number; size: number } {
  try {
    const st = fs.statSync(file);
    return { ino: st.ino, mtimeMs: st.mtimeMs, size: st.size };
  } catch {
    return { ino: -1, mtimeMs: -1, size: -1 };
  }
}

/** `membrane l7proxy …`: runs until SIGTERM or SIGINT; the exit code. */
export async function run(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const flags = parseFlags({
    args,
    options: { config: { type: "string" }, "status-file": { type: "string" }, "agent-socket": { type: "string" }, "flow-socket": { type: "string" }, "bpf-scope": { type: "string" }, "pin-root": { type: "string" }, "log-flows": { type: "boolean" } },
  });
  if (!flags.ok) {
    process.stderr.write(`membrane l7proxy: ${flags.error}\n${USAGE}\n`);
    return 2;
  }
  const v = flags.parsed.values;
  if (v["agent-socket"] !== undefined) {
    if (v.config !== undefined || v["status-file"] !== undefined) {
      process.stderr.write(`membrane l7proxy: --agent-socket: not with --config or --status-file (the agent sends the configuration and reads the reports over the socket)\n${USAGE}\n`);
      return 2;
    }
    return runExternal(v["agent-socket"], { bpfScope: v["bpf-scope"] ?? "node", ...(v["pin-root"] ? { pinRoot: v["pin-root"] } : {}), ...(v["flow-socket"] ? { flowSocket: v["flow-socket"] } : {}), logFlows: v["log-flows"] === true });
  }
  if (!v.config) {
    process.stderr.write(`membrane l7proxy: --config or --agent-socket: one is required (the file the agent writes, or the agent's socket)\n${USAGE}\n`);
    return 2;
  }
  const firstStamp = fileStamp(v.config);
  const first = readConfig(v.config);
  if (!first.ok) {
    process.stderr.write(`membrane l7proxy: ${first.error}\n`);
    return 1;
  }
  let redirects: PinnedRedirects;
  try {
    redirects = new PinnedRedirects(v["bpf-scope"] ?? "node", v["pin-root"]);
  } catch (err) {
    process.stderr.write(`membrane l7proxy: the datapath's redirect map: ${(err as Error).message}\n`);
    return 1;
  }
  const { proxy, flowWriter } = newProxy(redirects, v["flow-socket"], v["log-flows"] === true);
  let applied: ProxyConfig = first.value;
  const writeStatus = (): void => {
    const file = v["status-file"];
    if (!file) return;
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ pid: process.pid, ports: proxy.ports(), ...(applied.generation !== undefined ? { generation: applied.generation } : {}) })}\n`);
    fs.renameSync(tmp, file);
  };
  let reloading = proxy.apply(first.value).then(() => {
    writeStatus();
    log.info({ address: first.value.address, address6: first.value.address6, ports: proxy.ports() }, "l7 proxy ready");
  });
  await reloading;
  const reload = (): void => {
    reloading = reloading
      .then(async () => {
        const next = readConfig(v.config!);
        if (!next.ok) return void log.error({ error: next.error }, "configuration refused: the last good one stays");
        await proxy.apply(next.value);
        applied = next.value;
        writeStatus();
        log.info({ ports: proxy.ports() }, "configuration applied");
      })
      .catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, "configuration not applied"));
  };
  // Our own polling against the file as last read (fs.watchFile's first look is asynchronous and
  // misses a change made before it; fs.watch misses a rename over the file): a change is never lost.
  let seen = firstStamp;
  const poll = setInterval(() => {
    const now = fileStamp(v.config!);
    if (now.ino === seen.ino && now.mtimeMs === seen.mtimeMs && now.size === seen.size) return;
    seen = now;
    reload();
  }, 250);
  process.on("SIGHUP", reload);
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      clearInterval(poll);
      flowWriter?.stop();
      void proxy.stop().then(() => {
        redirects.close();
        resolve(0);
      });
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}

/** The proxy and, with a flow socket, the writer of its flows to the agent. */
function newProxy(redirects: PinnedRedirects, flowSocket: string | undefined, logFlows: boolean): { proxy: HttpProxy; flowWriter: FlowSocketWriter | undefined } {
  const flowWriter = flowSocket ? new FlowSocketWriter(flowSocket, log) : undefined;
  flowWriter?.start();
  const proxy = new HttpProxy({
    redirects,
    ...(flowWriter || logFlows
      ? {
          onFlow: (f: HttpFlow) => {
            flowWriter?.write(f);
            if (logFlows) log.info({ flow: withoutHeaders(f) }, "http request");
          },
        }
      : {}),
  });
  return { proxy, flowWriter };
}

/** Until the agent has pinned the redirect map (a proxy pod may start before the node's first agent). */
async function waitForRedirects(scope: string, pinRoot: string | undefined, stopped: () => boolean): Promise<PinnedRedirects | undefined> {
  let said = false;
  while (!stopped()) {
    try {
      return new PinnedRedirects(scope, pinRoot);
    } catch (err) {
      if (!said) log.warn({ scope, error: (err as Error).message }, "the datapath's redirect map is not pinned yet: waiting for the agent");
      said = true;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  return undefined;
}

/** `membrane l7proxy --agent-socket PATH`: configured by the agent over its socket, outliving it; runs until SIGTERM or SIGINT. */
async function runExternal(agentSocket: string, o: { bpfScope: string; pinRoot?: string; flowSocket?: string; logFlows: boolean }): Promise<number> {
  let stopping = false;
  let wake: (() => void) | undefined;
  const stopped = new Promise<void>((r) => (wake = r));
  const onSignal = (): void => {
    stopping = true;
    wake?.();
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  const redirects = await waitForRedirects(o.bpfScope, o.pinRoot, () => stopping);
  if (!redirects) return 0;
  const { proxy, flowWriter } = newProxy(redirects, o.flowSocket, o.logFlows);
  let generation: number | undefined;
  const current = (): { pid: number; ports: number[]; generation?: number } => ({ pid: process.pid, ports: proxy.ports(), ...(generation !== undefined ? { generation } : {}) });
  const client = new AgentConfigClient(
    agentSocket,
    async (config) => {
      await proxy.apply(config);
      generation = config.generation;
      return current();
    },
    current,
    log,
  );
  client.start();
  log.info({ agentSocket, bpfScope: o.bpfScope }, "l7 proxy waiting for the agent's configuration");
  await stopped;
  client.stop();
  flowWriter?.stop();
  await proxy.stop();
  redirects.close();
  return 0;
}
