// selectorsMacros as Tetragon's loader reads them: a selector takes the filters of the macros it lists, a filter
// comes from one place only, an undefined macro or a macro using macros is refused with its path; admission and the
// enforcement plan both see the expanded selectors.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decideCall, enforcementPlan } from "./tracing-enforcement.ts";
import { expandSelectorMacros } from "./tracing-macros.ts";
import { validateTracingPolicy } from "./tracing.ts";

const policy = (spec: Record<string, unknown>) => ({ apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "m" }, spec });
const FILE_HOOK = { call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }] };
const MACROS = {
  shadow: { matchArgs: [{ index: 1, operator: "Equal", values: ["/etc/shadow"] }] },
  shells: { matchBinaries: [{ operator: "In", values: ["/usr/bin/bash", "/usr/bin/dash"] }] },
  kill: { matchActions: [{ action: "Sigkill" }] },
};

function errorsOf(spec: Record<string, unknown>): string[] {
  const r = validateTracingPolicy(policy(spec));
  assert.ok(!r.ok, "expected the policy to be refused");
  return r.errors.map((e) => `${e.path}: ${e.message}`);
}

describe("selectorsMacros", () => {
  it("a selector takes every filter of the macros it lists, beside its own; selectorsMacros and macros are gone after", () => {
    const r = expandSelectorMacros(policy({ selectorsMacros: MACROS, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["shadow", "kill"], matchBinaries: [{ operator: "In", values: ["/usr/bin/cat"] }] }] }] }));
    assert.ok(r.ok);
    const spec = (r.value as { spec: Record<string, unknown> }).spec;
    assert.equal(spec.selectorsMacros, undefined);
    assert.deepEqual((spec.kprobes as { selectors: unknown[] }[])[0]!.selectors, [
      { matchBinaries: [{ operator: "In", values: ["/usr/bin/cat"] }], ...MACROS.shadow, ...MACROS.kill },
    ]);
  });

  it("a policy without macros is handed back as it is", () => {
    const p = policy({ kprobes: [{ ...FILE_HOOK, selectors: [{ matchActions: [{ action: "Post" }] }] }] });
    const r = expandSelectorMacros(p);
    assert.ok(r.ok);
    assert.equal(r.value, p);
  });

  it("admission accepts macros and judges the expanded selector (a macro's bad operator is refused where it is used)", () => {
    const ok = validateTracingPolicy(policy({ selectorsMacros: MACROS, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["shadow", "shells", "kill"] }] }] }));
    assert.ok(ok.ok, JSON.stringify(ok));
    assert.deepEqual(ok.value.hooks[0]!.actions, ["Sigkill"]);
    assert.deepEqual([...ok.value.hooks[0]!.filters].sort(), ["matchArgs", "matchBinaries"]);
    const bad = errorsOf({ selectorsMacros: { odd: { matchArgs: [{ index: 1, operator: "equal", values: ["/x"] }] } }, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["odd"] }] }] });
    assert.ok(bad.some((e) => e.startsWith("spec.kprobes[0].selectors[0].matchArgs[0].operator")), bad.join("\n"));
  });

  it("refuses an undefined macro, macros without selectorsMacros, a macro using macros and a filter given twice, each by path", () => {
    assert.deepEqual(errorsOf({ selectorsMacros: MACROS, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["kill", "shaddow"] }] }] }), [
      'spec.kprobes[0].selectors[0].macros[1]: undefined macro "shaddow" (spec.selectorsMacros defines shadow, shells, kill)',
    ]);
    assert.deepEqual(errorsOf({ tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", selectors: [{ macros: ["kill"] }] }] }), [
      'spec.tracepoints[0].selectors[0].macros[0]: macro "kill" is used but spec.selectorsMacros defines no macros',
    ]);
    assert.ok(errorsOf({ selectorsMacros: { nested: { macros: ["kill"] }, ...MACROS }, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["kill"] }] }] })
      .includes("spec.selectorsMacros.nested.macros: a macro cannot use other macros: list their filters here instead"));
    assert.deepEqual(errorsOf({ selectorsMacros: { ...MACROS, post: { matchActions: [{ action: "Post" }] } }, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["kill", "post"] }, { macros: ["shadow"], matchArgs: [] }] }] }), [
      'spec.kprobes[0].selectors[0].macros[1]: matchActions is given by macro "kill" and by macro "post": a filter may come from one place only',
      'spec.kprobes[0].selectors[1].macros[0]: matchArgs is given by the selector itself and by macro "shadow": a filter may come from one place only',
    ]);
    assert.deepEqual(errorsOf({ selectorsMacros: ["kill"], kprobes: [FILE_HOOK] }), ['spec.selectorsMacros: must be a map of macro name to selector, not a list']);
  });

  it("the enforcement plan acts on the macro's filters: Sigkill for a shell opening /etc/shadow, nothing for cat", () => {
    const r = enforcementPlan(policy({ selectorsMacros: MACROS, kprobes: [{ ...FILE_HOOK, selectors: [{ macros: ["shadow", "shells", "kill"] }] }] }));
    assert.ok(r.ok, JSON.stringify(r));
    const hook = r.value.hooks[0]!;
    const call = { pid: 5, namespaces: {}, hostNamespaces: {}, path: "/etc/shadow" };
    assert.deepEqual(decideCall(hook, { ...call, binary: "/usr/bin/bash" }), { selector: 0, actions: [{ action: "Sigkill" }], post: true });
    assert.equal(decideCall(hook, { ...call, binary: "/usr/bin/cat" }), undefined);
    assert.equal(decideCall(hook, { ...call, binary: "/usr/bin/bash", path: "/etc/hosts" }), undefined);
  });
});
