// `membrane dev up/status/env/down` against a real control plane in a temp state dir: idempotent, crash-safe, leaves nothing behind.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { ensureControlPlaneBuilt, isProcessAlive } from "./cluster.ts";

const membrane = fileURLToPath(new URL("../bin/membrane", import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(devDir: string, args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(
      membrane,
      ["dev", ...args],
      { env: { ...process.env, MEMBRANE_DEV_DIR: devDir, ...extraEnv } },
      (err, stdout, stderr) =>
        done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

function pidIn(devDir: string): number {
  return Number.parseInt(readFileSync(join(devDir, "controlplane.pid"), "utf8"), 10);
}

async function waitGone(pid: number, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (isProcessAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
}

describe("membrane dev", { timeout: 60 * 60_000 }, () => {
  let parent: string;
  let devDir: string;
  const started: number[] = [];

  before(async () => {
    await ensureControlPlaneBuilt();
    parent = await mkdtemp(join(tmpdir(), "membrane-dev-test-"));
    devDir = join(parent, "dev");
  });

  after(async () => {
    // Whatever happened above: stop what this test started, by pid, then remove its files.
    await cli(devDir, ["down"]);
    for (const pid of started) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(devDir)) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await rm(parent, { recursive: true, force: true });
  });

  test("status and env say nothing runs before up", async () => {
    const status = await cli(devDir, ["status"]);
    assert.equal(status.code, 1);
    assert.match(status.stdout, /not running/);
    const env = await cli(devDir, ["env"]);
    assert.equal(env.code, 1);
    assert.match(env.stderr, /dev up/);
  });

  test("up starts a control plane that outlives the CLI; a second up says it is running", async () => {
    const up = await cli(devDir, ["up"]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /control plane running at https:\/\/127\.0\.0\.1:\d+/);
    const pid = pidIn(devDir);
    started.push(pid);
    assert.ok(isProcessAlive(pid), "the control plane outlives `dev up`");

    const again = await cli(devDir, ["up"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already running/);
    assert.equal(pidIn(devDir), pid, "no second process");
  });

  test("status reports ready and env points kubectl at it", async () => {
    const status = await cli(devDir, ["status"]);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    assert.match(status.stdout, /running/);
    assert.match(status.stdout, /ready: yes/);

    const env = await cli(devDir, ["env"]);
    assert.equal(env.code, 0, env.stderr);
    const m = /^export KUBECONFIG=(\S+)\n$/.exec(env.stdout);
    assert.ok(m?.[1], env.stdout);
    const ns = await new Promise<Run>((done) =>
      execFile(
        "kubectl",
        [
          `--kubeconfig=${m[1]}`,
          `--cache-dir=${join(parent, "kube-cache")}`,
          "get",
          "ns",
          "default",
          "-o",
          "name",
        ],
        (err, stdout, stderr) => done({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    assert.equal(ns.stdout.trim(), "namespace/default", ns.stderr);
  });

  test("up after a crash cleans up the stale pid file and starts again", async () => {
    const crashed = pidIn(devDir);
    process.kill(crashed, "SIGKILL");
    await waitGone(crashed);
    const status = await cli(devDir, ["status"]);
    assert.match(status.stdout, /not running/);

    const up = await cli(devDir, ["up"]);
    assert.equal(up.code, 0, up.stderr);
    const pid = pidIn(devDir);
    started.push(pid);
    assert.notEqual(pid, crashed);
    assert.equal((await cli(devDir, ["status"])).code, 0);
  });

  test("down stops exactly that process and leaves no file; a second down is fine", async () => {
    const pid = pidIn(devDir);
    const down = await cli(devDir, ["down"]);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /stopped/);
    await waitGone(pid, 5_000);
    assert.equal(isProcessAlive(pid), false, `process ${pid} still exists`);
    assert.equal(existsSync(devDir), false, `${devDir} still exists`);

    const again = await cli(devDir, ["down"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /not running/);
  });

  test("rejects unknown subcommands and arguments", async () => {
    const bad = await cli(devDir, ["frobnicate"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown subcommand "frobnicate"/);
    const extra = await cli(devDir, ["up", "--bogus"]);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /unexpected argument "--bogus"/);
  });
});
