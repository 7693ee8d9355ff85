// The translation table: exec, file and connect hooks map to this kernel's mechanisms; everything else is named
// with why it cannot be served (the HookUnavailable status).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seedExamples, tetragonDocsExamples } from "../crds/fixtures.ts";
import { validateTracingPolicy, type TracingPolicySummary } from "./tracing.ts";
import { TRANSLATION_TABLE, loadedCondition, translatePolicy } from "./tracing-translation.ts";

function summary(spec: unknown): TracingPolicySummary {
  const r = validateTracingPolicy({ apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "t" }, spec });
  assert.ok(r.ok, JSON.stringify(r));
  return r.value;
}
const unavailable = (spec: unknown): string[] => {
  const t = translatePolicy(summary(spec));
  return t.ok ? [] : t.unavailable.map((u) => `${u.path} (${u.hook}): ${u.reason}`);
};
const mechanisms = (spec: unknown): string[][] => {
  const t = translatePolicy(summary(spec));
  assert.ok(t.ok, JSON.stringify(t));
  return t.hooks.map((h) => [...h.mechanisms]);
};
const kprobe = (call: string, actions: string[], matchArgs: unknown[] = []) => ({
  kprobes: [{ call, args: [{ index: 0, type: "file" }], selectors: [{ matchArgs, matchActions: actions.map((action) => (action === "Override" ? { action, argError: -1 } : { action })) }] }],
});

