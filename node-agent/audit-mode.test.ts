// Audit-mode annotations: which objects audit (only "true"), how pods are grouped, and when a change is a change.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { KubeObject } from "../kube/kube.ts";
import { AUDIT_MODE_ANNOTATION, annotatedForAudit, auditAnnotationsOf, sameAuditAnnotations, unclearAuditValue } from "./audit-mode.ts";

const obj = (name: string, value?: string, namespace?: string): KubeObject => ({
  metadata: { name, ...(namespace !== undefined ? { namespace } : {}), ...(value !== undefined ? { annotations: { [AUDIT_MODE_ANNOTATION]: value } } : {}) },
});

test('only the value "true" audits; "false", none or anything else enforces (fail closed), and anything else is flagged as unclear', () => {
  assert.equal(annotatedForAudit(obj("n1", "true")), true);
  for (const v of ["false", "True", "yes", "1", ""]) assert.equal(annotatedForAudit(obj("n1", v)), false, v);
  assert.equal(annotatedForAudit(obj("n1")), false);
  assert.equal(annotatedForAudit(undefined), false);
  assert.equal(unclearAuditValue(obj("n1", "yes")), "yes");
  assert.equal(unclearAuditValue(obj("n1", "false")), undefined);
  assert.equal(unclearAuditValue(obj("n1")), undefined);
});

test("the node's annotation and the annotated pods, by namespace then name", () => {
  const a = auditAnnotationsOf(obj("n1", "true"), [obj("web-0", "true", "shop"), obj("web-1", "false", "shop"), obj("db-0", "true", "data"), obj("x", undefined, "shop")]);
  assert.equal(a.node, true);
  assert.deepEqual([...a.pods].map(([ns, names]) => [ns, [...names]]), [["shop", ["web-0"]], ["data", ["db-0"]]]);
  assert.equal(auditAnnotationsOf(undefined, []).node, false);
});

test("equal annotations are the same whatever the order; a pod or the node switching is a change", () => {
  const a = auditAnnotationsOf(obj("n1"), [obj("a", "true", "ns"), obj("b", "true", "ns")]);
  const b = auditAnnotationsOf(obj("n1"), [obj("b", "true", "ns"), obj("a", "true", "ns")]);
  assert.ok(sameAuditAnnotations(a, b));
  assert.ok(!sameAuditAnnotations(a, auditAnnotationsOf(obj("n1", "true"), [obj("a", "true", "ns"), obj("b", "true", "ns")])));
  assert.ok(!sameAuditAnnotations(a, auditAnnotationsOf(obj("n1"), [obj("a", "true", "ns")])));
  assert.ok(!sameAuditAnnotations(a, auditAnnotationsOf(obj("n1"), [obj("a", "true", "ns"), obj("c", "true", "ns")])));
});

test("the annotations say whether the Node object exists (a host firewall without it is named, not silent)", () => {
  assert.equal(auditAnnotationsOf(undefined, []).nodeObject, false);
  assert.equal(auditAnnotationsOf(obj("n1"), []).nodeObject, true);
  assert.ok(!sameAuditAnnotations(auditAnnotationsOf(undefined, []), auditAnnotationsOf(obj("n1"), [])), "the Node appearing is a change");
});
