// Unit tests of the policy status logic: condition contents for invalid, pending, enforced and refused policies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeErrors, policyConditions } from "./policy.ts";

test("an invalid policy is Valid=False with every error and its path, and not enforced", () => {
  const parsed = { ok: false as const, errors: [{ path: "spec.egress[0].toPorts[0].ports[0].port", message: "must be 0-65535" }, { path: "spec.endpointSelector", message: "required" }] };
  const [valid, enforced] = policyConditions(parsed, 3, 2, { acknowledged: 0, refused: [] });
  assert.equal(valid?.status, "False");
  assert.equal(valid?.reason, "ParseError");
  assert.equal(valid?.message, "spec.egress[0].toPorts[0].ports[0].port: must be 0-65535; spec.endpointSelector: required");
  assert.equal(valid?.observedGeneration, 3);
  assert.equal(enforced?.status, "False");
  assert.match(enforced?.message ?? "", /^0\/2 nodes/);
});

test("a valid policy counts acknowledging nodes and names the ones that refused", () => {
  const parsed = { ok: true as const, value: [] };
  assert.deepEqual(
    policyConditions(parsed, 1, 3, { acknowledged: 1, refused: [] }).map((c) => [c.type, c.status, c.reason, c.message]),
    [["Valid", "True", "Parsed", "0 rules"], ["Enforced", "Unknown", "Pending", "1/3 nodes"]],
  );
  assert.equal(policyConditions(parsed, 1, 3, { acknowledged: 3, refused: [] })[1]?.status, "True");
  const refused = policyConditions(parsed, 1, 3, { acknowledged: 2, refused: [{ node: "n3", message: "map full" }] })[1];
  assert.equal(refused?.status, "False");
  assert.equal(refused?.message, "2/3 nodes; refused by n3: map full");
  assert.equal(policyConditions(parsed, 1, 0, { acknowledged: 0, refused: [] })[1]?.reason, "NoSelectedEndpoints");
});

test("errors without a path are shown as their message", () => {
  assert.equal(describeErrors([{ path: "", message: "not an object" }]), "not an object");
});
