// Verified programs kept across restarts: a load of the same object with the same load-time settings opens the
// programs the last load pinned instead of having the kernel verify them again (seconds for from_container).
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import koffi from "koffi";
import { c, mapInfoOfFd, programInfoOfFd, type MapShape, type Ptr } from "./libbpf.ts";

/** Where a scope keeps its programs: programs/<digest>/<program name>, beside the maps and links/. */
export const PROGRAMS_DIR = "programs";

/** Part of the digest: bumped when what is pinned or what reuse checks changes, so pins of an older layout are never reused. */
const PIN_LAYOUT = "membrane-programs/1";

/** A pinned map or program opened for reuse (its fd is the caller's to close). */
export interface PinnedMapFd {
  readonly fd: number;
  readonly keySize: number;
  readonly valueSize: number;
}

export type ProgramReuse =
  | { readonly ok: true; readonly maps: ReadonlyMap<string, PinnedMapFd>; readonly programs: ReadonlyMap<string, number> }
  | { readonly ok: false; readonly reason: string };

/**
 * The name of an object's program pins: a digest of the object's bytes and of every setting that changes what the
 * kernel loads (map sizes). Another object or other settings have another digest, so their programs are loaded anew.
 */
export function programsDigest(objectPath: string, maxEntries: Readonly<Record<string, number>> | undefined): string {
  const h = crypto.createHash("sha256");
  h.update(`${PIN_LAYOUT}\0`);
  h.update(fs.readFileSync(objectPath));
  const sizes = Object.entries(maxEntries ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  h.update(`\0${JSON.stringify(sizes)}`);
  return h.digest("hex").slice(0, 32);
}

/**
 * Opens what an earlier load of this object pinned, if every check holds; otherwise says why not and opens
 * nothing (the caller loads as usual). Checked: every program of the object is pinned under the digest, with its
 * type; every map the object declares is pinned with the shape the object (and maxEntries) gives it; and every map
 * those programs use is one of these pinned maps (or an object-internal .rodata/.bss map), so the programs read and
 * write exactly what the agent writes — not a map an upgrade set aside, nor one re-created since.
 */
export function reusePinnedPrograms(objectPath: string, pinDir: string, digest: string, maxEntries: Readonly<Record<string, number>> | undefined): ProgramReuse {
  const dir = path.join(pinDir, PROGRAMS_DIR, digest);
  if (!fs.existsSync(dir)) return { ok: false, reason: "no programs pinned for this object and these settings" };
  // Opening parses the ELF and BTF only: no map is created and nothing reaches the verifier.
  const obj = c.openFile(objectPath, null) as Ptr;
  if (!obj) return { ok: false, reason: `open ${objectPath}: errno ${koffi.errno()}` };
  const opened: number[] = [];
  const open = (pin: string): number => {
    const fd = c.objGet(pin) as number;
    if (fd >= 0) opened.push(fd);
    return fd;
  };
  const fail = (reason: string): ProgramReuse => {
    for (const fd of opened) c.closeFd(fd);
    return { ok: false, reason };
  };
  try {
    const maps = new Map<string, PinnedMapFd>();
    const pinnedIds = new Set<number>();
    const sized = new Set<string>();
    for (let m = c.nextMap(obj, null) as Ptr; m; m = c.nextMap(obj, m) as Ptr) {
      const name = c.mapName(m) as string;
      if (name.startsWith(".")) continue;
      const size = maxEntries?.[name];
      if (size !== undefined) {
        if ((c.mapSetMaxEntries(m, size) as number) < 0) return fail(`map ${name}: cannot size it to ${size}`);
        sized.add(name);
      }
      const want: MapShape = { type: c.mapType(m) as number, keySize: c.mapKeySize(m) as number, valueSize: c.mapValueSize(m) as number, maxEntries: c.mapMaxEntries(m) as number, flags: c.mapFlags(m) as number };
      const fd = open(path.join(pinDir, name));
      if (fd < 0) return fail(`map ${name} is not pinned`);
      const have = mapInfoOfFd(fd, name);
      if (have.type !== want.type || have.keySize !== want.keySize || have.valueSize !== want.valueSize || have.maxEntries !== want.maxEntries || have.flags !== want.flags) {
        return fail(`map ${name} is pinned with another shape`);
      }
      maps.set(name, { fd, keySize: have.keySize, valueSize: have.valueSize });
      pinnedIds.add(have.id);
    }
    const unknown = Object.keys(maxEntries ?? {}).filter((n) => !sized.has(n));
    if (unknown.length) return fail(`maxEntries names no map of the object: ${unknown.join(", ")}`);
    const programs = new Map<string, number>();
    for (let p = c.nextProgram(obj, null) as Ptr; p; p = c.nextProgram(obj, p) as Ptr) {
      const name = c.programName(p) as string;
      const fd = open(path.join(dir, name));
      if (fd < 0) return fail(`program ${name} is not pinned`);
      const info = programInfoOfFd(fd, name);
      if (info.type !== (c.programType(p) as number)) return fail(`program ${name} is pinned with another type`);
      const stray = info.mapIds.find((id) => !pinnedIds.has(id) && !isObjectInternalMap(id));
      if (stray !== undefined) return fail(`program ${name} uses map id ${stray}, which is not pinned in ${pinDir}`);
      programs.set(name, fd);
    }
    if (programs.size === 0) return fail("the object has no programs");
    return { ok: true, maps, programs };
  } catch (err) {
    return fail((err as Error).message);
  } finally {
    c.close(obj);
  }
}

/** libbpf names an object's own data maps `<object>.rodata`, `.bss`, `.data`: a program's, never pinned or shared. */
function isObjectInternalMap(id: number): boolean {
  const fd = c.mapFdById(id) as number;
  if (fd < 0) return false;
  try {
    return mapInfoOfFd(fd, `map id ${id}`).name.includes(".");
  } finally {
    c.closeFd(fd);
  }
}

/**
 * Pins a fresh load's programs under its digest and removes the programs pinned for any other digest (an earlier
 * object or other settings: what is still attached stays, held by its links). A failure leaves no partial set.
 */
export function pinPrograms(pinDir: string, digest: string, programs: ReadonlyMap<string, number>): void {
  const root = path.join(pinDir, PROGRAMS_DIR);
  const dir = path.join(root, digest);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  try {
    for (const [name, fd] of programs) {
      const rc = c.objPin(fd, path.join(dir, name)) as number;
      if (rc < 0) throw new Error(`pin program ${name}: errno ${-rc}`);
    }
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  for (const other of fs.readdirSync(root)) if (other !== digest) fs.rmSync(path.join(root, other), { recursive: true, force: true });
}
