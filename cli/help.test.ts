// Every command `membrane --help` lists works: its own --help exits 0 with a usage text, never "not available in this build".
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));

function membrane(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(MEMBRANE, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, out: stdout + stderr });
    });
  });
}

test("every command listed by membrane --help answers its own --help with a usage, none says it is not available", async () => {
  const top = await membrane("--help");
  assert.equal(top.code, 0);
  const listed = [...top.out.slice(top.out.indexOf("commands:")).matchAll(/^ {2}(\S+) /gm)].map((m) => m[1] ?? "");
  assert.ok(listed.includes("status"), `status is listed: ${listed.join(", ")}`);
  // Two at a time (the machine's cores): all at once, each start waited behind the others and a loaded machine
  // (load 35+) took most of one command's 60 s.
  const answers: { command: string; code: number; out: string }[] = [];
  const queue = [...listed];
  const worker = async (): Promise<void> => {
    for (let command = queue.shift(); command !== undefined; command = queue.shift()) answers.push({ command, ...(await membrane(command, "--help")) });
  };
  await Promise.all([worker(), worker()]);
  assert.equal(answers.length, listed.length);
  for (const a of answers) {
    assert.doesNotMatch(a.out, /not available/i, `membrane ${a.command} --help: ${a.out}`);
    assert.equal(a.code, 0, `membrane ${a.command} --help exits 0: ${a.out}`);
    assert.match(a.out, /usage: membrane /, `membrane ${a.command} --help prints a usage`);
  }
});
