// The verifier's cost of every program Membrane ships: each bpf/build object loaded as the agent and runtime load it, with BPF_LOG_STATS.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BpfError, BpfObject } from "./loader.ts";

const BPF_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf");

/** What the kernel's statistics line says of one program: `processed N insns (limit L) max_states_per_insn ...`. */
export interface VerifierStats {
  /** Instructions the verifier walked (every path it did not prune); above `limit` the program is refused (E2BIG). */
  readonly processed: number;
  readonly limit: number;
  readonly maxStatesPerInsn: number;
  readonly totalStates: number;
  readonly peakStates: number;
  /** `verification time N usec`: this machine's load moves it, the count above it does not. */
  readonly verificationUs: number | undefined;
}

/** One program of one object: its statistics, or why there are none (the object was refused before or at it). */
export interface ProgramCost {
  readonly object: string;
  readonly program: string;
  readonly stats: VerifierStats | undefined;
}

export interface ObjectCost {
  readonly object: string;
  readonly programs: readonly ProgramCost[];
  /** The load's error (e.g. `load .../tracepoint.o: E2BIG (7)`); undefined when every program was verified. */
  readonly error: string | undefined;
}

const STATS = /processed (\d+) insns \(limit (\d+)\) max_states_per_insn (\d+) total_states (\d+) peak_states (\d+)/;
const TIME = /verification time (\d+) usec/;

/** The statistics in a verifier log at BPF_LOG_STATS, or undefined when it has none (the program was not reached). */
export function parseVerifierStats(log: string): VerifierStats | undefined {
  const m = STATS.exec(log);
  if (!m) return undefined;
  const t = TIME.exec(log);
  return {
    processed: Number(m[1]),
    limit: Number(m[2]),
    maxStatesPerInsn: Number(m[3]),
    totalStates: Number(m[4]),
    peakStates: Number(m[5]),
    verificationUs: t ? Number(t[1]) : undefined,
  };
}

/** Every object `make -C bpf` builds (bpf/<name>.c → bpf/build/<name>.o); one not built yet is an error naming it. */
export function shippedObjects(bpfDir = BPF_DIR): { readonly name: string; readonly path: string }[] {
  const sources = fs.readdirSync(bpfDir).filter((f) => f.endsWith(".c")).sort();
  return sources.map((src) => {
    const name = src.slice(0, -2);
    const objectPath = path.join(bpfDir, "build", `${name}.o`);
    if (!fs.existsSync(objectPath)) throw new Error(`${objectPath}: not built (make -C bpf)`);
    return { name, path: objectPath };
  });
}

/** The first log size per program; the kernel counts what it printed and took back while verifying, so the final
 * few lines are not all it needs (6.18: 16 KiB was too little for connect.o, 32 KiB for tracepoint.o). */
const FIRST_LOG_BYTES = 256 * 1024;
const LAST_LOG_BYTES = 16 * 1024 * 1024;
const ENOSPC = 28;

/**
 * Loads one object through the agent's loader (BpfObject.load: the same libbpf calls, map sizes and program types,
 * programs not reused so the kernel verifies each) with the statistics log, then closes it and removes its pins:
 * nothing of it stays in the kernel. maxEntries: the map sizes a caller of the object sets (the agent's --policy-map-max).
 * A log too small (ENOSPC) is tried again four times larger.
 */
export function measureObject(objectPath: string, opts: { pinRoot: string; scope: string; maxEntries?: Readonly<Record<string, number>> }): ObjectCost {
  const object = path.basename(objectPath, ".o");
  for (let bytes = FIRST_LOG_BYTES; ; bytes *= 4) {
    const programs: ProgramCost[] = [];
    let error: BpfError | Error | undefined;
    try {
      const obj = BpfObject.load(objectPath, {
        scope: opts.scope,
        pinRoot: opts.pinRoot,
        ...(opts.maxEntries ? { maxEntries: opts.maxEntries } : {}),
        verifierLog: { bytes, onLog: (program, log) => programs.push({ object, program, stats: parseVerifierStats(log) }) },
      });
      obj.close();
      obj.unpin();
    } catch (err) {
      error = err as Error;
    } finally {
      fs.rmSync(path.join(opts.pinRoot, opts.scope), { recursive: true, force: true });
    }
    if (error instanceof BpfError && error.errno === ENOSPC && bytes < LAST_LOG_BYTES) continue;
    return { object, programs, error: error?.message };
  }
}

/** Every shipped object measured as loaded by default, under a pin root of this call's own that is gone afterwards. */
export function measureShippedObjects(pinRoot: string): ObjectCost[] {
  fs.mkdirSync(pinRoot, { recursive: true });
  try {
    return shippedObjects().map((o) => measureObject(o.path, { pinRoot, scope: o.name }));
  } finally {
    fs.rmSync(pinRoot, { recursive: true, force: true });
  }
}
