// The local control plane: a real kube-apiserver + etcd that kubectl and helm work against, loopback only, stopped cleanly.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { destroyControlPlane, isProcessAlive, startControlPlane, type ControlPlane } from "./cluster.ts";

const BUILD_AND_START_MS = 60 * 60_000; // the first build of kube-apiserver is long; later runs hit the cache

/** The TCP listeners owned by pid, as "address:port" strings, from /proc/net/tcp{,6} and the process's fds. */
function listenersOf(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1]) inodes.add(m[1]);
    } catch {
      // fd closed while we looked
    }
  }
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [local, state, inode] = [cols[1], cols[3], cols[9]];
      if (state === "0A" && local && inode && inodes.has(inode)) out.push(decodeAddress(local));
    }
  }
  return out;
}

function decodeAddress(hex: string): string {
  const [addr = "", port = ""] = hex.split(":");
  const words = addr.match(/.{8}/g) ?? [];
  // Each 32-bit word is in host (little-endian) byte order.
  const bytes = words.flatMap((w) => (w.match(/../g) ?? []).reverse().map((b) => Number.parseInt(b, 16)));
  const ip =
    bytes.length === 4
      ? bytes.join(".")
      : Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16)).join(
          ":",
        );
  return `${ip}:${Number.parseInt(port, 16)}`;
}

function isLoopback(hostPort: string): boolean {
  const host = hostPort.slice(0, hostPort.lastIndexOf(":"));
  return host.startsWith("127.") || host === "0:0:0:0:0:0:0:1" || host.startsWith("0:0:0:0:0:ffff:7f");
}

