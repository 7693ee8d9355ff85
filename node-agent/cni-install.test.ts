// The agent's CNI installation: the launcher runs the real plugin, and the conflist is one the plugin accepts.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CONFLIST_NAME, cniConflist, installCniPlugin, writeCniConflist } from "./cni-install.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-install-"));

describe("CNI installation by the agent", () => {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("installs an executable membrane-cni that answers VERSION as the plugin does", () => {
    const file = installCniPlugin(path.join(dir, "bin"));
    assert.equal(path.basename(file), "membrane-cni");
    assert.equal(fs.statSync(file).mode & 0o777, 0o755);
    const out = execFileSync(file, [], { env: { ...process.env, CNI_COMMAND: "VERSION" }, input: "{}" }).toString();
    assert.ok((JSON.parse(out) as { supportedVersions: string[] }).supportedVersions.includes("1.0.0"), out);
  });

  it("writes a conflist with the node's pod CIDR and the agent socket, and rewrites it only when it changes", () => {
    const conf = path.join(dir, "net.d");
    const first = writeCniConflist(conf, { podCIDR: "10.244.3.0/24", agentSocket: "/var/run/membrane/agent.sock" });
    assert.deepEqual(first, { file: path.join(conf, CONFLIST_NAME), changed: true });
    const list = JSON.parse(fs.readFileSync(first.file, "utf8")) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
    assert.equal(list.cniVersion, "1.0.0");
    assert.deepEqual(list.plugins, [{ type: "membrane-cni", podCIDR: "10.244.3.0/24", agentSocket: "/var/run/membrane/agent.sock", mtu: 1450 }]);
    assert.equal(writeCniConflist(conf, { podCIDR: "10.244.3.0/24", agentSocket: "/var/run/membrane/agent.sock" }).changed, false);
    assert.equal(writeCniConflist(conf, { podCIDR: "10.244.4.0/24", agentSocket: "/var/run/membrane/agent.sock" }).changed, true);
    assert.deepEqual(fs.readdirSync(conf), [CONFLIST_NAME], "no temporary file left");
  });

  it("refuses a pod CIDR the plugin would refuse, naming the field", () => {
    assert.throws(() => cniConflist({ podCIDR: "10.244.3.0/33", agentSocket: "/s" }), /podCIDR/);
  });
});
