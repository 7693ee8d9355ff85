// libbpf (Debian's libbpf.so.1) and libc through koffi: the raw calls every loader module shares, and libbpf's errors.
import koffi, { type LibraryHandle } from "koffi";
import pino from "pino";

const log = pino({ name: "bpf-loader", level: process.env.LOG_LEVEL ?? "info" });

// libbpf 1.x returns -errno from int functions and NULL + errno from pointer functions.
const libbpf = koffi.load("libbpf.so.1");
const libc = koffi.load("libc.so.6");

export type Ptr = bigint | null;
/* eslint-disable @typescript-eslint/no-explicit-any -- koffi's function handles are untyped at the FFI boundary */
type Fn = (...args: any[]) => any;
/* eslint-enable @typescript-eslint/no-explicit-any */
const fn = (lib: LibraryHandle, def: string): Fn => lib.func(def) as Fn;

/** The libbpf and libc functions the loaders call (koffi handles). */
export const c = {
  openFile: fn(libbpf, "void *bpf_object__open_file(const char *path, const void *opts)"),
  load: fn(libbpf, "int bpf_object__load(void *obj)"),
  close: fn(libbpf, "void bpf_object__close(void *obj)"),
  nextMap: fn(libbpf, "void *bpf_object__next_map(void *obj, void *map)"),
  mapName: fn(libbpf, "const char *bpf_map__name(void *map)"),
  mapFd: fn(libbpf, "int bpf_map__fd(void *map)"),
  mapSetPinPath: fn(libbpf, "int bpf_map__set_pin_path(void *map, const char *path)"),
  mapSetMaxEntries: fn(libbpf, "int bpf_map__set_max_entries(void *map, uint32_t max_entries)"),
  mapKeySize: fn(libbpf, "uint32_t bpf_map__key_size(void *map)"),
  mapValueSize: fn(libbpf, "uint32_t bpf_map__value_size(void *map)"),
  mapType: fn(libbpf, "int bpf_map__type(void *map)"),
  mapMaxEntries: fn(libbpf, "uint32_t bpf_map__max_entries(void *map)"),
  mapFlags: fn(libbpf, "uint32_t bpf_map__map_flags(void *map)"),
  mapCreate: fn(libbpf, "int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)"),
  findProgram: fn(libbpf, "void *bpf_object__find_program_by_name(void *obj, const char *name)"),
  programFd: fn(libbpf, "int bpf_program__fd(void *prog)"),
  mapUpdate: fn(libbpf, "int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)"),
  mapUpdateBatch: fn(libbpf, "int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const void *opts)"),
  mapLookupBatch: fn(libbpf, "int bpf_map_lookup_batch(int fd, const void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const void *opts)"),
  mapFdById: fn(libbpf, "int bpf_map_get_fd_by_id(uint32_t id)"),
  nextProgram: fn(libbpf, "void *bpf_object__next_program(void *obj, void *prog)"),
  programName: fn(libbpf, "const char *bpf_program__name(void *prog)"),
  programType: fn(libbpf, "int bpf_program__type(void *prog)"),
  programSetLogBuf: fn(libbpf, "int bpf_program__set_log_buf(void *prog, void *log_buf, size_t log_size)"),
  programSetLogLevel: fn(libbpf, "int bpf_program__set_log_level(void *prog, uint32_t log_level)"),
  mapLookup: fn(libbpf, "int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)"),
  mapDelete: fn(libbpf, "int bpf_map_delete_elem(int fd, const void *key)"),
  mapNextKey: fn(libbpf, "int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next)"),
  tcHookCreate: fn(libbpf, "int bpf_tc_hook_create(void *hook)"),
  tcAttach: fn(libbpf, "int bpf_tc_attach(const void *hook, void *opts)"),
  tcDetach: fn(libbpf, "int bpf_tc_detach(const void *hook, const void *opts)"),
  tcQuery: fn(libbpf, "int bpf_tc_query(const void *hook, void *opts)"),
  testRun: fn(libbpf, "int bpf_prog_test_run_opts(int fd, void *opts)"),
  enableStats: fn(libbpf, "int bpf_enable_stats(int type)"),
  objInfo: fn(libbpf, "int bpf_obj_get_info_by_fd(int fd, _Out_ uint8_t *info, _Inout_ uint32_t *len)"),
  closeFd: fn(libc, "int close(int fd)"),
  numCpus: fn(libbpf, "int libbpf_num_possible_cpus()"),
  mmap: fn(libc, "void *mmap(void *addr, size_t length, int prot, int flags, int fd, intptr_t offset)"),
  munmap: fn(libc, "int munmap(void *addr, size_t length)"),
  sysconf: fn(libc, "long sysconf(int name)"),
  setns: fn(libc, "int setns(int fd, int nstype)"),
  linkCreate: fn(libbpf, "int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)"),
  linkUpdate: fn(libbpf, "int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)"),
  linkDetach: fn(libbpf, "int bpf_link_detach(int link_fd)"),
  objPin: fn(libbpf, "int bpf_obj_pin(int fd, const char *pathname)"),
  rawTracepointOpen: fn(libbpf, "int bpf_raw_tracepoint_open(const char *name, int prog_fd)"),
  objGet: fn(libbpf, "int bpf_obj_get(const char *pathname)"),
  progFdById: fn(libbpf, "int bpf_prog_get_fd_by_id(uint32_t id)"),
  linkFdById: fn(libbpf, "int bpf_link_get_fd_by_id(uint32_t id)"),
  progQuery: fn(
    libbpf,
    "int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, _Out_ uint32_t *prog_ids, _Inout_ uint32_t *prog_cnt)",
  ),
};

