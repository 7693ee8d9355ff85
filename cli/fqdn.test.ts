// `membrane fqdn cache list`'s arguments and table, without a cluster.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fqdnCacheTable, parseFqdnCacheListArgs } from "./fqdn.ts";

test("flags: --node, --name, repeatable --server, -o; bad values are refused naming the flag", () => {
  assert.deepEqual(parseFqdnCacheListArgs(["--node", "node-1", "--name", "*.outside.test", "-o", "json"]), { ok: true, value: { node: "node-1", name: "*.outside.test", servers: [], output: "json" } });
  assert.deepEqual(parseFqdnCacheListArgs(["--server", "127.0.0.1:9962", "--server", "[::1]:9962"]), { ok: true, value: { servers: ["127.0.0.1:9962", "[::1]:9962"], output: "table" } });
  for (const [args, flag] of [
    [["-o", "yaml"], /^-o:/],
    [["--name", "a b"], /^--name:/],
    [["--server", "localhost"], /^--server:/],
    [["--server", "127.0.0.1:1", "--kubeconfig", "k"], /^--kubeconfig:/],
    [["--node", ""], /^--node:/],
    [["--nodes", "x"], /nodes/],
  ] as const) {
    const r = parseFqdnCacheListArgs(args);
    assert.ok(!r.ok, args.join(" "));
    assert.match(r.error, flag);
  }
});

test("the table has one row per (node, name, address) under aligned headers", () => {
  const t = fqdnCacheTable([{ node: "node-1", name: "api.outside.test.", ip: "192.0.2.11", ttlSeconds: 42, expiresAt: "2026-12-04T05:01:00.000Z", source: "dns-e2e/mediabot-1" }]);
  const [head, row] = t.trimEnd().split("\n");
  assert.match(head!, /^NODE\s+NAME\s+ADDRESS\s+TTL\s+EXPIRES\s+SOURCE$/);
  assert.match(row!, /^node-1\s+api\.outside\.test\.\s+192\.0\.2\.11\s+42\s+2026-12-04T05:01:00\.000Z\s+dns-e2e\/mediabot-1$/);
});
