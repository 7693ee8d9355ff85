// The tracepoint hooks', rules' and events' layout (bpf/lib/tracepoint.h), their encoding and decoding; tracepoint.test.ts compares the constants with the header.
import type { TracepointArgRead } from "../../core/tracepoint-format.ts";

/** Hooks and rules of one rule set; the maps hold TP_SETS of each (the set in force and the next one, written beside it). */
export const TP_HOOKS_MAX = 64;
export const TP_RULES_MAX = 4096;
export const TP_SETS = 2;
export const TP_INDEX_MAX = TP_SETS * (TP_RULES_MAX + TP_HOOKS_MAX);
export const TP_SUBJECT = { any: 0, netns: 1, cgroup: 2 } as const;
export const TP_INDEX_F = { netns: 1, cgroup: 2 } as const;
export const TP_ARGS_MAX = 5;
export const TP_FILTERS_MAX = 4;
export const TP_STR_MAX = 256;
export const TP_BINARIES_MAX = 64;
export const TP_PROCS_MAX = 65536;
export const TP_ARG = { int: 1, string: 2 } as const;
export const TP_OP = { Equal: 1, Prefix: 2, Postfix: 3, GT: 4, LT: 5, Mask: 6 } as const;
export const TP_ACTION = { Post: 1, Sigkill: 2, Signal: 3 } as const;
export const TP_F = { nopost: 1, pidNot: 4 } as const;

export const TP_LAYOUT = {
  arg: { size: 8, offset: 0, kind: 2, size_: 3, isSigned: 4 },
  hook: { size: 8 + TP_ARGS_MAX * 8, eventId: 0, nargs: 4, args: 8 },
  filter: { size: 16 + TP_STR_MAX, arg: 0, op: 1, negate: 2, len: 4, value: 8, str: 16 },
  rule: { size: 48 + TP_FILTERS_MAX * (16 + TP_STR_MAX), hook: 0, netns: 4, pid: 8, action: 12, signal: 13, flags: 14, nfilters: 15, binaries: 16, binariesAll: 24, binariesNone: 32, cgroup: 40, filters: 48 },
  indexKey: { size: 16, eventId: 0, set: 4, subject: 5, id: 8 },
  index: { size: 16, first: 0, count: 4, flags: 8, netns: 12 },
  binary: { size: 8 + TP_STR_MAX, op: 0, len: 4, str: 8 },
  event: { size: 32 + TP_ARGS_MAX * 8 + TP_ARGS_MAX * TP_STR_MAX, pid: 0, tid: 4, netns: 8, rule: 12, hook: 16, action: 20, flags: 21, ktimeNs: 24, ints: 32, strs: 32 + TP_ARGS_MAX * 8 },
} as const;

export interface TpHook {
  readonly eventId: number;
  readonly args: readonly TracepointArgRead[];
}

export interface TpFilter {
  /** Listed argument. */
  readonly arg: number;
  readonly op: number;
  readonly negate: boolean;
  readonly value: bigint;
  readonly str?: string;
}

export interface TpRule {
  /** The hook's slot in membrane_tp_hooks. */
  readonly hook: number;
  readonly netns: number;
  readonly pid: number;
  readonly action: number;
  readonly signal: number;
  readonly flags: number;
  /** matchBinaries, bits of the binary values (TpBinary indexes): the caller's binary must match one of `binaries` (0n: any), */
  readonly binaries: bigint;
  /** every one of `binariesAll`, */
  readonly binariesAll: bigint;
  /** and none of `binariesNone`. */
  readonly binariesNone: bigint;
  /** The cgroup v2 id the caller must be in (a container a containerSelector selects); 0n: any. */
  readonly cgroup: bigint;
  readonly filters: readonly TpFilter[];
}

/** One key of membrane_tp_index: a tracepoint's rules of one set for every process (id 0n), a network namespace or a cgroup. */
export interface TpIndexKey {
  readonly eventId: number;
  readonly set: number;
  readonly subject: number;
  readonly id: bigint;
}

export function encodeTpIndexKey(k: TpIndexKey): Buffer {
  const L = TP_LAYOUT.indexKey;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(k.eventId, L.eventId);
  b.writeUInt8(k.set, L.set);
  b.writeUInt8(k.subject, L.subject);
  b.writeBigUInt64LE(k.id, L.id);
  return b;
}

/** The set a membrane_tp_index key belongs to. */
export function tpIndexKeySet(key: Buffer): number {
  return key.readUInt8(TP_LAYOUT.indexKey.set);
}


/** One matchBinaries value: op is TP_OP.Equal (In), Prefix or Postfix. */
export interface TpBinary {
  readonly op: number;
  readonly value: string;
}

