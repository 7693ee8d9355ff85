// The bad-policy corpus: every case is rejected with exactly its listed field paths and reasons.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePolicyYaml } from "./index.ts";
import { BAD_POLICIES } from "./testdata/bad-policies.ts";

test("the corpus has at least 40 distinct cases", () => {
  assert.ok(BAD_POLICIES.length >= 40, `only ${BAD_POLICIES.length} cases`);
  assert.equal(new Set(BAD_POLICIES.map((c) => c.name)).size, BAD_POLICIES.length);
});

for (const c of BAD_POLICIES) {
  test(`rejects: ${c.name}`, () => {
    const r = parsePolicyYaml(c.yaml);
    assert.equal(r.ok, false, "the policy was accepted");
    if (!r.ok) assert.deepEqual(r.errors, c.errors);
  });
}
