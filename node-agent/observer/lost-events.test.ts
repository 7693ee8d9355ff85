// A full datapath ring buffer, told to a real `hubble observe -f` as Hubble's LostEvent (PERF_EVENT_RING_BUFFER) with
// the kernel's count of the records that did not fit and the CPU they were lost on. Root (bpffs); run under the kernel lock.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { PROTO_NUMBER } from "../../core/model.ts";
import { Datapath, PROGRAMS } from "../bpf/datapath.ts";
import { testRun } from "../bpf/loader.ts";
import { frame } from "../bpf/frames.ts";
import { LAYOUT } from "../bpf/layout.ts";
import { Observer, monotonicWallClock } from "./observer.ts";
import { hubbleBinary, jsonFlows, jsonLostEvents } from "../../localcluster/hubble/cli.ts";

const SCOPE = `test-lost-${process.pid}`;
const LO = 1;
const POD = { ip: "10.0.8.1", identity: 1000 };
const RING_BYTES = 1 << 20; // bpf/lib/events.h
const RECORD_BYTES = LAYOUT.event.size + 8; // + the ring's record header

let dp: Datapath;
let dir: string;

before(() => {
  dp = Datapath.load(SCOPE);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  // Egress enforced with nothing allowed: every packet is a reported drop.
  dp.setSubjectPolicy({ subject: POD.identity, ingressEnforced: true, egressEnforced: true, entries: [] }, [{ ip: POD.ip, ifindex: LO }]);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-lost-"));
});
after(() => {
  dp?.close();
  dp?.unpin();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("records that did not fit the full ring reach hubble observe as EVENTS LOST (PERF_EVENT_RING_BUFFER) with the kernel's count", async (t) => {
  const observer = new Observer({
    lookups: { node: "node-a", identityLabels: () => undefined, endpointByIp: () => undefined, ruleOrigin: () => undefined, wallClock: monotonicWallClock() },
    buffer: { capacity: 100_000 },
    hubble: { socketPath: path.join(dir, "hubble.sock") },
    lostEvents: () => dp.lostEventsPerCpu(),
    lostEventsCheckMs: 100,
    log: pino({ level: "silent" }),
  });
  await observer.start();
  t.after(() => observer.stop());
  const drain = dp.onEvents(observer.handle);
  const child = execFile(hubbleBinary(), ["observe", "--server", `unix://${path.join(dir, "hubble.sock")}`, "-f", "-o", "json"], { maxBuffer: 256 * 1024 * 1024 });
  t.after(() => child.kill());
  let out = "";
  child.stdout!.on("data", (c: string) => (out += c));
  const send = (dport: number, count: number): void => {
    testRun(dp.programFd(PROGRAMS.fromContainer), frame({ src: POD.ip, dst: "10.0.8.2", proto: PROTO_NUMBER.TCP, sport: 40000, dport }), { ifindex: LO, repeat: count });
  };
  // The stream is open once a drop's flow arrives.
  await waitFor(() => {
    if (!jsonFlows(out).some((f) => f.l4?.TCP?.destination_port === 1000)) send(1000, 1);
    drain();
    return jsonFlows(out).some((f) => f.l4?.TCP?.destination_port === 1000);
  });
  // More records than the ring holds, in one synchronous run: the reader cannot drain in between.
  const lostBefore = dp.lostEventsPerCpu();
  const count = Math.ceil((1.5 * RING_BYTES) / RECORD_BYTES);
  send(2000, count);
  const grew = dp.lostEventsPerCpu().map((n, cpu) => [cpu, Number(n - lostBefore[cpu]!)] as const).filter(([, n]) => n > 0);
  assert.equal(grew.length, 1, "one synchronous run: the records were lost on the CPU it ran on");
  const [cpu, lostInKernel] = grew[0]!;
  assert.ok(lostInKernel > 0, "some records did not fit");
  const read = drain();
  await waitFor(() => jsonLostEvents(out).length > 0, 10_000);
  const [lost] = jsonLostEvents(out);
  assert.equal(lost!.source, "PERF_EVENT_RING_BUFFER");
  assert.equal(Number(lost!.num_events_lost), lostInKernel, "the kernel's count of records that found the ring full");
  // protojson writes the Int32Value wrapper as a plain number.
  const told = lost!.cpu as unknown as number | { value: number } | undefined;
  assert.equal(typeof told === "number" ? told : told?.value, cpu, "the CPU whose count grew");
  await waitFor(() => jsonFlows(out).filter((f) => f.l4?.TCP?.destination_port === 2000).length === read, 10_000);
  assert.equal(read + lostInKernel, count, "every packet's record was read or told lost");
});

async function waitFor(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
