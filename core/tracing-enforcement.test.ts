// The enforcement plan of a TracingPolicy and the decision for one call: which argument is judged, selector order,
// the filters (args, binaries, namespaces, PIDs, names), pod selection, and what this node refuses with its path.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CallSubject, decideCall, enforcementPlan, pathMatches, podSelects, policySelects } from "./tracing-enforcement.ts";

const call = (over: Partial<CallSubject>): CallSubject => ({ pid: 100, binary: "/usr/bin/cat", namespaces: { Net: 7, Pid: 9 }, hostNamespaces: { Net: 1, Pid: 2 }, path: "/etc/shadow", ...over });

function plan(spec: Record<string, unknown>, meta: Record<string, unknown> = { name: "p" }, kind = "TracingPolicy") {
  const r = enforcementPlan({ apiVersion: "cilium.io/v1alpha1", kind, metadata: meta, spec });
  assert.ok(r.ok, JSON.stringify(r));
  return r.value;
}

describe("TracingPolicy enforcement plan and decision", () => {
  it("path operators: any value for Equal/Prefix/Postfix, none for their Not forms", () => {
    assert.ok(pathMatches("Prefix", ["/etc/", "/root"], "/etc/shadow"));
    assert.ok(pathMatches("Postfix", ["shadow"], "/etc/shadow"));
    assert.ok(!pathMatches("Equal", ["/etc"], "/etc/shadow"));
    assert.ok(pathMatches("NotEqual", ["/etc/passwd"], "/etc/shadow"));
    assert.ok(!pathMatches("NotPrefix", ["/etc"], "/etc/shadow"));
    assert.ok(!pathMatches("Mask", ["1"], "/etc/shadow"), "an operator without a path meaning matches nothing");
  });

  it("the first matching selector decides (Tetragon's order); no selector posts every call; NoPost exports nothing", () => {
    const p = plan({
      kprobes: [{
        call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }],
        selectors: [
          { matchArgs: [{ index: 1, operator: "Equal", values: ["/etc/shadow"] }], matchBinaries: [{ operator: "NotIn", values: ["/usr/bin/cat"] }], matchActions: [{ action: "Sigkill" }] },
          { matchArgs: [{ index: 1, operator: "Prefix", values: ["/etc/"] }], matchActions: [{ action: "Override", argError: -1 }, { action: "NoPost" }] },
        ],
      }],
    });
    const hook = p.hooks[0]!;
    assert.deepEqual([hook.meaning, hook.name], ["file", "fd_install"]);
    assert.deepEqual(decideCall(hook, call({ binary: "/usr/bin/less" })), { selector: 0, actions: [{ action: "Sigkill" }], post: true });
    assert.deepEqual(decideCall(hook, call({})), { selector: 1, actions: [{ action: "Override" }, { action: "NoPost" }], post: false });
    assert.equal(decideCall(hook, call({ path: "/tmp/x" })), undefined);
    const bare = plan({ kprobes: [{ call: "security_file_open", syscall: false }] }).hooks[0]!;
    assert.deepEqual(decideCall(bare, call({})), { selector: 0, actions: [{ action: "Post" }], post: true });
  });

  it("the policy-mode option monitor reports instead of acting (Tetragon's monitor mode)", () => {
    const spec = (mode: string) => ({
      options: [{ name: "policy-mode", value: mode }],
      kprobes: [{ call: "fd_install", syscall: false, args: [{ index: 1, type: "file" }], selectors: [{ matchArgs: [{ index: 1, operator: "Prefix", values: ["/etc/"] }], matchActions: [{ action: "Sigkill" }] }] }],
    });
    assert.deepEqual(decideCall(plan(spec("monitor")).hooks[0]!, call({})), { selector: 0, actions: [{ action: "Post" }], post: true });
    assert.deepEqual(decideCall(plan(spec("enforce")).hooks[0]!, call({})), { selector: 0, actions: [{ action: "Sigkill" }], post: true });
  });

  it("matchNamespaces (inodes and host_ns), matchPIDs (host or namespace pid) and matchNames filter the process", () => {
    const hook = plan({
      lsmhooks: [{
        hook: "file_open", args: [{ index: 0, type: "file" }],
        selectors: [{ matchNamespaces: [{ namespace: "Net", operator: "NotIn", values: ["host_ns"] }], matchPIDs: [{ operator: "NotIn", values: [1], isNamespacePID: true }], matchNames: [{ namespace: "default" }] }],
      }],
    }).hooks[0]!;
    const inPod = call({ nsPid: 5, pod: { namespace: "default", name: "a" } });
    assert.ok(decideCall(hook, inPod));
    assert.equal(decideCall(hook, { ...inPod, namespaces: { Net: 1 } }), undefined, "host network namespace");
    assert.equal(decideCall(hook, { ...inPod, nsPid: 1 }), undefined, "the pod's init");
    assert.equal(decideCall(hook, { ...inPod, pod: { namespace: "other", name: "a" } }), undefined);
  });

  it("connect hooks judge the destination: DPort (and ranges), DAddr with CIDRs, Family, Protocol", () => {
    const hook = plan({
      kprobes: [{
        call: "tcp_connect", syscall: false, args: [{ index: 0, type: "sock" }],
        selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: ["4444", "8000:8080"] }, { index: 0, operator: "NotDAddr", values: ["127.0.0.0/8"] }], matchActions: [{ action: "Override", argError: -1 }] }],
      }],
    }).hooks[0]!;
    const to = (address: string, port: number): CallSubject => call({ path: undefined, address: { family: "AF_INET", address, port, protocol: "TCP" } });
    assert.ok(decideCall(hook, to("10.0.0.1", 4444)));
    assert.ok(decideCall(hook, to("10.0.0.1", 8080)));
    assert.equal(decideCall(hook, to("10.0.0.1", 8081)), undefined);
    assert.equal(decideCall(hook, to("127.0.0.1", 4444)), undefined);
  });

  it("a namespaced policy selects its namespace's pods only, with its podSelector; a cluster-wide one without selector every process", () => {
    const ns = plan({ podSelector: { matchLabels: { app: "web" } }, kprobes: [{ call: "fd_install", syscall: false }] }, { name: "p", namespace: "default" }, "TracingPolicyNamespaced");
    assert.ok(policySelects(ns, { namespace: "default", name: "a", labels: { app: "web" } }));
    assert.ok(!policySelects(ns, { namespace: "default", name: "a", labels: { app: "db" } }));
    assert.ok(!policySelects(ns, { namespace: "other", name: "a", labels: { app: "web" } }));
    assert.ok(!policySelects(ns, undefined), "a host process is in no pod");
    const all = plan({ kprobes: [{ call: "fd_install", syscall: false }] });
    assert.ok(policySelects(all, undefined));
  });

  it("plans a tracepoint with its listed arguments and matchArgs by listed position (the node reads the format)", () => {
    const tp = enforcementPlan({
      kind: "TracingPolicy",
      metadata: { name: "t" },
      spec: { tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5, type: "int" }, { index: 6 }], selectors: [{ matchArgs: [{ index: 1, operator: "Prefix", values: ["/etc"] }], matchActions: [{ action: "Sigkill" }] }] }] },
    });
    assert.ok(tp.ok);
    const hook = tp.value.hooks[0]!;
    assert.deepEqual([hook.meaning, hook.name, hook.tracepoint, hook.args], ["tracepoint", "syscalls/sys_enter_openat", { subsystem: "syscalls", event: "sys_enter_openat", raw: false }, [{ index: 5, type: "int" }, { index: 6, type: "auto" }]]);
    assert.deepEqual(hook.selectors[0]?.args, [{ index: 1, operator: "Prefix", values: ["/etc"] }]);
    assert.deepEqual(hook.selectors[0]?.actions, [{ action: "Sigkill" }]);
  });

  it("refuses what this node cannot judge, naming the field: a non-path argument, an untranslated hook, *ForChildren namespaces", () => {
    const mask = enforcementPlan({ kind: "TracingPolicy", metadata: { name: "m" }, spec: { kprobes: [{ call: "security_file_permission", args: [{ index: 0, type: "file" }, { index: 1, type: "int" }], selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: ["4"] }] }] }] } });
    assert.ok(!mask.ok);
    assert.equal(mask.reason, "HookUnavailable");
    assert.equal(mask.errors[0]?.path, "spec.kprobes[0].selectors[0].matchArgs[0].index");
    const kp = enforcementPlan({ kind: "TracingPolicy", metadata: { name: "k" }, spec: { kprobes: [{ call: "commit_creds" }] } });
    assert.ok(!kp.ok && kp.reason === "HookUnavailable");
    const children = enforcementPlan({ kind: "TracingPolicy", metadata: { name: "n" }, spec: { kprobes: [{ call: "fd_install", selectors: [{ matchNamespaces: [{ namespace: "PidForChildren", operator: "In", values: ["1"] }] }] }] } });
    assert.ok(!children.ok);
    assert.deepEqual(children.errors.map((e) => e.path), ["spec.kprobes[0].selectors[0].matchNamespaces[0].namespace"]);
    const invalid = enforcementPlan({ kind: "TracingPolicy", metadata: { name: "i" }, spec: { kprobes: [{ call: "fd_install", bogus: 1 }] } });
    assert.ok(!invalid.ok && invalid.reason === "Invalid");
  });
  it("containerSelector (Tetragon's container fields name and repo) narrows the policy to those containers; a process in no known container is never selected", () => {
    const p = plan({
      containerSelector: { matchExpressions: [{ key: "name", operator: "In", values: ["app"] }] },
      kprobes: [{ call: "fd_install", syscall: false, args: [{ index: 1, type: "file" }], selectors: [{ matchArgs: [{ index: 1, operator: "Equal", values: ["/etc/shadow"] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
    }, { name: "c", namespace: "default" }, "TracingPolicyNamespaced");
    assert.deepEqual(p.containerSelector, { matchExpressions: [{ key: "name", operator: "In", values: ["app"] }] });
    const pod = (container?: { name: string; image: string }) => ({ namespace: "default", name: "two", ...(container ? { container } : {}) });
    assert.ok(policySelects(p, pod({ name: "app", image: "busybox:1.36" })));
    assert.ok(!policySelects(p, pod({ name: "sidecar", image: "busybox:1.36" })), "the pod's other container");
    assert.ok(!policySelects(p, pod()), "a process-based pod: no container, so no match (fail closed)");
    assert.ok(!policySelects(p, undefined), "a host process");
    assert.ok(!policySelects(p, { namespace: "other", name: "x", container: { name: "app", image: "busybox" } }), "the namespace still holds");
    assert.ok(podSelects(p, pod()), "podSelects leaves the container to the kernel's rules");
    const notIn = plan({ containerSelector: { matchExpressions: [{ key: "name", operator: "NotIn", values: ["app"] }] }, kprobes: [{ call: "fd_install" }] });
    assert.ok(policySelects(notIn, pod({ name: "sidecar", image: "x" })));
    assert.ok(!policySelects(notIn, pod({ name: "app", image: "x" })));
    assert.ok(!policySelects(notIn, pod()), "NotIn does not select a process outside every container either");
    const repo = plan({ containerSelector: { matchLabels: { repo: "docker.io/library/nginx" } }, kprobes: [{ call: "fd_install" }] });
    assert.ok(policySelects(repo, pod({ name: "web", image: "docker.io/library/nginx:1.27@sha256:abc" })));
    assert.ok(!policySelects(repo, pod({ name: "web", image: "docker.io/library/nginxx:1.27" })));
    // A tracepoint's rules carry each selected container's cgroup v2 id (the kernel judges them): planned, not refused.
    const tracepoint = enforcementPlan({ kind: "TracingPolicy", metadata: { name: "c" }, spec: { containerSelector: { matchLabels: { name: "nginx" } }, tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat" }] } });
    assert.ok(tracepoint.ok, JSON.stringify(tracepoint));
    assert.deepEqual(tracepoint.value.containerSelector, { matchLabels: { name: "nginx" } });
    assert.equal(tracepoint.value.hooks[0]?.meaning, "tracepoint");
    const empty = plan({ containerSelector: {}, kprobes: [{ call: "fd_install" }] });
    assert.equal(empty.containerSelector, undefined, "an empty containerSelector selects every process, as none");
    assert.ok(policySelects(empty, undefined));
  });
});
