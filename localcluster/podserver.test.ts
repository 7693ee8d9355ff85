// The pod server a local pod runs: a pod without ports stays up like a sleeping container, and stops on SIGTERM.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

const SERVER = new URL("./podserver.ts", import.meta.url).pathname;

test("a pod with no containerPorts keeps running until SIGTERM, then exits 0", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", SERVER, "--name", "idle"], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 200 && !out.includes("ready"); i++) await sleep(50);
    assert.match(out, /ready/);
    await sleep(500);
    assert.equal(child.exitCode, null, "the pod server exited although nobody stopped it");
    child.kill("SIGTERM");
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});
