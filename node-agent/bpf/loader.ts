// The BPF loader: libbpf (Debian's libbpf.so.1) through koffi — objects, pinned maps, tc attach, ring buffer.
import fs from "node:fs";
import path from "node:path";
import koffi from "koffi";
import pino from "pino";
import { BpfError, c, check, mapShapeOfFd, type MapShape, type Ptr } from "./libbpf.ts";
import { pinPrograms, programsDigest, reusePinnedPrograms, type PinnedMapFd } from "./program-pins.ts";

const log = pino({ name: "bpf-loader", level: process.env.LOG_LEVEL ?? "info" });

export { BpfError, type MapShape } from "./libbpf.ts";

export const BPFFS_ROOT = "/sys/fs/bpf/membrane";

const CLONE_NEWNET = 0x40000000;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;
const EEXIST = 17;
const ENOENT = 2;

// ------------------------------------------------------------------ maps

/** Map types whose entries can be copied key by key into a map of the same key and value sizes. */
const COPYABLE_MAP_TYPES = new Set([1 /* HASH */, 2 /* ARRAY */, 9 /* LRU_HASH */, 11 /* LPM_TRIE */]);

/** Creates a map outside any object with these entries and pins it (tests: a pin as an earlier version left it). */
export function pinNewMap(shape: MapShape, name: string, pinPath: string, entries: readonly { key: Buffer; value: Buffer }[] = []): void {
  const fd = check(`create map ${name}`, c.mapCreate(shape.type, name, shape.keySize, shape.valueSize, shape.maxEntries, mapCreateOpts(shape.flags)) as number);
  try {
    const m = new BpfMap(name, fd, shape.keySize, shape.valueSize);
    for (const e of entries) m.update(e.key, e.value);
    check(`pin ${pinPath}`, c.objPin(fd, pinPath) as number);
  } finally {
    c.closeFd(fd);
  }
}

function mapCreateOpts(flags: number): Buffer {
  const b = Buffer.alloc(48); // struct bpf_map_create_opts (libbpf 1.1): sz, 5 btf/inner fds and ids, map_flags, map_extra, numa_node, map_ifindex
  b.writeBigUInt64LE(48n, 0);
  b.writeUInt32LE(flags, 28);
  return b;
}


/**
 * Opens a map another process pinned (e.g. the L7 proxy reading the datapath's redirect records
 * without loading the programs). Closed with `closePinnedMap`.
 */
export function openPinnedMap(pinPath: string, name: string): BpfMap {
  const fd = check(`open pinned map ${pinPath}`, c.objGet(pinPath) as number);
  const shape = mapShapeOfFd(fd, pinPath);
  return new BpfMap(name, fd, shape.keySize, shape.valueSize);
}

export function closePinnedMap(m: BpfMap): void {
  c.closeFd(m.fd);
}

/** How many entries one BPF_MAP_UPDATE_BATCH call takes (the kernel copies and writes them one by one in that call). */
const UPDATE_BATCH_CHUNK = 8192;
/** ENOTSUPP (the kernel's, for a map type without the batch operation) and EOPNOTSUPP. */
const BATCH_UNSUPPORTED_ERRNOS = new Set([524, 95]);
/** Map types this kernel refused a batch update for (learned at the first try): written one entry at a time. */
const UNBATCHED_MAP_TYPES = new Set<number>();
/** Map types read with BPF_MAP_LOOKUP_BATCH (hash, array, LRU hash and their per-CPU kinds); others (an LPM trie) key by key. */
const LOOKUP_BATCH_MAP_TYPES = new Set([1, 2, 5, 6, 9, 10]);
/** Of those, the types this kernel refused a batch lookup for: walked key by key. */
const UNBATCHED_LOOKUP_MAP_TYPES = new Set<number>();
/** Per-CPU hash and array maps (BPF_MAP_TYPE_PERCPU_*): a value per possible CPU, each rounded up to 8 bytes. */
const PERCPU_MAP_TYPES = new Set([5, 6, 10]);

/** One BPF map: fixed-size Buffer keys and values. */
export class BpfMap {
  private mapType: number | undefined;

  constructor(
    readonly name: string,
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
  ) {}

  /** The map's max_entries as the kernel has it (for a ring buffer: its size in bytes). */
  maxEntries(): number {
    return mapShapeOfFd(this.fd, this.name).maxEntries;
  }

  /** The map's type number (BPF_MAP_TYPE_*). */
  type(): number {
    return mapShapeOfFd(this.fd, this.name).type;
  }

  update(key: Buffer, value: Buffer): void {
    this.checkSizes(key, value);
    check(`update ${this.name}`, c.mapUpdate(this.fd, key, value, 0));
  }

  /**
   * Writes `count` entries laid back to back in `keys` and `values` (keySize and valueSize bytes each): one
   * BPF_MAP_UPDATE_BATCH call per UPDATE_BATCH_CHUNK entries where the kernel has batch updates for the map's type
   * (hash, array, and the LPM trie on this kernel), else one update each. A failure stops at the entry that failed (those before it
   * are written) and names it.
   */
  updateMany(keys: Buffer, values: Buffer, count: number): void {
    const ks = this.keySize;
    const vs = this.valueSize;
    if (keys.length < count * ks || values.length < count * vs) throw new RangeError(`${this.name}: ${count} entries need ${count * ks} key and ${count * vs} value bytes`);
    let done = 0;
    this.mapType ??= this.type();
    if (!UNBATCHED_MAP_TYPES.has(this.mapType)) {
      const n = [0];
      while (done < count) {
        const chunk = Math.min(UPDATE_BATCH_CHUNK, count - done);
        n[0] = chunk;
        const rc = c.mapUpdateBatch(this.fd, keys.subarray(done * ks), values.subarray(done * vs), n, null) as number;
        if (rc === 0) {
          done += chunk;
          continue;
        }
        if (done === 0 && n[0] === 0 && BATCH_UNSUPPORTED_ERRNOS.has(-rc)) {
          UNBATCHED_MAP_TYPES.add(this.mapType);
          log.debug({ map: this.name, type: this.mapType }, "no batch updates for this map type: one update per entry");
          break;
        }
        throw new BpfError(`update ${this.name} (entry ${done + (n[0] ?? 0)} of ${count}, batched)`, -rc);
      }
    }
    for (; done < count; done++) {
      const rc = c.mapUpdate(this.fd, keys.subarray(done * ks, (done + 1) * ks), values.subarray(done * vs, (done + 1) * vs), 0) as number;
      if (rc < 0) throw new BpfError(`update ${this.name} (entry ${done} of ${count})`, -rc);
    }
  }

