// The TypeScript mirror of bpf/lib/layout.h: struct sizes/offsets, constants, and their encoders.
import { parseIP, parseIPv4Number } from "../../core/cidr.ts";
import { MAX_NODE_HOST_IDENTITY, MIN_NODE_HOST_IDENTITY } from "../../core/host-endpoint.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, IDENTITY, MAX_CLUSTER_IDENTITY, MAX_LOCAL_IDENTITY, MIN_CLUSTER_IDENTITY, MIN_FQDN_IDENTITY, MIN_LOCAL_IDENTITY, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER } from "../../core/identity.ts";
import { IDENTITY_WILDCARD, PROTO_NUMBER, type Direction, type PolicyEntry, type SubjectPolicy } from "../../core/model.ts";
import type { MonitorAggregation } from "../monitor-aggregation.ts";

export interface FieldLayout {
  readonly offset: number;
  readonly size: number;
}
export interface StructLayout {
  readonly size: number;
  readonly fields: Readonly<Record<string, FieldLayout>>;
}

const f = (offset: number, size: number): FieldLayout => ({ offset, size });

/** Must equal the C structs byte for byte; layout.test.ts compiles the header and compares. */
export const LAYOUT = {
  policy_key: {
    size: 16,
    fields: { prefixlen: f(0, 4), subject: f(4, 4), peer: f(8, 4), direction: f(12, 1), proto: f(13, 1), dport: f(14, 2) },
  },
  policy_lens_key: { size: 8, fields: { subject: f(0, 4), direction: f(4, 1) } },
  policy_lens_value: { size: 8, fields: { peer_lens: f(0, 4), wildcard_lens: f(4, 4) } },
  policy_value: { size: 8, fields: { verdict: f(0, 1), proxy_port: f(2, 2), rule_id: f(4, 4) } },
  ipcache_key: { size: 24, fields: { prefixlen: f(0, 4), family: f(4, 1), addr: f(8, 16) } },
  ipcache_host_key: { size: 20, fields: { family: f(0, 1), addr: f(4, 16) } },
  ipcache_value: { size: 12, fields: { identity: f(0, 4), tunnel_endpoint: f(4, 4), flags: f(8, 1) } },
  ipblock_value: { size: 4, fields: { identity: f(0, 4) } },
  endpoint_key: { size: 20, fields: { family: f(0, 1), addr: f(4, 16) } },
  endpoint_value: { size: 12, fields: { ifindex: f(0, 4), identity: f(4, 4), flags: f(8, 4) } },
  host_guard_key: { size: 4, fields: { direction: f(0, 1), proto: f(1, 1), port: f(2, 2) } },
  host_guard_value: { size: 4, fields: { peers: f(0, 1) } },
  ct_key: {
    size: 40,
    fields: { saddr: f(0, 16), daddr: f(16, 16), sport: f(32, 2), dport: f(34, 2), proto: f(36, 1), family: f(37, 1), direction: f(38, 1) },
  },
  ct_value: { size: 24, fields: { expires_ns: f(0, 8), rule_id: f(8, 4), state: f(12, 1), seen_reply: f(13, 1), flags: f(14, 1), reported: f(15, 1), ifindex: f(16, 4), ep_gen: f(20, 4) } },
  event: {
    size: 72,
    fields: {
      timestamp_ns: f(0, 8),
      verdict: f(8, 1),
      direction: f(9, 1),
      reason: f(10, 1),
      proto: f(11, 1),
      family: f(12, 1),
      tcp_flags: f(13, 1),
      ct_state: f(14, 1),
      icmp_code: f(15, 1),
      src_identity: f(16, 4),
      dst_identity: f(20, 4),
      rule_id: f(24, 4),
      ifindex: f(28, 4),
      saddr: f(32, 16),
      daddr: f(48, 16),
      sport: f(64, 2),
      dport: f(66, 2),
    },
  },
  config_value: { size: 16, fields: { vxlan_ifindex: f(0, 4), flags: f(4, 4), ep_gen: f(8, 4) } },
  redirect_key: { size: 20, fields: { addr: f(0, 16), port: f(16, 2), proto: f(18, 1), family: f(19, 1) } },
  redirect_value: { size: 36, fields: { orig_daddr: f(0, 16), orig_dport: f(16, 2), proxy_port: f(18, 2), subject: f(20, 4), rule_id: f(24, 4), ingress_proxy_port: f(28, 2), ingress_rule_id: f(32, 4) } },
  redirect_port_value: { size: 4, fields: { flags: f(0, 4) } },
  redirect_config: { size: 20, fields: { addr4: f(0, 4), addr6: f(4, 16) } },
  encryption_value: { size: 8, fields: { strict: f(0, 4), wireguard_ifindex: f(4, 4) } },
} as const satisfies Record<string, StructLayout>;

