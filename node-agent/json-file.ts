// Writes a large JSON document (the agent's applied.json) to a file in pieces, never as one string: a 51,000-entry state is ~6 MB of JSON.
import fs from "node:fs";
import path from "node:path";

/** Array elements serialised together into one piece (~50 KB for ipcache entries). */
const RUN = 512;

/**
 * The JSON text of `value`, exactly as `JSON.stringify(value)` gives it, as pieces: objects down to
 * `depth` levels are opened here, and their arrays are serialised `RUN` elements at a time.
 */
export function* jsonPieces(value: unknown, depth = 2): Generator<string> {
  if (value === null || typeof value !== "object" || typeof (value as { toJSON?: unknown }).toJSON === "function") {
    yield JSON.stringify(value) ?? "null";
    return;
  }
  if (Array.isArray(value)) {
    if (value.length <= RUN) {
      yield JSON.stringify(value);
      return;
    }
    yield "[";
    for (let i = 0; i < value.length; i += RUN) yield `${i > 0 ? "," : ""}${JSON.stringify(value.slice(i, i + RUN)).slice(1, -1)}`;
    yield "]";
    return;
  }
  if (depth === 0) {
    yield JSON.stringify(value);
    return;
  }
  yield "{";
  let first = true;
  for (const [k, x] of Object.entries(value)) {
    if (x === undefined || typeof x === "function" || typeof x === "symbol") continue;
    yield `${first ? "" : ","}${JSON.stringify(k)}:`;
    first = false;
    yield* jsonPieces(x, depth - 1);
  }
  yield "}";
}

/** Replaces `file` with `value`'s JSON: written piece by piece to a temporary file beside it, then renamed over it. */
export function writeJsonFileAtomic(file: string, value: unknown, mode?: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, "w", mode);
  try {
    for (const piece of jsonPieces(value)) fs.writeSync(fd, piece);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}
