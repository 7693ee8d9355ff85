// kubectl wait on an object without status.conditions yet gives up at once; the local cluster's kubectl asks again, and only for that answer.
import assert from "node:assert/strict";
import { test } from "node:test";
import { kubectlWithWaitRetry, type CommandResult } from "./cluster.ts";

const early: CommandResult = { code: 1, stdout: "", stderr: "error: .status.conditions accessor error: <nil> is of the type <nil>, expected []interface{}\n" };
const done: CommandResult = { code: 0, stdout: "customresourcedefinition.apiextensions.k8s.io/ciliumnodes.cilium.io condition met\n", stderr: "" };

test("a wait that read no conditions yet is asked again until kubectl answers otherwise", async () => {
  const answers = [early, early, done];
  let calls = 0;
  const r = await kubectlWithWaitRetry(async () => answers[calls++]!, ["wait", "--for=condition=Established", "crd/ciliumnodes.cilium.io"]);
  assert.deepEqual(r, done);
  assert.equal(calls, 3);
});

test("other failures, and other commands, are answered as they are", async () => {
  const timeout: CommandResult = { code: 1, stdout: "", stderr: "error: timed out waiting for the condition on pods/x\n" };
  let calls = 0;
  assert.deepEqual(await kubectlWithWaitRetry(async () => (calls++, timeout), ["wait", "--for=condition=Ready", "pod/x"]), timeout);
  assert.equal(calls, 1);
  assert.deepEqual(await kubectlWithWaitRetry(async () => (calls++, early), ["get", "crd"]), early);
  assert.equal(calls, 2);
});
