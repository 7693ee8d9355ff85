// The applied state written in pieces reads back exactly as the one JSON string it replaces.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { jsonPieces, writeJsonFileAtomic } from "./json-file.ts";

/** A node state's shape with `pods` ipcache entries (some with the optional ipBlock identity, some without a pod name). */
function stateOf(pods: number): Record<string, unknown> {
  const ipcache = Array.from({ length: pods }, (_, p) => ({ prefix: `172.16.${p >> 8}.${p & 255}/32`, identity: 256 + (p % 300), node: `100.64.0.${p % 30}`, pod: p % 5 === 0 ? undefined : `ns-${p % 10}/p-${p}`, ...(p % 7 === 0 ? { ipBlockIdentity: 16_777_300 } : {}) }));
  const policies = [{ subject: 256, ingressEnforced: true, egressEnforced: false, entries: [{ subject: 256, direction: "ingress", peer: 257, proto: 6, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 }] }];
  return { policies, ipcache, identities: [{ id: 256, labels: ["k8s:app=a"] }], rules: [], policyGenerations: [], tracingPolicies: undefined };
}

describe("applied.json written in pieces", () => {
  it("is byte for byte JSON.stringify's text, for a state with large lists, optional fields and absent values", () => {
    const record = { version: 7, state: stateOf(3000), policyEnforcementMode: "default", skipped: () => 1 };
    const pieces = [...jsonPieces(record)];
    assert.ok(pieces.length > 6, `${pieces.length} pieces: the 3,000-entry ipcache is not one string`);
    assert.ok(Math.max(...pieces.map((p) => p.length)) < 100_000, "no piece holds the whole ipcache");
    assert.equal(pieces.join(""), JSON.stringify(record));
    assert.equal([...jsonPieces([1, undefined, "x"])].join(""), JSON.stringify([1, undefined, "x"]));
    assert.equal([...jsonPieces(Array.from({ length: 1200 }, (_, i) => (i % 3 === 0 ? undefined : i)))].join(""), JSON.stringify(Array.from({ length: 1200 }, (_, i) => (i % 3 === 0 ? undefined : i))));
  });

  it("replaces the file only once it is complete, with the mode asked for, and leaves no temporary file", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-json-file-"));
    try {
      const file = path.join(dir, "state", "applied.json");
      const value = { version: 1, state: stateOf(2000) };
      writeJsonFileAtomic(file, value, 0o600);
      assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")), JSON.parse(JSON.stringify(value)));
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      const big = { toJSON: () => { throw new Error("not serialisable"); } };
      assert.throws(() => writeJsonFileAtomic(file, { version: 2, state: [big] }), /not serialisable/);
      assert.deepEqual(fs.readdirSync(path.dirname(file)), ["applied.json"], "the failed write's temporary file is gone");
      assert.equal((JSON.parse(fs.readFileSync(file, "utf8")) as { version: number }).version, 1, "the failed write left the previous file");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
