// Unit tests of condition merging: lastTransitionTime moves only when a condition's status changes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeConditions, sameConditions } from "./conditions.ts";

const t0 = new Date("2026-01-01T00:00:00.123Z");
const t1 = new Date("2026-01-01T01:00:00Z");

test("a new condition gets the current time in seconds precision", () => {
  const c = mergeConditions(undefined, [{ type: "Valid", status: "True", reason: "Parsed", message: "1 rule" }], t0);
  assert.deepEqual(c, [{ type: "Valid", status: "True", reason: "Parsed", message: "1 rule", lastTransitionTime: "2026-01-01T00:00:00Z" }]);
});

test("the same status keeps lastTransitionTime even when the message changes; a new status moves it", () => {
  const a = mergeConditions(undefined, [{ type: "Valid", status: "True", reason: "Parsed", message: "1 rule", observedGeneration: 1 }], t0);
  const b = mergeConditions(a, [{ type: "Valid", status: "True", reason: "Parsed", message: "2 rules", observedGeneration: 2 }], t1);
  assert.equal(b[0]?.lastTransitionTime, "2026-01-01T00:00:00Z");
  assert.equal(b[0]?.observedGeneration, 2);
  const c = mergeConditions(b, [{ type: "Valid", status: "False", reason: "ParseError", message: "spec: bad" }], t1);
  assert.equal(c[0]?.lastTransitionTime, "2026-01-01T01:00:00Z");
});

test("conditions of other types are kept; comparison ignores order", () => {
  const a = mergeConditions(undefined, [{ type: "Valid", status: "True", reason: "Parsed", message: "" }, { type: "Enforced", status: "Unknown", reason: "Pending", message: "0/1 nodes" }], t0);
  const b = mergeConditions(a, [{ type: "Valid", status: "True", reason: "Parsed", message: "" }], t1);
  assert.equal(b.length, 2);
  assert.ok(sameConditions(a, [...b].reverse()));
  assert.ok(!sameConditions(a, mergeConditions(a, [{ type: "Enforced", status: "True", reason: "Acknowledged", message: "1/1 nodes" }], t1)));
});
