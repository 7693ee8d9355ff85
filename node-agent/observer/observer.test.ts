// The observer's reading of the datapath's lost-event count: its growth reaches the Hubble export and the dynamic flow logs as a LostEvent.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { Observer, monotonicWallClock } from "./observer.ts";

test("the growth of the datapath's lost-event count is written to the Hubble export and each flow log without include filters", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observer-lost-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const flowLogs = path.join(dir, "flowlogs.yaml");
  fs.writeFileSync(
    flowLogs,
    ["flowLogs:", `  - name: all`, `    filePath: ${path.join(dir, "all.log")}`, `  - name: drops`, `    filePath: ${path.join(dir, "drops.log")}`, "    includeFilters: [{verdict: [DROPPED]}]"].join("\n"),
  );
  let kernelCount = 40n; // losses before the start are not told
  const observer = new Observer({
    lookups: { node: "node-a", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: monotonicWallClock() },
    buffer: { capacity: 10 },
    hubble: { socketPath: path.join(dir, "hubble.sock") },
    hubbleExport: { file: { path: path.join(dir, "export.log"), maxBytes: 1 << 20, keep: 1 } },
    flowLogs: { path: flowLogs },
    lostEvents: () => [0n, kernelCount], // as counted on CPU 1
    lostEventsCheckMs: 50,
    log: pino({ level: "silent" }),
  });
  await observer.start();
  t.after(() => observer.stop());
  kernelCount += 3n;
  const lostIn = (file: string): { source: string; num_events_lost: string }[] =>
    fs.existsSync(file)
      ? fs.readFileSync(file, "utf8").trimEnd().split("\n").filter((l) => l !== "").map((l) => (JSON.parse(l) as { lost_events: { source: string; num_events_lost: string } }).lost_events)
      : [];
  const end = Date.now() + 10_000;
  while (lostIn(path.join(dir, "export.log")).length === 0) {
    if (Date.now() > end) assert.fail("no LostEvent in the export");
    await new Promise((r) => setTimeout(r, 100)); // the exporters flush every second
  }
  assert.deepEqual(lostIn(path.join(dir, "export.log")).map((l) => [l.source, l.num_events_lost]), [["PERF_EVENT_RING_BUFFER", "3"]]);
  await observer.stop();
  assert.deepEqual(lostIn(path.join(dir, "all.log")).map((l) => [l.source, l.num_events_lost]), [["PERF_EVENT_RING_BUFFER", "3"]]);
  assert.deepEqual(lostIn(path.join(dir, "drops.log")), [], "a log with include filters leaves it out");
});
