// The files membrane runtime reads: TracingPolicy YAML documents (a List too) and the pods file, with errors naming
// the document or the field; a polled file is read again when it changes, and once when it disappears.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { PolledFile, parsePods, parsePolicies } from "./policy-source.ts";

describe("membrane runtime's input files", () => {
  it("reads every TracingPolicy document, skipping empty ones and opening Lists", () => {
    const r = parsePolicies("---\nkind: TracingPolicy\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- kind: TracingPolicyNamespaced\n  metadata: {name: b, namespace: default}\n", "p.yaml");
    assert.ok(r.ok);
    assert.deepEqual(r.value.map((o) => (o as { metadata: { name: string } }).metadata.name), ["a", "b"]);
  });

  it("refuses a document of another kind or broken YAML, naming the document", () => {
    assert.deepEqual(parsePolicies("kind: TracingPolicy\n---\nkind: CiliumNetworkPolicy\n", "p.yaml"), { ok: false, error: 'p.yaml: document 2: kind "CiliumNetworkPolicy" is not TracingPolicy or TracingPolicyNamespaced' });
    const broken = parsePolicies("kind: [", "p.yaml");
    assert.ok(!broken.ok && broken.error.startsWith("p.yaml: document 1: "));
  });

  it("reads pods by network namespace path or inode, skipping a namespace that is gone, and names a bad field", () => {
    const self = fs.statSync("/proc/self/ns/net").ino;
    const r = parsePods(JSON.stringify({ pods: [
      { netns: "/proc/self/ns/net", namespace: "default", name: "a", labels: { app: "web", n: 1 } },
      { netns: 42, namespace: "ns2", name: "b" },
      { netns: "/var/run/netns/membrane-does-not-exist", namespace: "x", name: "gone" },
    ] }), "pods.json");
    assert.ok(r.ok);
    assert.deepEqual([...r.value], [[self, { namespace: "default", name: "a", labels: { app: "web" } }], [42, { namespace: "ns2", name: "b", labels: {} }]]);
    assert.deepEqual(parsePods('{"pods": [{"netns": "x", "namespace": "a", "name": "b"}]}', "pods.json"), { ok: false, error: "pods.json: pods[0].netns: a network namespace path or inode number" });
    assert.deepEqual(parsePods('{"pods": [{"netns": 1, "name": "b"}]}', "pods.json"), { ok: false, error: "pods.json: pods[0].namespace: required" });
  });

  it("a polled file is read at start and after each change (also a rename over it), and once more when removed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-polled-"));
    const file = path.join(dir, "p.yaml");
    const seen: string[] = [];
    fs.writeFileSync(file, "one");
    const polled = new PolledFile(file, (t) => seen.push(t), 10);
    try {
      await polled.start();
      assert.deepEqual(seen, ["one"]);
      fs.writeFileSync(`${file}.tmp`, "two!");
      fs.renameSync(`${file}.tmp`, file);
      const until = async (n: number): Promise<void> => {
        for (let i = 0; i < 200 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 10));
      };
      await until(2);
      assert.deepEqual(seen, ["one", "two!"]);
      fs.rmSync(file);
      await until(3);
      assert.deepEqual(seen, ["one", "two!", ""]);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(seen.length, 3, "nothing more while nothing changes");
    } finally {
      polled.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