// libbpf's own diagnostics go through pino, one line each. va_list is a pointer on x86-64 and
// aarch64 Linux, so the registered callback can hand it straight to vsnprintf.
const PrintFn = koffi.proto("int membrane_libbpf_print(int level, const char *fmt, void *args)");
const vsnprintf = fn(libc, "int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)");
const setPrint = fn(libbpf, "void *libbpf_set_print(membrane_libbpf_print *fn)");
const printBuf = Buffer.alloc(1024);
const printCallback = koffi.register((level: number, fmt: string, args: bigint) => {
  const n = vsnprintf(printBuf, printBuf.length, fmt, args) as number;
  const msg = printBuf.subarray(0, Math.max(0, Math.min(n, printBuf.length - 1))).toString().trimEnd();
  // Expected through the kernel's extack: tc hook creation on an existing clsact qdisc (EEXIST), and
  // removing a clsact filter where there is none (the usual case once programs attach with tcx).
  if (/Exclusivity flag on|Cannot find specified filter chain|Parent Qdisc doesn't exist/.test(msg) || level >= 2) log.debug({ libbpf: msg });
  else if (level === 1) log.info({ libbpf: msg });
  else log.warn({ libbpf: msg });
  return 0;
}, koffi.pointer(PrintFn));
setPrint(printCallback); // lives as long as the process: libbpf may print at any time

/** A libbpf failure: names the operation and the errno. */
export class BpfError extends Error {
  constructor(
    readonly op: string,
    readonly errno: number,
  ) {
    super(`${op}: ${errnoName(errno)}`);
    this.name = "BpfError";
  }
}

const ERRNO: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 7: "E2BIG", 9: "EBADF", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES", 16: "EBUSY", 17: "EEXIST",
  19: "ENODEV", 22: "EINVAL", 28: "ENOSPC", 95: "EOPNOTSUPP", 524: "ENOTSUPP",
};
function errnoName(e: number): string {
  return `${ERRNO[e] ?? "errno"} (${e})`;
}

export function check(op: string, rc: number): number {
  if (rc < 0) throw new BpfError(op, -rc);
  return rc;
}

const MAP_INFO = { size: 96, type: 0, id: 4, keySize: 8, valueSize: 12, maxEntries: 16, flags: 20, name: 24, nameSize: 16 } as const; // struct bpf_map_info

export interface MapShape {
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
}

export function mapShapeOfFd(fd: number, what: string): MapShape {
  const { type, keySize, valueSize, maxEntries, flags } = mapInfoOfFd(fd, what);
  return { type, keySize, valueSize, maxEntries, flags };
}

/** A map's shape, its kernel id and its name as the kernel keeps it (at most 15 characters). */
export function mapInfoOfFd(fd: number, what: string): MapShape & { readonly id: number; readonly name: string } {
  const info = Buffer.alloc(MAP_INFO.size);
  const len = [MAP_INFO.size];
  check(`map info ${what}`, c.objInfo(fd, info, len));
  const name = info.subarray(MAP_INFO.name, MAP_INFO.name + MAP_INFO.nameSize);
  return {
    type: info.readUInt32LE(MAP_INFO.type),
    id: info.readUInt32LE(MAP_INFO.id),
    keySize: info.readUInt32LE(MAP_INFO.keySize),
    valueSize: info.readUInt32LE(MAP_INFO.valueSize),
    maxEntries: info.readUInt32LE(MAP_INFO.maxEntries),
    flags: info.readUInt32LE(MAP_INFO.flags),
    name: name.subarray(0, Math.max(0, name.indexOf(0) === -1 ? name.length : name.indexOf(0))).toString(),
  };
}

const PROG_INFO = { size: 232, type: 0, id: 4, nrMapIds: 52, mapIds: 56 } as const; // struct bpf_prog_info (linux/bpf.h)

/** A loaded program's type, kernel id and the ids of the maps it uses. */
export function programInfoOfFd(fd: number, what: string): { readonly type: number; readonly id: number; readonly mapIds: readonly number[] } {
  const count = (): number => {
    const info = Buffer.alloc(PROG_INFO.size);
    check(`prog info ${what}`, c.objInfo(fd, info, [PROG_INFO.size]));
    return info.readUInt32LE(PROG_INFO.nrMapIds);
  };
  const room = Math.max(1, count());
  const ids = Buffer.alloc(4 * room);
  const info = Buffer.alloc(PROG_INFO.size);
  info.writeUInt32LE(room, PROG_INFO.nrMapIds);
  info.writeBigUInt64LE(koffi.address(ids) as bigint, PROG_INFO.mapIds);
  check(`prog info ${what}`, c.objInfo(fd, info, [PROG_INFO.size]));
  const n = Math.min(room, info.readUInt32LE(PROG_INFO.nrMapIds));
  return { type: info.readUInt32LE(PROG_INFO.type), id: info.readUInt32LE(PROG_INFO.id), mapIds: Array.from({ length: n }, (_, i) => ids.readUInt32LE(4 * i)) };
}
