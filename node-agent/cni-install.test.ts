// The agent's CNI installation: the launcher runs the real plugin, and the conflist is one the plugin accepts.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
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

  it("membrane cni-install --bin-dir DIR installs it and exits (the chart's init container); a bad flag is exit 2 naming it", () => {
    const membrane = path.join(REPO, "bin/membrane");
    const target = path.join(dir, "init-bin");
    const out = execFileSync(membrane, ["cni-install", `--bin-dir=${target}`], { encoding: "utf8" });
    assert.match(out, /"CNI plugin installed"/);
    assert.equal(fs.statSync(path.join(target, "membrane-cni")).mode & 0o777, 0o755);
    for (const [args, flag] of [[["cni-install", "--bin-dir=relative"], /--bin-dir: an absolute directory/], [["cni-install", "--nope"], /unknown flag --nope/]] as const) {
      try {
        execFileSync(membrane, [...args], { stdio: "pipe" });
        assert.fail(`${args.join(" ")} succeeded`);
      } catch (e) {
        assert.equal((e as { status: number }).status, 2);
        assert.match(String((e as { stderr: Buffer }).stderr), flag);
      }
    }
  });

  it("refuses a pod CIDR the plugin would refuse, naming the field", () => {
    assert.throws(() => cniConflist({ podCIDR: "10.244.3.0/33", agentSocket: "/s" }), /podCIDR/);
  });
});

describe("CNI installation by an agent installed without sources (the image)", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-image-"));
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-bin-"));
  const state = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-state-"));
  const tag = `mbrinst${process.pid}`;
  const netns: string[] = [];
  after(() => {
    for (const ns of netns) execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
    for (const d of [root, bin, state]) fs.rmSync(d, { recursive: true, force: true });
  });
  const env = (over: Record<string, string>): NodeJS.ProcessEnv => ({ PATH: "/usr/sbin:/usr/bin:/sbin:/bin", CNI_PATH: bin, ...over });

  it("copies its plugin, one executable with Node inside, to the node, which runs it once the installation is gone", async () => {
    // The image's layout: the bundle (with the executable), no TypeScript, no tsx, and no Node for the node.
    await bundle(REPO, path.join(root, "dist"), { executable: true });
    fs.mkdirSync(path.join(bin, "membrane-cni.d", "0123456789abcdef"), { recursive: true }); // what an older agent left
    const file = installCniPlugin(bin, root);
    const { mtimeMs } = fs.statSync(file);
    assert.equal(installCniPlugin(bin, root), file, "installed again (an agent restart)");
    assert.equal(fs.statSync(file).mtimeMs, mtimeMs, "nothing copied anew");
    assert.deepEqual(fs.readdirSync(bin), ["membrane-cni"], "one file on the node: the older bundle directory is gone");
    assert.equal(fs.statSync(file).mode & 0o777, 0o755);
    assert.deepEqual([...fs.readFileSync(file).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "an ELF executable, not a script needing an interpreter");
    fs.rmSync(root, { recursive: true, force: true });
    const out = execFileSync(file, [], { env: env({ CNI_COMMAND: "VERSION" }), input: "{}" }).toString();
    assert.ok((JSON.parse(out) as { supportedVersions: string[] }).supportedVersions.includes("1.0.0"), out);
    // A bad config reaches the plugin's parser: the CNI error names the field.
    let err = "";
    try {
      execFileSync(file, [], { env: env({ CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "eth0" }), input: JSON.stringify({ cniVersion: "1.0.0", name: "membrane", type: "membrane-cni", podCIDR: "10.244.3.0/33" }) });
    } catch (e) {
      err = String((e as { stdout: Buffer }).stdout);
    }
    assert.match(err, /podCIDR/);
  });

  it("wires a pod with the installed executable (IPAM under its flock through koffi from inside it) and releases it on DEL", async () => {
    const file = path.join(bin, "membrane-cni");
    for (const n of ["node", "pod"]) {
      execFileSync("ip", ["netns", "add", `${tag}-${n}`]);
      netns.push(`${tag}-${n}`);
    }
    const conf = JSON.stringify({ cniVersion: "1.0.0", name: "membrane", type: "membrane-cni", podCIDR: "10.251.9.0/24", stateDir: state, logLevel: "silent" });
    const run = (command: string): string =>
      execFileSync("ip", ["netns", "exec", `${tag}-node`, file], {
        env: env({ CNI_COMMAND: command, CNI_CONTAINERID: "c-image", CNI_NETNS: `/var/run/netns/${tag}-pod`, CNI_IFNAME: "eth0", CNI_ARGS: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p" }),
        input: conf,
      }).toString();
    const result = JSON.parse(run("ADD")) as { ips: { address: string }[] };
    assert.match(result.ips[0]!.address, /^10\.251\.9\.\d+\/32$/);
    const inPod = execFileSync("ip", ["-n", `${tag}-pod`, "-o", "-4", "addr", "show", "dev", "eth0"]).toString();
    assert.ok(inPod.includes(result.ips[0]!.address.split("/")[0]!), inPod);
    assert.match(fs.readFileSync(path.join(state, "allocations.json"), "utf8"), /c-image/);
    assert.ok(fs.readdirSync(bin).some((f) => f.startsWith(".membrane-cni-koffi-")), "koffi's native module written beside the executable");
    run("DEL");
    assert.doesNotMatch(fs.readFileSync(path.join(state, "allocations.json"), "utf8"), /c-image/);
    // An invocation whose executable is removed while it runs (an uninstall, `membrane node cleanup`) loads koffi all the
    // same and leaves no native module in the emptied bin dir; the same executable left in place writes one.
    const late = async (removeFirst: boolean): Promise<string[]> => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-cni-late-"));
      try {
        const copy = path.join(dir, "membrane-cni");
        fs.copyFileSync(file, copy);
        fs.chmodSync(copy, 0o755);
        const child = spawn(copy, [], { env: env({ CNI_COMMAND: "DEL", CNI_CONTAINERID: "c-late", CNI_NETNS: "", CNI_IFNAME: "eth0" }), stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (c: Buffer) => (out += c.toString()));
        child.stderr.on("data", (c: Buffer) => (out += c.toString()));
        await new Promise((r) => child.once("spawn", r));
        // Exec'd: the file can go now; the plugin reads its configuration first, then takes the IPAM lock through koffi.
        if (removeFirst) fs.rmSync(copy);
        child.stdin.end(conf);
        const code = await new Promise((r) => child.once("close", r));
        assert.equal(code, 0, out);
        return fs.readdirSync(dir).filter((f) => f.startsWith(".membrane-cni-koffi-"));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    assert.equal((await late(false)).length, 1, "the executable in place writes koffi's module beside itself");
    assert.deepEqual(await late(true), [], "nothing left beside an executable removed during the invocation");
    // Installing a changed executable removes the native module the old one wrote.
    fs.mkdirSync(path.join(root, "dist", "cni"), { recursive: true });
    fs.writeFileSync(path.join(root, "dist", "cni", "membrane-cni"), "#!/bin/sh\n");
    installCniPlugin(bin, root);
    assert.deepEqual(fs.readdirSync(bin), ["membrane-cni"]);
  });
});