/** The #defines of layout.h that the TypeScript side uses (checked by the same test). */
export const CONST = {
  IDENTITY_WILDCARD: 0,
  IDENTITY_HOST: IDENTITY.host,
  IDENTITY_WORLD: IDENTITY.world,
  IDENTITY_INIT: IDENTITY.init,
  IDENTITY_REMOTE_NODE: IDENTITY.remoteNode,
  IDENTITY_MIN_CLUSTER: MIN_CLUSTER_IDENTITY,
  IDENTITY_MAX_CLUSTER: MAX_CLUSTER_IDENTITY,
  IDENTITY_MIN_NODE: MIN_NODE_HOST_IDENTITY,
  IDENTITY_MAX_NODE: MAX_NODE_HOST_IDENTITY,
  IDENTITY_CLASS_CLUSTER: CLUSTER_CLASS_PEER,
  IDENTITY_CLASS_PODS: EVERY_POD_CLASS_PEER,
  IDENTITY_CLASS_WORLD: WORLD_CLASS_PEER,
  IDENTITY_CLASS_WORLD_IPV4: WORLD_IPV4_CLASS_PEER,
  IDENTITY_CLASS_WORLD_IPV6: WORLD_IPV6_CLASS_PEER,
  IDENTITY_WORLD_IPV4: IDENTITY.worldIPv4,
  IDENTITY_WORLD_IPV6: IDENTITY.worldIPv6,
  IDENTITY_MIN_LOCAL: MIN_LOCAL_IDENTITY,
  IDENTITY_MIN_FQDN: MIN_FQDN_IDENTITY,
  IDENTITY_MAX_LOCAL: MAX_LOCAL_IDENTITY,
  FAMILY_IPV4: 4,
  FAMILY_IPV6: 6,
  DIR_INGRESS: 0,
  DIR_EGRESS: 1,
  POLICY_FIXED_PREFIX_BITS: 80,
  POLICY_LENS_PORT_MASK: 0x1ffff,
  POLICY_LENS_ANY_PROTO: 1 << 17,
  POLICY_LENS_CLASS: 1 << 18,
  POLICY_LENS_PODS: 1 << 19,
  POLICY_LENS_WORLD: 1 << 20,
  POLICY_LENS_WORLD_IPV4: 1 << 21,
  POLICY_LENS_WORLD_IPV6: 1 << 22,
  VERDICT_ALLOW: 1,
  VERDICT_DENY: 2,
  IPCACHE_FIXED_PREFIX_BITS: 32,
  IPCACHE_F_NODE: 1,
  EP_F_INGRESS_ENFORCED: 1,
  EP_F_EGRESS_ENFORCED: 2,
  EP_F_POLICY_FAILED: 4,
  EP_F_POLICY_AUDIT: 8,
  CT_F_NO_TUNNEL: 1,
  CT_F_PROXY: 2,
  REDIRECT_PORT_F_SERVED: 1,
  HOST_GUARD_ANY_PEER: 0,
  HOST_GUARD_NODE_PEER: 1,
  DROP_REASON_MAX: 16,
  EVENT_FORWARDED: 1,
  EVENT_DROPPED: 2,
  EVENT_AUDIT: 3,
  EVENT_CT_NEW: 0,
  EVENT_CT_ESTABLISHED: 1,
  EVENT_CT_REPLY: 2,
  CT_REPORTED_FIRST: 0x08,
  CT_REPORTED_REPLY_SHIFT: 4,
  RULE_ID_NONE: 0xffffffff,
  CONFIG_F_EVENTS_FORWARDED: 1,
  CONFIG_F_EVENTS_FLAGS: 2,
  CONFIG_F_EVENTS_PACKETS: 4,
  CONFIG_F_POLICY_AUDIT: 8,
  CONFIG_F_LOCALHOST_POLICY: 16,
  CONFIG_F_DUAL_STACK: 32,
  MARK_MAGIC_IDENTITY: 0x0e000000,
  MARK_MAGIC_PROXY_INGRESS: 0x0d000000,
  ENCRYPTED_NODE_F_TUNNEL: 1,
  ENCRYPTED_NODE_F_ROUTED: 2,
} as const;

/** bpf/lib/policy.h's POLICY_MAP_ENTRIES: the policy map's size when the agent is not given another (--policy-map-max). */
export const DEFAULT_POLICY_MAP_ENTRIES = 262_144;