describe("TracingPolicy translation table", () => {
  it("maps exec hooks to exec permission events for every action (they come before the binary runs)", () => {
    for (const call of ["sys_execve", "security_bprm_check", "security_bprm_creds_for_exec", "__x64_sys_execve"]) {
      assert.deepEqual(mechanisms(kprobe(call, ["Post", "Sigkill"])), [["exec-permission"]], call);
      assert.deepEqual(mechanisms(kprobe(call, ["Override"])), [["exec-permission"]], call);
    }
    assert.deepEqual(mechanisms({ lsmhooks: [{ hook: "bprm_check_security", selectors: [{ matchActions: [{ action: "Sigkill" }] }] }] }), [["exec-permission"]]);
  });

  it("maps file hooks to fanotify permission events for Post, Sigkill and Override", () => {
    for (const call of ["fd_install", "security_file_open", "security_file_permission"]) {
      assert.deepEqual(mechanisms(kprobe(call, ["Post", "Sigkill", "Override"], [{ index: 0, operator: "Prefix", values: ["/etc/"] }])), [["file-permission"]], call);
    }
    assert.deepEqual(mechanisms({ lsmhooks: [{ hook: "file_open" }] }), [["file-permission"]]);
  });

  it("maps connect hooks to cgroup/connect4/6 with port and address operators", () => {
    const connect = (call: string) => ({
      kprobes: [{ call, args: [{ index: 0, type: "sock" }], selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: ["4444"] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
    });
    assert.deepEqual(mechanisms(connect("tcp_connect")), [["cgroup-connect"]]);
    assert.deepEqual(mechanisms(connect("security_socket_connect")), [["cgroup-connect"]]);
  });

  it("serves tracepoints natively, but not Override from a tracepoint", () => {
    const tp = (action: string) => ({
      tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 6 }], selectors: [{ matchActions: [action === "Override" ? { action, argError: -1 } : { action }] }] }],
    });
    assert.deepEqual(mechanisms(tp("Sigkill")), [["tracepoint"]]);
    assert.deepEqual(unavailable(tp("Override")), [
      "spec.tracepoints[0] (tracepoint syscalls/sys_enter_openat): action Override cannot change the result of a call from a tracepoint",
    ]);
  });

  it("names a kprobe outside the table, with the syscall tracepoint that can observe it", () => {
    assert.deepEqual(unavailable({ kprobes: [{ call: "sys_write", syscall: true }] }), [
      "spec.kprobes[0] (kprobe sys_write): kprobes are not configured in this kernel, and sys_write is not in the translation table (exec, file-open and connect hooks); a tracepoint can observe it: tracepoints: [{subsystem: syscalls, event: sys_enter_write}]",
    ]);
    assert.deepEqual(unavailable({ lsmhooks: [{ hook: "bpf" }] }), [
      "spec.lsmhooks[0] (LSM hook bpf): BPF LSM programs fail to load on this kernel (EPERM), and bpf is not in the translation table (exec, file-open and connect hooks)",
    ]);
  });

  it("names every action, operator, filter and return probe the mechanisms cannot serve, each hook on its own", () => {
    assert.deepEqual(
      unavailable({
        kprobes: [
          { call: "fd_install", args: [{ index: 0, type: "file" }], selectors: [{ matchArgs: [{ index: 0, operator: "SubString", values: ["x"] }], matchActions: [{ action: "GetUrl", argUrl: "http://x" }] }] },
          { call: "tcp_connect", return: true, returnArg: { index: 0, type: "int" } },
          { call: "sys_execve", selectors: [{ matchCapabilities: [{ operator: "In", values: ["CAP_SYS_ADMIN"] }] }] },
        ],
        uprobes: [{ path: "/bin/bash", symbols: ["readline"] }],
        loader: true,
      }),
      [
        "spec.loader (loader): loader events (binaries and libraries mapped) are not in the translation table",
        "spec.kprobes[0] (kprobe fd_install): operator SubString is not served here (Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix are); action GetUrl has no mechanism on this kernel",
        "spec.kprobes[1] (kprobe tcp_connect): return: true needs a return probe (kretprobe or fexit), which this kernel lacks",
        "spec.kprobes[2] (kprobe sys_execve): matchCapabilities: capability filters are not translated yet",
        "spec.uprobes[0] (uprobe /bin/bash): uprobes are not in the translation table (user-space hooks; only exec, file-open and connect kernel hooks and tracepoints are translated)",
      ],
    );
  });

  it("serves the reference example (monitor-sensitive-files: fd_install, Sigkill) through fanotify", () => {
    const seed = seedExamples().find((e) => e.object.kind === "TracingPolicy");
    const r = validateTracingPolicy(seed?.object);
    assert.ok(r.ok);
    const t = translatePolicy(r.value);
    assert.ok(t.ok);
    assert.deepEqual(loadedCondition(t), {
      status: "False",
      reason: "NotLoadedYet",
      message: "translates to: spec.kprobes[0] (kprobe fd_install) → file-permission; the operator does not send TracingPolicies to the nodes yet (membrane runtime --policy-file enforces exec, file and connect hooks and syscall tracepoints on a node)",
    });
  });

  it("gives Loaded=False, HookUnavailable, naming each hook, for the documentation examples it cannot serve", () => {
    const verdicts = tetragonDocsExamples().map((e) => {
      const r = validateTracingPolicy(e.object);
      assert.ok(r.ok);
      return [e.object.metadata.name, loadedCondition(translatePolicy(r.value)).reason];
    });
    assert.deepEqual(Object.fromEntries(verdicts), {
      "capabilities-outside-host-ns": "HookUnavailable",
      "connect-port-signal": "NotLoadedYet",
      "container-selector-nginx": "NotLoadedYet",
      "enforcer-deny-symlink": "HookUnavailable",
      "exec-kill-netcat": "NotLoadedYet",
      "exec-not-from-container-init": "NotLoadedYet",
      "fentry-file-permission": "NotLoadedYet",
      "file-access-etc-prefix": "NotLoadedYet",
      "loader-and-options": "HookUnavailable",
      "lsm-file-open-deny-shadow": "NotLoadedYet",
      "monitor-sensitive-files": "NotLoadedYet",
      "namespaced-exec-in-web-pods": "NotLoadedYet",
      "return-value-of-openat": "HookUnavailable",
      "syscall-list-dup": "HookUnavailable",
      "tcp-connect-outside-loopback": "NotLoadedYet",
      "tracepoint-openat-auto-types": "NotLoadedYet",
      "uprobe-bash-readline": "HookUnavailable",
      "usdt-python-function-entry": "HookUnavailable",
      "write-to-stdout-by-binary": "HookUnavailable",
    });
  });

  it("lists each function and LSM hook in one row only", () => {
    const fns = TRANSLATION_TABLE.flatMap((r) => r.functions);
    const lsms = TRANSLATION_TABLE.flatMap((r) => r.lsmHooks);
    assert.equal(new Set(fns).size, fns.length);
    assert.equal(new Set(lsms).size, lsms.length);
  });
});
