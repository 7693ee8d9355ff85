// bench/runtime: what process visibility costs the processes of a pod, side by side in one run: short processes
// spawned in a network namespace (a pod no policy selects) with nothing loaded vs with the exec/exit sensor on
// and its events exported; rounds interleaved, order rotated, medians. The policy parts of issue #18's bench
// (file opens, selected pods) need TracingPolicy enforcement, which does not exist yet: null, and said so.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Registry } from "prom-client";

process.env.LOG_LEVEL ??= "warn";
const { NetnsFixture } = await import("../../node-agent/bpf/netns.ts");
const { ProcessVisibility } = await import("../../node-agent/runtime/visibility.ts");

const run = promisify(execFile);
const EXECS = Number(process.env.BENCH_EXECS ?? 2000); // per round and variant
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const NETNS = `bench-runtime-${process.pid}`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Seconds to run EXECS short processes (/bin/true) one after the other inside the namespace. */
async function spawnLoop(): Promise<number> {
  const start = process.hrtime.bigint();
  await run("ip", ["netns", "exec", NETNS, "/bin/bash", "-c", `for ((i=0;i<${EXECS};i++)); do /bin/true; done`]);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const fixture = new NetnsFixture();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bench-runtime-"));
const off: number[] = [];
const on: number[] = [];
const eventsPerSecond: number[] = [];
let lost = 0n;
let events = 0;
try {
  fixture.addNetns(NETNS);
  await spawnLoop(); // warm-up: page cache, bash
  for (let r = 0; r < ROUNDS; r++) {
    for (const variant of r % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const)) {
      if (variant === "off") {
        off.push(await spawnLoop());
        continue;
      }
      let seen = 0;
      const v = new ProcessVisibility({ nodeName: "bench", exportFile: path.join(dir, `events-${r}.log`), registry: new Registry(), scope: `bench-runtime-${process.pid}`, onEvent: () => seen++ });
      v.start();
      try {
        const t = await spawnLoop();
        v.drain();
        on.push(t);
        eventsPerSecond.push(seen / t);
        events += seen;
        // Every /bin/true is an exec and an exit (plus bash's own): fewer means events were lost.
        if (seen < 2 * EXECS) throw new Error(`round ${r}: ${seen} events for ${EXECS} processes`);
      } finally {
        v.drain();
        lost += v.lost();
        v.stop();
      }
    }
  }
} finally {
  fixture.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}

const execOff = EXECS / median(off);
const execOn = EXECS / median(on);
const ratios = off.map((t, i) => t / on[i]!);
console.log(
  JSON.stringify({
    bench: "runtime",
    exec_ratio: Number(median(ratios).toFixed(3)),
    open_ratio: null,
    selected_exec_ratio: null,
    selected_open_ratio: null,
    not_measured: "open_ratio and the selected_* ratios need TracingPolicy enforcement (fanotify permission events, selected pods), which is not built",
    events_per_s: Math.round(median(eventsPerSecond)),
    execs_per_s_off: Math.round(execOff),
    execs_per_s_on: Math.round(execOn),
    execs_per_round: EXECS,
    rounds: ROUNDS,
    events,
    lost: Number(lost),
    load_avg_1m: Number(os.loadavg()[0]!.toFixed(2)),
  }),
);
