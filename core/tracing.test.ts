// TracingPolicy validation: the seed example passes; each semantic mistake is named by its field path.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seedExamples } from "../crds/fixtures.ts";
import { validateTracingPolicy } from "./tracing.ts";

const tp = (spec: unknown) => ({ apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "t" }, spec });
const errorsOf = (spec: unknown): string[] => {
  const r = validateTracingPolicy(tp(spec));
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

describe("TracingPolicy validation", () => {
  it("accepts the seed example and summarises its hooks", () => {
    const seed = seedExamples().find((e) => e.object.kind === "TracingPolicy");
    const r = validateTracingPolicy(seed?.object);
    assert.ok(r.ok);
    assert.deepEqual(r.value.hooks, [{ kind: "kprobes", name: "fd_install" }]);
  });

  it("names every mistake at once", () => {
    assert.deepEqual(
      errorsOf({
        kprobes: [
          { call: "", args: [{ index: 1, type: "file" }, { index: 1, type: "nonsense" }] },
          { call: "tcp_connect", selectors: [{ matchActions: [{ action: "Override" }, { action: "Explode" }] }] },
        ],
        tracepoints: [{ subsystem: "syscalls" }],
        lsmhooks: "file_open",
      }),
      [
        "spec.kprobes[0].call: required",
        "spec.kprobes[0].args[1].index: argument 1 is declared twice",
        'spec.kprobes[0].args[1].type: "nonsense" is not an argument type (e.g. int, string, file, fd, sock, skb, path)',
        "spec.kprobes[1].selectors[0].matchActions[0].argError: Override needs argError, the error number to return",
        'spec.kprobes[1].selectors[0].matchActions[1].action: "Explode" is not an action (Post, Sigkill, Signal, Override, ...)',
        "spec.tracepoints[0].event: required",
        'spec.lsmhooks: must be a list, not "file_open"',
      ],
    );
  });

  it("limits selectors per hook and checks the return argument", () => {
    assert.deepEqual(errorsOf({ kprobes: [{ call: "x", selectors: [{}, {}, {}, {}, {}, {}] }] }), [
      "spec.kprobes[0].selectors: has 6 selectors; at most 5 are supported per hook",
    ]);
    assert.deepEqual(errorsOf({ kprobes: [{ call: "x", returnArg: { type: "int" } }] }), ["spec.kprobes[0].returnArg: is only read when return: true"]);
    assert.deepEqual(errorsOf({ kprobes: [{ call: "x", return: true, returnArg: { type: "int" } }] }), []);
  });
});
