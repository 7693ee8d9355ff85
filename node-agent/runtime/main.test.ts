// `membrane runtime` flags: the export file is required, the metrics address is HOST:PORT, the node name defaults to
// the host's; the policy, status and pods files are optional (a status file only with a policy file).
import assert from "node:assert/strict";
import os from "node:os";
import { describe, it } from "node:test";
import { parseRuntimeArgs } from "./main.ts";
import { runtimePinScopes } from "./pin-scopes.ts";

describe("membrane runtime flags", () => {
  it("reads the export file, node name and metrics address, with defaults", () => {
    assert.deepEqual(parseRuntimeArgs(["--export-file", "/var/run/membrane/process.log"]), {
      ok: true,
      value: { exportFile: "/var/run/membrane/process.log", bpfScope: "runtime", keepSensorsOnExit: false, nodeName: os.hostname(), metricsHost: "127.0.0.1", metricsPort: 9964 },
    });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--node-name", "n1", "--metrics-address", "0.0.0.0:9100"]), {
      ok: true,
      value: { exportFile: "f", bpfScope: "runtime", keepSensorsOnExit: false, nodeName: "n1", metricsHost: "0.0.0.0", metricsPort: 9100 },
    });
  });

  it("reads the host's cgroup v2 directory (connect hooks, containers' cgroups)", () => {
    const r = parseRuntimeArgs(["--export-file", "f", "--node-name", "n", "--cgroup-root", "/host/cgroupv2"]);
    assert.ok(r.ok && r.value.cgroupRoot === "/host/cgroupv2");
  });

  it("reads the pid file an agent with --external-runtime finds the runtime by", () => {
    const r = parseRuntimeArgs(["--export-file", "f", "--node-name", "n", "--pid-file", "/var/run/membrane/state/runtime.pid"]);
    assert.ok(r.ok && r.value.pidFile === "/var/run/membrane/state/runtime.pid");
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--pid-file", ""]), { ok: false, error: "--pid-file: empty path" });
  });

  it("--bpf-scope names its pins (default runtime: the scopes every earlier runtime pinned under, so theirs are adopted); refused naming the flag", () => {
    const r = parseRuntimeArgs(["--export-file", "f", "--bpf-scope", "test-rt-1"]);
    assert.ok(r.ok && r.value.bpfScope === "test-rt-1");
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--bpf-scope", "a/b"]), { ok: false, error: `--bpf-scope: must be letters, digits, '.', '_' or '-', got "a/b"` });
    assert.deepEqual(runtimePinScopes(), { sensor: "runtime", connect: "runtime-connect", tracepoint: "runtime-tracepoint" });
  });

  it("--keep-sensors-on-exit[=true|false] (off by default, as Tetragon's); only with a policy file; refused naming the flag", () => {
    const on = parseRuntimeArgs(["--export-file", "f", "--policy-file", "p.yaml", "--keep-sensors-on-exit"]);
    assert.ok(on.ok && on.value.keepSensorsOnExit);
    const explicit = parseRuntimeArgs(["--export-file", "f", "--policy-file", "p.yaml", "--keep-sensors-on-exit=false"]);
    assert.ok(explicit.ok && !explicit.value.keepSensorsOnExit);
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--policy-file", "p.yaml", "--keep-sensors-on-exit=yes"]), { ok: false, error: '--keep-sensors-on-exit: must be true or false, got "yes"' });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--keep-sensors-on-exit"]), { ok: false, error: "--keep-sensors-on-exit: needs --policy-file (what is kept enforces its policies until the next runtime reads it)" });
  });

  it("--ready-file: the file the pod's readiness probe tests (none by default)", () => {
    const r = parseRuntimeArgs(["--export-file", "f", "--policy-file", "p.yaml", "--ready-file", "/tmp/ready"]);
    assert.ok(r.ok && r.value.readyFile === "/tmp/ready");
    const none = parseRuntimeArgs(["--export-file", "f"]);
    assert.ok(none.ok && none.value.readyFile === undefined);
  });

  it("reads the policy, status and pods files", () => {
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--policy-file", "p.yaml", "--status-file", "s.json", "--pods-file", "pods.json", "--node-name", "n"]), {
      ok: true,
      value: { exportFile: "f", policyFile: "p.yaml", statusFile: "s.json", podsFile: "pods.json", bpfScope: "runtime", keepSensorsOnExit: false, nodeName: "n", metricsHost: "127.0.0.1", metricsPort: 9964 },
    });
  });

  it("refuses a missing export file, a bad address, a status file without policies and unknown flags, naming the flag", () => {
    assert.deepEqual(parseRuntimeArgs([]), { ok: false, error: "--export-file: required (where the events go)" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--metrics-address", "9100"]), { ok: false, error: '--metrics-address: "9100" is not HOST:PORT' });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--kprobes"]), { ok: false, error: "unknown flag --kprobes" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--status-file", "s"]), { ok: false, error: "--status-file: needs --policy-file (the statuses are the policies')" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--policy-file", ""]), { ok: false, error: "--policy-file: empty path" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--ready-file", ""]), { ok: false, error: "--ready-file: empty path" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--cgroup-root", "host/cgroupv2"]), { ok: false, error: '--cgroup-root: an absolute path is required, got "host/cgroupv2"' });
  });
});
