// Hubble's dynamic exporter: Cilium's flow-log file format read at the edge with named errors, and the logs kept in step with the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { DynamicFlowLogs, parseFlowLogsConfig } from "./flowlogs.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";

test("Cilium's flow-log file parses; every mistake is refused naming its field", () => {
  const ok = parseFlowLogsConfig(`
flowLogs:
- name: "test002"
  filePath: "/var/log/network/flow-log/pa/test002.log"
  fieldMask: ["source.namespace", "source.pod_name", "destination.namespace", "destination.pod_name", "verdict"]
  fieldAggregate: []
  aggregationInterval: "0s"
  includeFilters:
  - source_pod: ["default/"]
    source_label: ["networking.example.com/flow-logs=enabled"]
    event_type:
    - type: 1
  - destination_pod: ["frontend/nginx-975996d4c-7hhgt"]
  excludeFilters: []
  fileMaxSizeMb: 10
  fileMaxBackups: 3
  fileCompress: true
  end: "2023-10-09T23:59:59-07:00"
`);
  assert.ok(ok.ok, JSON.stringify(ok));
  assert.deepEqual(ok.flowLogs.map((l) => [l.name, l.includeFilters.length, l.fileMaxSizeMb, l.fileCompress, l.endMs]), [["test002", 2, 10, true, Date.parse("2023-10-10T06:59:59Z")]]);
  assert.deepEqual(parseFlowLogsConfig(""), { ok: true, flowLogs: [] });

  const bad = parseFlowLogsConfig(`
flowLogs:
- filePath: /a.log
  colour: blue
- name: x
  filePath: /a.log
  fieldAggregate: [source]
  includeFilters:
  - source_service: ["default/web"]
  fileMaxBackups: -1
  end: yesterday
`);
  assert.equal(bad.ok, false);
  if (bad.ok) return;
  assert.deepEqual(bad.errors.map((e) => e.replace(/: not supported.*/, ": not supported")), [
    "flowLogs[0].colour: unknown field",
    "flowLogs[0].name: required",
    "flowLogs[1].filePath: duplicated flow log path /a.log",
    "flowLogs[1].aggregationInterval: required (more than 0s) with fieldAggregate",
    "flowLogs[1].includeFilters[0].source_service: not supported",
    "flowLogs[1].fileMaxBackups: must be a whole number ≥ 0",
    "flowLogs[1].end: not an RFC 3339 time",
  ]);
  const aggregation = parseFlowLogsConfig(`
flowLogs:
- name: agg
  filePath: /agg.log
  fieldAggregate: [source.namespace, destination.namespace, verdict]
  aggregationInterval: 30s
- name: interval-alone
  filePath: /b.log
  aggregationInterval: 1m
- name: bad-path
  filePath: /c.log
  fieldAggregate: ["source..pod"]
  aggregationInterval: soon
`);
  assert.ok(!aggregation.ok);
  assert.deepEqual(aggregation.errors, [
    "flowLogs[1].fieldAggregate: required with aggregationInterval (the fields flows are folded by)",
    "flowLogs[2].fieldAggregate: \"source..pod\" is not a field path",
    "flowLogs[2].aggregationInterval: not a duration (\"30s\", \"1m\")",
    "flowLogs[2].aggregationInterval: required (more than 0s) with fieldAggregate",
  ]);
  const agg = parseFlowLogsConfig("flowLogs:\n- name: agg\n  filePath: /agg.log\n  fieldAggregate: [verdict]\n  aggregationInterval: 30s\n");
  assert.deepEqual(agg.ok ? agg.flowLogs[0]!.aggregate : agg.errors, { fields: ["verdict"], intervalMs: 30_000 });
});

test("flow logs follow the file: filtered and masked lines, a log added and one removed on reload, a broken file keeps the last good set, a log past its end stops", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-flowlogs-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, "flowlogs.yaml");
  let now = Date.parse("2026-12-04T00:00:00Z");
  const logs = new DynamicFlowLogs({ path: config, log: pino({ level: "silent" }), now: () => now });
  t.after(() => logs.stop());
  const lines = (name: string): Record<string, unknown>[] => {
    logs.flush();
    const p = path.join(dir, name);
    return fs.existsSync(p) ? fs.readFileSync(p, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : [];
  };
  fs.writeFileSync(config, `
flowLogs:
- name: drops
  filePath: ${dir}/drops.log
  includeFilters: [{verdict: [DROPPED]}]
- name: pods
  filePath: ${dir}/pods.log
  fieldMask: [source.pod_name, verdict]
  end: "2026-12-04T01:00:00Z"
`);
  logs.start();
  assert.deepEqual(logs.names(), ["drops", "pods"]);
  logs.write(flow());
  logs.write(dropFlow({ source: endpoint({ pod: "xwing" }) }));
  assert.deepEqual(lines("drops.log").map((l) => (l.flow as { verdict: string }).verdict), ["DROPPED"]);
  assert.deepEqual(lines("pods.log").map((l) => l.flow), [{ verdict: "FORWARDED", source: { pod_name: "client-1" } }, { verdict: "DROPPED", source: { pod_name: "xwing" } }]);

  fs.writeFileSync(config, `
flowLogs:
- name: pods
  filePath: ${dir}/pods.log
  fieldMask: [source.pod_name, verdict]
  end: "2026-12-04T01:00:00Z"
- name: all
  filePath: ${dir}/all.log
`);
  logs.reload();
  assert.deepEqual(logs.names(), ["pods", "all"]);
  logs.write(dropFlow());
  assert.equal(lines("drops.log").length, 1, "the removed log writes nothing more");
  assert.equal(lines("all.log").length, 1);
  assert.equal(lines("pods.log").length, 3, "an unchanged log keeps its file open");

  fs.writeFileSync(config, "flowLogs:\n- name: [broken\n");
  logs.reload();
  assert.deepEqual(logs.names(), ["pods", "all"], "an invalid file changes nothing");

  now = Date.parse("2026-12-04T01:00:01Z");
  logs.write(flow());
  assert.equal(lines("pods.log").length, 3, "past its end");
  assert.equal(lines("all.log").length, 2);
  assert.deepEqual(logs.names(), ["all"]);
});

test("a flow log with aggregation writes its folded flows every interval, with their counts", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-flowlogs-agg-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, "flowlogs.yaml");
  fs.writeFileSync(config, `
flowLogs:
- name: by-verdict
  filePath: ${dir}/agg.log
  fieldAggregate: [verdict]
  aggregationInterval: 100ms
`);
  const logs = new DynamicFlowLogs({ path: config, log: pino({ level: "silent" }) });
  t.after(() => logs.stop());
  logs.start();
  for (let i = 0; i < 3; i++) logs.write(dropFlow());
  logs.write(flow());
  const read = (): { flow: { verdict: string; aggregate: Record<string, number> } }[] => {
    logs.flush();
    const p = path.join(dir, "agg.log");
    return fs.existsSync(p) ? fs.readFileSync(p, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as never) : [];
  };
  assert.deepEqual(read(), [], "nothing before the interval ends");
  const end = Date.now() + 5000;
  while (read().length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    read().map((l) => [l.flow.verdict, l.flow.aggregate.ingress_flow_count]),
    [
      ["DROPPED", 3],
      ["FORWARDED", 1],
    ],
  );
});