/** Drop reasons by their DROP_* number (index 0 of the counters counts lost events). */
export const DROP_REASONS = {
  1: "policy denied",
  2: "policy denied (default deny)",
  3: "spoofed source",
  4: "unknown endpoint",
  5: "VNI from unknown node",
  6: "invalid identity in VNI",
  7: "malformed packet",
  8: "unsupported L3 protocol",
  9: "IP fragment",
  10: "tunnel key error",
  11: "no tunnel device",
  12: "policy did not fit the policy map (endpoint fails closed)",
  13: "proxy redirect not possible (fails closed)",
  14: "UNENCRYPTED: no working tunnel to the destination node (strict encryption)",
  15: "host firewall program for pod-to-node traffic missing (fails closed)",
} as const satisfies Record<number, string>;
export type DropReasonCode = keyof typeof DROP_REASONS;
export const DROP_REASON_CODES: Readonly<Record<string, number>> = {
  DROP_POLICY_DENY: 1,
  DROP_POLICY_DEFAULT_DENY: 2,
  DROP_SPOOFED_SOURCE: 3,
  DROP_UNKNOWN_ENDPOINT: 4,
  DROP_UNKNOWN_NODE: 5,
  DROP_INVALID_VNI: 6,
  DROP_MALFORMED: 7,
  DROP_UNSUPPORTED_L3: 8,
  DROP_FRAGMENT: 9,
  DROP_TUNNEL_KEY: 10,
  DROP_NO_TUNNEL_DEVICE: 11,
  DROP_POLICY_OVERFLOW: 12,
  DROP_PROXY_REDIRECT: 13,
  DROP_UNENCRYPTED: 14,
  DROP_MISSED_TAIL_CALL: 15,
};

export function directionCode(d: Direction): number {
  return d === "ingress" ? CONST.DIR_INGRESS : CONST.DIR_EGRESS;
}

/** An IPv4 or IPv6 address → (family, 16 address bytes; IPv4 in the first 4), parsed by core/cidr.ts. */
export function parseAddress(ip: string): { family: 4 | 6; bytes: Buffer } {
  const v4 = ip.includes(":") ? undefined : parseIPv4Number(ip); // the common case, without a BigInt
  if (v4 !== undefined) {
    const bytes = Buffer.alloc(16);
    bytes.writeUInt32BE(v4, 0);
    return { family: 4, bytes };
  }
  const parsed = parseIP(ip);
  if (parsed === undefined) throw new RangeError(`invalid ${ip.includes(":") ? "IPv6" : "IPv4"} address ${ip}`);
  const bytes = Buffer.alloc(16);
  if (parsed.family === 4) bytes.writeUInt32BE(Number(parsed.addr), 0);
  else {
    bytes.writeBigUInt64BE(parsed.addr >> 64n, 0);
    bytes.writeBigUInt64BE(parsed.addr & 0xffffffffffffffffn, 8);
  }
  return { family: parsed.family, bytes };
}

/**
 * The address in bytes[offset..] as text (IPv4 in its first 4 bytes), IPv6 in RFC 5952's form as Hubble and
 * kubectl print it (the longest run of two or more zero groups as "::", the first on a tie): flows and the
 * exact-address filters of clients compare it as text. Every event pays this twice, so no intermediate arrays.
 */
export function formatAddress(family: number, bytes: Uint8Array, offset = 0): string {
  if (family === 4) return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
  let zerosAt = -1;
  let zeros = 1;
  for (let g = 0, run = 0; g < 8; g++) {
    run = bytes[offset + 2 * g] === 0 && bytes[offset + 2 * g + 1] === 0 ? run + 1 : 0;
    if (run > zeros) {
      zeros = run;
      zerosAt = g - run + 1;
    }
  }
  let out = "";
  for (let g = 0; g < 8; g++) {
    if (g === zerosAt) {
      out += "::";
      g += zeros - 1;
      continue;
    }
    if (g > 0 && g !== zerosAt + zeros) out += ":";
    out += ((bytes[offset + 2 * g]! << 8) | bytes[offset + 2 * g + 1]!).toString(16);
  }
  return out;
}

// ------------------------------------------------------------------ policy map

