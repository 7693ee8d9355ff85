// Each test file's wall time and its failed tests: a reporter for node's test runner (one JSON line per file, from its
// summary, and one per failed test) and, run as a script over those lines, the slowest files then every failed test, so
// every `make test` log says where its minutes went and ends with what failed (a CI log's tail is often all one sees).
import { readFileSync } from "node:fs";
import { relative } from "node:path";

interface FileTiming {
  file: string;
  ms: number;
  ok: boolean;
}

/** A test that failed on its own account (not only because a subtest or its parent did), with its error's first line. */
interface FailedTest {
  file: string;
  test: string;
  error: string;
}

interface RunnerError {
  message?: string;
  failureType?: string;
  cause?: unknown;
}

interface RunnerEvent {
  type: string;
  data: { file?: string; duration_ms?: number; success?: boolean; name?: string; details?: { error?: RunnerError } };
}

/** Failures that only echo another: a suite whose subtests failed, a test its failed parent cancelled. */
const ECHOED_FAILURES = new Set(["subtestsFailed", "cancelledByParent"]);

/** The first line of what a failed test threw (the runner wraps it: the cause is the test's own error). */
function firstLine(error: RunnerError | undefined): string {
  const cause = error?.cause;
  const message = cause instanceof Object && "message" in cause && typeof cause.message === "string" ? cause.message : (error?.message ?? "");
  const line = message.split("\n").find((l) => l.trim() !== "") ?? "";
  return line.length > 240 ? `${line.slice(0, 240)}…` : line;
}

/** The reporter: one `{"file","ms","ok"}` line per test file as its run ends (the runner's per-file summary), and one
 *  `{"file","test","error"}` line per test that failed on its own account. */
export default async function* fileTimings(source: AsyncIterable<RunnerEvent>): AsyncGenerator<string> {
  for await (const event of source) {
    if (event.type === "test:fail" && event.data.file !== undefined && event.data.name !== undefined) {
      const error = event.data.details?.error;
      if (ECHOED_FAILURES.has(error?.failureType ?? "")) continue;
      const failed: FailedTest = { file: event.data.file, test: event.data.name, error: firstLine(error) };
      yield `${JSON.stringify(failed)}\n`;
      continue;
    }
    if (event.type !== "test:summary" || event.data.file === undefined) continue;
    const timing: FileTiming = { file: event.data.file, ms: Math.round(event.data.duration_ms ?? 0), ok: event.data.success === true };
    yield `${JSON.stringify(timing)}\n`;
  }
}

/** Reads the reporter's lines from each file (a missing file is a lane that never started: skipped). */
export function readTimings(paths: readonly string[]): { timings: FileTiming[]; failures: FailedTest[] } {
  const timings: FileTiming[] = [];
  const failures: FailedTest[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      const record = JSON.parse(line) as FileTiming | FailedTest;
      if ("test" in record) failures.push(record);
      else timings.push(record);
    }
  }
  return { timings, failures };
}

/** The table printed at the end of a run: the `top` slowest files, then the sum over all of them. */
export function slowestTable(timings: readonly FileTiming[], top: number, root: string): string {
  const sorted = [...timings].sort((a, b) => b.ms - a.ms);
  const total = sorted.reduce((sum, t) => sum + t.ms, 0);
  const lines = [`slowest test files (of ${sorted.length}, ${(total / 60_000).toFixed(1)} min summed over files):`];
  for (const t of sorted.slice(0, top)) {
    lines.push(`${(t.ms / 1000).toFixed(1).padStart(8)} s  ${t.ok ? "  " : "✖ "}${relative(root, t.file)}`);
  }
  return lines.join("\n");
}

/** The run's last lines: every file that did not pass and every test that failed in it, or nothing when all passed. */
export function failureList(timings: readonly FileTiming[], failures: readonly FailedTest[], root: string): string {
  const failedFiles = timings.filter((t) => !t.ok).map((t) => t.file);
  for (const f of failures) if (!failedFiles.includes(f.file)) failedFiles.push(f.file);
  if (failedFiles.length === 0) return "";
  const lines = [`failed: ${failures.length} test(s) in ${failedFiles.length} file(s):`];
  for (const file of failedFiles) {
    const own = failures.filter((f) => f.file === file);
    if (own.length === 0) lines.push(`  ✖ ${relative(root, file)} (the file failed outside any test)`);
    for (const f of own) lines.push(`  ✖ ${relative(root, file)} › ${f.test}${f.error === "" ? "" : `: ${f.error}`}`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const [root = process.cwd(), ...paths] = process.argv.slice(2);
  const { timings, failures } = readTimings(paths);
  console.log(slowestTable(timings, 25, root));
  const failed = failureList(timings, failures, root);
  if (failed !== "") console.log(`\n${failed}`);
}
