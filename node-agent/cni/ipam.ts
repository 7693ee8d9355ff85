// Pod address allocation from a node's pod CIDR: pure functions over the IPAM state (no I/O).
import { formatIP, formatPrefix, parsePrefix, type Prefix } from "../../core/cidr.ts";

/** Who holds an address: one container's interface (CNI's attachment key). */
export interface Owner {
  readonly containerId: string;
  readonly ifname: string;
}

/** The persisted state: address → owner, plus where the next search starts. */
export interface IpamState {
  readonly version: 1;
  /** The last address handed out; the next search starts after it so a freed address is not reused at once. */
  readonly lastAllocated?: string;
  readonly allocations: Readonly<Record<string, Owner>>;
}

export const EMPTY_STATE: IpamState = { version: 1, allocations: {} };

/** The usable part of a pod CIDR: the gateway is the first address, pods get the rest. */
export interface PodRange {
  readonly cidr: Prefix;
  readonly gateway: string;
  /** First and last assignable pod addresses (inclusive). */
  readonly first: bigint;
  readonly last: bigint;
}

export type RangeResult = { ok: true; range: PodRange } | { ok: false; reason: string };

/** Parses a pod CIDR into its range: needs room for the gateway and at least one pod. IPv4 only for now. */
export function podRange(cidr: string): RangeResult {
  const p = parsePrefix(cidr);
  if (p === undefined) return { ok: false, reason: `"${cidr}" is not a CIDR` };
  if (p.family !== 4) return { ok: false, reason: `only IPv4 pod CIDRs are supported, got "${cidr}"` };
  if (p.bits > 30)
    return {
      ok: false,
      reason: `"${cidr}" is too small: a pod CIDR needs a gateway and at least one pod (at most /30)`,
    };
  const size = 1n << BigInt(32 - p.bits);
  // network address, gateway (network + 1) and broadcast (last) are never handed to pods
  return {
    ok: true,
    range: { cidr: p, gateway: formatIP(4, p.addr + 1n), first: p.addr + 2n, last: p.addr + size - 2n },
  };
}

export function rangeSize(r: PodRange): number {
  return Number(r.last - r.first + 1n);
}

export type AllocateResult =
  | { ok: true; state: IpamState; ip: string; fresh: boolean }
  | { ok: false; reason: "exhausted"; message: string };

function ownerOf(state: IpamState, owner: Owner): string | undefined {
  for (const [ip, o] of Object.entries(state.allocations)) {
    if (o.containerId === owner.containerId && o.ifname === owner.ifname) return ip;
  }
  return undefined;
}

function inRange(r: PodRange, ip: string): bigint | undefined {
  const p = parsePrefix(ip);
  if (p === undefined || p.family !== 4 || p.bits !== 32) return undefined;
  return p.addr >= r.first && p.addr <= r.last ? p.addr : undefined;
}

/**
 * Gives `owner` an address from `range`. The same owner asking twice gets the same address
 * (fresh: false). The search starts after the last address handed out and wraps around.
 */
export function allocate(state: IpamState, range: PodRange, owner: Owner): AllocateResult {
  const held = ownerOf(state, owner);
  if (held !== undefined && inRange(range, held) !== undefined)
    return { ok: true, state, ip: held, fresh: false };
  const last = state.lastAllocated === undefined ? undefined : inRange(range, state.lastAllocated);
  const start = last === undefined || last === range.last ? range.first : last + 1n;
  const span = range.last - range.first + 1n;
  for (let i = 0n; i < span; i++) {
    const addr = range.first + ((start - range.first + i) % span);
    const ip = formatIP(4, addr);
    if (state.allocations[ip] !== undefined) continue;
    return {
      ok: true,
      fresh: true,
      ip,
      state: {
        version: 1,
        lastAllocated: ip,
        allocations: { ...state.allocations, [ip]: { containerId: owner.containerId, ifname: owner.ifname } },
      },
    };
  }
  return {
    ok: false,
    reason: "exhausted",
    message: `no free address in pod CIDR ${formatPrefix(range.cidr)}: all ${rangeSize(range)} pod addresses are assigned`,
  };
}

/** Frees every address `owner` holds; freeing what is not held is not an error (DEL is idempotent). */
export function release(state: IpamState, owner: Owner): { state: IpamState; released: string[] } {
  const released: string[] = [];
  const allocations: Record<string, Owner> = {};
  for (const [ip, o] of Object.entries(state.allocations)) {
    if (o.containerId === owner.containerId && o.ifname === owner.ifname) released.push(ip);
    else allocations[ip] = o;
  }
  if (released.length === 0) return { state, released };
  return { state: { ...state, allocations }, released };
}

/** The address `owner` holds, if any. */
export function addressOf(state: IpamState, owner: Owner): string | undefined {
  return ownerOf(state, owner);
}

/** Validates state read from disk; undefined when it is not an IpamState. */
export function parseState(value: unknown): IpamState | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v.version !== 1 || typeof v.allocations !== "object" || v.allocations === null) return undefined;
  if (v.lastAllocated !== undefined && typeof v.lastAllocated !== "string") return undefined;
  const allocations: Record<string, Owner> = {};
  for (const [ip, o] of Object.entries(v.allocations as Record<string, unknown>)) {
    if (typeof o !== "object" || o === null) return undefined;
    const { containerId, ifname } = o as Record<string, unknown>;
    if (typeof containerId !== "string" || typeof ifname !== "string") return undefined;
    allocations[ip] = { containerId, ifname };
  }
  return {
    version: 1,
    ...(v.lastAllocated !== undefined ? { lastAllocated: v.lastAllocated as string } : {}),
    allocations,
  };
}