/** The policy-map key of a compiled entry; throws on an entry the datapath cannot represent. */
export function encodePolicyKey(e: PolicyEntry): Buffer {
  const L = LAYOUT.policy_key.fields;
  if (e.proto === PROTO_NUMBER.ANY && (e.port !== 0 || e.portPrefixLen !== 0)) {
    throw new RangeError(`policy entry rule ${e.ruleId}: proto ANY must have port 0/0`);
  }
  if (e.portPrefixLen < 0 || e.portPrefixLen > 16 || e.port < 0 || e.port > 0xffff) {
    throw new RangeError(`policy entry rule ${e.ruleId}: port ${e.port}/${e.portPrefixLen} out of range`);
  }
  const hostBits = 16 - e.portPrefixLen;
  if (hostBits > 0 && (e.port & ((1 << hostBits) - 1)) !== 0) {
    throw new RangeError(`policy entry rule ${e.ruleId}: port ${e.port}/${e.portPrefixLen} is not aligned to its prefix`);
  }
  const b = Buffer.alloc(LAYOUT.policy_key.size);
  b.writeUInt32LE(CONST.POLICY_FIXED_PREFIX_BITS + e.portPrefixLen, L.prefixlen.offset);
  b.writeUInt32LE(e.subject >>> 0, L.subject.offset);
  b.writeUInt32LE(e.peer >>> 0, L.peer.offset);
  b.writeUInt8(directionCode(e.direction), L.direction.offset);
  b.writeUInt8(e.proto, L.proto.offset);
  b.writeUInt16BE(e.port, L.dport.offset);
  return b;
}

/** What a policy-map key says of its entry: enough to know which keys the lookup must probe. */
export function decodePolicyKey(b: Buffer): Pick<PolicyEntry, "subject" | "direction" | "peer" | "proto" | "port" | "portPrefixLen"> {
  const L = LAYOUT.policy_key.fields;
  return {
    subject: b.readUInt32LE(L.subject.offset),
    direction: b.readUInt8(L.direction.offset) === CONST.DIR_INGRESS ? "ingress" : "egress",
    peer: b.readUInt32LE(L.peer.offset),
    proto: b.readUInt8(L.proto.offset),
    port: b.readUInt16BE(L.dport.offset),
    portPrefixLen: b.readUInt32LE(L.prefixlen.offset) - CONST.POLICY_FIXED_PREFIX_BITS,
  };
}

export function encodePolicyValue(e: PolicyEntry): Buffer {
  const L = LAYOUT.policy_value.fields;
  const b = Buffer.alloc(LAYOUT.policy_value.size);
  b.writeUInt8(e.verdict === "allow" ? CONST.VERDICT_ALLOW : CONST.VERDICT_DENY, L.verdict.offset);
  b.writeUInt16LE(e.proxyPort, L.proxy_port.offset);
  b.writeUInt32LE(e.ruleId >>> 0, L.rule_id.offset);
  return b;
}

/** The policy-lens key of a subject's direction. */
export function encodePolicyLensKey(subject: number, direction: Direction): Buffer {
  const L = LAYOUT.policy_lens_key.fields;
  const b = Buffer.alloc(LAYOUT.policy_lens_key.size);
  b.writeUInt32LE(subject >>> 0, L.subject.offset);
  b.writeUInt8(directionCode(direction), L.direction.offset);
  return b;
}

/**
 * Which policy-map keys a direction's entries use, for entries of one peer and of the wildcard
 * peer: bit L = a proto-specific entry with port prefix L, POLICY_LENS_ANY_PROTO = an entry with
 * proto ANY. The kernel probes only those.
 */
export interface PolicyLens {
  readonly peerLens: number;
  readonly wildcardLens: number;
}

export function policyLensOf(entries: readonly Pick<PolicyEntry, "direction" | "peer" | "proto" | "portPrefixLen">[], direction: Direction): PolicyLens {
  let peerLens = 0;
  let wildcardLens = 0;
  for (const e of entries) {
    if (e.direction !== direction) continue;
    const bit = e.proto === PROTO_NUMBER.ANY ? CONST.POLICY_LENS_ANY_PROTO : 1 << e.portPrefixLen;
    if (e.peer === IDENTITY_WILDCARD) wildcardLens |= bit;
    else peerLens |= e.peer === CLUSTER_CLASS_PEER ? bit | CONST.POLICY_LENS_CLASS : e.peer === EVERY_POD_CLASS_PEER ? bit | CONST.POLICY_LENS_PODS : e.peer === WORLD_CLASS_PEER ? bit | CONST.POLICY_LENS_WORLD : e.peer === WORLD_IPV4_CLASS_PEER ? bit | CONST.POLICY_LENS_WORLD_IPV4 : e.peer === WORLD_IPV6_CLASS_PEER ? bit | CONST.POLICY_LENS_WORLD_IPV6 : bit;
  }
  return { peerLens: peerLens >>> 0, wildcardLens: wildcardLens >>> 0 };
}