export function encodeTpBinary(v: TpBinary): Buffer {
  const L = TP_LAYOUT.binary;
  const b = Buffer.alloc(L.size);
  const bytes = Buffer.from(v.value, "utf8");
  b.writeUInt8(v.op, L.op);
  b.writeUInt32LE(bytes.length, L.len);
  bytes.copy(b, L.str, 0, Math.min(bytes.length, TP_STR_MAX - 1));
  return b;
}

/** Whether a binary path matches a value as the exec program judges it (for processes that started before the value was loaded). */
export function tpBinaryMatches(v: TpBinary, binary: string): boolean {
  if (Buffer.byteLength(binary) >= TP_STR_MAX) return false;
  return v.op === TP_OP.Equal ? binary === v.value : v.op === TP_OP.Prefix ? binary.startsWith(v.value) : binary.endsWith(v.value);
}

export function encodeTpHook(h: TpHook): Buffer {
  const L = TP_LAYOUT.hook;
  const A = TP_LAYOUT.arg;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(h.eventId, L.eventId);
  b.writeUInt32LE(h.args.length, L.nargs);
  h.args.forEach((a, i) => {
    const at = L.args + i * A.size;
    b.writeUInt16LE(a.offset, at + A.offset);
    b.writeUInt8(TP_ARG[a.kind], at + A.kind);
    b.writeUInt8(a.kind === "int" ? a.size : 8, at + A.size_);
    b.writeUInt8(a.kind === "int" && a.signed ? 1 : 0, at + A.isSigned);
  });
  return b;
}

export function encodeTpRule(r: TpRule): Buffer {
  const L = TP_LAYOUT.rule;
  const F = TP_LAYOUT.filter;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(r.hook, L.hook);
  b.writeUInt32LE(r.netns >>> 0, L.netns);
  b.writeUInt32LE(r.pid >>> 0, L.pid);
  b.writeUInt8(r.action, L.action);
  b.writeUInt8(r.signal, L.signal);
  b.writeUInt8(r.flags, L.flags);
  b.writeUInt8(r.filters.length, L.nfilters);
  b.writeBigUInt64LE(r.binaries, L.binaries);
  b.writeBigUInt64LE(r.binariesAll, L.binariesAll);
  b.writeBigUInt64LE(r.binariesNone, L.binariesNone);
  b.writeBigUInt64LE(r.cgroup, L.cgroup);
  r.filters.forEach((f, i) => {
    const at = L.filters + i * F.size;
    b.writeUInt8(f.arg, at + F.arg);
    b.writeUInt8(f.op, at + F.op);
    b.writeUInt8(f.negate ? 1 : 0, at + F.negate);
    b.writeBigInt64LE(BigInt.asIntN(64, f.value), at + F.value);
    if (f.str !== undefined) {
      const bytes = Buffer.from(f.str, "utf8");
      b.writeUInt32LE(bytes.length, at + F.len);
      bytes.copy(b, at + F.str, 0, Math.min(bytes.length, TP_STR_MAX - 1));
    }
  });
  return b;
}

export interface TpEvent {
  readonly pid: number;
  readonly tid: number;
  readonly netns: number;
  readonly rule: number;
  readonly hook: number;
  readonly action: number;
  readonly flags: number;
  readonly ktimeNs: bigint;
  readonly ints: readonly bigint[];
  readonly strs: readonly string[];
}

/** One ring record; undefined when shorter than the layout (counted by the caller). */
export function decodeTpEvent(rec: Buffer): TpEvent | undefined {
  const L = TP_LAYOUT.event;
  if (rec.length < L.size) return undefined;
  const ints: bigint[] = [];
  const strs: string[] = [];
  for (let i = 0; i < TP_ARGS_MAX; i++) {
    ints.push(rec.readBigInt64LE(L.ints + i * 8));
    const s = rec.subarray(L.strs + i * TP_STR_MAX, L.strs + (i + 1) * TP_STR_MAX);
    const nul = s.indexOf(0);
    strs.push(s.subarray(0, nul < 0 ? s.length : nul).toString("utf8"));
  }
  return {
    pid: rec.readUInt32LE(L.pid),
    tid: rec.readUInt32LE(L.tid),
    netns: rec.readUInt32LE(L.netns),
    rule: rec.readUInt32LE(L.rule),
    hook: rec.readUInt32LE(L.hook),
    action: rec.readUInt8(L.action),
    flags: rec.readUInt8(L.flags),
    ktimeNs: rec.readBigUInt64LE(L.ktimeNs),
    ints,
    strs,
  };
}
