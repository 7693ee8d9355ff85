// Load: an agent whose observer input gets ~50,000 synthetic datapath events/s for 10 s keeps its memory bounded and loses no drop from its counters.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { DistributionServer } from "../../controllers/distribution/server.ts";
import { makePki, type TestPki } from "../../kube/testing/pki.ts";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { DROP_REASONS, type DropReasonCode } from "../bpf/layout.ts";
import type { LoadAgentConfig } from "./loadagent.ts";
import { loadState, type PacedRunResult } from "./loadgen.ts";
import type { FlowCounters } from "./buffer.ts";
import { HubbleClient } from "../../flowapi/hubble/client.ts";
import type { ServerStatusResponse } from "../../flowapi/hubble/types.ts";

const LOAD_AGENT = fileURLToPath(new URL("./loadagent.ts", import.meta.url));
const TARGET_RATE = 50_000;
const DURATION_MS = 10_000;
const CAPACITY = 4096;
const MiB = 1024 * 1024;
/**
 * What the observer may hold once full: the ring (CAPACITY flows) and the sampler's table (65,536
 * connections), well under this; anything that grows with the number of events breaks it within the run.
 */
const HEAP_BOUND = 64 * MiB;
/** Garbage that survives a forced GC, allocator fragmentation, JIT: growth allowed after the first seconds. */
const PLATEAU_SLACK = 16 * MiB;

interface Done extends PacedRunResult {
  memory: { before: { rss: number; heapUsed: number }; samples: { t: number; rss: number; heapUsed: number }[]; after: { rss: number; heapUsed: number } };
  /** The ring's counters right after the run. */
  counters: FlowCounters & { kept: number; capacity: number };
}

function get(target: { host: string; port: number }, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ ...target, path: p }, (res) => {
        let s = "";
        res.on("data", (c: Buffer) => (s += c.toString()));
        res.on("end", () => (res.statusCode === 200 ? resolve(s) : reject(new Error(`${p}: ${res.statusCode} ${s}`))));
      })
      .on("error", reject);
  });
}

