// The agent's CNI installation: the launcher runs the real plugin, and the conflist is one the plugin accepts.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "../scripts/bundle.ts";
import { CONFLIST_NAME, cniConflist, installCniPlugin, writeCniConflist } from "./cni-install.ts";

const REPO = fileURLToPath(new URL("..", import.meta.url));

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

describe("CNI installation by an agent installed without sources (the image)", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-image-"));
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-bin-"));
  after(() => {
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(bin, { recursive: true, force: true });
  });

  it("copies its built plugin with its own Node and koffi to the node, which runs it once the installation is gone", async () => {
    // The image's layout: the bundle and koffi, no TypeScript, no tsx.
    await bundle(REPO, path.join(root, "dist"));
    fs.mkdirSync(path.join(root, "node_modules"));
    for (const pkg of ["koffi", "@koromix"]) fs.cpSync(path.join(REPO, "node_modules", pkg), path.join(root, "node_modules", pkg), { recursive: true, dereference: true });
    const file = installCniPlugin(bin, root);
    assert.equal(installCniPlugin(bin, root), file, "installed again (an agent restart): nothing copied anew");
    assert.equal(fs.readdirSync(path.join(bin, "membrane-cni.d")).length, 1, "one version of the plugin on the node");
    fs.rmSync(root, { recursive: true, force: true });
    const out = execFileSync(file, [], { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: "VERSION" }, input: "{}" }).toString();
    assert.ok((JSON.parse(out) as { supportedVersions: string[] }).supportedVersions.includes("1.0.0"), out);
    // A bad config reaches the plugin's parser (koffi and pino loaded): the CNI error names the field.
    let err = "";
    try {
      execFileSync(file, [], { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "eth0", CNI_PATH: bin }, input: JSON.stringify({ cniVersion: "1.0.0", name: "membrane", type: "membrane-cni", podCIDR: "10.244.3.0/33" }) });
    } catch (e) {
      err = String((e as { stdout: Buffer }).stdout);
    }
    assert.match(err, /podCIDR/);
  });
});
