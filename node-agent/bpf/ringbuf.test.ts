// The verdict ring read in-process: every record across many wraps of the ring, and a full ring loses records but never a count.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { PROTO_NUMBER } from "../../core/model.ts";
import { Datapath, PROGRAMS } from "./datapath.ts";
import { testRun } from "./loader.ts";
import { frame } from "./frames.ts";
import { DROP_REASON_CODES, LAYOUT, type DropReasonCode, type VerdictEvent } from "./layout.ts";

const SCOPE = `test-ringbuf-${process.pid}`;
const LO = 1;
const POD = { ip: "10.0.7.1", identity: 1000 };
const RING_BYTES = 1 << 20; // bpf/lib/events.h
const RECORD_BYTES = LAYOUT.event.size + 8; // + the ring's record header
const DEFAULT_DENY = DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY as DropReasonCode;

let dp: Datapath;
let events: VerdictEvent[] = [];
let drain: () => number;

before(() => {
  dp = Datapath.load(SCOPE);
  drain = dp.onEvents((e) => events.push(e));
});
after(() => {
  dp?.close();
  dp?.unpin();
});
beforeEach(() => {
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  // Egress enforced with nothing allowed: every packet is a reported drop.
  dp.setSubjectPolicy({ subject: POD.identity, ingressEnforced: true, egressEnforced: true, entries: [] }, [{ ip: POD.ip, ifindex: LO }]);
  drain();
  events = [];
});

/** `count` dropped packets to dport, each one event. */
function dropped(dport: number, count: number): void {
  const syn = frame({ src: POD.ip, dst: "10.0.7.2", proto: PROTO_NUMBER.TCP, sport: 40000, dport });
  testRun(dp.programFd(PROGRAMS.fromContainer), syn, { ifindex: LO, repeat: count });
}

test("every record is read, whole and in order, across many wraps of the ring", () => {
  const perBatch = 5000; // < a ring's worth, so nothing is lost
  const batches = Math.ceil((4 * RING_BYTES) / (perBatch * RECORD_BYTES)); // the ring wraps four times
  for (let b = 0; b < batches; b++) {
    dropped(1000 + b, perBatch);
    assert.equal(drain(), perBatch, `batch ${b}`);
  }
  assert.equal(events.length, batches * perBatch);
  for (let b = 0; b < batches; b++) {
    const batch = events.slice(b * perBatch, (b + 1) * perBatch);
    assert.ok(batch.every((e) => e.dport === 1000 + b && e.src === POD.ip && e.dst === "10.0.7.2" && e.reason === "policy denied (default deny)"), `batch ${b} intact`);
  }
  assert.equal(dp.dropCounters().lostEvents, 0n);
});

test("a ring that fills up loses records, never a count: read + lost = dropped", () => {
  const before = dp.dropCount(DEFAULT_DENY);
  const lostBefore = dp.dropCounters().lostEvents;
  const count = Math.ceil((1.5 * RING_BYTES) / RECORD_BYTES); // more than the ring holds, unread
  dropped(2000, count);
  const read = drain();
  const lost = Number(dp.dropCounters().lostEvents - lostBefore);
  assert.ok(lost > 0, "some records did not fit");
  assert.equal(read + lost, count);
  assert.equal(Number(dp.dropCount(DEFAULT_DENY) - before), count, "every drop counted");
  // The ring is usable again once read.
  dropped(2001, 10);
  assert.equal(drain(), 10);
});
