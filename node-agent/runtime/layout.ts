// The process events' layout (bpf/lib/process.h) and their decoding; process.test.ts compares the constants with the header, and a record shorter than the layout is refused.
export const PROCESS_EVENT_EXEC = 1;
export const PROCESS_EVENT_EXIT = 2;
export const PROCESS_CWD_COMPLETE = 1;

/** Byte offsets of struct process_event_header and struct process_exec_event. */
export const PROCESS_LAYOUT = {
  header: { size: 64, type: 0, pid: 4, tid: 8, ppid: 12, uid: 16, exitCode: 20, ktimeNs: 24, netns: 32, argsLen: 36, cgroupId: 40, comm: 48, commSize: 16 },
  exec: { size: 64 + 256 + 1024 + 8 + 1024 + 256, filename: 64, filenameSize: 256, args: 320, argsSize: 1024, cwdLen: 1344, cwdFlags: 1348, cwd: 1352, cwdSize: 1024 + 256 },
} as const;

/** One record of the ring, as the kernel wrote it. */
export interface RawProcessEvent {
  readonly type: "exec" | "exit";
  readonly pid: number;
  readonly tid: number;
  readonly ppid: number;
  readonly uid: number;
  /** exit: the wait status (signal in the low 7 bits, exit code in the next 8). */
  readonly exitCode: number;
  readonly ktimeNs: bigint;
  readonly netns: number;
  readonly cgroupId: bigint;
  readonly comm: string;
  /** exec only */
  readonly filename?: string;
  /** exec only: argv, argv[0] included. */
  readonly argv?: readonly string[];
  /** exec only: the working directory the kernel read at exec; undefined when its walk did not reach the root. */
  readonly cwd?: string;
}

const cString = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString("utf8");
};

/** Decodes one ring record; undefined for a record of another type or size (counted by the caller). */
export function decodeProcessEvent(rec: Buffer): RawProcessEvent | undefined {
  const H = PROCESS_LAYOUT.header;
  if (rec.length < H.size) return undefined;
  const kind = rec.readUInt32LE(H.type);
  const base = {
    pid: rec.readUInt32LE(H.pid),
    tid: rec.readUInt32LE(H.tid),
    ppid: rec.readUInt32LE(H.ppid),
    uid: rec.readUInt32LE(H.uid),
    exitCode: rec.readUInt32LE(H.exitCode),
    ktimeNs: rec.readBigUInt64LE(H.ktimeNs),
    netns: rec.readUInt32LE(H.netns),
    cgroupId: rec.readBigUInt64LE(H.cgroupId),
    comm: cString(rec.subarray(H.comm, H.comm + H.commSize)),
  };
  if (kind === PROCESS_EVENT_EXIT) return { type: "exit", ...base };
  if (kind !== PROCESS_EVENT_EXEC || rec.length < PROCESS_LAYOUT.exec.size) return undefined;
  const E = PROCESS_LAYOUT.exec;
  const argsLen = Math.min(rec.readUInt32LE(H.argsLen), E.argsSize);
  const raw = rec.subarray(E.args, E.args + argsLen).toString("utf8");
  const argv = raw.split("\0");
  if (argv.length > 0 && argv[argv.length - 1] === "") argv.pop();
  const cwd = rec.readUInt32LE(E.cwdFlags) & PROCESS_CWD_COMPLETE ? cwdOf(rec.subarray(E.cwd, E.cwd + Math.min(rec.readUInt32LE(E.cwdLen), E.cwdSize))) : undefined;
  return { type: "exec", ...base, filename: cString(rec.subarray(E.filename, E.filename + E.filenameSize)), argv, ...(cwd !== undefined ? { cwd } : {}) };
}

/** The kernel's components, leaf first and each NUL-terminated, as a path ("/" for none). */
function cwdOf(components: Buffer): string {
  const parts = components.toString("utf8").split("\0");
  parts.pop();
  return `/${parts.reverse().join("/")}`;
}
