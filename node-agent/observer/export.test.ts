// Flow export: JSON lines, rotated by size, K files kept, every line a whole flow.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { FlowExporter } from "./export.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import type { Flow } from "../../flowapi/flow.ts";

test("export rotates at the size limit, keeps K files, and every line parses back to its flow", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-export-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "flows.jsonl");
  const x = new FlowExporter({ path: file, maxBytes: 20_000, keep: 3, bufferBytes: 4096 });
  const written: Flow[] = [];
  for (let i = 0; i < 1000; i++) {
    const f = i % 3 === 0 ? dropFlow({ destination: endpoint({ port: i }) }) : flow({ destination: endpoint({ port: i }) });
    written.push(f);
    x.write(f);
  }
  x.close();
  const files = fs.readdirSync(dir).sort();
  assert.deepEqual(files, ["flows.jsonl", "flows.jsonl.1", "flows.jsonl.2", "flows.jsonl.3"]);
  const lines: Flow[] = [];
  for (const name of ["flows.jsonl.3", "flows.jsonl.2", "flows.jsonl.1", "flows.jsonl"]) {
    const text = fs.readFileSync(path.join(dir, name), "utf8");
    assert.ok(Buffer.byteLength(text) <= 20_000, `${name} is ${Buffer.byteLength(text)} bytes`);
    assert.ok(text.endsWith("\n"));
    for (const l of text.trimEnd().split("\n")) lines.push(JSON.parse(l) as Flow);
  }
  // The kept files hold the newest flows, in order, with nothing lost or torn between them.
  assert.deepEqual(lines, written.slice(written.length - lines.length));
  assert.ok(lines.length > 100);
});

test("export appends to an existing file and counts its size", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-export-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "flows.jsonl");
  fs.writeFileSync(file, "x".repeat(900) + "\n");
  const x = new FlowExporter({ path: file, maxBytes: 1000, keep: 1 });
  x.write(flow());
  x.close();
  assert.equal(fs.readFileSync(`${file}.1`, "utf8").length, 901);
  assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")), flow());
});

test("with compress, rotated files are gzipped and still hold every flow in order; the live file stays plain", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-export-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "flows.jsonl");
  const x = new FlowExporter({ path: file, maxBytes: 20_000, keep: 2, compress: true, bufferBytes: 4096 });
  const written: Flow[] = [];
  for (let i = 0; i < 500; i++) {
    const f = flow({ destination: endpoint({ port: i }) });
    written.push(f);
    x.write(f);
  }
  x.close();
  assert.deepEqual(fs.readdirSync(dir).sort(), ["flows.jsonl", "flows.jsonl.1.gz", "flows.jsonl.2.gz"]);
  const lines: Flow[] = [];
  for (const name of ["flows.jsonl.2.gz", "flows.jsonl.1.gz"]) {
    const raw = fs.readFileSync(path.join(dir, name));
    assert.ok(raw.length < 20_000 / 2, `${name} is not compressed (${raw.length} bytes)`);
    for (const l of zlib.gunzipSync(raw).toString("utf8").trimEnd().split("\n")) lines.push(JSON.parse(l) as Flow);
  }
  for (const l of fs.readFileSync(file, "utf8").trimEnd().split("\n")) lines.push(JSON.parse(l) as Flow);
  assert.deepEqual(lines, written.slice(written.length - lines.length));
});