/** Both lenses' keys: what a packet must be probed for while the map holds either's entries. */
export function unionLens(a: PolicyLens, b: PolicyLens): PolicyLens {
  return { peerLens: (a.peerLens | b.peerLens) >>> 0, wildcardLens: (a.wildcardLens | b.wildcardLens) >>> 0 };
}

export const NO_LENS: PolicyLens = { peerLens: 0, wildcardLens: 0 };

export function encodePolicyLensValue(lens: PolicyLens): Buffer {
  const L = LAYOUT.policy_lens_value.fields;
  const b = Buffer.alloc(LAYOUT.policy_lens_value.size);
  b.writeUInt32LE(lens.peerLens >>> 0, L.peer_lens.offset);
  b.writeUInt32LE(lens.wildcardLens >>> 0, L.wildcard_lens.offset);
  return b;
}

export function decodePolicyLensValue(b: Buffer): PolicyLens {
  const L = LAYOUT.policy_lens_value.fields;
  return { peerLens: b.readUInt32LE(L.peer_lens.offset), wildcardLens: b.readUInt32LE(L.wildcard_lens.offset) };
}

export interface MapEntry {
  readonly key: Buffer;
  readonly value: Buffer;
}

/** Core's compiled entries → policy-map key/value pairs. */
export function policyMapEntries(entries: readonly PolicyEntry[]): MapEntry[] {
  return entries.map((e) => ({ key: encodePolicyKey(e), value: encodePolicyValue(e) }));
}

// ------------------------------------------------------------------ ipcache, endpoints, config

export interface IpcacheEntry {
  readonly cidr: string; // "10.0.0.0/8", "fd00::1/128" or a bare address
  readonly identity: number;
  readonly tunnelEndpoint?: string; // IPv4 of the node hosting it
  readonly node?: boolean; // the address is a cluster node (its VNIs are trusted)
}

/**
 * The keys of a prefix in the datapath: always its trie key; for a full-length prefix (an address)
 * also its hosts-hash key, which programs probe first. Addresses stay in the trie too, so that the
 * programs of an earlier version (trie only) still attached to an interface keep finding them.
 */
export interface IpcacheKeys {
  readonly trie: Buffer;
  readonly host?: Buffer;
}

export function ipcacheKeys(cidr: string): IpcacheKeys {
  const trie = Buffer.alloc(LAYOUT.ipcache_key.size);
  const host = Buffer.alloc(LAYOUT.ipcache_host_key.size);
  return writeIpcacheKeys(cidr, trie, 0, host, 0) ? { trie, host } : { trie };
}

/**
 * Writes the trie key of `cidr` at trie[trieOffset..] and, for a full-length prefix (an address), its hosts-hash key
 * at host[hostOffset..] (returns whether it did): what a batch of keys laid back to back needs, with no Buffer per key.
 */
export function writeIpcacheKeys(cidr: string, trie: Buffer, trieOffset: number, host: Buffer, hostOffset: number): boolean {
  const slash = cidr.indexOf("/");
  const ip = slash < 0 ? cidr : cidr.slice(0, slash);
  const v4 = ip.includes(":") ? undefined : parseIPv4Number(ip);
  const { family, bytes } = v4 === undefined ? parseAddress(ip) : { family: 4 as const, bytes: undefined };
  const max = family === 4 ? 32 : 128;
  const prefix = slash < 0 ? max : Number(cidr.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (slash >= 0 && slash === cidr.length - 1)) throw new RangeError(`invalid prefix length in ${cidr}`);
  const L = LAYOUT.ipcache_key.fields;
  trie.fill(0, trieOffset, trieOffset + LAYOUT.ipcache_key.size);
  trie.writeUInt32LE(CONST.IPCACHE_FIXED_PREFIX_BITS + prefix, trieOffset + L.prefixlen.offset);
  trie.writeUInt8(familyCode(family), trieOffset + L.family.offset);
  if (bytes) bytes.copy(trie, trieOffset + L.addr.offset);
  else trie.writeUInt32BE(v4!, trieOffset + L.addr.offset);
  if (prefix !== max) return false;
  const H = LAYOUT.ipcache_host_key.fields;
  host.fill(0, hostOffset, hostOffset + LAYOUT.ipcache_host_key.size);
  host.writeUInt8(familyCode(family), hostOffset + H.family.offset);
  trie.copy(host, hostOffset + H.addr.offset, trieOffset + L.addr.offset, trieOffset + L.addr.offset + L.addr.size);
  return true;
}