  lookup(key: Buffer): Buffer | undefined {
    this.checkSizes(key);
    const out = Buffer.alloc(this.valueSize);
    const rc = c.mapLookup(this.fd, key, out) as number;
    if (rc === -ENOENT) return undefined;
    check(`lookup ${this.name}`, rc);
    return out;
  }

  /**
   * Reads the value of `key` into `out` (both the caller's, reused: a hot path's small buffers
   * would otherwise be V8 heap memory that each FFI call first moves off the heap); false when absent.
   */
  lookupInto(key: Buffer, out: Buffer): boolean {
    this.checkSizes(key, out);
    const rc = c.mapLookup(this.fd, key, out) as number;
    if (rc === -ENOENT) return false;
    check(`lookup ${this.name}`, rc);
    return true;
  }

  /** Returns whether the key was there. */
  delete(key: Buffer): boolean {
    this.checkSizes(key);
    const rc = c.mapDelete(this.fd, key) as number;
    if (rc === -ENOENT) return false;
    check(`delete ${this.name}`, rc);
    return true;
  }

  keys(): Buffer[] {
    const keys: Buffer[] = [];
    this.forEachKey((buf, offset) => keys.push(Buffer.from(buf.subarray(offset, offset + this.keySize))));
    return keys;
  }

  /**
   * Calls `fn` with each key where it lies in a shared buffer (`keys[offset..offset + keySize]`, valid only during the
   * call; copy what you keep): BPF_MAP_LOOKUP_BATCH for the types in LOOKUP_BATCH_MAP_TYPES (one call per
   * UPDATE_BATCH_CHUNK keys), else get-next-key into two alternating buffers. No Buffer per key either way.
   * The map must not change meanwhile (collect, then delete).
   */
  forEachKey(fn: (keys: Buffer, offset: number) => void): void {
    const ks = this.keySize;
    this.mapType ??= this.type();
    if (LOOKUP_BATCH_MAP_TYPES.has(this.mapType) && !UNBATCHED_LOOKUP_MAP_TYPES.has(this.mapType)) {
      const keys = Buffer.alloc(UPDATE_BATCH_CHUNK * ks);
      const perCpu = PERCPU_MAP_TYPES.has(this.mapType);
      const values = Buffer.alloc(UPDATE_BATCH_CHUNK * (perCpu ? Math.ceil(this.valueSize / 8) * 8 * (c.numCpus() as number) : this.valueSize));
      // The kernel's position between calls: what one call writes to out_batch the next one passes as in_batch.
      let position: Buffer | null = null;
      let next: Buffer = Buffer.alloc(Math.max(8, ks));
      const n = [0];
      for (;;) {
        n[0] = UPDATE_BATCH_CHUNK;
        const rc = c.mapLookupBatch(this.fd, position, next, keys, values, n, null) as number;
        if (rc < 0 && rc !== -ENOENT) {
          if (position === null && BATCH_UNSUPPORTED_ERRNOS.has(-rc)) {
            UNBATCHED_LOOKUP_MAP_TYPES.add(this.mapType);
            break; // walked key by key below
          }
          throw new BpfError(`lookup batch ${this.name}`, -rc);
        }
        for (let i = 0; i < n[0]!; i++) fn(keys, i * ks);
        if (rc === -ENOENT) return; // the last keys came with it
        [position, next] = [next, position ?? Buffer.alloc(next.length)];
      }
    }
    let prev: Buffer | null = null;
    let next: Buffer = Buffer.alloc(ks);
    for (;;) {
      const rc = c.mapNextKey(this.fd, prev, next) as number;
      if (rc === -ENOENT) return;
      check(`next key ${this.name}`, rc);
      fn(next, 0);
      [prev, next] = [next, prev ?? Buffer.alloc(ks)];
    }
  }

  /** One get-next-key call, not a scan. */
  isEmpty(): boolean {
    const rc = c.mapNextKey(this.fd, null, Buffer.alloc(this.keySize)) as number;
    if (rc === -ENOENT) return true;
    check(`next key ${this.name}`, rc);
    return false;
  }

  clear(): void {
    for (const k of this.keys()) this.delete(k);
  }

  /**
   * Applies upserts, then deletions (DESIGN decision 5: new entries before removals). If any step
   * fails, every change already made is rolled back, so the previous state stays in force, and the
   * error says which key failed and why.
   */
  applyBatch(change: { readonly upserts: readonly { key: Buffer; value: Buffer }[]; readonly deletes: readonly Buffer[] }): void {
    const undo: { key: Buffer; previous: Buffer | undefined }[] = [];
    try {
      for (const { key, value } of change.upserts) {
        const previous = this.lookup(key);
        this.update(key, value);
        undo.push({ key, previous });
      }
      for (const key of change.deletes) {
        const previous = this.lookup(key);
        if (previous === undefined) continue;
        this.delete(key);
        undo.push({ key, previous });
      }
    } catch (err) {
      for (const { key, previous } of undo.reverse()) {
        try {
          if (previous === undefined) this.delete(key);
          else this.update(key, previous);
        } catch (rollbackErr) {
          log.error({ map: this.name, err: String(rollbackErr) }, "batch rollback failed");
        }
      }
      log.warn({ map: this.name, err: String(err), rolledBack: undo.length }, "batch failed, previous state kept");
      throw err;
    }
  }

  /** Sums a per-CPU u64 value over every possible CPU. */
  lookupPerCpuSum(key: Buffer): bigint {
    return this.lookupPerCpu(key).reduce((a, b) => a + b, 0n);
  }

