// Hubble's exporter format: the file is read back by the real `hubble observe --input-file`; allow/deny lists, field mask, rotation, flags.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { HubbleExporter, parseFilterList } from "./hubble-export.ts";
import { LostEvents } from "../../flowapi/hubble/lost.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { hubbleBinary } from "../../localcluster/hubble/cli.ts";
import { parseAgentFlags } from "../flags.ts";

function tmp(t: test.TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-hubble-export-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("hubble observe --input-file reads the export, with its filters applied", async (t) => {
  const file = path.join(tmp(t), "hubble.jsonl");
  const x = new HubbleExporter({ file: { path: file, maxBytes: 1 << 20, keep: 1 }, denyList: [{ verdict: ["FORWARDED"] }] });
  x.write(flow({ time: "2026-12-03T10:00:00.000Z" }));
  x.write(dropFlow({ time: "2026-12-03T10:00:01.250Z", source: endpoint({ pod: "xwing" }) }));
  x.close();
  const lines = fs.readFileSync(file, "utf8").trimEnd().split("\n");
  assert.equal(lines.length, 1, "the forwarded flow is on the deny list");
  const rec = JSON.parse(lines[0]!) as { flow: { time: string; verdict: string; is_reply: boolean; drop_reason_desc: string }; node_name: string; time: string };
  assert.deepEqual([rec.flow.time, rec.time, rec.node_name, rec.flow.verdict, rec.flow.is_reply, rec.flow.drop_reason_desc], ["2026-12-03T10:00:01.250000000Z", "2026-12-03T10:00:01.250000000Z", "node-a", "DROPPED", false, "POLICY_DENIED"]);
  const r = await promisify(execFile)(hubbleBinary(), ["observe", "--input-file", file, "--from-pod", "default/xwing", "-o", "jsonpb"]);
  const back = JSON.parse(r.stdout.trim()) as { flow: { source: { pod_name: string }; drop_reason_desc: string; ingress_denied_by: { kind: string }[] } };
  assert.deepEqual([back.flow.source.pod_name, back.flow.drop_reason_desc, back.flow.ingress_denied_by[0]!.kind], ["xwing", "POLICY_DENIED", "DefaultDeny"]);
});

test("a LostEvent is exported as Cilium's exporter writes it: hubble observe --input-file prints EVENTS LOST; with an allow list it is left out", async (t) => {
  const dir = tmp(t);
  const told = new LostEvents();
  told.add("PERF_EVENT_RING_BUFFER", 7, Date.parse("2026-12-03T10:00:01.000Z"), Date.parse("2026-12-03T10:00:02.000Z"));
  const [lost] = told.take("node-a");
  const file = path.join(dir, "all.jsonl");
  const x = new HubbleExporter({ file: { path: file, maxBytes: 1 << 20, keep: 1 }, denyList: [{ verdict: ["FORWARDED"] }] });
  x.write(dropFlow({ time: "2026-12-03T10:00:00.000Z" }));
  x.writeLost(lost!);
  x.close();
  const r = await promisify(execFile)(hubbleBinary(), ["observe", "--input-file", file, "-o", "compact"]);
  assert.match(r.stdout, /EVENTS LOST: PERF_EVENT_RING_BUFFER CPU\(0\) 7 \(first: .*, last: .*\)/);
  const json = await promisify(execFile)(hubbleBinary(), ["observe", "--input-file", file, "-o", "jsonpb"]);
  const lines = json.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as { lost_events?: { num_events_lost: string }; node_name: string });
  assert.deepEqual(lines.map((l) => [l.node_name, l.lost_events?.num_events_lost]), [["node-a", undefined], ["node-a", "7"]]);
  const allowed = path.join(dir, "allowed.jsonl");
  const y = new HubbleExporter({ file: { path: allowed, maxBytes: 1 << 20, keep: 1 }, allowList: [{ verdict: ["DROPPED"] }] });
  y.writeLost(lost!);
  y.close();
  assert.equal(fs.existsSync(allowed) ? fs.readFileSync(allowed, "utf8") : "", "");
});