describe("local control plane", { timeout: BUILD_AND_START_MS }, () => {
  let cp: ControlPlane;
  let scratch: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "membrane-cp-test-"));
    cp = await startControlPlane({ name: "cp-test" });
  });

  after(async () => {
    await cp?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  test("serves /readyz over TLS with the admin kubeconfig", async () => {
    assert.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/);
    const res = await cp.kubectl(["get", "--raw", "/readyz"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), "ok");
    const who = await cp.kubectl(["auth", "can-i", "*", "*"]);
    assert.equal(who.stdout.trim(), "yes", "the admin user is in system:masters");
    const version = await cp.kubectl(["version", "-o", "json"]);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(
      (JSON.parse(version.stdout) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion,
      "v1.36.3",
    );
  });

  test("kubectl creates and reads back a namespace and a ConfigMap", async () => {
    let res = await cp.kubectl(["create", "namespace", "cp-test"]);
    assert.equal(res.code, 0, res.stderr);
    res = await cp.kubectl([
      "-n",
      "cp-test",
      "create",
      "configmap",
      "greeting",
      "--from-literal=hello=world",
    ]);
    assert.equal(res.code, 0, res.stderr);
    res = await cp.kubectl(["-n", "cp-test", "get", "configmap", "greeting", "-o", "json"]);
    assert.equal(res.code, 0, res.stderr);
    const cm = JSON.parse(res.stdout) as { data: Record<string, string>; metadata: { namespace: string } };
    assert.deepEqual(cm.data, { hello: "world" });
    assert.equal(cm.metadata.namespace, "cp-test");
  });

  test("rejects a client without a certificate (no anonymous access)", async () => {
    const status = await new Promise<number | undefined>((done, reject) => {
      const req = request(`${cp.server}/api/v1/namespaces`, { ca: readFileSync(cp.caFile) }, (res) => {
        res.resume();
        done(res.statusCode);
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 401);
  });

  test("helm installs and uninstalls a chart", async () => {
    const version = await cp.helm(["version", "--short"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^v3\./);

    const chart = join(scratch, "tiny");
    await mkdir(join(chart, "templates"), { recursive: true });
    await writeFile(join(chart, "Chart.yaml"), "apiVersion: v2\nname: tiny\nversion: 0.1.0\n");
    await writeFile(
      join(chart, "templates", "configmap.yaml"),
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  colour: {{ .Values.colour | quote }}\n",
    );
    await writeFile(join(chart, "values.yaml"), "colour: blue\n");

    let res = await cp.helm([
      "install",
      "tiny",
      chart,
      "-n",
      "helm-test",
      "--create-namespace",
      "--wait",
      "--timeout",
      "60s",
    ]);
    assert.equal(res.code, 0, res.stderr);
    res = await cp.kubectl([
      "-n",
      "helm-test",
      "get",
      "configmap",
      "tiny-config",
      "-o",
      "jsonpath={.data.colour}",
    ]);
    assert.equal(res.stdout, "blue", res.stderr);
    res = await cp.helm(["list", "-n", "helm-test", "-o", "json"]);
    assert.equal((JSON.parse(res.stdout) as { name: string; status: string }[])[0]?.status, "deployed");

    res = await cp.helm(["uninstall", "tiny", "-n", "helm-test", "--wait"]);
    assert.equal(res.code, 0, res.stderr);
    res = await cp.kubectl(["-n", "helm-test", "get", "configmap", "tiny-config"]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /NotFound|not found/);
  });

  test("listens on loopback only", () => {
    const listeners = listenersOf(cp.pid);
    // kube-apiserver, etcd client and etcd peer at least.
    assert.ok(listeners.length >= 3, `listeners: ${listeners.join(", ")}`);
    const exposed = listeners.filter((l) => !isLoopback(l));
    assert.deepEqual(exposed, [], `non-loopback listeners: ${exposed.join(", ")}`);
    assert.ok(listeners.includes(`127.0.0.1:${new URL(cp.server).port}`));
  });

  test("restart keeps the data and serves on the same address", async () => {
    const before = cp.pid;
    await cp.restart();
    assert.notEqual(cp.pid, before);
    assert.equal(isProcessAlive(before), false, "the old process is gone");
    const res = await cp.kubectl([
      "-n",
      "cp-test",
      "get",
      "configmap",
      "greeting",
      "-o",
      "jsonpath={.data.hello}",
    ]);
    assert.equal(res.stdout, "world", res.stderr);
  });

  test("stop leaves no process and no dir", async () => {
    const { pid, dir } = cp;
    await cp.stop();
    assert.equal(isProcessAlive(pid), false, `process ${pid} still exists`);
    assert.equal(existsSync(dir), false, `${dir} still exists`);
    await cp.stop(); // idempotent
  });
});

describe("a control plane whose test process dies", { timeout: BUILD_AND_START_MS }, () => {
  test("shuts itself down, and the next start in that dir cleans up", async () => {
    const dir = await mkdtemp(join(tmpdir(), "membrane-cp-orphan-"));
    const owner = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `import { startControlPlane } from ${JSON.stringify(new URL("./cluster.ts", import.meta.url).href)};
         const cp = await startControlPlane({ dir: ${JSON.stringify(dir)} });
         process.stdout.write(cp.pid + "\\n");
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      const pid = await new Promise<number>((done, reject) => {
        owner.stdout.on("data", (chunk: Buffer) => done(Number.parseInt(chunk.toString(), 10)));
        owner.on("exit", (code) =>
          reject(new Error(`owner exited with ${code} before the control plane was ready`)),
        );
      });
      assert.ok(isProcessAlive(pid));
      owner.kill("SIGKILL"); // a test runner that crashes: no stop() is ever called
      const until = Date.now() + 30_000;
      while (isProcessAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
      assert.equal(isProcessAlive(pid), false, `control plane ${pid} outlived its parent`);
      assert.ok(existsSync(join(dir, "controlplane.pid")), "the crashed run left its pid file");

      const next = await startControlPlane({ dir });
      assert.notEqual(next.pid, pid);
      assert.equal((await next.kubectl(["get", "--raw", "/readyz"])).stdout.trim(), "ok");
      await next.stop();
      assert.equal(existsSync(dir), false);
    } finally {
      owner.kill("SIGKILL");
      await destroyControlPlane(dir);
    }
  });
});