  /** A per-CPU u64 value on each possible CPU (index = CPU); zeros when the key is absent. */
  lookupPerCpu(key: Buffer): bigint[] {
    const cpus = c.numCpus() as number;
    const stride = Math.ceil(this.valueSize / 8) * 8;
    const out = Buffer.alloc(stride * cpus);
    const rc = c.mapLookup(this.fd, key, out) as number;
    if (rc === -ENOENT) return new Array<bigint>(cpus).fill(0n);
    check(`lookup ${this.name}`, rc);
    return Array.from({ length: cpus }, (_, i) => out.readBigUInt64LE(i * stride));
  }

  private checkSizes(key: Buffer, value?: Buffer): void {
    if (key.length !== this.keySize) throw new RangeError(`${this.name}: key of ${key.length} bytes, want ${this.keySize}`);
    if (value && value.length !== this.valueSize) {
      throw new RangeError(`${this.name}: value of ${value.length} bytes, want ${this.valueSize}`);
    }
  }
}

// ------------------------------------------------------------------ objects

export interface LoadOptions {
  /** Pins every map under /sys/fs/bpf/membrane/<scope>/<map>; an existing pin is reused. */
  readonly scope: string;
  readonly pinRoot?: string;
  /** false: no map is pinned (or reused): the maps are this process's alone and go with its fds (default true). */
  readonly pinMaps?: boolean;
  /** Map sizes other than the object's, by map name (e.g. a small policy map to test overflow). */
  readonly maxEntries?: Readonly<Record<string, number>>;
  /**
   * Maps whose value grew by fields appended at its end, each zero meaning "not known": a pinned one of the shorter
   * value (an earlier version's) is replaced and its entries copied with the new bytes zero, instead of dropped.
   */
  readonly widenedValues?: readonly string[];
  /**
   * Pins the programs too (programs/<digest>/, node-agent/bpf/program-pins.ts), and a later load of the same
   * object with the same maxEntries opens them instead of loading: the kernel does not verify them again.
   */
  readonly reusePrograms?: boolean;
  /**
   * Asks the kernel for each program's verifier statistics (BPF_LOG_STATS: `processed N insns ...`; nothing of the
   * verification itself changes) into a log of `bytes` per program, and hands every log over after the load, also a
   * failed one (the programs libbpf reached). A log too small fails the load with ENOSPC. node-agent/bpf/verifier.ts
   * reads them; with reusePrograms a reused program has no log.
   */
  readonly verifierLog?: { readonly bytes: number; readonly onLog: (program: string, log: string) => void };
}

/** A loaded BPF object whose maps are pinned (a reload reuses them, so state survives restarts). */
export class BpfObject {
  private obj: Ptr;
  private open = true;
  readonly maps = new Map<string, BpfMap>();
  private readonly programs = new Map<string, number>();
  readonly pinDir: string;
  /** Pinned maps of another shape that this load replaced (an upgrade). */
  readonly replaced: ReplacedMap[] = [];
  /** Whether the programs are the ones an earlier load pinned (reusePrograms), not loaded and verified by this one. */
  reused = false;
  /** With reusePrograms, why this load did not reuse pinned programs (none pinned yet, another object, a map re-created, ...). */
  reuseRefusal: string | undefined;

  private constructor(obj: Ptr, pinDir: string) {
    this.obj = obj;
    this.pinDir = pinDir;
  }

  static load(objectPath: string, opts: LoadOptions): BpfObject {
    if (!/^[A-Za-z0-9_.-]+$/.test(opts.scope)) throw new RangeError(`invalid pin scope ${JSON.stringify(opts.scope)}`);
    const pinDir = path.join(opts.pinRoot ?? BPFFS_ROOT, opts.scope);
    // A load that fails leaves no trace: the scope directory goes again if this call made it (libbpf
    // unpins the maps it pinned when loading fails; rmdir only removes it when it is empty).
    const made = fs.mkdirSync(pinDir, { recursive: true }) !== undefined;
    try {
      const digest = opts.reusePrograms ? digestOrUndefined(objectPath, opts) : undefined;
      if (digest === undefined) return BpfObject.loadInto(objectPath, opts, pinDir);
      const reuse = reusePinnedPrograms(objectPath, pinDir, digest, opts.maxEntries);
      if (reuse.ok) return BpfObject.fromPins(objectPath, pinDir, digest, reuse.maps, reuse.programs);
      log.info({ object: objectPath, pinDir, digest, reason: reuse.reason }, "bpf programs loaded: pinned programs not reused");
      const self = BpfObject.loadInto(objectPath, opts, pinDir);
      self.reuseRefusal = reuse.reason;
      try {
        pinPrograms(pinDir, digest, self.programs);
      } catch (err) {
        log.warn({ object: objectPath, pinDir, error: (err as Error).message }, "pinning the programs failed: the next start loads them again");
      }
      return self;
    } catch (err) {
      if (made) removeIfEmpty(pinDir);
      throw err;
    }
  }

  private static fromPins(objectPath: string, pinDir: string, digest: string, maps: ReadonlyMap<string, PinnedMapFd>, programs: ReadonlyMap<string, number>): BpfObject {
    const self = new BpfObject(null, pinDir);
    for (const [name, m] of maps) self.maps.set(name, new BpfMap(name, m.fd, m.keySize, m.valueSize));
    for (const [name, fd] of programs) self.programs.set(name, fd);
    self.reused = true;
    log.info({ object: objectPath, pinDir, digest, programs: [...programs.keys()] }, "bpf programs reused: same object and settings as the pinned ones, not verified again");
    return self;
  }

