// The connect rules' and events' layout (bpf/lib/connect.h), their encoding and decoding; connect.test.ts compares the constants with the header.
/** Rules of one set; the rule map holds CONNECT_SLOTS (the set in force and the next one, written beside it). */
export const CONNECT_RULES_MAX = 4096;
export const CONNECT_SLOTS = 2 * CONNECT_RULES_MAX;
export const CONNECT_SUBJECT = { any: 0, netns: 1, cgroup: 2 } as const;
export const CONNECT_INDEX_F = { netns: 1, cgroup: 2 } as const;
export const CONNECT_ACTION = { Post: 1, Override: 2, Sigkill: 3, Signal: 4 } as const;
export const CONNECT_F_PORT_NOT = 1;
export const CONNECT_F_ADDR_NOT = 2;
export const CONNECT_F_NOPOST = 4;

export const CONNECT_LAYOUT = {
  rule: { size: 48, netns: 0, hook: 4, portLo: 8, portHi: 10, family: 12, action: 13, signal: 14, flags: 15, addr: 16, prefixLen: 32, policy: 36, cgroup: 40 },
  indexKey: { size: 16, setFirst: 0, subject: 4, id: 8 },
  index: { size: 16, first: 0, count: 4, flags: 8, netns: 12 },
  event: { size: 56, pid: 0, tid: 4, netns: 8, rule: 12, family: 16, action: 17, protocol: 18, port: 20, addr: 24, ktimeNs: 40, hook: 48, policy: 52 },
} as const;

/** The rules in force, `membrane_connect_rules[first .. first + count)`: slot 0 of `membrane_connect_count`, one word. */
export interface ConnectRange {
  readonly first: number;
  readonly count: number;
}

export function encodeRange(r: ConnectRange): number {
  return ((r.first << 16) | r.count) >>> 0;
}

/** A word an earlier runtime wrote before `first` existed is a count from slot 0; what exceeds the map is cut to it. */
export function decodeRange(word: number): ConnectRange {
  const first = Math.min(word >>> 16, CONNECT_SLOTS);
  return { first, count: Math.min(word & 0xffff, CONNECT_SLOTS - first) };
}

/** One key of membrane_connect_index: a list of the set whose first slot is setFirst, for every process (id 0n), a network namespace or a cgroup. */
export function encodeConnectIndexKey(k: { setFirst: number; subject: number; id: bigint }): Buffer {
  const L = CONNECT_LAYOUT.indexKey;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(k.setFirst, L.setFirst);
  b.writeUInt8(k.subject, L.subject);
  b.writeBigUInt64LE(k.id, L.id);
  return b;
}

/** The set (its first slot) a membrane_connect_index key belongs to. */
export function connectIndexKeySet(key: Buffer): number {
  return key.readUInt32LE(CONNECT_LAYOUT.indexKey.setFirst);
}


/** One rule as bpf/connect.c reads it. */
export interface ConnectRule {
  readonly netns: number;
  readonly hook: number;
  readonly portLo: number;
  readonly portHi: number;
  /** 2, 10 or 0 (both). */
  readonly family: number;
  readonly action: number;
  readonly signal: number;
  readonly flags: number;
  /** 16 bytes; IPv4 in the first 4. */
  readonly addr: Buffer;
  readonly prefixLen: number;
  readonly policy: number;
  /** cgroup v2 id the caller must be in; 0n: any. */
  readonly cgroup: bigint;
}

export function encodeConnectRule(r: ConnectRule): Buffer {
  const L = CONNECT_LAYOUT.rule;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(r.netns >>> 0, L.netns);
  b.writeUInt32LE(r.hook, L.hook);
  b.writeUInt16LE(r.portLo, L.portLo);
  b.writeUInt16LE(r.portHi, L.portHi);
  b.writeUInt8(r.family, L.family);
  b.writeUInt8(r.action, L.action);
  b.writeUInt8(r.signal, L.signal);
  b.writeUInt8(r.flags, L.flags);
  r.addr.copy(b, L.addr, 0, 16);
  b.writeUInt32LE(r.prefixLen, L.prefixLen);
  b.writeUInt32LE(r.policy, L.policy);
  b.writeBigUInt64LE(r.cgroup, L.cgroup);
  return b;
}

export interface ConnectEvent {
  readonly pid: number;
  readonly tid: number;
  readonly netns: number;
  readonly rule: number;
  readonly family: number;
  readonly action: number;
  readonly protocol: number;
  readonly port: number;
  readonly addr: Buffer;
  readonly ktimeNs: bigint;
  /** The matched rule's hook id (unique across the rule set in force and the one before it). */
  readonly hook: number;
  readonly policy: number;
}

/** One ring record; undefined when shorter than the layout (counted by the caller). */
export function decodeConnectEvent(rec: Buffer): ConnectEvent | undefined {
  const L = CONNECT_LAYOUT.event;
  if (rec.length < L.size) return undefined;
  return {
    pid: rec.readUInt32LE(L.pid),
    tid: rec.readUInt32LE(L.tid),
    netns: rec.readUInt32LE(L.netns),
    rule: rec.readUInt32LE(L.rule),
    family: rec.readUInt8(L.family),
    action: rec.readUInt8(L.action),
    protocol: rec.readUInt8(L.protocol),
    port: rec.readUInt16LE(L.port),
    addr: Buffer.from(rec.subarray(L.addr, L.addr + 16)),
    ktimeNs: rec.readBigUInt64LE(L.ktimeNs),
    hook: rec.readUInt32LE(L.hook),
    policy: rec.readUInt32LE(L.policy),
  };
}
