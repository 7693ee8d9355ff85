// `membrane runtime` flags: the export file is required, the metrics address is HOST:PORT, the node name defaults to the host's.
import assert from "node:assert/strict";
import os from "node:os";
import { describe, it } from "node:test";
import { parseRuntimeArgs } from "./main.ts";

describe("membrane runtime flags", () => {
  it("reads the export file, node name and metrics address, with defaults", () => {
    assert.deepEqual(parseRuntimeArgs(["--export-file", "/var/run/membrane/process.log"]), {
      ok: true,
      value: { exportFile: "/var/run/membrane/process.log", nodeName: os.hostname(), metricsHost: "127.0.0.1", metricsPort: 9964 },
    });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--node-name", "n1", "--metrics-address", "0.0.0.0:9100"]), {
      ok: true,
      value: { exportFile: "f", nodeName: "n1", metricsHost: "0.0.0.0", metricsPort: 9100 },
    });
  });

  it("refuses a missing export file, a bad address and unknown flags, naming the flag", () => {
    assert.deepEqual(parseRuntimeArgs([]), { ok: false, error: "--export-file: required (where the events go)" });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--metrics-address", "9100"]), { ok: false, error: '--metrics-address: "9100" is not HOST:PORT' });
    assert.deepEqual(parseRuntimeArgs(["--export-file", "f", "--kprobes"]), { ok: false, error: "unknown flag --kprobes" });
  });
});
