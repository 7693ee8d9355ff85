// The identity GC's unused-since marks as one text (kept in one API object, so marking 60,000 idle identities is one write, not 60,000): a line per mark time, then its identity numbers as ranges.
import type { FieldError, Result } from "./model.ts";
import { MAX_CLUSTER_IDENTITY, MIN_CLUSTER_IDENTITY } from "./identity.ts";

/** Identity number → since when no pod has used it (ms since the epoch, whole seconds). */
export type UnusedMarks = Map<number, number>;

/** Numbers as sorted ranges: [256, 257, 258, 300] → "256-258,300". */
export function formatRanges(numbers: Iterable<number>): string {
  const sorted = [...numbers].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/**
 * One line per mark time, oldest first: `<RFC 3339 time> <ranges>`. Its size is bounded whatever the
 * marks are (at most 65,280 numbers of at most 6 characters each: under 400 KB), below the API's 1 MiB.
 */
export function formatUnusedMarks(marks: ReadonlyMap<number, number>): string {
  const byTime = new Map<number, number[]>();
  for (const [n, since] of marks) {
    const at = Math.floor(since / 1000) * 1000;
    let l = byTime.get(at);
    if (!l) byTime.set(at, (l = []));
    l.push(n);
  }
  return [...byTime.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([at, ns]) => `${new Date(at).toISOString()} ${formatRanges(ns)}\n`)
    .join("");
}

/** The inverse of formatUnusedMarks; every malformed line is an error naming its line number. A number marked twice keeps its earlier time. */
export function parseUnusedMarks(text: string): Result<UnusedMarks> {
  const marks: UnusedMarks = new Map();
  const errors: FieldError[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const path = `line ${i + 1}`;
    const space = line.indexOf(" ");
    const at = Date.parse(space < 0 ? line : line.slice(0, space));
    if (space < 0 || Number.isNaN(at)) {
      errors.push({ path, message: `"${line.slice(0, 60)}" is not "<RFC 3339 time> <identity ranges>"` });
      continue;
    }
    for (const part of line.slice(space + 1).split(",")) {
      const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
      const lo = m ? Number(m[1]) : NaN;
      const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
      if (!m || lo < MIN_CLUSTER_IDENTITY || hi > MAX_CLUSTER_IDENTITY || hi < lo) {
        errors.push({ path, message: `"${part.slice(0, 30)}" is not a cluster identity or range of them (${MIN_CLUSTER_IDENTITY}-${MAX_CLUSTER_IDENTITY})` });
        continue;
      }
      for (let n = lo; n <= hi; n++) if ((marks.get(n) ?? Infinity) > at) marks.set(n, at);
    }
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: marks };
}