/** The hosts-hash key of a full-length trie key (family and address as they are), or null for a shorter prefix. */
export function hostKeyOfTrieKey(trieKey: Buffer): Buffer | null {
  const L = LAYOUT.ipcache_key.fields;
  const family = trieKey.readUInt8(L.family.offset);
  const max = family === CONST.FAMILY_IPV4 ? 32 : 128;
  if (trieKey.readUInt32LE(L.prefixlen.offset) !== CONST.IPCACHE_FIXED_PREFIX_BITS + max) return null;
  const addr = trieKey.subarray(L.addr.offset, L.addr.offset + L.addr.size);
  return encodeAddressKey(family === CONST.FAMILY_IPV4 ? 4 : 6, addr, LAYOUT.ipcache_host_key);
}

const familyCode = (family: 4 | 6): number => (family === 4 ? CONST.FAMILY_IPV4 : CONST.FAMILY_IPV6);

/** A key of the address-keyed hashes (endpoints, ipcache hosts): family, padding, 16 address bytes. */
function encodeAddressKey(family: 4 | 6, bytes: Buffer, layout: typeof LAYOUT.endpoint_key | typeof LAYOUT.ipcache_host_key): Buffer {
  const b = Buffer.alloc(layout.size);
  b.writeUInt8(familyCode(family), layout.fields.family.offset);
  bytes.copy(b, layout.fields.addr.offset);
  return b;
}

export function encodeIpcacheValue(e: IpcacheEntry): Buffer {
  const b = Buffer.alloc(LAYOUT.ipcache_value.size);
  writeIpcacheValue(e, b, 0);
  return b;
}

/** Writes the ipcache value of `e` at buf[offset..] (a batch's values laid back to back). */
export function writeIpcacheValue(e: IpcacheEntry, buf: Buffer, offset: number): void {
  const L = LAYOUT.ipcache_value.fields;
  buf.fill(0, offset, offset + LAYOUT.ipcache_value.size);
  buf.writeUInt32LE(e.identity >>> 0, offset + L.identity.offset);
  if (e.tunnelEndpoint) {
    const t = e.tunnelEndpoint.includes(":") ? undefined : parseIPv4Number(e.tunnelEndpoint);
    if (t === undefined) {
      parseAddress(e.tunnelEndpoint); // names an address that is not one
      throw new RangeError(`tunnel endpoint ${e.tunnelEndpoint} must be IPv4`);
    }
    buf.writeUInt32BE(t, offset + L.tunnel_endpoint.offset);
  }
  buf.writeUInt8(e.node ? CONST.IPCACHE_F_NODE : 0, offset + L.flags.offset);
}

const scratch = { trie: Buffer.alloc(LAYOUT.ipcache_key.size), host: Buffer.alloc(LAYOUT.ipcache_host_key.size), value: Buffer.alloc(LAYOUT.ipcache_value.size) };

/** Throws what ipcacheKeys would for a prefix the datapath cannot hold, without allocating its keys (validating a snapshot). */
export function checkIpcachePrefix(cidr: string): void {
  writeIpcacheKeys(cidr, scratch.trie, 0, scratch.host, 0);
}

/** Throws what encodeIpcacheValue would for an entry the datapath cannot hold, without allocating its value. */
export function checkIpcacheValue(e: IpcacheEntry): void {
  writeIpcacheValue(e, scratch.value, 0);
}

/**
 * A trie or hosts-hash key as a value a Set compares by content: for IPv4 (the bulk of an ipcache) a number (prefix
 * length and address), else the key's bytes as a string. Pruning a 51,000-entry ipcache then makes no hex string per
 * key. `kind` says which of the two layouts `buf[offset..]` holds.
 */
export function ipcacheKeyId(kind: "trie" | "host", buf: Buffer, offset: number): number | string {
  const layout = kind === "trie" ? LAYOUT.ipcache_key : LAYOUT.ipcache_host_key;
  const F = layout.fields;
  const addr = offset + F.addr.offset;
  if (buf[offset + F.family.offset] === CONST.FAMILY_IPV4 && buf.readUInt32LE(addr + 4) === 0 && buf.readUInt32LE(addr + 8) === 0 && buf.readUInt32LE(addr + 12) === 0) {
    const bits = kind === "trie" ? buf.readUInt32LE(offset + LAYOUT.ipcache_key.fields.prefixlen.offset) : 0;
    // The bytes between the family and the address are padding, zero in every key written here; another key is kept apart.
    const paddingZero = buf.readUIntLE(offset + F.family.offset + 1, addr - offset - F.family.offset - 1) === 0;
    if (bits < 256 && paddingZero) return bits * 2 ** 32 + buf.readUInt32BE(addr);
  }
  return buf.toString("latin1", offset, offset + layout.size);
}

