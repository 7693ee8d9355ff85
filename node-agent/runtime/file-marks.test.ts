// The fanotify marks the file enforcer asks for (marksFor): every hook its own, in this process's root and in each
// container root given (`/proc/PID/root` on a node; a directory standing for one here). No kernel needed.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { enforcementPlan, type EnforcementPlan } from "../../core/tracing-enforcement.ts";
import { FAN_OPEN_EXEC_PERM, FAN_OPEN_PERM } from "./fanotify.ts";
import { marksFor } from "./file-enforcer.ts";

function plan(kprobes: unknown[]): EnforcementPlan {
  const r = enforcementPlan({ apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "p" }, spec: { kprobes } });
  assert.ok(r.ok, JSON.stringify(r));
  return r.value;
}
const open = (values?: string[]) => ({
  call: "fd_install", syscall: false, args: [{ index: 0, type: "int" }, { index: 1, type: "file" }],
  selectors: [{ ...(values ? { matchArgs: [{ index: 1, operator: "Equal", values }] } : {}), matchActions: [{ action: "Override", argError: -1 }] }],
});
const exec = { call: "security_bprm_check", syscall: false, args: [{ index: 0, type: "linux_binprm" }], selectors: [{ matchActions: [{ action: "Override", argError: -1 }] }] };

describe("marksFor", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-marks-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("two hooks with no path filter each mark the root filesystem, one with the open mask and one with the exec mask", () => {
    const marks = marksFor(plan([open(), exec])).filter((m) => m.path === "/" && m.scope === "filesystem");
    assert.deepEqual(marks.map((m) => m.mask).sort(), [FAN_OPEN_PERM, FAN_OPEN_EXEC_PERM].sort());
  });

  it("an Equal path is marked at its directory in this root and in each container root, at the nearest directory that root has", () => {
    const withWww = path.join(dir, "a");
    const without = path.join(dir, "b");
    fs.mkdirSync(path.join(withWww, "www"), { recursive: true });
    fs.mkdirSync(without);
    const marks = marksFor(plan([open(["/www/index.html"])]), [withWww, without]).map((m) => [m.path, m.scope]);
    assert.deepEqual(marks.slice(1), [[path.join(withWww, "www"), "directory"], [without, "directory"]]);
    assert.equal(marks.length, 3, "this root's own mark first");
  });
});
