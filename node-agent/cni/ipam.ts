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
  /** The same for the IPv6 range of a dual-stack network. */
  readonly lastAllocated6?: string;
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

/**
 * Parses a pod CIDR of the given family into its range: needs room for the gateway and at least one pod.
 * An IPv6 range is the dual-stack pod's second address (the network config's podCIDRv6).
 */
export function podRange(cidr: string, family: 4 | 6 = 4): RangeResult {
  const p = parsePrefix(cidr);
  if (p === undefined) return { ok: false, reason: `"${cidr}" is not a CIDR` };
  if (p.family !== family)
    return {
      ok: false,
      reason:
        family === 4
          ? `only IPv4 pod CIDRs are supported here (a dual-stack network's IPv6 range is podCIDRv6), got "${cidr}"`
          : `an IPv6 CIDR is required, got "${cidr}"`,
    };
  const total = family === 4 ? 32 : 128;
  if (p.bits > total - 2)
    return {
      ok: false,
      reason: `"${cidr}" is too small: a pod CIDR needs a gateway and at least one pod (at most /${total - 2})`,
    };
  const size = 1n << BigInt(total - p.bits);
  // network address, gateway (network + 1) and the last address (IPv4's broadcast) are never handed to pods
  return {
    ok: true,
    range: { cidr: p, gateway: formatIP(family, p.addr + 1n), first: p.addr + 2n, last: p.addr + size - 2n },
  };
}

export function rangeSize(r: PodRange): number {
  return Number(r.last - r.first + 1n);
}

export type AllocateResult =
  | { ok: true; state: IpamState; ip: string; fresh: boolean }
  | { ok: false; reason: "exhausted"; message: string };

function ownedBy(state: IpamState, owner: Owner): string[] {
  return Object.entries(state.allocations)
    .filter(([, o]) => o.containerId === owner.containerId && o.ifname === owner.ifname)
    .map(([ip]) => ip);
}

function inRange(r: PodRange, ip: string): bigint | undefined {
  const p = parsePrefix(ip);
  if (p === undefined || p.family !== r.cidr.family || p.bits !== (p.family === 4 ? 32 : 128)) return undefined;
  return p.addr >= r.first && p.addr <= r.last ? p.addr : undefined;
}

/**
 * Gives `owner` an address from `range`. The same owner asking twice gets the same address
 * (fresh: false); a dual-stack owner holds one address of each range. The search starts after
 * the last address handed out in that range and wraps around.
 */
export function allocate(state: IpamState, range: PodRange, owner: Owner): AllocateResult {
  const held = ownedBy(state, owner).find((ip) => inRange(range, ip) !== undefined);
  if (held !== undefined) return { ok: true, state, ip: held, fresh: false };
  const lastText = range.cidr.family === 4 ? state.lastAllocated : state.lastAllocated6;
  const last = lastText === undefined ? undefined : inRange(range, lastText);
  const start = last === undefined || last === range.last ? range.first : last + 1n;
  const span = range.last - range.first + 1n;
  for (let i = 0n; i < span; i++) {
    const addr = range.first + ((start - range.first + i) % span);
    const ip = formatIP(range.cidr.family, addr);
    if (state.allocations[ip] !== undefined) continue;
    return {
      ok: true,
      fresh: true,
      ip,
      state: {
        ...state,
        ...(range.cidr.family === 4 ? { lastAllocated: ip } : { lastAllocated6: ip }),
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

/** The addresses `owner` holds (IPv4 first), empty when none. */
export function addressesOf(state: IpamState, owner: Owner): string[] {
  return ownedBy(state, owner).sort((a, b) => Number(a.includes(":")) - Number(b.includes(":")));
}

/** Validates state read from disk; undefined when it is not an IpamState. */
export function parseState(value: unknown): IpamState | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v.version !== 1 || typeof v.allocations !== "object" || v.allocations === null) return undefined;
  if (v.lastAllocated !== undefined && typeof v.lastAllocated !== "string") return undefined;
  if (v.lastAllocated6 !== undefined && typeof v.lastAllocated6 !== "string") return undefined;
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
    ...(v.lastAllocated6 !== undefined ? { lastAllocated6: v.lastAllocated6 as string } : {}),
    allocations,
  };
}