  private static loadInto(objectPath: string, opts: LoadOptions, pinDir: string): BpfObject {
    const obj = c.openFile(objectPath, null) as Ptr;
    if (!obj) throw new BpfError(`open ${objectPath}`, koffi.errno());
    const self = new BpfObject(obj, pinDir);
    const sized = new Set<string>();
    const replaced: ReplacedPin[] = [];
    try {
      for (let m = c.nextMap(obj, null) as Ptr; m; m = c.nextMap(obj, m) as Ptr) {
        const name = c.mapName(m) as string;
        if (name.startsWith(".")) continue; // .rodata/.bss: per-object, never shared
        if (opts.pinMaps !== false) check(`pin path ${name}`, c.mapSetPinPath(m, path.join(pinDir, name)));
        const size = opts.maxEntries?.[name];
        if (size !== undefined) {
          check(`max entries ${name}`, c.mapSetMaxEntries(m, size));
          sized.add(name);
        }
      }
      const unknown = Object.keys(opts.maxEntries ?? {}).filter((n) => !sized.has(n));
      if (unknown.length) throw new RangeError(`maxEntries: no map ${unknown.join(", ")} in ${objectPath}`);
      for (let m = opts.pinMaps === false ? null : (c.nextMap(obj, null) as Ptr); m; m = c.nextMap(obj, m) as Ptr) {
        const name = c.mapName(m) as string;
        if (name.startsWith(".")) continue;
        const aside = setAsideIncompatiblePin(m, name, path.join(pinDir, name));
        if (aside) replaced.push(aside);
      }
      const logs = opts.verifierLog ? askVerifierStats(obj, opts.verifierLog.bytes) : [];
      try {
        check(`load ${objectPath}`, c.load(obj));
      } catch (err) {
        for (const r of replaced) restorePin(r);
        replaced.length = 0;
        throw err;
      } finally {
        for (const l of logs) opts.verifierLog?.onLog(l.program, l.buf.subarray(0, Math.max(0, l.buf.indexOf(0))).toString());
      }
      for (let m = c.nextMap(obj, null) as Ptr; m; m = c.nextMap(obj, m) as Ptr) {
        const name = c.mapName(m) as string;
        self.maps.set(name, new BpfMap(name, c.mapFd(m), c.mapKeySize(m), c.mapValueSize(m)));
      }
      for (let p = c.nextProgram(obj, null) as Ptr; p; p = c.nextProgram(obj, p) as Ptr) {
        self.programs.set(c.programName(p) as string, check(`program fd ${c.programName(p) as string}`, c.programFd(p)));
      }
      for (const r of replaced) self.replaced.push(migrateEntries(r, self.maps.get(r.name)!, opts.widenedValues?.includes(r.name) ?? false));
    } catch (err) {
      self.close();
      throw err;
    } finally {
      for (const r of replaced) c.closeFd(r.map.fd);
    }
    log.info({ object: objectPath, pinDir, maps: [...self.maps.keys()] }, "bpf object loaded");
    return self;
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new Error(`map ${name} not in object (have ${[...this.maps.keys()].join(", ")})`);
    return m;
  }

  programFd(name: string): number {
    if (!this.open) throw new Error("object closed");
    const fd = this.programs.get(name);
    if (fd === undefined) throw new Error(`program ${name} not in object`);
    return fd;
  }

  /** Closes our fds; pinned maps and attached programs stay in the kernel. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    if (this.obj) c.close(this.obj); // libbpf closes the fds of its maps and programs
    else for (const fd of [...this.programs.values(), ...[...this.maps.values()].map((m) => m.fd)]) c.closeFd(fd);
    this.obj = null;
  }

  /** Removes this scope's pins (the maps go away once nothing holds them). */
  unpin(): void {
    fs.rmSync(this.pinDir, { recursive: true, force: true });
  }
}

const BPF_LOG_STATS = 4;

/** Gives every program of an opened object a log buffer at BPF_LOG_STATS (libbpf then never retries at level 1). */
function askVerifierStats(obj: Ptr, bytes: number): { program: string; buf: Buffer }[] {
  const logs: { program: string; buf: Buffer }[] = [];
  for (let p = c.nextProgram(obj, null) as Ptr; p; p = c.nextProgram(obj, p) as Ptr) {
    const buf = Buffer.alloc(bytes);
    const program = c.programName(p) as string;
    check(`log buffer ${program}`, c.programSetLogBuf(p, koffi.address(buf), buf.length)); // kept alive in logs until the load returns
    check(`log level ${program}`, c.programSetLogLevel(p, BPF_LOG_STATS));
    logs.push({ program, buf });
  }
  return logs;
}

/** The digest of the object's program pins, or undefined when the object cannot be read (libbpf then reports why). */
function digestOrUndefined(objectPath: string, opts: LoadOptions): string | undefined {
  try {
    return programsDigest(objectPath, opts.maxEntries);
  } catch {
    return undefined;
  }
}

/** rmdir: only an empty directory goes; anything else (pins someone still uses) stays. */
function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty, or already gone
  }
}

/** A pinned map of an earlier version whose shape this object's map does not have, set aside under `aside`. */
interface ReplacedPin {
  readonly name: string;
  readonly pin: string;
  readonly aside: string;
  readonly map: BpfMap;
  readonly shape: MapShape;
}

/**
 * libbpf refuses to reuse a pinned map of another shape (type, key or value size, size, flags), and
 * the object would not load: an upgrade that changes a map (e.g. the policy map from an LPM trie
 * to a hash) would leave the node without its new programs. Such a pin is moved aside (`-previous`;
 * the programs still attached keep the map itself), so that loading creates the new map; its
 * entries are then copied over (migrateEntries).
 */
function setAsideIncompatiblePin(m: Ptr, name: string, pin: string): ReplacedPin | null {
  if (!fs.existsSync(pin)) return null;
  const fd = c.objGet(pin) as number;
  if (fd < 0) return null; // not a map we can open: let libbpf report it
  const want: MapShape = { type: c.mapType(m) as number, keySize: c.mapKeySize(m) as number, valueSize: c.mapValueSize(m) as number, maxEntries: c.mapMaxEntries(m) as number, flags: c.mapFlags(m) as number };
  const have = mapShapeOfFd(fd, pin);
  if (have.type === want.type && have.keySize === want.keySize && have.valueSize === want.valueSize && have.maxEntries === want.maxEntries && have.flags === want.flags) {
    c.closeFd(fd);
    return null;
  }
  const aside = `${pin}-previous`;
  fs.rmSync(aside, { force: true }); // left by an upgrade that stopped half-way: the pin we set aside now is newer
  fs.renameSync(pin, aside);
  log.warn({ map: name, pinned: have, object: want }, "pinned map has another shape: set aside, its entries follow into the new map");
  return { name, pin, aside, map: new BpfMap(`${name} (previous)`, fd, have.keySize, have.valueSize), shape: have };
}

function restorePin(r: ReplacedPin): void {
  if (!fs.existsSync(r.pin)) fs.renameSync(r.aside, r.pin);
}

