// Each test file's wall time: a reporter for node's test runner (one JSON line per file, from its summary) and, run as a
// script over those lines, the slowest files, so every `make test` log says where its minutes went.
import { readFileSync } from "node:fs";
import { relative } from "node:path";

interface FileTiming {
  file: string;
  ms: number;
  ok: boolean;
}

interface SummaryEvent {
  type: string;
  data: { file?: string; duration_ms?: number; success?: boolean };
}

/** The reporter: one `{"file","ms","ok"}` line per test file as its run ends (the runner's per-file summary). */
export default async function* fileTimings(source: AsyncIterable<SummaryEvent>): AsyncGenerator<string> {
  for await (const event of source) {
    if (event.type !== "test:summary" || event.data.file === undefined) continue;
    const timing: FileTiming = { file: event.data.file, ms: Math.round(event.data.duration_ms ?? 0), ok: event.data.success === true };
    yield `${JSON.stringify(timing)}\n`;
  }
}

/** Reads the reporter's lines from each file (a missing file is a lane that never started: skipped). */
export function readTimings(paths: readonly string[]): FileTiming[] {
  const timings: FileTiming[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) if (line.trim() !== "") timings.push(JSON.parse(line) as FileTiming);
  }
  return timings;
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

if (import.meta.main) {
  const [root = process.cwd(), ...paths] = process.argv.slice(2);
  console.log(slowestTable(readTimings(paths), 25, root));
}
