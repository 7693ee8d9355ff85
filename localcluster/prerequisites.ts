// What `membrane dev up` needs before it starts anything: the eBPF object the agents load, built from bpf/ when it is missing or stale.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { DATAPATH_OBJECT } from "../node-agent/bpf/datapath.ts";

/** The bpf/ folder whose Makefile builds DATAPATH_OBJECT (bpf/build/datapath.o). */
export const BPF_DIR = dirname(dirname(DATAPATH_OBJECT));

export interface DatapathObjectResult {
  /** The object the agents will load. */
  readonly object: string;
  /** What happened: already current, built now, or present but not checked (no clang to rebuild it). */
  readonly action: "current" | "built" | "unchecked";
}

/**
 * Makes sure `bpfDir/build/datapath.o` exists and is current: runs `make -C bpfDir` (which rebuilds only
 * what changed). Without clang, an object that is already there is used as it is; a missing one is an
 * error that names the command to run — before anything has been started.
 */
export async function ensureDatapathObject(bpfDir = BPF_DIR): Promise<DatapathObjectResult> {
  const object = join(bpfDir, "build", "datapath.o");
  const before = existsSync(object);
  const made = await new Promise<{ ok: boolean; output: string }>((done) =>
    execFile("make", ["-s", "-C", bpfDir], { timeout: 300_000 }, (err, stdout, stderr) => done({ ok: !err, output: `${stdout}${stderr}${err && stderr === "" ? err.message : ""}`.trim() })),
  );
  if (made.ok && existsSync(object)) return { object, action: before ? "current" : "built" };
  if (before && /clang.*not found|make: not found|ENOENT/i.test(made.output)) return { object, action: "unchecked" };
  const why = made.output === "" ? "make produced no output" : made.output.split("\n").slice(-3).join(" / ");
  throw new Error(`${object}: ${before ? "could not be rebuilt" : "missing and could not be built"} (${why}): run \`make deps\` first (it installs clang and builds bpf/)`);
}
