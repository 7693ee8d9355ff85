// `membrane l7proxy`: the node's L7 proxy as a process of its own (agent restarts do not drop proxied connections), configured by the file the agent writes.
import fs from "node:fs";
import { pino } from "pino";
import { parseFlags } from "../../kube/flags.ts";
import { PinnedRedirects } from "../bpf/redirect.ts";
import { parseProxyConfig, type ProxyConfig } from "./config.ts";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { withoutHeaders } from "./request-flow.ts";
import { FlowSocketWriter } from "./flow-socket.ts";

const USAGE = `usage: membrane l7proxy --config FILE [--status-file FILE] [--flow-socket PATH] [--bpf-scope SCOPE] [--pin-root DIR] [--log-flows]

  --config FILE     the proxy's configuration (JSON, written by the agent): address, ports and their
                    HTTP rules, limits; re-read when it changes and on SIGHUP (an invalid one is
                    refused and the last good one stays)
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
    options: { config: { type: "string" }, "status-file": { type: "string" }, "flow-socket": { type: "string" }, "bpf-scope": { type: "string" }, "pin-root": { type: "string" }, "log-flows": { type: "boolean" } },
  });
  if (!flags.ok) {
    process.stderr.write(`membrane l7proxy: ${flags.error}\n${USAGE}\n`);
    return 2;
  }
  const v = flags.parsed.values;
  if (!v.config) {
    process.stderr.write(`membrane l7proxy: --config: required (the file the agent writes)\n${USAGE}\n`);
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
  const flowWriter = v["flow-socket"] ? new FlowSocketWriter(v["flow-socket"], log) : undefined;
  flowWriter?.start();
  const logFlows = v["log-flows"] === true;
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
    log.info({ address: first.value.address, ports: proxy.ports() }, "l7 proxy ready");
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