/**
 * Copies the entries of a set-aside map into its replacement when the keys and values are the same bytes (or, widened,
 * the old value is the start of the new one: the rest is written zero); then drops the old pin.
 */
function migrateEntries(r: ReplacedPin, into: BpfMap, widened: boolean): ReplacedMap {
  let copied = 0;
  let failed = 0;
  const valuesFit = r.shape.valueSize === into.valueSize || (widened && r.shape.valueSize < into.valueSize);
  const copyable = COPYABLE_MAP_TYPES.has(r.shape.type) && COPYABLE_MAP_TYPES.has(into.type()) && r.shape.keySize === into.keySize && valuesFit;
  if (copyable) {
    for (const key of r.map.keys()) {
      const value = r.map.lookup(key);
      if (!value) continue;
      try {
        into.update(key, value.length === into.valueSize ? value : Buffer.concat([value, Buffer.alloc(into.valueSize - value.length)]));
        copied++;
      } catch {
        failed++;
      }
    }
  }
  fs.rmSync(r.aside, { force: true });
  const complete = copyable && failed === 0;
  const fields = { map: r.name, copied, failed, complete };
  if (complete) log.info(fields, "pinned map replaced, its entries copied");
  else log.warn(fields, "pinned map replaced without all its entries");
  return { name: r.name, complete };
}

/** A pinned map this load replaced, and whether every entry came along. */
export interface ReplacedMap {
  readonly name: string;
  readonly complete: boolean;
}

// ------------------------------------------------------------------ tc attach

export type TcDirection = "ingress" | "egress";

export interface TcTarget {
  readonly ifindex: number;
  readonly direction: TcDirection;
  /** A named network namespace (/var/run/netns/<name>) the interface lives in; default: ours. */
  readonly netns?: string;
}

const TC_HANDLE = 1;
const TC_PRIORITY = 1;

