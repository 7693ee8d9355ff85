// Shutdown steps are bounded and named in the log; a stop that hangs meets the backstop; a second signal exits at once.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { pino } from "pino";
import { shutdownStep } from "./shutdown.ts";

function captured(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "info" }, sink), lines };
}

const SHUTDOWN = fileURLToPath(new URL("./shutdown.ts", import.meta.url));

/** A process whose stop never finishes: it logs, waits for signals, and hangs after the first. */
function hangingProcess(backstopMs: number): { exited: Promise<{ code: number | null; ms: number; out: string }>; ready: Promise<void>; pid: number; signalledAt: { t: number } } {
  const script = `import { pino } from "pino"; import { onTermination } from ${JSON.stringify(SHUTDOWN)};
    const t = onTermination(pino(), ${backstopMs}); setInterval(() => {}, 1000); console.log("ready"); await t.signal; // the stop never finishes`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  const signalledAt = { t: 0 };
  const ready = new Promise<void>((resolve) => child.stdout.on("data", (c: Buffer) => ((out += c.toString()), out.includes("ready") && resolve())));
  const exited = new Promise<{ code: number | null; ms: number; out: string }>((resolve) => child.on("exit", (code) => resolve({ code, ms: Date.now() - signalledAt.t, out })));
  return { exited, ready, pid: child.pid ?? -1, signalledAt };
}

describe("shutdown", { timeout: 30_000 }, () => {
  it("a step that finishes returns true and logs nothing", async () => {
    const { log, lines } = captured();
    assert.equal(await shutdownStep(log, "fast", 500, async () => {}), true);
    assert.deepEqual(lines, []);
  });

  it("a step that overruns its bound is left behind with one warn line naming it", async () => {
    const { log, lines } = captured();
    const t0 = Date.now();
    assert.equal(await shutdownStep(log, "lease", 100, () => new Promise(() => {})), false);
    assert.ok(Date.now() - t0 < 1_000);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.step, "lease");
    assert.equal(lines[0]?.timeoutMs, 100);
    assert.equal(lines[0]?.level, 40);
  });

  it("a step that fails logs its error and the shutdown goes on", async () => {
    const { log, lines } = captured();
    assert.equal(await shutdownStep(log, "informers", 500, () => Promise.reject(new Error("connection reset"))), false);
    assert.equal(lines[0]?.step, "informers");
    assert.equal(lines[0]?.err, "connection reset");
  });

  it("a process whose stop hangs exits 1 at the backstop; a second signal exits at once with 128 + its number", async () => {
    const hung = hangingProcess(300);
    const twice = hangingProcess(60_000);
    await Promise.all([hung.ready, twice.ready]);
    hung.signalledAt.t = twice.signalledAt.t = Date.now();
    process.kill(hung.pid, "SIGTERM");
    process.kill(twice.pid, "SIGTERM");
    await new Promise((r) => setTimeout(r, 100));
    process.kill(twice.pid, "SIGINT");
    const [a, b] = await Promise.all([hung.exited, twice.exited]);
    assert.equal(a.code, 1, a.out);
    assert.ok(a.ms >= 300 && a.ms < 3_000, `backstop exit after ${a.ms} ms`);
    assert.match(a.out, /shutdown did not finish within its bound/);
    assert.equal(b.code, 130, b.out);
    assert.ok(b.ms < 2_000, `second signal exit after ${b.ms} ms`);
    assert.match(b.out, /second signal: exiting at once/);
  });
});