/** Sum of the samples of one metric whose labels include `match`. */
function metricSum(text: string, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    if (!Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

describe("observer under load", () => {
  const tag = `ld${process.pid % 100000}`;
  const node = `${tag}-node`;
  const scope = `test-${tag}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-load-"));
  let pki: TestPki | undefined;
  let server: DistributionServer | undefined;
  let child: ChildProcess | undefined;
  let stderr = "";
  const lines: Record<string, unknown>[] = [];

  const next = async (key: string, timeoutMs: number): Promise<unknown> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = lines.find((l) => key in l);
      if (hit) return hit[key];
      if (child?.exitCode !== null) assert.fail(`the load agent exited (${child?.exitCode}) before "${key}": ${stderr}`);
      if (Date.now() > end) assert.fail(`no "${key}" from the load agent within ${timeoutMs} ms: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    pki = await makePki([node]);
    server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, pino({ level: "silent" }));
    const port = await server.listen(0);
    server.publish(node, loadState());
    const cfg: LoadAgentConfig = { node, operator: `127.0.0.1:${port}`, pkiDir: pki.dir, scope, dir, rate: TARGET_RATE, durationMs: DURATION_MS, capacity: CAPACITY };
    child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", LOAD_AGENT, JSON.stringify(cfg)], { stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: child.stdout! }).on("line", (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child!.once("exit", () => r()));
      child.kill("SIGTERM"); // the agent stops and unpins its maps
      const timer = new Promise<void>((r) => setTimeout(r, 5000).unref());
      await Promise.race([exited, timer]);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    await server?.close();
    pki?.remove();
    fs.rmSync(path.join(BPFFS_ROOT, scope), { recursive: true, force: true }); // if the child could not unpin
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("at ~50,000 events/s for 10 s: every drop is counted (API and /metrics), and the heap stays within the buffer's bound", async () => {
    const ready = (await next("ready", 60_000)) as { observer: string; metrics: string };
    const hubble = new HubbleClient(ready.observer);
    const metricsUrl = new URL(ready.metrics);
    const metricsTarget = { host: metricsUrl.hostname, port: Number(metricsUrl.port) };

    // A following client with a filter nothing matches: the streaming path runs for every flow.
    const follow = hubble.getFlows({ follow: true, whitelist: [{ source_port: ["1"] }] });
    follow.on("error", () => undefined);
    const during = await new Promise<ServerStatusResponse | string>((r) => setTimeout(() => void hubble.serverStatus().then(r, (e: Error) => r(e.message)), DURATION_MS / 2));
    const done = (await next("done", DURATION_MS + 60_000)) as Done;
    follow.cancel();
    hubble.close();

    const m = done.memory;
    const last = m.samples.at(-1) ?? m.after;
    const plateau = m.samples.find((s) => s.t >= 3000) ?? m.samples[0]!;
    console.log(
      `# target ${TARGET_RATE}/s, achieved ${done.rate}/s: ${done.generated} events (${done.drops} drops) in ${Math.round(done.elapsedMs)} ms; ` +
        `heap ${(m.before.heapUsed / MiB).toFixed(1)} → ${(plateau.heapUsed / MiB).toFixed(1)} (3 s) → ${(m.after.heapUsed / MiB).toFixed(1)} MiB; ` +
        `rss ${(m.before.rss / MiB).toFixed(1)} → ${(plateau.rss / MiB).toFixed(1)} → ${(m.after.rss / MiB).toFixed(1)} MiB`,
    );
    // The rate is a target (the machine may be shared); the bounds below need the ring to have wrapped many times.
    assert.ok(done.generated > 5 * CAPACITY, `the generator sent only ${done.generated} events`);
    assert.ok(typeof during !== "string" && Number(during.seen_flows) > 0, `the observer API answered while under load: ${JSON.stringify(during)}`);

    const counters = done.counters;
    assert.equal(counters.dropped, done.drops, "every generated drop is counted");
    assert.equal(counters.forwarded + counters.dropped, done.generated, "every generated event is counted");
    const wantByReason = Object.fromEntries(Object.entries(done.dropsByCode).map(([code, n]) => [DROP_REASONS[Number(code) as DropReasonCode], n]));
    assert.deepEqual(counters.dropsByReason, wantByReason);
    assert.equal(counters.kept, CAPACITY, "the ring is full");
    assert.equal(counters.evicted, counters.dropped + counters.forwarded - counters.sampledOut - CAPACITY, "every kept flow beyond the capacity evicted an older one");

    const text = await get(metricsTarget, "/metrics");
    assert.equal(metricSum(text, "membrane_agent_flows_total", { verdict: "DROPPED" }), done.drops);
    assert.equal(metricSum(text, "membrane_agent_flows_total", { verdict: "FORWARDED" }), done.generated - done.drops);
    for (const [reason, n] of Object.entries(wantByReason)) assert.equal(metricSum(text, "membrane_agent_dropped_flows_total", { reason: reason! }), n, `dropped flows by reason ${reason}`);
    assert.equal(metricSum(text, "membrane_agent_observer_flows_kept"), CAPACITY);
    assert.equal(metricSum(text, "membrane_agent_observer_flows_not_kept_total", { why: "evicted" }), counters.evicted);
    // Judged namespace: the local pods' (ingress: destination, egress: source), all in "shop".
    assert.equal(metricSum(text, "membrane_agent_dropped_flows_total", { namespace: "shop" }), done.drops);

    assert.ok(m.after.heapUsed - m.before.heapUsed < HEAP_BOUND, `heap grew ${((m.after.heapUsed - m.before.heapUsed) / MiB).toFixed(1)} MiB under load`);
    assert.ok(last.heapUsed - plateau.heapUsed < PLATEAU_SLACK, `heap kept growing after 3 s: ${(plateau.heapUsed / MiB).toFixed(1)} → ${(last.heapUsed / MiB).toFixed(1)} MiB`);
    assert.ok(last.rss - plateau.rss < 2 * PLATEAU_SLACK, `rss kept growing after 3 s: ${(plateau.rss / MiB).toFixed(1)} → ${(last.rss / MiB).toFixed(1)} MiB`);
  });
});
