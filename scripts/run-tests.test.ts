// scripts/run-tests.sh (what `make test` runs): a file named with --beside runs at the same time as the others, its
// output after theirs; a failure in either runner fails the run; the run ends with each file's time, slowest first, then
// every failed test by file and name.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

const RUN_TESTS = fileURLToPath(new URL("./run-tests.sh", import.meta.url));
const REPO = fileURLToPath(new URL("..", import.meta.url));

/** A test file that records when it starts and ends (ms since the epoch) in DIR/NAME.times, holding for `holdMs`. */
function fixture(dir: string, name: string, holdMs: number, fail = false): string {
  return `import { test } from "node:test";
import { appendFileSync } from "node:fs";
test(${JSON.stringify(`${name} holds`)}, async () => {
  appendFileSync(${JSON.stringify(join(dir, `${name}.times`))}, Date.now() + "\\n");
  await new Promise((resolve) => setTimeout(resolve, ${holdMs}));
  appendFileSync(${JSON.stringify(join(dir, `${name}.times`))}, Date.now() + "\\n");
  if (${fail}) throw new Error(${JSON.stringify(`${name} failed on purpose`)});
});
`;
}

function run(args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    // Without NODE_TEST_CONTEXT: under it a nested runner thinks it is inside this file's and skips its files.
    const env = { ...process.env, NODE_TEST_CONTEXT: undefined };
    execFile("bash", [RUN_TESTS, ...args], { env, maxBuffer: 16 * 1024 * 1024 }, (error, stdout) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout });
    });
  });
}

async function times(dir: string, name: string): Promise<[number, number]> {
  const [start, end] = (await readFile(join(dir, `${name}.times`), "utf8")).trim().split("\n").map(Number);
  return [start!, end!];
}

describe("scripts/run-tests.sh", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "membrane-run-tests-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("runs a --beside file at the same time as the others, prints its output after theirs, and ends with every file's time", async () => {
    const cases = join(dir, "pass");
    await mkdir(cases);
    await writeFile(join(cases, "a-main.test.ts"), fixture(dir, "a-main", 3000));
    await writeFile(join(cases, "b-beside.test.ts"), fixture(dir, "b-beside", 3000));
    const beside = join(cases, "b-beside.test.ts");
    const { code, stdout } = await run(["--beside", beside, cases]);
    assert.equal(code, 0, stdout);
    const [mainStart, mainEnd] = await times(dir, "a-main");
    const [besideStart, besideEnd] = await times(dir, "b-beside");
    assert.ok(besideStart < mainEnd && mainStart < besideEnd, `the two files overlapped in time: main ${mainStart}-${mainEnd}, beside ${besideStart}-${besideEnd}`);
    const header = stdout.indexOf("(ran beside the others)");
    assert.ok(header > stdout.indexOf("a-main holds"), "the beside file's output comes after the others'");
    assert.ok(stdout.indexOf("b-beside holds") > header, stdout);
    const table = stdout.slice(stdout.indexOf("slowest test files (of 2"));
    assert.match(table, /\d+\.\d s {4}.*a-main\.test\.ts/);
    assert.match(table, /\d+\.\d s {4}.*b-beside\.test\.ts/);
  });

  it("fails the run when only the beside file fails, marks it in the table and ends with the failed test's name and error", async () => {
    const cases = join(dir, "fail");
    await mkdir(cases);
    await writeFile(join(cases, "a-main.test.ts"), fixture(join(dir, "fail"), "a-main", 10));
    await writeFile(join(cases, "b-beside.test.ts"), fixture(join(dir, "fail"), "b-beside", 10, true));
    const { code, stdout } = await run(["--beside", join(cases, "b-beside.test.ts"), cases]);
    assert.notEqual(code, 0, stdout);
    assert.match(stdout, /b-beside failed on purpose/);
    assert.match(stdout, /✖ .*b-beside\.test\.ts/);
    assert.match(stdout, /beside them .*b-beside\.test\.ts \d+ s \(their files' sum\)/, "the beside runner's time counts only its files' timings, not its failure lines");
    const tail = stdout.trimEnd().split("\n").slice(-2);
    assert.deepEqual(tail, ["failed: 1 test(s) in 1 file(s):", `  ✖ ${relative(REPO, join(cases, "b-beside.test.ts"))} › b-beside holds: b-beside failed on purpose`], stdout);
  });
});
