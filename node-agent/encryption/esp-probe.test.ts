// The ESP probe: the kernel's answers classified, and a real probe in a network namespace of its own (run under flock /tmp/membrane-kernel.lock).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { classifyEspProbe, probeEsp } from "./esp-probe.ts";
import { ipsecPublication } from "./ipsec.ts";

describe("ESP probe", () => {
  it("reads a kernel without ESP as KernelLacksESP, anything else as ProbeFailed", () => {
    assert.deepEqual(classifyEspProbe(0, ""), { ok: true });
    const noType = classifyEspProbe(2, "Error: Requested type not found.\n");
    assert.equal(noType.ok ? "" : noType.reason, "KernelLacksESP");
    const noAead = classifyEspProbe(2, "Error: Requested AEAD algorithm not found.\n");
    assert.ok(!noAead.ok && noAead.reason === "KernelLacksESP" && noAead.message.includes("Requested AEAD algorithm not found."));
    const perm = classifyEspProbe(2, "RTNETLINK answers: Operation not permitted\n");
    assert.ok(!perm.ok && perm.reason === "ProbeFailed" && perm.message.includes("Operation not permitted"));
  });

  it("publishes EncryptionReady=False with the probe's reason, and never claims a key", () => {
    assert.deepEqual(ipsecPublication({ ok: false, reason: "KernelLacksESP", message: "m" }), {
      condition: { type: "EncryptionReady", status: "False", reason: "KernelLacksESP", message: "m" },
      spec: { key: 0 },
    });
    assert.equal(ipsecPublication(undefined).condition.status, "Unknown");
    assert.equal(ipsecPublication({ ok: true }).condition.reason, "XfrmNotProgrammed");
  });

  describe("against this kernel", () => {
    const ns = `mbr-esp-${process.pid}`;
    before(() => execFileSync("ip", ["netns", "add", ns]));
    after(() => execFileSync("ip", ["netns", "del", ns]));

    it("tries a real XFRM state in the node's namespace and leaves none behind", async () => {
      const p = await probeEsp(ns);
      // This machine's kernel has no ESP (docs: "Requested type not found"); a kernel with ESP must take the state.
      const hasEsp = p.ok;
      if (!hasEsp) {
        assert.equal(p.reason, "KernelLacksESP", p.message);
        assert.match(p.message, /Requested (type|AEAD algorithm) not found/);
      }
      assert.equal(execFileSync("ip", ["-n", ns, "xfrm", "state", "list"]).toString().trim(), "", "no state left behind");
    });
  });
});
