// The operator's TracingPolicy status against a real kube-apiserver: Loaded=False/HookUnavailable naming the hook
// and why, NotLoadedYet with what a servable policy translates to, for both kinds, following updates.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { seedExamples } from "../crds/fixtures.ts";
import { startControlPlane } from "../localcluster/cluster.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));

interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

describe("TracingPolicy status from the operator", { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  let op: OperatorProcess | undefined;
  const created: string[][] = [];

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const apply = async (obj: { kind: string; metadata: { name: string; namespace?: string }; [field: string]: unknown }): Promise<void> => {
    await kubectl(["apply", "-f", "-"], stringify(obj));
    created.push([obj.kind, obj.metadata.name, ...(obj.metadata.namespace ? ["-n", obj.metadata.namespace] : [])]);
  };
  const loaded = (kind: string, name: string, ns: string[] = [], generation = 1): Promise<Cond> =>
    eventually(`${kind}/${name} Loaded at generation ${generation}`, async () => {
      const o = JSON.parse(await kubectl(["get", kind, name, ...ns, "-o", "json"])) as { status?: { conditions?: Cond[] } };
      const c = o.status?.conditions?.find((x) => x.type === "Loaded");
      return c?.observedGeneration === generation ? c : undefined;
    });
  const tp = (name: string, spec: unknown) => ({ apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name }, spec });

  before(async () => {
    cp = await startControlPlane({ name: "tracing-status-test" });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    op = new OperatorProcess("op-tracing", cp.kubeconfig, ["--controllers", "tracing", "--leader-elect", "false"]);
  });

  after(async () => {
    for (const ref of created) await cp?.kubectl(["delete", "--ignore-not-found", ...ref]);
    await op?.stop("SIGKILL");
    await cp?.stop();
  });

  it("names the hook the kernel cannot serve (Loaded=False, HookUnavailable) with a Warning Event", async () => {
    await apply(tp("write-watch", { kprobes: [{ call: "sys_write", syscall: true, args: [{ index: 0, type: "int" }] }] }));
    const c = await loaded("tracingpolicy", "write-watch");
    assert.equal(c.status, "False");
    assert.equal(c.reason, "HookUnavailable");
    assert.equal(
      c.message,
      "spec.kprobes[0] (kprobe sys_write): kprobes are not configured in this kernel, and sys_write is not in the translation table (exec, file-open and connect hooks); a tracepoint can observe it: tracepoints: [{subsystem: syscalls, event: sys_enter_write}]",
    );
    const events = await eventually("a HookUnavailable event", async () => {
      const out = await kubectl(["get", "events", "-A", "--field-selector", "involvedObject.name=write-watch,reason=HookUnavailable", "-o", "jsonpath={.items[*].message}"]);
      return out.includes("spec.kprobes[0] (kprobe sys_write)") ? out : undefined;
    });
    assert.match(events, /kprobes are not configured/);
    const table = await kubectl(["get", "tracingpolicy", "write-watch"]);
    // ENFORCED is empty: this operator runs no agent stream (nothing counts nodes).
    assert.match(table, /NAME\s+LOADED\s+REASON\s+ENFORCED\s+AGE\nwrite-watch\s+False\s+HookUnavailable\s+/);
  });

  it("follows an update: the same policy on the syscall tracepoint translates (NotLoadedYet, generation 2)", async () => {
    await apply(tp("write-watch", { tracepoints: [{ subsystem: "syscalls", event: "sys_enter_write", args: [{ index: 5 }] }] }));
    const c = await loaded("tracingpolicy", "write-watch", [], 2);
    assert.deepEqual([c.status, c.reason], ["False", "NotLoadedYet"]);
    assert.equal(c.message, "translates to: spec.tracepoints[0] (tracepoint syscalls/sys_enter_write) → tracepoint; the operator does not send TracingPolicies to the nodes yet (membrane runtime --policy-file enforces exec, file and connect hooks and syscall tracepoints on a node)");
  });

  it("says what the reference example translates to: fd_install with Sigkill → fanotify permission events", async () => {
    const seed = seedExamples().find((e) => e.object.kind === "TracingPolicy");
    assert.ok(seed);
    await apply(seed.object);
    const c = await loaded("tracingpolicy", "monitor-sensitive-files");
    assert.deepEqual([c.status, c.reason], ["False", "NotLoadedYet"]);
    assert.match(c.message, /spec\.kprobes\[0\] \(kprobe fd_install\) → file-permission/);
  });

  it("writes the same status on a TracingPolicyNamespaced, naming every unavailable hook", async () => {
    await apply({
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicyNamespaced",
      metadata: { name: "mixed", namespace: "default" },
      spec: {
        kprobes: [{ call: "tcp_connect", args: [{ index: 0, type: "sock" }], selectors: [{ matchArgs: [{ index: 0, operator: "DPort", values: ["4444"] }], matchActions: [{ action: "Override", argError: -1 }] }] }],
        uprobes: [{ path: "/bin/bash", symbols: ["readline"] }],
        lsmhooks: [{ hook: "bpf" }],
      },
    });
    const c = await loaded("tracingpolicynamespaced", "mixed", ["-n", "default"]);
    assert.equal(c.reason, "HookUnavailable");
    assert.equal(
      c.message,
      "spec.lsmhooks[0] (LSM hook bpf): BPF LSM programs fail to load on this kernel (EPERM), and bpf is not in the translation table (exec, file-open and connect hooks); " +
        "spec.uprobes[0] (uprobe /bin/bash): uprobes are not in the translation table (user-space hooks; only exec, file-open and connect kernel hooks and tracepoints are translated)",
    );
  });
});