/** A NetworkPolicy ipBlock prefix and its ipBlock identity (the ipblocks trie, keyed like the ipcache's). */
export interface IPBlockEntry {
  readonly cidr: string;
  readonly identity: number;
}

export function encodeIPBlockValue(e: IPBlockEntry): Buffer {
  const b = Buffer.alloc(LAYOUT.ipblock_value.size);
  b.writeUInt32LE(e.identity >>> 0, LAYOUT.ipblock_value.fields.identity.offset);
  return b;
}

export interface EndpointEntry {
  readonly ip: string;
  readonly ifindex: number;
  readonly identity: number;
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
  /** Policy audit mode for this endpoint: its policy drops pass as audits (bpf/lib/audit.h). */
  readonly auditMode?: boolean;
}

export function encodeEndpointKey(ip: string): Buffer {
  const { family, bytes } = parseAddress(ip);
  return encodeAddressKey(family, bytes, LAYOUT.endpoint_key);
}

export function encodeEndpointValue(e: EndpointEntry): Buffer {
  const L = LAYOUT.endpoint_value.fields;
  const b = Buffer.alloc(LAYOUT.endpoint_value.size);
  b.writeUInt32LE(e.ifindex >>> 0, L.ifindex.offset);
  b.writeUInt32LE(e.identity >>> 0, L.identity.offset);
  const flags =
    (e.ingressEnforced ? CONST.EP_F_INGRESS_ENFORCED : 0) | (e.egressEnforced ? CONST.EP_F_EGRESS_ENFORCED : 0) | (e.auditMode ? CONST.EP_F_POLICY_AUDIT : 0);
  b.writeUInt32LE(flags, L.flags.offset);
  return b;
}

/** One always-allowed kind of host traffic (the lock-out guard): direction of the host's side, protocol, destination port. */
export interface HostGuardEntry {
  readonly direction: Direction;
  readonly proto: number;
  /** Destination port; for ICMP the type (8: echo request). */
  readonly port: number;
  /** Only from/to a cluster node (a node address in the ipcache), or any peer. */
  readonly peers: "nodes" | "any";
  /** What needs it, for the log and the chart's list. */
  readonly why: string;
}

export function encodeHostGuardKey(e: Pick<HostGuardEntry, "direction" | "proto" | "port">): Buffer {
  const L = LAYOUT.host_guard_key.fields;
  if (!Number.isInteger(e.port) || e.port < 0 || e.port > 0xffff) throw new RangeError(`host guard port ${e.port} out of range`);
  const b = Buffer.alloc(LAYOUT.host_guard_key.size);
  b.writeUInt8(directionCode(e.direction), L.direction.offset);
  b.writeUInt8(e.proto, L.proto.offset);
  b.writeUInt16BE(e.port, L.port.offset);
  return b;
}

export function encodeHostGuardValue(e: Pick<HostGuardEntry, "peers">): Buffer {
  const b = Buffer.alloc(LAYOUT.host_guard_value.size);
  b.writeUInt8(e.peers === "nodes" ? CONST.HOST_GUARD_NODE_PEER : CONST.HOST_GUARD_ANY_PEER, LAYOUT.host_guard_value.fields.peers.offset);
  return b;
}

/** The endpoint entry for a pod whose identity has this compiled policy. */
export function endpointFor(ip: string, ifindex: number, policy: SubjectPolicy): EndpointEntry {
  return { ip, ifindex, identity: policy.subject, ingressEnforced: policy.ingressEnforced, egressEnforced: policy.egressEnforced };
}

export interface DatapathConfig {
  readonly vxlanIfindex: number;
  readonly monitorAggregation: MonitorAggregation;
  /** Policy audit mode for the whole node (default off). */
  readonly policyAuditMode?: boolean;
  /** --allow-localhost policy (default off: the node's own connections to its pods pass). */
  readonly localhostPolicy?: boolean;
  /** Dual-stack (default off): an address outside the ipcache is world-ipv4/-ipv6 by its family, else reserved:world. */
  readonly dualStack?: boolean;
}