test("aggregation (Cilium's fieldAggregate): flows agreeing on the fields are one line with counts per direction, read back by hubble observe --input-file", async (t) => {
  const file = path.join(tmp(t), "agg.jsonl");
  const x = new HubbleExporter({ file: { path: file, maxBytes: 1 << 20, keep: 1 }, aggregate: { fields: ["source.pod_name", "destination.pod_name", "verdict"], intervalMs: 60_000 } });
  x.write(dropFlow({ time: "2026-12-03T10:00:00.000Z", direction: "ingress" }));
  x.write(dropFlow({ time: "2026-12-03T10:00:01.000Z", direction: "ingress", source: endpoint({ port: 40001 }) }));
  x.write(dropFlow({ time: "2026-12-03T10:00:02.000Z", direction: "egress" }));
  x.write(flow({ time: "2026-12-03T10:00:03.000Z" }));
  x.close(); // what is aggregated so far is written on close, as Cilium flushes on stop
  const r = await promisify(execFile)(hubbleBinary(), ["observe", "--input-file", file, "-o", "jsonpb"]);
  const lines = r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as { flow: { verdict: string; time: string; source: { pod_name: string; port?: number }; aggregate: Record<string, number> } });
  assert.deepEqual(
    lines.map((l) => [l.flow.verdict, l.flow.source.pod_name, l.flow.time, l.flow.aggregate]),
    [
      ["DROPPED", "client-1", "2026-12-03T10:00:00Z", { ingress_flow_count: 2, egress_flow_count: 1 }],
      ["FORWARDED", "client-1", "2026-12-03T10:00:03Z", { ingress_flow_count: 1 }],
    ],
  );
});

test("allow list, field mask and rotation", (t) => {
  const dir = tmp(t);
  const file = path.join(dir, "h.jsonl");
  const x = new HubbleExporter({ file: { path: file, maxBytes: 300, keep: 2 }, allowList: [{ source_pod: ["default/client"] }], fieldMask: ["time", "verdict", "source.pod_name"] });
  for (let i = 0; i < 10; i++) x.write(dropFlow({ time: `2026-12-03T10:00:0${i}.000Z` }));
  x.write(dropFlow({ source: endpoint({ pod: "other" }) }));
  x.close();
  const files = fs.readdirSync(dir).sort();
  assert.deepEqual(files, ["h.jsonl", "h.jsonl.1", "h.jsonl.2"]);
  const all = files.flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").trimEnd().split("\n")).map((l) => JSON.parse(l) as { flow: Record<string, unknown> });
  for (const r of all) assert.deepEqual(Object.keys(r.flow).sort(), ["source", "time", "verdict"]);
  assert.ok(all.every((r) => (r.flow.source as { pod_name: string }).pod_name === "client-1"));
});

test("the agent's export flags: Cilium's names, filters checked at the edge naming the flag", () => {
  const base = ["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
  const ok = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-allowlist", '{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}', "--hubble-export-fieldmask", "time,verdict"]);
  assert.ok(ok.ok);
  assert.deepEqual(ok.flags.hubbleExport?.allowList, [{ verdict: ["DROPPED"] }, { source_pod: ["kube-system/"] }]);
  assert.deepEqual(ok.flags.hubbleExport?.fieldMask, ["time", "verdict"]);
  const bad = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-denylist", '{"source_service":["default/web"]}']);
  assert.equal(bad.ok ? "" : bad.error, "--hubble-export-denylist: [0].source_service: not supported: flows carry no service");
  const alone = parseAgentFlags([...base, "--hubble-export-fieldmask", "time"]);
  assert.equal(alone.ok ? "" : alone.error, "--hubble-export-fieldmask: only with --hubble-export-file-path");
  assert.equal(parseFilterList("x", "{nope").ok, false);
  const agg = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-fieldaggregate", "source.namespace,verdict", "--hubble-export-aggregation-interval", "1m"]);
  assert.deepEqual(agg.ok ? agg.flags.hubbleExport?.aggregate : agg.error, { fields: ["source.namespace", "verdict"], intervalMs: 60_000 });
  const noInterval = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-fieldaggregate", "verdict"]);
  assert.equal(noInterval.ok ? "" : noInterval.error, "--hubble-export-aggregation-interval: required (more than 0s) with --hubble-export-fieldaggregate");
  const badInterval = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-fieldaggregate", "verdict", "--hubble-export-aggregation-interval", "soon"]);
  assert.match(badInterval.ok ? "" : badInterval.error, /^--hubble-export-aggregation-interval: not a duration/);
  const zero = parseAgentFlags([...base, "--hubble-export-file-path", "/tmp/x", "--hubble-export-aggregation-interval", "0s"]);
  assert.equal(zero.ok ? zero.flags.hubbleExport?.aggregate : zero.error, undefined, "0s alone: no aggregation (Cilium's default)");
});
