// A node agent under synthetic load (child process of load.test.ts): real maps, real observer and metrics, its observer input fed at a target rate; reports JSON lines on stdout.
import fs from "node:fs";
import path from "node:path";
import { Session } from "node:inspector/promises";
import { pino } from "pino";
import { Datapath } from "../bpf/datapath.ts";
import { decodeEvent, type VerdictEvent } from "../bpf/layout.ts";
import { NodeAgent, type AgentDatapath } from "../agent.ts";
import { AgentMetrics } from "../metrics.ts";
import { LOAD_PATTERNS, pacedRun } from "./loadgen.ts";

export interface LoadAgentConfig {
  readonly node: string;
  readonly operator: string;
  readonly pkiDir: string;
  readonly scope: string;
  readonly dir: string;
  readonly rate: number;
  readonly durationMs: number;
  readonly capacity: number;
  /** Wait for a line on stdin after "ready" before generating (a reader attaches first: the relay benchmark). */
  readonly startOnStdin?: boolean;
  /** Write a V8 CPU profile of the generating phase here (the inspector's, started after the BPF load: `--cpu-prof`'s SIGPROF interrupts the verifier with EAGAIN). */
  readonly profileDir?: string;
}

function emit(o: unknown): void {
  process.stdout.write(JSON.stringify(o) + "\n");
}

function memory(): { rss: number; heapUsed: number } {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

async function main(cfg: LoadAgentConfig): Promise<void> {
  const log = pino({ level: "warn" }, pino.destination({ fd: 2, sync: true }));
  const dp = Datapath.load(cfg.scope);
  let handler: ((e: VerdictEvent) => void) | undefined;
  // The real maps; only the event source is replaced: the generator stands in for the kernel's ring.
  const datapath: AgentDatapath = {
    object: dp.object,
    setSubjectPolicy: (p, e) => dp.setSubjectPolicy(p, e),
    addSubjectEntries: (p, added) => dp.addSubjectEntries(p, added),
    removeSubjectEntries: (p, removed) => dp.removeSubjectEntries(p, removed),
    setIpcache: (e) => dp.setIpcache(e),
    setIpcacheMany: (es) => dp.setIpcacheMany(es),
    deleteIpcache: (c) => dp.deleteIpcache(c),
    pruneIpcache: (keep) => dp.pruneIpcache(keep),
    setIPBlock: (e) => dp.setIPBlock(e),
    deleteIPBlock: (c) => dp.deleteIPBlock(c),
    pruneIPBlocks: (keep) => dp.pruneIPBlocks(keep),
    setEndpoint: (e) => dp.setEndpoint(e),
    deleteEndpoint: (ip) => dp.deleteEndpoint(ip),
    attachEndpoint: (i, n) => dp.attachEndpoint(i, n),
    detachEndpoint: (i, n) => dp.detachEndpoint(i, n),
    failedSubjects: () => dp.failedSubjects(),
    onEvents: (h) => {
      handler = h;
      return () => 0;
    },
  };
  const read = (name: string): Buffer => fs.readFileSync(path.join(cfg.pkiDir, name));
  const agent = new NodeAgent({
    nodeName: cfg.node,
    operator: cfg.operator,
    tls: { ca: read("ca.crt"), cert: read(`${cfg.node}.crt`), key: read(`${cfg.node}.key`) },
    datapath,
    cniSocket: path.join(cfg.dir, "agent.sock"),
    log,
    backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
    hostLinks: { list: () => [], remove: () => undefined }, // this process owns no pod links
    observer: { hubble: { socketPath: path.join(cfg.dir, "hubble.sock") }, buffer: { capacity: cfg.capacity, forwardedSampleMs: 1000 } },
  });
  const metrics = new AgentMetrics({ agent, datapath: dp, log });
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await metrics.stop();
    await agent.stop();
    dp.close();
    dp.unpin();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());

  await agent.start();
  const metricsPort = await metrics.start("127.0.0.1:0");
  if (!handler) throw new Error("the agent did not subscribe to verdict events");
  const deadline = Date.now() + 20_000;
  while (agent.status().version === undefined) {
    if (Date.now() > deadline) throw new Error("no state applied within 20 s");
    await new Promise((r) => setTimeout(r, 20));
  }
  emit({ ready: { observer: `unix:${path.join(cfg.dir, "hubble.sock")}`, metrics: `http://127.0.0.1:${metricsPort}` } });

  if (cfg.startOnStdin) await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
  const profiler = cfg.profileDir !== undefined ? new Session() : undefined;
  if (profiler) {
    profiler.connect();
    await profiler.post("Profiler.enable");
    await profiler.post("Profiler.start");
  }
  const before = memory();
  const samples: { t: number; rss: number; heapUsed: number }[] = [];
  let nextSample = 1000;
  const h = handler;
  const result = await pacedRun({
    rate: cfg.rate,
    durationMs: cfg.durationMs,
    patterns: LOAD_PATTERNS,
    sink: (rec) => h(decodeEvent(rec)),
    onTick: (t) => {
      if (t < nextSample) return;
      nextSample += 1000;
      samples.push({ t: Math.round(t), ...memory() });
    },
  });
  if (profiler) {
    const { profile } = await profiler.post("Profiler.stop");
    fs.writeFileSync(path.join(cfg.profileDir!, `loadagent-${process.pid}.cpuprofile`), JSON.stringify(profile));
    profiler.disconnect();
  }
  const buffer = agent.observer!.buffer;
  emit({ done: { ...result, memory: { before, samples, after: memory() }, counters: { ...buffer.counters(), kept: buffer.length, capacity: buffer.capacity } } });
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as LoadAgentConfig;
main(cfg).catch((err: unknown) => {
  process.stderr.write(`loadagent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