function tcHook(t: TcTarget): Buffer {
  const b = Buffer.alloc(24); // struct bpf_tc_hook
  b.writeBigUInt64LE(24n, 0);
  b.writeInt32LE(t.ifindex, 8);
  b.writeUInt32LE(t.direction === "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS, 12);
  return b;
}

function tcOpts(progFd: number, flags: number): Buffer {
  const b = Buffer.alloc(32); // struct bpf_tc_opts
  b.writeBigUInt64LE(32n, 0);
  b.writeInt32LE(progFd, 8);
  b.writeUInt32LE(flags, 12);
  b.writeUInt32LE(0, 16); // prog_id
  b.writeUInt32LE(TC_HANDLE, 20);
  b.writeUInt32LE(TC_PRIORITY, 24);
  return b;
}

/** Runs fn on this thread inside a named netns (netlink sockets bind to the thread's netns). */
export function inNetns<T>(netns: string | undefined, fn: () => T): T {
  if (!netns) return fn();
  const own = fs.openSync("/proc/thread-self/ns/net", "r");
  const target = fs.openSync(path.join("/var/run/netns", netns), "r");
  try {
    if (c.setns(target, CLONE_NEWNET) !== 0) throw new BpfError(`setns ${netns}`, koffi.errno());
    let result: { ok: true; value: T } | { ok: false; err: unknown };
    try {
      result = { ok: true, value: fn() };
    } catch (err) {
      result = { ok: false, err };
    }
    // Staying in the wrong netns would misdirect every later socket of this thread: that is fatal.
    if (c.setns(own, CLONE_NEWNET) !== 0) {
      log.fatal({ errno: koffi.errno() }, "cannot return to our network namespace");
      process.exit(70);
    }
    if (!result.ok) throw result.err;
    return result.value;
  } finally {
    fs.closeSync(own);
    fs.closeSync(target);
  }
}

/**
 * Attaches (or atomically replaces: same handle and priority) a tc program on a clsact hook, so a
 * re-attach after an agent restart never leaves the interface without a program.
 */
export function attachTc(progFd: number, t: TcTarget): void {
  inNetns(t.netns, () => {
    const hook = tcHook(t);
    const rc = c.tcHookCreate(hook) as number;
    if (rc < 0 && rc !== -EEXIST) throw new BpfError(`tc hook create ifindex ${t.ifindex}`, -rc);
    check(`tc attach ifindex ${t.ifindex} ${t.direction}`, c.tcAttach(hook, tcOpts(progFd, BPF_TC_F_REPLACE)));
  });
  log.info({ ifindex: t.ifindex, direction: t.direction, netns: t.netns }, "tc program attached");
}

/** Detaches our program; a hook or program already gone is not an error. */
export function detachTc(t: TcTarget): void {
  inNetns(t.netns, () => {
    const rc = c.tcDetach(tcHook(t), tcOpts(0, 0)) as number;
    if (rc < 0 && rc !== -ENOENT && rc !== -19 /* ENODEV: link gone */ && rc !== -22) {
      throw new BpfError(`tc detach ifindex ${t.ifindex} ${t.direction}`, -rc);
    }
  });
}

// ------------------------------------------------------------------ tcx attach

const BPF_TCX_INGRESS = 46;
const BPF_TCX_EGRESS = 47;
const EINVAL = 22;
const ENOLINK = 67;

const tcxType = (d: TcDirection): number => (d === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS);

/**
 * Attaches a program with tcx: one BPF link per interface and direction, pinned at pinPath so it
 * outlives this process. A link already pinned there is switched to the new program in place
 * (atomic: no packet meets the interface without a program); a pinned link whose interface went
 * away is replaced. tcx runs before the clsact hook and skips it, so a clsact filter left by an
 * earlier version is removed after the link is in place. On a kernel without tcx, the clsact hook.
 */
export function attachTcx(progFd: number, t: TcTarget, pinPath: string): void {
  if (fs.existsSync(pinPath)) {
    const linkFd = check(`open link ${pinPath}`, c.objGet(pinPath) as number);
    try {
      const rc = c.linkUpdate(linkFd, progFd, null) as number;
      if (rc === 0) return;
      if (rc !== -ENOLINK) throw new BpfError(`tcx update ifindex ${t.ifindex} ${t.direction}`, -rc);
    } finally {
      c.closeFd(linkFd);
    }
    fs.rmSync(pinPath); // defunct: its interface was deleted (this ifindex is a new one)
  }
  const linkFd = inNetns(t.netns, () => c.linkCreate(progFd, t.ifindex, tcxType(t.direction), null) as number);
  if (linkFd === -EINVAL) {
    attachTc(progFd, t); // no tcx in this kernel
    return;
  }
  check(`tcx attach ifindex ${t.ifindex} ${t.direction}`, linkFd);
  try {
    fs.mkdirSync(path.dirname(pinPath), { recursive: true });
    check(`pin link ${pinPath}`, c.objPin(linkFd, pinPath) as number);
  } catch (err) {
    c.linkDetach(linkFd);
    throw err;
  } finally {
    c.closeFd(linkFd);
  }
  detachTc(t);
  log.info({ ifindex: t.ifindex, direction: t.direction, netns: t.netns }, "tcx program attached");
}

/** Detaches our program, tcx link or clsact filter; an interface or link already gone is not an error. */
export function detachTcx(t: TcTarget, pinPath: string): void {
  if (fs.existsSync(pinPath)) {
    const linkFd = c.objGet(pinPath) as number;
    if (linkFd >= 0) {
      c.linkDetach(linkFd); // a defunct link has nothing to detach
      c.closeFd(linkFd);
    }
    fs.rmSync(pinPath, { force: true });
  }
  detachTc(t);
}

const BPF_F_BEFORE = 1 << 3;

/**
 * Attaches a cgroup program (connect4, sendmsg4, ...) with a BPF link pinned at pinPath, so it outlives this process;
 * a link already pinned there is switched to the new program in place (no connect meets the cgroup without it).
 * `first`: ahead of every program already on the hook (BPF_F_BEFORE, kernels from 6.15); where the kernel refuses
 * that, appended (programs then run in attach order).
 */
export function attachCgroupLink(progFd: number, cgroupPath: string, attachType: number, pinPath: string, first: boolean): void {
  if (fs.existsSync(pinPath)) {
    const linkFd = check(`open link ${pinPath}`, c.objGet(pinPath) as number);
    try {
      const rc = c.linkUpdate(linkFd, progFd, null) as number;
      if (rc === 0) return;
      if (rc !== -ENOLINK) throw new BpfError(`cgroup link update ${pinPath}`, -rc);
    } finally {
      c.closeFd(linkFd);
    }
    fs.rmSync(pinPath);
  }
  const cg = fs.openSync(cgroupPath, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  let linkFd: number;
  try {
    const opts = Buffer.alloc(16); // struct bpf_link_create_opts: sz, flags
    opts.writeBigUInt64LE(16n, 0);
    opts.writeUInt32LE(first ? BPF_F_BEFORE : 0, 8);
    linkFd = c.linkCreate(progFd, cg, attachType, opts) as number;
    if (linkFd === -EINVAL && first) linkFd = c.linkCreate(progFd, cg, attachType, null) as number;
  } finally {
    fs.closeSync(cg);
  }
  check(`attach cgroup program (type ${attachType}) to ${cgroupPath}`, linkFd);
  try {
    fs.mkdirSync(path.dirname(pinPath), { recursive: true });
    check(`pin link ${pinPath}`, c.objPin(linkFd, pinPath) as number);
  } catch (err) {
    c.linkDetach(linkFd);
    throw err;
  } finally {
    c.closeFd(linkFd);
  }
}

/**
 * Pins a link at pinPath so that it outlives this process; a link pinned there before is replaced in one rename (it is
 * released then, detached when nothing else holds it: both ran for a moment, none was ever missing).
 */
export function pinLinkReplacing(linkFd: number, pinPath: string): void {
  fs.mkdirSync(path.dirname(pinPath), { recursive: true });
  const fresh = `${pinPath}-new`; // bpffs refuses dots in names
  fs.rmSync(fresh, { force: true });
  check(`pin link ${fresh}`, c.objPin(linkFd, fresh) as number);
  fs.renameSync(fresh, pinPath);
}

/**
 * Attaches a tp_btf program where its BTF id points (BPF_RAW_TRACEPOINT_OPEN with no name) and pins the link at pinPath,
 * replacing one pinned there before (pinLinkReplacing): it keeps running after this process exits, until the pin goes.
 */
export function attachTpBtfPinned(progFd: number, pinPath: string): void {
  const linkFd = c.rawTracepointOpen(null, progFd) as number;
  if (linkFd < 0) throw new BpfError(`attach ${path.basename(pinPath)}`, -linkFd);
  try {
    pinLinkReplacing(linkFd, pinPath);
  } finally {
    c.closeFd(linkFd);
  }
}

/**
 * Removes a link's pin and, when the pin held the last reference, frees the link before returning: the kernel frees a
 * link whose last reference was a pin later, from a workqueue, and until then its program is still attached (the same
 * program attached to the same tracepoint again meanwhile fails with EEXIST). None there is not an error.
 */
export function unpinLink(pinPath: string): void {
  const linkFd = c.objGet(pinPath) as number;
  fs.rmSync(pinPath, { force: true });
  if (linkFd >= 0) c.closeFd(linkFd); // the last reference now: released in this call
}

/** Detaches the cgroup program of the link pinned at pinPath and removes the pin; none there is not an error. */
export function detachCgroupLink(pinPath: string): void {
  if (!fs.existsSync(pinPath)) return;
  const linkFd = c.objGet(pinPath) as number;
  if (linkFd >= 0) {
    c.linkDetach(linkFd);
    c.closeFd(linkFd);
  }
  fs.rmSync(pinPath, { force: true });
}

const LINK_INFO = { size: 64, id: 4, progId: 8, tcxIfindex: 16 } as const; // struct bpf_link_info: type, id, prog_id, then the union

/** The struct bpf_link_info of the link pinned at pinPath, or undefined when nothing is pinned there. */
function pinnedLinkInfo(pinPath: string): Buffer | undefined {
  const linkFd = c.objGet(pinPath) as number;
  if (linkFd < 0) return undefined;
  try {
    const info = Buffer.alloc(LINK_INFO.size);
    check(`link info ${pinPath}`, c.objInfo(linkFd, info, [LINK_INFO.size]));
    return info;
  } finally {
    c.closeFd(linkFd);
  }
}

/** The kernel's ids of the link pinned at pinPath and of its program, or undefined when nothing is pinned there. */
export function pinnedLinkIds(pinPath: string): { link: number; program: number } | undefined {
  const info = pinnedLinkInfo(pinPath);
  return info && { link: info.readUInt32LE(LINK_INFO.id), program: info.readUInt32LE(LINK_INFO.progId) };
}

/** Whether the kernel still holds the link or program of this id (a freed one's id finds nothing: ENOENT). */
export function bpfObjectLive(kind: "link" | "program", id: number): boolean {
  const fd = (kind === "link" ? c.linkFdById(id) : c.progFdById(id)) as number;
  if (fd >= 0) {
    c.closeFd(fd);
    return true;
  }
  if (fd === -ENOENT) return false;
  throw new BpfError(`${kind} id ${id}`, -fd);
}

/** Whether the tcx link pinned at pinPath is still on an interface (false once its interface is deleted). */
export function tcxLinkLive(pinPath: string): boolean {
  const info = pinnedLinkInfo(pinPath);
  return info !== undefined && info.readUInt32LE(LINK_INFO.tcxIfindex) !== 0;
}

/** The id of the program attached to the interface by tcx, else at our clsact handle, or undefined. */
export function attachedProgramId(t: TcTarget): number | undefined {
  const viaTcx = inNetns(t.netns, () => {
    const ids = new Uint32Array(4);
    const count = [ids.length];
    const flags = [0];
    const rc = c.progQuery(t.ifindex, tcxType(t.direction), 0, flags, ids, count) as number;
    return rc === 0 && count[0]! > 0 ? ids[0] : undefined;
  });
  return viaTcx ?? queryTc(t);
}

/** The ids of every program attached to the interface's direction by tcx (ours and anyone's), in run order. */
export function tcxProgramIds(t: TcTarget): number[] {
  return inNetns(t.netns, () => {
    const ids = new Uint32Array(64);
    const count = [ids.length];
    const flags = [0];
    const rc = c.progQuery(t.ifindex, tcxType(t.direction), 0, flags, ids, count) as number;
    if (rc < 0) throw new BpfError(`tcx query ifindex ${t.ifindex} ${t.direction}`, -rc);
    return [...ids.subarray(0, count[0]!)];
  });
}

/** The ids of the programs attached directly to a cgroup on one hook, in the order they run. */
export function cgroupProgramIds(cgroupPath: string, attachType: number): number[] {
  const cg = fs.openSync(cgroupPath, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    const ids = new Uint32Array(64);
    const count = [ids.length];
    const flags = [0];
    const rc = c.progQuery(cg, attachType, 0, flags, ids, count) as number;
    if (rc < 0) throw new BpfError(`cgroup query ${cgroupPath} type ${attachType}`, -rc);
    return [...ids.subarray(0, count[0]!)];
  } finally {
    fs.closeSync(cg);
  }
}

/** The id of the program attached at our clsact handle, or undefined. */
export function queryTc(t: TcTarget): number | undefined {
  return inNetns(t.netns, () => {
    const opts = tcOpts(0, 0);
    const rc = c.tcQuery(tcHook(t), opts) as number;
    if (rc < 0) return undefined;
    return opts.readUInt32LE(16);
  });
}

// ------------------------------------------------------------------ test run

export interface TestRunResult {
  readonly retval: number;
  readonly dataOut: Buffer;
  readonly durationNs: number; // mean per repetition
}

/**
 * BPF_PROG_TEST_RUN: runs a tc program on one frame; ctx sets __sk_buff fields. The frame came in on a device
 * (ingress_ifindex, default: ifindex), as a forwarded packet does; 0 makes it the node's own (bpf/lib/localhost.h).
 */
export function testRun(progFd: number, frame: Buffer, ctx: { ifindex?: number; ingressIfindex?: number; mark?: number; repeat?: number } = {}): TestRunResult {
  const SKB_SIZE = 192; // sizeof(struct __sk_buff)
  const skb = Buffer.alloc(SKB_SIZE);
  skb.writeUInt32LE(ctx.mark ?? 0, 8); // mark
  skb.writeUInt32LE(ctx.ingressIfindex ?? ctx.ifindex ?? 0, 36); // ingress_ifindex
  skb.writeUInt32LE(ctx.ifindex ?? 0, 40); // ifindex
  const out = Buffer.alloc(frame.length + 256);
  const opts = Buffer.alloc(80); // struct bpf_test_run_opts
  opts.writeBigUInt64LE(80n, 0);
  opts.writeBigUInt64LE(koffi.address(frame), 8);
  opts.writeBigUInt64LE(koffi.address(out), 16);
  opts.writeUInt32LE(frame.length, 24);
  opts.writeUInt32LE(out.length, 28);
  opts.writeBigUInt64LE(koffi.address(skb), 32);
  opts.writeUInt32LE(SKB_SIZE, 48);
  opts.writeInt32LE(ctx.repeat ?? 1, 60);
  check("prog test run", c.testRun(progFd, opts));
  return { retval: opts.readUInt32LE(56), dataOut: out.subarray(0, opts.readUInt32LE(28)), durationNs: opts.readUInt32LE(64) };
}

// ------------------------------------------------------------------ run-time statistics

const BPF_STATS_RUN_TIME = 0;
const PROG_INFO = { size: 232, id: 4, runTimeNs: 192, runCnt: 200 } as const; // struct bpf_prog_info (linux/bpf.h)

/** The kernel's id of a loaded program (what attachedProgramId reports). */
export function programId(progFd: number): number {
  const info = Buffer.alloc(PROG_INFO.size);
  const len = [PROG_INFO.size];
  check("prog info", c.objInfo(progFd, info, len));
  return info.readUInt32LE(PROG_INFO.id);
}

/**
 * Turns on the kernel's per-program run time accounting (BPF_ENABLE_STATS) for as long as the
 * returned handle is open; it ends with close() or with the process, never left on.
 */
export function enableRunTimeStats(): { close(): void } {
  const fd = check("enable bpf stats", c.enableStats(BPF_STATS_RUN_TIME));
  let open = true;
  return {
    close: () => {
      if (open) c.closeFd(fd);
      open = false;
    },
  };
}

/** A program's accumulated run time and run count (both grow only while stats are enabled). */
export function programRunStats(progFd: number): { runTimeNs: bigint; runCount: bigint } {
  const info = Buffer.alloc(PROG_INFO.size);
  const len = [PROG_INFO.size];
  check("prog info", c.objInfo(progFd, info, len));
  return { runTimeNs: info.readBigUInt64LE(PROG_INFO.runTimeNs), runCount: info.readBigUInt64LE(PROG_INFO.runCnt) };
}

/** programRunStats of the program of the link pinned at pinPath (undefined when nothing is pinned there). */
export function pinnedLinkRunStats(pinPath: string): { runTimeNs: bigint; runCount: bigint } | undefined {
  const ids = pinnedLinkIds(pinPath);
  if (!ids) return undefined;
  const fd = check(`program id ${ids.program}`, c.progFdById(ids.program) as number);
  try {
    return programRunStats(fd);
  } finally {
    c.closeFd(fd);
  }
}

// ------------------------------------------------------------------ ring buffer

/**
 * Reads a ring-buffer map without blocking the event loop and without a call into C per record: the
 * ring is mapped into this process (as libbpf maps it: the consumer page writable, the producer page
 * and the data pages, mapped twice so that a record never wraps, read-only) and consumed here.
 * libuv watches the map's fd (readable when the programs wake it, once a batch has piled up), and a
 * 100 ms timer drains the rest. A record is handed over as a view into the ring, valid only during
 * the call.
 */
const DRAIN_INTERVAL_MS = 100;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffffffffffffffffn; // (void *)-1, as koffi returns pointers
const SC_PAGESIZE = 30;
const RINGBUF_BUSY_BIT = 0x80000000;
const RINGBUF_DISCARD_BIT = 0x40000000;
const RINGBUF_HDR_SZ = 8;

interface RingMapping {
  readonly consumerPage: Ptr;
  readonly producerArea: Ptr;
  readonly pageSize: number;
  readonly size: number;
  /** consumer_pos (written by us), producer_pos (written by the kernel). */
  readonly consumerPos: BigUint64Array;
  readonly producerPos: BigUint64Array;
  /** The data pages twice over; headers are read through `headers` (32-bit, acquire). */
  readonly data: Buffer;
  readonly headers: Int32Array;
}

export class RingBufferReader {
  private ring: RingMapping | null = null;
  private poller: { stop(): void; close(): void } | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly map: BpfMap,
    private readonly onRecord: (record: Buffer) => void,
  ) {}

  start(): void {
    if (this.ring) return;
    this.ring = mapRing(this.map);
    const poll = (koffi as unknown as { node?: { poll?: typeof koffi.node.poll } }).node?.poll;
    if (poll) this.poller = poll(this.map.fd, { readable: true }, () => this.drain());
    this.timer = setInterval(() => this.drain(), DRAIN_INTERVAL_MS);
    this.timer.unref();
  }

  /**
   * Consumes what the ring holds now, up to where the producer was when the call began; returns the number of
   * records. What the programs write meanwhile waits for the next call (the fd stays readable, the timer comes
   * back): a process that makes events without pause, faster than the handler takes them, must not keep the event
   * loop here, where nothing the handler queued is written out and memory grows until the heap gives out. The ring
   * then fills and the programs count what they could not queue.
   */
  drain(): number {
    const r = this.ring;
    if (!r) return 0;
    const mask = r.size - 1;
    let records = 0;
    let cons = Number(Atomics.load(r.consumerPos, 0));
    const prod = Number(Atomics.load(r.producerPos, 0));
    while (cons < prod) {
      const off = cons & mask;
      const len = Atomics.load(r.headers, off >>> 2) >>> 0;
      if (len & RINGBUF_BUSY_BIT) return records; // still being written: the next drain takes it
      const size = (len & ~(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT)) >>> 0;
      if (!(len & RINGBUF_DISCARD_BIT)) {
        records++;
        try {
          this.onRecord(r.data.subarray(off + RINGBUF_HDR_SZ, off + RINGBUF_HDR_SZ + size));
        } catch (err) {
          log.error({ err: String(err) }, "ring buffer record handler failed");
        }
      }
      cons += (size + RINGBUF_HDR_SZ + 7) & ~7;
      Atomics.store(r.consumerPos, 0, BigInt(cons)); // frees the record's room for the programs
    }
    return records;
  }

  stop(): void {
    if (this.poller) {
      this.poller.stop();
      this.poller.close();
      this.poller = null;
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.ring) unmapRing(this.ring);
    this.ring = null;
  }
}

function mapRing(map: BpfMap): RingMapping {
  const size = map.maxEntries(); // a ring's size in bytes (a power of two, a multiple of the page)
  const pageSize = Number(c.sysconf(SC_PAGESIZE));
  const failed = (p: Ptr): boolean => p === null || p === MAP_FAILED;
  const consumerPage = c.mmap(null, pageSize, PROT_READ | PROT_WRITE, MAP_SHARED, map.fd, 0) as Ptr;
  if (failed(consumerPage)) throw new BpfError(`mmap ${map.name} consumer page`, koffi.errno());
  const areaLength = pageSize + 2 * size;
  const producerArea = c.mmap(null, areaLength, PROT_READ, MAP_SHARED, map.fd, pageSize) as Ptr;
  if (failed(producerArea)) {
    const errno = koffi.errno();
    c.munmap(consumerPage, pageSize);
    throw new BpfError(`mmap ${map.name} data pages`, errno);
  }
  const area = koffi.view(producerArea, areaLength);
  return {
    consumerPage,
    producerArea,
    pageSize,
    size,
    consumerPos: new BigUint64Array(koffi.view(consumerPage, pageSize), 0, 1),
    producerPos: new BigUint64Array(area, 0, 1),
    data: Buffer.from(area, pageSize, 2 * size),
    headers: new Int32Array(area, pageSize, (2 * size) / 4),
  };
}

function unmapRing(r: RingMapping): void {
  c.munmap(r.producerArea, r.pageSize + 2 * r.size);
  c.munmap(r.consumerPage, r.pageSize);
}
