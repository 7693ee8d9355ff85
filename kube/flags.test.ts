// The flag parser's errors name the flag a user got wrong.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFlags } from "./flags.ts";

const options = { kubeconfig: { type: "string" }, help: { type: "boolean", short: "h" } } as const;
const error = (args: string[], allowPositionals = false): string => {
  const r = parseFlags({ args, options, allowPositionals });
  assert.ok(!r.ok);
  return r.error;
};

test("flags parse in both spellings, and a bad one is an error that starts with its name", () => {
  const r = parseFlags({ args: ["--kubeconfig=/a", "-h"], options });
  assert.ok(r.ok);
  assert.deepEqual({ ...r.parsed.values }, { kubeconfig: "/a", help: true });
  assert.equal(error(["--nope", "1"]), "unknown flag --nope");
  assert.equal(error(["--kubeconfig"]), "--kubeconfig: a value is required");
  assert.match(error(["--kubeconfig", "--help"]), /^--kubeconfig: a value is required \(write --kubeconfig=VALUE/);
  assert.equal(error(["--help=yes"]), "--help: takes no value");
  assert.equal(error(["extra"]), 'unexpected argument "extra"');
});