/** A monitor aggregation level as the config's CONFIG_F_EVENTS_* flags (what bpf/lib/monitor.h reads). */
export const MONITOR_AGGREGATION_FLAGS: Readonly<Record<MonitorAggregation, number>> = {
  none: CONST.CONFIG_F_EVENTS_FORWARDED | CONST.CONFIG_F_EVENTS_FLAGS | CONST.CONFIG_F_EVENTS_PACKETS,
  low: CONST.CONFIG_F_EVENTS_FORWARDED | CONST.CONFIG_F_EVENTS_FLAGS,
  medium: CONST.CONFIG_F_EVENTS_FORWARDED,
  maximum: 0,
};

export function encodeConfig(c: DatapathConfig): Buffer {
  const L = LAYOUT.config_value.fields;
  const b = Buffer.alloc(LAYOUT.config_value.size);
  b.writeUInt32LE(c.vxlanIfindex >>> 0, L.vxlan_ifindex.offset);
  b.writeUInt32LE(MONITOR_AGGREGATION_FLAGS[c.monitorAggregation] | (c.policyAuditMode ? CONST.CONFIG_F_POLICY_AUDIT : 0) | (c.localhostPolicy ? CONST.CONFIG_F_LOCALHOST_POLICY : 0) | (c.dualStack ? CONST.CONFIG_F_DUAL_STACK : 0), L.flags.offset);
  return b;
}

// ------------------------------------------------------------------ events

/** What a forwarded event reports: the connection policy allowed, or a later packet of it (monitor aggregation low / none). */
export type EventCtState = "new" | "established" | "reply";
const CT_STATES: readonly EventCtState[] = ["new", "established", "reply"];

export interface VerdictEvent {
  readonly timestampNs: bigint;
  /** audit: policy would have dropped it, audit mode let it pass (reason: the drop's). */
  readonly verdict: "forwarded" | "dropped" | "audit";
  /** The connection's direction (a reply packet travels the other way). */
  readonly direction: Direction;
  readonly ctState: EventCtState;
  /** TCP: the packet's flags (FIN=1 SYN=2 RST=4 PSH=8 ACK=16); 0 for other protocols. */
  readonly tcpFlags: number;
  readonly reasonCode: number;
  readonly reason?: string; // set for drops and audits
  readonly proto: number;
  readonly srcIdentity: number;
  readonly dstIdentity: number;
  readonly ruleId?: number; // absent when no entry matched (the default applied)
  readonly ifindex: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  /** ICMP/ICMPv6 only: the message's code (its type is in the ports: bpf/lib/packet.h parse_l4). */
  readonly icmpCode?: number;
}

const EV = LAYOUT.event.fields;

/** Decodes one ring-buffer record; on the flow path (every event), so plain reads and one object. */
export function decodeEvent(b: Buffer): VerdictEvent {
  if (b.length < LAYOUT.event.size) throw new RangeError(`event record of ${b.length} bytes, want ${LAYOUT.event.size}`);
  const family = b[EV.family.offset]!;
  const reasonCode = b[EV.reason.offset]!;
  const code = b[EV.verdict.offset];
  const verdict = code === CONST.EVENT_DROPPED ? "dropped" : code === CONST.EVENT_AUDIT ? "audit" : "forwarded";
  const ruleId = b.readUInt32LE(EV.rule_id.offset);
  const e: { -readonly [K in keyof VerdictEvent]: VerdictEvent[K] } = {
    timestampNs: b.readBigUInt64LE(EV.timestamp_ns.offset),
    verdict,
    direction: b[EV.direction.offset] === CONST.DIR_INGRESS ? "ingress" : "egress",
    ctState: CT_STATES[b[EV.ct_state.offset]!] ?? "new",
    tcpFlags: b[EV.tcp_flags.offset]!,
    reasonCode,
    proto: b[EV.proto.offset]!,
    srcIdentity: b.readUInt32LE(EV.src_identity.offset),
    dstIdentity: b.readUInt32LE(EV.dst_identity.offset),
    ifindex: b.readUInt32LE(EV.ifindex.offset),
    src: formatAddress(family, b, EV.saddr.offset),
    dst: formatAddress(family, b, EV.daddr.offset),
    sport: b.readUInt16BE(EV.sport.offset),
    dport: b.readUInt16BE(EV.dport.offset),
  };
  if (verdict !== "forwarded") e.reason = DROP_REASONS[reasonCode as DropReasonCode] ?? `reason ${reasonCode}`;
  if (ruleId !== CONST.RULE_ID_NONE) e.ruleId = ruleId;
  if (e.proto === PROTO_NUMBER.ICMP || e.proto === PROTO_NUMBER.ICMPv6) e.icmpCode = b[EV.icmp_code.offset]!;
  return e;
}
