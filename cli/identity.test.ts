// Unit tests of `membrane identity list` formatting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatTable, identityRows } from "./identity.ts";

test("rows are sorted by number, with pods counted from their identity annotation", () => {
  const rows = identityRows(
    [
      { metadata: { name: "300" }, "security-labels": { "k8s:app": "db" } },
      { metadata: { name: "256", annotations: { "membrane.io/unused-since": "2026-01-01T00:00:00Z" } }, "security-labels": { "k8s:app": "web", "k8s:io.kubernetes.pod.namespace": "default" } },
    ],
    [{ metadata: { name: "a", annotations: { "membrane.io/identity": "300" } } }, { metadata: { name: "b", annotations: { "membrane.io/identity": "300" } } }, { metadata: { name: "c" } }],
  );
  assert.deepEqual(rows, [
    { id: 256, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"], pods: 0, unusedSince: "2026-01-01T00:00:00Z" },
    { id: 300, labels: ["k8s:app=db"], pods: 2 },
  ]);
  assert.equal(formatTable(rows), "ID    PODS   LABELS\n256   0      k8s:app=web k8s:io.kubernetes.pod.namespace=default\n300   2      k8s:app=db\n");
});
